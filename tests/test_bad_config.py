"""Wrong command lines fail at once, with one paragraph that names the key, the value and what is allowed.

``BAD_COMMAND_LINES`` is the one list (the README points here): the script, its overrides (``{tmp}`` is a fresh
directory) and a fragment the message must contain. Each runs in-process through ``make_cfg`` and ``pipeline.train`` /
``evaluate``, which must raise before anything is built; a few run as real ``python train.py`` / ``evaluate.py``
processes to check what a user sees: exit status 1, the paragraph on stderr, no traceback, within seconds.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import open_dict

from dnagpt.config_checks import ConfigError, check_config
from dnagpt.pipeline import evaluate, train

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
NO_CUDA = not torch.cuda.is_available()

# (script, overrides, a fragment of the message). Hydra's own errors (the first ones) come from composing the config.
BAD_COMMAND_LINES: list[tuple[str, list[str], str]] = [
    ("train", ["model=huge"], "Could not find 'model/huge'"),
    ("train", ["trainer.max_stepz=3"], "Could not override 'trainer.max_stepz'"),
    ("train", ["trainer.max_steps=abc"], "trainer.max_steps='abc' must be a whole number"),
    ("train", ["data.batch_size=2.5"], "data.batch_size=2.5 must be a whole number"),
    ("train", ["data.block_size=${model.blocksize}"], "Interpolation key 'model.blocksize' not found"),
    ("evaluate", [], "ckpt_path must be given"),
    ("train", ["init_from={tmp}/a.ckpt", "ckpt_path={tmp}/b.ckpt"], "choose one"),
    ("train", ["trainer=ddp_sim", "data.batch_size=5"], "5 is not divisible by 2 × 1 = 2"),
    ("train", ["data.batch_size=8", "trainer.accumulate_grad_batches=3"], "trainer.accumulate_grad_batches=3"),
    ("train", ["model=dnagpt_0.1b_m", "model.block_size=4096"], "has block_size=512, got 4096"),
    ("train", ["model=dnagpt_0.1b_m", "model.n_layer=6"], "has n_layer=12, got 6"),
    ("train", ["model=dnagpt_0.1b_h"], "needs the fixed 6-mer vocabulary"),
    ("train", ["model.n_head=3"], "n_embd (32) must be divisible by n_head (3)"),
    ("train", ["task=gsr", "data=pretrain"], "drop the data= override"),
    ("train", ["task=gsr", "model.block_size=32"], "more than the model's block_size 32"),
    ("train", ["task.optimizer.lr=-1e-3"], "task.optimizer.lr=-0.001 must be a number > 0"),
    ("train", ["task.optimizer.lr=0"], "task.optimizer.lr=0 must be a number > 0"),
    ("train", ["task.scheduler.warmup_steps=4"], "task.scheduler.warmup_steps=4 >= trainer.max_steps=4"),
    ("train", ["trainer.val_check_interval=10"], "validation would never run"),
    ("train", ["init_from={tmp}/missing.ckpt"], "init_from={tmp}/missing.ckpt does not exist"),
    ("train", ["ckpt_path={tmp}/missing.ckpt"], "ckpt_path={tmp}/missing.ckpt does not exist"),
    ("evaluate", ["ckpt_path={tmp}/missing.ckpt"], "ckpt_path={tmp}/missing.ckpt does not exist"),
    ("train", ["corpus=human", "paths.data_dir={tmp}"], "python -m dnagpt.data.download corpus=human"),
    ("train", ["task=gsr", "data.files.pas={tmp}/pas.tsv.gz"], "data.files.pas={tmp}/pas.tsv.gz is not a file"),
    ("train", ["trainer.precision=fp8"], "trainer.precision='fp8' is not a Lightning precision"),
    ("train", ["trainer.accelerator=tpu9"], "trainer.accelerator='tpu9' is not one of"),
    ("train", ["trainer.devices=0"], "trainer.devices=0 must be a count"),
    ("train", ["data.num_workers=-1"], "data.num_workers=-1 must be a whole number >= 0"),
    ("train", ["trainer=fsdp", "trainer.accelerator=cpu", "trainer.devices=2"], "FSDP runs on CUDA GPUs only"),
    pytest.param("train", ["trainer=ddp", "trainer.devices=2"], "no usable CUDA GPU",
                 marks=pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")),
    ("train", ["optimized_metric=val/losss"], "optimized_metric='val/losss' is not logged by PretrainTask (task=pretrain)"),
    ("train", ["task.monitor=val/acc"], "task.monitor='val/acc' is not logged by PretrainTask (task=pretrain)"),
]


def _ids(case) -> str:
    script, overrides, _ = case.values if hasattr(case, "values") else case
    return f"{script}:{' '.join(overrides) or '(nothing)'}"


def _fill(items: list[str], tmp: Path) -> list[str]:
    return [s.replace("{tmp}", str(tmp)) for s in items]


@pytest.mark.parametrize(("script", "overrides", "fragment"), BAD_COMMAND_LINES, ids=map(_ids, BAD_COMMAND_LINES))
def test_bad_command_line_fails_before_anything_is_built(make_cfg, tmp_path, script, overrides, fragment) -> None:
    overrides, fragment = _fill(overrides, tmp_path / "x"), _fill([fragment], tmp_path / "x")[0]
    start = time.perf_counter()
    with pytest.raises((ConfigError, HydraException)) as err:
        cfg = make_cfg(script, overrides)
        (train if script == "train" else evaluate)(cfg)
    assert fragment in str(err.value)
    if isinstance(err.value, ConfigError):
        assert "\n\n" not in str(err.value)  # one paragraph
    assert not (tmp_path / "checkpoints").exists()
    assert time.perf_counter() - start < 10


# what a user sees: a real process per command line (several seconds each: the slow suite runs most of them)
CLI_CASES = [
    ("train", ["model=huge"], "Could not find 'model/huge'"),
    ("train", ["trainer.max_stepz=3"], "Could not override 'trainer.max_stepz'"),
    ("evaluate", [], "ckpt_path must be given"),
    ("train", ["data.batch_size=8", "trainer.accumulate_grad_batches=3"], "not divisible by 1 × 3 = 3"),
    ("train", ["model=dnagpt_0.1b_m", "model.block_size=4096"], "has block_size=512, got 4096"),
    ("train", ["trainer=fsdp", "trainer.accelerator=cpu", "trainer.devices=2"], "FSDP runs on CUDA GPUs only"),
]


def _run_cli(script: str, overrides: list[str], tmp_path: Path) -> tuple[subprocess.CompletedProcess, float]:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}  # Hydra's short report, as users get it
    env |= {"OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(ROOT / f"{script}.py"), *overrides, f"hydra.run.dir={tmp_path}/run",
         f"paths.cache_dir={tmp_path}/cache"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    return proc, time.perf_counter() - start


@pytest.mark.parametrize(
    ("script", "overrides", "fragment"),
    [pytest.param(*c, marks=[] if i < 2 else [pytest.mark.slow]) for i, c in enumerate(CLI_CASES)],
    ids=map(_ids, CLI_CASES),
)
def test_cli_prints_one_paragraph_without_traceback(tmp_path, script, overrides, fragment) -> None:
    proc, seconds = _run_cli(script, overrides, tmp_path)
    assert proc.returncode != 0
    assert fragment in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert seconds < 30  # mostly interpreter and import start-up; the check itself takes milliseconds
    if not proc.stderr.startswith(("Could not", "In '")):  # ours, not Hydra's
        assert proc.stderr.startswith("Configuration error: ") and proc.stderr.count("\n") == 1, proc.stderr


def _compose_shipped(overrides: list[str]):
    """A config as a user gets it: none of the test suite's shortcuts."""
    GlobalHydra.instance().clear()
    with initialize(version_base="1.3", config_path="../conf"):
        cfg = compose("train", return_hydra_config=True, overrides=overrides)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = "unused"
    HydraConfig().set_config(cfg)
    return cfg


# on CPU; the pre-training experiments on the bundled corpus (theirs is downloaded first)
SHIPPED = [
    ["task=pretrain"], ["task=gsr"], ["task=expression"], ["task=genomes"],
    *([f"debug={p.stem}"] for p in sorted((CONF / "debug").glob("*.yaml"))),
    ["trainer=cpu"], ["trainer=ddp_sim"], ["trainer=ddp_sim", "data.batch_size=8", "trainer.accumulate_grad_batches=2"],
    *([f"experiment={p.stem}", "trainer=cpu", *(["corpus=bundled"] if p.stem.startswith("pretrain") else [])]
      for p in sorted((CONF / "experiment").glob("*.yaml"))),
]


@pytest.mark.parametrize("overrides", SHIPPED, ids=" ".join)
def test_shipped_configs_pass(overrides: list[str]) -> None:
    try:
        check_config(_compose_shipped(overrides))
    finally:
        GlobalHydra.instance().clear()
