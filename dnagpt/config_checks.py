"""Refuse a configuration that cannot run before anything heavy is built, in one paragraph naming the key(s), the value
and what is allowed.

``check_config(cfg)`` is the first thing ``pipeline.train`` and ``pipeline.evaluate`` do. Checks that belong to a
component stay with it and are reused here by building the cheap objects once (the tokenizer, ``GPTConfig`` with its
preset locks, the DataModule constructors, the corpus file check, the batch rule of ``dnagpt.data.batching``), their
errors re-raised as ``ConfigError`` prefixed with the config group. What no single component can see is checked here: the
task against its data and its metrics, ``init_from`` against ``ckpt_path``, the schedule against ``max_steps``, and the
hardware (CUDA, FSDP). Hydra's own errors (unknown option or key, override syntax) come earlier and are already readable.
The entry points print a ConfigError without a traceback (``dnagpt.utils.errors``); in-process callers get the exception.
"""

from pathlib import Path
from typing import Any, Literal, get_args

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dnagpt.data.batching import micro_batch_size
from dnagpt.utils.errors import ConfigError

__all__ = ["ConfigError", "TASK_DATA", "check_config", "check_optimized_metric"]

GPU_ACCELERATORS = ("gpu", "cuda")
ACCELERATORS = ("auto", "cpu", *GPU_ACCELERATORS, "mps", "tpu")
# exceptions a component raises for bad input (a bug raises something else, and keeps its traceback)
INPUT_ERRORS = (ValueError, TypeError, KeyError, FileNotFoundError)


# the DataModule each task reads batches from (what it logs: its class's LOGGED_METRICS)
TASK_DATA = {
    "dnagpt.tasks.pretrain.PretrainTask": "dnagpt.data.pretrain.PretrainDataModule",
    "dnagpt.tasks.gsr.GSRTask": "dnagpt.data.gsr.GSRDataModule",
    "dnagpt.tasks.expression.ExpressionTask": "dnagpt.data.expression.ExpressionDataModule",
    "dnagpt.tasks.genomes.GenomesTask": "dnagpt.data.genomes.GenomesDataModule",
}


def check_config(cfg: DictConfig, stage: Literal["train", "evaluate"] = "train") -> None:
    """Raise ``ConfigError`` for the first problem found; ``stage="evaluate"`` skips what only training reads (the
    optimiser, the schedule, the model group, which a Lightning checkpoint overrides)."""
    _check_no_missing(cfg)
    _check_trainer(cfg)
    _check_batch(cfg)
    _check_task_and_data(cfg)
    _check_paths(cfg, stage)
    if stage == "train":
        _check_optimisation(cfg)
        _check_metrics(cfg)
        _check_components(cfg)


# ---- helpers ---------------------------------------------------------------------------------------------------------
def _choice(group: str) -> str | None:
    """The option picked for ``group`` (``model=tiny`` → ``tiny``), when Hydra composed this config."""
    return HydraConfig.get().runtime.choices.get(group) if HydraConfig.initialized() else None


def _named(group: str, node: Any) -> str:
    choice = _choice(group)
    return f"{group}={choice}" if choice else f"{group} ({OmegaConf.select(node, '_target_', default='?')})"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(cfg: DictConfig, key: str, minimum: int, what: str) -> int:
    value = OmegaConf.select(cfg, key)
    if not _is_int(value) or value < minimum:
        raise ConfigError(f"{key}={value!r} must be a whole number >= {minimum} ({what})")
    return value


# ---- checks ----------------------------------------------------------------------------------------------------------
def _check_no_missing(cfg: DictConfig) -> None:
    """No ``???`` left, and every interpolation resolves (``hydra``, present in composed test configs, is Hydra's)."""
    try:
        missing = sorted(OmegaConf.missing_keys(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])))
    except OmegaConfBaseException as err:
        raise ConfigError(f"the config does not resolve: {' '.join(str(err).split())}") from None
    if missing:
        example = " ".join(f"{k}=..." for k in missing)
        hint = " (a Lightning .ckpt, a save_pretrained directory or a released .pth)" if "ckpt_path" in missing else ""
        raise ConfigError(f"{', '.join(missing)} must be given (??? in the config): add {example}{hint}")


def _check_trainer(cfg: DictConfig) -> None:
    t = cfg.trainer
    steps = t.get("max_steps")
    if not _is_int(steps) or (steps < 1 and steps != -1):
        raise ConfigError(f"trainer.max_steps={steps!r} must be a whole number of optimizer steps >= 1 (-1: by epochs)")
    _int(cfg, "trainer.num_nodes", 1, "machines")
    _int(cfg, "trainer.accumulate_grad_batches", 1, "micro-batches per optimizer step")
    devices = t.get("devices")
    if (_is_int(devices) and devices < 1 and devices != -1) or not isinstance(devices, int | str | ListConfig):
        raise ConfigError(f"trainer.devices={devices!r} must be a count >= 1, -1 (all), 'auto' or a list of device ids")
    interval = t.get("val_check_interval")
    if interval is not None and (isinstance(interval, bool) or not isinstance(interval, int | float) or interval <= 0):
        raise ConfigError(
            f"trainer.val_check_interval={interval!r} must be a whole number of training batches >= 1 (or null)"
        )
    _check_precision(t.get("precision"))
    _check_hardware(t)
    _int(cfg, "seed", 0, "the random seed")


def _check_precision(precision: Any) -> None:
    from lightning.fabric.connector import _PRECISION_INPUT  # Lightning's own list of what it accepts

    allowed = [v for literal in get_args(_PRECISION_INPUT) for v in get_args(literal)]
    if precision not in allowed:
        raise ConfigError(
            f"trainer.precision={precision!r} is not a Lightning precision; allowed: "
            f"{', '.join(map(str, allowed))} (bf16-mixed is the default; 32-true where bf16 is slow)"
        )


def _check_hardware(t: DictConfig) -> None:
    import torch

    accelerator = t.get("accelerator")
    if isinstance(accelerator, str) and accelerator not in ACCELERATORS:
        raise ConfigError(f"trainer.accelerator={accelerator!r} is not one of {', '.join(ACCELERATORS)}")
    strategy = t.get("strategy")
    target = OmegaConf.select(strategy, "_target_", default="") if isinstance(strategy, DictConfig) else str(strategy)
    if ("FSDPStrategy" in target or target.startswith("fsdp")) and accelerator not in GPU_ACCELERATORS:
        raise ConfigError(
            f"trainer=fsdp needs trainer.accelerator=gpu, got {accelerator!r}: FSDP runs on CUDA GPUs only (Lightning's "
            "FSDPStrategy refuses other accelerators and torch's FSDP has no CPU backend); on CPU use trainer=ddp_sim "
            "(two processes) or trainer=cpu"
        )
    if accelerator in GPU_ACCELERATORS and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator!r} but this machine has no usable CUDA GPU (torch {torch.__version__}, "
            "torch.cuda.is_available() is False): use trainer=cpu, or trainer=ddp_sim for two CPU processes, or "
            "install the CUDA build of torch on a GPU machine"
        )


def _world_size(t: DictConfig) -> int | None:
    """devices × nodes when the config says it outright (a count or a list), else None ('auto', -1: the Trainer knows)."""
    devices = t.get("devices")
    if isinstance(devices, ListConfig):
        devices = len(devices)
    if isinstance(devices, str) and devices.isdigit():
        devices = int(devices)
    return devices * t.num_nodes if _is_int(devices) and devices > 0 else None


def _check_batch(cfg: DictConfig) -> None:
    batch = _int(cfg, "data.batch_size", 1, "the global batch per optimizer step")
    _int(cfg, "data.num_workers", 0, "DataLoader worker processes per device")
    world = _world_size(cfg.trainer)
    if world is not None:
        try:
            micro_batch_size(batch, world, cfg.trainer.accumulate_grad_batches)
        except ValueError as err:
            raise ConfigError(str(err)) from None


def _check_task_and_data(cfg: DictConfig) -> None:
    expected = TASK_DATA.get(OmegaConf.select(cfg, "task._target_", default=""))
    data = OmegaConf.select(cfg, "data._target_", default="")
    if expected is not None and data != expected:
        task = _choice("task")
        raise ConfigError(
            f"{_named('task', cfg.task)} reads batches of {expected}, but {_named('data', cfg.data)} builds {data}: "
            f"drop the data= override (each task picks its own data{f', data={task}' if task else ''})"
        )


def _check_paths(cfg: DictConfig, stage: str) -> None:
    init_from, ckpt_path = cfg.get("init_from"), cfg.get("ckpt_path")
    if init_from and ckpt_path:
        raise ConfigError(
            f"init_from={init_from} (weights only) and ckpt_path={ckpt_path} (full resume) are both set; choose one: "
            "init_from=PATH to start a new run from weights, ckpt_path=PATH|auto to continue a run"
        )
    if init_from and not Path(init_from).exists():
        raise ConfigError(f"init_from={init_from} does not exist (a .ckpt, a save_pretrained directory or a released .pth)")
    if ckpt_path and ckpt_path != "auto" and not Path(ckpt_path).exists():
        resume = " (ckpt_path=auto resumes only if <run dir>/checkpoints/last.ckpt exists)" if stage == "train" else ""
        raise ConfigError(f"ckpt_path={ckpt_path} does not exist{resume}")
    for key, path in _data_files(cfg):
        if not path or not Path(str(path)).is_file():
            raise ConfigError(f"{key}={path} is not a file ({_named('data', cfg.data)}; see its config for the sources)")
    if OmegaConf.select(cfg, "data._target_") == TASK_DATA["dnagpt.tasks.pretrain.PretrainTask"]:
        from dnagpt.data.corpus import Corpus

        try:
            corpus = Corpus.from_config(cfg.data.corpus)
            if not corpus.skip_missing:  # a skipping corpus warns per missing file when the data is prepared
                corpus.available_species()
        except INPUT_ERRORS as err:
            raise ConfigError(f"{_named('corpus', cfg.data.corpus)}: {err}") from None


def _data_files(cfg: DictConfig) -> list[tuple[str, Any]]:
    """The input files the data config names, as (key, path); each DataModule reads them only in ``setup``."""
    data = cfg.data
    target = data.get("_target_", "")
    if target == "dnagpt.data.gsr.GSRDataModule":
        return [(f"data.files.{s}", data.files.get(s)) for s in data.signals if s in data.files]
    if target == "dnagpt.data.expression.ExpressionDataModule":
        return [("data.path", data.path)]
    if target == "dnagpt.data.genomes.GenomesDataModule":
        return [("data.vcf", data.vcf)] if data.get("vcf") else [("data.hapt", data.hapt), ("data.legend", data.legend)]
    return []


def _check_optimisation(cfg: DictConfig) -> None:
    lr = OmegaConf.select(cfg, "task.optimizer.lr")
    if isinstance(lr, bool) or not isinstance(lr, int | float) or lr <= 0:
        raise ConfigError(f"task.optimizer.lr={lr!r} must be a number > 0 (the peak learning rate)")
    t = cfg.trainer
    if t.get("fast_dev_run") or t.max_steps == -1:
        return  # one batch, or epochs: no step budget to compare with
    warmup = OmegaConf.select(cfg, "task.scheduler.warmup_steps")
    if warmup is not None:
        warmup = _int(cfg, "task.scheduler.warmup_steps", 0, "optimizer steps of linear warm-up")
        if warmup >= t.max_steps:
            raise ConfigError(
                f"task.scheduler.warmup_steps={warmup} >= trainer.max_steps={t.max_steps}: the learning rate would never "
                f"reach its peak and the cosine decay would never start; use a warm-up below {t.max_steps} steps"
            )
    interval = t.get("val_check_interval")
    batches = t.max_steps * t.accumulate_grad_batches
    if _is_int(interval) and interval > batches:
        raise ConfigError(
            f"trainer.val_check_interval={interval} > trainer.max_steps={t.max_steps} × "
            f"trainer.accumulate_grad_batches={t.accumulate_grad_batches} = {batches} training batches: validation "
            "would never run, so no validation metric and no best checkpoint (Lightning counts val_check_interval in "
            "training batches, i.e. micro-batches)"
        )


def _logged_metrics(cfg: DictConfig) -> tuple[str, frozenset[str]]:
    """The task class's name and the metrics it declares (empty for a task of the user's own that declares none)."""
    task_cls = hydra.utils.get_class(cfg.task._target_)
    return task_cls.__name__, getattr(task_cls, "LOGGED_METRICS", frozenset())


def check_optimized_metric(cfg: DictConfig) -> None:
    """``optimized_metric`` against what ``cfg.task`` declares it logs; also run by ``dnagpt.utils.multirun`` once
    before a sweep's first job, so a typo stops the sweep instead of failing every trial after it trained."""
    name = cfg.get("optimized_metric")
    if not name or "task" not in cfg:
        return
    task, logged = _logged_metrics(cfg)
    if logged and name not in logged:
        raise ConfigError(
            f"optimized_metric={name!r} is not logged by {task} ({_named('task', cfg.task)}); it logs: "
            f"{', '.join(sorted(logged))}"
        )


def _check_metrics(cfg: DictConfig) -> None:
    """``task.monitor`` and ``optimized_metric`` against what the task declares (``DNAGPTTask.LOGGED_METRICS``)."""
    task, logged = _logged_metrics(cfg)
    validation = sorted(m for m in logged if m.startswith("val/"))
    monitor = OmegaConf.select(cfg, "task.monitor")
    if logged and monitor not in validation:
        raise ConfigError(
            f"task.monitor={monitor!r} is not logged by {task} ({_named('task', cfg.task)}) at validation; it logs "
            f"{', '.join(validation)}"
        )
    check_optimized_metric(cfg)


def _check_components(cfg: DictConfig) -> None:
    """Build the tokenizer, the model config and the DataModule (cheap: nothing is read or allocated) to run their own
    checks now, with the config group in front of their message."""
    tokenizer = _build("tokenizer", cfg.tokenizer)
    model_group = f"{_named('model', cfg.model)} with {_named('tokenizer', cfg.tokenizer)}"
    _build("model", cfg.model, label=model_group, vocab_size=len(tokenizer))
    _build("data", cfg.data, tokenizer=tokenizer)


def _build(group: str, node: DictConfig, label: str | None = None, **kwargs: Any) -> Any:
    try:
        return hydra.utils.instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, INPUT_ERRORS):
            raise ConfigError(f"{label or _named(group, node)}: {cause}") from None
        raise
