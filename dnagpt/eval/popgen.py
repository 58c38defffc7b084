"""Population-genetics statistics that compare a set of haplotypes with real ones (numpy / scikit-learn / scipy).

All inputs are (n, L) 0/1 haplotype matrices over the same SNPs. Conventions:

* r² of two SNPs is the squared Pearson correlation of their columns; a column without variation has r² 0 with
  everything (no linkage can be measured), so a generator that fixes a polymorphic SNP is penalised, not skipped.
* LD is computed in a band: pairs on the same chromosome at most ``window`` SNPs apart, which keeps a 10,000-SNP
  panel at O(n · L · window) instead of an L × L matrix.
* Distances between haplotypes are Hamming distances (number of differing SNPs).
* AATS is Yelmen et al.'s adversarial accuracy: 0.5 when real and synthetic are indistinguishable by nearest
  neighbours, → 1 when synthetic is far (underfit), → 0 when synthetic copies real (overfit).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import wasserstein_distance
from sklearn.decomposition import PCA

from dnagpt.utils.errors import ConfigError


def allele_frequencies(haps: np.ndarray) -> np.ndarray:
    return haps.mean(axis=0, dtype=np.float64)


def af_correlation(haps: np.ndarray, real: np.ndarray) -> float:
    """Pearson correlation of per-SNP allele-1 frequencies."""
    return float(np.corrcoef(allele_frequencies(haps), allele_frequencies(real))[0, 1])


def _standardize(haps: np.ndarray) -> np.ndarray:
    x = haps.astype(np.float64)
    x -= x.mean(axis=0)
    sd = x.std(axis=0)
    return np.divide(x, sd, out=np.zeros_like(x), where=sd > 0)  # a fixed column becomes 0: r² 0 with all


def r2_matrix(haps: np.ndarray) -> np.ndarray:
    """Full (L, L) r² matrix (for heat maps of a few hundred SNPs)."""
    z = _standardize(haps)
    r = z.T @ z / len(z)
    return r * r


def r2_band(haps: np.ndarray, window: int) -> np.ndarray:
    """(window, L) array: row d-1 holds r² of SNP j with SNP j+d (NaN past the end)."""
    z = _standardize(haps)
    n, L = z.shape
    band = np.full((window, L), np.nan)
    for d in range(1, min(window, L - 1) + 1):
        band[d - 1, : L - d] = (np.einsum("ij,ij->j", z[:, :-d], z[:, d:]) / n) ** 2
    return band


def band_pairs(chrom: np.ndarray, window: int) -> np.ndarray:
    """(window, L) bool mask of the band entries that are real pairs on the same chromosome."""
    L = len(chrom)
    mask = np.zeros((window, L), dtype=bool)
    for d in range(1, min(window, L - 1) + 1):
        mask[d - 1, : L - d] = chrom[:-d] == chrom[d:]
    return mask


def ld_mae(haps: np.ndarray, real: np.ndarray, chrom: np.ndarray, window: int = 50) -> float:
    """Mean |r²(haps) − r²(real)| over SNP pairs on the same chromosome at most ``window`` SNPs apart."""
    mask = band_pairs(chrom, window)
    if not mask.any():
        raise ConfigError(f"no SNP pair on the same chromosome within {window} SNPs: raise evaluation.ld_window")
    return float(np.abs(r2_band(haps, window) - r2_band(real, window))[mask].mean())


def ld_decay(
    haps: np.ndarray, chrom: np.ndarray, position: np.ndarray, bins: np.ndarray, window: int = 50
) -> np.ndarray:
    """Mean r² of same-chromosome pairs (≤ ``window`` SNPs apart) in each bp-distance bin (NaN for empty bins)."""
    mask = band_pairs(chrom, window)
    r2 = r2_band(haps, window)
    dist = np.full_like(r2, np.nan)
    for d in range(1, min(window, len(chrom) - 1) + 1):
        dist[d - 1, :-d] = position[d:] - position[:-d]
    which = np.digitize(dist[mask], bins) - 1
    values = r2[mask]
    out = np.full(len(bins) - 1, np.nan)
    for b in range(len(bins) - 1):
        sel = which == b
        if sel.any():
            out[b] = values[sel].mean()
    return out


def fit_pca(real: np.ndarray, n_components: int = 2, seed: int = 0) -> PCA:
    return PCA(n_components=n_components, random_state=seed).fit(real.astype(np.float64))


def pc_wasserstein(pca: PCA, haps: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Wasserstein-1 distance between the projections of ``haps`` and ``real`` on each principal component."""
    a, b = pca.transform(haps.astype(np.float64)), pca.transform(real.astype(np.float64))
    return np.array([wasserstein_distance(a[:, i], b[:, i]) for i in range(a.shape[1])])


def hamming(a: np.ndarray, b: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """(len(a), len(b)) Hamming distances, by matrix products in chunks (exact: counts below 2^24 in float32)."""
    bf = b.astype(np.float32)
    out = np.empty((len(a), len(b)), dtype=np.int32)
    ones_b = bf.sum(axis=1)
    for s in range(0, len(a), chunk):
        af = a[s : s + chunk].astype(np.float32)
        both = af @ bf.T
        out[s : s + chunk] = np.rint(af.sum(axis=1)[:, None] + ones_b[None, :] - 2 * both)
    return out


def nn_distance(a: np.ndarray, b: np.ndarray, exclude_self: bool = False) -> np.ndarray:
    """Distance from each row of ``a`` to its nearest row of ``b`` (``exclude_self``: a is b, skip the diagonal)."""
    d = hamming(a, b)
    if exclude_self:
        np.fill_diagonal(d, np.iinfo(d.dtype).max)
    return d.min(axis=1)


def copy_fraction(haps: np.ndarray, train: np.ndarray) -> float:
    """Fraction of haplotypes identical to some training haplotype."""
    return float((nn_distance(haps, train) == 0).mean())


def adversarial_accuracy(real: np.ndarray, synth: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """Yelmen et al.'s (AA_truth, AA_syn) on equal-size random subsets; AATS is their mean.

    AA_truth: how often a real haplotype's nearest neighbour is real; AA_syn: the same for synthetic ones. Both 0.5 is
    ideal. Read them apart: (1, 0) also averages 0.5, yet means synthetic haplotypes far from real and from each other.
    """
    n = min(len(real), len(synth))
    if n < 2:
        raise ConfigError(
            f"AATS needs at least 2 haplotypes on each side, got {len(real)} real (the test split) and {len(synth)} "
            "generated (generation.n)"
        )
    rng = np.random.default_rng(seed)
    t = real[rng.choice(len(real), n, replace=False)]
    s = synth[rng.choice(len(synth), n, replace=False)]
    d_ts, d_tt = nn_distance(t, s), nn_distance(t, t, exclude_self=True)
    d_st, d_ss = nn_distance(s, t), nn_distance(s, s, exclude_self=True)
    return float((d_ts > d_tt).mean()), float((d_st > d_ss).mean())


def aats(real: np.ndarray, synth: np.ndarray, seed: int = 0) -> float:
    """Adversarial accuracy (Yelmen et al. 2021): 0.5 ideal, → 1 underfit, → 0 copies of ``real``."""
    return float(np.mean(adversarial_accuracy(real, synth, seed)))


def independent_sites(train: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Baseline: each SNP drawn independently from its training allele frequency (no LD at all)."""
    return (rng.random((n, train.shape[1])) < allele_frequencies(train)).astype(np.uint8)


def markov_chain(train: np.ndarray, n: int, rng: np.random.Generator, pseudocount: float = 0.5) -> np.ndarray:
    """Baseline: a first-order Markov chain along SNPs, P(x_j | x_{j-1}) fit on training haplotypes.

    ``pseudocount`` (Jeffreys) keeps a transition never seen in training possible but rare.
    """
    train = train.astype(np.int64)
    out = np.empty((n, train.shape[1]), dtype=np.uint8)
    out[:, 0] = rng.random(n) < allele_frequencies(train[:, :1])[0]
    prev, cur = train[:, :-1], train[:, 1:]
    ones_after = np.stack([((prev == a) & (cur == 1)).sum(0) for a in (0, 1)])  # (2, L-1)
    seen = np.stack([(prev == a).sum(0) for a in (0, 1)])
    p1 = (ones_after + pseudocount) / (seen + 2 * pseudocount)  # (2, L-1): P(x_j = 1 | x_{j-1} = a)
    for j in range(1, train.shape[1]):
        out[:, j] = rng.random(n) < p1[out[:, j - 1], j - 1]
    return out
