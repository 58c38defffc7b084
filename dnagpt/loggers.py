"""A CSV logger whose ``metrics.csv`` survives a resume, holding each step once.

Lightning's CSV writer deletes an existing ``metrics.csv`` when it starts, so ``ckpt_path=auto`` would wipe the history of
the run it continues. Ours reads the old rows back and keys every row by step: steps re-run after the last checkpoint
replace their pre-crash values instead of appearing twice. The file is rewritten whole at each flush (it is small) and
atomically (local directories): a kill mid-write leaves the previous version, never a truncated history.
"""

import csv

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from dnagpt.checkpointing import atomic_path
from dnagpt.lightning_internals import KeepingExperimentWriter, cached_experiment


class _StepMergingWriter(KeepingExperimentWriter):
    def on_start(self) -> None:  # instead of deleting the old file
        self.rows: dict[int, dict[str, float]] = {}
        if not self.fs.isfile(self.metrics_file_path):
            return
        with self.fs.open(self.metrics_file_path, "r", newline="") as fh:
            for row in csv.DictReader(fh):
                step = int(float(row.pop("step")))
                self.rows.setdefault(step, {}).update({k: float(v) for k, v in row.items() if v != ""})

    def save(self) -> None:
        if not self.metrics:
            return
        for metrics in self.metrics:
            step = metrics.pop("step")
            self.rows.setdefault(step, {}).update(metrics)
        self.metrics = []
        keys = sorted(set().union(*self.rows.values()))
        with atomic_path(self.metrics_file_path) as partial, open(partial, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["step", *keys])
            writer.writeheader()
            writer.writerows({"step": step, **self.rows[step]} for step in sorted(self.rows))


class ResumableCSVLogger(CSVLogger):
    """Drop-in ``CSVLogger`` (same arguments) for runs that may be resumed in place."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        return cached_experiment(self, lambda: _StepMergingWriter(log_dir=self.log_dir))
