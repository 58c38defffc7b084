"""The Markov yardstick's whole grid, on validation and test: ``python scripts/markov_grid.py corpus.root=/path/to/data``.

A pre-training run scores one Markov model per base, its order and β chosen on the validation windows
(``dnagpt.tasks.yardsticks.MarkovYardstick``). This script asks whether a comparison with it depends on that choice: it
takes the same counts (training regions, forward and reversed) up to ``--max-order`` and scores every (order, β) on the
validation and on the test windows of the same data module, so a model's test figure can be set against the best
Markov model *even when chosen on the test windows* (an upper bound on any fair choice). Arguments other than the
options are Hydra overrides of ``train.yaml`` (default: ``experiment=pretrain_cpu``). Writes ``--out`` (JSON) and prints
the best cell of each split and the grid at the best β.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_module

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from dnagpt.model.markov import bits_grid  # noqa: E402
from dnagpt.pipeline import build_parts  # noqa: E402
from dnagpt.tasks.yardsticks import fitted_markov  # noqa: E402
from dnagpt.utils.resolvers import register_resolvers  # noqa: E402

log = logging.getLogger("markov_grid")


def grid(overrides: Sequence[str], max_order: int, betas: Sequence[float]) -> dict[str, dict[str, float]]:
    """``{split: {"k=<order> beta=<β>": bits per base}}`` for the validation and test windows."""
    register_resolvers()
    with initialize_config_module(version_base="1.3", config_module="dnagpt.conf"):
        cfg = compose("train", overrides=["data.num_workers=0", *overrides])
    _, datamodule, _ = build_parts(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    model = fitted_markov(datamodule, max_order)  # the yardstick's own counts (and cache)
    return {split: {f"k={j} beta={beta:g}": v for (j, beta), v in bits_grid(model, datamodule.heldout_sequences(split),
                                                                             betas).items()}
            for split in ("val", "test")}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", default=[], help="Hydra overrides (experiment=pretrain_cpu is added first)")
    parser.add_argument("--max-order", type=int, default=12)
    parser.add_argument("--betas", type=float, nargs="+", default=[0.5, 2.0, 8.0, 32.0])
    parser.add_argument("--out", type=Path, default=Path("markov_grid.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    scores = grid(["experiment=pretrain_cpu", *args.overrides], args.max_order, args.betas)
    args.out.write_text(json.dumps(scores, indent=1))
    for split, cells in scores.items():
        best = min(cells, key=cells.get)
        beta = best.split("beta=")[1]
        by_order = ", ".join(f"{k.split()[0]}: {v:.4f}" for k, v in cells.items() if k.endswith(f"beta={beta}"))
        log.info("%s: best %s = %.4f bits per base; at beta %s: %s", split, best, cells[best], beta, by_order)
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
