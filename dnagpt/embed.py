"""Embeddings of DNA sequences from a trained DNAGPT: ``python -m dnagpt.embed ckpt=<ckpt> input=seqs.fa output=emb.npy``.

Each sequence is read as the model reads DNA in pre-training: ``[<species>] k-mers <=>``, cut into non-overlapping k-mers
from the left by the checkpoint's tokenizer (soft-masked lowercase upper-cased, IUPAC codes read as ``N``, any other
letter an error naming the record). The vectors are the hidden states of one ``layer``: ``0`` the embeddings fed to the
first block, ``i`` the residual stream after block ``i``, ``n_layer`` (= ``-1``, the default) the final, layer-normed
state the heads read. ``pooling`` makes one vector per sequence, or one per DNA token:

- ``mean``: the mean over the sequence's DNA tokens;
- ``last``: the state at the last DNA token (causal attention: the only one that has read the whole sequence);
- ``eq``: the state at the ``<=>`` appended after the sequence, where the tasks read their answers;
- ``tokens``: every DNA token's vector; row ``j`` of a record covers bases ``k*j .. k*j+k-1``.

A sequence longer than the context is an error naming it (``long=error``), or is cut into windows that fill the context
(``long=window``): each window is embedded on its own and the window vectors are averaged, weighted by their DNA tokens
(``tokens`` gives each window's token vectors in order).

The command reads the input twice and never holds it, nor the embeddings: a first pass checks every record and writes the
index (row, name, bp, tokens, windows, and for ``tokens`` the offset of the record's first row), a second pass embeds in
batches (sorted by length within a buffer, padded at the end: causal attention never reads the padding) and writes
blocks of rows into the ``.npy`` (:mod:`dnagpt.inference.npy`). :func:`embed` is the Python form for a list of sequences.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor
from tqdm import tqdm

from dnagpt.checkpointing import Checkpoint, atomic_path, read_checkpoint
from dnagpt.commands import hydra_command
from dnagpt.config_checks import instantiate_group
from dnagpt.inference.npy import npy_rows
from dnagpt.inference.prompts import check_species, dna_ids, species_id
from dnagpt.inference.records import Columns, Record, RecordSource
from dnagpt.model.config import GPTConfig
from dnagpt.model.gpt import DNAGPT
from dnagpt.pipeline import apply_extras, build_model_config
from dnagpt.tasks.base import DNAGPTTask
from dnagpt.tokenizer import KmerTokenizer
from dnagpt.utils.errors import ConfigError
from dnagpt.utils.pylogger import RankedLogger

__all__ = ["Embedder", "embed", "embed_tokens", "load_network", "main"]

log = RankedLogger(__name__)

Pooling = Literal["mean", "last", "eq", "tokens"]
POOLINGS: tuple[str, ...] = ("mean", "last", "eq", "tokens")
LONG = ("error", "window")
PRECISIONS = ("auto", "bf16", "fp32")
BUFFER_BATCHES = 8  # pieces are sorted by length within this many batches: little padding, memory still bounded
# bf16 autocast on CPU pays from this batch on: measured 1.2-1.35x fp32 at 128 prompts of 600 bp, 0.6x at 32, where
# casting activations around LayerNorm and the residual adds costs more than the faster matmuls gain (docs/inference.md)
BF16_CPU_MIN_BATCH = 128


def load_network(
    source: str | Path | Checkpoint | DNAGPTTask | DNAGPT,
    model_cfg: GPTConfig | dict | None = None,
    tokenizer: KmerTokenizer | None = None,
) -> tuple[DNAGPT, KmerTokenizer]:
    """The network and its tokenizer from a checkpoint path (a Lightning ``.ckpt``, a ``save_pretrained`` directory, a
    released ``.pth``), a read :class:`Checkpoint`, a task module, or a network (``tokenizer`` then required).

    A released ``.pth`` holds weights only: ``model_cfg`` and ``tokenizer`` describe it. Weights load strictly, with the
    checks of :meth:`DNAGPTTask.load_weights` (tokenizer and shape against the checkpoint's own).
    """
    if isinstance(source, DNAGPTTask):
        return source.model, source.tokenizer
    if isinstance(source, DNAGPT):
        if tokenizer is None:
            raise ConfigError("embedding with a bare DNAGPT network needs its tokenizer= (e.g. KmerTokenizer())")
        return source, tokenizer
    ckpt = source if isinstance(source, Checkpoint) else read_checkpoint(source, key="ckpt")
    cfg = ckpt.model_cfg if ckpt.model_cfg is not None else model_cfg
    spec = ckpt.tokenizer_spec if ckpt.tokenizer_spec is not None else (tokenizer.to_dict() if tokenizer else None)
    if cfg is None or spec is None:
        raise ConfigError(
            f"{ckpt.describe('ckpt')} holds weights only (a released .pth): give the model config and tokenizer it was "
            "trained with (model_cfg=GPTConfig.from_name(...), tokenizer=KmerTokenizer(...); on the command line the "
            "model= and tokenizer= groups)"
        )
    task = DNAGPTTask(cfg.to_dict() if isinstance(cfg, GPTConfig) else dict(cfg), dict(spec))
    task.load_weights(ckpt, key="ckpt")
    return task.model, task.tokenizer


@dataclass(frozen=True)
class Piece:
    """One prompt: a record's window of DNA tokens between its species and ``<=>`` tokens."""

    row: int  # the record's input row
    offset: int  # the row of its first DNA token in the concatenated token vectors (``tokens``)
    ids: np.ndarray  # the whole prompt
    first: int  # index of its first DNA token in ids
    n_dna: int
    n_windows: int  # of its record


class Embedder:
    """Embeds records in batches (module docstring); :meth:`plan` checks one record, calling the embedder embeds many."""

    def __init__(
        self,
        model: DNAGPT,
        tokenizer: KmerTokenizer,
        layer: int = -1,
        pooling: Pooling = "mean",
        species: str | None = "human",
        long: Literal["error", "window"] = "error",
        batch_size: int = 128,
        precision: Literal["auto", "bf16", "fp32"] = "auto",
        progress: bool = False,
    ) -> None:
        n_layer = model.config.n_layer
        if isinstance(layer, bool) or not isinstance(layer, int) or not -(n_layer + 1) <= layer <= n_layer:
            raise ConfigError(f"layer={layer!r} must be a whole number in {-(n_layer + 1)}..{n_layer} (the model has "
                              f"{n_layer} blocks: 0 is the embedding layer, {n_layer} or -1 the final state)")  # fmt: skip
        choices = (("pooling", pooling, POOLINGS), ("long", long, LONG), ("precision", precision, PRECISIONS))
        for key, value, allowed in choices:
            if value not in allowed:
                raise ConfigError(f"{key}={value!r} must be one of {', '.join(allowed)}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size={batch_size!r} must be a whole number >= 1")
        self.model, self.tokenizer = model.eval(), tokenizer
        self.layer = layer % (n_layer + 1)
        self.pooling, self.long, self.batch_size, self.progress = pooling, long, batch_size, progress
        self.species = check_species(tokenizer, species)
        self.max_dna = model.config.block_size - 1 - (species is not None)  # the <=> and any species token
        device = next(model.parameters()).device
        self.bf16 = self._bf16(precision, device, batch_size)
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16)

    @property
    def width(self) -> int:
        return self.model.config.n_embd

    @staticmethod
    def _bf16(precision: str, device: torch.device, batch_size: int) -> bool:
        """``auto``: bf16 on a GPU that has it, and on CPU for batches where it measured faster (``BF16_CPU_MIN_BATCH``)."""
        if precision != "auto":
            return precision == "bf16"
        if device.type == "cpu":
            return batch_size >= BF16_CPU_MIN_BATCH
        return device.type == "cuda" and torch.cuda.is_bf16_supported()

    # ---- records -> prompts ---------------------------------------------------------------------------------------
    def plan(self, record: Record) -> tuple[int, int]:
        """(DNA tokens, windows) of a record; an error naming it when it cannot be embedded."""
        n = len(dna_ids(self.tokenizer, record))
        species_id(self.tokenizer, record, self.species)
        windows = -(-n // self.max_dna)
        if windows > 1 and self.long == "error":
            raise record.error(
                f"{len(record.sequence)} bp are {n} DNA tokens, more than the {self.max_dna} that fit the model's "
                f"{self.model.config.block_size} positions with the species and <=> tokens; long=window embeds it in "
                "windows"
            )
        return n, windows

    def _pieces(self, records: Iterable[Record]) -> Iterator[Piece]:
        tok, offset = self.tokenizer, 0
        for record in records:
            ids = dna_ids(tok, record)
            sp = species_id(tok, record, self.species)
            head = [] if sp is None else [sp]
            chunks = range(0, len(ids), self.max_dna)
            if len(chunks) > 1 and self.long == "error":
                self.plan(record)  # raises, naming the record
            for start in chunks:
                dna = ids[start : start + self.max_dna]
                prompt = np.concatenate([head, dna, [tok.eq_id]]).astype(np.int64)
                yield Piece(record.row, offset + start, prompt, len(head), len(dna), len(chunks))
            offset += len(ids)

    # ---- the network ----------------------------------------------------------------------------------------------
    def _states(self, input_ids: Tensor) -> Tensor:
        """(B, T, D) states of ``self.layer``; inputs without numbers, so positions are token positions."""
        if self.layer == self.model.config.n_layer:
            return self.model(input_ids, compute_logits=False).hidden
        captured: list[Tensor] = []
        hook = self.model.transformer.h[self.layer].register_forward_pre_hook(lambda _, args: captured.append(args[0]))
        try:
            self.model(input_ids, compute_logits=False)
        finally:
            hook.remove()
        return captured[0]

    def _vectors(self, pieces: Sequence[Piece]) -> list[np.ndarray]:
        """Per piece: the (D,) pooled vector, or its (n_dna, D) token vectors."""
        device = next(self.model.parameters()).device
        width = max(len(p.ids) for p in pieces)
        ids = np.full((len(pieces), width), self.tokenizer.pad_id, dtype=np.int64)
        for i, p in enumerate(pieces):
            ids[i, : len(p.ids)] = p.ids
        with torch.inference_mode(), self.autocast:
            states = self._states(torch.from_numpy(ids).to(device)).float()
        first = torch.tensor([p.first for p in pieces], device=device)
        n = torch.tensor([p.n_dna for p in pieces], device=device)
        rows = torch.arange(len(pieces), device=device)
        if self.pooling == "mean":
            pos = torch.arange(width, device=device)
            mask = ((pos >= first[:, None]) & (pos < (first + n)[:, None])).float()
            out = (mask.unsqueeze(-1) * states).sum(1) / n[:, None]
        elif self.pooling in ("last", "eq"):
            out = states[rows, first + n - int(self.pooling == "last")]
        else:
            states = states.cpu().numpy()
            return [states[i, p.first : p.first + p.n_dna] for i, p in enumerate(pieces)]
        return list(out.cpu().numpy())

    def __call__(self, records: Iterable[Record], total: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """``(first output row, (n, D) block)`` for every record: pooled, its row and one vector once all its windows
        are done; ``tokens``, each window's token vectors at their rows of the concatenated token array. The progress
        bar (``total`` records) counts records done."""
        sums: dict[int, tuple[np.ndarray, int]] = {}  # row -> (token-weighted sum of window vectors, tokens)
        left: dict[int, int] = {}  # row -> windows still to come
        pieces = self._pieces(records)
        with tqdm(total=total, desc="embed", unit="seq", disable=not self.progress) as bar:
            while buffer := list(itertools.islice(pieces, self.batch_size * BUFFER_BATCHES)):
                buffer.sort(key=lambda p: len(p.ids))
                for b in range(0, len(buffer), self.batch_size):
                    batch = buffer[b : b + self.batch_size]
                    for p, v in zip(batch, self._vectors(batch), strict=True):
                        if self.pooling == "tokens":
                            yield p.offset, v
                        else:
                            v_sum, tokens = sums.get(p.row, (0.0, 0))
                            sums[p.row] = (v_sum + v * p.n_dna, tokens + p.n_dna)
                        left[p.row] = left.get(p.row, p.n_windows) - 1
                        if left[p.row]:
                            continue
                        del left[p.row]
                        bar.update()
                        if self.pooling != "tokens":
                            v_sum, tokens = sums.pop(p.row)
                            mean = v if p.n_windows == 1 else v_sum / tokens  # windows: weighted by their DNA tokens
                            yield p.row, mean[None].astype(np.float32, copy=False)


def _records(sequences: Sequence[str | tuple[str, str]]) -> list[Record]:
    return [Record(i, s[0], s[1]) if isinstance(s, tuple) else Record(i, f"seq{i}", s) for i, s in enumerate(sequences)]


def embed(
    sequences: Sequence[str | tuple[str, str]],
    ckpt_or_module: str | Path | Checkpoint | DNAGPTTask | DNAGPT,
    layer: int = -1,
    pooling: Literal["mean", "last", "eq"] = "mean",
    **options,
) -> np.ndarray:
    """(N, D) float32 vectors of ``sequences`` (strings, or ``(name, sequence)`` pairs), in order.

    ``options``: ``species`` (default ``"human"``; ``None``: no species token), ``long`` (``"error"`` or ``"window"``),
    ``batch_size``, ``precision`` (``"auto"``, ``"bf16"``, ``"fp32"``), and ``model_cfg``/``tokenizer`` for a released
    ``.pth`` or a bare network (:func:`load_network`). A network or task passed in is put in eval mode.

    >>> net = DNAGPT(GPTConfig.from_name("tiny", n_layer=1, n_head=2, n_embd=16, block_size=32))
    >>> embed(["ACGTACGTAAC", "acgtnnRY"], net, tokenizer=KmerTokenizer()).shape
    (2, 16)
    """
    if pooling == "tokens":
        raise ConfigError("pooling='tokens' gives one array per sequence: use embed_tokens()")
    embedder = _embedder(ckpt_or_module, layer, pooling, options)
    records = _records(sequences)
    out = np.empty((len(records), embedder.width), dtype=np.float32)
    for row, block in embedder(records):
        out[row : row + len(block)] = block
    return out


def embed_tokens(
    sequences: Sequence[str | tuple[str, str]],
    ckpt_or_module: str | Path | Checkpoint | DNAGPTTask | DNAGPT,
    layer: int = -1,
    **options,
) -> list[np.ndarray]:
    """Per sequence, the (DNA tokens, D) float32 vectors of its k-mers (options as :func:`embed`)."""
    embedder = _embedder(ckpt_or_module, layer, "tokens", options)
    records = _records(sequences)
    counts = [embedder.plan(r)[0] for r in records]
    flat = np.empty((sum(counts), embedder.width), dtype=np.float32)
    for row, block in embedder(records):
        flat[row : row + len(block)] = block
    return np.split(flat, np.cumsum(counts)[:-1])


def _embedder(source, layer: int, pooling: str, options: dict) -> Embedder:
    model, tokenizer = load_network(source, options.pop("model_cfg", None), options.pop("tokenizer", None))
    return Embedder(model, tokenizer, layer=layer, pooling=pooling, **options)


# ---- the command ------------------------------------------------------------------------------------------------------
INDEX_COLUMNS = ("row", "name", "bp", "tokens", "windows")


def index_path(output: Path) -> Path:
    """``emb.npy`` -> ``emb.index.tsv``."""
    return output.with_name(output.name.removesuffix(".npy") + ".index.tsv")


def run(cfg: DictConfig) -> tuple[Path, Path]:
    """The command's work from a composed ``embed`` config; returns the ``.npy`` and its index."""
    apply_extras(cfg)
    ckpt = read_checkpoint(cfg.ckpt, key="ckpt")
    model_cfg = tokenizer = None
    if ckpt.model_cfg is None or ckpt.tokenizer_spec is None:  # a released .pth: the model and tokenizer groups say it
        tokenizer = instantiate_group("tokenizer", cfg.tokenizer)
        model_cfg = build_model_config(cfg, tokenizer)
    model, tokenizer = load_network(ckpt, model_cfg, tokenizer)
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    options = {key: cfg[key] for key in ("layer", "pooling", "species", "long", "batch_size", "precision", "progress")}
    embedder = Embedder(model.to(device), tokenizer, **options)
    source = RecordSource(cfg.input, cfg.format, cfg.reference, Columns(**cfg.columns), cfg.paths.cache_dir, tokenizer)
    output = Path(cfg.output)
    index = index_path(output)
    columns = INDEX_COLUMNS + (("offset",) if cfg.pooling == "tokens" else ())
    with atomic_path(index) as index_partial:
        with open(index_partial, "w", newline="") as fh:
            writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
            writer.writerow(columns)
            n = tokens = 0
            for record in tqdm(source, desc="check", unit="seq", disable=not cfg.progress):
                dna, windows = embedder.plan(record)
                writer.writerow([record.row, record.name, len(record.sequence), dna, windows, tokens][: len(columns)])
                n, tokens = n + 1, tokens + dna
        shape = (tokens if cfg.pooling == "tokens" else n, embedder.width)
        log.info(f"{n:,} sequences, {tokens:,} DNA tokens: writing {shape} float32 to {output}")
        with npy_rows(output, shape) as write:
            for row, block in embedder(source, total=n):
                write(row, block)
    log.info(f"Embeddings: {output}\nIndex:      {index}")
    return output, index


main = hydra_command("embed", run)  # the command: python -m dnagpt.embed <overrides of dnagpt/conf/embed.yaml>


if __name__ == "__main__":
    main()
