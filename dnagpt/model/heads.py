"""The three small MLPs around the DNAGPT backbone: the Numerical Embedding layer, the token head, the regression head.

All three share the release's layout ``Sequential(Linear, SiLU, LayerNorm, Linear)``, so their state-dict keys are
``.0 .2 .3`` exactly as in the released checkpoints (the SiLU at index 1 has no weights). They stay plain
``nn.Sequential`` subclasses: inputs and outputs keep the Linear convention ``(..., in) -> (..., out)``. GPT-2's tied
token head (``GPTConfig.tie_head``, not in the release) is one Linear over the embedding matrix, indexed the same way.
"""

from __future__ import annotations

from torch import Tensor, nn


class MLPHead(nn.Sequential):
    """Linear(in, hidden) -> SiLU -> LayerNorm(hidden) -> Linear(hidden, out)."""

    def __init__(self, in_features: int, hidden: int, out_features: int, bias: bool) -> None:
        super().__init__(
            nn.Linear(in_features, hidden, bias=bias),
            nn.SiLU(),
            nn.LayerNorm(hidden, eps=1e-5, bias=bias),
            nn.Linear(hidden, out_features, bias=bias),
        )

    def features(self, x: Tensor) -> Tensor:
        """Everything before the output Linear: callers that need only some outputs (or a fused loss) apply it
        themselves to ``self[-1].weight`` rows."""
        for layer in list(self)[:-1]:
            x = layer(x)
        return x


class NumberEmbedding(MLPHead):
    """Numerical Embedding layer: a scalar ``(..., 1)`` to a token-sized vector ``(..., D)``."""

    def __init__(self, n_embd: int, bias: bool) -> None:
        super().__init__(1, n_embd, n_embd, bias)


class TokenHead(MLPHead):
    """Next-token classifier ``(..., D) -> (..., rows)``; untied from ``wte`` as in the release."""

    def __init__(self, n_embd: int, vocab_rows: int, bias: bool) -> None:
        super().__init__(n_embd, n_embd, vocab_rows, bias)


class TiedTokenHead(nn.Sequential):
    """GPT-2's token head ``(..., D) -> (..., rows)``: one bias-free Linear whose weight *is* ``wte``'s matrix
    (``GPTConfig.tie_head``). Indexed like :class:`TokenHead` (``self[-1]`` is the output Linear); its weight is saved
    once, under ``transformer.wte`` (see ``DNAGPT``)."""

    def __init__(self, wte: nn.Embedding) -> None:
        out = nn.Linear(wte.embedding_dim, wte.num_embeddings, bias=False)
        out.weight = wte.weight
        super().__init__(out)

    def features(self, x: Tensor) -> Tensor:
        """Nothing stands before the output Linear."""
        return x


class RegressionHead(MLPHead):
    """Value predictor ``(..., D) -> (..., 1)`` read at a ``<M>`` token."""

    def __init__(self, n_embd: int, bias: bool) -> None:
        super().__init__(n_embd, n_embd, 1, bias)
