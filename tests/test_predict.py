"""Batch prediction: the prompts are the training prompts, the table holds the task's own scores in input order (one
process or two DDP ranks), windows of a record are averaged, and a wrong checkpoint, task or input is named."""

import csv
import logging
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from inference_data import PAS, TOK, XPRESSO, compose_command, save_ckpt, table_rows, tiny_task, write_fasta

from dnagpt.checkpointing import CKPT_KEY
from dnagpt.data.expression import ExpressionDataModule
from dnagpt.data.gsr import GSRDataset, cut_signal
from dnagpt.data.gsr_table import read_gsr_tsv
from dnagpt.inference.predictions import PredictionWriter
from dnagpt.inference.prompts import ExpressionInput, GSRInput
from dnagpt.inference.records import Record
from dnagpt.predict import predict, predict_file
from dnagpt.tasks.expression import ExpressionTask
from dnagpt.tasks.gsr import GSRTask
from dnagpt.tasks.pretrain import PretrainTask
from dnagpt.utils.errors import CheckpointError, ConfigError, InputError

FP32 = ["trainer=cpu", "trainer.precision=32-true", "trainer.enable_progress_bar=false", "batch_size=4"]
WINDOW = "data.window=[-150,150]"


@pytest.fixture(scope="module")
def gsr(tmp_path_factory) -> tuple[GSRTask, Path]:
    task = tiny_task(GSRTask).eval()
    return task, save_ckpt(task, tmp_path_factory.mktemp("gsr") / "gsr.ckpt")


@pytest.fixture(scope="module")
def pas_fasta(tmp_path_factory) -> Path:
    rows = table_rows(PAS, 10)[1]
    return write_fasta(tmp_path_factory.mktemp("in") / "pas.fa", [(f"w{i}", r["sequence"]) for i, r in enumerate(rows)])


def run(tmp_path: Path, *overrides: str) -> list[dict[str, str]]:
    out = predict(compose_command("predict", [*FP32, *overrides], tmp_path))
    with open(out, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


# ---- prompts ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("phases", [1, 6])
def test_gsr_prompts_are_the_training_prompts(phases: int) -> None:
    table = read_gsr_tsv(PAS, "pas").take(np.arange(6))
    dataset = GSRDataset(table, TOK, sorted(set(table.motif)), phases)
    prompts = GSRInput(TOK, 128, {"phases": phases})
    for i in range(len(table)):
        window = Record(i, f"r{i}", table.sequence[i], table.species[i])
        cut = Record(i, f"r{i}", cut_signal(table.sequence[i], "pas"), table.species[i])
        for record in (window, cut):
            (sample,) = prompts.samples(record)
            assert torch.equal(sample["input_ids"], dataset[i]["input_ids"])
            assert sample["answer_pos"] == dataset[i]["answer_pos"]


@pytest.mark.parametrize("phases", [1, 6])
def test_expression_prompts_are_the_training_prompts(phases: int) -> None:
    dm = ExpressionDataModule(TOK, 128, XPRESSO, window=(-150, 150), phases=phases)
    dm.setup()
    data = dm.split_data("test")
    prompts = ExpressionInput(TOK, 128, {"window": [-150, 150], "phases": phases})
    for j, row in enumerate(data.rows[:5]):
        (sample,) = prompts.samples(Record(j, data.ids[j], dm.table.sequences[row]))
        assert torch.equal(sample["input_ids"], dm.dataset("test")[j]["input_ids"])
        assert torch.equal(sample["reg_pos"], dm.dataset("test")[j]["reg_pos"])
    if phases == 1:  # the window alone reads as the stored sequence cropped to it
        (sample,) = prompts.samples(Record(0, "w", data.windows[0]))
        assert torch.equal(sample["input_ids"], dm.dataset("test")[0]["input_ids"])
    with pytest.raises(ConfigError, match="feature_columns"):
        ExpressionInput(TOK, 128, {"feature_columns": ["halflife"]})
    with pytest.raises(ConfigError, match="needs 53 positions, more than the model's block_size 40"):
        ExpressionInput(TOK, 40, {"window": [-150, 150]})


# ---- the command ------------------------------------------------------------------------------------------------------
def first_pas_scores(task: GSRTask, phases: int) -> np.ndarray:
    """The task's p(true) of the shipped PAS file's first 10 rows (those of ``pas_fasta``), read as training reads them."""
    table = read_gsr_tsv(PAS, "pas").take(np.arange(10))
    dataset = GSRDataset(table, TOK, sorted(set(table.motif)), phases)
    batch = {k: torch.stack([item[k] for item in dataset]) for k in ("input_ids", "answer_pos")}
    with torch.no_grad():
        return task.score(task.answer_logits(batch)).numpy()


def test_gsr_table_holds_the_task_scores_in_input_order(gsr, pas_fasta, tmp_path) -> None:
    task, ckpt = gsr
    got = run(tmp_path, "task=gsr", f"ckpt={ckpt}", f"input={pas_fasta}", "species=bovine")  # the file's first rows
    want = first_pas_scores(task, phases=1)
    assert [r["row"] for r in got] == [str(i) for i in range(10)]
    assert [r["name"] for r in got] == [f"w{i}" for i in range(10)]
    assert list(got[0]) == ["row", "name", "p_true"]
    np.testing.assert_allclose([float(r["p_true"]) for r in got], want, rtol=1e-5)


def test_a_six_phase_checkpoint_predicts_as_it_was_fitted(gsr, pas_fasta, tmp_path, caplog) -> None:
    """``data.phases`` unset reads the checkpoint's own (the mean of six phases); a value given on purpose is kept,
    with a warning naming what the checkpoint was fitted with."""
    task, ckpt = gsr
    state = torch.load(ckpt, weights_only=False)
    state[CKPT_KEY]["data_phases"] = 6
    six = tmp_path / "six.ckpt"
    torch.save(state, six)
    scores = {phases: first_pas_scores(task, phases) for phases in (1, 6)}
    got = run(tmp_path / "unset", "task=gsr", f"ckpt={six}", f"input={pas_fasta}", "species=bovine")
    np.testing.assert_allclose([float(r["p_true"]) for r in got], scores[6], rtol=1e-5)
    with caplog.at_level(logging.WARNING):
        got = run(tmp_path / "one", "task=gsr", f"ckpt={six}", f"input={pas_fasta}", "species=bovine", "data.phases=1")
    np.testing.assert_allclose([float(r["p_true"]) for r in got], scores[1], rtol=1e-5)
    assert f"{six} was fitted with data.phases=6, this run reads data.phases=1" in caplog.text


def test_expression_reads_its_training_table_as_is(tmp_path) -> None:
    task = tiny_task(ExpressionTask).eval()
    ckpt = save_ckpt(task, tmp_path / "expr.ckpt")
    header, rows = table_rows(XPRESSO, 6)
    table = tmp_path / "promoters.tsv"
    table.write_text("\t".join(header) + "\n" + "".join("\t".join(r[c] for c in header) + "\n" for r in rows))
    got = run(tmp_path, "task=expression", f"ckpt={ckpt}", f"input={table}", WINDOW)
    assert [r["name"] for r in got] == [r["ensembl_gene_id"] for r in rows]  # the data config's id and sequence columns
    prompts = ExpressionInput(TOK, 128, {"window": [-150, 150]})
    samples = [prompts.samples(Record(i, "", r["sequence_tss_minus7000_plus3500"]))[0] for i, r in enumerate(rows)]
    with torch.no_grad():
        want = task.predict(prompts.collate(samples)).numpy()
    np.testing.assert_allclose([float(r["prediction"]) for r in got], want, rtol=1e-5, atol=1e-6)


def test_another_tasks_checkpoint_or_a_task_without_predictions_is_refused(gsr, pas_fasta, tmp_path) -> None:
    _, ckpt = gsr
    trained = r"was trained for task=gsr \(dnagpt\.tasks\.gsr\.GSRTask\), but task"
    asked = r"=expression \(dnagpt\.tasks\.expression\.ExpressionTask\) was asked; predict with task=gsr"
    with pytest.raises(CheckpointError, match=trained + asked):
        run(tmp_path, "task=expression", f"ckpt={ckpt}", f"input={pas_fasta}", WINDOW)
    with pytest.raises(ConfigError, match=r"makes no predictions; predict works for task=.*expression, gsr"):
        run(tmp_path, "task=pretrain", f"ckpt={ckpt}", f"input={pas_fasta}")
    pretrain = save_ckpt(tiny_task(PretrainTask), tmp_path / "pre.ckpt")
    with pytest.raises(CheckpointError, match=r"trained for task=pretrain"):
        run(tmp_path, "task=gsr", f"ckpt={pretrain}", f"input={pas_fasta}")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("species\tsequence\n", r"in\.tsv: has a header but no data rows"),
        ("", r"in\.tsv: is empty"),
        ("id\tsequence\nok\t{w}\nbad\t{w_x}\n",
         r"in\.tsv, line 3, column 'sequence': record 'bad': invalid DNA character 'X' at position 7"),
        ("id\tsequence\nshort\tACGTACGT\n", r"in\.tsv, line 2, column 'sequence': record 'short': 8 bp; a GSR input is 606"),
        ("name\tdna\nx\t{w}\n", r"in\.tsv, line 1: missing column\(s\) \['sequence'\]"),
    ],
)  # fmt: skip
def test_bad_input_names_the_file_line_and_record(gsr, tmp_path, content: str, match: str) -> None:
    window = table_rows(PAS, 1)[1][0]["sequence"]
    (tmp_path / "in.tsv").write_text(content.format(w=window, w_x=window[:7] + "X" + window[8:]))
    with pytest.raises(InputError, match=match):
        run(tmp_path, "task=gsr", f"ckpt={gsr[1]}", f"input={tmp_path / 'in.tsv'}")
    assert not (tmp_path / "predictions.tsv").exists()


def test_writer_averages_a_records_prompts_and_checks_every_row(gsr, tmp_path) -> None:
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    writer = PredictionWriter(tmp_path / "p.tsv", n_rows=3)
    writer.setup(trainer, gsr[0], "predict")
    batches = [  # row 1 has three windows, two of them in the next batch
        ({"row": torch.tensor([0, 0, 1]), "p": torch.tensor([0.2, 0.4, 0.1])}, ["a", "a", "b"]),
        ({"row": torch.tensor([1, 1, 2]), "p": torch.tensor([0.2, 0.6, 1.0])}, ["b", "b", "c"]),
    ]
    for i, (prediction, names) in enumerate(batches):
        writer.write_on_batch_end(trainer, gsr[0], prediction, None, {"name": names}, i, 0)
    writer.on_predict_end(trainer, gsr[0])
    assert (tmp_path / "p.tsv").read_text() == "row\tname\tp\n0\ta\t0.3\n1\tb\t0.3\n2\tc\t1\n"
    assert not list(tmp_path.glob(".p.tsv.*"))  # the part is gone
    lost = PredictionWriter(tmp_path / "q.tsv", n_rows=4)
    lost.setup(trainer, gsr[0], "predict")
    lost.write_on_batch_end(trainer, gsr[0], batches[0][0], None, {"name": batches[0][1]}, 0, 0)
    with pytest.raises(RuntimeError, match="2 rows written, the input has 4"):
        lost.on_predict_end(trainer, gsr[0])
    assert not (tmp_path / "q.tsv").exists()
    failed = PredictionWriter(tmp_path / "r.tsv", n_rows=2)
    failed.setup(trainer, gsr[0], "predict")
    failed.on_exception(trainer, gsr[0], KeyboardInterrupt())
    assert not list(tmp_path.glob(".r.tsv*")) and not (tmp_path / "r.tsv").exists()


def test_predict_file_from_python(gsr, pas_fasta, tmp_path) -> None:
    GlobalHydra.instance().clear()
    out = predict_file("gsr", gsr[1], pas_fasta, tmp_path / "from python.tsv", ["trainer=cpu", "trainer.precision=32-true"])
    assert out.read_text().count("\n") == 11


@pytest.mark.slow
def test_two_ddp_ranks_write_the_rows_of_one_process(gsr, pas_fasta, tmp_path) -> None:
    one = run(tmp_path / "one", "task=gsr", f"ckpt={gsr[1]}", f"input={pas_fasta}")
    two = run(tmp_path / "two", "task=gsr", f"ckpt={gsr[1]}", f"input={pas_fasta}", "trainer=ddp_sim", "batch_size=2")
    assert [r["row"] for r in two] == [r["row"] for r in one] and [r["name"] for r in two] == [r["name"] for r in one]
    np.testing.assert_allclose([float(r["p_true"]) for r in two], [float(r["p_true"]) for r in one], rtol=1e-5)
    assert not list((tmp_path / "two").glob(".predictions.tsv.rank*"))


@pytest.mark.slow
def test_the_command_line(gsr, pas_fasta, tmp_path) -> None:
    """``python -m dnagpt.predict`` as a user runs it: the table, then another task's checkpoint as one paragraph."""
    base = [sys.executable, "-m", "dnagpt.predict", f"ckpt={gsr[1]}", f"input={pas_fasta}", f"hydra.run.dir={tmp_path}"]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    subprocess.run([*base, "task=gsr", "trainer=cpu"], check=True, env=env, capture_output=True)
    assert (tmp_path / "predictions.tsv").read_text().count("\n") == 11
    done = subprocess.run([*base, "task=expression", "trainer=cpu"], env=env, capture_output=True, text=True)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "was trained for task=gsr (dnagpt.tasks.gsr.GSRTask), but task=expression" in done.stderr.splitlines()[-1]
