"""Artificial genomes: constrained generation from a trained model, compared with held-out real haplotypes and baselines.

``GenomesEvaluator`` is the ``evaluation`` hook of ``python evaluate.py task=genomes``. It

1. samples ``generation.n`` haplotypes with the KV cache, under a constraint that lets step s emit only the k-mers
   whose bases are alleles of SNPs ks..ks+k-1 (2^k tokens per step), then decodes them back to 0/1 and counts
   invalid alleles (there should be none);
2. draws the same number from two baselines fit on the training haplotypes: independent sites and a first-order
   Markov chain along SNPs; the validation haplotypes (real, held out) give the sampling-noise floor;
3. scores every set against the held-out test haplotypes (``dnagpt.eval.popgen``) and writes the generated set as
   ``.hapt`` and VCF, a metrics table (JSON/CSV), and PNGs (PCA overlay, allele frequencies, LD heat maps, LD decay,
   nearest-neighbour distances). The rows are also appended to ``sweep_table`` when it is set: the config sets it to
   ``<sweep dir>/genomes_sweep.csv`` under a Hydra multirun (``dnagpt.utils.resolvers``), so a temperature sweep ends
   with one table.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dnagpt.data.genomes import GenomesDataModule, decode_haplotypes
from dnagpt.data.genomes_panel import Legend, write_hapt, write_vcf
from dnagpt.eval import popgen
from dnagpt.model.generate import generate
from dnagpt.model.gpt import DNAGPT
from dnagpt.tokenizer import KmerTokenizer
from dnagpt.utils.errors import ConfigError
from dnagpt.utils.plots import save_figure, subplots

log = logging.getLogger(__name__)

REAL = "real_val"  # held-out real haplotypes used as a generator: the floor every statistic can reach
COLUMNS = ("af_corr", "ld_r2_mae", "pc1_wasserstein", "pc2_wasserstein", "copy_frac", "unique_frac",
           "nn_train_median", "nn_ratio", "aats", "aa_truth", "aa_syn")  # fmt: skip


def allowed_mask(tokenizer: KmerTokenizer, legend: Legend) -> torch.Tensor:
    """(n_steps, V) bool: at step s, the k-mers whose i-th base is ``a0`` or ``a1`` of SNP ks + i."""
    k = tokenizer.k
    mask = torch.zeros((len(range(0, len(legend), k)), len(tokenizer)), dtype=torch.bool)
    for step, start in enumerate(range(0, len(legend), k)):
        choices = zip(legend.a0[start : start + k], legend.a1[start : start + k], strict=True)
        kmers = ["".join(c) for c in itertools.product(*choices)]
        if len(kmers[0]) == k:  # full k-mers: one call encodes all 2^k of them
            ids = tokenizer.encode_dna("".join(kmers))
        else:
            ids = np.array([tokenizer.encode_dna(m)[0] for m in kmers])
        mask[step, torch.from_numpy(ids)] = True
    return mask


@dataclass
class Generated:
    haplotypes: np.ndarray  # (n, L) uint8
    invalid_alleles: int  # positions whose nucleotide is neither allele of its SNP (must be 0)
    seconds: float


def generate_haplotypes(
    model: DNAGPT,
    tokenizer: KmerTokenizer,
    legend: Legend,
    n: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    batch_size: int = 256,
    seed: int = 0,
    species: str = "human",
    constrained: bool = True,
) -> Generated:
    """``n`` haplotypes sampled after the species token, batched with the KV cache."""
    if n < 1 or batch_size < 1:
        raise ConfigError(f"generation.n={n} and generation.batch_size={batch_size} must be >= 1")
    device = next(model.parameters()).device
    mask = allowed_mask(tokenizer, legend).to(device) if constrained else None
    n_steps = -(-len(legend) // tokenizer.k)
    g = torch.Generator(device=device).manual_seed(seed)
    chunks, start = [], time.perf_counter()
    for b in range(0, n, batch_size):
        prompt = torch.full((min(batch_size, n - b), 1), tokenizer.species_id(species), device=device)
        out = generate(model, prompt, n_steps, temperature=temperature, top_k=top_k, top_p=top_p,
                       allowed=mask, generator=g, pad_id=tokenizer.pad_id)  # fmt: skip
        chunks.append(out[:, 1:].cpu().numpy())
    seconds = time.perf_counter() - start
    haps, invalid = decode_haplotypes(np.concatenate(chunks), legend, tokenizer)
    return Generated(haps, int(invalid.sum()), seconds)


def score(
    haps: np.ndarray, real: np.ndarray, train: np.ndarray, legend: Legend, pca: Any, real_nn: float,
    ld_window: int, seed: int,
) -> dict[str, float]:  # fmt: skip
    """Every statistic of one generated set against held-out real haplotypes (``COLUMNS``)."""
    w = popgen.pc_wasserstein(pca, haps, real)
    nn = popgen.nn_distance(haps, train)
    aa_truth, aa_syn = popgen.adversarial_accuracy(real, haps, seed)
    return {
        "af_corr": popgen.af_correlation(haps, real),
        "ld_r2_mae": popgen.ld_mae(haps, real, legend.chrom, ld_window),
        "pc1_wasserstein": float(w[0]),
        "pc2_wasserstein": float(w[1]),
        "copy_frac": float((nn == 0).mean()),
        "unique_frac": len(np.unique(haps, axis=0)) / len(haps),
        "nn_train_median": float(np.median(nn)),
        "nn_ratio": float(np.median(nn)) / max(real_nn, 1.0),
        "aats": (aa_truth + aa_syn) / 2,
        "aa_truth": aa_truth,
        "aa_syn": aa_syn,
    }


class GenomesEvaluator:
    """The ``evaluation`` callable of the genomes task (see the module docstring)."""

    def __init__(
        self,
        generation: dict,
        ld_window: int = 50,
        heatmap_snps: int = 120,
        decay_bins: int = 16,
        species: str = "human",
        sweep_table: str | Path | None = None,
    ) -> None:
        """``sweep_table``: a CSV that collects the rows of every job of a sweep (appended to), None for none."""
        self.generation = dict(generation)
        self.ld_window, self.heatmap_snps, self.decay_bins, self.species = ld_window, heatmap_snps, decay_bins, species
        self.sweep_table = Path(sweep_table) if sweep_table else None

    def __call__(self, module: Any, datamodule: GenomesDataModule, trainer: Any, output_dir: Path) -> dict[str, float]:
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        datamodule.setup("test")
        legend = datamodule.panel.legend
        train, real = datamodule.haplotypes("train"), datamodule.haplotypes("test")
        g = self.generation
        temperature = float(g.get("temperature", 1.0))
        gen = generate_haplotypes(
            module.model, module.tokenizer, legend, int(g["n"]), temperature, g.get("top_k"), g.get("top_p"),
            int(g.get("batch_size", 256)), int(g.get("seed", 0)), self.species,
        )  # fmt: skip
        if gen.invalid_alleles:
            raise RuntimeError(f"constrained decoding produced {gen.invalid_alleles} invalid alleles")
        write_hapt(output_dir / "generated.hapt.gz", gen.haplotypes,
                   np.array([f"AG{i}_{'AB'[i % 2]}" for i in range(len(gen.haplotypes))]), label="AG")  # fmt: skip
        write_vcf(output_dir / "generated.vcf.gz", gen.haplotypes, legend)

        rng = np.random.default_rng(int(g.get("seed", 0)))
        sets = {
            "model": gen.haplotypes,
            "independent": popgen.independent_sites(train, len(gen.haplotypes), rng),
            "markov": popgen.markov_chain(train, len(gen.haplotypes), rng),
        }
        if len(datamodule.splits["val"]) > 1:
            sets[REAL] = datamodule.haplotypes("val")
        pca = popgen.fit_pca(real)
        real_nn = float(np.median(popgen.nn_distance(real, train)))
        seed = int(g.get("seed", 0))
        table = {name: score(h, real, train, legend, pca, real_nn, self.ld_window, seed) for name, h in sets.items()}
        table["model"] |= {
            "temperature": temperature,
            "invalid_alleles": float(gen.invalid_alleles),
            "haplotypes_per_s": len(gen.haplotypes) / gen.seconds,
        }
        meta = {"panel": datamodule.panel_name, "n_snps": len(legend), "n_generated": len(gen.haplotypes),
                "n_train": len(train), "n_test_real": len(real), "real_test_nn_train_median": real_nn,
                "generation": g}  # fmt: skip
        self._write_table(output_dir, table, meta)
        self._plots(output_dir, sets, real, train, legend, pca, temperature)
        flat = {f"genomes/{name}/{k}": float(v) for name, row in table.items() for k, v in row.items()}
        flat["genomes/real_test/nn_train_median"] = real_nn
        return flat

    # ---- tables ----------------------------------------------------------------------------------------------------
    def _write_table(self, output_dir: Path, table: dict[str, dict[str, float]], meta: dict) -> None:
        (output_dir / "genomes_metrics.json").write_text(json.dumps({"meta": meta, "table": table}, indent=2, default=str))
        columns = ["generator", "temperature", *COLUMNS, "invalid_alleles", "haplotypes_per_s"]
        rows = [{"generator": name, "temperature": meta["generation"].get("temperature"), **row}
                for name, row in table.items()]  # fmt: skip
        targets = [(output_dir / "genomes_metrics.csv", "w")] + ([(self.sweep_table, "a")] if self.sweep_table else [])
        for path, mode in targets:
            new = mode == "w" or not path.exists()
            with open(path, mode, newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=["panel", *columns], extrasaction="ignore")
                if new:
                    writer.writeheader()
                writer.writerows({"panel": meta["panel"], **r} for r in rows)
        head = f"{'generator':<12}" + "".join(f"{c:>16}" for c in COLUMNS)
        lines = [f"{name:<12}" + "".join(f"{row[c]:>16.4f}" for c in COLUMNS) for name, row in table.items()]
        log.info(f"Genomes ({meta['panel']}, T={meta['generation'].get('temperature')}, "
                 f"{table['model']['haplotypes_per_s']:.1f} haplotypes/s, "
                 f"invalid alleles {int(table['model']['invalid_alleles'])}):\n" + "\n".join([head, *lines]))  # fmt: skip

    # ---- plots -----------------------------------------------------------------------------------------------------
    def _plots(self, out: Path, sets: dict, real: np.ndarray, train: np.ndarray, legend: Legend, pca: Any,
               temperature: float) -> None:  # fmt: skip
        names = [n for n in sets if n != REAL]
        title = f"model at T={temperature}"
        pr = pca.transform(real.astype(np.float64))
        fig, axes = subplots(1, len(names), figsize=(5 * len(names), 4.5), sharex=True, sharey=True,
                             layout="constrained")  # fmt: skip
        for ax, name in zip(axes, names, strict=True):
            p = pca.transform(sets[name].astype(np.float64))
            ax.scatter(pr[:, 0], pr[:, 1], s=4, alpha=0.4, c="grey", label="real (held out)")
            ax.scatter(p[:, 0], p[:, 1], s=4, alpha=0.4, c="tab:red", label=title if name == "model" else name)
            ax.set(title=name, xlabel="PC1 (fit on real)", ylabel="PC2")
            ax.legend(markerscale=3)
        fig.suptitle("PCA of haplotypes: generated over held-out real")
        save_figure(fig, out / "genomes_pca.png", dpi=110)

        af_real = popgen.allele_frequencies(real)
        fig, axes = subplots(1, len(names), figsize=(5 * len(names), 4.5), layout="constrained")
        for ax, name in zip(axes, names, strict=True):
            af = popgen.allele_frequencies(sets[name])
            ax.scatter(af_real, af, s=5, alpha=0.6)
            ax.plot([0, 1], [0, 1], c="k", lw=0.8)
            ax.set(title=f"{name}: r = {np.corrcoef(af_real, af)[0, 1]:.4f}", xlabel="allele-1 frequency, real",
                   ylabel="allele-1 frequency, generated")  # fmt: skip
        fig.suptitle("Allele frequencies")
        save_figure(fig, out / "genomes_allele_frequency.png", dpi=110)

        m = min(self.heatmap_snps, len(legend))
        fig, axes = subplots(1, 2, figsize=(11, 5), layout="constrained")
        for ax, (name, h) in zip(axes, [("real (held out)", real), (title, sets["model"])], strict=True):
            im = ax.imshow(popgen.r2_matrix(h[:, :m]), vmin=0, vmax=1, cmap="magma_r")
            ax.set(title=f"LD r², {name}", xlabel=f"SNP (first {m})", ylabel="SNP")
        fig.colorbar(im, ax=axes, shrink=0.8, label="r²")
        save_figure(fig, out / "genomes_ld_heatmaps.png", dpi=110)

        pairs, n_snps = popgen.band_pairs(legend.chrom, self.ld_window), len(legend)
        dist = np.concatenate([(legend.position[d:] - legend.position[:-d])[pairs[d - 1, : n_snps - d]]
                               for d in range(1, min(self.ld_window, n_snps - 1) + 1)])  # fmt: skip
        same = dist[dist > 0]
        bins = np.geomspace(max(1, same.min()), same.max() + 1, self.decay_bins + 1)
        centres = np.sqrt(bins[:-1] * bins[1:])
        fig, ax = subplots(figsize=(7, 4.5), layout="constrained")
        for name, h in [("real (held out)", real), *[(n, sets[n]) for n in names]]:
            decay = popgen.ld_decay(h, legend.chrom, legend.position, bins, self.ld_window)
            ax.plot(centres, decay, marker="o", ms=3, label=title if name == "model" else name)
        ax.set(xscale="log", xlabel="distance between SNPs (bp)", ylabel="mean r²",
               title=f"LD decay (same-chromosome pairs within {self.ld_window} SNPs)")  # fmt: skip
        ax.legend()
        save_figure(fig, out / "genomes_ld_decay.png", dpi=110)

        fig, ax = subplots(figsize=(7, 4.5), layout="constrained")
        curves = [("real (held out)", real), *[(n, sets[n]) for n in names]]
        top = max(int(popgen.nn_distance(h, train).max()) for _, h in curves) + 2
        for name, h in curves:
            ax.hist(popgen.nn_distance(h, train), bins=np.arange(0, top), histtype="step", density=True,
                    label=title if name == "model" else name)  # fmt: skip
        ax.set(xlabel="Hamming distance to the nearest training haplotype", ylabel="density",
               title="Nearest-neighbour distances to training (0 = a copy)")  # fmt: skip
        ax.legend()
        save_figure(fig, out / "genomes_nn_distance.png", dpi=110)
