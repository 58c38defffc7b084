"""What the embed and predict tests share: tiny randomly initialised task checkpoints and real sequence from the shipped
excerpts (PAS windows, the bundled human chr20 excerpt, Xpresso promoters)."""

import gzip
import itertools
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from dnagpt.data.fasta import iter_records
from dnagpt.model.config import GPTConfig
from dnagpt.tasks.base import DNAGPTTask
from dnagpt.tokenizer import KmerTokenizer
from dnagpt.utils.resolvers import resource_path

TOK = KmerTokenizer()
PAS = Path(resource_path("gsr/pas_subset.tsv.gz"))
HUMAN = Path(resource_path("bundled/human.fa.gz"))
XPRESSO = Path(resource_path("expression/xpresso_mini_hg19_chr20_promoters.tsv.gz"))
SMALL = {"block_size": 128, "n_layer": 2, "n_head": 2, "n_embd": 32}


def tiny_task(cls: type[DNAGPTTask], seed: int = 0, **shape) -> DNAGPTTask:
    cfg = GPTConfig.from_name("tiny", vocab_size=len(TOK), **(SMALL | shape))
    torch.manual_seed(seed)
    return cls(cfg.to_dict(), TOK.to_dict())


def save_ckpt(task: DNAGPTTask, path: Path) -> Path:
    """A Lightning checkpoint of ``task`` as a run of ours writes it (the task's on_save_checkpoint included)."""
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(task)
    trainer.save_checkpoint(path)
    return path


def table_rows(path: Path, n: int) -> tuple[list[str], list[dict[str, str]]]:
    """Header and first ``n`` rows of a shipped gzipped TSV."""
    with gzip.open(path, "rt") as fh:
        header = fh.readline().rstrip("\n").split("\t")
        rows = [dict(zip(header, line.rstrip("\n").split("\t"), strict=True)) for line in itertools.islice(fh, n)]
    return header, rows


def write_fasta(path: Path, records: list[tuple[str, str]], width: int = 60) -> Path:
    lines = []
    for name, seq in records:
        lines.append(f">{name}")
        lines += [seq[i : i + width] for i in range(0, len(seq), width)]
    path.write_text("\n".join(lines) + "\n")
    return path


def human_excerpt() -> str:
    """The bundled 1.5 Mb of human chr20 (soft-masked, as shipped)."""
    return next(iter(iter_records(HUMAN)))[1]


def compose_command(config_name: str, overrides: list[str], tmp_path: Path) -> DictConfig:
    """A command's config as its Hydra app composes it, writing under ``tmp_path``."""
    GlobalHydra.instance().clear()
    with initialize(version_base="1.3", config_path="../dnagpt/conf"):
        cfg = compose(config_name, overrides=["extras.print_config=false", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        cfg.paths.cache_dir = str(tmp_path / "cache")
    GlobalHydra.instance().clear()
    return cfg
