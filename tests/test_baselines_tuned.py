"""Baselines with the same care as the model: regularisation chosen on the validation split, never fitted on it, and
the expression set's k-fold cross-validation (grouped, disjoint tests that cover every row)."""

import json
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate
from sklearn.metrics import r2_score, roc_auc_score

from dnagpt.data.expression_table import overlap_groups
from dnagpt.data.gsr import cut_signal
from dnagpt.data.gsr_table import read_gsr_tsv
from dnagpt.eval.baseline_report import Fit, format_report, main
from dnagpt.eval.expression import ExpressionEvaluator, fit_baselines, regression_metrics
from dnagpt.eval.kmer_baselines import KmerLogistic, tune_on_validation
from dnagpt.pipeline import build_parts, build_task
from dnagpt.utils.errors import ConfigError
from dnagpt.utils.resolvers import resource_path

PAS = Path(resource_path("gsr/pas_subset.tsv.gz"))
GRID = [0.003, 0.03, 0.3, 3.0]


@pytest.fixture(scope="module")
def human_pas() -> dict[str, tuple[list[str], np.ndarray]]:
    """Real human PAS windows of the shipped subset (signal cut out, as the baseline reads them) in three parts."""
    t = read_gsr_tsv(PAS, "pas")
    rows = np.random.default_rng(0).permutation(np.flatnonzero(t.species == "human"))[:900]
    parts = {"train": rows[:500], "val": rows[500:700], "test": rows[700:]}
    return {k: ([cut_signal(s, "pas") for s in t.sequence[r]], t.label[r]) for k, r in parts.items()}


# ---- tuning on validation ------------------------------------------------------------------------------------------
def test_chosen_C_has_the_best_val_auroc_and_is_fitted_on_train_only(human_pas) -> None:
    train, val, test = human_pas["train"], human_pas["val"], human_pas["test"]
    tuned = KmerLogistic(cut=300, C=GRID).fit(*train, val=val)
    fixed = {c: KmerLogistic(cut=300, C=c).fit(*train) for c in GRID}  # each grid point on its own
    want = [(c, roc_auc_score(val[1], m.predict_proba(val[0])[:, 1])) for c, m in fixed.items()]
    assert tuned.metric == "val_auroc"
    assert [c for c, _ in tuned.grid] == GRID
    np.testing.assert_allclose([s for _, s in tuned.grid], [s for _, s in want], rtol=0, atol=1e-12)
    assert tuned.C_ == max(want, key=lambda cs: cs[1])[0]
    assert len({round(s, 6) for _, s in want}) > 1  # the grid matters on real data, so the choice is a real one
    # the chosen model is the training-rows fit at that C: the validation rows never entered a fit
    np.testing.assert_array_equal(tuned.predict_proba(test[0]), fixed[tuned.C_].predict_proba(test[0]))


def test_a_grid_of_one_value_is_the_fixed_fit(human_pas) -> None:
    train, val, test = human_pas["train"], human_pas["val"], human_pas["test"]
    one = KmerLogistic(cut=300, C=[0.3]).fit(*train, val=val)
    fixed = KmerLogistic(cut=300, C=0.3).fit(*train)
    np.testing.assert_array_equal(one.predict_proba(test[0]), fixed.predict_proba(test[0]))
    assert one.C_ == fixed.C_ == 0.3 and np.isnan(fixed.grid[0][1]) and np.isfinite(one.grid[0][1])


def test_multi_class_chooses_by_val_log_loss() -> None:
    """Four classes: which species a real PAS window comes from."""
    t = read_gsr_tsv(PAS, "pas")
    rows = np.random.default_rng(1).permutation(len(t))[:1200]
    seqs = [cut_signal(s, "pas") for s in t.sequence[rows]]
    names, y = np.unique(t.species[rows], return_inverse=True)
    train, val, test = slice(0, 700), slice(700, 950), slice(950, None)
    model = KmerLogistic(k=4, C=GRID).fit(seqs[train], y[train], val=(seqs[val], y[val]))
    p = model.predict_proba(seqs[test])
    assert p.shape == (250, len(names)) == (250, 4)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert model.metric == "val_neg_log_loss" and model.C_ == max(model.grid, key=lambda cs: cs[1])[0]
    assert (p.argmax(axis=1) == y[test]).mean() > 0.4  # chance is about 0.25
    with pytest.raises(ValueError, match="never occur in the training rows"):
        KmerLogistic(k=4, C=GRID).fit(seqs[train], np.minimum(y[train], 2), val=(seqs[val], y[val]))


def test_tuning_refuses_what_it_cannot_choose(human_pas) -> None:
    train, val = human_pas["train"], human_pas["val"]
    with pytest.raises(ConfigError, match="needs validation rows"):
        KmerLogistic(cut=300, C=GRID).fit(*train)
    for bad in ([], [0.0, 1.0], -1.0, [float("nan")]):
        with pytest.raises(ConfigError, match="positive number"):
            KmerLogistic(C=bad)
    one_class = (val[0][:20], np.ones(20, dtype=int))
    with pytest.raises(ValueError, match="cannot rank them"):
        KmerLogistic(cut=300, C=GRID).fit(*train, val=one_class)


def test_tune_on_validation_takes_the_first_of_equal_scores() -> None:
    class Constant:
        def __init__(self, v: float) -> None:
            self.v = v

        def fit(self, x, y) -> "Constant":
            return self

    t = tune_on_validation(Constant, [1.0, 2.0, 3.0], (None, None), (None, None), lambda m, x, y: min(m.v, 2.0))
    assert t.value == 2.0 and t.model.v == 2.0 and t.grid == [(1.0, 1.0), (2.0, 2.0), (3.0, 2.0)]


# ---- the GSR evaluator ---------------------------------------------------------------------------------------------
def test_gsr_evaluator_writes_the_chosen_C_and_the_grid(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg("evaluate", ["task=gsr", "model.block_size=128", "data.species.pas=[human,mouse]",
                                "evaluation.C=[0.01,0.3,10.0]"])  # fmt: skip
    tokenizer, dm, model_cfg = build_parts(cfg)
    dm.setup("test")
    evaluator = instantiate(cfg.evaluation)
    got = evaluator(build_task(cfg, tokenizer, model_cfg), dm, None, tmp_path)
    rows = {r["group"]: r for r in json.loads((tmp_path / "gsr_metrics.json").read_text())}
    for species in ("human", "mouse"):
        row = rows[f"pas_{species}"]
        assert [c for c, _ in row["baseline_grid"]] == [0.01, 0.3, 10.0]
        assert row["baseline_C"] == max(row["baseline_grid"], key=lambda cs: cs[1])[0]
        assert got[f"test/pas_{species}/baseline_C"] == row["baseline_C"]
        # the grid's scores are those of the group's own val rows
        val = dm.tables["val"]
        idx = np.flatnonzero(val.species == species)
        fixed = KmerLogistic(cut=300, C=row["baseline_C"], seed=dm.seed)
        t = dm.tables["train"]
        tr = np.flatnonzero(t.species == species)
        fixed.fit([cut_signal(s, "pas") for s in t.sequence[tr]], t.label[tr])
        p = fixed.predict_proba([cut_signal(s, "pas") for s in val.sequence[idx]])[:, 1]
        assert dict(map(tuple, row["baseline_grid"]))[row["baseline_C"]] == pytest.approx(roc_auc_score(val.label[idx], p))
    assert rows["all"]["baseline_C"] is None
    header = (tmp_path / "gsr_metrics.csv").read_text().splitlines()[0].split(",")
    assert {"baseline_C", "baseline_grid"} <= set(header)


# ---- expression: k-fold cross-validation ---------------------------------------------------------------------------
def _kfold_dm(make_cfg, fold: int, *extra: str):
    cfg = make_cfg("train", ["task=expression", "model.block_size=512", "data.split=kfold", "data.n_folds=5",
                             f"data.fold={fold}", *extra])  # fmt: skip
    _, dm, _ = build_parts(cfg)
    dm.setup("fit")
    return dm


def test_expression_kfold_tests_are_disjoint_grouped_and_cover_the_set(make_cfg) -> None:
    dms = [_kfold_dm(make_cfg, f) for f in range(5)]
    table = dms[0].table
    n = len(table.ids)
    groups = overlap_groups(table.sequences, table.coords, (-7000, 3500))
    tests = [dm.split_data("test").rows for dm in dms]
    assert sorted(np.concatenate(tests).tolist()) == list(range(n))  # disjoint, and together every row
    assert all(abs(len(t) - n / 5) < 10 for t in tests)
    for f, dm in enumerate(dms):
        rows = {s: dm.split_data(s).rows for s in ("train", "val", "test")}
        assert sorted(np.concatenate(list(rows.values())).tolist()) == list(range(n))
        assert abs(len(rows["val"]) - 0.15 * n) < 10
        # no group (genes sharing bases on the genome) on two sides
        sides = {s: set(groups[r].tolist()) for s, r in rows.items()}
        assert not (sides["train"] & sides["val"] or sides["train"] & sides["test"] or sides["val"] & sides["test"])
        # the other folds' tests lie in this fold's train + val: one partition into folds for every fold
        others = np.concatenate([t for g, t in enumerate(tests) if g != f])
        assert np.isin(others, np.concatenate([rows["train"], rows["val"]])).all()
    again = _kfold_dm(make_cfg, 2)
    assert all(np.array_equal(again.split_data(s).rows, dms[2].split_data(s).rows) for s in ("train", "val", "test"))
    reseeded = _kfold_dm(make_cfg, 2, "data.split_seed=1")
    assert not np.array_equal(reseeded.split_data("test").rows, dms[2].split_data("test").rows)


def test_expression_kfold_refuses_a_fold_outside_the_folds(make_cfg) -> None:
    for bad in ("data.fold=5", "data.fold=-1", "data.n_folds=1"):
        with pytest.raises(ConfigError, match="n_folds"):
            _kfold_dm(make_cfg, 0, bad)


def test_expression_evaluator_tunes_the_ridge_on_val_and_writes_the_grid(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg("evaluate", ["task=expression", "model.block_size=512", "data.split=kfold", "data.fold=3",
                                "evaluation.alphas=[0.01,1.0,100.0,10000.0]"])  # fmt: skip
    tokenizer, dm, model_cfg = build_parts(cfg)
    dm.setup("test")
    got = instantiate(cfg.evaluation)(build_task(cfg, tokenizer, model_cfg), dm, None, tmp_path)
    saved = json.loads((tmp_path / "expression_baselines_test.json").read_text())["kmer_ridge"]
    assert [a for a, _ in saved["grid"]] == [0.01, 1.0, 100.0, 10000.0] and saved["metric"] == "val_r2"
    assert saved["alpha"] == got["test/kmer_ridge_alpha"] == max(saved["grid"], key=lambda a: a[1])[0]
    # the reported test R² is that of a ridge fitted on train alone at the chosen alpha
    train, val, test = (dm.split_data(s) for s in ("train", "val", "test"))
    fixed, _ = fit_baselines(train, None, test, alphas=saved["alpha"])
    assert got["test/kmer_ridge_r2"] == pytest.approx(regression_metrics(test.labels, fixed["kmer_ridge"])["r2"])
    # and its val score is the one in the grid
    on_val, _ = fit_baselines(train, None, val, alphas=saved["alpha"])
    assert dict(map(tuple, saved["grid"]))[saved["alpha"]] == pytest.approx(r2_score(val.labels, on_val["kmer_ridge"]))
    with pytest.raises(ConfigError, match="choose the ridge's alpha on the rows it scores"):
        ExpressionEvaluator(split="val", alphas=[1.0, 10.0])


# ---- the report without a model ------------------------------------------------------------------------------------
def test_baseline_report_runs_every_fold_and_keeps_the_tuned_choice(tmp_path: Path) -> None:
    out = tmp_path / "fits.json"
    main(["task=expression", "data.split=kfold", "data.n_folds=3", "evaluation.alphas=[0.1,1000.0]", "--fixed", "1000",
          "--json", str(out)])  # fmt: skip
    fits = [Fit(**f) for f in json.loads(out.read_text())]
    assert sorted({f.fold for f in fits}) == [0, 1, 2]
    ridge = [f for f in fits if f.group == "expression/kmer_ridge"]
    assert {f.setting for f in ridge} == {"tuned", "fixed"} and len(ridge) == 6
    for f in ridge:
        assert f.value == (max(f.grid, key=lambda a: a[1])[0] if f.setting == "tuned" else 1000.0)
    assert sum(f.n_test for f in ridge if f.setting == "tuned") == 445  # every gene of the mini set tested once
    table = format_report(fits)
    assert "SD over folds" in table and "| expression/kmer_ridge | tuned | 3 |" in table
    with pytest.raises(SystemExit):
        main(["task=genomes"])  # a task without a k-mer baseline is refused in one paragraph


def test_baseline_report_gsr_tuned_and_fixed_per_species(tmp_path: Path) -> None:
    out = tmp_path / "fits.json"
    main(["task=gsr", "data.species.pas=[human]", "evaluation.C=[0.01,1.0]", "--fixed", "1.0", "--json", str(out)])
    fits = {f["setting"]: Fit(**f) for f in json.loads(out.read_text())}
    assert set(fits) == {"tuned", "fixed"} and fits["fixed"].value == 1.0 and fits["tuned"].group == "pas_human"
    assert fits["tuned"].value == max(fits["tuned"].grid, key=lambda c: c[1])[0]
    assert fits["tuned"].n_test == fits["fixed"].n_test > 100 and 0.5 < fits["tuned"].metrics["auroc"] <= 1
