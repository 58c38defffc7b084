"""The one rule every DataModule shares: ``data.batch_size`` is global, split evenly over the DDP ranks."""

from typing import Any


def per_device_batch_size(global_batch_size: int, trainer: Any | None) -> int:
    """``global_batch_size`` divided by the trainer's world size (1 without a trainer); an error when it does not divide.

    >>> per_device_batch_size(8, None)
    8
    """
    world = trainer.world_size if trainer is not None else 1
    if global_batch_size % world:
        raise ValueError(f"data.batch_size={global_batch_size} (global) is not divisible by the world size {world}")
    return global_batch_size // world


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
