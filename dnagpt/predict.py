"""Batch prediction on unlabelled inputs: ``python -m dnagpt.predict task=gsr ckpt=<ckpt> input=<file> [output=...]``.

Writes one TSV row per input record, in input order: ``row``, ``name``, then the task's outputs (``p_true`` for
``gsr``, the z-scored ``prediction`` for ``expression``, ``p_<label>`` or ``prediction`` for ``classification`` and
``regression``). The steps, cheapest first: the task must make predictions (``PREDICTION_INPUT``); the checkpoint is
read once and, when it records the task it was trained for, that must be ``task=`` (a checkpoint of another task is
refused naming both); the prompt builder takes the checkpoint's tokenizer and context and the task's data config (the
prompt geometry the model was trained with: ``data.phases``, ``data.window``, ...); every record is read and turned
into prompts once (a bad one stops here, named); then ``trainer.predict`` runs under any trainer config
(``trainer=ddp_sim`` for two CPU processes, ``trainer=ddp`` on GPUs), each rank predicts its share and the
:class:`~dnagpt.inference.predictions.PredictionWriter` merges the ranks' rows in input order.

From Python: :func:`predict_file` (the command's overrides), or :func:`predict` on a composed ``predict`` config.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import hydra
from hydra import compose, initialize_config_module
from omegaconf import DictConfig, OmegaConf

from dnagpt.checkpointing import Checkpoint, read_checkpoint
from dnagpt.commands import CONF_MODULE, hydra_command
from dnagpt.config_checks import check_config, instantiate_group
from dnagpt.inference.predictions import PredictionData, PredictionWriter
from dnagpt.inference.records import Columns, RecordSource
from dnagpt.pipeline import apply_extras, module_for_evaluation, phases_as_fitted
from dnagpt.tasks.base import DNAGPTTask
from dnagpt.utils.errors import CheckpointError, ConfigError
from dnagpt.utils.pylogger import RankedLogger
from dnagpt.utils.resolvers import register_resolvers
from dnagpt.utils.task_wrapper import task_wrapper

__all__ = ["main", "predict", "predict_file"]

log = RankedLogger(__name__)

TASK_CONF = Path(__file__).resolve().parent / "conf" / "task"


def class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def task_options() -> dict[str, str]:
    """``task=`` option of each task class, from ``dnagpt/conf/task/*.yaml``: the messages name tasks as users type them."""
    return {OmegaConf.load(f).get("_target_"): f.stem for f in sorted(TASK_CONF.glob("*.yaml"))}


def predicting_task(cfg: DictConfig) -> type[DNAGPTTask]:
    """The class of ``cfg.task``, refused unless it makes predictions."""

    def predicts(target: str) -> bool:
        return getattr(hydra.utils.get_class(target), "PREDICTION_INPUT", None) is not None

    task_cls = hydra.utils.get_class(cfg.task._target_)
    if not predicts(cfg.task._target_):
        able = [name for target, name in task_options().items() if predicts(target)]
        name = task_options().get(cfg.task._target_, cfg.task._target_)
        raise ConfigError(f"task={name} makes no predictions; predict works for task={', '.join(able)}")
    return task_cls


def check_task(ckpt: Checkpoint, task_cls: type[DNAGPTTask]) -> None:
    """A checkpoint that records its task must be of ``task_cls`` (released weights and ``save_pretrained`` directories
    record none: any task may read them). Tasks are named by their config files, not by Hydra's runtime choices, which
    a process that composed several configs may hold from an earlier one."""
    if ckpt.task_class is None or ckpt.task_class == class_path(task_cls):
        return
    options = task_options()

    def called(target: str) -> str:
        return f"task={options[target]} ({target})" if target in options else target

    trained = options.get(ckpt.task_class)
    hint = f"predict with task={trained}" if trained else "predict with that task"
    raise CheckpointError(
        f"{ckpt.describe('ckpt')} was trained for {called(ckpt.task_class)}, but {called(class_path(task_cls))} was "
        f"asked; {hint}"
    )


@task_wrapper
def predict(cfg: DictConfig) -> Path:
    """The command's work from a composed ``predict`` config; returns the predictions table."""
    task_cls = predicting_task(cfg)
    check_config(cfg, stage="evaluate")
    apply_extras(cfg)
    ckpt = read_checkpoint(cfg.ckpt, key="ckpt")
    check_task(ckpt, task_cls)
    module = module_for_evaluation(cfg, ckpt, key="ckpt")
    phases_as_fitted(cfg.data, ckpt)
    prompts = task_cls.PREDICTION_INPUT(module.tokenizer, module.model.config.block_size, cfg.data, cfg.species)
    columns = Columns(**cfg.columns)
    source = RecordSource(cfg.input, cfg.format, cfg.reference, columns, cfg.paths.cache_dir, module.tokenizer)
    data = PredictionData(source, prompts, cfg.batch_size, cfg.num_workers)
    n = data.check(progress=cfg.trainer.get("enable_progress_bar", False))
    log.info(f"{n:,} records ({data.n_prompts:,} prompts) from {cfg.input}")
    writer = PredictionWriter(cfg.output, n)
    trainer = instantiate_group("trainer", cfg.trainer, callbacks=[writer], logger=False)
    with warnings.catch_warnings():
        # the writer reads rows from the batches, not Lightning's batch indices; the stream shards itself per worker
        warnings.filterwarnings("ignore", message="Couldn't infer the batch indices")
        warnings.filterwarnings("ignore", message="Your `IterableDataset` has `__len__` defined")
        trainer.predict(module, datamodule=data, return_predictions=False)
    log.info(f"Predictions: {cfg.output}")
    return Path(cfg.output)


def _quoted(value: object) -> str:
    """An override value Hydra reads as one string, whatever the path holds."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def predict_file(task: str, ckpt: str | Path, input: str | Path, output: str | Path, overrides: Sequence[str] = ()) -> Path:
    """The command from Python: ``predict_file("gsr", "last.ckpt", "windows.fa", "p.tsv", ["trainer=cpu"])`` composes
    the ``predict`` config with these overrides (outside any other Hydra app) and runs :func:`predict`."""
    register_resolvers()
    fixed = [f"task={task}", f"ckpt={_quoted(ckpt)}", f"input={_quoted(input)}", f"output={_quoted(output)}",
             f"paths.output_dir={_quoted(Path(output).resolve().parent)}"]  # fmt: skip
    with initialize_config_module(config_module=CONF_MODULE, version_base="1.3"):
        cfg = compose("predict", overrides=[*fixed, *overrides])
    return predict(cfg)


main = hydra_command("predict", predict)  # the command: python -m dnagpt.predict <overrides of dnagpt/conf/predict.yaml>


if __name__ == "__main__":
    main()
