"""Sweeps: every search optimises a metric its task really logs, in the task's direction; a real Optuna sweep survives a
failed trial and returns the best value; ``-m`` with plain ``ddp`` trains each job once on both ranks; submitit runs jobs;
the W&B sweep files are valid Hydra overrides of ``train.yaml``."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class, instantiate
from lightning.pytorch import Callback
from omegaconf import OmegaConf, open_dict

from dnagpt.config_checks import check_optimized_metric
from dnagpt.pipeline import train
from dnagpt.utils.errors import ConfigError
from dnagpt.utils.multirun import CheckOptimizedMetric, job_scope

ROOT = Path(__file__).resolve().parent.parent
SEARCHES = sorted(p.stem for p in (ROOT / "dnagpt" / "conf" / "hparams_search").glob("*.yaml"))
WANDB_SWEEPS = sorted(p.name for p in (ROOT / "sweeps").glob("wandb_*.yaml"))
SWEPT = {"task.optimizer.lr", "task.optimizer.weight_decay", "task.scheduler.warmup_steps", "model.n_embd"}
DIRECTION = {"min": "minimize", "max": "maximize"}
# what makes a short real run of each task fast (its data); the rest is conftest's FAST
TASK_FAST = {
    "pretrain": [],
    "gsr": ["model.block_size=128", "data.species.pas=[human,mouse]"],
    "expression": ["data.window=[-150,150]"],
    "genomes": ["data.max_snps=60"],
}
# a command line as small as conftest's FAST + SMALL_MODEL, for `python train.py -m` in a subprocess
CLI_FAST = [
    "logger=csv", "data.batch_size=4", "data.num_workers=0", "extras.print_config=false", "extras.torch_threads=1",
    "trainer.max_steps=4", "trainer.val_check_interval=2", "trainer.limit_val_batches=2",
    "trainer.enable_progress_bar=false", "test=false", "task.scheduler.warmup_steps=1",
    "model.block_size=64", "model.n_layer=2", "model.n_head=2", "model.n_embd=32",
]  # fmt: skip


def task_metrics(metrics: dict[str, float]) -> set[str]:
    return {k for k in metrics if k.split("/")[0] in ("train", "val", "test")}


def cfg_task(search: str) -> str:
    return search.removesuffix("_optuna")


@pytest.mark.parametrize("search", SEARCHES)
def test_search_optimises_what_its_task_logs_in_its_direction(make_cfg, search: str) -> None:
    cfg = make_cfg("train", [f"hparams_search={search}", "callbacks=none", *TASK_FAST[cfg_task(search)]])
    task_cls = get_class(cfg.task._target_)
    assert cfg.optimized_metric in (cfg.task.monitor, f"{cfg.task.monitor}_best")  # so task.mode is its direction
    assert cfg.hydra.sweeper.direction == DIRECTION[cfg.task.mode]
    assert set(cfg.hydra.sweeper.params) == SWEPT
    assert cfg.hydra.sweeper.sampler.seed is not None and cfg.hydra.sweeper.storage is None
    logged = task_metrics(train(cfg))  # a short real run of the task the search picked
    assert cfg.optimized_metric in logged
    assert logged == task_cls.LOGGED_METRICS  # the declaration the early check relies on is what the task logs


def test_wrong_optimized_metric_is_refused_before_training(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg("train", ["optimized_metric=val/los"])
    with pytest.raises(ConfigError, match=r"optimized_metric='val/los' is not logged by PretrainTask.*val/loss_best"):
        check_optimized_metric(cfg)
    with pytest.raises(ConfigError, match="optimized_metric"):
        train(cfg)
    assert not (tmp_path / "checkpoints").exists()
    # the Hydra callback stops a whole sweep before its first job (Hydra only warns when a callback raises)
    callback = instantiate(cfg.hydra.callbacks.check_optimized_metric)
    assert isinstance(callback, CheckOptimizedMetric)
    with pytest.raises(SystemExit, match="optimized_metric='val/los'"):
        callback.on_multirun_start(config=cfg)
    good = make_cfg("train", ["hparams_search=gsr_optuna"])
    callback.on_multirun_start(config=good)


def test_job_scope_isolates_a_multirun_job_and_lets_its_errors_through(
    make_cfg, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("MASTER_PORT", raising=False)
    cfg = make_cfg("train", ["hparams_search=pretrain_optuna", "task.optimizer.lr=0.002"])  # hydra.mode: MULTIRUN
    argv = list(sys.argv)
    with pytest.raises(ConfigError, match="refused"):  # an exception, which the sweeper records as a failed trial
        with job_scope():
            assert sys.argv == [argv[0], *cfg.hydra.overrides.task, "hydra.mode=RUN"]
            assert "task.optimizer.lr=0.002" in sys.argv
            assert HydraConfig.get().run.dir == str(tmp_path)  # where Lightning starts the other ranks
            os.environ["MASTER_PORT"] = "12910"  # what Lightning's launcher leaves behind
            raise ConfigError("refused")
    assert sys.argv == argv and "MASTER_PORT" not in os.environ
    make_cfg("train")  # a single run: a refused config ends the program with its message
    with pytest.raises(SystemExit, match="Configuration error: refused"):
        with job_scope():
            raise ConfigError("refused")


class FailAtFirstBatch(Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        raise RuntimeError("a trial that fails after its W&B run started")


def test_failed_run_finishes_its_wandb_run(make_cfg, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = make_cfg("train", ["logger=many"])
    with open_dict(cfg):
        cfg.callbacks.fail = {"_target_": f"{__name__}.FailAtFirstBatch"}
    with pytest.raises(RuntimeError, match="W&B run started"):
        train(cfg)
    assert list(tmp_path.rglob("offline-run-*/run-*.wandb"))  # the failing run had a W&B run ...
    assert wandb.run is None  # ... which is closed, so the next trial of a sweep does not log into it


def run_train(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    from conftest import run_group  # not at the top: train.py imports this module (RecordLR), where conftest is not

    env = os.environ | {"OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "1"}
    return run_group(
        [sys.executable, "train.py", *args, f"paths.cache_dir={tmp_path / 'cache'}", f"paths.log_dir={tmp_path / 'logs'}"],
        timeout=300, cwd=ROOT, env=env,
    )  # fmt: skip


def job_dirs(sweep: Path) -> list[Path]:
    return sorted((p for p in sweep.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def job_overrides(job: Path) -> dict[str, str]:
    return dict(o.split("=", 1) for o in yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()))


@pytest.mark.slow
def test_optuna_sweep_survives_a_failed_trial_and_returns_the_best(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    base = ["-m", "hparams_search=pretrain_optuna", f"hydra.sweep.dir={sweep}", *CLI_FAST]
    typo = run_train([*base, "optimized_metric=val/lss"], tmp_path)
    assert typo.returncode == 1 and "optimized_metric='val/lss' is not logged" in typo.stderr
    assert not sweep.exists() or not job_dirs(sweep)  # refused before the first job

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    # a FASTA with a NUL byte is refused when the data is prepared, inside fit, after the trial's W&B run started;
    # sampler seed 6 draws it, it again, then the bundled file (asserted below, so a change of sampler shows)
    good, bad = ROOT / "dnagpt/resources/bundled/human.fa.gz", tmp_path / "nul.fa"
    bad.write_bytes(b">r1\nACGT\x00ACGT\n")
    done = run_train(
        [*base, "hydra.sweeper.n_trials=3", "hydra.sweeper.sampler.seed=6", f"hydra.sweeper.storage={storage}",
         "logger=many", f"corpus.species.human.fasta=choice({bad},{good})"], tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    trials = optuna.load_study(study_name="pretrain_optuna", storage=storage).trials
    jobs = job_dirs(sweep)
    failed = [job_overrides(j)["corpus.species.human.fasta"] == str(bad) for j in jobs]
    assert failed == [True, True, False]  # the sweep goes on after failed trials
    assert [t.state.name for t in trials] == ["FAIL", "FAIL", "COMPLETE"]
    values = [json.loads((j / "metrics.json").read_text())["val/loss_best"] for j in jobs[2:]]
    assert [t.value for t in trials if t.value is not None] == pytest.approx(values)
    results = OmegaConf.load(sweep / "optimization_results.yaml")
    assert results.best_value == pytest.approx(min(values))
    # scripts/sweep_report.py tabulates the same trials from the sweep folder, the best first and the failures last
    doc = tmp_path / "page.md"
    doc.write_text("before\n<!-- sweep:begin -->\nold\n<!-- sweep:end -->\nafter\n")
    report = [sys.executable, str(ROOT / "scripts" / "sweep_report.py"), str(sweep), "--doc", str(doc)]
    subprocess.run(report, check=True, timeout=120)
    rows = [line for line in doc.read_text().splitlines() if line.startswith("| ") and "trial" not in line]
    assert [r.split(" | ")[0] for r in rows] == ["| 2", "| 0", "| 1"]
    assert f"| {values[0]:.4f} (best) |" in rows[0] and all("| failed |" in r for r in rows[1:])
    assert "3 trials (1 finished), minimising `val/loss_best`" in doc.read_text() and "old" not in doc.read_text()
    assert (tmp_path / "results" / "sweep.png").stat().st_size > 5000
    # every trial, the failed one too, had its own W&B run: the failed run was closed before the next trial began
    runs = [list(j.rglob("offline-run-*/run-*.wandb")) for j in jobs]
    assert [len(r) for r in runs] == [1, 1, 1] and len({r[0].name for r in runs}) == 3


class RecordLR(Callback):
    """Appends this process's rank, pid and learning rate to <dir>/lr_rank<R>.txt when training starts."""

    def __init__(self, dir: str) -> None:
        self.dir = Path(dir)

    def on_train_start(self, trainer, pl_module) -> None:
        with open(self.dir / f"lr_rank{trainer.global_rank}.txt", "a") as fh:
            fh.write(f"{os.getpid()} {trainer.optimizers[0].defaults['lr']!r}\n")


@pytest.mark.slow
def test_multirun_with_plain_ddp_trains_each_job_once_on_both_ranks(tmp_path: Path) -> None:
    """hparams_search sets hydra.mode=MULTIRUN itself, the case where a child rank would re-run the sweep on its own."""
    sweep = tmp_path / "sweep"
    done = run_train(
        ["hparams_search=pretrain_optuna", "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep}", *CLI_FAST,
         "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
         "task.optimizer.weight_decay=0.01", "+callbacks.record_lr._target_=tests.test_sweeps.RecordLR",
         "+callbacks.record_lr.dir=${paths.output_dir}"], tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = job_dirs(sweep)
    assert len(jobs) == 2
    assert len(list(tmp_path.rglob("lr_rank*.txt"))) == 4  # nothing trained anywhere else (no re-run sweep)
    # the sweep ran once: a child rank that re-ran it would log its own study (and serve as rank 1 of every job)
    assert (done.stdout + done.stderr).count("Study name: pretrain_optuna") == 1
    lrs, children = [], []
    for job in jobs:
        lines = [(job / f"lr_rank{r}.txt").read_text().split("\n")[:-1] for r in (0, 1)]
        assert [len(rank) for rank in lines] == [1, 1], lines  # each rank trained this job exactly once
        (pid0, lr0), (pid1, lr1) = (rank[0].split() for rank in lines)
        assert float(lr0) == float(lr1) == float(job_overrides(job)["task.optimizer.lr"])  # both ranks at this job's lr
        lrs.append(float(lr0))
        children.append(pid1)
        assert (job / "checkpoints" / "last.ckpt").exists()
    assert lrs[0] != lrs[1]
    assert children[0] != children[1]  # each job launched its own rank 1, which trained that job only


@pytest.mark.slow
def test_submitit_local_runs_both_jobs(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    done = run_train(
        ["-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", "task.optimizer.lr=0.001,0.002",
         f"hydra.sweep.dir={sweep}", *CLI_FAST], tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = job_dirs(sweep)
    assert [job_overrides(j)["task.optimizer.lr"] for j in jobs] == ["0.001", "0.002"]
    for job in jobs:
        assert (job / "checkpoints" / "last.ckpt").exists()
        assert math.isfinite(json.loads((job / "metrics.json").read_text())["val/loss"])


def test_slurm_launcher_asks_one_task_per_device_and_the_preemption_signal(make_cfg) -> None:
    cfg = make_cfg("train", ["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"])
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert launcher["tasks_per_node"] == launcher["gpus_per_node"] == 4 and launcher["nodes"] == 2
    assert launcher["additional_parameters"]["signal"] == "USR1@90"


@pytest.mark.parametrize("name", WANDB_SWEEPS)
def test_wandb_sweep_parameters_are_overrides_of_train_yaml(make_cfg, name: str) -> None:
    sweep = yaml.safe_load((ROOT / "sweeps" / name).read_text())
    assert sweep["program"] == "train.py" and sweep["method"] == "bayes"
    command = sweep["command"]
    assert "${args_no_hyphens}" in command and "logger=wandb" in command
    fixed = [c for c in command if not c.startswith("${")]
    params = sweep["parameters"]
    assert set(params) == SWEPT
    samples = [f"{k}={p['values'][0] if 'values' in p else p['min']}" for k, p in params.items()]
    cfg = make_cfg("train", [*fixed, *samples])  # an unknown key or a bad value type fails here
    for override in samples:
        key, value = override.split("=")
        assert str(OmegaConf.select(cfg, key)) == value
    task_cls = get_class(cfg.task._target_)
    assert sweep["metric"]["name"] in task_cls.LOGGED_METRICS
    assert sweep["metric"]["name"] in (cfg.task.monitor, f"{cfg.task.monitor}_best")
    assert sweep["metric"]["goal"] == DIRECTION[cfg.task.mode]
    assert cfg.logger.wandb.group == cfg.task_name == name.removesuffix(".yaml").replace("wandb_", "wandb_sweep_")
