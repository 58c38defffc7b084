"""task=classification / task=regression on any labelled table: the format readers (GUE folders, one table, Genomic
Benchmarks folders and their CSV export), the splitter, prompts and long sequences, every bad input, the read-outs and
their losses, the checkpoint contract, the evaluator with its yardsticks, and the shipped species_windows example."""

import csv
import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

import dnagpt
from dnagpt.checkpointing import read_checkpoint
from dnagpt.config_checks import check_config
from dnagpt.data.corpus import Corpus
from dnagpt.data.labelled_table import read_labelled, split_codes
from dnagpt.data.sequence_labels import ClassificationDataModule, RegressionDataModule, Targets, collate
from dnagpt.eval.sequence_labels import SequenceLabelsEvaluator, score_rows
from dnagpt.model.config import GPTConfig
from dnagpt.pipeline import evaluate, train
from dnagpt.predict import predict_file
from dnagpt.tasks.sequence_labels import ClassificationTask, RegressionTask, pool_rows
from dnagpt.tokenizer import KmerTokenizer
from dnagpt.utils.errors import CheckpointError, ConfigError, InputError, MissingFileError
from dnagpt.utils.resolvers import resource_path

TOK = KmerTokenizer()
SW = Path(resource_path("species_windows"))
SMALL = dict(block_size=128, n_layer=2, n_head=2, n_embd=32)


def sw_rows(split: str, per_class: int, classes: tuple[str, ...] = ("human", "yeast")) -> list[dict[str, str]]:
    """The first ``per_class`` windows of each class from the shipped example (real sequence)."""
    with gzip.open(SW / f"{split}.csv.gz", "rt") as fh:
        rows = list(csv.DictReader(fh))
    return [r for c in classes for r in [r for r in rows if r["label"] == c][:per_class]]


def write_table(path: Path, header: list[str], rows: list[list[str]], delimiter: str = ",") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with (gzip.open if path.suffix == ".gz" else open)(path, "wt", newline="") as fh:
        writer = csv.writer(fh, delimiter=delimiter, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def gue_folder(root: Path, per_class: int = 12, names: tuple[str, ...] = ("train", "dev", "test")) -> Path:
    """A GUE-style folder (DNABERT-2): train.csv, dev.csv, test.csv with sequence,label (0 = human, 1 = yeast)."""
    source = {"train": "train", "dev": "dev", "val": "dev", "test": "test"}
    for name in names:
        rows = sw_rows(source[name], per_class)
        write_table(root / f"{name}.csv", ["sequence", "label"], [[r["sequence"], str(int(r["label"] == "yeast"))]
                                                                  for r in rows])  # fmt: skip
    return root


def gb_folder(root: Path, per_class: int = 12) -> Path:
    """A Genomic Benchmarks folder as its download writes it: <split>/<class>/<n>.txt, one sequence per file."""
    for split, source in (("train", "train"), ("test", "test")):
        for i, r in enumerate(sw_rows(source, per_class)):
            path = root / split / r["label"] / f"{i}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(r["sequence"] + "\n")
    return root


def make_task(cls=ClassificationTask, block_size: int = 128, **kw) -> ClassificationTask | RegressionTask:
    torch.manual_seed(0)
    cfg = GPTConfig(name="tiny", vocab_size=len(TOK), **(SMALL | {"block_size": block_size}))
    return cls(cfg, TOK.to_dict(), **kw)


# ---- formats ---------------------------------------------------------------------------------------------------------
def test_gue_folder_keeps_its_splits_rows_and_lines(tmp_path: Path) -> None:
    root = gue_folder(tmp_path / "gue")
    tables = read_labelled(root, TOK)
    assert {s: len(t) for s, t in tables.items()} == {"train": 24, "val": 24, "test": 24}
    assert tables["val"].path[0].endswith("dev.csv") and tables["train"].line.tolist() == list(range(2, 26))
    assert list(tables["test"].sequence) == [r["sequence"].upper() for r in sw_rows("test", 12)]
    assert sorted(set(tables["train"].label)) == ["0", "1"]


def test_genomic_benchmarks_folders_give_classes_and_a_validation_carved_from_train(tmp_path: Path) -> None:
    root = gb_folder(tmp_path / "gb", per_class=20)
    tables = read_labelled(root, TOK, val_size=0.25, seed=3)
    assert {s: len(t) for s, t in tables.items()} == {"train": 30, "val": 10, "test": 40}
    assert sorted(set(tables["val"].label)) == ["human", "yeast"]  # stratified: both classes in validation
    assert not set(tables["val"].sequence) & set(tables["train"].sequence)
    assert tables["test"].path[0].endswith(".txt") and set(tables["test"].line) == {1}
    again = read_labelled(root, TOK, val_size=0.25, seed=3)
    assert list(again["val"].sequence) == list(tables["val"].sequence)  # seeded


def test_genomic_benchmarks_csv_export_reads_as_splits_with_its_column_names(tmp_path: Path) -> None:
    for split in ("train", "test"):  # the Hugging Face copies: seq,label and no dev split
        rows = sw_rows(split, 10)
        write_table(tmp_path / f"{split}.csv", ["seq", "label"], [[r["sequence"], str(int(r["label"] == "yeast"))]
                                                                  for r in rows])  # fmt: skip
    tables = read_labelled(tmp_path, TOK, sequence_column="seq", val_size=4)
    assert {s: len(t) for s, t in tables.items()} == {"train": 16, "val": 4, "test": 20}


def test_one_table_is_split_by_label_with_identical_sequences_kept_together(tmp_path: Path) -> None:
    rows = [[r["sequence"], r["label"], "human"] for r in sw_rows("train", 30, ("human", "worm", "ecoli"))]
    rows += [rows[0], rows[1], rows[40]]  # repeats must land where their first copy lands
    path = write_table(tmp_path / "one.tsv.gz", ["sequence", "label", "organism"], rows, delimiter="\t")
    tables = read_labelled(path, TOK, species_column="organism", val_size=0.2, test_size=0.2, seed=1)
    seqs = {s: set(t.sequence) for s, t in tables.items()}
    assert not (seqs["train"] & seqs["val"] or seqs["train"] & seqs["test"] or seqs["val"] & seqs["test"])
    for split, table in tables.items():
        counts = np.unique(table.label, return_counts=True)[1]
        assert len(counts) == 3 and counts.max() - counts.min() <= 2, (split, counts)  # stratified
    assert sum(len(t) for t in tables.values()) == 93 and set(tables["train"].species) == {"human"}


def test_split_codes_are_seeded_and_fill_the_held_out_splits() -> None:
    seqs = np.array([f"ACGT{i:04d}".replace("0", "A").replace("1", "C") for i in range(200)], dtype=object)
    strata = np.repeat([0, 1], 100)
    a, b = (split_codes(seqs, strata, {"test": 0.1, "val": 30}, seed=7) for _ in range(2))
    assert np.array_equal(a, b) and np.bincount(a).tolist() == [150, 30, 20]
    assert np.bincount(a[strata == 0]).tolist() == [75, 15, 10]
    assert not np.array_equal(a, split_codes(seqs, strata, {"test": 0.1, "val": 30}, seed=8))


# ---- prompts, targets, long sequences --------------------------------------------------------------------------------
def test_classification_prompt_is_dna_then_eq_and_regression_adds_m(tmp_path: Path) -> None:
    root = gue_folder(tmp_path / "gue", per_class=3)
    dm = ClassificationDataModule(TOK, 128, root, batch_size=4)
    dm.setup()
    item = dm.datasets["train"][0]
    seq = dm.tables["train"].sequence[int(item["row"])]
    assert item["input_ids"].tolist() == [*TOK.encode_dna(seq).tolist(), TOK.eq_id]
    assert dm.targets == Targets("classification", ("0", "1"))
    human = ClassificationDataModule(TOK, 128, root, species="human")
    human.setup()
    assert human.datasets["test"][0]["input_ids"][0] == TOK.species_id("human")
    table = write_table(
        tmp_path / "r.csv", ["sequence", "y"], [[r["sequence"], str(i)] for i, r in enumerate(sw_rows("train", 10))]
    )
    reg = RegressionDataModule(TOK, 128, table, label_column="y", val_size=4, test_size=4)
    reg.setup()
    assert reg.datasets["train"][0]["input_ids"][-2:].tolist() == [TOK.eq_id, TOK.number_id]


def test_batches_are_right_padded_and_answer_pos_is_each_last_token() -> None:
    items = [{"input_ids": torch.tensor([5, 6, 7]), "target": torch.tensor(1), "row": torch.tensor(0)},
             {"input_ids": torch.tensor([8, 9]), "target": torch.tensor(0), "row": torch.tensor(1)}]  # fmt: skip
    batch = collate(items, TOK.pad_id)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 9, TOK.pad_id]]
    assert batch["answer_pos"].tolist() == [2, 1] and batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]


def test_classes_sort_numerically_and_regression_is_z_scored_with_training_statistics(tmp_path: Path) -> None:
    rows = sw_rows("train", 15)
    labels = [str(v) for v in np.arange(len(rows)) % 11]  # "10" after "9"
    dm = ClassificationDataModule(TOK, 128, write_table(tmp_path / "c.csv", ["sequence", "label"],
                                                        [[r["sequence"], lab] for r, lab in zip(rows, labels, strict=True)]),
                                  val_size=0.2, test_size=0.2)  # fmt: skip
    dm.setup()
    assert dm.targets.classes == tuple(str(i) for i in range(11))
    values = np.linspace(-3, 40, len(rows))
    path = write_table(
        tmp_path / "r.csv", ["sequence", "y"], [[r["sequence"], f"{v}"] for r, v in zip(rows, values, strict=True)]
    )
    reg = RegressionDataModule(TOK, 128, path, label_column="y", val_size=5, test_size=5)
    reg.setup()
    train = reg.label_values("train")
    assert reg.targets.mean == pytest.approx(train.mean()) and reg.targets.std == pytest.approx(train.std())
    assert len(train) == 20 and reg.targets.mean != pytest.approx(values.mean())
    z = reg.datasets["test"].target.numpy()
    rows_of = reg.datasets["test"].row.numpy()
    assert np.allclose(z * reg.targets.std + reg.targets.mean, reg.label_values("test")[rows_of], atol=1e-4)


def test_long_sequences_are_refused_truncated_or_windowed(tmp_path: Path) -> None:
    rows = sw_rows("train", 6)  # 600 bp; block 64 holds 63 6-mers + <=> = 378 bp
    path = write_table(tmp_path / "long.csv", ["sequence", "label"], [[r["sequence"], r["label"]] for r in rows])
    refuse = ClassificationDataModule(TOK, 64, path, val_size=2, test_size=2)
    with pytest.raises(InputError, match=r"long\.csv, line \d+, column 'sequence': holds 600 bp.*at most 378 bp"):
        refuse.setup()
    cut = ClassificationDataModule(TOK, 64, path, val_size=2, test_size=2, long_sequences="truncate")
    cut.setup()
    assert len(cut.datasets["train"]) == len(cut.tables["train"]) == 8
    assert all(len(s) == 378 for s in cut.read_sequences("train"))
    win = ClassificationDataModule(TOK, 64, path, val_size=2, test_size=2, long_sequences="windows", window_stride=300)
    win.setup()
    ds = win.datasets["train"]
    assert len(ds) == 2 * len(win.tables["train"])  # windows at 0 and 222 (flush with the end)
    first = win.tables["train"].sequence[0]
    got = [TOK.decode_dna(ds[i]["input_ids"][:-1]) for i in range(len(ds)) if ds[i]["row"] == 0]
    assert got == [first[:378], first[222:]]


# ---- bad input ------------------------------------------------------------------------------------------------------
def _seqs(n: int) -> list[str]:
    return [r["sequence"] for r in sw_rows("train", n)]


BAD_CASES = [
    ("empty", lambda p: p.write_text(""), {}, r"empty\.csv: is empty"),
    ("header_only", lambda p: p.write_text("sequence,label\n"), {}, r"header_only\.csv: has a header but no data rows"),
    (
        "bad_char",
        lambda p: write_table(p, ["sequence", "label"], [[s, "a"] for s in _seqs(3)] + [["ACGTXACGT", "b"]]),
        {},
        r"bad_char\.csv, line 8, column 'sequence'.*'X'.*position 4",
    ),
    (
        "one_class",
        lambda p: write_table(p, ["sequence", "label"], [[s, "a"] for s in _seqs(5)]),
        {},
        r"one_class\.csv: column 'label' holds one class only \('a'\)",
    ),
    (
        "missing_column",
        lambda p: write_table(p, ["seq", "label"], [[s, "a"] for s in _seqs(5)]),
        {},
        r"missing column\(s\) \['sequence'\]",
    ),
    (
        "empty_label",
        lambda p: write_table(p, ["sequence", "label"], [[s, "a"] for s in _seqs(5)] + [[_seqs(1)[0], " "]]),
        {},
        r"line 12, column 'label': the label is empty",
    ),
    ("ragged", lambda p: p.write_text("sequence,label\nACGT,a,extra\n"), {}, r"line 2: 3 comma-separated fields"),
    (
        "species",
        lambda p: write_table(
            p, ["sequence", "label", "sp"], [[s, "a", "human"] for s in _seqs(3)] + [[_seqs(1)[0], "b", "martian"]]
        ),  # fmt: skip
        {"species_column": "sp"},
        r"line 8, column 'sp': unknown species 'martian'",
    ),
]


@pytest.mark.parametrize(("name", "write", "kw", "match"), BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_table_is_a_clear_error_naming_file_line_and_column(tmp_path: Path, name, write, kw, match) -> None:
    path = tmp_path / f"{name}.csv"
    write(path)
    dm = ClassificationDataModule(TOK, 128, path, val_size=1, test_size=1, **kw)
    with pytest.raises(InputError, match=match):
        dm.setup()


def test_a_test_label_that_train_lacks_names_its_row(tmp_path: Path) -> None:
    root = gue_folder(tmp_path / "gue", per_class=3)
    write_table(root / "test.csv", ["sequence", "label"], [[s, "0"] for s in _seqs(2)] + [[_seqs(1)[0], "2"]])
    dm = ClassificationDataModule(TOK, 128, root)
    with pytest.raises(
        InputError, match=r"test\.csv, line 6, column 'label': label '2' does not occur in the training rows"
    ):
        dm.setup()


def test_regression_labels_must_be_numbers_and_vary(tmp_path: Path) -> None:
    rows = [[s, "1.5"] for s in _seqs(6)]
    bad = write_table(tmp_path / "nan.csv", ["sequence", "y"], [*rows[:5], [rows[5][0], "NA"]])
    with pytest.raises(InputError, match=r"nan\.csv, line 7, column 'y': 'NA' is not a number"):
        RegressionDataModule(TOK, 128, bad, label_column="y", val_size=2, test_size=2).setup()
    flat = write_table(tmp_path / "flat.csv", ["sequence", "y"], rows)
    with pytest.raises(InputError, match=r"column 'y' is constant \(1\.5\)"):
        RegressionDataModule(TOK, 128, flat, label_column="y", val_size=2, test_size=2).setup()


def test_missing_path_empty_class_folder_and_bad_options(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match="does not exist"):
        ClassificationDataModule(TOK, 128, tmp_path / "nope")
    root = gb_folder(tmp_path / "gb", per_class=2)
    (root / "test" / "empty_class").mkdir()
    with pytest.raises(InputError, match=r"empty_class: class folder holds no \.txt sequence files"):
        ClassificationDataModule(TOK, 128, root).setup()
    with pytest.raises(ConfigError, match="long_sequences='cut'"):
        ClassificationDataModule(TOK, 128, root, long_sequences="cut")
    (tmp_path / "bare").mkdir()
    with pytest.raises(InputError, match=r"bare: is neither a splits folder .* nor a Genomic Benchmarks folder"):
        ClassificationDataModule(TOK, 128, tmp_path / "bare")


# ---- the tasks ------------------------------------------------------------------------------------------------------
def _batch(dm, split: str = "train", n: int = 6) -> dict[str, torch.Tensor]:
    return next(iter(dm.loader(split, n)))


@pytest.fixture
def binary_dm(tmp_path: Path) -> ClassificationDataModule:
    dm = ClassificationDataModule(TOK, 128, gue_folder(tmp_path / "gue", per_class=6))
    dm.setup()
    return dm


def test_answer_readout_is_the_release_answer_at_eq_with_the_full_vocabulary_loss(binary_dm) -> None:
    task = make_task(targets=binary_dm.targets.to_dict())
    assert task.answer_ids().tolist() == [TOK.false_id, TOK.true_id]  # class "0" answers A (false), "1" answers N
    batch = _batch(binary_dm)
    probs, loss = task.score_and_loss(batch)
    logits = task.model(batch["input_ids"]).logits  # the plain forward: every position, the whole vocabulary
    at_eq = logits[torch.arange(6), batch["answer_pos"]]
    target = task.answer_ids()[batch["target"]]
    assert torch.allclose(loss, F.cross_entropy(at_eq, target), atol=1e-5)
    assert torch.allclose(probs, torch.softmax(at_eq[:, task.answer_ids()], -1), atol=1e-5)


def test_more_classes_answer_with_digits_or_the_tokens_given(tmp_path: Path) -> None:
    four = Targets("classification", ("a", "b", "c", "d"))
    assert make_task(targets=four.to_dict()).answer_ids().tolist() == [TOK.token_id(f"<{i}>") for i in range(4)]
    given = make_task(targets=four.to_dict(), answer_tokens=["<R>", "<I>", "<K>", "<O>"])
    assert given.answer_ids().tolist() == [21, 22, 23, 25]
    with pytest.raises(ConfigError, match="use task.readout=head"):
        make_task(targets=Targets("classification", tuple("abcdefghijk")).to_dict()).answer_ids()
    with pytest.raises(ValueError, match="unknown token"):
        make_task(answer_tokens=["<Human>", "HELLO"])
    with pytest.raises(ValueError, match="readout='mean'"):
        make_task(readout="mean")


def test_head_readout_pools_real_tokens_only_and_the_optimizer_trains_the_head(binary_dm) -> None:
    task = make_task(readout="head", targets=binary_dm.targets.to_dict(), optimizer=torch.optim.AdamW)
    batch = _batch(binary_dm)
    short = {k: v[:1] for k, v in batch.items()}
    short["input_ids"], short["attention_mask"] = short["input_ids"][:, :40], short["attention_mask"][:, :40]
    padded = {**short, "input_ids": F.pad(short["input_ids"], (0, 9), value=TOK.pad_id),
              "attention_mask": F.pad(short["attention_mask"], (0, 9))}  # fmt: skip
    assert torch.allclose(task.pooled(short), task.pooled(padded), atol=1e-5)
    head = {id(p) for p in task.head.parameters()}
    grouped = [id(p) for g in task.param_groups(0.1) for p in g["params"]]
    assert head <= set(grouped) and len(grouped) == len(set(grouped)) == len(list(task.parameters()))
    decayed = {id(p) for p in task.param_groups(0.1)[0]["params"]}
    assert id(task.head[0].weight) in decayed and id(task.head[2].weight) not in decayed  # LayerNorm is not decayed
    probs, loss = task.score_and_loss(batch)
    assert probs.shape == (6, 2) and torch.allclose(loss, F.cross_entropy(task.head(task.pooled(batch)), batch["target"]))


def test_predict_step_returns_class_probabilities_or_label_units_with_the_row(binary_dm, tmp_path: Path) -> None:
    task = make_task(targets=binary_dm.targets.to_dict())
    out = task.predict_step(_batch(binary_dm), 0)
    assert set(out) == {"p_0", "p_1", "row"} and out["row"].dtype == torch.int64
    assert torch.allclose(out["p_0"] + out["p_1"], torch.ones(6))
    rows = sw_rows("train", 10)
    path = write_table(
        tmp_path / "r.csv", ["sequence", "y"], [[r["sequence"], f"{100 + 10 * i}"] for i, r in enumerate(rows)]
    )
    dm = RegressionDataModule(TOK, 128, path, label_column="y", val_size=4, test_size=4)
    dm.setup()
    reg = make_task(RegressionTask, targets=dm.targets.to_dict())
    batch = _batch(dm, n=4)
    pred = reg.predict_step(batch, 0)
    assert set(pred) == {"prediction", "row"}
    assert torch.allclose(pred["prediction"], reg.predict_z(batch) * dm.targets.std + dm.targets.mean)
    assert torch.allclose(reg.score_and_loss(batch)[1], F.mse_loss(reg.predict_z(batch), batch["target"]))


def test_windows_of_a_row_are_pooled_into_one_score() -> None:
    rows, means = pool_rows(torch.tensor([2, 0, 2, 2]), torch.tensor([[0.2, 0.8], [1.0, 0.0], [0.4, 0.6], [0.6, 0.4]]))
    assert rows.tolist() == [0, 2] and torch.allclose(means, torch.tensor([[1.0, 0.0], [0.4, 0.6]]))


def test_evaluator_scores_rows_and_fits_the_yardstick_on_the_same_table(tmp_path: Path) -> None:
    rows = sw_rows("train", 20, ("human", "yeast", "ecoli"))
    path = write_table(tmp_path / "t.csv", ["sequence", "label", "organism"],
                       [[r["sequence"], r["label"], "human" if i % 2 else "mouse"] for i, r in enumerate(rows)])  # fmt: skip
    dm = ClassificationDataModule(TOK, 64, path, species_column="organism", val_size=9, test_size=12,
                                  long_sequences="windows")  # fmt: skip
    dm.setup()
    task = make_task(block_size=64, targets=dm.targets.to_dict())
    scores = score_rows(task, dm, "test", batch_size=5)
    with torch.no_grad():
        by_prompt = torch.cat([torch.stack(list(task.predict_step(b, 0).values())[:3], 1) for b in dm.loader("test", 7)])
    first = dm.datasets["test"].row == 0
    assert scores.shape == (12, 3) and np.allclose(scores[0], by_prompt[first].mean(0).numpy(), atol=1e-5)
    metrics = SequenceLabelsEvaluator(kmer=3, C=[0.1, 1.0], prefix="cls")(task, dm, None, tmp_path / "ev")
    assert {"test/kmer_logistic_acc", "test/kmer_logistic_auroc", "test/kmer_logistic_C"} <= set(metrics)
    written = list(csv.DictReader(open(tmp_path / "ev" / "cls_metrics.csv")))
    assert {(r["group"], r["predictor"]) for r in written} == {
        (g, p) for g in ("all", "species_human", "species_mouse") for p in ("model", "kmer_logistic")
    }
    predictions = list(csv.DictReader(open(tmp_path / "ev" / "cls_predictions_test.csv")))
    assert len(predictions) == 12 and {p["true"] for p in predictions} <= {"human", "yeast", "ecoli"}
    assert (tmp_path / "ev" / "cls_confusion_test.png").stat().st_size > 0


def test_regression_evaluator_scores_windows_against_its_two_yardsticks(tmp_path: Path) -> None:
    rows = sw_rows("train", 15, ("human", "ecoli"))
    gc = [(r["sequence"].count("G") + r["sequence"].count("C")) / 600 for r in rows]  # a label the GC baseline knows
    table = [[r["sequence"], f"{v:.4f}"] for r, v in zip(rows, gc, strict=True)]
    path = write_table(tmp_path / "gc.csv", ["sequence", "gc"], table)
    dm = RegressionDataModule(TOK, 64, path, label_column="gc", val_size=6, test_size=8, long_sequences="windows")
    dm.setup()
    task = make_task(RegressionTask, block_size=64, targets=dm.targets.to_dict())
    metrics = SequenceLabelsEvaluator(kmer=3, alphas=[0.1, 10.0], prefix="reg")(task, dm, None, tmp_path / "ev")
    assert metrics["test/gc_cpg_r2"] > 0.99 and metrics["test/kmer_ridge_alpha"] in (0.1, 10.0)
    assert {"test/kmer_ridge_pearson", "test/gc_cpg_spearman"} <= set(metrics)
    assert (tmp_path / "ev" / "reg_scatter_test.png").exists()
    with pytest.raises(ConfigError, match="evaluation.split=val"):
        SequenceLabelsEvaluator(split="val")


# ---- through the pipeline: checkpoints, evaluate.py, configuration ----------------------------------------------------
FAST_CLS = ["task=classification", "model.block_size=128", "evaluation.kmer=3", "evaluation.C=1.0"]


def test_head_checkpoint_reloads_without_hydra_and_through_evaluate(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg("train", ["task=classification", "task.readout=head", "model.block_size=128", "test=false"])
    train(cfg)
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    saved = read_checkpoint(ckpt)
    assert saved.task_state["targets"]["classes"] == ["arabidopsis", "cow", "ecoli", "fruitfly", "human", "mouse",
                                                      "worm", "yeast"]  # fmt: skip
    assert {k.split(".")[0] for k in saved.task_weights} == {"head"}
    plain = ClassificationTask.load_from_checkpoint(ckpt)  # no Hydra, no data
    assert plain.head is not None and plain.targets.classes[0] == "arabidopsis"
    fresh = make_task(readout="head")  # targets and head come with the weights, as evaluate.py loads them
    assert fresh.head is None
    fresh.load_weights(ckpt, key="ckpt_path")
    dm = ClassificationDataModule(TOK, 128, SW)
    dm.setup()
    b = _batch(dm, "test", 4)
    plain.eval(), fresh.eval()
    assert torch.allclose(plain.predict_step(b, 0)["p_human"], fresh.predict_step(b, 0)["p_human"], atol=1e-6)
    rows = sw_rows("test", 3, ("cow", "worm"))  # through dnagpt.predict: the same scores, one row per input row
    source = write_table(tmp_path / "in.csv", ["sequence"], [[r["sequence"]] for r in rows])
    GlobalHydra.instance().clear()
    fp32 = ["task.readout=head", "trainer=cpu", "trainer.precision=32-true"]
    out = predict_file("classification", ckpt, source, tmp_path / "p.tsv", fp32)
    got = list(csv.DictReader(open(out), delimiter="\t"))
    assert list(got[0]) == ["row", "name", *(f"p_{c}" for c in plain.targets.classes)]
    with torch.no_grad():
        want = plain.predict_step(collate([{"input_ids": torch.tensor([*TOK.encode_dna(r["sequence"]), TOK.eq_id]),
                                            "target": torch.tensor(0), "row": torch.tensor(i)}
                                           for i, r in enumerate(rows)], TOK.pad_id), 0)  # fmt: skip
    np.testing.assert_allclose([float(r["p_worm"]) for r in got], want["p_worm"].numpy(), rtol=1e-4, atol=1e-6)
    with pytest.raises(CheckpointError, match=r"fine-tuned for task=classification with task.readout=head.*readout=answer"):
        evaluate(make_cfg("evaluate", [*FAST_CLS, f"ckpt_path={ckpt}"]))  # the read-out it was trained with, forgotten
    other = gue_folder(tmp_path / "gue", per_class=3)  # labels 0/1: not what this head answers
    refused = make_cfg("evaluate", [*FAST_CLS, "task.readout=head", f"ckpt_path={ckpt}", f"data.path={other}"])
    with pytest.raises(CheckpointError, match=r"fine-tuned with targets.*arabidopsis.*the data has.*'0', '1'"):
        evaluate(refused)


@pytest.mark.slow
def test_train_then_evaluate_the_example_writes_the_table(make_cfg, tmp_path: Path) -> None:
    metrics = train(make_cfg("train", FAST_CLS[:2]))
    assert {"val/auroc", "val/auroc_best", "test/acc", "test/macro_f1", "test/mcc", "train/acc"} <= set(metrics)
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    out = evaluate(make_cfg("evaluate", [*FAST_CLS, f"ckpt_path={ckpt}"]))
    assert {"test/acc", "test/kmer_logistic_acc", "test/kmer_logistic_macro_f1"} <= set(out)
    assert (tmp_path / "classification_metrics.csv").exists() and (tmp_path / "classification_confusion_test.png").exists()


def test_task_refuses_the_other_kind_of_data(make_cfg) -> None:
    with pytest.raises(ConfigError, match="task=classification reads batches of .*ClassificationDataModule"):
        check_config(make_cfg("train", ["task=classification", "data=regression"]))


@pytest.mark.slow
def test_regression_in_windows_trains_and_evaluates_with_its_yardsticks(make_cfg, tmp_path: Path) -> None:
    """The default regression data: the expression mini set read as a plain table, 10.5 kb rows scored in windows."""
    args = ["task=regression", "model.block_size=160", "trainer.limit_val_batches=null", "trainer.limit_test_batches=null"]
    metrics = train(make_cfg("train", [*args, "callbacks.model_checkpoint.save_top_k=0"]))  # tested: the last weights
    assert {"val/r2", "val/r2_best", "test/pearson", "test/spearman"} <= set(metrics)
    out = evaluate(make_cfg("evaluate", [*args, f"ckpt_path={tmp_path / 'checkpoints' / 'last.ckpt'}"]))
    assert {"test/kmer_ridge_r2", "test/gc_cpg_pearson"} <= set(out)
    assert out["test/r2"] == pytest.approx(metrics["test/r2"], abs=1e-3)  # the same per-row pooling in both
    assert (tmp_path / "regression_scatter_test.png").exists()


# ---- the shipped example ------------------------------------------------------------------------------------------------
def test_shipped_example_holds_eight_species_in_disjoint_regions_with_held_out_dev_and_test() -> None:
    corpus = Corpus.from_config(OmegaConf.load(Path(dnagpt.__file__).parent / "conf" / "corpus" / "bundled.yaml"))
    holdout = {sp.name: {"dev": sp.val, "test": sp.test} for sp in corpus.species}
    assert sum(p.stat().st_size for p in SW.glob("*.csv.gz")) < 1.5e6
    seen: dict[str, set[str]] = {}
    for split in ("train", "dev", "test"):
        with gzip.open(SW / f"{split}.csv.gz", "rt") as fh:
            rows = list(csv.DictReader(fh))
        seen[split] = {r["sequence"] for r in rows}
        assert len({r["label"] for r in rows}) == 8 and all(len(r["sequence"]) == 600 for r in rows)
        for r in rows:
            start = int(r["start"])
            inside = {s: any(_within(r["record"], start, region) for region in regions)
                      for s, regions in holdout[r["label"]].items()}  # fmt: skip
            assert inside == {"dev": split == "dev", "test": split == "test"}, (split, r["label"], r["record"], start)
    assert not (seen["train"] & seen["dev"] or seen["train"] & seen["test"] or seen["dev"] & seen["test"])


def _within(record: str, start: int, region: str) -> bool:
    """Whether the 600 bp window at 1-based ``start`` of ``record`` overlaps ``region`` (record:start-end or record)."""
    name, _, span = region.rpartition(":")
    if not name:
        return record == region
    lo, hi = (int(x) for x in span.split("-"))
    return record == name and start <= hi and start + 599 >= lo
