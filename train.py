"""Train DNAGPT: ``python train.py [overrides]``. See README.md for the cookbook and docs/sweeps.md for ``-m``."""

import hydra
from omegaconf import DictConfig

from dnagpt.utils.resolvers import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="dnagpt/conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from dnagpt.pipeline import get_metric_value, train
    from dnagpt.utils.multirun import job_scope

    with job_scope():  # a refused config exits with its message; under -m a failed trial lets the sweep go on
        return get_metric_value(train(cfg), cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
