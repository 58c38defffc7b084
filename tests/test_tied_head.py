"""``GPTConfig.tie_head``: GPT-2's token head (``wte``'s own matrix) as a ``tiny`` option, kept tied through the optimizer,
the k-mer initialisation, saving, loading, checkpoints and decoding; the released presets cannot take it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dnagpt.model import DNAGPT, GPTConfig
from dnagpt.model.generate import generate
from dnagpt.model.kmer_init import compose_kmer_rows
from dnagpt.model.pretrained import from_pretrained, save_pretrained
from dnagpt.pipeline import train
from dnagpt.tasks.pretrain import PretrainTask
from dnagpt.tokenizer import KmerTokenizer
from dnagpt.utils.errors import CheckpointError, ConfigError

TOK = KmerTokenizer()
SHAPE = dict(vocab_size=len(TOK), n_layer=1, n_head=2, n_embd=32, block_size=64)


def tied_model(seed: int = 0, **overrides) -> DNAGPT:
    torch.manual_seed(seed)
    return DNAGPT(GPTConfig.from_name("tiny", tie_head=True, **SHAPE | overrides))


def is_tied(model: DNAGPT) -> bool:
    return model.token_head[-1].weight is model.transformer.wte.weight


def test_the_head_is_the_embedding_matrix_and_the_mlp_head_is_gone() -> None:
    tied, untied = tied_model(), DNAGPT(GPTConfig.from_name("tiny", **SHAPE))
    assert is_tied(tied) and tied.token_head[-1].bias is None
    d, rows = SHAPE["n_embd"], tied.config.vocab_rows
    assert untied.num_params() - tied.num_params() == d * d + d + rows * d  # Linear(D, D), LayerNorm(D), Linear(D, V)
    hidden = torch.randn(3, 5, d)
    torch.testing.assert_close(tied.logits(hidden), hidden @ tied.transformer.wte.weight[: len(TOK)].T)
    targets = torch.randint(0, len(TOK), (15,))
    flat = hidden.reshape(15, d)
    torch.testing.assert_close(tied.token_loss(flat, targets), F.cross_entropy(tied.logits(flat), targets))


def test_released_presets_refuse_a_tied_head() -> None:
    for name in ("dnagpt_0.1b_h", "dnagpt_0.1b_m", "dnagpt_3b_m"):
        with pytest.raises(ConfigError, match=f"preset '{name}' has tie_head=False, got True"):
            GPTConfig.from_name(name, tie_head=True)


def test_the_optimizer_sees_the_matrix_once_and_both_uses_train_it() -> None:
    model = tied_model()
    for decay in (1.0, 0.8):
        groups = model.param_groups(weight_decay=0.1, layer_lr_decay=decay)
        listed = [id(p) for g in groups for p in g["params"]]
        assert sorted(listed) == sorted(id(p) for p in model.parameters())  # every parameter, each once
    embeddings = next(g for g in groups if any(p is model.transformer.wte.weight for p in g["params"]))
    assert embeddings["lr_scale"] == pytest.approx(0.8**2) and embeddings["weight_decay"] == 0.1  # depth 0, a matrix

    ids = torch.randint(0, len(TOK), (2, 9))
    out = model(ids[:, :-1])
    model.token_loss(out.hidden.reshape(-1, 32), ids[:, 1:].reshape(-1)).backward()
    grad = model.transformer.wte.weight.grad
    unused = [i for i in range(len(TOK)) if i not in ids[:, :-1]]
    assert grad[unused].abs().sum() > 0  # rows no input used still learn: through the head
    optimizer = torch.optim.AdamW(model.param_groups(0.1), lr=1e-2)
    optimizer.step()
    assert is_tied(model)


def test_kmer_init_draws_the_tied_matrix_once() -> None:
    cfg = GPTConfig.from_name("tiny", tie_head=True, **SHAPE)
    torch.manual_seed(0)
    task = PretrainTask(cfg, TOK.to_dict(), kmer_init=0.8)
    torch.manual_seed(0)
    expected = DNAGPT(cfg).transformer.wte.weight.detach().clone()
    compose_kmer_rows(expected, TOK, 0.8)
    assert is_tied(task.model)
    torch.testing.assert_close(task.model.transformer.wte.weight, expected, rtol=0, atol=0)


def test_saved_once_and_tied_again_after_every_load(tmp_path: Path) -> None:
    model = tied_model()
    assert "token_head.0.weight" not in model.state_dict()
    wrapped = nn.ModuleDict({"model": model})  # a LightningModule's prefix
    assert "model.token_head.0.weight" not in wrapped.state_dict()

    other = tied_model(seed=1)
    other.load_state_dict(model.state_dict())
    assert is_tied(other) and torch.equal(other.transformer.wte.weight, model.transformer.wte.weight)

    save_pretrained(model, tmp_path, TOK.to_dict())  # safetensors refuses aliased tensors: this would raise
    loaded, _ = from_pretrained(tmp_path)  # meta device + assign=True: one Parameter per key until re-tied
    assert is_tied(loaded)
    ids = torch.randint(0, len(TOK), (2, 12))
    torch.testing.assert_close(loaded(ids, compute_logits=True).logits, model(ids, compute_logits=True).logits)


def test_an_untied_state_dict_does_not_fit_a_tied_model() -> None:
    untied = DNAGPT(GPTConfig.from_name("tiny", **SHAPE))
    with pytest.raises(RuntimeError, match=r"Unexpected key\(s\).*token_head\.2\.weight"):
        tied_model().load_state_dict(untied.state_dict())


def test_decoding_keeps_the_tie() -> None:
    model = tied_model().eval()
    prompt = torch.randint(3939, len(TOK), (2, 6))
    cached = generate(model, prompt, 8, temperature=0.0)
    uncached = generate(model, prompt, 8, temperature=0.0, use_cache=False)
    assert torch.equal(cached, uncached) and cached.shape == (2, 14)


def test_a_tied_run_checkpoints_and_refuses_an_untied_init(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg("train", ["model.tie_head=true", "trainer.max_steps=2", "test=false"])
    train(cfg)
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    assert "model.transformer.wte.weight" in state and "model.token_head.0.weight" not in state
    restored = PretrainTask.load_from_checkpoint(ckpt, map_location="cpu")
    assert is_tied(restored.model)
    torch.testing.assert_close(restored.model.transformer.wte.weight, state["model.transformer.wte.weight"])

    untied = make_cfg("train", ["trainer.max_steps=2", "test=false", f"init_from={ckpt}"])
    untied.paths.output_dir = str(tmp_path / "untied")
    with pytest.raises(CheckpointError, match="tie_head True vs False"):
        train(untied)
