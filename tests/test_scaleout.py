"""Scale-out: the global batch under gradient accumulation (a real Trainer), and the FSDP preset for the 3B model.

FSDP needs CUDA (Lightning's FSDPStrategy refuses other accelerators, torch's FSDP has no CPU backend), so on CPU the
tests check what decides its behaviour: the strategy the config builds, the wrap policy selecting exactly the transformer
Blocks, and activation checkpointing applied per Block without changing the checkpoint's keys or the gradients. The
``gpu`` test trains with it for real where CUDA exists.
"""

import json
from pathlib import Path

import hydra
import pytest
import torch
from lightning.fabric.strategies.fsdp import _setup_activation_checkpointing
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.strategies import FSDPStrategy
from omegaconf import open_dict
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper
from torch.distributed.fsdp import ShardingStrategy

from dnagpt.checkpointing import read_checkpoint
from dnagpt.data import batching
from dnagpt.data.batching import micro_batch_size, per_device_batch_size
from dnagpt.model.config import GPTConfig
from dnagpt.model.gpt import DNAGPT, Block
from dnagpt.pipeline import module_for_evaluation, train


class RecordSteps(Callback):
    """Writes what the loop did to a JSON file: rows per training batch, optimizer steps at each validation, and the
    step budget the LR schedule is sized with."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.seen: dict[str, list[int]] = {"batch_rows": [], "val_at_step": [], "stepping_batches": []}

    def on_train_start(self, trainer, pl_module) -> None:
        self.seen["stepping_batches"].append(trainer.estimated_stepping_batches)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen["batch_rows"].append(len(batch["input_ids"]))

    def on_validation_start(self, trainer, pl_module) -> None:
        self.seen["val_at_step"].append(trainer.global_step)

    def on_train_end(self, trainer, pl_module) -> None:
        self.path.write_text(json.dumps(self.seen))


def test_accumulation_splits_the_global_batch(make_cfg, tmp_path: Path, caplog) -> None:
    """Global 8 with accumulation 2 on one device: micro-batches of 4, two per optimizer step; the schedule and
    max_steps count optimizer steps, val_check_interval counts micro-batches (Lightning's semantics)."""
    cfg = make_cfg("train", ["data.batch_size=8", "trainer.accumulate_grad_batches=2", "trainer.max_steps=3",
                             "trainer.val_check_interval=2", "test=false", "callbacks=none"])
    with open_dict(cfg):
        cfg.callbacks = {"record": {"_target_": f"{__name__}.RecordSteps", "path": str(tmp_path / "seen.json")}}
    batching._log_once.cache_clear()  # the log line is said once per process: start this test from a clean slate
    with caplog.at_level("INFO", logger="dnagpt.data.batching"):
        train(cfg)
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen["batch_rows"] == [4] * 6  # 3 optimizer steps × 2 micro-batches of 4
    assert seen["stepping_batches"] == [3]  # the LR schedule's total: optimizer steps
    assert seen["val_at_step"] == [1, 2, 3]  # every 2 micro-batches = every optimizer step here
    said = [r.getMessage() for r in caplog.records if r.name == "dnagpt.data.batching"]
    assert said == ["Batch: global 8 per optimizer step = micro-batch 4 per device × 1 device(s) × 2 accumulated"]


def test_indivisible_global_batch_names_all_three_numbers() -> None:
    trainer = Trainer(accelerator="cpu", devices=1, accumulate_grad_batches=3, logger=False, enable_checkpointing=False)
    with pytest.raises(ValueError, match=r"data.batch_size=8 .*world size 1 .*accumulate_grad_batches=3") as err:
        per_device_batch_size(8, trainer)
    assert "not divisible by 1 × 3 = 3; use a multiple of 3 such as 6 or 9" in str(err.value)
    assert micro_batch_size(48, world_size=4, accumulate_grad_batches=3) == 4


# ---- FSDP -----------------------------------------------------------------------------------------------------------
def tiny_model() -> DNAGPT:
    torch.manual_seed(0)
    return DNAGPT(GPTConfig.from_name("tiny", vocab_size=64, block_size=32, n_layer=3, n_head=2, n_embd=16))


def test_fsdp_config_builds_the_strategy(make_cfg) -> None:
    cfg = make_cfg("train", ["model=dnagpt_3b_m", "trainer=fsdp"])
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.accelerator == "gpu"
    strategy = hydra.utils.instantiate(cfg.trainer.strategy)
    assert isinstance(strategy, FSDPStrategy)
    assert strategy.sharding_strategy == ShardingStrategy.FULL_SHARD
    assert strategy._state_dict_type == "full"  # one .ckpt file: resume, init_from and evaluate read it as is
    model = tiny_model()
    wrap = strategy.kwargs["auto_wrap_policy"]
    wrapped = [m for m in model.modules() if wrap(m, recurse=False)]
    assert wrapped == list(model.transformer.h) and all(isinstance(m, Block) for m in wrapped)


def test_fsdp_activation_checkpointing_wraps_each_block_and_changes_nothing_else(make_cfg) -> None:
    strategy = hydra.utils.instantiate(make_cfg("train", ["trainer=fsdp"]).trainer.strategy)
    plain, checkpointed = tiny_model(), tiny_model()
    _setup_activation_checkpointing(checkpointed, strategy._activation_checkpointing_kwargs)  # what FSDPStrategy runs
    assert all(isinstance(b, CheckpointWrapper) for b in checkpointed.transformer.h)
    assert sum(isinstance(m, CheckpointWrapper) for m in checkpointed.modules()) == len(checkpointed.transformer.h)
    assert checkpointed.state_dict().keys() == plain.state_dict().keys()  # checkpoints load into an unwrapped model

    ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(1))
    for model in (plain, checkpointed):
        model.logits(model(ids, compute_logits=False).hidden).logsumexp(-1).mean().backward()
    for (name, p), q in zip(plain.named_parameters(), checkpointed.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, msg=name)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="FSDP needs CUDA")
def test_fsdp_trains_and_its_checkpoint_loads_everywhere(make_cfg, tmp_path: Path) -> None:
    train(make_cfg("train", ["trainer=fsdp", "trainer.devices=1", "trainer.max_steps=2", "test=false"]))
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()  # state_dict_type=full: one file, not a sharded folder
    module = module_for_evaluation(make_cfg("evaluate", [f"ckpt_path={ckpt}"]), read_checkpoint(ckpt))
    assert not any("_fsdp" in k or "_checkpoint_wrapped" in k for k in module.state_dict())
    resumed = make_cfg("train", ["trainer=fsdp", "trainer.devices=1", "trainer.max_steps=4", "test=false",
                                 f"ckpt_path={ckpt}"])
    train(resumed)
