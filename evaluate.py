"""Evaluate a DNAGPT checkpoint in a clone: ``python evaluate.py ckpt_path=<ckpt> [overrides]``, the same command as
``dnagpt evaluate`` of an installed package (dnagpt/commands/evaluate.py)."""

from dnagpt.cli import run

if __name__ == "__main__":
    run("evaluate")
