"""Every command the documents show runs here in a short form, or says why it cannot (a GPU, the network).

The table ``COMMANDS`` is keyed by the command lines found in README.md, docs/*.md (fenced code blocks) and the header
comments of dnagpt/conf/experiment/*.yaml and dnagpt/conf/hparams_search/*.yaml (``# python ...`` lines), so a
documented command that the table does not know, or an entry that no document shows any more, fails the first test: a
new or changed command line is run here before it is published, and a command the code no longer runs fails its own
case.

A short form is the documented command itself with its placeholders filled (``<ckpt>`` by the checkpoint of the
documented command that makes it, run once per session; ``<released .pth>`` by the session's tiny model saved under the
release's key names), then overrides that make it fast: conftest's FAST, a small model (``TINY``), one trial, a few
haplotypes; later overrides win, as in Hydra. Train and evaluate run in-process through ``dnagpt.pipeline``; ``-m``
runs Hydra's own multirun in-process (``train.py`` run as ``__main__``); download.py (against a local server), make, the
shell script and one ``-m`` run as real processes, where the entry point is the thing documented. A command that needs
a GPU or the network is composed as documented and passed through ``check_config`` as on a CUDA machine, which catches
a renamed option, a refused value or a batch that does not divide.
"""

import itertools
import logging
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path

import pytest
import torch
from conftest import FAST, ROOT, SMALL_MODEL, compose_cfg
from http_files import serving
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, open_dict

from dnagpt.checkpointing import read_checkpoint
from dnagpt.config_checks import check_config
from dnagpt.model.config import GPTConfig
from dnagpt.model.gpt import DNAGPT
from dnagpt.model.pretrained import RELEASE_RENAMES, load_release_state_dict, save_pretrained
from dnagpt.pipeline import build_parts, evaluate, train
from download import compose_config

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
HEADERS = [
    *sorted((ROOT / "dnagpt" / "conf" / "experiment").glob("*.yaml")),
    *sorted((ROOT / "dnagpt" / "conf" / "hparams_search").glob("*.yaml")),
]
# how a documented command line starts
PROGRAM = re.compile(
    r"(python3? (train|evaluate|download)\.py|python3? -m bench\S*|(python3? )?scripts/\S+|make|wandb|srun|torchrun)(\s|$)"
)
ENTRY_POINTS = ("train.py", "evaluate.py")
BUNDLED = ROOT / "dnagpt" / "resources" / "bundled"
# the session's model: 160 positions hold GSR's 102-token prompts and the 136-token haplotypes fine-tuned from it
TINY = (*SMALL_MODEL, "model.block_size=160")
ENV = {"OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "1"}


# ---- the commands the documents show -------------------------------------------------------------------------------
def as_command(text: str) -> str | None:
    """``text`` without its ``# comment``, in single spaces, if it is a command line."""
    text = " ".join(re.sub(r"(^|\s)#.*", "", text).split())
    return text if PROGRAM.match(text) else None


def fenced_commands(markdown: str) -> Iterator[str]:
    """Command lines of the fenced code blocks, continuation lines (``\\``) joined."""
    inside, pending = False, ""
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            inside, pending = not inside, ""
        elif inside and line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
        elif inside:
            if command := as_command(pending + line):
                yield command
            pending = ""


def header_commands(yaml_text: str) -> Iterator[str]:
    """Command lines of a config's leading comment, also after a step number (``1.``) or ``then:``, without a closing
    remark in parentheses."""
    for line in itertools.takewhile(lambda line: line.startswith("#"), yaml_text.splitlines()):
        body = re.sub(r"^(\d+\.|then:)\s*", "", line[1:].strip(), flags=re.IGNORECASE)
        if command := as_command(re.sub(r"\s{2,}\(.*\)$", "", body)):
            yield command


def documented_commands() -> dict[str, list[str]]:
    """Each documented command line and the files that show it."""
    found: dict[str, list[str]] = {}
    for path, commands in [(p, fenced_commands) for p in DOCUMENTS] + [(p, header_commands) for p in HEADERS]:
        for command in commands(path.read_text()):
            found.setdefault(command, []).append(str(path.relative_to(ROOT)))
    return found


# ---- what fills a placeholder: another documented command's product, or a file made from the session's model ---------
Fill = Callable[["Runs"], str]


def last(command: str) -> Fill:
    return lambda runs: str(runs.get(command).dir / "checkpoints" / "last.ckpt")


def best(command: str) -> Fill:
    return lambda runs: str(runs.best(command))


def run_dir(command: str) -> Fill:
    return lambda runs: str(runs.get(command).dir)


def copy_of(command: str) -> Fill:
    """A copy of the command's run directory, to resume in (the original stays for the commands that read it)."""
    return lambda runs: runs.copy(runs.get(command).dir)


def released(runs: "Runs") -> str:
    return runs.release_pth()


def random_release(*overrides: str) -> Fill:
    return lambda runs: runs.release_pth(*overrides)


def pretrained(runs: "Runs") -> str:
    return runs.pretrained_dir()


@dataclass(frozen=True)
class Case:
    """How one documented command runs here."""

    fill: Mapping[str, str | Fill | tuple[Fill, ...]] = field(default_factory=dict)  # text -> value (a tuple: one run each)
    short: tuple[str, ...] = ()  # appended last (later wins): what makes the run fast
    model: tuple[str, ...] = TINY  # the shape of a train/evaluate run's model, before ``short``
    expect: tuple[str, ...] = ()  # globs under the run directory that must match
    said: tuple[str, ...] = ()  # text the run must log or print
    needs: str = ""  # "gpu: ..." or "network: ...": composed and checked only
    process: bool = False  # a train/evaluate command run as a real process
    fast: bool = False  # in the default (not slow) set


MAIN = "python train.py"
FIRST = "python train.py hydra.run.dir=logs/train/runs/my_run ..."
GSR = "python train.py task=gsr init_from=<pretrain .ckpt>"
EXPRESSION = "python train.py task=expression init_from=<pretrain .ckpt>"
EXPRESSION_EPOCHS = (
    "python train.py task=expression init_from=<pretrain>/checkpoints/last.ckpt trainer=cpu trainer.max_steps=-1 "
    "trainer.max_epochs=10 trainer.val_check_interval=1.0 trainer.check_val_every_n_epoch=1 "
    "callbacks.model_checkpoint.every_n_train_steps=null data.phases=6 task.optimizer.lr=3e-4"
)
YELMEN = "python train.py experiment=genomes_yelmen805"
DENSE = "python train.py experiment=genomes_dense"
PAS = "python train.py experiment=finetune_gsr_pas init_from=/path/to/dna_gpt0.1b_m.pth"
PRE_H = "python train.py corpus=bundled_human trainer.max_steps=300 hydra.run.dir=runs/pre_h"
PRE_M = "python train.py corpus=bundled trainer.max_steps=300 hydra.run.dir=runs/pre_m"
FT_H = "python train.py experiment=cross_species_gsr init_from=runs/pre_h/checkpoints/last.ckpt hydra.run.dir=runs/ft_h"
SPECIES_WINDOWS = "python train.py experiment=species_windows"
REGRESSION = "python train.py task=regression init_from=<pre-training .ckpt>"
GUE = "python train.py task=classification data.path=/data/GUE/EMP/H3 data.species=yeast init_from=<pre-training .ckpt>"

WINDOW = "data.window=[-150,150]"  # an expression prompt that 160 positions hold
ON_CPU = ("model=tiny", "trainer=cpu")  # a recipe's 0.1B preset on a GPU, short: the session's tiny model on CPU
ONE_TRIAL = "hydra.sweeper.n_trials=1"
FEW = "generation.n=8"
FEW_WINDOWS = "analysis.max_windows=8"
SWEEP = ("0/metrics.json", "optimization_results.yaml")
EVALUATED = ("metrics.json", "metrics.csv")
MANY_GPUS = "gpu: trainer=ddp on 8 CUDA GPUs"
MULTISPECIES = "the nine genomes of python download.py corpus=multispecies (network)"
SLURM = "gpu: a SLURM cluster with GPUs (hydra/launcher=slurm)"
DEEPGSR = "network: the DeepGSR FASTA files on GitHub (tests/test_gsr_download.py serves them on 127.0.0.1)"
FULL_GSR = f"gpu: the paper's GSR recipe on the full sets of {DEEPGSR.removeprefix('network: ')}"
# DNAGPT-H's vocabulary and the 1,753 positions of the recipe's 10.5 kb promoter, short: a random tiny model of that shape
H_SHAPE = ("tokenizer=kmer6_fixed", "model.block_size=1760")
# docs/phases.md: the six-phase commands and the recipe of its measurements (the full PAS file, short: the shipped subset)
PHASES_GSR = "python train.py task=gsr data.phases=6 init_from=<pretrain .ckpt>"
FULL_PAS = "/path/to/gsr_pas_deepgsr_4species.tsv.gz"
SHIPPED_PAS = {FULL_PAS: str(BUNDLED.parent / "gsr" / "pas_subset.tsv.gz")}
PHASES_RECIPE = (
    f"python train.py task=gsr trainer=cpu logger=csv data.files.pas={FULL_PAS} 'data.species.pas=[human]' "
    "data.batch_size=32 trainer.max_steps=600 trainer.max_epochs=-1 trainer.val_check_interval=150 "
    "trainer.check_val_every_n_epoch=null trainer.limit_val_batches=16 task.scheduler.warmup_steps=50 "
    "extras.torch_threads=1 data.phases=6 data.train_phases=random"
)

COMMANDS: dict[str, Case] = {
    # README.md
    "make train": Case(expect=("metrics.json", "checkpoints/last.ckpt")),
    "make test": Case(short=("--collect-only", "-p", "no:cacheprovider", "tests/test_tokenizer.py"), said=("collected",)),
    MAIN: Case(expect=("checkpoints/last.ckpt", "loss_curve.png", "csv/metrics.csv"), fast=True),
    "python train.py debug=fdr": Case(fast=True),
    "python download.py corpus=multispecies": Case(expect=("genomes/SHA256SUMS",), said=("human: ", "zebrafish: ")),
    "python train.py experiment=pretrain_human trainer=ddp trainer.devices=8 logger=wandb": Case(
        needs=f"{MANY_GPUS}, the 0.1B preset on GRCh38 from python download.py corpus=human (network)"
    ),
    "python train.py experiment=pretrain_multispecies trainer=ddp trainer.devices=8 logger=wandb": Case(
        needs=f"{MANY_GPUS}, {MULTISPECIES}"
    ),
    "python train.py ckpt_path=auto hydra.run.dir=<run dir>": Case(
        fill={"<run dir>": copy_of(FIRST)}, said=("ckpt_path=auto: resuming from",)
    ),
    "python train.py init_from=<ckpt | save_pretrained dir | released .pth>": Case(
        fill={"<ckpt | save_pretrained dir | released .pth>": (last(MAIN), pretrained, released)},
        said=("Initialised weights from",),
    ),
    "python evaluate.py ckpt_path=<ckpt>": Case(fill={"<ckpt>": last(MAIN)}, expect=EVALUATED, fast=True),
    "python train.py logger=many logger.wandb.offline=true": Case(
        expect=("**/offline-run-*/run-*.wandb", "csv/metrics.csv")
    ),
    GSR: Case(fill={"<pretrain .ckpt>": last(MAIN)}, said=("Initialised weights from",), fast=True),
    "python evaluate.py task=gsr ckpt_path=<ckpt> analysis=attention": Case(
        fill={"<ckpt>": last(GSR)}, short=(FEW_WINDOWS,), expect=(*EVALUATED, "gsr_metrics.csv", "attention_profile.png")
    ),
    EXPRESSION: Case(fill={"<pretrain .ckpt>": last(MAIN)}, short=(WINDOW,)),
    "python evaluate.py task=expression ckpt_path=<ckpt>": Case(fill={"<ckpt>": last(EXPRESSION)}, short=(WINDOW,)),
    "python train.py experiment=finetune_gsr_pas 'data.species.pas=[human]' init_from=<released .pth>": Case(
        fill={"<released .pth>": released}, short=ON_CPU
    ),
    YELMEN: Case(expect=("checkpoints/last.ckpt",)),
    "python evaluate.py task=genomes ckpt_path=<ckpt> generation.n=5008 generation.temperature=1.0": Case(
        fill={"<ckpt>": last(YELMEN)}, short=(FEW,), expect=("genomes_metrics.csv",)
    ),
    "python evaluate.py -m task=genomes ckpt_path=<ckpt> generation.temperature=0.7,0.85,1.0,1.15,1.3": Case(
        fill={"<ckpt>": last(YELMEN), "0.7,0.85,1.0,1.15,1.3": "0.7,1.3"},
        short=(FEW,),
        expect=("1/metrics.json", "genomes_sweep.csv"),
        process=True,
    ),
    "python train.py experiment=pretrain_multispecies trainer=gpu trainer.accumulate_grad_batches=8 "
    "trainer.val_check_interval=16000 logger=wandb": Case(needs=f"gpu: trainer=gpu, {MULTISPECIES}"),
    "torchrun --nnodes=4 --nproc_per_node=8 --node_rank=$NODE_RANK --master_addr=$MASTER_ADDR --master_port=29500 "
    "train.py experiment=pretrain_multispecies trainer=ddp trainer.devices=8 trainer.num_nodes=4 logger=wandb "
    "hydra.run.dir=logs/pretrain_multispecies/runs/$RUN_ID": Case(needs="gpu: 4 nodes x 8 CUDA GPUs under torchrun"),
    "srun python train.py experiment=pretrain_multispecies trainer=ddp trainer.devices=8 trainer.num_nodes=4 "
    "logger=wandb hydra.run.dir=logs/pretrain_multispecies/runs/slurm_$SLURM_JOB_ID ckpt_path=auto": Case(
        needs="gpu: 4 nodes x 8 CUDA GPUs under SLURM"
    ),
    "python train.py experiment=pretrain_multispecies model=dnagpt_3b_m trainer=fsdp trainer.devices=8 logger=wandb": Case(
        needs="gpu: FSDP runs on CUDA only (8 GPUs for the 3B preset)"
    ),
    "python train.py experiment=pretrain_multispecies trainer=ddp trainer.devices=2 data.batch_size=512 "
    "trainer.accumulate_grad_batches=16 trainer.val_check_interval=32000 logger=wandb": Case(
        needs=f"gpu: trainer=ddp on 2 CUDA GPUs, {MULTISPECIES}"
    ),
    # docs/expression.md
    EXPRESSION_EPOCHS: Case(
        fill={"<pretrain>": run_dir(MAIN)}, short=("trainer.max_epochs=1", "+trainer.limit_train_batches=2", WINDOW)
    ),
    "python evaluate.py task=expression ckpt_path=<run>/checkpoints/<best>.ckpt": Case(
        fill={"<run>/checkpoints/<best>.ckpt": best(EXPRESSION_EPOCHS)}, short=(WINDOW,), expect=EVALUATED
    ),
    "python train.py experiment=finetune_expression init_from=<DNAGPT-H checkpoint or released dna_gpt0.1b_h .pth>": Case(
        fill={"<DNAGPT-H checkpoint or released dna_gpt0.1b_h .pth>": random_release(*H_SHAPE)}, short=(*ON_CPU, *H_SHAPE)
    ),
    "python train.py experiment=finetune_expression init_from=... "
    "data.path=/data/Roadmap_FantomAnnotations.InputData.pM10Kb.txt.gz data.sequence_length=20000 data.tss_index=10000 "
    "data.id_column=ENSID data.label_column=EXPRESSION data.sequence_column=PROMOTER data.coordinate_columns=null "
    "'data.feature_columns=[UTR5LEN,CDSLEN,INTRONLEN,UTR3LEN,UTR5GC,CDSGC,UTR3GC,ORFEXONDENSITY]' "
    "'data.log10_columns=[EXPRESSION,UTR5LEN,CDSLEN,INTRONLEN,UTR3LEN,ORFEXONDENSITY]' "
    "data.split=ordered data.val_size=1000 data.test_size=1000": Case(
        needs="network: the full Xpresso table (not shipped) and a DNAGPT-H checkpoint (GPU-sized)"
    ),
    # docs/fault_tolerance.md
    FIRST: Case(fill={"...": ""}, short=("trainer.max_steps=2",), expect=("checkpoints/last.ckpt",)),
    "python train.py hydra.run.dir=logs/train/runs/my_run ckpt_path=auto ...": Case(
        fill={"logs/train/runs/my_run": copy_of(FIRST), "...": ""}, said=("ckpt_path=auto: resuming from",)
    ),
    "srun python train.py experiment=pretrain_multispecies trainer=ddp ckpt_path=auto hydra.run.dir=$RUN": Case(
        needs=f"gpu: SLURM with CUDA GPUs (trainer=ddp), {MULTISPECIES}"
    ),
    # docs/genomes.md
    "python train.py experiment=genomes_finetune init_from=<pretrain ckpt>": Case(fill={"<pretrain ckpt>": last(MAIN)}),
    DENSE: Case(model=("model.n_layer=1", "model.n_head=2", "model.n_embd=32"), short=("data.batch_size=2",)),
    "python evaluate.py task=genomes data.panel=dense ckpt_path=<dense ckpt> generation.n=900": Case(
        fill={"<dense ckpt>": last(DENSE)}, short=("generation.n=2",), expect=("genomes_metrics.csv",)
    ),
    # docs/finetune_tables.md and dnagpt/conf/experiment/species_windows.yaml
    SPECIES_WINDOWS: Case(),
    "python train.py experiment=species_windows init_from=<pre-training run>/checkpoints/last.ckpt": Case(
        fill={"<pre-training run>": run_dir(MAIN)}, said=("Initialised weights from",)
    ),
    "python evaluate.py task=classification ckpt_path=<run>/checkpoints/last.ckpt": Case(
        fill={"<run>": run_dir(SPECIES_WINDOWS)},
        short=("evaluation.kmer=3", "evaluation.C=1.0"),
        expect=("classification_metrics.csv", "classification_confusion_test.png"),
    ),
    "python train.py task=classification data.path=dnagpt/resources/gsr/pas_subset.tsv.gz data.species_column=species "
    "task.readout=head": Case(),
    REGRESSION: Case(fill={"<pre-training .ckpt>": last(MAIN)}),
    "python evaluate.py task=regression ckpt_path=<run>/checkpoints/last.ckpt": Case(
        fill={"<run>": run_dir(REGRESSION)}, expect=("regression_metrics.csv", "regression_scatter_test.png")
    ),
    GUE: Case(needs="network: the GUE benchmark of DNABERT-2 is not shipped"),
    "python train.py task=classification data.path=/data/genomic_benchmarks/human_nontata_promoters data.species=human "
    "init_from=<pre-training .ckpt>": Case(needs="network: Genomic Benchmarks are downloaded by their own package"),
    # docs/gsr.md
    "python train.py task=gsr init_from=<pre-training .ckpt>": Case(fill={"<pre-training .ckpt>": last(MAIN)}),
    "python train.py experiment=finetune_gsr_pas init_from=dna_gpt0.1b_m.pth": Case(
        fill={"dna_gpt0.1b_m.pth": released}, short=ON_CPU
    ),
    "python train.py experiment=finetune_gsr_pas 'data.species.pas=[human]' init_from=dna_gpt0.1b_m.pth": Case(
        fill={"dna_gpt0.1b_m.pth": released}, short=ON_CPU
    ),
    "python train.py experiment=finetune_gsr_tis init_from=dna_gpt0.1b_m.pth": Case(
        fill={"dna_gpt0.1b_m.pth": released}, short=ON_CPU
    ),
    "python evaluate.py task=gsr ckpt_path=<ckpt>": Case(fill={"<ckpt>": last(GSR)}, expect=("gsr_metrics.csv",)),
    "python evaluate.py task=gsr ckpt_path=dna_gpt0.1b_m.pth model=dnagpt_0.1b_m": Case(
        fill={"dna_gpt0.1b_m.pth": released}, short=("model=tiny",), expect=("gsr_metrics.csv",)
    ),
    "scripts/cross_species_gsr.sh runs/xs 300 300": Case(fill={"runs/xs": "{fresh}", "300 300": "4 4"}, said=("H acc",)),
    # docs/gsr_data.md
    "python download.py dataset=deepgsr_pas": Case(needs=DEEPGSR),
    "python download.py dataset=deepgsr_pas_aataaa": Case(needs=DEEPGSR),
    "python download.py dataset=gsr_tis dataset.copy_from=/path/to/gsr_tis_3species.tsv.gz": Case(
        fill={"/path/to/gsr_tis_3species.tsv.gz": str(BUNDLED.parent / "gsr" / "tis_subset.tsv.gz")},
        short=("dataset.sha256=null",),  # the shipped subset, not the pinned full table
        expect=("gsr/gsr_tis_3species.tsv.gz",),
    ),
    "python train.py experiment=finetune_gsr_pas data=gsr_full init_from=/path/to/dna_gpt0.1b_m.pth": Case(needs=FULL_GSR),
    "python train.py experiment=finetune_gsr_tis data=gsr_full init_from=/path/to/dna_gpt0.1b_m.pth": Case(needs=FULL_GSR),
    # docs/sweeps.md
    "python train.py -m hparams_search=pretrain_optuna": Case(short=(ONE_TRIAL,), expect=SWEEP),
    "python train.py -m hparams_search=gsr_optuna": Case(short=(ONE_TRIAL,), expect=SWEEP),
    "python train.py -m hparams_search=expression_optuna": Case(short=(ONE_TRIAL, WINDOW), expect=SWEEP),
    "python train.py -m hparams_search=genomes_optuna experiment=genomes_yelmen805": Case(short=(ONE_TRIAL,), expect=SWEEP),
    "python train.py -m hparams_search=pretrain_optuna hydra.sweeper.n_trials=50 trainer.max_steps=2000": Case(
        short=(ONE_TRIAL, "trainer.max_steps=4"), expect=SWEEP
    ),
    "python train.py -m hparams_search=gsr_optuna init_from=<pretrain .ckpt> model.n_embd=256": Case(
        fill={"<pretrain .ckpt>": last(MAIN)},
        short=(ONE_TRIAL,),
        expect=SWEEP,  # TINY: the session model's width
    ),
    "python train.py -m hparams_search=pretrain_optuna hydra.sweeper.storage=sqlite:///optuna.db": Case(
        fill={"optuna.db": "{fresh}/optuna.db"}, short=(ONE_TRIAL,), expect=SWEEP
    ),
    "python train.py -m hparams_search=pretrain_optuna 'task.optimizer.lr=tag(log,interval(1e-4,1e-2))'": Case(
        short=(ONE_TRIAL,), expect=SWEEP
    ),
    "wandb login": Case(needs="network: W&B sweeps need the W&B server"),
    "wandb sweep sweeps/wandb_pretrain.yaml": Case(needs="network: W&B sweeps need the W&B server"),
    "wandb agent <entity>/dnagpt/<sweep id>": Case(needs="network: W&B sweeps need the W&B server"),
    "wandb agent --count 1 <entity>/dnagpt/<sweep id>": Case(needs="network: W&B sweeps need the W&B server"),
    "python train.py -m hydra/launcher=submitit_local task.optimizer.lr=1e-3,3e-4": Case(
        fill={"1e-3,3e-4": "1e-3"}  # one job in its own process (tests/test_sweeps.py runs two)
    ),
    "python train.py -m hydra/launcher=slurm hydra.launcher.partition=<gpu partition> trainer=ddp trainer.devices=8 "
    "hparams_search=pretrain_optuna hydra.sweeper.n_jobs=4": Case(needs=SLURM),
    "python train.py -m hydra/launcher=slurm hydra.launcher.partition=<p> hydra.launcher.timeout_min=2880 trainer=ddp "
    "trainer.devices=4 trainer.num_nodes=2 experiment=pretrain_human task.optimizer.lr=1e-4,3e-4": Case(needs=SLURM),
    "python train.py -m trainer=ddp trainer.devices=8 task.optimizer.lr=1e-4,3e-4": Case(needs=MANY_GPUS),
    "python train.py hparams_search=pretrain_optuna trainer=ddp trainer.devices=8": Case(needs=MANY_GPUS),
    # docs/tracking.md
    "wandb login && wandb sync logs/train/runs/<date>_<time>/wandb": Case(needs="network: wandb sync uploads to W&B"),
    # dnagpt/conf/experiment/*.yaml
    "python train.py experiment=cross_species_gsr init_from=<pre-training ckpt> hydra.run.dir=<dir>": Case(
        fill={"<pre-training ckpt>": last(MAIN), "<dir>": "runs/ft"}
    ),
    PRE_H: Case(short=("trainer.max_steps=4",)),
    PRE_M: Case(short=("trainer.max_steps=4",)),
    FT_H: Case(fill={"runs/pre_h/checkpoints/last.ckpt": last(PRE_H)}),
    "python train.py experiment=cross_species_gsr init_from=runs/pre_m/checkpoints/last.ckpt hydra.run.dir=runs/ft_m": Case(
        fill={"runs/pre_m/checkpoints/last.ckpt": last(PRE_M)}
    ),
    "python evaluate.py task=gsr ckpt_path=runs/ft_h/checkpoints/last.ckpt hydra.run.dir=runs/ev_h": Case(
        fill={"runs/ft_h/checkpoints/last.ckpt": last(FT_H)}, expect=("gsr_metrics.csv",)
    ),
    "python train.py experiment=finetune_expression init_from=<DNAGPT-H checkpoint: experiment=pretrain_human or the "
    "released dna_gpt0.1b_h .pth>": Case(
        fill={
            "<DNAGPT-H checkpoint: experiment=pretrain_human or the released dna_gpt0.1b_h .pth>": random_release(*H_SHAPE)
        },
        short=(*ON_CPU, *H_SHAPE),
    ),
    # docs/phases.md
    PHASES_GSR: Case(fill={"<pretrain .ckpt>": last(MAIN)}),
    "python evaluate.py task=gsr ckpt_path=<six-phase ckpt>": Case(
        fill={"<six-phase ckpt>": last(PHASES_GSR)}, expect=("gsr_metrics.csv",)
    ),
    "python train.py task=expression data.phases=6 init_from=<pretrain .ckpt>": Case(
        fill={"<pretrain .ckpt>": last(MAIN)}, short=(WINDOW,)
    ),
    PHASES_RECIPE: Case(fill=SHIPPED_PAS),
    f"python evaluate.py task=gsr ckpt_path=<best ckpt> data.files.pas={FULL_PAS} 'data.species.pas=[human]' "
    "extras.torch_threads=1 data.phases=1": Case(
        fill={"<best ckpt>": best(PHASES_RECIPE), **SHIPPED_PAS}, expect=("gsr_metrics.csv",)
    ),
    "python train.py task=expression init_from=<pre-training run>/checkpoints/step0000500.ckpt trainer=cpu logger=csv "
    "trainer.max_steps=-1 trainer.max_epochs=10 trainer.val_check_interval=1.0 trainer.check_val_every_n_epoch=1 "
    "callbacks.model_checkpoint.every_n_train_steps=null extras.torch_threads=1 data.phases=6 "
    "data.train_phases=random": Case(
        fill={"<pre-training run>/checkpoints/step0000500.ckpt": last(MAIN)},
        short=("trainer.max_epochs=1", "+trainer.limit_train_batches=2", WINDOW),
    ),
    # docs/results.md: the runs of the results table read the unshipped chromosomes and full GSR sets
    # (tests/test_results_script.py runs scripts/results.py at smoke scale on the shipped data)
    "python train.py experiment=pretrain_cpu corpus.root=/path/to/shared/data ckpt_path=auto "
    "hydra.run.dir=<its run dir>": Case(
        needs="network: the six whole chromosomes of corpus=chromosomes are not shipped"
    ),
    "python scripts/results.py --data-root /path/to/shared/data": Case(
        needs="network: the chromosomes and the full GSR sets are downloaded, not shipped"
    ),
    "python scripts/results.py --data-root /path/to/shared/data "
    "--only pretrain,pretrain_human,pas_human,pas_mouse,pas_bovine,pas_fruitfly,tis_yeast,tis_arabidopsis,expression "
    "--arms pretrained random pretrained_human": Case(
        needs="network: the chromosomes and the full GSR sets are downloaded, not shipped"
    ),
    "python scripts/results.py --data-root /path/to/shared/data --only pretrain_human": Case(
        needs="network: human chr20 of corpus=chromosomes_human is not shipped"
    ),
    # (tests/test_markov.py runs scripts/markov_grid.py on the bundled corpus)
    "python scripts/markov_grid.py corpus.root=/path/to/shared/data": Case(
        needs="network: the six whole chromosomes of corpus=chromosomes are not shipped"
    ),
    "python scripts/markov_grid.py corpus.root=/path/to/shared/data --ckpt <pre-training>/checkpoints/last.ckpt": Case(
        needs="network: the six whole chromosomes of corpus=chromosomes are not shipped"
    ),
    "python train.py -m hparams_search=gsr_optuna experiment=finetune_gsr_cpu data.signals=[pas] data.species.pas=[human] "
    "data.files.pas=/path/to/gsr_pas_deepgsr_4species.tsv.gz trainer.max_steps=500 trainer.val_check_interval=100 "
    "trainer.limit_val_batches=20 test=false task.scheduler.warmup_steps=50 "
    "'task.optimizer.lr=tag(log,interval(1e-4,3e-3))' 'task.optimizer.weight_decay=interval(0.0,0.2)' "
    "'model.dropout=interval(0.0,0.3)' 'model.n_embd=choice(128,256)' 'task.readout=choice(answer,mean)' "
    "extras.torch_threads=1 hydra.sweep.dir=<sweep dir>": Case(
        needs="network: the full deduplicated PAS set is downloaded, not shipped"
    ),
    # (tests/test_sweeps.py runs scripts/sweep_report.py on a real sweep's folder)
    "python scripts/sweep_report.py <sweep dir> --doc docs/results.md": Case(
        needs="network: it reads the folder of the sweep above, which needs the full PAS set"
    ),
    "python train.py experiment=pretrain_cpu corpus.root=/path/to/shared/data": Case(
        needs="network: the six whole chromosomes of corpus=chromosomes are not shipped"
    ),
    PAS: Case(fill={"/path/to/dna_gpt0.1b_m.pth": released}, short=ON_CPU),
    "python evaluate.py task=gsr model=dnagpt_0.1b_m ckpt_path=<output_dir>/checkpoints/last.ckpt analysis=attention": Case(
        fill={"<output_dir>/checkpoints/last.ckpt": last(PAS)},
        short=(FEW_WINDOWS,),
        expect=("gsr_metrics.csv", "attention_profile.png"),
    ),
    "python train.py experiment=finetune_gsr_cpu data.files.pas=/path/to/gsr_pas_deepgsr_4species.tsv.gz "
    "data.species.pas=[human]": Case(
        fill={"/path/to/gsr_pas_deepgsr_4species.tsv.gz": str(BUNDLED.parent / "gsr" / "pas_subset.tsv.gz")},
        short=("trainer.max_steps=4", "trainer.val_check_interval=2", "task.scheduler.warmup_steps=1"),
    ),
    "python train.py experiment=finetune_gsr_tis init_from=/path/to/dna_gpt0.1b_m.pth": Case(
        fill={"/path/to/dna_gpt0.1b_m.pth": released}, short=ON_CPU
    ),
    "python evaluate.py task=genomes data.panel=dense ckpt_path=<run>/checkpoints/last.ckpt generation.n=900": Case(
        fill={"<run>/checkpoints/last.ckpt": last(DENSE)}, short=("generation.n=2",)
    ),
    "python train.py experiment=genomes_finetune init_from=<pre-training run>/checkpoints/last.ckpt": Case(
        fill={"<pre-training run>": run_dir(MAIN)}
    ),
    "python evaluate.py task=genomes ckpt_path=<run>/checkpoints/last.ckpt generation.n=5008": Case(
        fill={"<run>/checkpoints/last.ckpt": last(YELMEN)}, short=(FEW,)
    ),
    # dnagpt/conf/hparams_search/*.yaml
    **{
        f"python train.py -m hparams_search={task}_optuna [experiment=...]": Case(
            fill={"[experiment=...]": experiment}, short=(ONE_TRIAL, *extra), expect=SWEEP
        )
        for task, experiment, extra in [
            ("expression", "", (WINDOW,)),
            ("genomes", "experiment=genomes_yelmen805", ()),
            ("gsr", "", ()),
            ("pretrain", "", ()),
        ]
    },
}


# ---- running the short forms -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    dir: Path  # the run (or sweep) directory
    log: str  # what the run logged (dnagpt's loggers) or printed (a process)


@contextmanager
def captured_log() -> Iterator[StringIO]:
    """dnagpt's log records at INFO and above, kept in memory (Hydra's job logging may replace the root handlers)."""
    logger, text = logging.getLogger("dnagpt"), StringIO()
    handler, level = logging.StreamHandler(text), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield text
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@contextmanager
def entry_point(argv: list[str]) -> Iterator[None]:
    """``sys.argv`` and the root logger as a script run leaves them, restored afterwards."""
    root, saved_argv = logging.getLogger(), sys.argv
    handlers, level = list(root.handlers), root.level
    sys.argv = argv
    try:
        yield
    finally:
        sys.argv = saved_argv
        for handler in set(root.handlers) - set(handlers):
            handler.close()
        root.handlers[:], root.level = handlers, level
        GlobalHydra.instance().clear()


class Runs:
    """The short forms, each run at most once per session (memoised on its final command line), under ``root``."""

    def __init__(self, root: Path, cache_dir: Path) -> None:
        self.root, self.cache_dir = root, cache_dir
        self.counter = itertools.count()
        self.argvs: dict[tuple[str, int], list[str]] = {}
        self.done: dict[tuple[str, ...], Run | Exception] = {}

    def fresh(self, name: str = "run") -> Path:
        path = self.root / f"{name}{next(self.counter)}"
        path.mkdir(parents=True)
        return path

    def copy(self, directory: Path) -> str:
        target = self.root / f"copy{next(self.counter)}"
        shutil.copytree(directory, target)
        return str(target)

    def paths(self, run: Path) -> list[str]:
        return [f"paths.cache_dir={self.cache_dir}", f"paths.log_dir={run / 'logs'}"]

    def argv(self, command: str, variant: int = 0) -> list[str]:
        """The documented command with its placeholders filled (each replaced once, longest first)."""
        if (command, variant) not in self.argvs:
            fill = COMMANDS[command].fill
            pattern = re.compile("|".join(re.escape(key) for key in sorted(fill, key=len, reverse=True)))

            def value(match: re.Match) -> str:
                given = fill[match.group(0)]
                given = given[variant] if isinstance(given, tuple) else given
                return given(self) if callable(given) else given.replace("{fresh}", str(self.fresh("scratch")))

            self.argvs[command, variant] = shlex.split(pattern.sub(value, command) if fill else command)
        return self.argvs[command, variant]

    def get(self, command: str, variant: int = 0) -> Run:
        case, argv = COMMANDS[command], self.argv(command, variant)
        key = (*argv, "|", *case.model, "|", *case.short, "|", str(case.process))  # documents repeat some commands
        if key not in self.done:
            try:
                with pytest.MonkeyPatch.context() as patch:  # W&B offline, full tracebacks: for this run only
                    for name, value in ENV.items():
                        patch.setenv(name, value)
                    self.done[key] = self.execute(case, argv)
            except (Exception, SystemExit) as err:  # a command that others depend on fails once, for all of them
                self.done[key] = err if isinstance(err, Exception) else AssertionError(f"{shlex.join(argv)}: exit {err}")
        result = self.done[key]
        if isinstance(result, Exception):
            raise result
        return result

    def best(self, command: str) -> Path:
        (path,) = (self.get(command).dir / "checkpoints").glob("step*.ckpt")
        return path

    def execute(self, case: Case, argv: list[str]) -> Run:
        program, args = argv[:2], argv[2:]
        if program[0] == "python" and program[1] in ENTRY_POINTS:
            overrides = [*args, *case.model, *case.short]
            if "-m" in args or case.process:
                return self.script_run(program[1], overrides, in_process=not case.process)
            return self.pipeline_run(program[1].removesuffix(".py"), overrides)
        if program == ["python", "download.py"]:
            return self.download(args + list(case.short))
        if program[0] == "make":
            return self.make(program[1], case)
        if program[0].startswith("scripts/"):
            return self.shell_script(argv, case)
        raise AssertionError(f"no way to run {shlex.join(argv)}: give it a needs= reason")

    def pipeline_run(self, config: str, overrides: list[str]) -> Run:
        """In-process, through ``dnagpt.pipeline``, writing where ``hydra.run.dir`` says if a fill made it absolute."""
        dirs = [Path(o.split("=", 1)[1]) for o in overrides if o.startswith("hydra.run.dir=")]
        run = dirs[-1] if dirs and dirs[-1].is_absolute() else self.fresh()
        cfg = compose_cfg(config, overrides, run, self.cache_dir)
        with captured_log() as log:
            (train if config == "train" else evaluate)(cfg)
        return Run(run, log.getvalue())

    def script_run(self, script: str, overrides: list[str], in_process: bool) -> Run:
        """``python <script> [-m] ...`` with FAST first: in-process as ``__main__`` (Hydra's own run), or a process."""
        sweep = self.fresh("sweep")
        flags = ["-m"] if "-m" in overrides else []
        args = [*flags, *FAST, *(o for o in overrides if o != "-m"), *self.paths(sweep),
                f"hydra.sweep.dir={sweep}", f"hydra.run.dir={sweep}"]  # fmt: skip
        if not in_process:
            return self.process([sys.executable, script, *args], sweep)
        with entry_point([script, *args]), captured_log() as log:
            runpy.run_path(str(ROOT / script), run_name="__main__")
        return Run(sweep, log.getvalue())

    def process(self, argv: list[str], run: Path, **env: str) -> Run:
        done = subprocess.run(argv, cwd=ROOT, env=os.environ | ENV | env, capture_output=True, text=True, timeout=600)
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"{shlex.join(argv)} exited with {done.returncode}:\n{output[-4000:]}"
        return Run(run, output)

    def download(self, overrides: list[str]) -> Run:
        """download.py for real, with every URL of the corpus pointed at the bundled excerpt of its species."""
        data = self.fresh("data")
        overrides = [*overrides, f"paths.data_dir={data}"]
        species = compose_config(overrides).corpus.species
        with serving(BUNDLED) as base:
            urls = [f"corpus.species.{name}.url={base}/{name if (BUNDLED / f'{name}.fa.gz').exists() else 'human'}.fa.gz"
                    for name, sp in species.items() if sp.get("url")]  # fmt: skip
            return self.process([sys.executable, "download.py", *overrides, *urls], data)

    def make(self, target: str, case: Case) -> Run:
        """The Makefile's recipe with this interpreter, its install step satisfied by a fresh stamp."""
        run = self.fresh("make")
        stamp = run / "installed"
        stamp.touch()  # newer than pyproject.toml: nothing to install
        args = (
            case.short if target != "train" else [*FAST, *case.model, *case.short, *self.paths(run), f"hydra.run.dir={run}"]
        )
        return self.process(
            ["make", "-s", target, f"PY={sys.executable}", f"STAMP={stamp}", f"ARGS={shlex.join(args)}"], run
        )

    def shell_script(self, argv: list[str], case: Case) -> Run:
        """The script as documented, its ``$PYTHON`` a wrapper that appends FAST and the small model to every call."""
        wrapper = self.fresh("python") / "python"
        wrapper.write_text(
            f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@" '
            f"{shlex.join([*FAST, *case.model, *case.short, *self.paths(wrapper.parent)])}\n"
        )
        wrapper.chmod(0o755)
        return self.process(argv, Path(argv[1]), PYTHON=str(wrapper))

    def release_pth(self, *overrides: str) -> str:
        """What ``init_from=<released .pth>`` reads: a state dict under the release's key names, of the session model
        or, given ``overrides``, of a random tiny model under them (the stand-in for another release)."""
        name = re.sub(r"\W+", "_", " ".join(overrides)) or "session"
        path = self.root / "release" / f"{name}.pth"
        if not path.exists():
            if overrides:
                _, _, model_cfg = build_parts(compose_cfg("train", [*TINY, *overrides], self.fresh(), self.cache_dir))
                state = DNAGPT(model_cfg).state_dict()
            else:
                state = read_checkpoint(last(MAIN)(self)).state_dict
            back = {ours: theirs for theirs, ours in RELEASE_RENAMES.items()}
            path.parent.mkdir(exist_ok=True)
            torch.save(
                {next((back[p] + k[len(p) :] for p in back if k.startswith(p)), k): v for k, v in state.items()}, path
            )
        return str(path)

    def pretrained_dir(self) -> str:
        """The session model as a ``save_pretrained`` directory."""
        path = self.root / "pretrained"
        if not path.exists():
            ckpt = read_checkpoint(last(MAIN)(self))
            model = load_release_state_dict(DNAGPT(GPTConfig.from_dict(dict(ckpt.model_cfg))), ckpt.state_dict)
            save_pretrained(model, path, dict(ckpt.tokenizer_spec))
        return str(path)


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Runs:
    return Runs(tmp_path_factory.mktemp("documented"), cache_dir)


# ---- the tests ---------------------------------------------------------------------------------------------------------
def variants(case: Case) -> int:
    return max((len(v) for v in case.fill.values() if isinstance(v, tuple)), default=1)


def products(command: str) -> tuple[str, ...]:
    """What every run of a train or evaluate command leaves: metrics.json (in the first job's directory under -m)."""
    words = command.split()
    if words[:2] != ["python", "train.py"] and words[:2] != ["python", "evaluate.py"]:
        return ()
    return ("0/metrics.json",) if "-m" in words else ("metrics.json",)


RUNNABLE = [
    pytest.param(
        command, variant, id=command if variants(case) == 1 else f"{command} #{variant + 1}",
        marks=[] if case.fast else [pytest.mark.slow],
    )
    for command, case in COMMANDS.items() if not case.needs for variant in range(variants(case))
]  # fmt: skip
# the unrunnable ones that name a train or evaluate command line: composed and checked
CHECKED = [
    pytest.param(c, id=c) for c, case in COMMANDS.items() if case.needs and re.search(r"(^|\s)(train|evaluate)\.py\s", c)
]


def test_the_table_knows_every_documented_command() -> None:
    documented = documented_commands()
    unknown = [f"{c!r} ({', '.join(where)})" for c, where in documented.items() if c not in COMMANDS]
    stale = [c for c in COMMANDS if c not in documented]
    assert not unknown, "documented commands this test does not run, add them to COMMANDS:\n" + "\n".join(unknown)
    assert not stale, "COMMANDS entries that no document shows any more:\n" + "\n".join(stale)
    for command, case in COMMANDS.items():
        assert all(key in command for key in case.fill), f"{command}: a fill key is not in the command"
        assert not case.needs or case.needs.startswith(("gpu: ", "network: ")), f"{command}: needs names gpu or network"


@pytest.mark.parametrize(("command", "variant"), RUNNABLE)
def test_documented_command_runs(runs: Runs, command: str, variant: int) -> None:
    case = COMMANDS[command]
    run = runs.get(command, variant)
    for pattern in (*products(command), *case.expect):
        assert next(run.dir.glob(pattern), None), f"{shlex.join(runs.argv(command, variant))}: no {pattern} in {run.dir}"
    for text in case.said:
        assert text in run.log, f"{shlex.join(runs.argv(command, variant))} did not say {text!r}:\n{run.log[-3000:]}"


def first_job(overrides: list[str]) -> list[str]:
    """The overrides of a multirun's first job (a search space, which only the Optuna sweeper reads, is dropped)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    return [
        text if not o.is_sweep_override() else f"{o.get_key_element()}={next(o.sweep_string_iterator())}"
        for text, o in zip(overrides, parsed, strict=True) if not o.is_sweep_override() or o.is_discrete_sweep()
    ]  # fmt: skip


def compose_as_documented(config: str, overrides: list[str], run: Path) -> DictConfig:
    """The config the command composes, nothing added, with Hydra's run directory set (``paths.output_dir``)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "dnagpt" / "conf"), version_base="1.3"):
        cfg = compose(config, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run)
    HydraConfig().set_config(cfg)
    return cfg


@pytest.mark.parametrize("command", CHECKED)
def test_command_for_a_gpu_or_the_network_is_a_valid_config(
    command: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Its placeholders filled with a dummy path; checked as on a machine with CUDA, since no file is read."""
    words = shlex.split(re.sub(r"<[^>]*>", "PLACEHOLDER", command))
    script = next(i for i, w in enumerate(words) if w in ENTRY_POINTS)
    cfg = compose_as_documented(words[script].removesuffix(".py"), first_job([w for w in words[script + 1:] if w != "-m"]),
                                tmp_path)  # fmt: skip
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    check_config(cfg, stage="train" if words[script] == "train.py" else "evaluate")
