"""Fetch the genome files of a corpus: ``python download.py corpus=multispecies [paths.data_dir=/big/disk/data]``.

The arguments are Hydra overrides of the training config (``dnagpt/conf/train.yaml``), so the files land exactly where training
looks for them (``corpus.root``); resumable and checksum-verified (``dnagpt.data.download``).

The config is composed with Hydra's compose API, not ``@hydra.main``: a download is not a run, and ``@hydra.main`` would
leave a run directory behind every call (``logs/train/runs/<time>/`` with its ``.hydra/`` and ``train.log``). The price
is Hydra's own command-line flags (``--help``, ``-m``, ``--cfg``), which a download has no use for.
"""

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig

from dnagpt.data.corpus import Corpus
from dnagpt.data.download import download_corpus
from dnagpt.utils.errors import ConfigError, error_boundary
from dnagpt.utils.resolvers import register_resolvers

CONF_DIR = Path(__file__).resolve().parent / "dnagpt" / "conf"

log = logging.getLogger("download")


def compose_config(overrides: Sequence[str], config_dir: str | Path = CONF_DIR) -> DictConfig:
    """The training config under ``overrides``, as ``train.py`` would see it, but composed without a run.

    A bad override is a ``ConfigError`` that names it and, for an unknown option of a config group, the ones there are.
    """
    register_resolvers()
    try:
        with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3"):
            return compose(config_name="train", overrides=list(overrides))
    except HydraException as err:  # Hydra's message, without its config search path, on one line
        message = str(err).split("\nAvailable options")[0].split("\nConfig search path")[0]
        options = getattr(err, "options", None)
        allowed = f"; available: {', '.join(options)}" if options else ""
        raise ConfigError(f"python download.py {' '.join(overrides)}: {' '.join(message.split())}{allowed}") from None


def main(argv: Sequence[str] | None = None, config_dir: str | Path = CONF_DIR) -> None:
    """Compose the training config with the command-line overrides and fetch its corpus."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    with error_boundary():  # a bad override, corpus, checksum or URL is one paragraph, as in train.py
        cfg = compose_config(sys.argv[1:] if argv is None else argv, config_dir)
        for name, digest in download_corpus(Corpus.from_config(cfg.corpus)).items():
            log.info("%s: %s", name, digest)


if __name__ == "__main__":
    main()
