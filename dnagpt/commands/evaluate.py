"""``dnagpt evaluate ckpt_path=<ckpt>`` (also ``dnagpt-evaluate`` and, in a clone, ``python evaluate.py``): the test
split's metrics and the task's plots of a checkpoint.

The Hydra app over ``dnagpt/conf/evaluate.yaml``; ``dnagpt.cli`` checks the command line before Hydra starts.
"""

import hydra
from omegaconf import DictConfig

from dnagpt.commands import CONF_PATH
from dnagpt.utils.resolvers import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path=CONF_PATH, config_name="evaluate")
def main(cfg: DictConfig) -> None:
    """Evaluate; as ``dnagpt.commands.train``, torch is imported only once the config is composed."""
    from dnagpt.pipeline import evaluate
    from dnagpt.utils.multirun import job_scope

    with job_scope():  # a refused config exits with its message; -m jobs are isolated for DDP
        evaluate(cfg)
