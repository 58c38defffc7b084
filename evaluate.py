"""Evaluate a DNAGPT checkpoint: ``python evaluate.py ckpt_path=<ckpt> [overrides]``."""

import hydra
from omegaconf import DictConfig

from dnagpt.utils.errors import exit_on_config_error
from dnagpt.utils.resolvers import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from dnagpt.pipeline import evaluate

    with exit_on_config_error():
        evaluate(cfg)


if __name__ == "__main__":
    main()
