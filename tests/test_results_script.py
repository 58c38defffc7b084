"""scripts/results.py: the interval and table helpers, and a smoke-scale run of two rows through the real commands."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("results_script", ROOT / "scripts" / "results.py")
results = sys.modules["results_script"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(results)

DOC = "# Results\n\nprose before\n\n<!-- results:begin -->\nold table\n<!-- results:end -->\n\nprose after\n"
STARTS = {"pretrained": Path("pre.ckpt"), "pretrained_human": Path("pre_h.ckpt"), "pretrained_tied": Path("pre_t.ckpt")}


def test_interval_is_the_student_t_half_width_over_seeds_and_the_sd_over_folds() -> None:
    assert results.interval([0.70, 0.72, 0.74], "ci95") == "0.720 ± 0.050"  # t(0.975, 2) = 4.303, sd 0.02 / sqrt 3
    assert results.interval([0.70, 0.72, 0.74], "sd") == "0.720 ± 0.020"
    assert results.interval([0.7, float("nan")], "ci95") == "0.700"
    assert results.interval([], "ci95") == "–"
    assert results.interval([10, 10], "ci95", digits=0) == "10 ± 0"  # a count


def test_the_table_gives_the_model_minus_its_baseline_per_seed(tmp_path: Path) -> None:
    row = results.gsr_row("pas", "human", tmp_path, results.SCALES["smoke"], None, [0, 1, 2], STARTS,
                          ["pretrained", "random"])
    for seed, (ours, lr) in enumerate([(0.86, 0.85), (0.84, 0.84), (0.90, 0.88)]):  # splits differ: so do baselines
        scored = row.runs[("random init", seed)][-1].out
        scored.mkdir(parents=True)
        (scored / "metrics.json").write_text(json.dumps({"test/pas_human/auroc": ours, "test/pas_human/baseline_auroc": lr,
                                                         "test/pas_human/acc": 0.7, "test/pas_human/baseline_acc": 0.75}))
    lines = results.summarise(row, "0.1 CPU hours")
    assert lines[2] == "| arm | n | acc | AUROC | 6-mer LR acc | 6-mer LR AUROC | acc − LR | AUROC − LR |"
    # AUROC − LR: 0.01, 0.00, 0.02 -> mean +0.010, t(0.975, 2) * 0.01 / sqrt 3 = 0.025
    assert lines[4] == ("| random init | 3 | 0.700 ± 0.000 | 0.867 ± 0.076 | 0.750 ± 0.000 | 0.857 ± 0.052 "
                        "| -0.050 ± 0.000 | +0.010 ± 0.025 |")
    assert lines[5:] == [""]  # the pretrained arm, never run, has no line


def test_the_table_replaces_only_what_lies_between_the_markers(tmp_path: Path) -> None:
    doc = tmp_path / "results.md"
    doc.write_text(DOC)
    results.write_table(doc, ["new table"])
    assert doc.read_text() == DOC.replace("old table", "new table")
    doc.write_text("no markers")
    with pytest.raises(RuntimeError, match="markers"):
        results.write_table(doc, ["x"])


def test_a_preempted_run_is_resumed_not_taken_as_done(tmp_path: Path) -> None:
    run = results.Run("train.py", ["experiment=finetune_gsr_cpu", "init_from=pre.ckpt"], tmp_path)
    assert not run.done and "init_from=pre.ckpt" in run.command()
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    (tmp_path / "metrics.json").write_text('{"preempted_at_step": 31.0, "train/loss": 5.3}')
    assert not run.done
    assert "ckpt_path=auto" in run.command() and "init_from=pre.ckpt" not in run.command()
    (tmp_path / "metrics.json").write_text('{"val/auroc": 0.8}')
    assert run.done


def test_a_resumed_run_costs_at_least_what_was_recorded(tmp_path: Path) -> None:
    """The attempt before a resumption ran in a driver that never recorded its cost: the row's CPU time is "≥"."""
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    row = results.Row("r", "a row", runs={("model", 0): [results.Run("train.py", ["--help"], tmp_path)]})
    assert results.execute(row).startswith("≥ ")
    assert json.loads((tmp_path / "cost.json").read_text())["partial"] is True
    (tmp_path / "metrics.json").write_text('{"val/auroc": 0.8}')
    (tmp_path / "cost.json").unlink()  # a run finished before costs were recorded
    assert results.execute(row) == "CPU time not recorded"


def test_arms_choose_the_initialisations_run(tmp_path: Path) -> None:
    row = results.gsr_row("pas", "human", tmp_path, results.SCALES["smoke"], None, [0, 1], STARTS, ["random"])
    assert sorted(row.runs) == [("random init", 0), ("random init", 1)]
    assert not any(o.startswith("init_from=") for runs in row.runs.values() for o in runs[0].overrides)
    every = results.gsr_row("pas", "human", tmp_path, results.SCALES["smoke"], None, [0], STARTS)
    assert [arm for arm, _ in every.runs] == ["pretrained", "random init", "pretrained, human only"]
    assert "init_from=pre.ckpt" in every.runs[("pretrained", 0)][0].overrides
    assert "init_from=pre_h.ckpt" in every.runs[("pretrained, human only", 0)][0].overrides
    human_only = every.runs[("pretrained, human only", 0)][0].out
    assert human_only == tmp_path / "pas_human" / "pretrained_human_only" / "seed0" / "train"
    train, evaluate = every.runs[("random init", 0)]
    assert "data.phases=6" in train.overrides and "data.phases=6" in evaluate.overrides  # tested as it was trained


def test_a_tied_head_pre_training_is_fine_tuned_with_its_head_tied(tmp_path: Path) -> None:
    """Its checkpoint is refused by a model built untied: the arm carries the pre-training's model override, and its
    random-initialisation twin the same head (GSR reads the answer through the token head)."""
    row = results.gsr_row("pas", "human", tmp_path, results.SCALES["smoke"], None, [0], STARTS,
                          ["pretrained", "random", "pretrained_tied", "random_tied"])
    (tied, _), (plain, _) = row.runs[("pretrained, tied head", 0)], row.runs[("pretrained", 0)]
    assert [o for o in tied.overrides if o not in plain.overrides] == ["init_from=pre_t.ckpt", "model.tie_head=true"]
    (tied, _), (plain, _) = row.runs[("random init, tied head", 0)], row.runs[("random init", 0)]
    assert [o for o in tied.overrides if o not in plain.overrides] == ["model.tie_head=true"]  # the same head, untrained
    assert not {"pretrained_tied", "random_tied"} & set(results.DEFAULT_ARMS)  # the whole table runs them when asked


def test_h_vs_m_pre_trainings_differ_only_in_the_corpus(tmp_path: Path) -> None:
    multi, _ = results.pretrain_row(tmp_path / "m", results.SCALES["cpu"], Path("/data"), [7])
    human, last = results.pretrain_row(tmp_path / "h", results.SCALES["cpu"], Path("/data"), [7], "pretrain_human")
    (m,), (h,) = ([run.overrides for run in row.runs[("model", 7)]] for row in (multi, human))
    assert [o for o in m if o not in h] == ["corpus=chromosomes"]
    assert [o for o in h if o not in m] == ["corpus=chromosomes_human"]
    assert last == tmp_path / "h" / "seed7" / "checkpoints" / "last.ckpt"


def test_tied_head_pre_training_differs_from_the_recipe_only_by_the_head(tmp_path: Path) -> None:
    multi, _ = results.pretrain_row(tmp_path / "m", results.SCALES["cpu"], Path("/data"), [7])
    tied, _ = results.pretrain_row(tmp_path / "t", results.SCALES["cpu"], Path("/data"), [7], "pretrain_tied")
    (m,), (t,) = ([run.overrides for run in row.runs[("model", 7)]] for row in (multi, tied))
    assert [o for o in t if o not in m] == ["model.tie_head=true"] and all(o in t for o in m)
    assert "tied token head" in tied.what


def test_pre_training_seeds_are_replicates_and_the_first_is_the_start(tmp_path: Path) -> None:
    row, last = results.pretrain_row(tmp_path, results.SCALES["cpu"], None, [1337, 1, 2])
    assert list(row.runs) == [("model", 1337), ("model", 1), ("model", 2)]
    for seed in (1337, 1, 2):
        (run,) = row.runs[("model", seed)]
        assert run.out == tmp_path / f"seed{seed}" and f"seed={seed}" in run.overrides
    assert last == tmp_path / "seed1337" / "checkpoints" / "last.ckpt"
    for seed, bits in ((1337, 1.60), (1, 1.70), (2, 1.65)):  # paired with its own run's Markov figure (1.70 each)
        (row.runs[("model", seed)][0].out).mkdir()
        metrics = {"val/bits_per_base": bits, "val/markov_bits_per_base": 1.70, "test/bits_per_base": bits,
                   "test/markov_bits_per_base": 1.70, "val/markov_order": 8}
        (row.runs[("model", seed)][0].out / "metrics.json").write_text(json.dumps(metrics))
    line = results.summarise(row, "1 CPU hours")[4]
    assert line.startswith("| model | 3 | 1.650 ± 0.124 |") and "| 8 ± 0 |" in line
    assert line.endswith("| -0.050 ± 0.124 | -0.050 ± 0.124 |")


def test_a_missing_pre_training_is_named_before_anything_runs(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        results.main(["--scale", "smoke", "--only", "pas_human", "--arms", "pretrained_human", "--out", str(tmp_path)])
    missing = tmp_path / "pretrain_human" / "seed1337" / "checkpoints" / "last.ckpt"
    assert (f"the pretrained_human arm starts from {missing}, which does not exist: run the pretrain_human row first or "
            "name a checkpoint with --pretrained-human") in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_threads_reach_every_run_it_starts(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    results.main(["--scale", "smoke", "--only", "pas_human", "--arms", "random", "--threads", "1", "--dry-run",
                  "--out", str(tmp_path)])
    assert results.os.environ["OMP_NUM_THREADS"] == "1"  # subprocess.run passes the environment on
    with pytest.raises(SystemExit):
        results.main(["--threads", "0", "--dry-run", "--out", str(tmp_path)])


@pytest.mark.slow
def test_results_script_smoke(tmp_path: Path) -> None:
    doc = tmp_path / "results.md"
    doc.write_text(DOC)
    cmd = [sys.executable, str(ROOT / "scripts" / "results.py"), "--scale", "smoke", "--seeds", "0", "--pretrain-seeds", "5",
           "--only", "pretrain,pretrain_human,pas_human", "--out", str(tmp_path / "runs"), "--doc", str(doc)]
    subprocess.run(cmd, check=True, cwd=tmp_path, timeout=1800)
    text = doc.read_text()
    assert "prose before" in text and "prose after" in text and "old table" not in text
    for arm in ("pretrained", "random init", "pretrained, human only"):  # every arm trained, evaluated and scored
        assert f"| {arm} | 1 |" in text
    assert (doc.parent / "results" / "pas_human.png").stat().st_size > 0
    # a second call finds every run done and rewrites the same table without training again
    before = {p: p.stat().st_mtime for p in (tmp_path / "runs").rglob("metrics.json")}
    subprocess.run(cmd, check=True, cwd=tmp_path, timeout=600)
    assert {p: p.stat().st_mtime for p in (tmp_path / "runs").rglob("metrics.json")} == before


@pytest.mark.slow
def test_expression_row_smoke(tmp_path: Path) -> None:
    """The cross-validation row through the real commands: every fold scored, the model and the tuned ridge read back."""
    doc = tmp_path / "results.md"
    cmd = [sys.executable, str(ROOT / "scripts" / "results.py"), "--scale", "smoke", "--only", "expression", "--folds", "2",
           "--arms", "random", "--out", str(tmp_path / "runs"), "--doc", str(doc)]
    subprocess.run(cmd, check=True, cwd=tmp_path, timeout=1800)
    line = next(x for x in doc.read_text().splitlines() if x.startswith("| random init |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1] == "2" and "–" not in cells  # R², ridge R² and their difference, as mean ± SD over the two folds
