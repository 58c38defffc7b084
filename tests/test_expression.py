"""task=expression: prompt layout, splits, z-scoring, every bad input, the task's loss and metrics, the baselines,
the numeric-feature path, and train → evaluate end to end on the bundled mini set."""

import csv
import gzip
import hashlib
import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dnagpt.data.expression import ExpressionDataModule
from dnagpt.data.expression_table import assign_splits, overlap_groups, read_expression_table
from dnagpt.data.splits import SPLITS
from dnagpt.eval.expression import Rows, fit_baselines, gc_cpg_features, regression_metrics
from dnagpt.model import GPTConfig
from dnagpt.pipeline import evaluate, train
from dnagpt.tasks.expression import ExpressionTask
from dnagpt.tokenizer import KmerTokenizer
from dnagpt.utils.errors import MissingFileError
from dnagpt.utils.resolvers import resource_path

TOK = KmerTokenizer()
MINI = Path(resource_path("expression/xpresso_mini_hg19_chr20_promoters.tsv.gz"))
HEADER = ["gene", "chrom", "tss", "strand", "label", "feat", "sequence"]
SEQ_LEN, TSS = 120, 60
SMALL = dict(block_size=64, n_layer=2, n_head=2, n_embd=32)


def synthetic_rows(n: int = 40, seed: int = 0) -> list[list[str]]:
    """Random promoters, far apart on chromosome 1 except genes 0/1 and 2/3, whose windows overlap."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        seq = "".join(rng.choice(list("ACGT"), SEQ_LEN))
        tss = 10_000 * (i - 1) + 50 if i in (1, 3) else 10_000 * i
        rows.append([f"g{i}", "1", str(tss), "+", f"{rng.normal():.4f}", f"{rng.normal() + 5:.4f}", seq])
    return rows


def write_tsv(path: Path, rows: list[list[str]], header: list[str] = HEADER) -> Path:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def make_dm(path: Path, block_size: int = 64, **kw) -> ExpressionDataModule:
    args = dict(window=(-24, 24), tss_index=TSS, sequence_length=SEQ_LEN, id_column="gene", label_column="label",
                sequence_column="sequence", coordinate_columns=("chrom", "tss", "strand"), val_size=0.2,
                test_size=0.2, batch_size=4) | kw  # fmt: skip
    return ExpressionDataModule(TOK, block_size, path, **args)


@pytest.fixture
def tsv(tmp_path: Path) -> Path:
    return write_tsv(tmp_path / "expr.tsv.gz", synthetic_rows())


# ----- prompt layout -------------------------------------------------------------------------------------------------
def test_prompt_with_features_puts_values_after_the_first_m_and_regresses_at_the_last(tsv: Path) -> None:
    dm = make_dm(tsv, feature_columns=["feat"])
    dm.setup()
    b = next(iter(dm.val_dataloader()))
    ids, T = b["input_ids"], b["input_ids"].shape[1]
    n_dna = 48 // 6
    assert T == 1 + n_dna + 4 and dm.n_positions == T + 1 <= 64
    assert (ids[:, 0] == TOK.species_id("human")).all() and (b["species"] == ids[:, 0]).all()
    first_m, last_m = b["value_pos"][:, 0], b["reg_pos"][:, 0]
    rows = torch.arange(len(ids))
    assert (ids[rows, first_m] == TOK.number_id).all() and (ids[rows, first_m - 1] == TOK.plus_id).all()
    assert (ids[rows, last_m] == TOK.number_id).all() and (ids[rows, last_m - 1] == TOK.eq_id).all()
    assert (last_m == T - 1).all() and (first_m < last_m).all()
    # the DNA tokens are the window [-24, 24) around the TSS of that gene's stored sequence
    seq = dm.table.sequences[int(b["row"][0])]
    assert TOK.decode_dna(ids[0, 1 : 1 + n_dna]) == seq[TSS - 24 : TSS + 24]
    cfg = GPTConfig.from_name("tiny", vocab_size=len(TOK), **SMALL)
    task = ExpressionTask(cfg, TOK.to_dict())
    assert task.predict(b).shape == (len(ids),)


def test_sequence_only_prompt_ends_with_eq_m_and_has_no_values(tsv: Path) -> None:
    dm = make_dm(tsv)
    dm.setup()
    b = next(iter(dm.train_dataloader()))
    assert b["values"].shape == (4, 0) and b["value_pos"].shape == (4, 0)
    assert b["input_ids"][:, -2:].tolist() == [[TOK.eq_id, TOK.number_id]] * 4
    assert TOK.plus_id not in b["input_ids"][:, -4:]
    assert dm.n_positions == b["input_ids"].shape[1]


def test_prompt_that_does_not_fit_the_block_names_both_numbers(tsv: Path) -> None:
    with pytest.raises(ValueError, match=r"needs 14 positions .* block_size is 13"):
        make_dm(tsv, block_size=13, feature_columns=["feat"])  # <R> + 8 DNA + <+><M> + 1 value + <=><M>
    make_dm(tsv, block_size=14, feature_columns=["feat"])


def test_mini_set_default_window_fits_the_tiny_preset() -> None:
    dm = ExpressionDataModule(TOK, 512, MINI)
    assert dm.n_positions == 503
    with pytest.raises(ValueError, match=r"needs 1753 positions .* block_size is 512"):
        ExpressionDataModule(TOK, 512, MINI, window=(-7000, 3500))


@pytest.mark.parametrize("window", [(-61, 10), (0, 61), (10, 10), (1, 2, 3)])
def test_window_outside_the_stored_sequence_is_an_error(tsv: Path, window) -> None:
    with pytest.raises(ValueError, match="data.window"):
        make_dm(tsv, window=window)


def test_fixed_vocabulary_needs_whole_kmers(tsv: Path) -> None:
    with pytest.raises(ValueError, match="not a multiple of 6"):
        ExpressionDataModule(KmerTokenizer("fixed"), 64, tsv, window=(-10, 10), tss_index=TSS, sequence_length=SEQ_LEN)


# ----- splits and scaling --------------------------------------------------------------------------------------------
def _split_rows(dm: ExpressionDataModule) -> dict[str, list[int]]:
    return {s: dm.split_data(s).rows.tolist() for s in ("train", "val", "test")}


def test_splits_are_deterministic_disjoint_and_cover_every_row(tsv: Path) -> None:
    a, b, c = make_dm(tsv), make_dm(tsv), make_dm(tsv, split_seed=1)
    for dm in (a, b, c):
        dm.setup()
    sa = _split_rows(a)
    assert sa == _split_rows(b) and sa != _split_rows(c)
    every = sorted(sa["train"] + sa["val"] + sa["test"])
    assert every == list(range(40))
    assert len(sa["val"]) >= 8 and len(sa["test"]) >= 8
    # genes 0/1 and 2/3 overlap on the genome: grouped keeps each pair in one split
    for s in sa.values():
        assert (0 in s) == (1 in s) and (2 in s) == (3 in s)
    # the split does not depend on the window the model reads
    d = make_dm(tsv, window=(-12, 6))
    d.setup()
    assert _split_rows(d) == sa


def test_overlap_groups_use_strand_and_identity() -> None:
    coords = [("1", 1000, "+"), ("1", 1100, "-"), ("2", 1000, "+"), ("1", 5000, "+")]
    groups = overlap_groups(["A", "C", "G", "A"], coords, (-100, 50))
    assert groups[0] != groups[1]  # + span [900, 1050) and - span [1051, 1201): apart
    assert groups[2] != groups[0]  # another chromosome
    assert groups[3] == groups[0]  # far away, but gene 3 repeats gene 0's sequence
    near = overlap_groups(["A", "C"], [("1", 1000, "+"), ("1", 1040, "-")], (-100, 50))
    assert near[0] == near[1]  # - span [991, 1141) reaches into [900, 1050)


def test_ordered_split_takes_the_last_rows_as_test() -> None:
    names = assign_splits(np.zeros(10, dtype=int), 2, 3, seed=0, method="ordered")
    assert names.tolist() == ["train"] * 5 + ["val"] * 2 + ["test"] * 3
    with pytest.raises(ValueError, match="at least 2 rows"):
        assign_splits(np.arange(5), 2, 2, seed=0, method="random")
    with pytest.raises(ValueError, match="fraction"):
        assign_splits(np.arange(50), 1.5, 2, seed=0)


def _fingerprint(rows: np.ndarray) -> tuple[int, str]:
    return len(rows), hashlib.sha256(np.asarray(rows, dtype=np.int64).tobytes()).hexdigest()[:16]


MINI_SPLITS = {
    "grouped": {"train": (311, "31f98a1fe35b33bb"), "val": (67, "07e43cc0159352ef"), "test": (67, "35a3a0e8464b86d7")},
    "random": {"train": (311, "e3950ce3bd8cefe2"), "val": (67, "e8f362189537dbb6"), "test": (67, "8430021c8f464339")},
    "ordered": {"train": (335, "54732f219c1cb721"), "val": (50, "d79e2fa04d2aa959"), "test": (60, "5d381627e1294c73")},
    "identical": {"train": (311, "00f5c0bbbd92bfab"), "val": (67, "32f2cd2821686c16"), "test": (67, "29562d7f9f412ce0")},
}


def test_mini_set_splits_are_pinned() -> None:
    """Every split method on the shipped mini set, as before the split rules were shared."""
    dm = ExpressionDataModule(TOK, 512, MINI)
    dm.setup()
    assert {s: _fingerprint(dm.split_data(s).rows) for s in SPLITS} == MINI_SPLITS["grouped"]
    table, span = dm.table, (-7000, 3500)
    for method, groups, kw in [
        ("random", overlap_groups(table.sequences, table.coords, span), {"val_size": 0.15, "test_size": 0.15, "seed": 5}),
        ("ordered", np.zeros(445), {"val_size": 50, "test_size": 60, "seed": 0}),
        ("grouped", overlap_groups(table.sequences, None, span), {"val_size": 0.15, "test_size": 0.15, "seed": 0}),
    ]:
        names = assign_splits(groups, method=method, **kw)
        got = {s: _fingerprint(np.flatnonzero(names == s)) for s in SPLITS}
        assert got == MINI_SPLITS["identical" if method == "grouped" else method], method


def test_z_scoring_uses_training_statistics_only(tmp_path: Path) -> None:
    rows = synthetic_rows()
    base = make_dm(write_tsv(tmp_path / "a.tsv", rows), feature_columns=["feat"])
    base.setup()
    held_out = [int(i) for s in ("val", "test") for i in base.split_data(s).rows]
    for i in held_out:  # wild held-out labels and features must not move the statistics
        rows[i][4], rows[i][5] = "1000", "-1000"
    dm = make_dm(write_tsv(tmp_path / "b.tsv", rows), feature_columns=["feat"])
    dm.setup()
    train = dm.split_data("train")
    assert dm.label_mean == pytest.approx(train.labels.mean()) and dm.label_std == pytest.approx(train.labels.std())
    assert (dm.label_mean, dm.label_std) == (base.label_mean, base.label_std)
    assert train.features.mean() == pytest.approx(0, abs=1e-6) and train.features.std() == pytest.approx(1, abs=1e-5)
    np.testing.assert_allclose(dm.split_data("train").features, base.split_data("train").features)
    target = dm.dataset("test")[0]["target"]
    assert float(target) == pytest.approx((1000 - dm.label_mean) / dm.label_std, rel=1e-5)
    np.testing.assert_allclose(dm.to_label_units(np.array([float(target)])), [1000], rtol=1e-5)


# ----- bad input -----------------------------------------------------------------------------------------------------
def _bad(tmp_path: Path, edit, header: list[str] = HEADER) -> Path:
    rows = synthetic_rows()
    edit(rows)
    return write_tsv(tmp_path / "bad.tsv", rows, header)


@pytest.mark.parametrize(
    ("edit", "kw", "match"),
    [
        (lambda r: r[4].__setitem__(6, r[4][6][:-1]), {},
         r"bad.tsv, line 6, column 'sequence': holds 119 bp, expected .*120"),
        (lambda r: r[2].__setitem__(5, "nan"), {"feature_columns": ["feat"]},
         r"bad.tsv, line 4, column 'feat': .*not finite"),
        (lambda r: r[2].__setitem__(5, "NA"), {"feature_columns": ["feat"]},
         r"bad.tsv, line 4, column 'feat': 'NA' is not a num"),
        (lambda r: r[0].__setitem__(4, ""), {}, r"bad.tsv, line 2, column 'label': '' is not a number"),
        (lambda r: r[7].__setitem__(6, "ACGU" + r[7][6][4:]), {}, r"bad.tsv, line 9, column 'sequence': invalid DNA .* 'U'"),
        (lambda r: r[1].__setitem__(3, "x"), {}, r"bad.tsv, line 3, column 'strand': strand 'x'"),
        (lambda r: r[1].append("extra"), {}, r"bad.tsv, line 3: 8 tab-separated fields, the header has 7"),
        (lambda r: r[3].__setitem__(5, "-0.5"), {"feature_columns": ["feat"], "log10_columns": ["feat"]},
         r"bad.tsv, line 5, column 'feat': log10\(x \+ 0.1\) needs x > -0.1"),
        (lambda r: None, {"feature_columns": ["feet"]}, r"missing column\(s\) \['feet'\]"),
        (lambda r: None, {"species": "martian"}, r"data.species: unknown species 'martian'"),
        (lambda r: None, {"log10_columns": ["feat"]}, r"log10_columns \['feat'\] are neither"),
    ],
    ids=["length", "nan", "na", "empty-label", "bad-base", "strand", "fields", "log10", "column", "species", "log10-col"],
)
def test_bad_table_is_a_clear_error(tmp_path: Path, edit, kw, match) -> None:
    dm = make_dm(_bad(tmp_path, edit), **kw)
    with pytest.raises(ValueError, match=match):
        dm.setup()


def test_unknown_species_in_a_species_column_names_the_line(tmp_path: Path) -> None:
    rows = [r + ["human" if i != 5 else "dragon"] for i, r in enumerate(synthetic_rows())]
    path = write_tsv(tmp_path / "sp.tsv", rows, HEADER + ["species"])
    with pytest.raises(ValueError, match=r"sp.tsv, line 7, column 'species': unknown species 'dragon'"):
        make_dm(path, species_column="species").setup()
    rows[5][-1] = "mouse"
    dm = make_dm(write_tsv(tmp_path / "sp2.tsv", rows, HEADER + ["species"]), species_column="species")
    dm.setup()
    assert sorted(set(dm.table.species)) == ["human", "mouse"]


def test_missing_file_and_constant_label(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.tsv"):
        make_dm(tmp_path / "nope.tsv").setup()
    with pytest.raises(MissingFileError, match=r"^path=\S*nope\.tsv is not a file$"):
        make_dm(tmp_path / "nope.tsv")  # checked when built, read in setup
    path = _bad(tmp_path, lambda rows: [r.__setitem__(4, "1.0") for r in rows])
    with pytest.raises(ValueError, match="'label' is constant"):
        make_dm(path).setup()


def test_mini_set_reads_with_the_default_columns() -> None:
    table = read_expression_table(MINI, TOK, id_column="ensembl_gene_id", label_column="human_expr_label",
                                  sequence_column="sequence_tss_minus7000_plus3500", sequence_length=10500,
                                  coordinate_columns=["chrom_GRCh37", "tss_1based", "strand"])  # fmt: skip
    assert len(table.ids) == 445 and table.features.shape == (445, 0)
    assert table.lines[0] == 2 and table.labels.min() == pytest.approx(-1.0)


# ----- task ----------------------------------------------------------------------------------------------------------
def make_task(seed: int = 0, tokenizer: KmerTokenizer = TOK) -> ExpressionTask:
    torch.manual_seed(seed)
    cfg = GPTConfig.from_name("tiny", vocab_size=len(tokenizer), **SMALL)
    return ExpressionTask(cfg, tokenizer.to_dict(), optimizer=partial(torch.optim.AdamW, lr=1e-3))


def test_loss_is_the_mse_of_the_regression_head_at_the_last_m(tsv: Path) -> None:
    dm = make_dm(tsv, feature_columns=["feat"])
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    task = make_task()
    res = task.shared_step(batch, "train")
    out = task.model(batch["input_ids"], values=batch["values"], value_pos=batch["value_pos"],
                     value_mask=batch["value_mask"], reg_pos=batch["reg_pos"], compute_logits=False)  # fmt: skip
    torch.testing.assert_close(res["loss"], F.mse_loss(out.value_pred[:, 0], batch["target"]))
    res["loss"].backward()
    assert task.model.regression_head[0].weight.grad.abs().sum() > 0
    assert task.model.number_embedding[0].weight.grad.abs().sum() > 0  # the features are inputs
    assert task.model.token_head[0].weight.grad is None  # no token head in this task


def test_eval_metrics_accumulate_over_batches(tsv: Path) -> None:
    dm = make_dm(tsv)
    dm.setup()
    task = make_task()
    preds, targets = [], []
    for batch in dm.val_dataloader():
        preds.append(task.shared_step(batch, "val")["pred"].detach())
        targets.append(batch["target"])
    want = regression_metrics(torch.cat(targets).numpy(), torch.cat(preds).numpy())
    assert float(task.r2["val"].compute()) == pytest.approx(want["r2"], abs=1e-4)
    assert float(task.pearson["val"].compute()) == pytest.approx(want["pearson"], abs=1e-4)
    assert float(task.spearman["val"].compute()) == pytest.approx(want["spearman"], abs=1e-4)
    assert task.hparams.monitor == "val/r2" and task.hparams.mode == "max"


def _release_pth(task: ExpressionTask, path: Path, drop: str = "") -> Path:
    rename = {"token_head.": "mlm_head.", "regression_head.": "num_regression."}
    sd = {}
    for key, value in task.model.state_dict().items():
        for ours, theirs in rename.items():
            key = theirs + key[len(ours) :] if key.startswith(ours) else key
        if not (drop and key.startswith(drop)):
            sd[key] = value
    torch.save(sd, path)
    return path


def test_checkpoint_that_does_not_fit_the_task_is_an_error(tmp_path: Path) -> None:
    other_vocab = _release_pth(make_task(tokenizer=KmerTokenizer("fixed")), tmp_path / "fixed.pth")
    with pytest.raises(ValueError, match=r"(?s)does not fit.*transformer.wte.weight.*vocabulary"):
        make_task().load_weights(other_vocab)
    no_head = _release_pth(make_task(), tmp_path / "nohead.pth", drop="num_regression.")
    with pytest.raises(ValueError, match=r"(?s)does not fit.*missing: regression_head"):
        make_task().load_weights(no_head)
    make_task(seed=3).load_weights(_release_pth(make_task(), tmp_path / "ok.pth"))


# ----- baselines -----------------------------------------------------------------------------------------------------
def _random_seqs(n: int, length: int, rng: np.random.Generator) -> list[str]:
    gc = rng.uniform(0.3, 0.7, n)  # varied composition, so GC content carries signal
    return ["".join(rng.choice(list("ACGT"), length, p=[(1 - g) / 2, g / 2, g / 2, (1 - g) / 2])) for g in gc]


def test_baselines_are_near_perfect_where_the_label_is_their_feature() -> None:
    rng = np.random.default_rng(0)
    seqs = _random_seqs(160, 300, rng)
    y = 3.0 * gc_cpg_features(seqs)[:, 0] - 1.0
    none = np.zeros((160, 0))
    train, val, ev = (Rows(seqs[a:b], none[a:b], y[a:b]) for a, b in ((0, 90), (90, 120), (120, 160)))
    preds, _ = fit_baselines(train, val, ev, k=3, alphas=[1e-3, 1e-2])
    assert regression_metrics(y[120:], preds["gc_cpg"])["r2"] > 0.999
    assert regression_metrics(y[120:], preds["kmer_ridge"])["r2"] > 0.95
    noise = rng.normal(size=160)  # a label they cannot know
    preds, _ = fit_baselines(train._replace(labels=noise[:90]), val._replace(labels=noise[90:120]), ev, k=3)
    assert all(regression_metrics(noise[120:], p)["r2"] < 0.2 for p in preds.values())


def test_baselines_use_the_numeric_features() -> None:
    rng = np.random.default_rng(1)
    seqs = _random_seqs(100, 120, rng)
    feats = rng.normal(size=(100, 1))
    y = 2 * feats[:, 0]
    train, ev = Rows(seqs[:80], feats[:80], y[:80]), Rows(seqs[80:], feats[80:], y[80:])
    preds, _ = fit_baselines(train, None, ev, k=2, alphas=1e-3)  # one alpha: no validation rows needed
    assert all(regression_metrics(y[80:], p)["r2"] > 0.99 for p in preds.values())


# ----- numeric features on the real mini set -------------------------------------------------------------------------
def test_numeric_feature_path_with_the_mouse_ortholog_label() -> None:
    """The mouse ortholog's label (Pearson 0.89 with the human one) as a stand-in for Xpresso's half-life features."""
    dm = ExpressionDataModule(TOK, 64, MINI, window=(-150, 150), feature_columns=["mouse_ortholog_expr_label"])
    dm.setup()
    train, test = dm.split_data("train"), dm.split_data("test")
    assert train.features.shape == (311, 1) and abs(float(train.features.mean())) < 1e-5
    b = next(iter(dm.test_dataloader()))
    torch.testing.assert_close(b["values"][:, 0], torch.from_numpy(test.features[: len(b["values"]), 0]))
    preds, _ = fit_baselines(train, dm.split_data("val"), test, k=3)
    assert regression_metrics(test.labels, preds["gc_cpg"])["pearson"] > 0.8
    task = make_task()
    loss = task.shared_step(b, "train")["loss"]
    loss.backward()
    assert task.model.number_embedding[0].weight.grad.abs().sum() > 0


# ----- end to end ----------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_train_then_evaluate_writes_metrics_and_scatter(make_cfg, tmp_path: Path) -> None:
    overrides = ["task=expression", "data.window=[-150,150]", "trainer.max_steps=4", "trainer.val_check_interval=2"]
    metrics = train(make_cfg("train", overrides))
    for key in ("train/loss", "val/r2", "val/r2_best", "val/pearson", "val/spearman", "test/r2", "test/pearson_r2"):
        assert key in metrics and np.isfinite(metrics[key]), key
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    ev = make_cfg("evaluate", ["task=expression", f"ckpt_path={ckpt}", "data.window=[-150,150]",
                               "trainer.limit_test_batches=null"])  # fmt: skip
    ev.paths.output_dir = str(tmp_path / "eval")
    result = evaluate(ev)
    for key in ("test/r2", "test/gc_cpg_r2", "test/kmer_ridge_r2", "test/kmer_ridge_spearman"):
        assert key in result, sorted(result)
    out = tmp_path / "eval"
    assert (out / "expression_scatter_test.png").stat().st_size > 10_000
    assert json.loads((out / "metrics.json").read_text())["test/gc_cpg_r2"] == pytest.approx(result["test/gc_cpg_r2"])
    assert "test/kmer_ridge_r2" in (out / "metrics.csv").read_text()
    with open(out / "expression_predictions_test.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 67 and set(rows[0]) == {"id", "true", "model", "gc_cpg", "kmer_ridge"}
    model_r2 = regression_metrics(np.array([float(r["true"]) for r in rows]), np.array([float(r["model"]) for r in rows]))
    assert model_r2["r2"] == pytest.approx(result["test/r2"], abs=1e-3)  # the same predictions as the test step
