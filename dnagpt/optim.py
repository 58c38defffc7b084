"""Learning-rate schedule used by every task: linear warm-up, then cosine decay to ``min_lr_ratio`` of the peak.

A function returning a ``LambdaLR`` (not a class) so Hydra can hand it over as a partial and the LightningModule completes it
with the optimizer and the total number of steps, which only the Trainer knows.
"""

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """Multiplier of the peak learning rate at ``step``.

    >>> lr_factor(0, 10, 100, 0.1), lr_factor(10, 10, 100, 0.1), round(lr_factor(100, 10, 100, 0.1), 6)
    (0.1, 1.0, 0.1)
    """
    if step < warmup_steps:
        return max(min_lr_ratio, (step + 1) / warmup_steps) if warmup_steps > 1 else 1.0
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def cosine_with_warmup(
    optimizer: Optimizer, total_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.1
) -> LambdaLR:
    """Stepped once per optimizer step (the module registers it with ``interval: step``)."""
    if warmup_steps < 0 or total_steps < 1:
        raise ValueError(f"need warmup_steps >= 0 and total_steps >= 1, got {warmup_steps=} {total_steps=}")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio must lie in [0, 1], got {min_lr_ratio}")
    return LambdaLR(optimizer, lambda step: lr_factor(step, warmup_steps, total_steps, min_lr_ratio))
