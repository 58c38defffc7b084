"""Train DNAGPT in a clone: ``python train.py [overrides]``, the same command as ``dnagpt train`` of an installed package
(dnagpt/commands/train.py). See README.md for the cookbook and docs/sweeps.md for ``-m``."""

from dnagpt.cli import run

if __name__ == "__main__":
    run("train")
