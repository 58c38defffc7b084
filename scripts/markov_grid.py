"""The Markov yardstick's whole grid, on validation and test: ``python scripts/markov_grid.py corpus.root=/path/to/data``.

A pre-training run scores one Markov model per base, its order and β chosen on the validation windows
(``dnagpt.tasks.yardsticks.MarkovYardstick``). This script asks whether a comparison with it depends on that choice: it
takes the same counts (training regions, forward and reversed) up to ``--max-order`` and scores every (order, β) on the
validation and on the test windows of the same data module, so a model's test figure can be set against the best
Markov model *even when chosen on the test windows* (an upper bound on any fair choice). Arguments other than the
options are Hydra overrides of ``train.yaml`` (default: ``experiment=pretrain_cpu``). Writes ``--out`` (JSON) and prints
the best cell of each split and the grid at the best β.

``--ckpt <pre-training checkpoint>`` adds where the two differ: the model's bits per base and the yardstick's (its
validation choice of order and β) on each species' windows of each split, under ``"by_species"`` in the JSON and as a
Markdown table.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset, Subset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from dnagpt.checkpointing import read_checkpoint  # noqa: E402
from dnagpt.data.pretrain import PretrainDataModule  # noqa: E402
from dnagpt.model.markov import MarkovModel, bits_grid, choose_order  # noqa: E402
from dnagpt.pipeline import build_parts, module_for_evaluation  # noqa: E402
from dnagpt.tasks.pretrain import PretrainTask  # noqa: E402
from dnagpt.tasks.yardsticks import fitted_markov  # noqa: E402
from dnagpt.utils.resolvers import register_resolvers  # noqa: E402

log = logging.getLogger("markov_grid")


def held_out_data(overrides: Sequence[str]) -> tuple[DictConfig, PretrainDataModule]:
    """The composed ``train.yaml`` and its pre-training data module, set up (held-out windows fixed)."""
    register_resolvers()
    with initialize_config_module(version_base="1.3", config_module="dnagpt.conf"):
        cfg = compose("train", overrides=["data.num_workers=0", *overrides])
    _, datamodule, _ = build_parts(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return cfg, datamodule


def grid(datamodule: PretrainDataModule, model: MarkovModel, betas: Sequence[float]) -> dict[str, dict[str, float]]:
    """``{split: {"k=<order> beta=<β>": bits per base}}`` for the validation and test windows."""
    return {split: {f"k={j} beta={beta:g}": v for (j, beta), v in bits_grid(model, datamodule.heldout_sequences(split),
                                                                             betas).items()}
            for split in ("val", "test")}  # fmt: skip


@torch.no_grad()
def model_bits(module: PretrainTask, dataset: Dataset, batch_size: int = 16) -> float:
    """The model's bits per base over ``dataset``'s windows: token cross-entropy in bits over the bases they spell."""
    bits = bases = 0.0
    for batch in DataLoader(dataset, batch_size=batch_size):
        res = module.model_step(batch)
        bits += float(module.total_bits(res))
        bases += float(res["n_bases"])
    return bits / bases


def by_species(cfg: DictConfig, datamodule: PretrainDataModule, markov: MarkovModel, ckpt: Path) -> list[dict]:
    """One row per (split, species): windows, the model's and the yardstick's bits per base (order and β chosen on all
    validation windows, as ``MarkovYardstick`` does)."""
    module = module_for_evaluation(cfg, read_checkpoint(ckpt, key="--ckpt")).eval()
    order, beta, _ = choose_order(markov, datamodule.heldout_sequences("val"))
    rows = []
    for split in ("val", "test"):
        dataset, sequences = datamodule.heldout_dataset(split), datamodule.heldout_sequences(split)
        for i, species in enumerate(dataset.species):
            idx = [j for j, item in enumerate(dataset.items) if item[0] == i]
            if idx:
                rows.append({"split": split, "species": species.name, "windows": len(idx),
                             "model": model_bits(module, Subset(dataset, idx)),
                             "markov": markov.bits_per_base([sequences[j] for j in idx], order, beta),
                             "markov_order": order, "markov_beta": beta})  # fmt: skip
    return rows


def species_table(rows: Sequence[dict]) -> str:
    lines = ["| split | species | windows | model | Markov | model − Markov |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['split']} | {r['species']} | {r['windows']} | {r['model']:.3f} | {r['markov']:.3f} | "
              f"{r['model'] - r['markov']:+.3f} |" for r in rows]  # fmt: skip
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", default=[], help="Hydra overrides (experiment=pretrain_cpu is added first)")
    parser.add_argument("--max-order", type=int, default=12)
    parser.add_argument("--betas", type=float, nargs="+", default=[0.5, 2.0, 8.0, 32.0])
    parser.add_argument("--out", type=Path, default=Path("markov_grid.json"))
    parser.add_argument("--ckpt", type=Path, help="a pre-training checkpoint: add the per-species comparison")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.ckpt is not None and not args.ckpt.is_file():
        parser.error(f"--ckpt {args.ckpt}: no such file")
    cfg, datamodule = held_out_data(["experiment=pretrain_cpu", *args.overrides])
    markov = fitted_markov(datamodule, args.max_order)  # the yardstick's own counts (and cache)
    scores: dict = grid(datamodule, markov, args.betas)
    if args.ckpt is not None:
        scores["by_species"] = by_species(cfg, datamodule, markov, args.ckpt)
        log.info("bits per base by species (%s):\n%s", args.ckpt, species_table(scores["by_species"]))
    args.out.write_text(json.dumps(scores, indent=1))
    for split in ("val", "test"):
        cells = scores[split]
        best = min(cells, key=cells.get)
        beta = best.split("beta=")[1]
        by_order = ", ".join(f"{k.split()[0]}: {v:.4f}" for k, v in cells.items() if k.endswith(f"beta={beta}"))
        log.info("%s: best %s = %.4f bits per base; at beta %s: %s", split, best, cells[best], beta, by_order)
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
