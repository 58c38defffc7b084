"""The framework's cost: our pre-training step inside ``Trainer.fit`` vs the same step in a hand-written loop.

    python -m bench.lightning_overhead [--device cuda] [--steps 6] [--rounds 3] [--json PATH]

Both run the real ``PretrainTask`` of the tiny preset on the same real batches of the bundled corpus (prepared in
advance, so the data pipeline is out of the comparison), bf16 autocast, fused AdamW, gradient clipping at 1.0 and the
cosine schedule. The Trainer side logs its metrics (CSV, every 10 steps) as a real run does; its start-up and first
step are excluded, as the raw loop's warm-up is. Rounds alternate between the two; medians of per-step times. On CUDA
both sides move each batch to the GPU inside the timed step and synchronise before reading the clock.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch.loggers import CSVLogger
from omegaconf import OmegaConf

from bench.common import Row, is_cuda, report, synchronize
from dnagpt.data.pretrain import PretrainDataModule
from dnagpt.model import GPTConfig
from dnagpt.optim import cosine_with_warmup
from dnagpt.tasks.pretrain import PretrainTask
from dnagpt.tokenizer import KmerTokenizer
from dnagpt.utils.resolvers import register_resolvers

ROOT = Path(__file__).resolve().parents[1]


class _StepTimer(L.Callback):
    """Wall time of every training step after the first, batch start to batch end (optimizer step included)."""

    def __init__(self, device: str) -> None:
        self.times: list[float] = []
        self.device = device

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        synchronize(self.device)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        synchronize(self.device)
        if batch_idx > 0:
            self.times.append(time.perf_counter() - self._start)


def make_task(tokenizer: KmerTokenizer) -> PretrainTask:
    return PretrainTask(
        GPTConfig.from_name("tiny", vocab_size=len(tokenizer)), tokenizer.to_dict(),
        optimizer=functools.partial(torch.optim.AdamW, lr=1e-3, betas=(0.9, 0.95), weight_decay=0.01, fused=True),
        scheduler=functools.partial(cosine_with_warmup, warmup_steps=50, min_lr_ratio=0.1),
        markov_max_order=None,  # the Markov yardstick is fitted from a DataModule; these batches come without one
    )  # fmt: skip


def real_batches(tokenizer: KmerTokenizer, n: int, cache: Path) -> list[dict[str, torch.Tensor]]:
    register_resolvers()
    corpus = OmegaConf.to_container(OmegaConf.load(ROOT / "dnagpt" / "conf" / "corpus" / "bundled.yaml"), resolve=True)
    dm = PretrainDataModule(corpus, tokenizer, block_size=512, batch_size=8, num_workers=0, cache_dir=cache)
    dm.prepare_data()
    dm.setup("fit")
    return [b for b, _ in zip(dm.train_dataloader(), range(n), strict=False)]


def raw_loop(task: PretrainTask, batches: list[dict[str, torch.Tensor]], device: str = "cpu") -> list[float]:
    """What ``Trainer.fit`` does for one step, written out: the baseline without the framework."""
    task.to(device)
    opt = task.optimizer_factory(task.model.param_groups(0.01))
    sched = task.scheduler_factory(opt, total_steps=len(batches))
    times = []
    for i, batch in enumerate(batches):
        synchronize(device)
        start = time.perf_counter()
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
            loss = task.model_step(move_data_to_device(batch, device))["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(task.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        synchronize(device)
        if i > 0:
            times.append(time.perf_counter() - start)
    return times


def lightning_loop(task: PretrainTask, batches: list[dict[str, torch.Tensor]], log_dir: Path,
                   device: str = "cpu") -> list[float]:  # fmt: skip
    timer = _StepTimer(device)
    where = torch.device(device)
    trainer = L.Trainer(
        accelerator="gpu" if is_cuda(where) else "cpu", devices=[where.index or 0] if is_cuda(where) else 1,
        precision="bf16-mixed", max_steps=len(batches), gradient_clip_val=1.0,
        logger=CSVLogger(log_dir), log_every_n_steps=10, callbacks=[timer], enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(task, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
    return timer.times


def run(steps: int, rounds: int, device: str = "cpu") -> list[Row]:
    tokenizer = KmerTokenizer()
    with tempfile.TemporaryDirectory(prefix="dnagpt-bench-") as tmp:
        batches = real_batches(tokenizer, steps + 1, Path(tmp) / "cache")
        task = make_task(tokenizer)
        raw, fit = [], []
        for r in range(rounds):
            raw += raw_loop(task, batches, device)
            fit += lightning_loop(task, batches, Path(tmp) / f"logs{r}", device)
    tokens = sum(b["input_ids"].numel() for b in batches) / len(batches)
    return [Row("framework", "tiny bf16 PretrainTask in Trainer.fit", tokens / statistics.median(fit), "tokens/s",
                "raw loop", tokens / statistics.median(raw), target=0.95,
                note="ratio >= 0.95 means Lightning's overhead is <= 5%")]  # fmt: skip


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per round and side")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    return report(run(args.steps, args.rounds, args.device), args.json)


if __name__ == "__main__":
    main()
