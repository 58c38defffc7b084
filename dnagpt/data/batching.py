"""What every DataModule shares: the global batch, and the resumable training order of the map-style ones.

``data.batch_size`` is the **global** batch of one optimizer step: global batch = per-device micro-batch × world size
(devices × nodes) × ``trainer.accumulate_grad_batches``, so a recipe keeps its optimisation (batch per step, learning
rate, schedule) whatever hardware runs it: going from 8 GPUs to 1 with ``trainer.accumulate_grad_batches=8`` trains the
same model, only slower. A combination that does not divide is an error naming all three numbers, never a silently
different batch.

The map-style DataModules (GSR, expression, genomes) draw their training order from :class:`ResumableSampler` and keep
their place in it (epoch, batches trained in that epoch) in their ``state_dict``, which Lightning stores in every
checkpoint: a resumed fine-tune trains on exactly the batches an uninterrupted one would, on every rank.

**Phases** (``data.phases``, GSR and expression). Non-overlapping 6-mers spell a motif six ways, depending on where
the cut falls. With ``phases = k`` a dataset item holds every phase of its window (a leading phase axis on
``input_ids`` and ``attention_mask``), which validation and test score and average in the task, one row per window;
training reads phases as rows (:class:`PhaseRows`): all of them (``train_phases=all``, ``k`` times the rows of an
epoch) or one random phase per window and epoch (``random``, :class:`RandomPhaseSampler`, as many steps as without).
"""

import functools
import itertools
import signal
from collections.abc import Iterator, Mapping, Sized
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from dnagpt.utils.errors import ConfigError
from dnagpt.utils.pylogger import RankedLogger

log = RankedLogger(__name__)

PHASED_KEYS = ("input_ids", "attention_mask")  # the item fields that carry a phase axis when phases are on
TRAIN_PHASES = ("random", "all")  # data.train_phases


def micro_batch_size(global_batch_size: int, world_size: int = 1, accumulate_grad_batches: int = 1) -> int:
    """The per-device batch that makes ``global_batch_size`` per optimizer step; a ConfigError when it does not divide.

    >>> micro_batch_size(64, world_size=8, accumulate_grad_batches=2)
    4
    """
    per_step = world_size * accumulate_grad_batches
    if global_batch_size % per_step:
        lower = global_batch_size - global_batch_size % per_step
        raise ConfigError(
            f"data.batch_size={global_batch_size} (the global batch per optimizer step) must equal per-device "
            f"micro-batch × world size {world_size} (trainer.devices × trainer.num_nodes) × "
            f"trainer.accumulate_grad_batches={accumulate_grad_batches}, but {global_batch_size} is not divisible by "
            f"{world_size} × {accumulate_grad_batches} = {per_step}; use a multiple of {per_step} such as "
            f"{lower or per_step} or {lower + per_step}, or change the devices or the accumulation"
        )
    return global_batch_size // per_step


def per_device_batch_size(global_batch_size: int, trainer: Any | None) -> int:
    """:func:`micro_batch_size` for the trainer's world size and gradient accumulation (1 and 1 without a trainer).

    >>> per_device_batch_size(8, None)
    8
    """
    world = trainer.world_size if trainer is not None else 1
    accumulate = trainer.accumulate_grad_batches if trainer is not None else 1
    micro = micro_batch_size(global_batch_size, world, accumulate)
    _log_once(global_batch_size, world, accumulate, micro)
    return micro


@functools.cache
def _log_once(global_batch_size: int, world: int, accumulate: int, micro: int) -> None:
    """Every DataModule asks at each ``setup`` stage; say it once per process and combination."""
    log.info(
        f"Batch: global {global_batch_size} per optimizer step = micro-batch {micro} per device × {world} device(s) × "
        f"{accumulate} accumulated"
    )


class ResumableSampler(DistributedSampler):
    """The training order of a map-style DataModule: ``DistributedSampler``'s (a permutation seeded by ``seed + epoch``,
    padded to a multiple of the world size and dealt out rank by rank), started where a checkpoint left off.

    Being a ``DistributedSampler``, it is kept as it is by Lightning under DDP (``use_distributed_sampler`` replaces
    only a plain sequential or random sampler with one of its own and wraps any other sampler), so each rank draws its
    own shard from it and no other. ``start = (epoch, batches)``: iteration begins with that epoch (set here too, since
    a DataLoader with workers draws indices as soon as it is iterated, before Lightning's ``set_epoch``) and skips its
    first ``batches`` batches of ``batch_size``. ``len`` stays the whole shard: Lightning goes on counting a resumed
    epoch from its restored batch index.
    """

    def __init__(
        self, dataset: Sized, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
        start: tuple[int, int] = (0, 0),
    ) -> None:  # fmt: skip
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
        self.batch_size, self.start = batch_size, start
        self.set_epoch(start[0])

    def __iter__(self) -> Iterator[int]:
        epoch, batches = self.start
        return itertools.islice(super().__iter__(), batches * self.batch_size if self.epoch == epoch else 0, None)

    def layout(self) -> dict[str, int]:
        """What the order depends on besides the position: a resume with another layout cannot be exact."""
        return {"seed": self.seed, "world_size": self.num_replicas, "batch_size": self.batch_size,
                "samples": len(self.dataset)}  # fmt: skip


def checked_phases(phases: int | None, train_phases: str, k: int) -> int:
    """``data.phases``: 1 (the release's one cut) or ``k`` (every cut of a k-mer); ``None``, the config default, is 1
    here (evaluate and predict first replace it by what their checkpoint was fitted with: ``pipeline.phases_as_fitted``).
    ``data.train_phases`` is one of :data:`TRAIN_PHASES`."""
    phases = 1 if phases is None else phases
    if phases not in (1, k):
        raise ConfigError(f"data.phases={phases} must be 1 (the release's cut) or {k} (every phase of the {k}-mer cut)")
    if train_phases not in TRAIN_PHASES:
        raise ConfigError(f"data.train_phases={train_phases!r} must be one of {', '.join(TRAIN_PHASES)}")
    return phases


class PhaseRows(Dataset):
    """The training rows of a dataset whose items hold every phase of a window: row ``k`` is phase ``k % phases`` of
    window ``k // phases``, an ordinary single-phase prompt. ``draw`` (``data.train_phases``) says how the training
    sampler reads them (``SplitLoaders._sampler``)."""

    def __init__(self, windows: Dataset, phases: int, draw: str) -> None:
        self.windows, self.phases, self.draw = windows, phases, draw

    def __len__(self) -> int:
        return len(self.windows) * self.phases

    def __getitem__(self, k: int) -> dict[str, Any]:
        window, phase = divmod(k, self.phases)
        return {key: v[phase] if key in PHASED_KEYS else v for key, v in self.windows[window].items()}


def mean_over_phases(scores: torch.Tensor) -> torch.Tensor:
    """(B,) per window: the mean of (B, P) per-phase scores, or (B,) scores as they are."""
    return scores.mean(dim=1) if scores.dim() == 2 else scores


def training_rows(windows: Dataset, phases: int, draw: str) -> Dataset:
    """What the training loader reads: the windows themselves, or their phases as rows when phases are on."""
    return windows if phases == 1 else PhaseRows(windows, phases, draw)


class RandomPhaseSampler(ResumableSampler):
    """:class:`ResumableSampler` over the windows of a :class:`PhaseRows`, each yielded as one of its phases.

    The phase of each window is drawn from ``(seed, epoch)``, the same on every rank, so an epoch has as many steps as
    without phases, every window is read once per epoch, and a resumed epoch reads the phases it would have read.
    """

    def __init__(
        self, rows: PhaseRows, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
        start: tuple[int, int] = (0, 0),
    ) -> None:  # fmt: skip
        super().__init__(rows.windows, batch_size, seed, rank, world_size, start)
        self.phases = rows.phases

    def __iter__(self) -> Iterator[int]:
        phase = np.random.default_rng([self.seed, self.epoch]).integers(self.phases, size=len(self.dataset))
        return (i * self.phases + int(phase[i]) for i in super().__iter__())

    def layout(self) -> dict[str, int]:
        return {**super().layout(), "phases": self.phases}


class SplitLoaders:
    """The train/val/test loaders of a map-style DataModule, from its one ``_loader(split, shuffle)``, and the resume
    cursor of its training order.

    Put it before ``LightningDataModule`` in the bases so these replace Lightning's placeholders. ``_loader`` takes its
    training sampler from :meth:`_sampler` (its ``seed`` attribute seeds it); val and test stay in order, and under DDP
    Lightning deals them out. The cursor is ``train_position = (epoch, batches trained in that epoch)``, counted in
    ``on_after_batch_transfer`` while training: Lightning calls that hook on the batch it is about to train on, so
    batches a DataLoader prefetched but never trained are not counted.
    """

    def __init__(self) -> None:
        super().__init__()
        self.train_position = (0, 0)
        self._sampler_layout: dict[str, int] = {}
        self._resumed_layout: dict[str, int] = {}

    def train_dataloader(self) -> Any:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> Any:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> Any:
        return self._loader("test", shuffle=False)

    def _sampler(self, dataset: Sized, batch_size: int, shuffle: bool) -> ResumableSampler | None:
        """The training sampler at ``train_position`` for this rank when ``shuffle``; ``None`` (in order) otherwise."""
        if not shuffle:
            return None
        trainer = getattr(self, "trainer", None)
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        random_phase = isinstance(dataset, PhaseRows) and dataset.draw == "random"
        kind = RandomPhaseSampler if random_phase else ResumableSampler
        sampler = kind(dataset, batch_size, self.seed, rank, world, start=self.train_position)
        self._sampler_layout = sampler.layout()
        if self._resumed_layout and self._resumed_layout != self._sampler_layout:
            log.warning(
                f"training order saved with {self._resumed_layout}, resuming with {self._sampler_layout}: training goes "
                "on from the saved epoch and batch, but not on the batches an uninterrupted run would have seen"
            )
        self._resumed_layout = {}
        return sampler

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.training:
            epoch, batches = self.train_position[0], self.train_position[1] + 1
            # the epoch's last batch (limit_train_batches counted): a resume starts the next epoch's order
            self.train_position = (epoch + 1, 0) if batches >= trainer.num_training_batches else (epoch, batches)
        return batch

    def state_dict(self) -> dict[str, int]:
        epoch, batches = self.train_position
        return {"epoch": epoch, "batches": batches, **self._sampler_layout}

    def load_state_dict(self, state_dict: Mapping[str, int]) -> None:
        self.train_position = (int(state_dict["epoch"]), int(state_dict["batches"]))
        self._resumed_layout = {k: v for k, v in state_dict.items() if k not in ("epoch", "batches")}


PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)  # what callbacks.preemption turns into a checkpoint


def ignore_preemption_signals(worker_id: int) -> None:
    """``worker_init_fn`` of every DataLoader: workers leave SIGTERM and SIGUSR1 to the main process.

    A scheduler signals every process of a job (SLURM, ``kill -- -PGID``, ``docker stop``); a worker that dies of it makes
    the main process raise "DataLoader worker ... killed by signal" before the preemption checkpoint is written. The main
    process still ends its workers when it exits.
    """
    for sig in PREEMPTION_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
