"""Wrong command lines fail at once, with one paragraph that names the key, the value and what is allowed.

``BAD_COMMAND_LINES`` is the one list (the README points here): the script, its overrides (``{tmp}`` is a fresh
directory) and a fragment the message must contain. Each runs in-process through ``make_cfg`` and ``pipeline.train`` /
``evaluate``, which must raise before anything is built; a few run as real ``python train.py`` / ``evaluate.py``
processes to check what a user sees: exit status 1, the paragraph on stderr, no traceback, within seconds.
"""

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import open_dict

from dnagpt.config_checks import ConfigError, check_config
from dnagpt.model import GPTConfig
from dnagpt.pipeline import build_parts, evaluate, train
from dnagpt.tasks.pretrain import PretrainTask
from dnagpt.tokenizer import KmerTokenizer
from dnagpt.utils.errors import CheckpointError

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "dnagpt" / "conf"
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
    ("train", ["corpus=human", "paths.data_dir={tmp}"], "python download.py corpus=human"),
    ("train", ["task=gsr", "data.files.pas={tmp}/pas.tsv.gz"], "data=gsr: files.pas={tmp}/pas.tsv.gz is not a file"),
    ("train", ["trainer.precision=fp8"], "trainer.precision='fp8' is not a Lightning precision"),
    ("train", ["trainer.accelerator=tpu9"], "trainer.accelerator='tpu9' is not one of"),
    ("train", ["trainer.devices=0"], "trainer.devices=0 must be a count"),
    ("train", ["data.num_workers=-1"], "data.num_workers=-1 must be a whole number >= 0"),
    ("train", ["trainer=fsdp", "trainer.accelerator=cpu", "trainer.devices=2"], "FSDP runs on CUDA GPUs only"),
    pytest.param("train", ["trainer=ddp", "trainer.devices=2"], "no usable CUDA GPU",
                 marks=pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")),
    ("train", ["optimized_metric=val/losss"], "optimized_metric='val/losss' is not logged by PretrainTask (task=pretrain)"),
    ("train", ["task.monitor=val/acc"], "task.monitor='val/acc' is not logged by PretrainTask (task=pretrain)"),
    # accepted silently before (a negative clip value reversed every gradient) or refused deep inside a library
    ("train", ["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val=-1 must be a number >= 0"),
    ("train", ["+trainer.gradient_clip_algorithm=max"], "trainer.gradient_clip_algorithm='max' must be norm, value"),
    ("train", ["task.nonfinite_loss=ignore"], "task=pretrain: task.nonfinite_loss='ignore' must be one of stop, skip"),
    ("train", ["task.mode=maximize"], "task.mode='maximize' must be min or max"),
    ("train", ["task.optimizer.weight_decay=-0.1"], "task.optimizer.weight_decay=-0.1 must be a number >= 0"),
    ("train", ["task.optimizer.betas=[0.9]"], "task.optimizer.betas=[0.9] must be two numbers in [0, 1)"),
    ("train", ["task.optimizer.betas=[0.9,1.5]"], "task.optimizer.betas=[0.9, 1.5] must be two numbers in [0, 1)"),
    ("train", ["trainer.val_check_interval=0.5"], "trainer.val_check_interval=0.5 is a fraction of an epoch, but this run"),
    ("train", ["trainer.val_check_interval=-2"], "trainer.val_check_interval=-2 must be a whole number of training"),
    ("train", ["+trainer.max_step=3"], "unexpected keyword argument 'max_step' (did you mean trainer.max_steps"),
    ("train", ["trainer.devices=two"], "trainer.devices='two' must be a count >= 1"),
    ("train", ["trainer.devices=[]"], "trainer.devices=[] must be a count >= 1"),
    ("train", ["model.dropout=1.5"], "model=tiny with tokenizer=kmer6: "),
    ("train", ["data.reverse_prob=2"], "data=pretrain: "),
    ("train", ["callbacks.preemption.signals=[SIGFOO]"], "callbacks.preemption: callbacks.preemption.signals: unknown"),
    ("train", ["corpus.species.human.fasta={tmp}/typo.fa"], "corpus.species.human.fasta={tmp}/typo.fa does not exist"),
    ("evaluate", ["ckpt_path={tmp}"], "ckpt_path={tmp} does not exist"),
]


def _ids(case) -> str:
    script, overrides, _ = case.values if hasattr(case, "values") else case
    return f"{script}:{' '.join(overrides) or '(nothing)'}"


def _fill(items: list[str], tmp: Path) -> list[str]:
    return [s.replace("{tmp}", str(tmp)) for s in items]


@pytest.mark.parametrize(("script", "overrides", "fragment"), BAD_COMMAND_LINES, ids=map(_ids, BAD_COMMAND_LINES))
def test_bad_command_line_fails_before_anything_is_built(make_cfg, tmp_path, script, overrides, fragment) -> None:
    overrides, fragment = _fill(overrides, tmp_path / "x"), _fill([fragment], tmp_path / "x")[0]
    with pytest.raises((ConfigError, HydraException)) as err:
        cfg = make_cfg(script, overrides)
        (train if script == "train" else evaluate)(cfg)
    assert fragment in str(err.value)
    if isinstance(err.value, ConfigError):
        assert "\n\n" not in str(err.value)  # one paragraph
    assert not list(tmp_path.iterdir())  # no logger, checkpoint or metrics file: refused before the run began


def test_a_taken_master_port_is_refused_before_the_ranks_start(make_cfg, tmp_path, monkeypatch) -> None:
    """Rank 0 could not listen and the rank it had started would wait for it for ever."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        monkeypatch.setenv("MASTER_PORT", str(port))
        cfg = make_cfg("train", ["trainer=ddp_sim", "trainer.strategy=ddp"])
        with pytest.raises(ConfigError, match=f"MASTER_PORT={port} \\(environment\\) is already in use"):
            train(cfg)
        assert not list(tmp_path.iterdir())
        check_config(make_cfg("train", ["trainer=cpu"]))  # one process: no rendezvous
        monkeypatch.setenv("LOCAL_RANK", "1")
        check_config(cfg)  # a rank Lightning (or torchrun) started: the port is its launcher's
    monkeypatch.delenv("LOCAL_RANK")
    check_config(cfg)  # free again


# what a user sees: a real process per command line (several seconds each: the slow suite runs most of them)
CLI_CASES = [
    ("train", ["model=huge"], "Could not find 'model/huge'"),
    ("train", ["trainer.max_stepz=3"], "Could not override 'trainer.max_stepz'"),
    ("evaluate", [], "ckpt_path must be given"),
    ("train", ["data.batch_size=8", "trainer.accumulate_grad_batches=3"], "not divisible by 1 × 3 = 3"),
    ("train", ["model=dnagpt_0.1b_m", "model.block_size=4096"], "has block_size=512, got 4096"),
    ("train", ["trainer=fsdp", "trainer.accelerator=cpu", "trainer.devices=2"], "FSDP runs on CUDA GPUs only"),
]


def _run_cli(
    script: str, overrides: list[str], tmp_path: Path, **env_extra: str
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}  # Hydra's short report, as users get it
    env |= {"OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", **env_extra}
    return subprocess.run(
        [sys.executable, str(ROOT / f"{script}.py"), *overrides, f"hydra.run.dir={tmp_path}/run",
         f"paths.cache_dir={tmp_path}/cache"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )


@pytest.mark.parametrize(
    ("script", "overrides", "fragment"),
    [pytest.param(*c, marks=[] if i < 2 else [pytest.mark.slow]) for i, c in enumerate(CLI_CASES)],
    ids=map(_ids, CLI_CASES),
)
def test_cli_prints_one_paragraph_without_traceback(tmp_path, script, overrides, fragment) -> None:
    proc = _run_cli(script, overrides, tmp_path)
    assert proc.returncode != 0
    assert fragment in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run" / "checkpoints").exists()  # refused up front
    if not proc.stderr.startswith(("Could not", "In '")):  # ours, not Hydra's
        assert proc.stderr.startswith("Configuration error: ") and proc.stderr.count("\n") == 1, proc.stderr


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


NUL_FASTA = b">r1 x\nACGT\nAC\x00GT\n"
QUICK = ["trainer.max_steps=2", "task.scheduler.warmup_steps=0", "trainer.val_check_interval=1", "data.num_workers=0"]
# bad input found while the run reads it (after Lightning's start-up lines): the same one paragraph as its last line
BAD_INPUT_RUNS = [  # (overrides given the run's tmp dir, how the last line starts, a fragment of it)
    (lambda t: [f"corpus.species.human.fasta={_write(t / 'nul.fa', NUL_FASTA)}", *QUICK],
     "Input error: ", "nul.fa, line 3: control byte 0x00"),
    (lambda t: [f"init_from={ROOT / 'README.md'}"], "Checkpoint error: ", "README.md: truncated or not a checkpoint"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("make", "label", "fragment"), BAD_INPUT_RUNS, ids=[f for _, _, f in BAD_INPUT_RUNS])
def test_bad_input_ends_the_run_with_one_paragraph(tmp_path, make, label, fragment) -> None:
    proc = _run_cli("train", make(tmp_path), tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(label) and fragment in last, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.slow  # a real run / a fresh interpreter: seconds
def test_hydra_full_error_shows_the_traceback_of_our_errors(tmp_path) -> None:
    proc = _run_cli("train", [f"init_from={ROOT / 'README.md'}"], tmp_path, HYDRA_FULL_ERROR="1")
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "CheckpointError: init_from=" in proc.stderr


def _compose_shipped(overrides: list[str]):
    """A config as a user gets it: none of the test suite's shortcuts."""
    GlobalHydra.instance().clear()
    with initialize(version_base="1.3", config_path="../dnagpt/conf"):
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
        cfg = _compose_shipped(overrides)
        check_config(cfg)
        build_parts(cfg)  # every component builds (what the pipeline builds before allocating the network)
    finally:
        GlobalHydra.instance().clear()


# ---- checkpoints named by ckpt_path= / init_from=: read once, refused in one paragraph before anything is built -------
def _checkpoint_of(tokenizer: KmerTokenizer, path: Path, release: bool = False) -> Path:
    """A Lightning checkpoint of ours (or a released-style .pth) of the small test model with ``tokenizer``."""
    model_cfg = GPTConfig.from_name("tiny", vocab_size=len(tokenizer), block_size=64, n_layer=2, n_head=2, n_embd=32)
    task = PretrainTask(model_cfg, tokenizer.to_dict())
    if release:
        torch.save(task.model.state_dict(), path)
        return path
    ckpt = {"state_dict": {f"model.{k}": v for k, v in task.model.state_dict().items()}, "global_step": 3}
    task.on_save_checkpoint(ckpt)
    torch.save(ckpt, path)
    return path


BAD_CHECKPOINTS = [  # (key, how the file is made, a fragment of the message)
    ("init_from", lambda p: _checkpoint_of(KmerTokenizer("fixed"), p), "was trained with tokenizer"),
    ("ckpt_path", lambda p: _checkpoint_of(KmerTokenizer("fixed"), p), "was trained with tokenizer"),
    ("init_from", lambda p: _checkpoint_of(KmerTokenizer("fixed"), p, release=True), "the fixed 6-mer vocabulary"),
    ("ckpt_path", lambda p: _checkpoint_of(KmerTokenizer(), p, release=True), "not a checkpoint of this project"),
    ("init_from", lambda p: Path(shutil.copy(ROOT / "README.md", p)), "truncated or not a checkpoint"),
    ("ckpt_path", lambda p: p.write_bytes(b"") and p or p, "truncated or not a checkpoint"),
    ("init_from", lambda p: (torch.save([1, 2], p), p)[1], "not a checkpoint (the file holds a list"),
]


@pytest.mark.parametrize(("key", "make", "fragment"), BAD_CHECKPOINTS,
                         ids=[f"{k}-{f[:24]}" for k, _, f in BAD_CHECKPOINTS])  # fmt: skip
def test_bad_checkpoint_is_one_paragraph_naming_the_key(make_cfg, tmp_path, key, make, fragment) -> None:
    path = make(tmp_path / "given.ckpt")
    with pytest.raises(CheckpointError) as err:
        train(make_cfg("train", [f"{key}={path}"]))
    assert str(err.value).startswith(f"{key}={path}") and fragment in str(err.value), str(err.value)
    assert "\n\n" not in str(err.value)
    assert not (tmp_path / "checkpoints").exists()


def test_evaluate_reads_the_checkpoint_once(make_cfg, tmp_path, monkeypatch) -> None:
    path = _checkpoint_of(KmerTokenizer(), tmp_path / "given.ckpt")
    reads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: reads.append(a[0]) or real_load(*a, **k))
    metrics = evaluate(make_cfg("evaluate", [f"ckpt_path={path}"]))
    assert "test/loss" in metrics
    assert reads == [path]
