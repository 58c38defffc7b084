"""Genomes task: the constraint mask, constrained generation, each statistic on hand-checkable input, the baselines.

Also the sweep table (its path from Hydra's run state, the rows of every job in one CSV) and end-to-end train +
evaluate on a reduced real panel (slow: including a 2-point temperature multirun).
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, read_write

from dnagpt.data.genomes import decode_haplotypes
from dnagpt.data.genomes_panel import load_hapt_panel, load_vcf_panel, read_hapt
from dnagpt.eval import popgen
from dnagpt.eval.genomes import COLUMNS, GenomesEvaluator, allowed_mask, generate_haplotypes
from dnagpt.model.config import GPTConfig
from dnagpt.model.gpt import DNAGPT
from dnagpt.pipeline import evaluate, train
from dnagpt.tokenizer import KmerTokenizer
from dnagpt.utils.resolvers import resource_path

ROOT = Path(__file__).resolve().parent.parent
TOK = KmerTokenizer()


@pytest.fixture(scope="module")
def legend():
    panel = load_hapt_panel(resource_path("genomes/yelmen805.hapt.gz"), resource_path("genomes/yelmen805.legend.gz"))
    return panel.legend


# ---- constraint and generation ---------------------------------------------------------------------------------------
def test_allowed_mask_permits_exactly_the_allele_kmers(legend) -> None:
    mask = allowed_mask(TOK, legend)
    assert mask.shape == (135, len(TOK))
    assert mask[:-1].sum(1).tolist() == [64] * 134 and int(mask[-1].sum()) == 2  # 805 = 134 * 6 + 1
    for step in (0, 77, 134):
        snps = slice(6 * step, 6 * step + 6)
        for token in mask[step].nonzero().flatten().tolist():
            kmer = TOK.id_to_token(token)
            ok = [b in (x, y) for b, x, y in zip(kmer, legend.a0[snps], legend.a1[snps], strict=True)]
            assert len(kmer) == len(legend.a0[snps]) and all(ok), (step, kmer)


def test_constrained_generation_from_untrained_model_is_valid(legend) -> None:
    torch.manual_seed(0)
    small = legend[:100]  # 17 steps
    model = DNAGPT(GPTConfig.from_name("tiny", vocab_size=len(TOK), block_size=32, n_layer=1, n_head=2, n_embd=16))
    gen = generate_haplotypes(model, TOK, small, n=24, batch_size=10, seed=1)
    assert gen.haplotypes.shape == (24, 100) and gen.invalid_alleles == 0
    assert 0.2 < gen.haplotypes.mean() < 0.8  # an untrained model picks alleles roughly at random
    free = generate_haplotypes(model, TOK, small, n=8, batch_size=8, seed=1, constrained=False)
    assert free.invalid_alleles > 0  # without the mask an untrained model writes non-alleles: the check can fail


def test_decode_of_generated_tokens_matches_alleles(legend) -> None:
    """One allowed token per step, decoded, gives the haplotype those k-mers spell (1 where the base is a1)."""
    mask = allowed_mask(TOK, legend[:12])
    picks = [int(row.nonzero().flatten()[i]) for row, i in zip(mask, (5, 40), strict=True)]
    haps, invalid = decode_haplotypes(np.array([picks]), legend[:12], TOK)
    spelled = "".join(TOK.id_to_token(t) for t in picks)
    assert not invalid.any()
    assert haps[0].tolist() == [int(b == a1) for b, a1 in zip(spelled, legend.a1[:12], strict=True)]
    assert 0 < haps[0].sum() < 12


def test_decode_marks_rows_that_do_not_spell_the_panel(legend) -> None:
    short = TOK.encode_dna("".join(legend.a0[:11]))  # 11 nucleotides for 12 SNPs
    _, invalid = decode_haplotypes(np.array([short]), legend[:12], TOK)
    assert invalid.all()
    _, invalid = decode_haplotypes(np.array([[TOK.pad_id, short[1]]]), legend[:12], TOK)
    assert invalid.all()


# ---- statistics on tiny inputs -------------------------------------------------------------------------------------
def test_r2_of_identical_complementary_and_independent_columns() -> None:
    a = np.array([0, 0, 1, 1, 0, 1, 0, 1], dtype=np.uint8)
    b = np.array([0, 1, 0, 1, 0, 1, 1, 0], dtype=np.uint8)  # independent of a: each pair of values twice
    h = np.stack([a, a, 1 - a, b, np.zeros(8, np.uint8)], axis=1)
    r2 = popgen.r2_matrix(h)
    assert r2[0, 1] == pytest.approx(1) and r2[0, 2] == pytest.approx(1)
    assert r2[0, 3] == pytest.approx(0) and r2[0, 4] == 0  # a fixed column has r² 0
    band = popgen.r2_band(h, window=2)
    np.testing.assert_allclose(band[0, :4], [r2[0, 1], r2[1, 2], r2[2, 3], r2[3, 4]])
    np.testing.assert_allclose(band[1, :3], [r2[0, 2], r2[1, 3], r2[2, 4]])
    assert np.isnan(band[1, 3:]).all()


def test_ld_mae_uses_only_same_chromosome_pairs_within_window() -> None:
    a = np.array([0, 0, 1, 1, 0, 1, 0, 1], dtype=np.uint8)
    b = np.array([0, 1, 0, 1, 0, 1, 1, 0], dtype=np.uint8)
    linked, unlinked = np.stack([a, a, a], 1), np.stack([a, b, a], 1)
    chrom = np.array(["1", "1", "2"])
    # only pair (0, 1) counts: r² 1 vs 0
    assert popgen.ld_mae(linked, unlinked, chrom, window=5) == pytest.approx(1.0)
    assert popgen.ld_mae(linked, linked, chrom, window=5) == 0
    with pytest.raises(ValueError, match="no SNP pair"):
        popgen.ld_mae(linked, unlinked, np.array(["1", "2", "3"]), window=5)


def test_ld_decay_bins_by_distance() -> None:
    a = np.array([0, 0, 1, 1, 0, 1, 0, 1], dtype=np.uint8)
    b = np.array([0, 1, 0, 1, 0, 1, 1, 0], dtype=np.uint8)
    h = np.stack([a, a, b], 1)  # pair (0,1) at 10 bp r² 1; (1,2) at 100 bp r² 0; (0,2) at 110 bp r² 0
    decay = popgen.ld_decay(h, np.array(["1"] * 3), np.array([0, 10, 110]), np.array([1, 50, 1000, 5000]))
    assert decay[0] == pytest.approx(1) and decay[1] == pytest.approx(0) and np.isnan(decay[2])


def test_allele_frequency_correlation() -> None:
    real = np.array([[1, 0, 1], [1, 0, 0], [1, 1, 0], [0, 0, 0]], dtype=np.uint8)  # AF 0.75, 0.25, 0.25
    assert popgen.af_correlation(real, real) == pytest.approx(1)
    assert popgen.af_correlation(1 - real, real) == pytest.approx(-1)


def test_pca_wasserstein() -> None:
    rng = np.random.default_rng(0)
    two_pops = np.concatenate([rng.random((100, 30)) < 0.1, rng.random((100, 30)) < 0.9]).astype(np.uint8)
    pca = popgen.fit_pca(two_pops)
    assert popgen.pc_wasserstein(pca, two_pops, two_pops) == pytest.approx([0, 0])
    one_pop = np.concatenate([two_pops[:100], two_pops[:100]])  # misses half of the PC1 distribution
    assert popgen.pc_wasserstein(pca, one_pop, two_pops)[0] > 1


def test_hamming_nn_copies_and_aats() -> None:
    a = np.array([[0, 0, 0, 0], [1, 1, 1, 1], [1, 0, 1, 0]], dtype=np.uint8)
    b = np.array([[0, 0, 0, 1], [1, 0, 1, 0]], dtype=np.uint8)
    assert popgen.hamming(a, b).tolist() == [[1, 2], [3, 2], [3, 0]]
    assert popgen.nn_distance(a, b).tolist() == [1, 2, 0]
    assert popgen.nn_distance(a, a, exclude_self=True).tolist() == [2, 2, 2]
    assert popgen.copy_fraction(a, b) == pytest.approx(1 / 3)
    rng = np.random.default_rng(0)
    real = (rng.random((100, 50)) < 0.5).astype(np.uint8)
    assert popgen.aats(real, real.copy()) == 0  # copies: each point's nearest neighbour is its twin
    far = np.zeros_like(real)
    far[:, :25] = 1
    far[::2, 25] = 0  # distinct, all far from real
    assert popgen.aats(real, np.concatenate([far, far])[:100]) > 0.9
    # real: 20 one-hot rows (2 apart); synthetic: 20 two-hot rows elsewhere, 4 apart from each other and 3 from real:
    # AA_truth 1 and AA_syn 0 average a misleading 0.5, hence both are reported
    tight, spread = np.zeros((20, 60), np.uint8), np.zeros((20, 60), np.uint8)
    tight[np.arange(20), np.arange(20)] = 1
    spread[np.arange(20), 20 + 2 * np.arange(20)] = 1
    spread[np.arange(20), 21 + 2 * np.arange(20)] = 1
    assert popgen.adversarial_accuracy(tight, spread) == (1.0, 0.0)
    with pytest.raises(ValueError, match="at least 2"):
        popgen.aats(real[:1], real)


# ---- baselines -----------------------------------------------------------------------------------------------------
def test_independent_sites_match_frequencies_but_not_ld() -> None:
    rng = np.random.default_rng(0)
    col = (rng.random(4000) < 0.3).astype(np.uint8)
    train = np.stack([col, col, 1 - col], 1)  # perfect LD
    out = popgen.independent_sites(train, 4000, rng)
    np.testing.assert_allclose(out.mean(0), [0.3, 0.3, 0.7], atol=0.03)
    assert popgen.r2_matrix(out)[0, 1] < 0.01


def test_markov_chain_keeps_adjacent_ld_and_frequencies() -> None:
    rng = np.random.default_rng(0)
    col = (rng.random(4000) < 0.3).astype(np.uint8)
    flip = (rng.random(4000) < 0.1).astype(np.uint8)
    train = np.stack([col, col ^ flip, col], 1)  # x1 = x0 with 10 % flips; x2 = x0
    out = popgen.markov_chain(train, 4000, rng)
    np.testing.assert_allclose(out.mean(0), train.mean(0), atol=0.03)
    p_stay = (out[:, 1] == out[:, 0]).mean()
    assert p_stay == pytest.approx(0.9, abs=0.02)
    r2 = popgen.r2_matrix(out)
    assert r2[0, 2] < r2[1, 2]  # first order: (0, 2) is only linked through SNP 1


# ---- the sweep table -----------------------------------------------------------------------------------------------
@pytest.fixture
def genomes_cfg_in(make_cfg, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """``genomes_cfg_in(mode)``: the genomes evaluate config in a Hydra job of that mode (sweep dir ``tmp/sweep``)."""
    monkeypatch.setattr(HydraConfig.instance(), "cfg", HydraConfig.instance().cfg)  # Hydra's run state back afterwards

    def compose(mode: RunMode) -> DictConfig:
        cfg = make_cfg("evaluate", ["task=genomes"])
        with read_write(cfg.hydra):
            cfg.hydra.mode = mode
            cfg.hydra.sweep.dir = str(tmp_path / "sweep")
        HydraConfig().set_config(cfg)
        return cfg

    return compose


def test_sweep_table_is_in_the_sweep_dir_under_multirun_only(genomes_cfg_in, tmp_path: Path) -> None:
    assert genomes_cfg_in(RunMode.MULTIRUN).evaluation.sweep_table == str(tmp_path / "sweep" / "genomes_sweep.csv")
    assert genomes_cfg_in(RunMode.RUN).evaluation.sweep_table is None


def test_sweep_table_collects_the_rows_of_every_job(tmp_path: Path) -> None:
    sweep = tmp_path / "genomes_sweep.csv"
    for job, evaluator in enumerate([GenomesEvaluator({"n": 1}, sweep_table=str(sweep))] * 2 + [GenomesEvaluator({})]):
        temperature = 0.7 + job
        row = dict.fromkeys(COLUMNS, 0.5) | {"temperature": temperature, "invalid_alleles": 0.0, "haplotypes_per_s": 9.0}
        (tmp_path / str(job)).mkdir()
        evaluator._write_table(
            tmp_path / str(job), {"model": row}, {"panel": "p", "generation": {"temperature": temperature}}
        )
    with open(sweep, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["generator"], float(r["temperature"])) for r in rows] == [("model", 0.7), ("model", 1.7)]  # one header
    assert sorted(p.name for p in (tmp_path / "2").iterdir()) == ["genomes_metrics.csv", "genomes_metrics.json"]


# ---- end to end ----------------------------------------------------------------------------------------------------
REDUCED = ["task=genomes", "data.max_snps=60", "model.block_size=16", "data.batch_size=8"]


@pytest.mark.slow
def test_train_then_evaluate_on_reduced_panel(make_cfg, tmp_path: Path) -> None:
    metrics = train(make_cfg("train", [*REDUCED, "test=false"]))
    assert "val/loss" in metrics and "val/ppl" in metrics
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    ev = make_cfg("evaluate", [*REDUCED, f"ckpt_path={ckpt}", "generation.n=64", "generation.batch_size=32",
                               "evaluation.heatmap_snps=30"])  # fmt: skip
    out = evaluate(ev)
    assert out["genomes/model/invalid_alleles"] == 0
    assert out["genomes/model/haplotypes_per_s"] > 0
    for name in ("model", "independent", "markov", "real_val"):
        assert 0 <= out[f"genomes/{name}/ld_r2_mae"] < 1
    assert out["genomes/real_val/ld_r2_mae"] < out["genomes/independent/ld_r2_mae"]  # real LD beats no LD
    table = json.loads((tmp_path / "genomes_metrics.json").read_text())["table"]
    assert set(table) == {"model", "independent", "markov", "real_val"}
    for name in ("pca", "allele_frequency", "ld_heatmaps", "ld_decay", "nn_distance"):
        assert (tmp_path / f"genomes_{name}.png").stat().st_size > 5000
    _, generated = read_hapt(tmp_path / "generated.hapt.gz")
    assert generated.shape == (64, 60)
    np.testing.assert_array_equal(load_vcf_panel(tmp_path / "generated.vcf.gz").haplotypes, generated)


@pytest.mark.slow
def test_temperature_multirun(make_cfg, tmp_path: Path) -> None:
    train(make_cfg("train", [*REDUCED, "test=false", "trainer.max_steps=2"]))
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "evaluate.py", "-m", *REDUCED, f"ckpt_path={ckpt}", "generation.temperature=0.7,1.3",
           "generation.n=32", "trainer=cpu", "logger=csv", "extras.print_config=false", "trainer.limit_test_batches=1",
           "trainer.enable_progress_bar=false", "evaluation.heatmap_snps=20", f"hydra.sweep.dir={sweep}"]  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    subprocess.run(cmd, cwd=ROOT, check=True, env=env, capture_output=True, timeout=600)
    with open(sweep / "genomes_sweep.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    models = [r for r in rows if r["generator"] == "model"]
    assert sorted(float(r["temperature"]) for r in models) == [0.7, 1.3]
    assert all(float(r["invalid_alleles"]) == 0 for r in models)
    assert (sweep / "1" / "generated.vcf.gz").exists()
