"""Nothing lost: SIGKILL and SIGTERM mid-run resume exactly, saves are atomic, corrupt checkpoints are skipped or refused,
and a non-finite loss stops or skips by policy (docs/fault_tolerance.md).

The kill and preemption tests run ``python train.py`` as a real subprocess, watch the ``metrics.csv`` it writes to pick
their moment, and resume in-process with ``ckpt_path=auto``; one uninterrupted run of the same config is the reference.
The config has dropout on, so the RNG stream is part of what must resume exactly.
"""

import contextlib
import csv
import itertools
import json
import logging
import math
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import FAST, ROOT, SMALL_MODEL, compose_cfg
from hydra.utils import instantiate
from lightning.pytorch import Callback
from omegaconf import OmegaConf, open_dict
from torch.utils.data import DistributedSampler

from dnagpt.checkpointing import AtomicCheckpointIO, atomic_path, read_checkpoint, resolve_checkpoint
from dnagpt.pipeline import get_metric_value, train
from dnagpt.utils.errors import CheckpointError, ConfigError

MAX_STEPS = 10
# checkpoints at every step from the first validation on (Lightning defers them until the monitored metric exists;
# on a validation step, until after it), validation every 2 steps (FAST)
RUN = [
    f"trainer.max_steps={MAX_STEPS}", "test=false", "model.dropout=0.1", "callbacks.model_checkpoint.every_n_train_steps=1",
    "extras.torch_threads=1",
]  # fmt: skip
ENV = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "tests")}


# ---- helpers ---------------------------------------------------------------------------------------------------------
def start_run(run_dir: Path, cache_dir: Path, *extra: str) -> subprocess.Popen:
    """``python train.py`` with the test config (conftest's FAST and SMALL_MODEL, then RUN) writing into ``run_dir``."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "train.py", *FAST, *SMALL_MODEL, *RUN, *extra,
           f"hydra.run.dir={run_dir}", f"paths.cache_dir={cache_dir}"]  # fmt: skip
    with open(run_dir.with_suffix(".log"), "wb") as out:  # own process group: a kill reaches every DDP rank
        return subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def run_log(run_dir: Path) -> str:
    return run_dir.with_suffix(".log").read_text(errors="replace")


def logged_steps(run_dir: Path) -> list[int]:
    """Steps with a row in the run's metrics.csv (read while the run rewrites it: a cut last line still names its step)."""
    try:
        lines = (run_dir / "csv" / "metrics.csv").read_text().splitlines()[1:]
    except FileNotFoundError:
        return []
    return [int(head) for head in (line.split(",", 1)[0] for line in lines) if head.isdigit()]


def reached(proc: subprocess.Popen, run_dir: Path, step: int) -> bool:
    if proc.poll() is not None:
        tail = run_log(run_dir)[-3000:]
        raise AssertionError(f"{run_dir.name} ended (status {proc.returncode}) before step {step}:\n{tail}")
    return max(logged_steps(run_dir), default=-1) >= step


def resume(run_dir: Path, cache_dir: Path, *extra: str) -> None:
    train(compose_cfg("train", [*RUN, *extra, "ckpt_path=auto"], run_dir, cache_dir))


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def assert_same(got, want, where: str) -> None:
    """Exact equality of nested checkpoint entries (tensors bit for bit)."""
    if isinstance(want, torch.Tensor):
        assert torch.equal(got, want), where
    elif isinstance(want, dict):
        assert got.keys() == want.keys(), where
        for key in want:
            assert_same(got[key], want[key], f"{where}/{key}")
    elif isinstance(want, list | tuple):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same(g, w, f"{where}[{i}]")
    else:
        assert got == want, where


def assert_same_run(run_dir: Path, reference: Path) -> None:
    """The run's final checkpoint and metrics log equal the reference's: weights, AdamW moments, schedule, data cursor,
    callback states (ModelCheckpoint's hold paths, which differ) and every logged value, each step once."""
    got, want = load(run_dir / "checkpoints" / "last.ckpt"), load(reference / "checkpoints" / "last.ckpt")
    assert got["global_step"] == want["global_step"] == MAX_STEPS
    datamodule = [k for k in want if k.endswith("DataModule")]  # the data cursor (pre-training) or sampler position
    assert len(datamodule) == 1, list(want)
    for key in ("state_dict", "optimizer_states", "lr_schedulers", *datamodule, "loops", "callback_metrics"):
        assert_same(got[key], want[key], key)
    callbacks = [k for k in want["callbacks"] if not k.startswith("ModelCheckpoint")]
    assert_same({k: got["callbacks"][k] for k in callbacks}, {k: want["callbacks"][k] for k in callbacks}, "callbacks")
    got_rows, want_rows = (metric_rows(d) for d in (run_dir, reference))
    assert [r["step"] for r in got_rows] == list(range(MAX_STEPS))
    assert got_rows == want_rows


def metric_rows(run_dir: Path) -> list[dict[str, float | None]]:
    """metrics.csv as numbers (the resumable logger writes back the rows it read as floats: 0 becomes 0.0)."""
    with open(run_dir / "csv" / "metrics.csv", newline="") as fh:
        return [{k: float(v) if v else None for k, v in row.items()} for row in csv.DictReader(fh)]


@pytest.fixture(scope="module")
def reference(uninterrupted) -> Path:
    """One uninterrupted run of RUN, shared by the kill and preemption tests."""
    return uninterrupted()


# ---- 1. SIGKILL at random steps ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sigkill_at_random_steps_then_auto_resume_is_exact(reference: Path, tmp_path: Path, cache_dir: Path) -> None:
    rng = random.Random(20261125)  # after an odd row a validation runs: two kills in a training step, one in a validation
    kill_after = sorted([*rng.sample(range(2, MAX_STEPS - 1, 2), 2), rng.choice(range(3, MAX_STEPS - 1, 2))])
    runs = {step: tmp_path / f"killed_after_{step}" for step in kill_after}
    procs = {step: start_run(run_dir, cache_dir) for step, run_dir in runs.items()}  # side by side: one startup's time
    waiting, deadline = set(procs), time.monotonic() + 180
    try:
        while waiting and time.monotonic() < deadline:
            for step in [s for s in waiting if reached(procs[s], runs[s], s)]:
                procs[step].send_signal(signal.SIGKILL)  # right after the row of `step` is written
                waiting.discard(step)
            time.sleep(0.005)
    finally:
        for proc in procs.values():
            if proc.poll() is None and waiting:
                proc.kill()
    assert not waiting, f"runs {sorted(waiting)} did not reach their step in time"
    for step, run_dir in runs.items():
        assert procs[step].wait(timeout=60) == -signal.SIGKILL
        saved = read_checkpoint(run_dir / "checkpoints" / "last.ckpt", resumable=True).global_step
        # killed mid-run; after row `step`, the checkpoint of step + 1 waits for its validation when one follows
        assert step <= saved < MAX_STEPS, (step, saved)
        resume(run_dir, cache_dir)
        assert_same_run(run_dir, reference)


# ---- 5. SIGTERM (preemption) ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sigterm_saves_at_the_batch_end_exits_cleanly_and_resumes_exactly(
    reference: Path, tmp_path: Path, cache_dir: Path
) -> None:
    run_dir = tmp_path / "preempted"
    # no periodic checkpoint before the end: a last.ckpt at the step reached can only come from the preemption callback
    every = f"callbacks.model_checkpoint.every_n_train_steps={MAX_STEPS}"
    proc = start_run(run_dir, cache_dir, "test=true", every)
    deadline = time.monotonic() + 120
    while not reached(proc, run_dir, 2) and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)  # most likely during step 4, which a validation follows: saved after it
    assert proc.wait(timeout=60) == 0, run_log(run_dir)[-3000:]
    found = re.search(r"SIGTERM: saved \S+last\.ckpt; preempted at step (\d+); resume with ckpt_path=auto", run_log(run_dir))
    assert found, run_log(run_dir)[-3000:]
    step = int(found[1])
    assert 2 < step < MAX_STEPS
    assert read_checkpoint(run_dir / "checkpoints" / "last.ckpt", resumable=True).global_step == step
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["preempted_at_step"] == step
    assert not [k for k in metrics if k.startswith("test/")]  # the test split waits for the finished run
    assert not list((run_dir / "checkpoints").glob(".*.partial"))
    resume(run_dir, cache_dir, every)
    assert_same_run(run_dir, reference)


def test_running_best_survives_a_resume(make_cfg, tmp_path: Path) -> None:
    """val/loss_best is a torchmetrics state, which Lightning does not checkpoint: ExactResume does. The resumed run
    weighs the GC loss 1000 times more, so its validation loss is worse than every earlier one and must not become best."""
    before = train(make_cfg("train", ["test=false"]))  # 4 steps, validations at 2 and 4
    after = train(make_cfg("train", ["test=false", "trainer.max_steps=6", "task.reg_loss_weight=10", "ckpt_path=auto"]))
    assert after["val/loss"] > before["val/loss_best"]
    assert after["val/loss_best"] == pytest.approx(before["val/loss_best"], rel=0, abs=0)


class SignalAt(Callback):
    """Sends ``signum`` to this very process (under DDP: each rank to itself) at the start of the batch that makes step
    ``step``, or of the batch with index ``batch`` (a later micro-batch of that step under gradient accumulation)."""

    def __init__(self, step: int, signum: int, batch: int | None = None) -> None:
        self.step, self.signum, self.batch = step, signum, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step and self.batch in (None, batch_idx):
            os.kill(os.getpid(), self.signum)


def test_sigusr1_checkpoints_then_calls_the_previous_handler_and_skips_test(make_cfg, tmp_path: Path) -> None:
    last = tmp_path / "checkpoints" / "last.ckpt"
    calls = []

    def own_handler(signum: int, frame) -> None:
        calls.append((signum, read_checkpoint(last, resumable=True).global_step))

    previous = signal.signal(signal.SIGUSR1, own_handler)
    try:
        cfg = make_cfg("train", ["trainer.max_steps=6", "test=true"])
        with open_dict(cfg):
            cfg.callbacks.signal_at = {"_target_": f"{__name__}.SignalAt", "step": 2, "signum": int(signal.SIGUSR1)}
        metrics = train(cfg)
        assert signal.getsignal(signal.SIGUSR1) is own_handler  # put back when training ended
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert calls == [(signal.SIGUSR1, 3)]  # once, after last.ckpt of the step reached was written
    assert metrics["preempted_at_step"] == 3 and not [k for k in metrics if k.startswith("test/")]
    assert get_metric_value(metrics, "val/loss") is None  # a sweep gets no value from an unfinished run


def test_unknown_preemption_signal_is_a_clear_error(make_cfg) -> None:
    cfg = make_cfg("train", ["callbacks.preemption.signals=[SIGTERM,SIGUSR3]"])
    with pytest.raises(Exception, match="SIGUSR3"):
        instantiate(cfg.callbacks.preemption)


# ---- 2. atomic writes ---------------------------------------------------------------------------------------------------
class KillsWhenPickled:
    """Ends the process with SIGKILL while torch.save is writing it (no cleanup can run, as with a real kill)."""

    def __reduce__(self):
        os.kill(os.getpid(), signal.SIGKILL)


class FailsWhenPickled:
    def __reduce__(self):
        raise OSError("disk full (injected)")


def test_failed_save_keeps_the_previous_checkpoint_and_leaves_no_temp(tmp_path: Path) -> None:
    io, path = AtomicCheckpointIO(), tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"w": torch.arange(4.0)}, path)
    with pytest.raises(OSError, match="injected"):
        io.save_checkpoint({"w": torch.zeros(4), "x": FailsWhenPickled()}, path)
    assert torch.equal(load(path)["w"], torch.arange(4.0))
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]


def test_kill_during_save_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    io, path = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"w": torch.arange(4.0)}, path)
    pid = os.fork()
    if pid == 0:  # the child dies in the middle of writing the next checkpoint
        try:
            io.save_checkpoint({"w": torch.zeros(1 << 20), "x": KillsWhenPickled()}, path)
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert torch.equal(load(path)["w"], torch.arange(4.0))  # the previous checkpoint, whole
    assert (tmp_path / ".last.ckpt.partial").exists()  # the kill did land mid-save
    io.save_checkpoint({"w": torch.ones(4)}, path)  # the next save replaces the leftover
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_atomic_path_renames_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "metrics.csv"
    with atomic_path(target) as partial:
        partial.write_text("step\n0\n")
    with pytest.raises(RuntimeError), atomic_path(target) as partial:
        partial.write_text("step\n")
        raise RuntimeError
    assert target.read_text() == "step\n0\n" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]


TRAINERS = sorted(p.stem for p in (ROOT / "dnagpt" / "conf" / "trainer").glob("*.yaml"))


@pytest.mark.parametrize("name", TRAINERS)
def test_every_trainer_config_saves_atomically(make_cfg, name: str) -> None:
    cfg = make_cfg("train", [f"trainer={name}"])
    assert [p._target_ for p in cfg.trainer.plugins] == ["dnagpt.checkpointing.AtomicCheckpointIO"]
    if "FSDP" in OmegaConf.select(cfg, "trainer.strategy._target_", default=""):
        return  # Lightning builds FSDP only on CUDA; with state_dict_type=full rank 0 saves through checkpoint_io
    trainer = instantiate(cfg.trainer, accelerator="cpu", logger=False)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


# ---- 3. corrupt checkpoints -------------------------------------------------------------------------------------------
def fake_checkpoint(path: Path, step: int) -> Path:
    """The entries a resume asks of a Lightning checkpoint of ours (read_checkpoint), saved by torch as Lightning does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"model.w": torch.full((256,), float(step))}, "global_step": step, "dnagpt": {}}, path)
    return path


def test_auto_falls_back_from_a_truncated_last_ckpt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ckpts = tmp_path / "checkpoints"
    fake_checkpoint(ckpts / "step0000004.ckpt", 4)
    fake_checkpoint(ckpts / "step0000006.ckpt", 6)
    (ckpts / "step0000009.ckpt").write_bytes(b"")  # empty: skipped
    last = fake_checkpoint(ckpts / "last.ckpt", 8)
    assert resolve_checkpoint("auto", tmp_path).path == last
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    assert resolve_checkpoint("auto", tmp_path).path == ckpts / "step0000006.ckpt"
    assert f"{last}: truncated or not a checkpoint" in caplog.text
    assert "step0000009.ckpt: truncated or not a checkpoint" in caplog.text


def test_auto_without_any_sound_checkpoint_starts_fresh(tmp_path: Path) -> None:
    assert resolve_checkpoint("auto", tmp_path) is None
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"PK\x03\x04 cut short")
    assert resolve_checkpoint("auto", tmp_path) is None


def test_explicit_corrupt_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"\x00not a checkpoint" * 256)
    with pytest.raises(ConfigError, match=rf"^ckpt_path={re.escape(str(garbage))}: truncated or not a checkpoint \("):
        resolve_checkpoint(str(garbage), tmp_path)
    weights = tmp_path / "weights.pth"
    torch.save({"w": torch.ones(2)}, weights)
    with pytest.raises(ConfigError, match="not a checkpoint of this project"):
        resolve_checkpoint(str(weights), tmp_path)  # resuming needs the full training state
    assert resolve_checkpoint(str(weights), tmp_path, resumable=False).path == weights  # evaluating takes weights
    with pytest.raises(CheckpointError, match="is a directory"):
        read_checkpoint(tmp_path, resumable=True)


# ---- 4. non-finite losses -----------------------------------------------------------------------------------------------
class NaNAt(Callback):
    """Turns the output of ``module`` (a dotted path in the task's DNAGPT) into NaN for the training batches of the
    given steps, on one rank or all: a non-finite value reaching the loss through the real forward pass."""

    def __init__(self, steps: list[int], module: str = "regression_head", rank: int | None = None) -> None:
        self.steps, self.module, self.rank = set(steps), module, rank
        self.hook = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step in self.steps and self.rank in (None, trainer.global_rank):
            module = pl_module.model.get_submodule(self.module)
            self.hook = module.register_forward_hook(lambda mod, args, out: out * float("nan"))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.hook is not None:
            self.hook.remove()
            self.hook = None


def with_nan(cfg, **kwargs):
    with open_dict(cfg):
        cfg.callbacks.nan = {"_target_": f"{__name__}.NaNAt", **kwargs}
    return cfg


def test_nonfinite_loss_stop_names_split_part_and_step(make_cfg) -> None:
    cfg = with_nan(make_cfg("train", ["trainer.max_steps=3", "test=false"]), steps=[1])
    with pytest.raises(FloatingPointError, match=r"^train/gc_loss is nan, train/loss is nan at step 1 \(batch 1\)"):
        train(cfg)


def test_nonfinite_loss_skip_drops_the_batch_and_counts_it(make_cfg, tmp_path: Path) -> None:
    cfg = with_nan(make_cfg("train", ["task.nonfinite_loss=skip", "test=false"]), steps=[1])
    metrics = train(cfg)
    assert metrics["train/skipped_batches"] == 1
    ckpt = load(tmp_path / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 4 and ckpt["dnagpt"]["skipped_batches"] == 1
    assert all(torch.isfinite(w).all() for w in ckpt["state_dict"].values())
    adam_steps = {float(s["step"]) for s in ckpt["optimizer_states"][0]["state"].values()}
    assert adam_steps == {3.0}  # four batches, three optimizer updates: the NaN batch made none
    rows = metric_rows(tmp_path)
    assert [r["train/skipped_batches"] for r in rows] == [None, 1, 1, 1]  # cumulative from the skipped step
    assert math.isnan(rows[1]["train/gc_loss"]) and math.isnan(rows[1]["train/loss"])  # that step's own values
    assert all(math.isfinite(rows[i]["train/loss"]) for i in (0, 2, 3))


@pytest.mark.parametrize(("task", "block_size"), [("gsr", 128), ("expression", 512), ("genomes", 256)])
def test_every_task_applies_the_nonfinite_policy(make_cfg, task: str, block_size: int) -> None:
    cfg = make_cfg("train", [f"task={task}", f"model.block_size={block_size}", "trainer.max_steps=2", "test=false"])
    cfg = with_nan(cfg, steps=[1], module="transformer.ln_f")
    with pytest.raises(FloatingPointError, match=r"^train/loss is nan at step 1 \(batch 1\)"):
        train(cfg)


def test_unknown_nonfinite_policy_is_refused(make_cfg) -> None:
    cfg = make_cfg("train", ["task.nonfinite_loss=ignore"])
    tokenizer = instantiate(cfg.tokenizer)
    model_cfg = instantiate(cfg.model, vocab_size=len(tokenizer))
    with pytest.raises(Exception, match="task.nonfinite_loss='ignore' must be one of stop, skip"):
        instantiate(cfg.task, model_cfg=model_cfg, tokenizer_spec=tokenizer.to_dict())


@pytest.mark.slow
def test_skip_under_ddp_every_rank_drops_the_batch(tmp_path: Path, cache_dir: Path) -> None:
    """NaN on rank 1 only: rank 0 must drop the same batch, or its gradient all-reduce would wait for rank 1 forever."""
    run_dir = tmp_path / "ddp"
    proc = start_run(
        run_dir, cache_dir, "trainer=ddp_sim", "data.batch_size=8", "trainer.max_steps=4", "task.nonfinite_loss=skip",
        "+callbacks.nan._target_=test_fault_tolerance.NaNAt", "+callbacks.nan.steps=[1]", "+callbacks.nan.rank=1",
    )  # fmt: skip
    try:
        assert proc.wait(timeout=150) == 0, run_log(run_dir)[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "a loss is not finite on another rank at step 1 (batch 1): batch dropped" in run_log(run_dir)  # rank 0
    ckpt = load(run_dir / "checkpoints" / "last.ckpt")
    assert {float(s["step"]) for s in ckpt["optimizer_states"][0]["state"].values()} == {3.0}
    assert all(torch.isfinite(w).all() for w in ckpt["state_dict"].values())


# ---- 6. exact resume wherever the README claims it: DDP, accumulation, the fine-tuning tasks, a truncated last.ckpt ----
# a block size that fits each task's prompts; regression reads 10.5 kb rows in 4 windows at 512 positions, so the two
# validation batches of four hold two rows, enough for R²
TASKS = {"gsr": 128, "expression": 512, "genomes": 256, "classification": 128, "regression": 512}
SHORT_EPOCHS = "+trainer.limit_train_batches=3"  # ten steps cross three epoch ends, and a kill at step 5 lands mid-epoch
DDP = ["trainer=ddp_sim", "data.batch_size=8"]  # two ranks of four
ACCUMULATE = ["trainer.accumulate_grad_batches=2", "trainer.val_check_interval=4"]  # still a validation every 2 steps


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path):
    """``uninterrupted(*extra)``: the directory of one uninterrupted run of RUN + ``extra``, trained once per module."""
    runs: dict[tuple[str, ...], Path] = {}

    def run(*extra: str) -> Path:
        if extra not in runs:
            runs[extra] = tmp_path_factory.mktemp("uninterrupted")
            train(compose_cfg("train", [*RUN, *extra], runs[extra], cache_dir))
        return runs[extra]

    return run


def sigkill_at(step: int, batch: int | None = None) -> list[str]:
    """Overrides that make ``python train.py`` SIGKILL itself, every rank, at the start of the batch that makes step
    ``step`` (or of batch ``batch`` of that step): the kill lands at a place chosen in advance."""
    kill = [f"+callbacks.kill._target_={__name__}.SignalAt", f"+callbacks.kill.step={step}",
            f"+callbacks.kill.signum={int(signal.SIGKILL)}"]  # fmt: skip
    return kill if batch is None else [*kill, f"+callbacks.kill.batch={batch}"]


def killed_and_resumed(
    run_dir: Path, cache_dir: Path, uninterrupted, caplog: pytest.LogCaptureFixture, step: int, *extra: str,
    batch: int | None = None,
) -> dict:  # fmt: skip
    """A run of RUN + ``extra`` killed by :func:`sigkill_at`, resumed with ckpt_path=auto from its checkpoint of
    ``step``, then compared with the uninterrupted run (trained meanwhile: the killed run is a subprocess). Returns the
    checkpoint the resume started from."""
    proc = start_run(run_dir, cache_dir, *extra, *sigkill_at(step, batch))
    try:
        reference = uninterrupted(*extra)
        status = proc.wait(timeout=240)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # a rank left behind, if any
    # one process: killed by the signal; DDP: the launcher reports its ranks killed and fails
    assert status == -signal.SIGKILL or "terminated with signal SIGKILL" in run_log(run_dir), run_log(run_dir)[-3000:]
    last = run_dir / "checkpoints" / "last.ckpt"
    resumed_from = load(last)
    caplog.set_level(logging.INFO, "dnagpt.checkpointing")
    resume(run_dir, cache_dir, *extra)
    assert f"ckpt_path=auto: resuming from {last} (step {step})" in caplog.text  # not a fresh start, equal too
    assert_same_run(run_dir, reference)
    return resumed_from


@pytest.mark.slow
def test_sigkill_of_both_ddp_ranks_resumes_exactly(tmp_path: Path, cache_dir: Path, uninterrupted, caplog) -> None:
    resumed_from = killed_and_resumed(tmp_path, cache_dir, uninterrupted, caplog, 5, *DDP)
    assert resumed_from["PretrainDataModule"]["world_size"] == 2


@pytest.mark.slow
def test_sigkill_between_micro_batches_resumes_exactly(tmp_path: Path, cache_dir: Path, uninterrupted, caplog) -> None:
    """Killed after the first micro-batch of step 5 was trained, its gradient accumulated and lost."""
    resumed_from = killed_and_resumed(tmp_path, cache_dir, uninterrupted, caplog, 5, *ACCUMULATE, batch=11)
    assert resumed_from["PretrainDataModule"]["train_batches"] == 10  # micro-batches, two per step


@pytest.mark.slow
def test_preemption_between_micro_batches_resumes_exactly(tmp_path: Path, cache_dir: Path, uninterrupted) -> None:
    cfg = compose_cfg("train", [*RUN, *ACCUMULATE], tmp_path, cache_dir)
    with open_dict(cfg):
        cfg.callbacks.signal_at = {"_target_": f"{__name__}.SignalAt", "step": 5, "signum": int(signal.SIGUSR1), "batch": 10}
    assert train(cfg)["preempted_at_step"] == 6  # the signal came during step 6's first micro-batch: saved after it
    resume(tmp_path, cache_dir, *ACCUMULATE)
    assert_same_run(tmp_path, uninterrupted(*ACCUMULATE))


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_sigkill_mid_epoch_of_a_fine_tune_resumes_exactly(
    task: str, tmp_path: Path, cache_dir: Path, uninterrupted, caplog
) -> None:
    extra = [f"task={task}", f"model.block_size={TASKS[task]}", SHORT_EPOCHS]
    resumed_from = killed_and_resumed(tmp_path, cache_dir, uninterrupted, caplog, 5, *extra)
    position = next(v for k, v in resumed_from.items() if k.endswith("DataModule"))
    assert (position["epoch"], position["batches"]) == (1, 2)  # steps 3 and 4 of epoch 1 (0-2) trained


class RecordRows(Callback):
    """Appends ``epoch row`` for every training sample of this rank to ``<dir>/rank<N>.txt`` (expression batches carry
    their table row)."""

    def __init__(self, dir: str) -> None:
        self.dir = Path(dir)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / f"rank{trainer.global_rank}.txt", "a") as fh:
            fh.writelines(f"{trainer.current_epoch} {int(row)}\n" for row in batch["row"])


@pytest.mark.slow
def test_sigkill_of_a_ddp_fine_tune_resumes_exactly_with_each_rank_on_its_own_shard(
    tmp_path: Path, cache_dir: Path, uninterrupted, caplog
) -> None:
    record = [f"+callbacks.record._target_={__name__}.RecordRows", "+callbacks.record.dir=${paths.output_dir}/rows"]
    # the expression task leaves the token head unused: trainer=ddp_sim (and ddp) let DDP find unused parameters
    extra = ["task=expression", "model.block_size=512", SHORT_EPOCHS, *DDP, *record]
    killed_and_resumed(tmp_path / "killed", cache_dir, uninterrupted, caplog, 5, *extra)
    reference = uninterrupted(*extra)
    # the killed run's rows before step 5 and the resumed run's after it are the uninterrupted run's, rank by rank
    for rank in (0, 1):
        got = (tmp_path / "killed" / "rows" / f"rank{rank}.txt").read_text()
        assert got == (reference / "rows" / f"rank{rank}.txt").read_text(), rank
    # and they are what torch's DistributedSampler deals each rank from that epoch's seeded permutation
    cfg = compose_cfg("train", [*RUN, *extra], tmp_path / "dm", cache_dir)
    datamodule = instantiate(cfg.data, tokenizer=instantiate(cfg.tokenizer))
    datamodule.setup("fit")
    rows = datamodule.split_data("train").rows
    for rank in (0, 1):
        seen = [line.split() for line in (reference / "rows" / f"rank{rank}.txt").read_text().splitlines()]
        for epoch in range(4):
            deal = DistributedSampler(rows, num_replicas=2, rank=rank, seed=cfg.seed)
            deal.set_epoch(epoch)
            want = [int(rows[i]) for i in deal][: 3 * 4 if epoch < 3 else 4]  # 3 batches of 4; step 10 opens epoch 3
            assert [int(r) for e, r in seen if int(e) == epoch] == want, (rank, epoch)


@pytest.mark.slow
def test_truncated_last_ckpt_of_a_killed_run_resumes_exactly_from_the_fallback(
    reference: Path, tmp_path: Path, cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    proc = start_run(tmp_path, cache_dir, *sigkill_at(7))
    assert proc.wait(timeout=180) == -signal.SIGKILL, run_log(tmp_path)[-3000:]
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert read_checkpoint(last, resumable=True).global_step == 7
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    resume(tmp_path, cache_dir)
    fallback = re.search(r"ckpt_path=auto: resuming from \S+step(\d+)\.ckpt \(step \d+\) instead of", caplog.text)
    assert fallback and int(fallback[1]) < 7, caplog.text[-3000:]  # the best checkpoint, from a validation step
    assert_same_run(tmp_path, reference)


def served(datamodule, consumed: int, n: int, epoch_batches: int = 3) -> list[torch.Tensor]:
    """The next ``n`` training batches as Lightning serves them once ``consumed`` are trained (its loop counters
    restored): one loader, ``set_epoch`` at each epoch start, each batch through ``on_after_batch_transfer``, epochs
    cut at ``epoch_batches`` as ``limit_train_batches`` does."""
    loader, batches = datamodule.train_dataloader(), []
    epoch, start = divmod(consumed, epoch_batches)
    while len(batches) < n:
        loader.sampler.set_epoch(epoch)
        take = min(epoch_batches - start, n - len(batches))
        batches += [datamodule.on_after_batch_transfer(b, 0)["input_ids"] for b in itertools.islice(loader, take)]
        epoch, start = epoch + 1, 0
    return batches


@pytest.mark.parametrize("task", TASKS)
def test_training_order_of_a_fine_tune_resumes_mid_epoch_on_each_rank(make_cfg, task: str, caplog) -> None:
    """The DataModule's position survives its state_dict; each rank's sampler deals what DistributedSampler would."""
    cfg = make_cfg("train", [f"task={task}", f"model.block_size={TASKS[task]}"])
    datamodule = instantiate(cfg.data, tokenizer=instantiate(cfg.tokenizer))
    for rank in (0, 1):
        datamodule.trainer = SimpleNamespace(global_rank=rank, world_size=2, accumulate_grad_batches=1, training=True,
                                             num_training_batches=3)  # fmt: skip
        datamodule.setup("fit")  # data.batch_size=4 over two ranks: micro-batches of 2
        datamodule.train_position = (0, 0)
        whole = served(datamodule, 0, 8)
        datamodule.train_position = (0, 0)
        served(datamodule, 0, 4)  # stopped after 4 batches: epoch 1, its batch 0 trained
        state = datamodule.state_dict()
        assert (state["epoch"], state["batches"], state["world_size"], state["batch_size"]) == (1, 1, 2, 2)
        datamodule.train_position = (9, 9)  # whatever it was: the checkpoint decides
        datamodule.load_state_dict(state)
        sampler = datamodule.train_dataloader().sampler  # epoch 1 from its second batch, before any set_epoch
        deal = DistributedSampler(sampler.dataset, num_replicas=2, rank=rank, seed=cfg.seed)
        deal.set_epoch(1)
        assert list(sampler) == list(deal)[2:]
        rest = served(datamodule, 4, 4)
        assert all(torch.equal(a, b) for a, b in zip(rest, whole[4:], strict=True))
    assert "training order saved with" not in caplog.text
    datamodule.load_state_dict({**state, "world_size": 4})  # saved by a run on four ranks: not the same order
    datamodule.train_dataloader()
    assert "training order saved with {'seed': 1337, 'world_size': 4," in caplog.text
