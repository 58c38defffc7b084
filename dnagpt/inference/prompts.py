"""Prompts of unlabelled inputs: how each task turns a :class:`~dnagpt.inference.records.Record` into the sample that its
``predict_step`` reads, the same sentence its DataModule builds for training.

A task names its builder in ``PREDICTION_INPUT`` (``dnagpt.tasks.base.DNAGPTTask``); ``dnagpt.predict`` builds it with the
checkpoint's tokenizer and context, the task's data config (``cfg.data``: the prompt geometry it was trained with) and
the default species, checks every record with :meth:`PredictionInput.samples` before the model runs, and batches the
samples with :meth:`PredictionInput.collate`. A sample is a dict of tensors, one prompt; a record may make several
(windows of a long sequence), whose outputs the writer averages. The DataModule adds ``row`` (the input row) and
``name`` to each. A record the prompt cannot take is an ``InputError`` naming the record (:meth:`Record.error`).

- :class:`GSRInput`: ``<species>`` + the window with its central signal cut out + ``<=>``. A record is the window as the
  GSR tables hold it (606 bp around a PAS hexamer, 603 bp around a TIS ATG) or the 600 bp already cut; with
  ``data.phases > 1`` a sample holds every phase (as :class:`dnagpt.data.gsr.GSRDataset` does), and the task averages.
- :class:`ExpressionInput`: ``<species>`` + promoter + ``<=><M>``, the regression head read at the last ``<M>``. A
  record is the stored sequence (``data.sequence_length`` bp, TSS at ``data.tss_index``), cropped to ``data.window``, or
  the window itself; with ``data.phases > 1`` the phases of a stored sequence shift the window as in training
  (:func:`dnagpt.data.expression.phase_spans`), those of a bare window are trimmed (it has no room to shift).
  Prompts with numeric features are refused: their z-scoring statistics are the training split's, which a checkpoint
  does not hold.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from dnagpt.data.expression import ExpressionDataModule, phase_spans
from dnagpt.data.gsr import SIGNALS, cut_signal, phase_windows
from dnagpt.inference.records import Record
from dnagpt.tokenizer import KmerTokenizer
from dnagpt.utils.errors import ConfigError, InputError

__all__ = ["ExpressionInput", "GSRInput", "PredictionInput", "check_species", "dna_ids", "species_id"]


def check_species(tokenizer: KmerTokenizer, species: str | None) -> str | None:
    """The default species of a command (``species=``), checked once: a ConfigError when the tokenizer has no such token."""
    if species is not None:
        try:
            tokenizer.species_id(species)
        except InputError as err:
            raise ConfigError(f"species={species}: {err}") from None
    return species


def species_id(tokenizer: KmerTokenizer, record: Record, default: str | None) -> int | None:
    """The species token of a record: its own (a table's species column), else the default; None when neither."""
    if record.species is None:
        return None if default is None else tokenizer.species_id(default)
    try:
        return tokenizer.species_id(record.species)
    except InputError as err:
        raise record.error(str(err), column="species") from None


def dna_ids(tokenizer: KmerTokenizer, record: Record, sequence: str | None = None) -> np.ndarray:
    """The k-mer ids of a record's sequence (or of a part of it); a letter outside the alphabet names the record."""
    try:
        return tokenizer.encode_dna(record.sequence if sequence is None else sequence)
    except InputError as err:
        raise record.error(str(err)) from None


class PredictionInput(ABC):
    """What a task's unlabelled sample is (module docstring). ``data`` is the task's data config, read for its geometry."""

    def __init__(
        self, tokenizer: KmerTokenizer, block_size: int, data: Mapping[str, Any], species: str | None = "human"
    ) -> None:
        self.tokenizer, self.block_size = tokenizer, block_size
        self.species = check_species(tokenizer, species)

    def species_id(self, record: Record) -> int:
        sp = species_id(self.tokenizer, record, self.species)
        if sp is None:
            raise record.error("no species: the input has no species column and species=null; give species=<name>")
        return sp

    @abstractmethod
    def samples(self, record: Record) -> list[dict[str, torch.Tensor]]:
        """The tensors of a record's prompts (one, or one per window of a long record: the writer averages their
        outputs); an ``InputError`` naming the record if it cannot be read."""

    def collate(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Stack the samples; tensors of different lengths are right-padded (``input_ids`` with ``<P>``, others 0);
        anything else (the record names) stays a list."""
        batch: dict[str, Any] = {}
        for key in samples[0]:
            values = [s[key] for s in samples]
            if not isinstance(values[0], torch.Tensor):
                batch[key] = values
            elif all(v.shape == values[0].shape for v in values):
                batch[key] = torch.stack(values)
            else:
                pad = self.tokenizer.pad_id if key == "input_ids" else 0
                batch[key] = pad_sequence(values, batch_first=True, padding_value=pad)
        return batch


class GSRInput(PredictionInput):
    """GSR prompts (module docstring); ``data.phases`` as the model was fine-tuned (1: the release prompt)."""

    def __init__(self, tokenizer: KmerTokenizer, block_size: int, data: Mapping[str, Any], species: str | None = "human"):
        super().__init__(tokenizer, block_size, data, species)
        self.phases = int(data.get("phases") or 1)
        self.signal_of = {spec.window: name for name, spec in SIGNALS.items()}
        self.cut_lengths = sorted({spec.cut_len for spec in SIGNALS.values()})
        longest = phase_windows("N" * max(self.cut_lengths), self.phases)[0]
        prompt_len = 2 + -(-len(longest) // tokenizer.k)
        if prompt_len > block_size:
            raise ConfigError(f"GSR prompts are {prompt_len} tokens, more than the model's block_size {block_size}")

    def samples(self, record: Record) -> list[dict[str, torch.Tensor]]:
        seq = record.sequence
        if len(seq) in self.signal_of:
            seq = cut_signal(seq, self.signal_of[len(seq)])
        elif len(seq) not in self.cut_lengths:
            windows = ", ".join(f"{w} ({SIGNALS[s].name} window)" for w, s in self.signal_of.items())
            cut = " or ".join(map(str, self.cut_lengths))
            raise record.error(f"{len(seq)} bp; a GSR input is {windows} or {cut} (a window with its signal cut out)")
        phases = phase_windows(seq, self.phases)
        words = dna_ids(self.tokenizer, record, "".join(phases)).reshape(len(phases), -1)
        species = np.full((len(phases), 1), self.species_id(record))
        eq = np.full((len(phases), 1), self.tokenizer.eq_id)
        ids = torch.from_numpy(np.concatenate([species, words, eq], axis=1))
        input_ids = ids[0] if self.phases == 1 else ids  # (T,), or (phases, T) as GSRDataset holds them
        return [{"input_ids": input_ids, "answer_pos": torch.tensor(input_ids.shape[-1] - 1)}]


class ExpressionInput(PredictionInput):
    """Expression prompts (module docstring): ``data.window``, ``data.tss_index``, ``data.sequence_length`` and
    ``data.phases`` as trained."""

    def __init__(self, tokenizer: KmerTokenizer, block_size: int, data: Mapping[str, Any], species: str | None = "human"):
        super().__init__(tokenizer, block_size, data, species)
        if data.get("feature_columns"):
            raise ConfigError(
                f"data.feature_columns={list(data['feature_columns'])}: predictions read sequence-only expression "
                "prompts; the features' z-scoring statistics belong to the training split and are not in a checkpoint"
            )
        start, end = (int(w) for w in data.get("window", (-1500, 1500)))
        self.phases = int(data.get("phases") or 1)
        self.tss_index = int(data.get("tss_index", 7000))
        self.sequence_length = int(data.get("sequence_length", 10500))
        self.window_len = end - start
        # [lo, hi) of each phase in a stored sequence, and in a record that is the window itself (trimmed phases)
        tss, stored, window = self.tss_index, self.sequence_length, self.window_len
        self.spans = {
            stored: phase_spans(tss + start, tss + end, stored, self.phases),
            window: phase_spans(0, window, window, self.phases),
        }
        positions = ExpressionDataModule.prompt_positions((start, end), 0, tokenizer)
        if positions > block_size:
            raise ConfigError(
                f"the expression prompt of data.window={[start, end]} needs {positions} positions, more than the "
                f"model's block_size {block_size}"
            )

    def samples(self, record: Record) -> list[dict[str, torch.Tensor]]:
        seq = record.sequence
        if len(seq) not in self.spans:
            raise record.error(
                f"{len(seq)} bp; an expression input is the stored promoter ({self.sequence_length} bp, TSS at index "
                f"{self.tss_index}) or the window the model reads ({self.window_len} bp)"
            )
        tok = self.tokenizer
        spans = self.spans[len(seq)]
        words = dna_ids(tok, record, "".join(seq[lo:hi] for lo, hi in spans)).reshape(len(spans), -1)
        species = np.full((len(spans), 1), self.species_id(record))
        answer = np.broadcast_to(np.array([tok.eq_id, tok.number_id]), (len(spans), 2))
        ids = torch.from_numpy(np.concatenate([species, words, answer], axis=1))
        input_ids = ids[0] if self.phases == 1 else ids  # (T,), or (phases, T) as the DataModule holds them
        sample = {
            "input_ids": input_ids,
            "values": torch.zeros(0, dtype=torch.float32),
            "value_pos": torch.zeros(0, dtype=torch.long),
            "value_mask": torch.zeros(0, dtype=torch.bool),
            "reg_pos": torch.tensor([input_ids.shape[-1] - 1]),
        }
        return [sample]
