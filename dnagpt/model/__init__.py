"""The DNAGPT network (torch only): config, backbone and heads, number insertion, KV cache, generation, weight I/O."""

from dnagpt.model.config import GPTConfig
from dnagpt.model.generate import generate
from dnagpt.model.gpt import DNAGPT, DNAGPTOutput
from dnagpt.model.kv_cache import KVCache
from dnagpt.model.pretrained import (
    config_from_release_state_dict,
    from_pretrained,
    load_release_state_dict,
    save_pretrained,
)

__all__ = [
    "DNAGPT",
    "DNAGPTOutput",
    "GPTConfig",
    "KVCache",
    "config_from_release_state_dict",
    "from_pretrained",
    "generate",
    "load_release_state_dict",
    "save_pretrained",
]
