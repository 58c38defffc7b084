"""Expression regression batches (Xpresso geometry): the prompt of each promoter window, z-scored labels, the DataModule.

The prompt of the released DNAGPT code, one sentence per gene::

    <species> DNA(window) <+> <M>[f_1 .. f_F] <=> <M>        (F numeric features)
    <species> DNA(window) <=> <M>                            (sequence only, F = 0)

The features are inserted after the first ``<M>``; the regression head reads the last ``<M>``, whose value (the
z-scored label) is what the model predicts, so nothing is inserted after it. The bundled mini set has none of
Xpresso's eight half-life features, so the default is sequence only.

* **Rows.** :mod:`dnagpt.data.expression_table` reads and checks the table and assigns the splits (``grouped``,
  ``random``, ``ordered``, ``kfold``: fold ``fold`` of ``n_folds`` grouped folds as test); grouping is on the whole
  stored sequences, so the split does not depend on ``window``. ``split_seed`` is not the training seed, so reseeding
  training keeps the test set.
* **Window.** ``window = [start, end)`` in bp relative to the TSS, e.g. ``[-7000, 3500]`` (Xpresso's full input,
  1,750 6-mers) or a crop that fits a 512-position model; the prompt length is checked against ``block_size``
  when the DataModule is built, naming both numbers.
* **Scaling.** Features and label are z-scored with training-split statistics only; ``label_mean`` and
  ``label_std`` map predictions back to label units.
* **Phases** (``phases=6``; 1, the default, is the release prompt). A promoter window is a crop of a longer stored
  sequence, so phase ``s`` reads the window shifted ``s`` bp downstream (upstream where the stored sequence ends
  first): every phase keeps the window's length and phase 0 is the release prompt. Only a window that fills the
  stored sequence (Xpresso's full ``[-7000, 3500]``) is trimmed as GSR's are: ``s`` bp in front, ``6 - s`` behind,
  one 6-mer fewer. Items then hold all six prompts (``input_ids`` (6, T)); training reads them as rows and the task
  averages the six predictions at validation and test (:mod:`dnagpt.data.batching`). Baselines read the window.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dnagpt.data.batching import (
    SplitLoaders,
    checked_phases,
    ignore_preemption_signals,
    per_device_batch_size,
    training_rows,
)
from dnagpt.data.expression_table import (
    SPLIT_METHODS,
    ExpressionTable,
    assign_splits,
    check_fold,
    overlap_groups,
    read_expression_table,
)
from dnagpt.data.splits import SPLITS, check_split_size
from dnagpt.data.tables import require_file
from dnagpt.tokenizer import KmerTokenizer
from dnagpt.utils.errors import ConfigError, InputError
from dnagpt.utils.pylogger import RankedLogger

__all__ = ["ExpressionDataModule", "SplitData", "phase_spans"]

log = RankedLogger(__name__)


@dataclass(frozen=True)
class SplitData:
    """One split as the evaluator's baselines need it: window DNA, z-scored features, labels in label units."""

    ids: list[str]
    windows: list[str]
    features: np.ndarray  # (n, F) float32, z-scored with training statistics
    labels: np.ndarray  # (n,) float64, label units (after any log10)
    rows: np.ndarray  # (n,) row index in the table


def phase_spans(start: int, end: int, length: int, phases: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` in the stored sequence (``length`` bp) of each phase of the window ``[start, end)``: shifted
    ``0 .. phases - 1`` bp downstream, else upstream, else (no room either way) trimmed by ``phases`` bp.

    >>> phase_spans(6, 18, 30, 3), phase_spans(6, 18, 19, 3), phase_spans(0, 9, 9, 3)
    ([(6, 18), (7, 19), (8, 20)], [(6, 18), (5, 17), (4, 16)], [(0, 6), (1, 7), (2, 8)])
    """
    if phases == 1:
        return [(start, end)]
    if end + phases - 1 <= length:
        return [(start + s, end + s) for s in range(phases)]
    if start >= phases - 1:
        return [(start - s, end - s) for s in range(phases)]
    return [(start + s, end - phases + s) for s in range(phases)]


class _TensorDataset(Dataset):
    """Sample ``i`` is ``{key: tensor[i]}``: every prompt has the same length, so no padding is needed."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.tensors.items()}


class ExpressionDataModule(SplitLoaders, L.LightningDataModule):
    """Xpresso-style expression regression; see the module docstring for the prompt, splits and scaling.

    ``batch_size`` is global (divided by the world size in ``setup``); ``block_size`` is the model's.
    """

    def __init__(
        self,
        tokenizer: KmerTokenizer,
        block_size: int,
        path: str | Path,
        batch_size: int = 8,
        window: Sequence[int] = (-1500, 1500),
        tss_index: int = 7000,
        sequence_length: int = 10500,
        id_column: str = "ensembl_gene_id",
        label_column: str = "human_expr_label",
        sequence_column: str = "sequence_tss_minus7000_plus3500",
        feature_columns: Sequence[str] = (),
        log10_columns: Sequence[str] = (),
        species: str = "human",
        species_column: str | None = None,
        coordinate_columns: Sequence[str] | None = ("chrom_GRCh37", "tss_1based", "strand"),
        split: str = "grouped",
        val_size: float = 0.15,
        test_size: float = 0.15,
        split_seed: int = 0,
        num_workers: int = 0,
        seed: int = 0,
        pin_memory: bool = False,
        phases: int | None = None,
        train_phases: str = "random",
        n_folds: int = 5,
        fold: int = 0,
    ) -> None:
        super().__init__()
        phases = checked_phases(phases, train_phases, tokenizer.k)
        self.path = require_file("path", path)  # read in setup; a wrong path fails here, when the config is built
        if split not in SPLIT_METHODS:
            raise ConfigError(f"data.split={split!r} is not one of {SPLIT_METHODS}")
        if batch_size < 1 or num_workers < 0:
            raise ConfigError(f"need batch_size >= 1 and num_workers >= 0, got {batch_size}, {num_workers}")
        self.tokenizer = tokenizer
        self.window = self._check_window(window, tss_index, sequence_length, tokenizer)
        self.n_features = len(feature_columns)
        self.n_positions = self.prompt_positions(self.window, self.n_features, tokenizer)
        if self.n_positions > block_size:
            raise ConfigError(
                f"the expression prompt needs {self.n_positions} positions (window {list(self.window)} = "
                f"{self.window[1] - self.window[0]} bp, {self.n_features} features) but the model's block_size is "
                f"{block_size}; narrow data.window or pick a model with more positions"
            )
        check_split_size(val_size, "val_size")
        check_split_size(test_size, "test_size")
        check_fold(n_folds, fold)
        self.tss_index, self.sequence_length = tss_index, sequence_length
        self.columns = dict(id_column=id_column, label_column=label_column, sequence_column=sequence_column,
                            feature_columns=list(feature_columns), log10_columns=list(log10_columns),
                            species=species, species_column=species_column,
                            coordinate_columns=list(coordinate_columns) if coordinate_columns else None)  # fmt: skip
        self.split, self.val_size, self.test_size, self.split_seed = split, val_size, test_size, split_seed
        self.batch_size, self.num_workers, self.seed, self.pin_memory = batch_size, num_workers, seed, pin_memory
        self.phases, self.train_phases = phases, train_phases
        self.n_folds, self.fold = n_folds, fold
        self.local_batch_size = batch_size
        self.table: ExpressionTable | None = None
        self.label_mean = self.label_std = float("nan")
        self._splits: dict[str, np.ndarray] = {}  # split -> row indices
        self._datasets: dict[str, _TensorDataset] = {}
        self._features: np.ndarray | None = None  # (n, F) z-scored
        self._windows: list[str] = []  # the window DNA of every row

    @staticmethod
    def _check_window(
        window: Sequence[int], tss_index: int, sequence_length: int, tokenizer: KmerTokenizer
    ) -> tuple[int, int]:
        if len(window) != 2 or not all(float(w).is_integer() for w in window):
            raise ConfigError(f"data.window must be two integers [start, end) relative to the TSS, got {list(window)}")
        start, end = (int(w) for w in window)
        if not -tss_index <= start < end <= sequence_length - tss_index:
            raise ConfigError(
                f"data.window={[start, end]} must satisfy {-tss_index} <= start < end <= {sequence_length - tss_index}: "
                f"the stored sequences are {sequence_length} bp with the TSS at index {tss_index}"
            )
        if tokenizer.vocab == "fixed" and (end - start) % tokenizer.k:
            raise ConfigError(
                f"data.window={[start, end]} is {end - start} bp, not a multiple of {tokenizer.k}: the fixed "
                f"{tokenizer.k}-mer vocabulary cannot encode the tail (pick a window of whole {tokenizer.k}-mers)"
            )
        return start, end

    @staticmethod
    def prompt_positions(window: tuple[int, int], n_features: int, tokenizer: KmerTokenizer) -> int:
        """Expanded prompt length: species + DNA tokens + [<+> <M> + values] + <=> <M>."""
        n_dna = math.ceil((window[1] - window[0]) / tokenizer.k)
        return 1 + n_dna + (2 + n_features if n_features else 0) + 2

    # ----- lifecycle ----------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        self.local_batch_size = per_device_batch_size(self.batch_size, getattr(self, "trainer", None))
        if self.table is not None:
            return
        table = read_expression_table(
            self.path, self.tokenizer, sequence_length=self.sequence_length, **self.columns
        )
        a, b = self.tss_index + self.window[0], self.tss_index + self.window[1]
        windows = [s[a:b] for s in table.sequences]
        # grouped on the whole stored sequences, so the split is the same whatever window the model reads
        span = (-self.tss_index, self.sequence_length - self.tss_index)
        groups = overlap_groups(table.sequences, table.coords, span)
        names = assign_splits(groups, self.val_size, self.test_size, self.split_seed, self.split, self.n_folds, self.fold)
        self._splits = {s: np.flatnonzero(names == s) for s in SPLITS}
        train = self._splits["train"]
        self.label_mean, self.label_std = _mean_std(table.labels[train], self.columns["label_column"], table.path)
        self._features = np.zeros_like(table.features, dtype=np.float32)
        for j, c in enumerate(self.columns["feature_columns"]):
            mean, std = _mean_std(table.features[train, j], c, table.path)
            self._features[:, j] = (table.features[:, j] - mean) / std
        self.table, self._windows = table, windows
        spans = phase_spans(a, b, self.sequence_length, self.phases)
        phased = [self._encode(table, [s[lo:hi] for s in table.sequences]) for lo, hi in spans]
        ids = phased[0] if self.phases == 1 else np.stack(phased, axis=1)  # (n, T) or (n, phases, T)
        targets = ((table.labels - self.label_mean) / self.label_std).astype(np.float32)
        for s, rows in self._splits.items():
            self._datasets[s] = self._dataset(ids[rows], rows, targets[rows])
        sizes = ", ".join(f"{s} {len(r)}" for s, r in self._splits.items())
        log.info(
            f"expression: {len(table.ids)} genes from {table.path} ({sizes}; split={self.split}, "
            f"{len(np.unique(groups))} groups); window {list(self.window)}, {ids.shape[-1]} tokens + "
            f"{self.n_features} values per prompt, {self.phases} phase(s) (stored bp {spans}); "
            f"label mean {self.label_mean:.4f}, std {self.label_std:.4f} (train)"
        )

    def _encode(self, table: ExpressionTable, windows: list[str]) -> np.ndarray:
        """(n, T) token ids of every prompt; all windows have one length, hence one number of DNA tokens."""
        tok = self.tokenizer
        tail = [tok.plus_id, tok.number_id] if self.n_features else []
        tail += [tok.eq_id, tok.number_id]
        dna = [tok.encode_dna(w) for w in windows]
        n_dna = len(dna[0])
        ids = np.empty((len(windows), 1 + n_dna + len(tail)), dtype=np.int64)
        ids[:, 0] = [tok.species_id(sp) for sp in table.species]
        ids[:, 1 : 1 + n_dna] = dna
        ids[:, 1 + n_dna :] = tail
        return ids

    def _dataset(self, ids: np.ndarray, rows: np.ndarray, targets: np.ndarray) -> _TensorDataset:
        """Prompts ``ids`` (n, T), or (n, phases, T): every phase has the same layout, so positions are shared."""
        n, T = ids.shape[0], ids.shape[-1]
        F = self.n_features
        first_m = T - 3 if F else T - 1  # index of the <M> the features follow (none without features)
        return _TensorDataset({
            "input_ids": torch.from_numpy(ids),
            "attention_mask": torch.ones(ids.shape, dtype=torch.bool),
            "values": torch.from_numpy(self._features[rows]),
            "value_pos": torch.full((n, F), first_m, dtype=torch.long),
            "value_mask": torch.ones(n, F, dtype=torch.bool),
            "reg_pos": torch.full((n, 1), T - 1, dtype=torch.long),
            "target": torch.from_numpy(targets),
            "species": torch.from_numpy(ids.reshape(n, -1)[:, 0].copy()),
            "row": torch.from_numpy(rows.astype(np.int64)),
        })  # fmt: skip

    # ----- access -------------------------------------------------------------------------------------------
    def _require_setup(self) -> ExpressionTable:
        if self.table is None:
            raise RuntimeError("ExpressionDataModule.setup() has not run yet")
        return self.table

    def dataset(self, split: str) -> _TensorDataset:
        self._require_setup()
        if split not in self._datasets:
            raise ConfigError(f"unknown split {split!r}; one of {SPLITS}")
        return self._datasets[split]

    def split_data(self, split: str) -> SplitData:
        """Rows of one split for baselines and tables (same order as its dataloader)."""
        table = self._require_setup()
        rows = self._splits[split]
        return SplitData(
            [table.ids[i] for i in rows], [self._windows[i] for i in rows], self._features[rows],
            table.labels[rows], rows,
        )  # fmt: skip

    def to_label_units(self, z: np.ndarray | torch.Tensor) -> np.ndarray:
        """Z-scored predictions back in label units (e.g. log10(expression + 0.1))."""
        self._require_setup()
        return np.asarray(z, dtype=np.float64) * self.label_std + self.label_mean

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = training_rows(self.dataset(split), self.phases, self.train_phases) if shuffle else self.dataset(split)
        return DataLoader(
            dataset,
            batch_size=self.local_batch_size,
            sampler=self._sampler(dataset, self.local_batch_size, shuffle),
            num_workers=self.num_workers,
            worker_init_fn=ignore_preemption_signals,
            pin_memory=self.pin_memory,
        )


def _mean_std(x: np.ndarray, column: str, path: Path) -> tuple[float, float]:
    mean, std = float(x.mean()), float(x.std())
    if not std > 0:
        raise InputError(f"column {column!r} is constant ({mean}) in the training split; it cannot be z-scored", path)
    return mean, std
