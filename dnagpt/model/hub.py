"""DNAGPT on the Hugging Face Hub: ``from_pretrained(dir_or_repo_id)``, ``save_pretrained``, ``push_to_hub``.

Built on ``huggingface_hub``'s ``PyTorchModelHubMixin``, so no ``transformers`` dependency. The folder it writes is the one
:func:`dnagpt.model.pretrained.save_pretrained` writes (``model.safetensors``, ``config.json``,
``dnagpt_tokenizer.json``) plus the mixin's model card (``README.md``): a downloaded model is also a valid ``init_from=``
or ``ckpt_path=`` of ``evaluate.py``, and loading goes through the same strict checks (every missing, unexpected or
mis-shaped key, a tokenizer spec that does not match), never the mixin's default ``strict=False``.

Two lines for a user::

    from dnagpt.model.hub import PretrainedDNAGPT
    model = PretrainedDNAGPT.from_pretrained("org/dnagpt-model")   # or a local directory

and ``model.tokenizer`` is the vocabulary it was trained with. Publishing a run's checkpoint::

    PretrainedDNAGPT.from_checkpoint(read_checkpoint("last.ckpt")).push_to_hub("org/dnagpt-model")
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from huggingface_hub import PyTorchModelHubMixin, snapshot_download
from huggingface_hub.errors import EntryNotFoundError, HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError

from dnagpt.model.config import GPTConfig
from dnagpt.model.gpt import DNAGPT
from dnagpt.model.pretrained import (
    CONFIG_FILE,
    LEGACY_TOKENIZER_FILE,
    MODEL_FILE,
    TOKENIZER_FILE,
    build_loaded,
    read_pretrained,
    save_pretrained,
)
from dnagpt.tokenizer import KmerTokenizer
from dnagpt.utils.errors import CheckpointError, MissingFileError

if TYPE_CHECKING:  # the model layer imports no Lightning: a checkpoint is only read by its attributes
    from dnagpt.checkpointing import Checkpoint

__all__ = ["PretrainedDNAGPT"]

# what a download fetches: the legacy tokenizer name too, so repositories published before the rename still load
_FILES = [MODEL_FILE, CONFIG_FILE, TOKENIZER_FILE, LEGACY_TOKENIZER_FILE]

MODEL_CARD = """---
{{ card_data }}
---

# DNAGPT

A DNAGPT model (a GPT over DNA written as non-overlapping 6-mer words, arXiv 2307.05628) saved by the `dnagpt` package.

```python
from dnagpt.model.hub import PretrainedDNAGPT
model = PretrainedDNAGPT.from_pretrained("{{ repo_id | default('<this repository>', true) }}")
```

`config.json` is the network's `GPTConfig`, `dnagpt_tokenizer.json` the spec of its k-mer tokenizer
(`dnagpt.tokenizer.KmerTokenizer.from_dict`); neither is a `transformers` file.
"""


class PretrainedDNAGPT(
    DNAGPT,
    PyTorchModelHubMixin,
    library_name="dnagpt",
    tags=["dna", "genomics", "dnagpt"],
    paper_url="https://arxiv.org/abs/2307.05628",
    model_card_template=MODEL_CARD,
):
    """A :class:`DNAGPT` that carries its tokenizer spec and speaks the Hub's ``from_pretrained`` / ``push_to_hub``."""

    def __init__(self, config: GPTConfig, tokenizer_spec: dict) -> None:
        super().__init__(config)
        self.tokenizer_spec = dict(tokenizer_spec)

    @property
    def tokenizer(self) -> KmerTokenizer:
        """The tokenizer the weights were trained with."""
        return KmerTokenizer.from_dict(self.tokenizer_spec)

    @classmethod
    def from_model(cls, model: DNAGPT, tokenizer_spec: dict) -> PretrainedDNAGPT:
        """A trained network with its tokenizer spec, ready to save or publish; it shares the network's weights (no copy)."""
        return build_loaded(lambda: cls(model.config, tokenizer_spec), model.state_dict(), "the given model")

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint) -> PretrainedDNAGPT:
        """The network of a run's checkpoint, as ``dnagpt.checkpointing.read_checkpoint`` reads it (a Lightning ``.ckpt``
        or a ``save_pretrained`` directory), ready to publish. A released ``.pth`` records no config or tokenizer."""
        if checkpoint.model_cfg is None or checkpoint.tokenizer_spec is None:
            raise CheckpointError(
                f"{checkpoint.path} records no model config or tokenizer (a released .pth?): build the network, load it "
                "with load_release_state_dict and use PretrainedDNAGPT.from_model(network, tokenizer.to_dict())"
            )
        config = GPTConfig.from_dict(dict(checkpoint.model_cfg))
        spec = dict(checkpoint.tokenizer_spec)
        return build_loaded(lambda: cls(config, spec), checkpoint.state_dict, str(checkpoint.path))

    def _save_pretrained(self, save_directory: Path) -> None:
        save_pretrained(self, save_directory, self.tokenizer_spec)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> PretrainedDNAGPT:
        """A local ``save_pretrained`` directory or a Hub repository id (``org/name``; ``revision=``, ``token=``,
        ``cache_dir=``, ``local_files_only=`` as in ``huggingface_hub``); ``tokenizer_spec=`` requires that spec."""
        try:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except (HFValidationError, RepositoryNotFoundError, LocalEntryNotFoundError, EntryNotFoundError) as err:
            reason = str(err).strip().splitlines()[0]
            raise MissingFileError(
                f"{pretrained_model_name_or_path} is neither a local save_pretrained directory nor a model repository "
                f"that can be downloaded ({type(err).__name__}: {reason})"
            ) from None

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        map_location: str = "cpu",
        tokenizer_spec: dict | None = None,
        config: object = None,  # the mixin's reading of config.json; read_pretrained reads it strictly instead
    ) -> PretrainedDNAGPT:
        directory = Path(model_id)
        if not directory.is_dir():
            directory = Path(snapshot_download(
                repo_id=model_id, revision=revision, cache_dir=cache_dir, force_download=force_download,
                local_files_only=local_files_only, token=token, allow_patterns=_FILES,
            ))  # fmt: skip
        gpt_config, state_dict, spec = read_pretrained(directory, tokenizer_spec)
        model = build_loaded(lambda: cls(gpt_config, spec), state_dict, str(directory / MODEL_FILE))
        return model.to(map_location).eval()
