"""Every config file composes, and the parts it names instantiate: a rotten config fails here, not on a cluster."""

from pathlib import Path

import hydra
import pytest
import torch
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

from dnagpt.checkpointing import resolve_checkpoint

CONF = Path(__file__).resolve().parent.parent / "dnagpt" / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
EVALUATE_ONLY = {"evaluation", "analysis"}  # groups of evaluate.yaml alone
GROUP_OPTIONS = [
    (group.name, p.stem)
    for group in sorted(CONF.iterdir())
    if group.is_dir() and group.name not in {"experiment", "local", "hydra", "paths", "extras"}
    for p in sorted(group.glob("*.yaml"))
]


@pytest.mark.parametrize(("group", "option"), GROUP_OPTIONS, ids=[f"{g}={o}" for g, o in GROUP_OPTIONS])
def test_every_group_option_composes(make_cfg, group: str, option: str) -> None:
    cfg = make_cfg("evaluate" if group in EVALUATE_ONLY else "train", [f"{group}={option}"])
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    if group == "trainer" and option != "fsdp":  # FSDP refuses a CPU accelerator: tests/test_scaleout.py builds it
        trainer = hydra.utils.instantiate(cfg.trainer, accelerator="cpu", logger=False)
        assert trainer.max_steps == cfg.trainer.max_steps


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_instantiates(make_cfg, name: str) -> None:
    bundled = ["corpus=bundled"] if name.startswith("pretrain") else []  # theirs is downloaded first
    cfg = make_cfg("train", [f"experiment={name}", "trainer=cpu", *bundled])
    tokenizer = hydra.utils.instantiate(cfg.tokenizer)
    model_cfg = hydra.utils.instantiate(cfg.model, vocab_size=len(tokenizer))
    assert model_cfg.block_size == cfg.data.block_size
    hydra.utils.instantiate(cfg.data, tokenizer=tokenizer)
    hydra.utils.instantiate(cfg.trainer, logger=False)
    assert cfg.optimized_metric == cfg.task.monitor


def test_evaluate_config_requires_ckpt_path(make_cfg) -> None:
    cfg = make_cfg("evaluate")
    assert OmegaConf.is_missing(cfg, "ckpt_path")


def test_released_preset_refuses_the_other_vocabulary(make_cfg) -> None:
    cfg = make_cfg("train", ["model=dnagpt_0.1b_h", "tokenizer=kmer6"])
    tokenizer = hydra.utils.instantiate(cfg.tokenizer)
    with pytest.raises(Exception, match="vocab"):
        hydra.utils.instantiate(cfg.model, vocab_size=len(tokenizer))


def test_ckpt_path_auto(tmp_path: Path) -> None:
    assert resolve_checkpoint("auto", tmp_path) is None
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    torch.save({"state_dict": {}, "global_step": 0, "dnagpt": {}}, last)  # auto checks it (tests/test_fault_tolerance.py)
    assert resolve_checkpoint("auto", tmp_path).path == last
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_checkpoint(str(tmp_path / "nope.ckpt"), tmp_path)


def test_unknown_corpus_is_a_clear_error(make_cfg) -> None:
    with pytest.raises(MissingConfigException, match="corpus"):
        make_cfg("train", ["corpus=mars"])


def test_released_preset_refuses_another_block_size(make_cfg) -> None:
    cfg = make_cfg("train", ["model=dnagpt_0.1b_m", "model.block_size=1024"])
    tokenizer = hydra.utils.instantiate(cfg.tokenizer)
    with pytest.raises(Exception, match="block_size"):
        hydra.utils.instantiate(cfg.model, vocab_size=len(tokenizer))
