"""``dnagpt train`` (also ``dnagpt-train`` and, in a clone, ``python train.py``): pre-train or fine-tune.

The Hydra app over ``dnagpt/conf/train.yaml``; ``dnagpt.cli`` checks the command line before Hydra starts.
"""

import hydra
from omegaconf import DictConfig

from dnagpt.commands import CONF_PATH
from dnagpt.utils.resolvers import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path=CONF_PATH, config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Train; the value of ``optimized_metric`` goes back to a sweeper (``-m``). Torch is imported only here, so that
    ``--help`` and a refused command line answer at once."""
    from dnagpt.pipeline import get_metric_value, train
    from dnagpt.utils.multirun import job_scope

    with job_scope():  # a refused config exits with its message; under -m a failed trial lets the sweep go on
        return get_metric_value(train(cfg), cfg.get("optimized_metric"))
