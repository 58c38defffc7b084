"""``dnagpt download corpus=multispecies [paths.data_dir=/big/disk/data]`` (also ``dnagpt-download`` and, in a clone,
``python download.py``): fetch the genome files of a corpus.

The arguments are overrides of the training config (``dnagpt/conf/train.yaml``), with ``--config-dir`` as in training,
so the files land exactly where training looks for them (``corpus.root``, by default ``./data/genomes``); resumable and
checksum-verified (``dnagpt.data.download``).

The config is composed with Hydra's compose API, not ``@hydra.main``: a download is not a run, and ``@hydra.main`` would
leave a run directory behind every call (``logs/train/runs/<time>/`` with its ``.hydra/`` and ``train.log``). Hence its
own small parser: ``--help``, ``--config-dir`` and the overrides (no ``-m``, no ``--cfg``).
"""

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from dnagpt.commands import check_config_dir, compose_config, config_groups, format_groups, program_name
from dnagpt.data.corpus import Corpus
from dnagpt.data.download import download_corpus
from dnagpt.data.gsr_download import download_dataset
from dnagpt.utils.errors import error_boundary

log = logging.getLogger("download")


def usage(prog: str, user_dir: str | None) -> str:
    return (
        f"usage: {prog} [--config-dir DIR] [group=option ...] [key=value ...]\n\n"
        "Fetches the genome files of corpus=<name> to where training reads them (corpus.root; by default\n"
        "./data/genomes, moved with paths.data_dir=...), resumable and checksum-verified. The arguments are overrides\n"
        "of the training config: train with the same ones and it finds the files. --config-dir DIR adds your own\n"
        "config groups, e.g. DIR/corpus/my_genome.yaml (url, sha256, holdout) used as corpus=my_genome.\n\n"
        f"Config groups (group=option):\n{format_groups(config_groups('train', user_dir))}"
    )


def main(argv: Sequence[str] | None = None, config_dir: str | Path | None = None) -> None:
    """Compose the training config with the command-line overrides and fetch its corpus (``config_dir``: tests)."""
    prog = program_name()
    parser = argparse.ArgumentParser(prog=prog, add_help=False)
    parser.add_argument("-h", "--help", action="store_true")
    parser.add_argument("-cd", "--config-dir")
    parser.add_argument("overrides", nargs="*")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    with error_boundary():  # a bad override, corpus, checksum or URL is one paragraph, as in training
        check_config_dir(args.config_dir, prog)
        if args.help:
            sys.stdout.write(usage(prog, args.config_dir))
            return
        cfg = compose_config(args.overrides, user_dir=args.config_dir, config_dir=config_dir, prog=prog, echo=argv)
        if cfg.get("dataset") is not None:  # dataset=<name>: a fine-tuning set (dnagpt/conf/dataset), not the corpus
            log.info("%s: %s", cfg.dataset.name, download_dataset(cfg.dataset))
            return
        for name, digest in download_corpus(Corpus.from_config(cfg.corpus)).items():
            log.info("%s: %s", name, digest)
