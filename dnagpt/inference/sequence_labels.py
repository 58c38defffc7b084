"""Prompts of unlabelled inputs for ``task=classification`` and ``task=regression`` (their ``PREDICTION_INPUT``).

A record becomes the prompts a training row became: :class:`dnagpt.data.sequence_labels.PromptLayout` under the task's
data config (``data.species`` or ``data.species_column``, ``data.long_sequences``, ``data.window_stride``, the
checkpoint's ``block_size``). That is one prompt per record, or one per window, whose outputs the prediction writer
averages as the evaluator does. The species token follows the data config, not the command's ``species=``: a model
fine-tuned without one (``data.species=null``, the classification default) is asked without one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from dnagpt.data.sequence_labels import ClassificationDataModule, PromptLayout, RegressionDataModule
from dnagpt.inference.prompts import PredictionInput, check_species, species_id
from dnagpt.inference.records import Record
from dnagpt.tokenizer import KmerTokenizer

__all__ = ["ClassificationInput", "RegressionInput"]


class LabelledTableInput(PredictionInput):
    """The prompts of a labelled-table task (module docstring); subclasses fix the prompt's closing tokens."""

    TAIL: ClassVar[tuple[str, ...]]

    def __init__(
        self, tokenizer: KmerTokenizer, block_size: int, data: Mapping[str, Any], species: str | None = "human"
    ) -> None:
        super().__init__(tokenizer, block_size, data, species)
        self.species_column = data.get("species_column")
        self.fixed = check_species(tokenizer, data.get("species"))
        with_species = bool(self.fixed or self.species_column)
        self.layout = PromptLayout(
            tokenizer, block_size, self.TAIL, with_species, data.get("long_sequences", "refuse"), data.get("window_stride")
        )

    def samples(self, record: Record) -> list[dict[str, torch.Tensor]]:
        species = self.tokenizer.species_id(self.fixed) if self.fixed else None
        if self.species_column:
            species = species_id(self.tokenizer, record, None)
            if species is None:
                raise record.error(f"no species: the model was fine-tuned with data.species_column={self.species_column}")
        try:
            prompts = self.layout.prompts(record.sequence, species)
        except ValueError as err:  # too long under refuse, or a letter the tokenizer refuses
            raise record.error(str(err)) from None
        return [
            {"input_ids": torch.from_numpy(p), "attention_mask": torch.ones(len(p), dtype=torch.bool),
             "answer_pos": torch.tensor(len(p) - 1)}
            for p in prompts
        ]  # fmt: skip


class ClassificationInput(LabelledTableInput):
    TAIL = ClassificationDataModule.TAIL


class RegressionInput(LabelledTableInput):
    TAIL = RegressionDataModule.TAIL
