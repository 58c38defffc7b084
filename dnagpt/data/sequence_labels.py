"""Batches of any labelled sequence table: the prompts of ``task=classification`` and ``task=regression``.

The prompt of each row (or window, below) is the release's sentence without anything task-specific::

    [<species>] DNA <=>              classification: the answer is read at <=> (or from the pooled states)
    [<species>] DNA <=> <M>          regression: the regression head reads the last <M> (or the pooled states)

The species token comes from ``species_column`` (per row) or ``species`` (every row); ``species: null`` writes none,
for tables whose label is the species (the shipped example). Rows are read and split by
:mod:`dnagpt.data.labelled_table` (GUE folders, one table, Genomic Benchmarks folders).

* **Targets** (:class:`Targets`), fixed by the training split and recorded in every checkpoint by the task: the class
  order (labels sorted, numerically when they are all whole numbers; a dev or test label that train lacks is an error
  naming the row) or, for regression, the training mean and standard deviation the labels are z-scored with.
* **Length.** A prompt holds ``block_size`` positions, so a sequence holds at most ``max_bp`` bases
  (``block_size`` minus the prompt's own tokens, times k). Longer ones follow ``long_sequences``: ``refuse`` (an error
  naming the row, the default: nothing is ever cut silently), ``truncate`` (the first ``max_bp`` bases; the count is
  logged and the baselines read the same bases) or ``windows`` (windows of ``max_bp`` bases every ``window_stride``,
  the last one flush with the end; each window is a training example with its row's label, and validation, test and
  the evaluator average the windows' scores per row).
* **Batches** are right-padded with ``<P>``; ``answer_pos`` is each prompt's last token. The model is causal, so
  padding after it changes nothing before it. ``row`` is the index of the row in ``tables[split]``, which holds the
  split's rows in a seeded order (a partial pass still sees every class), each with its file and line.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

from dnagpt.data.batching import SplitLoaders, ignore_preemption_signals, per_device_batch_size
from dnagpt.data.labelled_table import FORMATS, LabelledTable, detect_format, read_labelled
from dnagpt.data.splits import SPLITS, check_split_size
from dnagpt.data.tables import parse_float
from dnagpt.tokenizer import KmerTokenizer
from dnagpt.utils.errors import ConfigError, InputError, MissingFileError
from dnagpt.utils.pylogger import RankedLogger

__all__ = [
    "ClassificationDataModule", "PromptLayout", "RegressionDataModule", "Targets", "class_order", "window_starts",
]  # fmt: skip

log = RankedLogger(__name__)

LONG_SEQUENCES = ("refuse", "truncate", "windows")


@dataclass(frozen=True)
class Targets:
    """How labels become training targets: the class order, or the z-scoring of a numeric label."""

    kind: str  # "classification" | "regression"
    classes: tuple[str, ...] = ()  # classification: the label text of class i
    mean: float = 0.0  # regression: the training split's mean and standard deviation of the label
    std: float = 1.0

    @property
    def n_outputs(self) -> int:
        return len(self.classes) if self.kind == "classification" else 1

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "classes": list(self.classes)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Targets:
        return cls(d["kind"], tuple(d.get("classes", ())), float(d.get("mean", 0.0)), float(d.get("std", 1.0)))


def class_order(labels: Sequence[str]) -> tuple[str, ...]:
    """The distinct labels in class order: numerically when every label is a whole number, else as text.

    >>> class_order(["10", "9", "1", "9"]), class_order(["mouse", "human"])
    (('1', '9', '10'), ('human', 'mouse'))
    """
    distinct = set(labels)
    numeric = all(s.lstrip("-").isdigit() for s in distinct)
    return tuple(sorted(distinct, key=int if numeric else str))


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Starts of the windows of ``window`` bases that cover ``[0, length)``: every ``stride`` bases, the last one
    flush with the end (so every window has the full length); one window when the sequence fits.

    >>> window_starts(10, 4, 4), window_starts(10, 4, 3), window_starts(3, 4, 4)
    ([0, 4, 6], [0, 3, 6], [0])
    """
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    return starts if starts[-1] == length - window else [*starts, length - window]


class PromptLayout:
    """The prompt geometry of a labelled-table task, shared by its DataModule and its prediction input: ``[<species>]``
    DNA ``tail``, and what a sequence longer than ``max_bp`` becomes (module docstring)."""

    def __init__(
        self, tokenizer: KmerTokenizer, block_size: int, tail: Sequence[str], with_species: bool,
        long_sequences: str = "refuse", window_stride: int | None = None,
    ) -> None:  # fmt: skip
        if long_sequences not in LONG_SEQUENCES:
            raise ConfigError(f"data.long_sequences={long_sequences!r} is not one of {', '.join(LONG_SEQUENCES)}")
        self.tokenizer, self.block_size, self.long_sequences = tokenizer, block_size, long_sequences
        self.tail = np.array([tokenizer.token_id(t) for t in tail], dtype=np.int64)
        self.overhead = int(with_species) + len(self.tail)  # prompt tokens besides the DNA
        self.max_bp = (block_size - self.overhead) * tokenizer.k
        if self.max_bp < tokenizer.k:
            raise ConfigError(f"block_size {block_size} leaves no room for DNA after the {self.overhead} prompt tokens")
        if window_stride is not None and not 1 <= window_stride <= self.max_bp:
            raise ConfigError(f"data.window_stride={window_stride} must lie in 1..{self.max_bp} (the window length)")
        self.window_stride = window_stride or self.max_bp

    def pieces(self, seq: str) -> list[str]:
        """The bases each prompt of a sequence reads: the sequence, its first ``max_bp`` bases, or its windows; a
        ``ValueError`` under ``refuse`` (the caller names the row)."""
        if len(seq) <= self.max_bp:
            return [seq]
        if self.long_sequences == "refuse":
            raise ValueError(
                f"holds {len(seq)} bp, but a prompt of this model holds at most {self.max_bp} bp (block_size "
                f"{self.block_size} minus {self.overhead} prompt tokens, times {self.tokenizer.k}); choose "
                f"data.long_sequences=truncate (keep the first {self.max_bp} bp) or windows (score windows and "
                "average them)"
            )
        if self.long_sequences == "truncate":
            return [seq[: self.max_bp]]
        return [seq[s : s + self.max_bp] for s in window_starts(len(seq), self.max_bp, self.window_stride)]

    def prompts(self, seq: str, species: int | None) -> list[np.ndarray]:
        """Token ids of every prompt of a sequence; a ``ValueError`` (too long, a bad letter) for the caller to place."""
        head = np.array([] if species is None else [species], dtype=np.int64)
        return [np.concatenate([head, self.tokenizer.encode_dna(piece), self.tail]) for piece in self.pieces(seq)]

    def read_bases(self, seq: str) -> str:
        """The bases of a sequence the model reads as a whole: its first ``max_bp`` under ``truncate``."""
        return seq[: self.max_bp] if self.long_sequences == "truncate" else seq


class PromptDataset(Dataset):
    """One prompt per row or window: its token ids, the target, and the row it belongs to."""

    def __init__(self, prompts: list[np.ndarray], target: np.ndarray, row: np.ndarray) -> None:
        self.prompts = [torch.from_numpy(p) for p in prompts]
        self.target, self.row = torch.from_numpy(target), torch.from_numpy(row.astype(np.int64))

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.prompts[i], "target": self.target[i], "row": self.row[i]}


def collate(items: list[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad the prompts with ``pad_id``; ``answer_pos`` is each prompt's last token."""
    ids = [item["input_ids"] for item in items]
    lengths = torch.tensor([len(i) for i in ids])
    input_ids = pad_sequence(ids, batch_first=True, padding_value=pad_id)
    return {
        "input_ids": input_ids,
        "attention_mask": torch.arange(input_ids.shape[1]) < lengths[:, None],
        "answer_pos": lengths - 1,
        "target": torch.stack([item["target"] for item in items]),
        "row": torch.stack([item["row"] for item in items]),
    }


class SequenceLabelsDataModule(SplitLoaders, L.LightningDataModule):
    """Any labelled table → prompts; see the module docstring. Subclasses fix the kind of label.

    After ``setup``: ``tables[split]`` (:class:`LabelledTable`), ``targets``, ``datasets[split]``, and for evaluators
    :meth:`label_values`, :meth:`read_sequences` and :meth:`loader`.
    """

    KIND: ClassVar[str]
    TAIL: ClassVar[tuple[str, ...]]  # the tokens that close every prompt

    def __init__(
        self,
        tokenizer: KmerTokenizer,
        block_size: int,
        path: str | Path,
        format: str = "auto",
        sequence_column: str = "sequence",
        label_column: str = "label",
        species_column: str | None = None,
        species: str | None = None,
        val_size: float = 0.1,
        test_size: float = 0.1,
        split_seed: int = 0,
        long_sequences: str = "refuse",
        window_stride: int | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if format not in FORMATS:
            raise ConfigError(f"data.format={format!r} is not one of {', '.join(FORMATS)}")
        if not Path(path).exists():  # read in setup; a wrong path fails here, when the config is built
            raise MissingFileError(f"data.path={path} does not exist")
        self.format = detect_format(path) if format == "auto" else format
        if batch_size < 1 or num_workers < 0:
            raise ConfigError(f"need batch_size >= 1 and num_workers >= 0, got {batch_size}, {num_workers}")
        if species_column and species:
            raise ConfigError(f"data.species={species!r} and data.species_column={species_column!r}: give one")
        if species:
            try:
                self.species_token: int | None = tokenizer.species_id(species)
            except ValueError as err:
                raise ConfigError(f"data.species: {err}") from None
        else:
            self.species_token = None
        check_split_size(val_size, "val_size")
        check_split_size(test_size, "test_size")
        self.tokenizer, self.block_size, self.path = tokenizer, block_size, Path(path)
        with_species = bool(species or species_column)
        self.layout = PromptLayout(tokenizer, block_size, self.TAIL, with_species, long_sequences, window_stride)
        self.columns = dict(sequence_column=sequence_column, label_column=label_column, species_column=species_column)
        self.val_size, self.test_size, self.split_seed = val_size, test_size, split_seed
        self.batch_size, self.num_workers, self.pin_memory, self.seed = batch_size, num_workers, pin_memory, seed
        self.local_batch_size = batch_size
        self.tables: dict[str, LabelledTable] = {}
        self.datasets: dict[str, PromptDataset] = {}
        self.targets: Targets | None = None
        self._values: dict[str, np.ndarray] = {}  # class index or label (label units) per row

    # ----- labels -------------------------------------------------------------------------------------------------
    @property
    def label_column(self) -> str | None:
        """The column a label message names (class folders have none)."""
        return None if self.format == "genomic_benchmarks" else self.columns["label_column"]

    def _targets(self, tables: dict[str, LabelledTable]) -> Targets:
        raise NotImplementedError

    def _encode_targets(self, split: str) -> np.ndarray:
        raise NotImplementedError

    # ----- prompts ------------------------------------------------------------------------------------------------
    def _prompts(self, table: LabelledTable) -> tuple[list[np.ndarray], np.ndarray]:
        """Token ids of every prompt and the row each belongs to."""
        prompts, rows = [], []
        for i in range(len(table)):
            species = self.species_token
            if self.columns["species_column"]:
                species = self.tokenizer.species_id(table.species[i])  # checked when the table was read
            try:
                row_prompts = self.layout.prompts(table.sequence[i], species)
            except ValueError as err:  # too long under refuse, or the tokenizer's refusal: placed at the row
                raise table.error(i, str(err), self.columns["sequence_column"]) from None
            prompts += row_prompts
            rows += [i] * len(row_prompts)
        return prompts, np.array(rows, dtype=np.int64)

    # ----- lifecycle ----------------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        self.local_batch_size = per_device_batch_size(self.batch_size, getattr(self, "trainer", None))
        if self.datasets:
            return
        tables = read_labelled(
            self.path, self.tokenizer, self.format, **self.columns, val_size=self.val_size, test_size=self.test_size,
            seed=self.split_seed, stratify=self.KIND == "classification",
        )  # fmt: skip
        # rows in a seeded order, so a partial pass (limit_val_batches) sees every class of a file sorted by label
        rng = np.random.default_rng(self.split_seed)
        self.tables = {split: table.take(rng.permutation(len(table))) for split, table in tables.items()}
        self.targets = self._targets(self.tables)
        longer = {}
        for split, table in self.tables.items():
            prompts, rows = self._prompts(table)
            self.datasets[split] = PromptDataset(prompts, self._encode_targets(split)[rows], rows)
            longer[split] = int(sum(len(s) > self.layout.max_bp for s in table.sequence))
        sizes = ", ".join(f"{s} {len(t)} rows ({len(self.datasets[s])} prompts)" for s, t in self.tables.items())
        log.info(f"{self.KIND} table {self.path} ({self.format}): {sizes}; {self._describe()}")
        if any(longer.values()):
            log.info(f"rows longer than {self.layout.max_bp} bp, per split: {longer} "
                     f"(data.long_sequences={self.layout.long_sequences})")  # fmt: skip

    def _describe(self) -> str:
        raise NotImplementedError

    def label_values(self, split: str) -> np.ndarray:
        """Per row of ``tables[split]``: the class index, or the label in its own units."""
        self._require_setup()
        return self._values[split]

    def read_sequences(self, split: str) -> list[str]:
        """Per row, the bases the model reads: the sequence, or its first ``max_bp`` bases under ``truncate``."""
        return [self.layout.read_bases(s) for s in self._require_setup()[split].sequence]

    def _require_setup(self) -> dict[str, LabelledTable]:
        if not self.datasets:
            raise RuntimeError(f"{type(self).__name__}.setup() has not run yet")
        return self.tables

    def loader(self, split: str, batch_size: int, shuffle: bool = False) -> DataLoader:
        """The prompts of ``split`` in batches (the training order when ``shuffle``, else row order)."""
        self._require_setup()
        dataset = self.datasets[split]
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=self._sampler(dataset, batch_size, shuffle),
            num_workers=self.num_workers,
            worker_init_fn=ignore_preemption_signals,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
            collate_fn=functools.partial(collate, pad_id=self.tokenizer.pad_id),
        )

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return self.loader(split, self.local_batch_size, shuffle)


class ClassificationDataModule(SequenceLabelsDataModule):
    """Labels are classes (any text); two or more in the training split."""

    KIND = "classification"
    TAIL = ("<=>",)

    def _targets(self, tables: dict[str, LabelledTable]) -> Targets:
        train = tables["train"]
        classes = class_order(list(train.label))
        if len(classes) < 2:
            where = f"column {self.label_column!r}" if self.label_column else "the class folders"
            raise InputError(
                f"{where} holds one class only ({classes[0]!r}) in the training rows: a classifier needs two or more",
                train.path[0],
            )
        index = {c: i for i, c in enumerate(classes)}
        for split in SPLITS:
            table = tables[split]
            if stray := np.flatnonzero([lab not in index for lab in table.label]).tolist():
                raise table.error(
                    stray[0], f"label {table.label[stray[0]]!r} does not occur in the training rows (classes: "
                    f"{', '.join(classes)})", self.label_column,
                )  # fmt: skip
            self._values[split] = np.array([index[lab] for lab in table.label], dtype=np.int64)
        return Targets("classification", classes)

    def _encode_targets(self, split: str) -> np.ndarray:
        return self._values[split]

    def _describe(self) -> str:
        counts = np.bincount(self._values["train"], minlength=len(self.targets.classes))
        return "classes (train rows): " + ", ".join(f"{c} {n}" for c, n in zip(self.targets.classes, counts, strict=True))


class RegressionDataModule(SequenceLabelsDataModule):
    """Labels are numbers, z-scored with the training split's mean and standard deviation."""

    KIND = "regression"
    TAIL = ("<=>", "<M>")

    def _targets(self, tables: dict[str, LabelledTable]) -> Targets:
        column = self.columns["label_column"]
        for split, table in tables.items():
            self._values[split] = np.array(
                [parse_float(v, table.path[i], int(table.line[i]), column) for i, v in enumerate(table.label)]
            )
        train = self._values["train"]
        mean, std = float(train.mean()), float(train.std())
        if len(train) < 2 or not std > 0:
            raise InputError(
                f"column {column!r} is constant ({mean}) over the {len(train)} training rows: it cannot be z-scored",
                tables["train"].path[0],
            )
        return Targets("regression", mean=mean, std=std)

    def _encode_targets(self, split: str) -> np.ndarray:
        return ((self._values[split] - self.targets.mean) / self.targets.std).astype(np.float32)

    def _describe(self) -> str:
        return f"label mean {self.targets.mean:.4g}, std {self.targets.std:.4g} (train)"
