"""A logger that writes once per job under DDP, not once per rank."""

import logging
from collections.abc import Mapping

from lightning.pytorch.utilities import rank_zero_only


class RankedLogger(logging.LoggerAdapter):
    """``RankedLogger(__name__).info(...)`` logs on rank zero only unless ``rank_zero_only=False``."""

    def __init__(self, name: str = __name__, rank_zero_only: bool = True, extra: Mapping | None = None) -> None:
        super().__init__(logging.getLogger(name), extra or {})
        self.rank_zero_only = rank_zero_only

    def log(self, level: int, msg: object, *args, **kwargs) -> None:
        if not self.isEnabledFor(level):
            return
        rank = getattr(rank_zero_only, "rank", 0)
        if self.rank_zero_only and rank != 0:
            return
        msg, kwargs = self.process(msg, kwargs)
        self.logger.log(level, f"[rank: {rank}] {msg}" if not self.rank_zero_only else msg, *args, **kwargs)
