"""Fetch the genome files of a corpus in a clone: ``python download.py corpus=multispecies [paths.data_dir=...]``, the
same command as ``dnagpt download`` of an installed package (dnagpt/commands/download.py)."""

from dnagpt.cli import run
from dnagpt.commands import compose_config  # the download's view of the config, for tests of documented commands

__all__ = ["compose_config"]

if __name__ == "__main__":
    run("download")
