"""Refuse a configuration that cannot run, in one paragraph naming the key(s), the value and what is allowed.

Two halves, both used by ``dnagpt.pipeline``:

- ``check_config(cfg)`` runs first, on the config alone (nothing is built or read): values each component cannot see
  whole (the trainer's numbers and hardware, the batch rule of ``dnagpt.data.batching``, the task against its data and
  its metrics, ``init_from`` against ``ckpt_path``, the schedule against ``max_steps``, the optimiser's numbers).
- ``instantiate_group(group, node)`` is how the pipeline builds every component, once: a constructor that refuses its
  arguments (``ValueError``, ``TypeError``, ``KeyError``, ``FileNotFoundError``, Lightning's
  ``MisconfigurationException``) becomes a ``ConfigError`` with the config group in front; an unknown keyword gets
  the closest accepted names. Components keep their own checks (the tokenizer, ``GPTConfig`` with its preset locks,
  the DataModules with their files), so each rule lives in one place.

Hydra's own errors (unknown option or key, override syntax) come earlier and are already readable. The entry points print
a ConfigError without a traceback (``dnagpt.utils.errors``); in-process callers get the exception.
"""

import difflib
import errno
import inspect
import os
import re
import socket
from typing import Any, Literal

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from lightning.fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dnagpt.data.batching import micro_batch_size
from dnagpt.lightning_internals import precision_choices
from dnagpt.utils.errors import ConfigError

__all__ = ["ConfigError", "check_config", "check_optimized_metric", "instantiate_group", "named_group"]

GPU_ACCELERATORS = ("gpu", "cuda")
ACCELERATORS = ("auto", "cpu", *GPU_ACCELERATORS, "mps", "tpu")
# what a constructor raises for arguments it refuses (a bug raises something else, and keeps its traceback)
BUILD_ERRORS = (ValueError, TypeError, KeyError, FileNotFoundError, MisconfigurationException)


def check_config(cfg: DictConfig, stage: Literal["train", "evaluate"] = "train") -> None:
    """Raise ``ConfigError`` for the first problem found; ``stage="evaluate"`` skips what only training reads (the
    optimiser, the schedule, the metrics to monitor)."""
    _check_no_missing(cfg)
    _check_trainer(cfg)
    _check_batch(cfg)
    _check_task_and_data(cfg)
    _check_paths(cfg)
    if stage == "train":
        _check_optimisation(cfg)
        _check_metrics(cfg)


def instantiate_group(group: str, node: DictConfig, label: str | None = None, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate(node, **kwargs)``, with a refusal of the arguments turned into one ``ConfigError``
    naming ``label`` (default: the group and its option, e.g. ``data=gsr``)."""
    try:
        return hydra.utils.instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if cause is not None and not isinstance(cause, BUILD_ERRORS):
            raise
        message = " ".join(str(cause if cause is not None else err).split())  # one paragraph
        raise ConfigError(f"{label or named_group(group, node)}: {message}{_closest_keys(group, node, message)}") from None


# ---- helpers ---------------------------------------------------------------------------------------------------------
def _choice(group: str) -> str | None:
    """The option picked for ``group`` (``model=tiny`` → ``tiny``), when Hydra composed this config."""
    return HydraConfig.get().runtime.choices.get(group) if HydraConfig.initialized() else None


def named_group(group: str, node: Any) -> str:
    """``model=tiny`` when Hydra composed the config, else the group and its class."""
    choice = _choice(group)
    return f"{group}={choice}" if choice else f"{group} ({OmegaConf.select(node, '_target_', default='?')})"


def _closest_keys(group: str, node: DictConfig, message: str) -> str:
    """For "unexpected keyword argument 'x'": the accepted argument names closest to x."""
    m = re.search(r"unexpected keyword argument '(\w+)'", message)
    target = OmegaConf.select(node, "_target_", default=None)
    if m is None or target is None:
        return ""
    try:
        params = inspect.signature(hydra.utils.get_object(target)).parameters
    except (ValueError, TypeError, ImportError):
        return ""
    close = difflib.get_close_matches(m.group(1), [p for p in params if not p.startswith("_")], n=3)
    return f" (did you mean {' or '.join(f'{group}.{c}' for c in close)}?)" if close else ""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


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
    _device_count(t.get("devices"))
    _check_val_check_interval(cfg)
    clip = t.get("gradient_clip_val")
    if clip is not None and (not _is_number(clip) or clip < 0):
        raise ConfigError(
            f"trainer.gradient_clip_val={clip!r} must be a number >= 0 (the largest gradient norm; 0 or null: no "
            "clipping); a negative value would reverse the gradients"
        )
    algorithm = t.get("gradient_clip_algorithm")
    if algorithm not in (None, "norm", "value"):
        raise ConfigError(f"trainer.gradient_clip_algorithm={algorithm!r} must be norm, value or null (norm)")
    precision = t.get("precision")
    allowed = precision_choices()
    if precision not in allowed:
        raise ConfigError(
            f"trainer.precision={precision!r} is not a Lightning precision; allowed: "
            f"{', '.join(map(str, allowed))} (bf16-mixed is the default; 32-true where bf16 is slow)"
        )
    _check_hardware(t)
    _check_rendezvous_port(t)
    _int(cfg, "seed", 0, "the random seed")


def _device_count(devices: Any) -> int | None:
    """Devices per node as the config asks for them: a count >= 1, a list of device ids, or Lightning's string forms of
    those ("2" is a count, "0,1" and "1," are device ids); None for 'auto' and -1 (all: the Trainer knows)."""
    text = devices.strip() if isinstance(devices, str) else None
    if devices == -1 or text in ("auto", "-1"):
        return None
    count = None
    if _is_int(devices):
        count = devices
    elif isinstance(devices, ListConfig) and all(_is_int(d) and d >= 0 for d in devices):
        count = len(devices)
    elif text is not None and re.fullmatch(r"\d+(\s*,\s*\d+)*,?", text):
        count = len([d for d in text.split(",") if d.strip()]) if "," in text else int(text)
    if count is None or count < 1:
        raise ConfigError(
            f"trainer.devices={devices!r} must be a count >= 1, -1 (all), 'auto' or a list of device ids (e.g. [0,1])"
        )
    return count


def _check_val_check_interval(cfg: DictConfig) -> None:
    """Our schedules count validations in training batches (an int); a fraction of an epoch only exists for epoch-based
    runs (``trainer.max_steps=-1``), and then nothing may save by step at that fraction."""
    t = cfg.trainer
    interval = t.get("val_check_interval")
    if interval is None or (_is_int(interval) and interval >= 1):
        return
    fraction = _is_number(interval) and 0 < interval <= 1
    if not fraction:
        raise ConfigError(
            f"trainer.val_check_interval={interval!r} must be a whole number of training batches >= 1 (or null; a "
            "fraction in (0, 1] of an epoch for epoch-based runs)"
        )
    if t.max_steps != -1:
        raise ConfigError(
            f"trainer.val_check_interval={interval!r} is a fraction of an epoch, but this run is step-based "
            f"(trainer.max_steps={t.max_steps}; the pre-training stream has no epochs): give a whole number of training "
            "batches, or make the run epoch-based with trainer.max_steps=-1 trainer.max_epochs=N"
        )
    every = OmegaConf.select(cfg, "callbacks.model_checkpoint.every_n_train_steps", default=None)
    if every is not None and not _is_int(every):
        raise ConfigError(
            f"callbacks.model_checkpoint.every_n_train_steps={every!r} (from trainer.val_check_interval) must be a whole "
            "number of steps or null: add callbacks.model_checkpoint.every_n_train_steps=null to save at each validation"
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


def _check_rendezvous_port(t: DictConfig) -> None:
    """A MASTER_PORT that something on this machine already holds: rank 0 cannot listen and fails, while the ranks it
    started wait for it for ever. Checked where the ranks are started, on one machine, for a port set beforehand (a
    shell, or a previous run in this Python process, left it; Lightning otherwise picks a free one itself)."""
    port, world = os.environ.get("MASTER_PORT"), _world_size(t)
    local = os.environ.get("MASTER_ADDR", "127.0.0.1") in ("127.0.0.1", "localhost")
    if port is None or "LOCAL_RANK" in os.environ or t.num_nodes != 1 or world in (None, 1) or not local:
        return
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as torch's store: a closed port is free
        try:
            sock.bind(("127.0.0.1", int(port)))
        except (ValueError, OverflowError):
            raise ConfigError(f"MASTER_PORT={port!r} (environment) must be a port number") from None
        except OSError as err:
            if err.errno != errno.EADDRINUSE:
                raise
            raise ConfigError(
                f"MASTER_PORT={port} (environment) is already in use on this machine, so rank 0 of this "
                f"{world}-process run could not listen and the others would wait for ever: unset MASTER_PORT "
                "(Lightning then picks a free port) or set a free one"
            ) from None


def _world_size(t: DictConfig) -> int | None:
    """devices × nodes when the config says it outright (a count or a list), else None ('auto', -1: the Trainer knows)."""
    count = _device_count(t.get("devices"))
    return None if count is None else count * t.num_nodes


def _check_batch(cfg: DictConfig) -> None:
    batch = _int(cfg, "data.batch_size", 1, "the global batch per optimizer step")
    _int(cfg, "data.num_workers", 0, "DataLoader worker processes per device")
    world = _world_size(cfg.trainer)
    if world is not None:
        try:
            micro_batch_size(batch, world, cfg.trainer.accumulate_grad_batches)
        except ValueError as err:
            raise ConfigError(str(err)) from None


def _class(node: DictConfig, group: str) -> type | None:
    target = OmegaConf.select(node, "_target_", default=None)
    if target is None:
        return None
    try:
        return hydra.utils.get_class(target)
    except Exception:  # Hydra's own message for a target it cannot import
        raise ConfigError(f"{named_group(group, node)}: _target_={target} is not an importable class") from None


def _check_task_and_data(cfg: DictConfig) -> None:
    task_cls, data_cls = _class(cfg.task, "task"), _class(cfg.data, "data")
    expected = getattr(task_cls, "DATA_MODULE", None)
    if expected is not None and data_cls is not None and not issubclass(data_cls, expected):
        task = _choice("task")
        raise ConfigError(
            f"{named_group('task', cfg.task)} reads batches of {expected.__module__}.{expected.__name__}, but "
            f"{named_group('data', cfg.data)} builds {data_cls.__module__}.{data_cls.__name__}: drop the data= override "
            f"(each task picks its own data{f', data={task}' if task else ''})"
        )


def _check_paths(cfg: DictConfig) -> None:
    """Only what no single file check sees; the files themselves are read (once) by ``dnagpt.checkpointing``."""
    init_from, ckpt_path = cfg.get("init_from"), cfg.get("ckpt_path")
    if init_from and ckpt_path:
        raise ConfigError(
            f"init_from={init_from} (weights only) and ckpt_path={ckpt_path} (full resume) are both set; choose one: "
            "init_from=PATH to start a new run from weights, ckpt_path=PATH|auto to continue a run"
        )


def _check_optimisation(cfg: DictConfig) -> None:
    opt = cfg.task.get("optimizer") or {}
    lr = opt.get("lr")
    if not _is_number(lr) or lr <= 0:
        raise ConfigError(f"task.optimizer.lr={lr!r} must be a number > 0 (the peak learning rate)")
    decay = opt.get("weight_decay", 0.0)
    if not _is_number(decay) or decay < 0:
        raise ConfigError(f"task.optimizer.weight_decay={decay!r} must be a number >= 0 (0: no decay)")
    betas = opt.get("betas")
    if betas is not None and (
        not isinstance(betas, ListConfig) or len(betas) != 2 or not all(_is_number(b) and 0 <= b < 1 for b in betas)
    ):
        raise ConfigError(
            f"task.optimizer.betas={OmegaConf.to_container(betas) if isinstance(betas, ListConfig) else betas!r} must "
            "be two numbers in [0, 1): the decay rates of Adam's first and second moments, e.g. [0.9, 0.95]"
        )
    mode = cfg.task.get("mode")
    if mode not in ("min", "max"):
        raise ConfigError(f"task.mode={mode!r} must be min or max (whether a lower or a higher task.monitor is better)")
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
    task_cls = _class(cfg.task, "task")
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
            f"optimized_metric={name!r} is not logged by {task} ({named_group('task', cfg.task)}); it logs: "
            f"{', '.join(sorted(logged))}"
        )


def _check_metrics(cfg: DictConfig) -> None:
    """``task.monitor`` and ``optimized_metric`` against what the task declares (``DNAGPTTask.LOGGED_METRICS``)."""
    task, logged = _logged_metrics(cfg)
    validation = sorted(m for m in logged if m.startswith("val/"))
    monitor = OmegaConf.select(cfg, "task.monitor")
    if logged and monitor not in validation:
        raise ConfigError(
            f"task.monitor={monitor!r} is not logged by {task} ({named_group('task', cfg.task)}) at validation; it logs "
            f"{', '.join(validation)}"
        )
    check_optimized_metric(cfg)
