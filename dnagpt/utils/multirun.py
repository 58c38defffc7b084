"""Hydra multirun (``python train.py -m``) made safe for sweeps and for DDP.

Three things go wrong in a sweep without help:

- A typo in ``optimized_metric`` surfaced only after a trial had trained, as Optuna's "Return value must be
  float-castable". ``dnagpt.config_checks.check_optimized_metric`` compares it with the metrics the task class
  declares (``DNAGPTTask.LOGGED_METRICS``) at the start of every run, and the
  ``CheckOptimizedMetric`` Hydra callback once before the first trial, so a bad sweep stops before anything is queued
  (trials may be SLURM jobs) instead of failing n_trials times.
- A trial that raises must be recorded as failed while the sweep goes on (the Optuna configs set
  ``max_failure_rate: 1.0``): ``job_scope`` leaves a multirun job's exceptions to Hydra, where a single run turns a
  ``DnagptError`` into ``SystemExit``, which would end the whole sweep.
- Lightning's plain ``ddp`` starts the other ranks by re-running the script with ``sys.argv``. Under ``-m`` that is the
  whole sweep: each child re-ran every trial (with an unseeded sampler, at other learning rates than its rank 0).
  ``job_scope`` makes ``sys.argv`` this job's own overrides and points ``hydra.run.dir`` (which Lightning hands to
  the children) at this job's output dir; afterwards it tears down the process group and the rendezvous variables,
  else the next job believes it was launched externally and waits for ranks that never come.
"""

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, read_write

from dnagpt.config_checks import check_optimized_metric
from dnagpt.utils.errors import ConfigError, error_boundary
from dnagpt.utils.resolvers import in_multirun

# what Lightning's subprocess launcher sets in the launching process's own environment
DDP_ENV = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class CheckOptimizedMetric(Callback):
    """Hydra callback: check ``optimized_metric`` once, before a multirun launches its first job.

    Only that key: the rest of the primary config holds defaults that the sweep replaces per job. Hydra turns a
    callback's exception into a warning, so a refusal leaves through ``SystemExit`` (even under ``HYDRA_FULL_ERROR``).
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            check_optimized_metric(config)
        except ConfigError as err:
            sys.exit(err.report())


@contextmanager
def job_scope() -> Iterator[None]:
    """How an entry point runs its job.

    A single run turns an anticipated error (``DnagptError``) into its message and exit status 1 (``error_boundary``).
    A multirun job lets every error through, so that the sweeper records the trial as failed and goes on (a
    ``SystemExit`` would end the whole sweep), and is isolated for subprocess DDP: ``sys.argv`` becomes this job's
    overrides, ``hydra.run.dir`` its output dir, and afterwards the process group and rendezvous variables are gone.
    The rewrite is harmless when nothing re-launches the script (W&B then records the job's own command line), so it
    applies whatever the strategy.
    """
    if not in_multirun():
        with error_boundary():
            yield
        return
    hydra_cfg = HydraConfig.get()
    argv = sys.argv
    env = {k: os.environ.get(k) for k in DDP_ENV}
    # hydra.mode=RUN: a config group in this job's overrides (hparams_search=...) may set hydra.mode: MULTIRUN itself
    sys.argv = [argv[0], *hydra_cfg.overrides.task, "hydra.mode=RUN"]
    with read_write(hydra_cfg.run):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir
    try:
        yield
    finally:
        sys.argv = argv
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
