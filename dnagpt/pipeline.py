"""Train and evaluate from a composed Hydra config: the only place that instantiates configs.

``train(cfg)`` is the lightning-hydra-template checklist, cheapest first so that a refusal costs nothing: check the config
→ read the checkpoint to resume (once) → tokenizer, data, model config → loggers, callbacks, trainer → seed → task (the
network) → initial weights → fit → test → a summary of where everything was written. Every component is built once,
through ``instantiate_group``, which turns a refused constructor argument into one ``ConfigError`` naming the group.
Entry points (``train.py``, ``evaluate.py``) only compose the config and call these inside the error boundary, so tests
import functions instead of running scripts.
"""

import json
import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from dnagpt.callbacks import preempted_step
from dnagpt.checkpointing import Checkpoint, read_checkpoint, resolve_checkpoint
from dnagpt.config_checks import check_config, instantiate_group, named_group
from dnagpt.lightning_internals import warn_if_untested
from dnagpt.tokenizer import KmerTokenizer
from dnagpt.utils.errors import MissingFileError
from dnagpt.utils.heap import keep_freed_memory
from dnagpt.utils.pylogger import RankedLogger
from dnagpt.utils.task_wrapper import task_wrapper

log = RankedLogger(__name__)


def apply_extras(cfg: DictConfig) -> None:
    extras = cfg.get("extras") or {}
    if extras.get("torch_threads"):
        torch.set_num_threads(int(extras.torch_threads))
    if extras.get("matmul_precision"):
        torch.set_float32_matmul_precision(extras.matmul_precision)
    if extras.get("keep_freed_memory"):
        keep_freed_memory()
    if extras.get("print_config"):
        log.info("Config:\n" + OmegaConf.to_yaml(cfg, resolve=True))
    warn_if_untested()


def instantiate_callbacks(cfg: DictConfig | None) -> list[Callback]:
    return [instantiate_group(f"callbacks.{name}", c, label=f"callbacks.{name}")
            for name, c in (cfg or {}).items() if c is not None and "_target_" in c]  # fmt: skip


def instantiate_loggers(cfg: DictConfig | None, resume_wandb_id: str | None = None) -> list[Logger]:
    loggers = []
    for name, lg_cfg in (cfg or {}).items():
        if lg_cfg is None or "_target_" not in lg_cfg:
            continue
        kwargs = {}
        if name == "wandb" and resume_wandb_id and not lg_cfg.get("id"):
            kwargs = {"id": resume_wandb_id, "resume": "allow"}  # a resumed run continues its W&B run
        if name == "wandb" and lg_cfg.get("offline"):
            log.info(
                f"W&B offline: the run is written under {lg_cfg.save_dir}/wandb/offline-run-*; `wandb sync` uploads its "
                "config, metrics and logs later, not the model checkpoints (they stay in checkpoints/)"
            )
        loggers.append(instantiate_group(f"logger.{name}", lg_cfg, label=f"logger.{name}", **kwargs))
    return loggers


def log_hyperparameters(cfg: DictConfig, module: L.LightningModule, trainer: Trainer) -> None:
    n_params = sum(p.numel() for p in module.parameters())
    n_trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    log.info(f"Model {cfg.model.name}: {n_params:,} parameters ({n_trainable:,} trainable)")
    if trainer.logger is None:
        return
    hparams = OmegaConf.to_container(cfg, resolve=True)
    hparams.pop("hydra", None)
    hparams["model/params/total"] = n_params
    hparams["model/params/trainable"] = n_trainable
    for logger in trainer.loggers:
        logger.log_hyperparams(hparams)


def build_model_config(cfg: DictConfig, tokenizer: KmerTokenizer) -> Any:
    """``cfg.model`` completed by the tokenizer: the vocabulary size and the number token never come from YAML."""
    label = f"{named_group('model', cfg.model)} with {named_group('tokenizer', cfg.tokenizer)}"
    return instantiate_group(
        "model", cfg.model, label=label, vocab_size=len(tokenizer), number_token_id=tokenizer.number_id
    )


def build_parts(cfg: DictConfig) -> tuple[KmerTokenizer, L.LightningDataModule, Any]:
    """Tokenizer, DataModule and model config: cheap (nothing read, nothing allocated, no random draw), so a refused
    argument stops the run before anything heavy; each is a ConfigError naming its group."""
    tokenizer = instantiate_group("tokenizer", cfg.tokenizer)
    datamodule = instantiate_group("data", cfg.data, tokenizer=tokenizer)
    return tokenizer, datamodule, build_model_config(cfg, tokenizer)


def build_task(cfg: DictConfig, tokenizer: KmerTokenizer, model_cfg: Any) -> L.LightningModule:
    """The task module (allocates and initialises the network: seed first)."""
    return instantiate_group("task", cfg.task, model_cfg=model_cfg, tokenizer_spec=tokenizer.to_dict())


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if torch.as_tensor(v).numel() == 1}


@task_wrapper
def train(cfg: DictConfig) -> dict[str, float]:
    check_config(cfg)
    apply_extras(cfg)
    output_dir = Path(cfg.paths.output_dir)
    resume = resolve_checkpoint(cfg.get("ckpt_path"), output_dir)  # read and checked before anything is built
    tokenizer, datamodule, model_cfg = build_parts(cfg)
    loggers = instantiate_loggers(cfg.get("logger"), resume_wandb_id=resume.wandb_run_id if resume else None)
    trainer: Trainer = instantiate_group(
        "trainer", cfg.trainer, callbacks=instantiate_callbacks(cfg.get("callbacks")), logger=loggers or False
    )
    L.seed_everything(cfg.seed, workers=True)
    module = build_task(cfg, tokenizer, model_cfg)
    if cfg.get("init_from"):
        module.load_weights(read_checkpoint(cfg.init_from, key="init_from"))
    if resume is not None:
        module.check_compatible(resume, key="ckpt_path")
    log_hyperparameters(cfg, module, trainer)

    trainer.fit(module, datamodule=datamodule, ckpt_path=None if resume is None else str(resume.path))
    metrics = scalar_metrics(trainer.callback_metrics)
    preempted_at = preempted_step(trainer)
    if preempted_at is not None:
        metrics["preempted_at_step"] = float(preempted_at)  # in metrics.json too: the job script can requeue on it
    if cfg.get("test") and preempted_at is None:  # a preempted run is tested when it completes
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if not best and not trainer.fast_dev_run:
            log.warning("No best checkpoint was saved; testing the current weights")
        trainer.test(module, datamodule=datamodule, ckpt_path=best or None)
        metrics.update(scalar_metrics(trainer.callback_metrics))

    if trainer.is_global_zero:
        summarize(output_dir, trainer, metrics)
    return metrics


def summarize(output_dir: Path, trainer: Trainer, metrics: dict[str, float]) -> None:
    """Write metrics.json and tell the user where the run's products are."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    lines = [f"Run finished at step {trainer.global_step}. Outputs in {output_dir}:"]
    ckpt = trainer.checkpoint_callback
    if ckpt is not None and ckpt.best_model_path:
        lines.append(f"  best checkpoint  {ckpt.best_model_path}")
    if ckpt is not None and ckpt.last_model_path:
        lines.append(f"  last checkpoint  {ckpt.last_model_path}")
    lines.append(f"  metrics          {output_dir / 'metrics.json'}")
    for path in sorted(output_dir.glob("*.png")):
        lines.append(f"  plot             {path}")
    for key in sorted(k for k in metrics if k.startswith(("val/", "test/")) and k.count("/") == 1):  # groups: metrics.json
        lines.append(f"  {key:<16} {metrics[key]:.4f}")
    log.info("\n".join(lines))


def get_metric_value(metrics: dict[str, float], name: str | None) -> float | None:
    """The value a sweep optimises; a typo in ``optimized_metric`` is an error listing what was logged."""
    if not name or "preempted_at_step" in metrics:  # a preempted run has no final value yet
        return None
    if name not in metrics:
        raise KeyError(f"optimized_metric={name!r} was not logged; logged metrics: {sorted(metrics)}")
    value = float(metrics[name])
    if not math.isfinite(value):
        raise ValueError(f"optimized_metric {name} is {value}")
    return value


def module_for_evaluation(cfg: DictConfig, ckpt: Checkpoint, key: str = "ckpt_path") -> L.LightningModule:
    """The task module of ``cfg.task`` holding the weights of ``ckpt`` (named ``key`` in messages).

    A Lightning checkpoint or a ``save_pretrained`` directory brings its own model config and tokenizer, so a
    pre-training checkpoint can be scored on a downstream task (all heads exist in every task); a released ``.pth`` is
    described by the ``model`` and ``tokenizer`` groups. Weights load strictly either way.
    """
    if ckpt.model_cfg is not None and ckpt.tokenizer_spec is not None:
        model_cfg, tokenizer_spec = ckpt.model_cfg, ckpt.tokenizer_spec
    else:
        tokenizer = instantiate_group("tokenizer", cfg.tokenizer)
        model_cfg, tokenizer_spec = build_model_config(cfg, tokenizer), tokenizer.to_dict()
    module = instantiate_group(
        "task", cfg.task, model_cfg=model_cfg, tokenizer_spec=tokenizer_spec, optimizer=None, scheduler=None
    )
    module.load_weights(ckpt, key=key)
    return module


def phases_as_fitted(data_cfg: DictConfig, ckpt: Checkpoint) -> None:
    """``data.phases: null`` (the default) scores a checkpoint as it was fitted: the mean of six phases for a six-phase
    fine-tune, the release prompt otherwise. Another value given on purpose is kept, with a warning (phase 0 alone is a
    legitimate but different measurement, e.g. the decomposition of docs/phases.md)."""
    fitted = ckpt.data_phases
    if "phases" not in data_cfg or fitted is None:
        return
    if data_cfg.phases is None:
        data_cfg.phases = fitted
        log.info(f"data.phases={fitted}, as {ckpt.path} was fitted")
    elif data_cfg.phases != fitted:
        log.warning(f"{ckpt.path} was fitted with data.phases={fitted}, this run reads data.phases={data_cfg.phases}: "
                    "leave data.phases unset to score it as it was fitted")  # fmt: skip


@task_wrapper
def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test metrics of a checkpoint, then the task's evaluation and any analysis, all written to the run directory.

    ``cfg.evaluation`` and ``cfg.analysis``, when set, are callables ``(module, datamodule, trainer, output_dir) ->
    dict[str, float]`` that write their own plots and tables; their scalars join ``metrics.json`` and ``metrics.csv``.
    """
    check_config(cfg, stage="evaluate")
    apply_extras(cfg)
    L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    ckpt = resolve_checkpoint(cfg.ckpt_path, output_dir, resumable=False)
    if ckpt is None:
        raise MissingFileError(f"ckpt_path={cfg.ckpt_path}: no checkpoint to evaluate")
    module = module_for_evaluation(cfg, ckpt)
    phases_as_fitted(cfg.data, ckpt)
    # the checkpoint fixes the language and the context; the config only chooses the data to score
    datamodule = instantiate_group("data", cfg.data, tokenizer=module.tokenizer, block_size=module.model.config.block_size)
    trainer: Trainer = instantiate_group("trainer", cfg.trainer, logger=instantiate_loggers(cfg.get("logger")) or False)
    trainer.test(module, datamodule=datamodule)
    metrics = scalar_metrics(trainer.callback_metrics)
    if trainer.is_global_zero:
        for name in ("evaluation", "analysis"):
            if cfg.get(name) and "_target_" in cfg[name]:
                metrics.update(instantiate_group(name, cfg[name])(module, datamodule, trainer, output_dir))
        summarize(output_dir, trainer, metrics)
        rows = "\n".join(f"{k},{v}" for k, v in sorted(metrics.items()))
        (output_dir / "metrics.csv").write_text(f"metric,value\n{rows}\n")
    return metrics
