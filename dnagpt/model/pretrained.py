"""Weights in and out: the released DNAGPT ``.pth`` files, and our own safetensors + JSON directories.

A released state dict differs from ours only by two head names (the release's ``mlm_head`` and ``num_regression``
are our ``token_head`` and ``regression_head``; every other key, ``number_embedding`` included, is the same), so
loading is a rename table plus a strict check that reports every missing, unexpected and mis-shaped key at once: a
checkpoint either loads exactly or fails with the full list (a ``CheckpointError``), never half-loaded behind
``strict=False``. A missing file is a ``MissingFileError``.

A ``save_pretrained`` directory holds ``model.safetensors``, ``config.json`` (the GPTConfig) and
``dnagpt_tokenizer.json`` (the tokenizer spec). The spec was once written as ``tokenizer.json``, the name of a Hugging
Face fast-tokenizer file, which any Hugging Face tool opening the folder would misread; directories written under that
name still load, with a ``FutureWarning`` saying how to rename the file.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from dnagpt.model.config import DYNAMIC_VOCAB_SIZE, FIXED_VOCAB_SIZE, PRESETS, GPTConfig
from dnagpt.model.gpt import DNAGPT
from dnagpt.utils.errors import CheckpointError, MissingFileError

# release prefix -> ours; number_embedding is listed to say it is the same layer under the same name
RELEASE_RENAMES = {
    "mlm_head.": "token_head.",
    "num_regression.": "regression_head.",
    "number_embedding.": "number_embedding.",
}
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP and torch.compile wrappers
_VOCABULARIES = {
    FIXED_VOCAB_SIZE: "the fixed 6-mer vocabulary (15,659 ids, dnagpt_0.1b_h)",
    DYNAMIC_VOCAB_SIZE: "the dynamic 1..6-mer vocabulary (19,564 ids, dnagpt_0.1b_m / dnagpt_3b_m)",
}
MODEL_FILE, CONFIG_FILE, TOKENIZER_FILE = "model.safetensors", "config.json", "dnagpt_tokenizer.json"
LEGACY_TOKENIZER_FILE = "tokenizer.json"  # our name before the rename; a Hugging Face fast-tokenizer file elsewhere

StateDictOrPath = Mapping[str, Any] | str | os.PathLike
M = TypeVar("M", bound=DNAGPT)


def _rename_release_key(key: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix) :], True
    for old, new in RELEASE_RENAMES.items():
        if key.startswith(old):
            return new + key[len(old) :]
    return key


def _read_release(state_dict_or_path: StateDictOrPath) -> dict[str, Any]:
    """A released checkpoint (raw or ``{"model": sd}``, in memory or on disk) under our key names."""
    source = state_dict_or_path
    if isinstance(source, str | os.PathLike):
        if not Path(source).is_file():
            raise MissingFileError(f"release checkpoint {source} not found")
        source = torch.load(source, map_location="cpu", weights_only=True)
    if isinstance(source, Mapping) and isinstance(source.get("model"), Mapping):
        source = source["model"]
    if not isinstance(source, Mapping):
        raise CheckpointError(f"a release checkpoint must be a state dict or {{'model': state_dict}}, got {type(source)}")
    return {_rename_release_key(k): v for k, v in source.items()}


def _check_state_dict(model: DNAGPT, state_dict: Mapping[str, Any], source: str) -> None:
    """Raise one CheckpointError listing every missing, unexpected and shape-mismatched key."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(state_dict) & set(expected))
        if tuple(getattr(state_dict[k], "shape", ())) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or mismatched):
        return
    lines = [f"{source} does not fit the model (config {model.config.name!r}):"]
    lines += [f"  missing: {k}" for k in missing]
    lines += [f"  unexpected: {k}" for k in unexpected]
    lines += [f"  shape mismatch: {m}" for m in mismatched]
    wte = state_dict.get("transformer.wte.weight")
    if wte is not None and wte.shape[0] != model.config.vocab_rows:
        rows = wte.shape[0]
        lines.append(
            f"  the checkpoint was built for {_VOCABULARIES.get(rows, f'a vocabulary of {rows} ids')}, "
            f"the model for {_VOCABULARIES.get(model.config.vocab_rows, f'{model.config.vocab_rows} ids')}"
        )
    raise CheckpointError("\n".join(lines))


def load_release_state_dict(model: DNAGPT, state_dict_or_path: StateDictOrPath) -> DNAGPT:
    """Load released DNAGPT weights (``mlm_head``/``num_regression`` names) strictly into ``model``."""
    state_dict = _read_release(state_dict_or_path)
    source = str(state_dict_or_path) if isinstance(state_dict_or_path, str | os.PathLike) else "state dict"
    _check_state_dict(model, state_dict, source)
    model.load_state_dict(state_dict, strict=True)
    return model


def config_from_release_state_dict(state_dict_or_path: StateDictOrPath, n_head: int | None = None) -> GPTConfig:
    """Infer the GPTConfig of a released checkpoint from its shapes; ``n_head`` from the matching preset.

    Shapes cannot tell the number of heads, so a checkpoint that matches no preset needs ``n_head``.
    """
    state_dict = _read_release(state_dict_or_path)
    for key in ("transformer.wte.weight", "transformer.wpe.weight"):
        if key not in state_dict:
            raise CheckpointError(f"not a DNAGPT checkpoint: {key} is missing")
    vocab_size, n_embd = state_dict["transformer.wte.weight"].shape
    layers = {int(m.group(1)) for k in state_dict if (m := re.match(r"transformer\.h\.(\d+)\.", k))}
    shape = dict(
        block_size=state_dict["transformer.wpe.weight"].shape[0],
        vocab_size=vocab_size,
        n_layer=len(layers),
        n_embd=n_embd,
        bias=any(k.endswith(".bias") for k in state_dict),
    )
    for preset in PRESETS.values():
        fits = all(getattr(preset, f) == v for f, v in shape.items())
        if fits and n_head in (None, preset.n_head):
            return replace(preset)
    if n_head is None:
        raise CheckpointError(f"no preset has the checkpoint's shape {shape}; pass n_head to build a custom config")
    return GPTConfig(name="custom", n_head=n_head, **shape)


def save_pretrained(model: DNAGPT, directory: str | os.PathLike, tokenizer_spec: dict) -> Path:
    """Write ``model.safetensors``, ``config.json`` and ``dnagpt_tokenizer.json`` (the spec, opaque here)."""
    try:
        spec_text = json.dumps(tokenizer_spec, indent=2, sort_keys=True)
    except TypeError as err:
        raise ValueError(f"tokenizer_spec must be JSON-serialisable: {err}") from err
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, directory / MODEL_FILE, metadata={"format": "pt"})
    (directory / CONFIG_FILE).write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
    (directory / TOKENIZER_FILE).write_text(spec_text + "\n")
    return directory


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"invalid JSON ({err})", path=path) from err


def _spec_difference(saved: Any, given: Any) -> str:
    if isinstance(saved, dict) and isinstance(given, dict):
        keys = sorted(k for k in set(saved) | set(given) if saved.get(k) != given.get(k))
        return "; ".join(f"{k}: saved {saved.get(k)!r}, given {given.get(k)!r}" for k in keys)
    return f"saved {saved!r}, given {given!r}"


def tokenizer_file(directory: Path) -> Path:
    """The tokenizer spec of a ``save_pretrained`` directory: ``dnagpt_tokenizer.json``, or in a directory written
    before the rename its ``tokenizer.json`` (with a FutureWarning), unless that is a Hugging Face tokenizer file."""
    current, legacy = directory / TOKENIZER_FILE, directory / LEGACY_TOKENIZER_FILE
    if current.is_file() or not legacy.is_file():
        return current
    spec = _read_json(legacy)
    if isinstance(spec, dict) and {"model", "added_tokens"} <= set(spec):
        raise CheckpointError(
            f"is a Hugging Face tokenizer file, not a dnagpt tokenizer spec; a dnagpt directory holds {TOKENIZER_FILE}",
            path=legacy,
        )
    warnings.warn(
        f"{legacy}: the tokenizer spec is now written as {TOKENIZER_FILE} ({LEGACY_TOKENIZER_FILE} is the name of a "
        f"Hugging Face tokenizer file); rename it, or save the model again, before the old name stops being read",
        FutureWarning,
        stacklevel=3,
    )
    return legacy


def read_pretrained(
    directory: str | os.PathLike, tokenizer_spec: dict | None = None
) -> tuple[GPTConfig, dict[str, Tensor], dict]:
    """The model config, weights and tokenizer spec of a :func:`save_pretrained` directory, not yet in a network.

    If ``tokenizer_spec`` is given it must equal the saved one: a model is only meaningful with the vocabulary
    it was trained on.
    """
    directory = Path(directory)
    spec_file = tokenizer_file(directory)
    for path in (directory / MODEL_FILE, directory / CONFIG_FILE, spec_file):
        if not path.is_file():
            raise MissingFileError(
                f"{path} not found: from_pretrained needs {MODEL_FILE}, {CONFIG_FILE} and {TOKENIZER_FILE} "
                f"(written by save_pretrained)"
            )
    saved_spec = _read_json(spec_file)
    if tokenizer_spec is not None:
        given = json.loads(json.dumps(tokenizer_spec))  # JSON normal form: tuples become lists, as when saved
        if given != saved_spec:
            difference = _spec_difference(saved_spec, given)
            raise CheckpointError(f"tokenizer mismatch with {spec_file}: {difference}")
    config = GPTConfig.from_dict(_read_json(directory / CONFIG_FILE))
    return config, load_file(directory / MODEL_FILE), saved_spec


def build_loaded(build: Callable[[], M], state_dict: Mapping[str, Tensor], source: str) -> M:
    """The network ``build()`` makes, holding ``state_dict`` (strictly checked; ``source`` names it in the error).

    Built on the meta device and given the loaded tensors themselves: no random initialisation to overwrite and no
    second copy of the weights, which matters at 3B parameters.
    """
    with torch.device("meta"):
        model = build()
    _check_state_dict(model, state_dict, source)
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model


def from_pretrained(directory: str | os.PathLike, tokenizer_spec: dict | None = None) -> tuple[DNAGPT, dict]:
    """Restore a model written by :func:`save_pretrained`, with its tokenizer spec (see :func:`read_pretrained`)."""
    config, state_dict, spec = read_pretrained(directory, tokenizer_spec)
    return build_loaded(lambda: DNAGPT(config), state_dict, str(Path(directory) / MODEL_FILE)), spec
