"""The one rule every DataModule shares: ``data.batch_size`` is the **global** batch of one optimizer step.

global batch = per-device micro-batch × world size (devices × nodes) × ``trainer.accumulate_grad_batches``, so a recipe
keeps its optimisation (batch per step, learning rate, schedule) whatever hardware runs it: going from 8 GPUs to 1 with
``trainer.accumulate_grad_batches=8`` trains the same model, only slower. A combination that does not divide is an error
naming all three numbers, never a silently different batch.
"""

import functools
from typing import Any

from dnagpt.utils.errors import ConfigError
from dnagpt.utils.pylogger import RankedLogger

log = RankedLogger(__name__)


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


class SplitLoaders:
    """The train/val/test loaders of a map-style DataModule, from its one ``_loader(split, shuffle)``.

    Put it before ``LightningDataModule`` in the bases so these replace Lightning's placeholders.
    """

    def train_dataloader(self) -> Any:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> Any:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> Any:
        return self._loader("test", shuffle=False)
