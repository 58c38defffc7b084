"""Attention maps of a GSR model: where does the answer position look, for true and for false signals?

The paper shows attention spread over the non-coding context around the signal. ``AttentionMaps`` (the ``analysis``
hook of ``dnagpt.pipeline.evaluate``) averages the softmax attention of test windows, separately for true and false
signals, over the chosen layer and head (or over all of them), and writes:

* ``attention_profile.png`` / ``.csv``: attention from the ``<=>`` position to each of the 100 window tokens;
* ``attention_map_true.png`` and ``attention_map_false.png``: the window token × token map.

Coordinates are bp relative to the removed signal: token ``i`` of the window covers cut-window bp ``6i..6i+5``, the
signal sat between cut bp 299 and 300, so token ``i`` spans ``[-300 + 6i, -294 + 6i)`` (negative = upstream).
Attention is read through ``token_pos`` (the map from tokens to the expanded sequence), so inserted numbers would not
shift it. Returned scalars: the share of the ``<=>`` row's window attention within ±60 bp of the signal, per label
(a uniform spread gives 0.2).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from dnagpt.utils.errors import ConfigError
from dnagpt.utils.plots import save_figure, subplots
from dnagpt.utils.pylogger import RankedLogger

log = RankedLogger(__name__)

LABELS = {1: "true", 0: "false"}
NEAR_BP = 60  # "around the signal" for the returned scalar


def token_edges(n_tokens: int, word: int = 6) -> np.ndarray:
    """bp edges (n_tokens + 1) of the window tokens relative to the removed signal (at the middle).

    >>> token_edges(4, word=6).tolist()
    [-12, -6, 0, 6, 12]
    """
    return word * np.arange(n_tokens + 1) - word * n_tokens // 2


def reduce_attention(attentions: list[torch.Tensor], layer: int | None, head: int | None) -> torch.Tensor:
    """(B, L, L) attention of one layer/head, or averaged over layers and/or heads."""
    n_layer, n_head = len(attentions), attentions[0].shape[1]
    if layer is not None and not -n_layer <= layer < n_layer:
        raise ConfigError(f"analysis.layer: layer {layer} out of range: the model has {n_layer} layers "
                          f"(allowed {-n_layer}..{n_layer - 1}, or null for their mean)")  # fmt: skip
    if head is not None and not -n_head <= head < n_head:
        raise ConfigError(f"analysis.head: head {head} out of range: the model has {n_head} heads "
                          f"(allowed {-n_head}..{n_head - 1}, or null for their mean)")  # fmt: skip
    att = torch.stack(attentions) if layer is None else attentions[layer].unsqueeze(0)  # (l, B, H, L, L)
    att = att.mean(0)
    return att.mean(1) if head is None else att[:, head]


class AttentionMaps:
    """Callable analysis hook; see the module docstring."""

    def __init__(self, layer: int | None = None, head: int | None = None, max_windows: int = 256,
                 batch_size: int = 16) -> None:
        if max_windows < 1 or batch_size < 1:
            raise ConfigError(f"analysis.max_windows and analysis.batch_size must be >= 1, got {max_windows}, {batch_size}")
        self.layer, self.head, self.max_windows, self.batch_size = layer, head, max_windows, batch_size

    @torch.no_grad()
    def collect(self, module: Any, loader: DataLoader) -> dict[int, dict[str, np.ndarray]]:
        """Per label: summed ``profile`` (W,) and token map ``map`` (W, W), with the window count ``n``."""
        was_training = module.training
        module.eval()
        device = next(module.parameters()).device
        acc: dict[int, dict[str, Any]] = {}
        for batch in loader:
            ids, answer, label = batch["input_ids"].to(device), batch["answer_pos"].to(device), batch["label"]
            if ids.dim() != 2:  # data.phases > 1: a row holds several prompts, whose tokens sit at different bp
                raise ConfigError("analysis=attention maps one prompt per window: evaluate with data.phases=1")
            out = module.model(ids, compute_logits=False, return_attentions=True)
            att = reduce_attention(out.attentions, self.layer, self.head).float()  # (B, L, L) expanded coordinates
            rows = torch.arange(ids.shape[0], device=device)
            win = out.token_pos[:, 1 : ids.shape[1] - 1]  # window tokens: between the species token and <=>
            ans = out.token_pos[rows, answer]
            profile = att[rows[:, None], ans[:, None], win]  # (B, W)
            tokmap = att[rows[:, None, None], win[:, :, None], win[:, None, :]]  # (B, W, W)
            for lab in (0, 1):
                sel = (label == lab).nonzero().flatten()
                slot = acc.setdefault(lab, {"n": 0, "profile": 0.0, "map": 0.0})
                sel = sel[: self.max_windows - slot["n"]]
                if len(sel):
                    slot["n"] += len(sel)
                    slot["profile"] = slot["profile"] + profile[sel].sum(0).cpu().numpy()
                    slot["map"] = slot["map"] + tokmap[sel].sum(0).cpu().numpy()
            if all(acc.get(lab, {}).get("n", 0) >= self.max_windows for lab in (0, 1)):
                break
        module.train(was_training)
        return {lab: {"n": s["n"], "profile": s["profile"] / s["n"], "map": s["map"] / s["n"]}
                for lab, s in acc.items() if s["n"]}

    def _what(self) -> str:
        layer = "mean over layers" if self.layer is None else f"layer {self.layer}"
        head = "mean over heads" if self.head is None else f"head {self.head}"
        return f"{layer}, {head}"

    def __call__(self, module: Any, datamodule: Any, trainer: Any, output_dir: str | Path) -> dict[str, float]:
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        loader = DataLoader(datamodule.datasets["test"], batch_size=self.batch_size, shuffle=False)
        means = self.collect(module, loader)
        if not means:
            raise ConfigError("analysis=attention: the data's test split has no windows to average attention over")
        n_tok = next(iter(means.values()))["profile"].shape[0]
        edges = token_edges(n_tok, module.tokenizer.k)
        centres = (edges[:-1] + edges[1:]) / 2
        near = np.abs(centres) < NEAR_BP
        metrics = {}
        fig, ax = subplots(figsize=(9, 4))
        for lab, m in sorted(means.items(), reverse=True):
            ax.step(centres, m["profile"], where="mid", label=f"{LABELS[lab]} signal (n={m['n']})")
            metrics[f"attention/{LABELS[lab]}/near_signal_frac"] = float(m["profile"][near].sum() / m["profile"].sum())
        ax.axvline(0, color="grey", ls="--", lw=0.8, label="removed signal")
        ax.set(xlabel="bp relative to the signal (upstream < 0 < downstream)", ylabel="mean attention weight",
               title=f"Attention from <=> to the window ({self._what()})")
        ax.legend()
        save_figure(fig, output_dir / "attention_profile.png", dpi=110)
        with open(output_dir / "attention_profile.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["bp_from", "bp_to", *(f"{LABELS[lab]}_attention" for lab in sorted(means, reverse=True))])
            for i in range(n_tok):
                writer.writerow([edges[i], edges[i + 1], *(means[lab]["profile"][i] for lab in sorted(means, reverse=True))])
        vmax = max(float(np.quantile(m["map"][np.tril_indices(n_tok)], 0.99)) for m in means.values())
        for lab, m in means.items():
            fig, ax = subplots(figsize=(6.2, 5.4))
            im = ax.imshow(m["map"], extent=(edges[0], edges[-1], edges[-1], edges[0]), cmap="magma", vmin=0, vmax=vmax)
            fig.colorbar(im, ax=ax, label="mean attention weight")
            ax.set(xlabel="key position, bp relative to the signal", ylabel="query position, bp relative to the signal",
                   title=f"{LABELS[lab].capitalize()} signals (n={m['n']})\n{self._what()}")
            save_figure(fig, output_dir / f"attention_map_{LABELS[lab]}.png", dpi=110)
        log.info(f"Attention near the signal (±{NEAR_BP} bp share of <=> window attention): {metrics}")
        return metrics
