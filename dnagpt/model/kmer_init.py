"""Initialise the k-mer rows of the embedding and of the token head from shared per-position base vectors.

A freshly initialised model sees its 6-mer ids as 19,564 unrelated symbols: that ``ACGTAC`` and ``ACGTAG`` share five
bases, or that every id ending in ``C`` makes a following ``G`` rarer (CpG depletion), must be learnt once per id from
co-occurrence counts. Drawing each k-mer row partly as the sum of one vector per (position, base) gives the network that
structure from the first step, on both sides: an embedding that starts as a bag of positioned bases, and a head whose
logit of a k-mer starts as a sum of per-position base scores (a product of per-base distributions after the softmax,
the form an order-k Markov model has). Training is free to leave it; nothing changes in shape or state-dict names, so
released and saved weights load exactly as before.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dnagpt.tokenizer import KmerTokenizer


def kmer_base_codes(tokenizer: KmerTokenizer) -> tuple[Tensor, Tensor]:
    """(ids,) of the k-mer tokens and their (ids, k) base codes 0..4 (A C G T N), -1 past a tail k-mer's end."""
    lens = torch.from_numpy(tokenizer.bases_per_token)
    ids = torch.nonzero(lens > 0).squeeze(1)
    codes = torch.full((len(ids), tokenizer.k), -1, dtype=torch.long)
    for row, i in enumerate(ids.tolist()):
        codes[row, : lens[i]] = torch.tensor(["ACGTN".index(b) for b in tokenizer.id_to_token(i)])
    return ids, codes


@torch.no_grad()
def compose_kmer_rows(weight: Tensor, tokenizer: KmerTokenizer, shared: float, std: float = 0.02) -> None:
    """Redraw ``weight``'s k-mer rows (in place) so that a share ``shared`` of their variance comes from per-position
    base vectors; the rest stays independent noise, so no two rows start equal. Rows beyond the tokenizer (padding)
    and special tokens keep their initialisation."""
    if not 0.0 <= shared <= 1.0:
        raise ValueError(f"kmer_init={shared} must be a share of variance in [0, 1]")
    if shared == 0.0:
        return
    ids, codes = kmer_base_codes(tokenizer)
    dim = weight.shape[1]
    per_base = torch.randn(tokenizer.k, 5, dim) * (std / math.sqrt(tokenizer.k))
    present = (codes >= 0).unsqueeze(-1)
    positioned = per_base[torch.arange(tokenizer.k), codes.clamp(min=0)]  # (ids, k, dim)
    structured = (positioned * present).sum(1)
    noise = torch.randn(len(ids), dim) * std
    rows = math.sqrt(shared) * structured + math.sqrt(1.0 - shared) * noise
    weight[ids] = rows.to(weight.dtype)
