"""Time to quality: wall-clock minutes of training until held-out bits per base cross the order-k Markov yardstick, ours
against a reference GPT trained on the same recipe, the same batches, in one process.

    python -m bench.time_to_quality [--quick] [--corpus-root DIR] [--budget-minutes 10] [--steps N] [--eval-every 50]
        [--interleave 10] [--until-yardstick] [--reference auto|hf-gpt2|nanogpt] [--cache-dir DIR] [--out outputs/bench]
        [override ...]

Tokens per second can rise while learning gets worse (bigger batches, fewer steps, a stalled schedule); this section
measures what training is for. Both arms run the pre-training recipe composed by Hydra, ``experiment=pretrain_cpu``
(``--quick``: on the bundled corpus, batch 8, 32 held-out windows, warm-up 20; any further ``key=value`` override is
passed on): the same ``PretrainTask`` (token + order + GC losses), the same fused AdamW on the same parameter groups, the
same warm-up + cosine schedule over ``--steps`` (default the recipe's ``trainer.max_steps``), gradient clipping and
bf16 autocast as the trainer config says, the same seed and k-mer initialisation (``task.kmer_init``), and the very same
batches from the real pre-training pipeline (``PretrainDataModule``; drawn once in the main process between timed
steps, ``data.num_workers=0``, and fed to both arms).

- **ours**: the task's own network (``DNAGPT``: fused chunked head + loss, the attention kernel chosen per dtype).
- **reference**: the task with its network swapped for the Hugging Face GPT-2 (``--reference hf-gpt2``, as
  ``bench.train_step`` builds it; needs ``transformers``) or the nanoGPT-style ``bench.reference_gpt`` of equal width,
  depth, heads, context and vocabulary, on its usual path (full logits, ``F.cross_entropy``); see :class:`ReferenceLM`
  for the GC term it cannot learn.

The arms alternate, ``--interleave`` steps each (who goes first alternates too), so machine noise hits both alike; each
arm's clock counts its training steps only, after one untimed forward + backward each (kernel set-up, shared by both).
Every ``--eval-every`` steps both are scored on the same fixed held-out windows: ``val/bits_per_base`` computed by
``PretrainTask.shared_step`` itself, beside the Markov yardstick of the task (``MarkovYardstick``: order and smoothing
chosen on those windows) and the order-0 (base composition) model of the same counts. An arm stops when its own clock
passes ``--budget-minutes`` (or at ``--steps``, or, with ``--until-yardstick``, at its first evaluation at or below the
Markov yardstick: what comes after does not change that figure, so the run lasts until the slower arm's crossing, not
two whole budgets); the other runs on alone.

Figures: minutes to cross the Markov yardstick (0 per minute when not within budget), minutes to a common level ``q``
(the worse of the two arms' best held-out bits per base, so both reach it), as 1/minutes so that the ratio is
reference minutes / our minutes (target >= 1: we reach it first), and training tokens/s. The curves (bits per base
against minutes and against steps, yardsticks drawn) go to ``<out>/time_to_quality.png``, the rows and the curves to
``<out>/time_to_quality.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn
from torchmetrics import Metric

from bench.common import Row, format_table, write_json
from bench.reference_gpt import ReferenceGPT, hf_gpt2
from dnagpt.commands import compose_config
from dnagpt.model.config import GPTConfig
from dnagpt.model.kmer_init import compose_kmer_rows
from dnagpt.pipeline import build_parts, build_task
from dnagpt.tasks.pretrain import PretrainTask
from dnagpt.tasks.yardsticks import MarkovYardstick
from dnagpt.utils.errors import ConfigError
from dnagpt.utils.heap import keep_freed_memory
from dnagpt.utils.plots import save_figure, subplots
from dnagpt.utils.pylogger import RankedLogger

log = RankedLogger(__name__)

SECTION = "time to quality"
PROG = "python -m bench.time_to_quality"
RECIPE = ["experiment=pretrain_cpu", "data.num_workers=0"]  # batches are drawn in this process, between timed steps
# --quick: the bundled corpus shipped in dnagpt/resources, half batches, fewer windows, a schedule a short run sees
QUICK = ["corpus=bundled", "data.batch_size=8", "data.val_windows=32", "task.scheduler.warmup_steps=20"]
QUICK_DEFAULTS = {"budget_minutes": 1.0, "steps": 300, "eval_every": 20}
REFERENCES = {"hf-gpt2": "HF GPT-2", "nanogpt": "nanoGPT-style"}


# ---- the reference behind the task's interface ------------------------------------------------------------------------
def hf_available() -> bool:
    try:
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


def reference_network(kind: str, config: GPTConfig) -> nn.Module:
    """The reference GPT at the shape of ``config`` (width, depth, heads, context, vocabulary), no dropout."""
    if kind == "nanogpt":
        return ReferenceGPT(config.vocab_size, config.block_size, config.n_layer, config.n_head, config.n_embd)
    net = hf_gpt2(config.vocab_size, config.block_size, config.n_layer, config.n_head, config.n_embd)
    if net is None:
        raise ConfigError(f"{PROG} --reference hf-gpt2 needs transformers: pip install -e .[bench]")
    return net


@dataclass
class ReferenceOutput:
    hidden: Tensor  # (B, T, D) final states, after the last LayerNorm
    value_pred: Tensor | None


class ReferenceLM(nn.Module):
    """A reference GPT behind the interface ``PretrainTask.model_step`` calls, so that the recipe's losses and its bits
    per base run unchanged on it.

    The network is split into its body (up to the final LayerNorm) and its output layer, so the task reads hidden
    states as it does from ours; the token loss is then the reference's usual path: full logits of the target rows
    and ``F.cross_entropy``. It has no Numerical Embedding and no regression head: the GC values are not inserted (it
    reads each ``<M>`` token alone; a value only summarises bases already read) and its GC prediction is a constant 0,
    so the recipe's GC term (weight 0.01) adds a constant without a gradient. The token and order objectives are the
    recipe's.
    """

    def __init__(self, kind: str, config: GPTConfig) -> None:
        super().__init__()
        self.kind = kind
        net = reference_network(kind, config)
        if kind == "hf-gpt2":
            self.body, self.head = net.transformer, net.lm_head
        else:  # the output layer (tied to the token embedding) taken out, so the network returns its final states
            self.head, net.head = net.head, nn.Identity()
            self.body = net

    def forward(
        self, input_ids: Tensor, *, values: Tensor | None = None, value_pos: Tensor | None = None,
        value_mask: Tensor | None = None, reg_pos: Tensor | None = None, compute_logits: bool = True,
    ) -> ReferenceOutput:  # fmt: skip
        hidden = self.body(input_ids=input_ids).last_hidden_state if self.kind == "hf-gpt2" else self.body(input_ids)
        return ReferenceOutput(hidden, None if reg_pos is None else hidden.new_zeros(reg_pos.shape))

    def logits(self, hidden: Tensor) -> Tensor:
        return self.head(hidden)

    def token_loss(self, hidden: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(self.head(hidden).float(), targets)

    def param_groups(self, weight_decay: float, layer_lr_decay: float = 1.0) -> list[dict]:
        """Matrices decay, vectors (LayerNorm, biases) do not: the split ``DNAGPT.param_groups`` makes (GPT-2 keeps its
        matrices in ``Conv1D`` modules, so the rule is by shape here); one rate for every layer, as the recipe has."""
        if layer_lr_decay != 1.0:
            raise ValueError("the reference arm has no layer-wise learning-rate decay (task.layer_lr_decay must be 1)")
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
                {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]  # fmt: skip


# ---- one arm: a task, its optimiser, its clock and its curve ----------------------------------------------------------
@dataclass
class Point:
    step: int
    minutes: float  # this arm's training time so far
    bits: float  # held-out bits per base


@dataclass
class Arm:
    name: str
    task: PretrainTask
    total_steps: int
    bf16: bool
    clip: float | None
    steps: int = 0
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    tokens: int = 0
    done: bool = False
    curve: list[Point] = field(default_factory=list)
    batch_digests: list[str] = field(default_factory=list)  # of every batch trained on, in order

    def __post_init__(self) -> None:
        weight_decay = self.task.optimizer_factory.keywords.get("weight_decay", 0.0)  # as configure_optimizers
        self.optimizer = self.task.optimizer_factory(self.task.param_groups(weight_decay))
        self.scheduler = self.task.scheduler_factory(self.optimizer, total_steps=self.total_steps)
        self.params = [p for group in self.optimizer.param_groups for p in group["params"]]

    @property
    def minutes(self) -> float:
        return self.train_seconds / 60

    @property
    def tokens_per_second(self) -> float:
        """Training throughput; 0 for an arm that trained no step (it was at its level untrained)."""
        return self.tokens / self.train_seconds if self.train_seconds else 0.0

    def autocast(self) -> torch.autocast:
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16)

    def warm_up(self, batch: dict[str, Tensor]) -> None:
        """A forward and a backward without an update, untimed: the first call of a kernel (oneDNN builds its primitives
        per shape, then both arms share them) is paid here, not by whichever arm happens to run first."""
        self.task.train()
        with self.autocast():
            self.task.model_step(batch)["loss"].backward()
        self.optimizer.zero_grad(set_to_none=True)

    def train_step(self, batch: dict[str, Tensor]) -> None:
        """One optimizer step as ``Trainer.fit`` makes it: autocast forward, backward, clipping, update, schedule."""
        self.task.train()
        start = time.perf_counter()
        with self.autocast():
            loss = self.task.model_step(batch)["loss"]
        loss.backward()
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.train_seconds += time.perf_counter() - start
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{self.name}: the training loss is {loss.item()} at step {self.steps}")
        self.steps += 1
        self.tokens += batch["input_ids"].numel()
        self.batch_digests.append(digest(batch))

    @torch.no_grad()
    def evaluate(self, batches: Sequence[dict[str, Tensor]]) -> Point:
        """``val/bits_per_base`` over the held-out batches, accumulated by the task's own ``shared_step``."""
        self.task.eval()
        start = time.perf_counter()
        with self.autocast():
            for batch in batches:
                self.task.shared_step(batch, "val")
        bits = float(self.task.bits_per_base["val"].compute())
        for metric in self.task.modules():
            if isinstance(metric, Metric):
                metric.reset()
        self.eval_seconds += time.perf_counter() - start
        self.curve.append(Point(self.steps, self.minutes, bits))
        log.info(f"{self.name:>14} step {self.steps:5d}  {self.minutes:6.2f} min  {bits:.4f} bits/base")
        return self.curve[-1]

    def minutes_to(self, level: float) -> float | None:
        return time_to_reach([(p.minutes, p.bits) for p in self.curve], level)

    def best(self) -> Point:
        return min(self.curve, key=lambda p: p.bits)


def digest(batch: dict[str, Tensor]) -> str:
    """Fingerprint of what a step trains on (the sentences and their inserted values)."""
    h = hashlib.blake2b(digest_size=8)
    for key in ("input_ids", "values"):
        h.update(batch[key].numpy().tobytes())
    return h.hexdigest()


def peek(it: Iterator[dict[str, Tensor]]) -> tuple[dict[str, Tensor], Iterator[dict[str, Tensor]]]:
    """The first item and the whole iterator, that item included."""
    first = next(it)
    return first, itertools.chain([first], it)


def time_to_reach(points: Sequence[tuple[float, float]], level: float) -> float | None:
    """Minutes at which a curve of (minutes, bits) points, in time order, first comes down to ``level``, interpolated
    linearly between the two evaluations around the crossing; None when it never does."""
    for i, (minutes, bits) in enumerate(points):
        if bits <= level:
            if i == 0:
                return minutes
            m0, b0 = points[i - 1]
            return m0 + (b0 - level) / (b0 - bits) * (minutes - m0)
    return None


# ---- the run ----------------------------------------------------------------------------------------------------------
@dataclass
class Yardsticks:
    markov: float | None  # bits per base of the chosen order on the held-out windows
    markov_order: int | None
    order0: float | None  # the base composition of the same counts


@dataclass
class Result:
    arms: list[Arm]  # ours first
    yardsticks: Yardsticks
    budget_minutes: float
    corpus: str
    batch_size: int
    val_windows: int
    data_seconds: float

    @property
    def common_level(self) -> float:
        """The worse of the arms' best held-out bits per base: a level every arm reached."""
        return max(arm.best().bits for arm in self.arms)


def compose_recipe(quick: bool, corpus_root: str | None, cache_dir: str | None, steps: int | None,
                   overrides: Sequence[str] = ()) -> DictConfig:  # fmt: skip
    extra = [*(QUICK if quick else []), *([f"corpus.root={corpus_root}"] if corpus_root else [])]
    extra += [*([f"paths.cache_dir={cache_dir}"] if cache_dir else []), *([f"trainer.max_steps={steps}"] if steps else [])]
    return compose_config([*RECIPE, *extra, *overrides], prog=PROG)


def fit_yardsticks(cfg: DictConfig, datamodule, task: PretrainTask) -> Yardsticks:
    """The task's Markov yardstick, fitted (or read from the cache) on the training regions, scored on the windows."""
    if cfg.task.get("markov_max_order") is None:
        return Yardsticks(None, None, None)
    yardstick = MarkovYardstick(cfg.task.markov_max_order)
    yardstick.setup(SimpleNamespace(datamodule=datamodule), task, "validate")  # it reads only trainer.datamodule
    total, n = yardstick.model.bits(datamodule.heldout_sequences("val"), yardstick.beta)
    return Yardsticks(yardstick.scores["val"], yardstick.order, float(total[0] / n))


def build_arms(cfg: DictConfig, reference: str, tokenizer, model_cfg: GPTConfig) -> list[Arm]:
    precision = str(cfg.trainer.precision)
    if precision not in ("bf16-mixed", "32-true", "32"):
        raise ConfigError(f"{PROG}: trainer.precision={precision} is not measured here (bf16-mixed or 32-true)")
    if cfg.trainer.accumulate_grad_batches != 1:
        raise ConfigError(f"{PROG}: trainer.accumulate_grad_batches must be 1 here (one batch, one step)")
    kwargs = {"total_steps": int(cfg.trainer.max_steps), "bf16": precision == "bf16-mixed",
              "clip": cfg.trainer.gradient_clip_val}  # fmt: skip
    L.seed_everything(cfg.seed)
    ours = build_task(cfg, tokenizer, model_cfg)
    theirs = build_task(cfg, tokenizer, model_cfg)
    L.seed_everything(cfg.seed)  # the reference is initialised from the same seed as ours
    theirs.model = ReferenceLM(reference, model_cfg)
    # the recipe's k-mer initialisation (task.kmer_init), as the task gives it to ours: here one matrix, embedding and
    # output layer being tied
    compose_kmer_rows(theirs.model.head.weight, tokenizer, float(cfg.task.get("kmer_init", 0.0)))
    return [Arm("ours", ours, **kwargs), Arm(REFERENCES[reference], theirs, **kwargs)]


def finished(arm: Arm, budget_s: float, stop_at: float) -> bool:
    """An arm is done when it has spent its budget, run its schedule, or been scored at or below ``stop_at`` at its
    latest evaluation (``-inf``: never)."""
    return arm.train_seconds >= budget_s or arm.steps >= arm.total_steps or arm.curve[-1].bits <= stop_at


def run_arms(cfg: DictConfig, reference: str, budget_minutes: float, eval_every: int, interleave: int,
             until_yardstick: bool = False) -> Result:  # fmt: skip
    """Train both arms on the same batches, alternating ``interleave`` steps, until each has spent its budget (or, with
    ``until_yardstick``, has come down to the Markov yardstick)."""
    if budget_minutes <= 0 or eval_every < 1 or interleave < 1:
        raise ConfigError(f"{PROG}: need --budget-minutes > 0, --eval-every >= 1 and --interleave >= 1")
    if until_yardstick and cfg.task.get("markov_max_order") is None:
        raise ConfigError(f"{PROG} --until-yardstick needs the Markov yardstick (task.markov_max_order is null)")
    tokenizer, datamodule, model_cfg = build_parts(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    arms = build_arms(cfg, reference, tokenizer, model_cfg)
    yardsticks = fit_yardsticks(cfg, datamodule, arms[0].task)
    log.info(f"yardsticks: {yardsticks}")
    stop_at = yardsticks.markov if until_yardstick else -math.inf
    val_batches = list(datamodule.val_dataloader())
    budget_s, data_seconds, turn = budget_minutes * 60, 0.0, 0
    for arm in arms:
        arm.evaluate(val_batches)
        arm.done = finished(arm, budget_s, stop_at)  # at the yardstick untrained: no step would change the figure
    first, stream = peek(iter(datamodule.train_dataloader()))
    for arm in arms:
        arm.warm_up(first)
    while active := [arm for arm in arms if not arm.done]:
        start = time.perf_counter()
        block = [next(stream) for _ in range(min(interleave, active[0].total_steps - active[0].steps))]
        data_seconds += time.perf_counter() - start
        for arm in active if turn % 2 == 0 else active[::-1]:
            for batch in block:
                arm.train_step(batch)
                if arm.steps % eval_every == 0 and arm.evaluate(val_batches).bits <= stop_at:
                    break  # down to the yardstick: done, the rest of the block unused
            if finished(arm, budget_s, stop_at):
                arm.done = True
                if arm.curve[-1].step != arm.steps:
                    arm.evaluate(val_batches)
        turn += 1
    windows = sum(len(batch["input_ids"]) for batch in val_batches)
    return Result(arms, yardsticks, budget_minutes, str(cfg.corpus.name), datamodule.batch_size, windows, data_seconds)


# ---- figures -----------------------------------------------------------------------------------------------------------
def _reached(arm: Arm, level: float) -> str:
    minutes = arm.minutes_to(level)
    if minutes is None:
        best = arm.best()
        return (f"{arm.name} not within budget ({arm.minutes:.1f} min, {arm.steps} steps; best {best.bits:.4f} at step "
                f"{best.step})")  # fmt: skip
    return f"{arm.name} {minutes:.2f} min"


def level_row(name: str, level: float, ours: Arm, ref: Arm, note: str) -> Row:
    """1/minutes to ``level`` of both arms, so that the ratio is reference minutes / ours. An arm that never reached it
    scores 0 (no ratio when the reference did not either); an arm already there untrained leaves no verdict."""
    t_ours, t_ref = ours.minutes_to(level), ref.minutes_to(level)
    note = f"{note}; {_reached(ours, level)}; {_reached(ref, level)}"
    if t_ours == 0 or t_ref == 0:
        return Row(SECTION, name, 0.0, "1/min", ref.name, 0.0, note=f"{note}; no verdict: reached before any training")
    return Row(SECTION, name, 1 / t_ours if t_ours else 0.0, "1/min", ref.name, 1 / t_ref if t_ref else 0.0,
               target=1.0, note=note)  # fmt: skip


def rows(result: Result) -> list[Row]:
    ours, ref = result.arms
    q, ys = result.common_level, result.yardsticks
    best = f"best bits/base: ours {ours.best().bits:.4f} (step {ours.best().step}), {ref.name} {ref.best().bits:.4f} "
    best += f"(step {ref.best().step})"
    recipe = f"{result.corpus}, batch {result.batch_size}, {result.val_windows} held-out windows"
    out = [level_row(f"1/min to common level {q:.4f} bits/base, ours", q, ours, ref, f"{recipe}; {best}")]
    if ys.markov is not None:
        out.append(level_row(f"1/min to Markov order-{ys.markov_order} yardstick {ys.markov:.4f}, ours", ys.markov, ours,
                             ref, f"budget {result.budget_minutes:g} min per arm; order 0 {ys.order0:.4f}"))  # fmt: skip
    out.append(Row(SECTION, "training tokens/s, ours", ours.tokens_per_second, "tokens/s", ref.name,
                   ref.tokens_per_second,
                   note=f"training steps only (ours {ours.steps}, {ref.name} {ref.steps}); held-out evaluation apart: "
                        f"ours {ours.eval_seconds:.0f} s, {ref.name} {ref.eval_seconds:.0f} s; batches drawn "
                        f"{result.data_seconds:.0f} s"))  # fmt: skip
    return out


def plot(result: Result, path: Path) -> Path:
    fig, axes = subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for arm, colour in zip(result.arms, ("tab:blue", "tab:orange"), strict=False):
        for ax, x in zip(axes, ([p.minutes for p in arm.curve], [p.step for p in arm.curve]), strict=True):
            ax.plot(x, [p.bits for p in arm.curve], "o-", ms=3, color=colour, label=arm.name)
    ys = result.yardsticks
    lines = [(ys.markov, f"Markov order {ys.markov_order}", "k", "--"), (ys.order0, "order 0 (base composition)", "gray",
             "--"), (result.common_level, "common level q", "tab:green", ":")]  # fmt: skip
    for level, label, colour, style in lines:
        if level is not None:
            for ax in axes:
                ax.axhline(level, color=colour, linestyle=style, linewidth=1, label=label)
    axes[0].set(xlabel="training minutes (each arm's own clock)", ylabel="held-out bits per base")
    axes[1].set(xlabel="optimizer step")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Time to quality: {result.corpus}, budget {result.budget_minutes:g} min per arm", fontsize=10)
    return save_figure(fig, path, dpi=120)


def curves(result: Result) -> dict:
    return {
        "corpus": result.corpus, "budget_minutes": result.budget_minutes, "common_level": result.common_level,
        "yardsticks": vars(result.yardsticks),
        "arms": {arm.name: {"steps": arm.steps, "train_seconds": arm.train_seconds, "eval_seconds": arm.eval_seconds,
                            "curve": [vars(p) for p in arm.curve]} for arm in result.arms},
    }  # fmt: skip


def resolve_reference(reference: str) -> str:
    if reference == "auto":
        return "hf-gpt2" if hf_available() else "nanogpt"
    if reference == "hf-gpt2" and not hf_available():
        raise ConfigError(f"{PROG} --reference hf-gpt2 needs transformers: pip install -e .[bench]")
    return reference


def measure(
    quick: bool, out: Path, corpus_root: str | None = None, cache_dir: str | None = None,
    budget_minutes: float | None = None, steps: int | None = None, eval_every: int | None = None, interleave: int = 10,
    reference: str = "auto", overrides: Sequence[str] = (), until_yardstick: bool = False,
) -> tuple[list[Row], Result]:  # fmt: skip
    """Compose, run both arms, write the PNG and the JSON under ``out``; the rows and the whole result."""
    defaults = QUICK_DEFAULTS if quick else {"budget_minutes": 10.0, "steps": None, "eval_every": 50}
    cfg = compose_recipe(quick, corpus_root, cache_dir, steps or defaults["steps"], overrides)
    result = run_arms(cfg, resolve_reference(reference), budget_minutes or defaults["budget_minutes"],
                      eval_every or defaults["eval_every"], interleave, until_yardstick)  # fmt: skip
    table = rows(result)
    png = plot(result, out / "time_to_quality.png")
    write_json(table, out / "time_to_quality.json", {"quick": quick, **curves(result)})
    log.info(f"curves written to {png}")
    return table, result


def run(quick: bool) -> list[Row]:
    """The bench suite's entry: ``--quick`` on the bundled corpus, else the CPU recipe (its corpus under the recipe's
    ``corpus.root``), 10 minutes per arm."""
    return measure(quick, Path("outputs/bench"))[0]


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the bundled corpus, 1 minute per arm")
    parser.add_argument("--corpus-root", help="where the recipe's corpus files are (corpus.root)")
    parser.add_argument("--cache-dir", help="encoded genomes and Markov counts (paths.cache_dir), reused when present")
    parser.add_argument("--budget-minutes", type=float, help="training minutes per arm (10; quick 1)")
    parser.add_argument("--steps", type=int, help="most steps per arm, and the schedule's length (the recipe's)")
    parser.add_argument("--eval-every", type=int, help="steps between held-out evaluations (50; quick 20)")
    parser.add_argument("--interleave", type=int, default=10, help="steps of one arm before the other's turn")
    parser.add_argument("--until-yardstick", action="store_true",
                        help="stop each arm at its first evaluation at or below the Markov yardstick")  # fmt: skip
    parser.add_argument("--reference", choices=["auto", *REFERENCES], default="auto",
                        help="auto: HF GPT-2 when transformers is installed, else nanoGPT-style")  # fmt: skip
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench"), help="folder of the PNG and the JSON")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the recipe, e.g. data.batch_size=8")
    args = parser.parse_args(argv)
    keep_freed_memory()  # what training sets (extras.keep_freed_memory): the bench times that
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.threads:
        torch.set_num_threads(args.threads)
    table, _ = measure(args.quick, args.out, args.corpus_root, args.cache_dir, args.budget_minutes, args.steps,
                       args.eval_every, args.interleave, args.reference, args.overrides,
                       args.until_yardstick)  # fmt: skip
    print(format_table(table))
    print(f"written to {args.out / 'time_to_quality.json'} and {args.out / 'time_to_quality.png'}")
    return table


if __name__ == "__main__":
    main()
