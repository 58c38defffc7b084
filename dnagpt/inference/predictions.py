"""``trainer.predict`` over an input file: the streaming DataModule and the writer of one table row per input.

- :class:`PredictionData` streams the records (:class:`~dnagpt.inference.records.RecordSource`) through the task's
  prompt builder (:class:`~dnagpt.inference.prompts.PredictionInput`): memory stays flat whatever the input size.
  Under DDP (and with DataLoader workers) record ``i`` goes to shard ``i mod shards``, so each process reads the file and
  keeps its own share; every prompt of a record stays with it. :meth:`PredictionData.check` reads everything once
  before the model runs, so a bad record stops the command before any prediction.
- :class:`PredictionWriter` takes any ``predict_step`` output, a dict of (B,) tensors with ``row`` (the input row of
  each prompt), and writes each process's rows to a part file as they come; a record with several prompts (windows)
  gets the mean of their outputs. At the end, rank 0 merges the parts in input order into one TSV (``row``, ``name``,
  then the task's columns in the order ``predict_step`` returns them), checks that every input row is there exactly
  once, and replaces the output atomically.
"""

from __future__ import annotations

import csv
import heapq
import itertools
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm import tqdm

from dnagpt.checkpointing import atomic_path
from dnagpt.data.batching import ignore_preemption_signals
from dnagpt.inference.prompts import PredictionInput
from dnagpt.inference.records import RecordSource
from dnagpt.utils.errors import InputError

__all__ = ["PredictionData", "PredictionWriter"]

FIXED_COLUMNS = ("row", "name")


def _shard() -> tuple[int, int]:
    """(this reader's shard, number of shards): process rank × DataLoader workers."""
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
    info = get_worker_info()
    workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
    return rank * workers + worker, world * workers


class PromptStream(IterableDataset):
    """The prompts of this shard's records, each with its record's ``row`` and ``name``."""

    def __init__(self, source: RecordSource, prompts: PredictionInput, n_records: int, one_prompt_each: bool) -> None:
        self.source, self.prompts = source, prompts
        self.n_records, self.one_prompt_each = n_records, one_prompt_each

    def __iter__(self) -> Iterator[dict[str, Any]]:
        shard, shards = _shard()
        for record in itertools.islice(self.source, shard, None, shards):
            for sample in self.prompts.samples(record):
                yield sample | {"row": torch.tensor(record.row), "name": record.name}

    def __len__(self) -> int:
        """This shard's prompts, when each record has one (Lightning's progress bar shows a total then)."""
        if not self.one_prompt_each:
            raise TypeError("records with several prompts: the shard's length is not known before reading it")
        shard, shards = _shard()
        return len(range(shard, self.n_records, shards))


class PredictionData(L.LightningDataModule):
    """The predict loader of an input file (module docstring); ``batch_size`` prompts per process."""

    def __init__(self, source: RecordSource, prompts: PredictionInput, batch_size: int = 32, num_workers: int = 0) -> None:
        super().__init__()
        self.source, self.prompts = source, prompts
        self.batch_size, self.num_workers = batch_size, num_workers
        self.n_records = self.n_prompts = 0

    def check(self, progress: bool = False) -> int:
        """Read every record once and build its prompts (a bad one is an ``InputError`` naming it); the record count."""
        n = prompts = 0
        for record in tqdm(self.source, desc="check", unit="seq", disable=not progress):
            n, prompts = n + 1, prompts + len(self.prompts.samples(record))
        if n == 0:
            raise InputError("holds no records", self.source.path)
        self.n_records, self.n_prompts = n, prompts
        return n

    def predict_dataloader(self) -> DataLoader:
        stream = PromptStream(self.source, self.prompts, self.n_records, self.n_prompts == self.n_records)
        return DataLoader(stream, batch_size=self.batch_size, collate_fn=self.prompts.collate, num_workers=self.num_workers,
                          worker_init_fn=ignore_preemption_signals)


class PredictionWriter(BasePredictionWriter):
    """Writes the predictions of ``n_rows`` input rows to ``output`` (module docstring)."""

    def __init__(self, output: str | Path, n_rows: int) -> None:
        super().__init__(write_interval="batch")
        self.output, self.n_rows = Path(output), n_rows
        self._fh: Any = None
        self._columns: tuple[str, ...] | None = None
        self._pending: tuple[int, str, np.ndarray, int] | None = None  # a row whose prompts may go on in the next batch

    def part(self, rank: int) -> Path:
        return self.output.with_name(f".{self.output.name}.rank{rank}.part")

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self.output.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.part(trainer.global_rank), "w", newline="")
        self._columns, self._pending = None, None

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        rows, columns, values = self._table(prediction, type(pl_module).__name__)
        if self._columns is None:
            self._columns = columns
            self._fh.write("\t".join((*FIXED_COLUMNS, *columns)) + "\n")
        elif columns != self._columns:
            raise ValueError(f"{type(pl_module).__name__}.predict_step returned {columns}, earlier {self._columns}")
        names = batch["name"]
        for row, name, value in zip(rows.tolist(), names, values, strict=True):
            if self._pending is not None and self._pending[0] == row:
                _, _, total, count = self._pending
                self._pending = (row, name, total + value, count + 1)
                continue
            self._flush()
            self._pending = (row, name, value, 1)

    @staticmethod
    def _table(prediction: Any, task: str) -> tuple[np.ndarray, tuple[str, ...], np.ndarray]:
        """(rows, columns, (B, columns) float64 values) of one ``predict_step`` output."""
        if not isinstance(prediction, Mapping) or "row" not in prediction:
            raise TypeError(f"{task}.predict_step must return a dict of (B,) tensors with 'row', got {type(prediction)}")
        rows = prediction["row"].detach().cpu().long().numpy()
        columns = tuple(k for k in prediction if k != "row")
        for key in columns:
            if prediction[key].shape != prediction["row"].shape:
                shape = tuple(prediction[key].shape)
                raise ValueError(f"{task}.predict_step: {key!r} has shape {shape}, 'row' {rows.shape}: one value per prompt")
        values = np.zeros((len(rows), len(columns)))
        for j, key in enumerate(columns):
            values[:, j] = prediction[key].detach().cpu().double().numpy()
        return rows, columns, values

    def _flush(self) -> None:
        if self._pending is None:
            return
        row, name, total, count = self._pending
        self._fh.write("\t".join([str(row), name, *(f"{v:.7g}" for v in (total / count).tolist())]) + "\n")
        self._pending = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        """A failed run leaves no part behind (the output itself is only ever replaced whole)."""
        if self._fh is not None:
            self._fh.close()
            self.part(trainer.global_rank).unlink(missing_ok=True)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush()
        self._fh.close()
        trainer.strategy.barrier("predictions written")
        if trainer.is_global_zero:
            self._merge([self.part(rank) for rank in range(trainer.world_size)])
        trainer.strategy.barrier("predictions merged")

    def _merge(self, parts: list[Path]) -> None:
        """The parts' rows in input order, under one header, each input row exactly once."""
        files = [open(p, newline="") for p in parts]
        try:
            readers = [csv.reader(f, delimiter="\t") for f in files]
            headers = {tuple(h) for h in (next(r, None) for r in readers) if h is not None}
            if len(headers) != 1:
                raise RuntimeError(f"the ranks' prediction parts have headers {sorted(headers)} (expected one)")
            merged = heapq.merge(*readers, key=lambda fields: int(fields[0]))
            with atomic_path(self.output) as partial, open(partial, "w", newline="") as out:
                writer = csv.writer(out, delimiter="\t", lineterminator="\n")
                writer.writerow(headers.pop())
                expected = 0
                for fields in merged:
                    if int(fields[0]) != expected:
                        raise RuntimeError(f"predictions: row {fields[0]} where row {expected} belongs (lost or repeated)")
                    writer.writerow(fields)
                    expected += 1
                if expected != self.n_rows:
                    raise RuntimeError(f"predictions: {expected} rows written, the input has {self.n_rows}")
        finally:
            for f in files:
                f.close()
        for p in parts:
            p.unlink()
