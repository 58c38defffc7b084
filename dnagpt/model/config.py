"""Model hyper-parameters: one dataclass shared by Python and the Hydra YAML.

Torch-free so configs can be built, validated and serialised without touching the network. Released presets
have the shapes of the released DNAGPT checkpoints (no biases, dropout 0) and lock every field that shapes or
interprets the weights, so a preset name always means "loads the released checkpoint"; only ``tiny`` (the CPU
preset) may change shape.

Token ids are the tokenizer's: ``number_token_id`` defaults to ``KmerTokenizer.number_id`` (the ``<M>`` id every
vocabulary of ``dnagpt.tokenizer`` shares), never a literal. The pipeline passes ``number_token_id=tokenizer.number_id``
and ``vocab_size=len(tokenizer)`` explicitly; configs restored from checkpoints carry the id they were trained with.
Invalid values are a ``ConfigError`` naming the field.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from dnagpt.tokenizer import KmerTokenizer
from dnagpt.utils.errors import ConfigError

FIXED_VOCAB_SIZE = 15_659  # 6-mers only: the 4096-token human model
DYNAMIC_VOCAB_SIZE = 19_564  # 1..6-mers: the 512-token multi-species models

# Fields that change the state-dict shapes or the meaning of the weights of a released preset.
_LOCKED_FIELDS = ("block_size", "vocab_size", "n_layer", "n_head", "n_embd", "bias", "tie_head", "number_token_id")


@dataclass
class GPTConfig:
    """Shape and regularisation of a DNAGPT network (nanoGPT field names)."""

    name: str = "custom"  # preset name, recorded so checkpoints say what they are
    block_size: int = 512  # max positions *after* number insertion (size of wpe)
    vocab_size: int = DYNAMIC_VOCAB_SIZE  # len(tokenizer); logits are always sliced back to this
    padded_vocab_size: int | None = None  # rows of wte / token head if padded for speed; None = exact shape
    n_layer: int = 4  # transformer blocks
    n_head: int = 4  # attention heads per block
    n_embd: int = 256  # model width D
    dropout: float = 0.0  # embedding, attention and residual dropout (0 in the release)
    bias: bool = False  # biases in Linear and LayerNorm (none in the release)
    tie_head: bool = False  # token head = one Linear sharing wte's matrix (GPT-2), not the release's untied MLP
    number_token_id: int = KmerTokenizer.number_id  # id of <M>: every inserted value must follow this token

    def __post_init__(self) -> None:
        for f in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, f)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"GPTConfig.{f} must be a positive int, got {value!r}")
        if self.n_embd % self.n_head:
            raise ConfigError(f"GPTConfig.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.padded_vocab_size is not None and self.padded_vocab_size < self.vocab_size:
            raise ConfigError(
                f"GPTConfig.padded_vocab_size ({self.padded_vocab_size}) must be >= vocab_size ({self.vocab_size})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if not 0 <= self.number_token_id < self.vocab_size:
            raise ConfigError(
                f"GPTConfig.number_token_id ({self.number_token_id}) must be a token id below vocab_size "
                f"({self.vocab_size}): the tokenizer's <M> id (KmerTokenizer.number_id = {KmerTokenizer.number_id})"
            )

    @property
    def vocab_rows(self) -> int:
        """Rows of ``wte`` and of the token head's output layer (``padded_vocab_size`` or ``vocab_size``)."""
        return self.padded_vocab_size or self.vocab_size

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> GPTConfig:
        """A preset, with ``overrides`` merged on top (litgpt style; Hydra calls this via ``_target_``).

        Released presets accept overrides of their locked fields only when the value equals the preset's, so
        a YAML may restate ``block_size`` for interpolation but cannot silently build a network the release
        weights don't fit.

        >>> GPTConfig.from_name("dnagpt_0.1b_m").vocab_size
        19564
        >>> GPTConfig.from_name("tiny", vocab_size=100, block_size=1024).block_size
        1024
        """
        if name not in PRESETS:
            raise ConfigError(f"unknown GPTConfig preset {name!r}; known presets: {sorted(PRESETS)}")
        preset = PRESETS[name]
        known = {f.name for f in fields(cls)} - {"name"}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"unknown GPTConfig field(s) {unknown} for preset {name!r}; fields: {sorted(known)}")
        if name != "tiny":
            for f in _LOCKED_FIELDS:
                if f in overrides and overrides[f] != getattr(preset, f):
                    hint = ""
                    if f == "vocab_size":
                        kind = "fixed 6-mer" if preset.vocab_size == FIXED_VOCAB_SIZE else "dynamic 1..6-mer"
                        hint = f" (the released preset needs the {kind} vocabulary)"
                    raise ConfigError(
                        f"preset {name!r} has {f}={getattr(preset, f)!r}, got {overrides[f]!r}{hint}; "
                        f"use preset 'tiny' or build GPTConfig(...) directly for a different shape"
                    )
        return replace(preset, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON / checkpoint hparams."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GPTConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error rather than silently dropped."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown GPTConfig field(s) {unknown}; fields: {sorted(known)}")
        return cls(**data)


PRESETS: dict[str, GPTConfig] = {
    "tiny": GPTConfig(name="tiny", block_size=512, vocab_size=DYNAMIC_VOCAB_SIZE, n_layer=4, n_head=4, n_embd=256),
    "dnagpt_0.1b_h": GPTConfig(
        name="dnagpt_0.1b_h", block_size=4096, vocab_size=FIXED_VOCAB_SIZE, n_layer=12, n_head=12, n_embd=768
    ),
    "dnagpt_0.1b_m": GPTConfig(
        name="dnagpt_0.1b_m", block_size=512, vocab_size=DYNAMIC_VOCAB_SIZE, n_layer=12, n_head=12, n_embd=768
    ),
    "dnagpt_3b_m": GPTConfig(
        name="dnagpt_3b_m", block_size=512, vocab_size=DYNAMIC_VOCAB_SIZE, n_layer=60, n_head=64, n_embd=2048
    ),
}
