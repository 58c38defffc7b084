"""Composed configs for tests: each test gets a copy whose outputs go to its own tmp_path.

Tests train on the small real excerpts the package ships (dnagpt/resources), never on the network.
"""

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from dnagpt.utils.resolvers import register_resolvers

register_resolvers()
torch.set_num_threads(1)  # 2-core machines: one thread per process keeps DDP tests and parallel workers honest

ROOT = Path(__file__).resolve().parent.parent

# a model and batch small enough that a Lightning step takes milliseconds on CPU
FAST = [
    "trainer=cpu",
    "logger=csv",
    "data.batch_size=4",
    "data.num_workers=0",
    "extras.print_config=false",
    "trainer.max_steps=4",
    "task.scheduler.warmup_steps=0",  # a warm-up as long as the run is refused (dnagpt.config_checks)
    "trainer.val_check_interval=2",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
]


# the tiny preset shrunk further; not applied when a test picks another model (released presets refuse shape changes)
SMALL_MODEL = ["model.block_size=64", "model.n_layer=2", "model.n_head=2", "model.n_embd=32"]


def run_group(cmd: list[str], timeout: float, **popen) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, capture_output=True, text=True)`` in a process group of its own, for commands that start
    other processes (DDP ranks): whatever of the group is left when the command ends, or when it runs past ``timeout``,
    is killed, so that a rank waiting for a dead peer neither outlives the test nor holds its pipes open; a timeout
    fails with the tail of what the command printed."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            **popen)  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"{' '.join(cmd[:4])} ... ran past {timeout} s; its output ends with:\n{out[-3000:]}\n"
                             f"{err[-5000:]}") from None
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # the whole group has ended
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def compose_cfg(config_name: str, overrides: list[str], tmp_path: Path, cache_dir: Path) -> DictConfig:
    GlobalHydra.instance().clear()
    picks_model = any(o.startswith(("model=", "experiment=")) for o in overrides)
    with initialize(version_base="1.3", config_path="../dnagpt/conf"):
        cfg = compose(config_name, return_hydra_config=True,
                      overrides=FAST + ([] if picks_model else SMALL_MODEL) + overrides)
    with open_dict(cfg):
        cfg.paths.root_dir = str(ROOT)
        cfg.paths.output_dir = str(tmp_path)
        cfg.paths.log_dir = str(tmp_path / "logs")
        cfg.paths.cache_dir = str(cache_dir)
        cfg.hydra.runtime.output_dir = str(tmp_path)
        cfg.hydra.job.num = 0
    HydraConfig().set_config(cfg)
    return cfg


@pytest.fixture(scope="session", autouse=True)
def wandb_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """W&B stages a copy of every logged model under WANDB_DATA_DIR (by default in the home directory, never cleaned):
    keep the suite's in its temporary directory, for this process and the runs it starts."""
    path = tmp_path_factory.mktemp("wandb-data")
    before = os.environ.get("WANDB_DATA_DIR")
    os.environ["WANDB_DATA_DIR"] = str(path)
    yield path
    if before is None:
        os.environ.pop("WANDB_DATA_DIR", None)
    else:
        os.environ["WANDB_DATA_DIR"] = before


@pytest.fixture(autouse=True)
def restore_environment() -> Iterator[None]:
    """Each test starts from the session's environment. Lightning's launchers leave MASTER_PORT (and PL_GLOBAL_SEED) in
    os.environ; a later test's subprocess DDP run would inherit that port, which something (W&B's service) may hold by
    then: refused by check_config, or, before that check, a rank 0 that cannot listen and a rank 1 waiting for ever."""
    before = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(before)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Encoded genome shards are built once per session and shared by every test."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def make_cfg(tmp_path: Path, cache_dir: Path):
    """``make_cfg("train", ["task=pretrain", ...])`` → a composed config writing under tmp_path."""

    def make(config_name: str = "train", overrides: list[str] | None = None) -> DictConfig:
        return compose_cfg(config_name, overrides or [], tmp_path, cache_dir)

    yield make
    GlobalHydra.instance().clear()
