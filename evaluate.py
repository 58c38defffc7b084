"""Evaluate a DNAGPT checkpoint: ``python evaluate.py ckpt_path=<ckpt> [overrides]``."""

import hydra
from omegaconf import DictConfig

from dnagpt.utils.resolvers import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="dnagpt/conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from dnagpt.pipeline import evaluate
    from dnagpt.utils.multirun import job_scope

    with job_scope():  # as train.py: a refused config exits with its message; -m jobs are isolated for DDP
        evaluate(cfg)


if __name__ == "__main__":
    main()
