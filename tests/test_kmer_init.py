"""The k-mer row initialisation: shared per-position base vectors, specials untouched, fresh models only."""

import pytest
import torch

from dnagpt.model.config import GPTConfig
from dnagpt.model.kmer_init import compose_kmer_rows, kmer_base_codes
from dnagpt.tasks.pretrain import PretrainTask
from dnagpt.tokenizer import SPECIALS, KmerTokenizer

TOK = KmerTokenizer()


def _cosine(w: torch.Tensor, a: str, b: str) -> float:
    return torch.nn.functional.cosine_similarity(w[TOK.token_id(a)], w[TOK.token_id(b)], dim=0).item()


def test_base_codes_spell_every_kmer():
    ids, codes = kmer_base_codes(TOK)
    assert len(ids) == len(TOK) - len(SPECIALS)
    row = ids.tolist().index(TOK.token_id("ACGTN"))
    assert codes[row].tolist() == [0, 1, 2, 3, 4, -1]


def test_rows_sharing_bases_start_alike_and_specials_keep_their_init():
    torch.manual_seed(0)
    w = torch.randn(len(TOK) + 3, 64) * 0.02  # padded rows, as a padded head has
    before = w.clone()
    compose_kmer_rows(w, TOK, shared=0.5)
    assert torch.equal(w[: len(SPECIALS)], before[: len(SPECIALS)])
    assert torch.equal(w[len(TOK) :], before[len(TOK) :])
    # 5 of 6 positions shared: about 5/6 of the shared half of the variance in common
    assert _cosine(w, "ACGTAC", "ACGTAG") > 0.3
    assert abs(_cosine(w, "ACGTAC", "CATGCA")) < 0.2  # no base at the same position
    assert w[TOK.token_id("ACGTAC")].std().item() == pytest.approx(0.02, rel=0.3)
    assert not torch.equal(w[TOK.token_id("ACGTAC")], w[TOK.token_id("ACGTAG")])


def test_zero_share_is_the_plain_init_and_bad_share_is_refused():
    w = torch.randn(len(TOK), 8)
    before = w.clone()
    compose_kmer_rows(w, TOK, shared=0.0)
    assert torch.equal(w, before)
    with pytest.raises(ValueError, match="kmer_init=1.5"):
        compose_kmer_rows(w, TOK, shared=1.5)


def test_task_composes_embedding_and_head_rows():
    cfg = GPTConfig.from_name("tiny", vocab_size=len(TOK), n_layer=1, n_embd=32, n_head=2, block_size=64)
    torch.manual_seed(0)
    plain = PretrainTask(cfg, TOK.to_dict())
    torch.manual_seed(0)
    kmer = PretrainTask(cfg, TOK.to_dict(), kmer_init=0.8)
    for model in (plain.model, kmer.model):
        assert model.transformer.wte.weight.shape == (cfg.vocab_rows, 32)
    for rows in (lambda m: m.transformer.wte.weight, lambda m: m.token_head[-1].weight):
        assert _cosine(rows(kmer.model), "ACGTAC", "ACGTAG") > 0.5
        assert abs(_cosine(rows(plain.model), "ACGTAC", "ACGTAG")) < 0.3
