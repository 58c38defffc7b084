"""The task modules' contract: losses, strict weights-only init from every source, tokenizer checks on checkpoints."""

import math
from collections import Counter
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dnagpt.model import GPTConfig, save_pretrained
from dnagpt.tasks.pretrain import PretrainTask
from dnagpt.tasks.yardsticks import Order0Baseline
from dnagpt.tokenizer import KmerTokenizer

TOK = KmerTokenizer()
SMALL = dict(block_size=64, n_layer=2, n_head=2, n_embd=32)


def make_task(seed: int = 0, tokenizer: KmerTokenizer = TOK) -> PretrainTask:
    torch.manual_seed(seed)
    cfg = GPTConfig.from_name("tiny", vocab_size=len(tokenizer), **SMALL)
    return PretrainTask(cfg, tokenizer.to_dict(), optimizer=partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.1))


def batch(B: int = 3, T: int = 20) -> dict[str, torch.Tensor]:
    """A pre-training batch in the documented layout: <species> DNA <M>[gc] DNA <=> answer."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3939, len(TOK), (B, T), generator=g)
    ids[:, 0] = TOK.species_id("human")
    ids[:, 6] = TOK.number_id
    ids[:, -2] = TOK.eq_id
    order = torch.tensor([1, 0, 1])[:B]
    ids[:, -1] = torch.where(order == 1, TOK.true_id, TOK.false_id)
    labels = torch.full_like(ids, -100)
    labels[:, :-1] = ids[:, 1:]
    labels[(ids == TOK.number_id).roll(-1, 1)] = -100  # <M> is never a target
    labels[:, -3:] = -100  # <=>, the answer and the end are not DNA targets
    return {
        "input_ids": ids, "labels": labels, "attention_mask": torch.ones_like(ids, dtype=torch.bool),
        "values": torch.rand(B, 1, generator=g), "value_pos": torch.full((B, 1), 6),
        "value_mask": torch.ones(B, 1, dtype=torch.bool),
        "order_pos": torch.full((B,), T - 2), "order_label": order, "species": ids[:, 0],
    }


def test_loss_is_the_weighted_sum_of_its_parts() -> None:
    task = make_task()
    res = task.model_step(batch())
    want = res["token_loss"] + task.order_loss_weight * res["order_loss"] + task.reg_loss_weight * res["gc_loss"]
    torch.testing.assert_close(res["loss"], want)
    assert res["n_targets"] == (batch()["labels"] != -100).sum()
    res["loss"].backward()
    assert all(p.grad is not None for p in task.model.number_embedding.parameters())  # the GC value is an input too


def test_loss_matches_an_independent_computation() -> None:
    """The fused, chunked token loss and the task's bookkeeping against plain logits and torch's losses."""
    task, b = make_task(), batch()
    out = task.model(b["input_ids"], values=b["values"], value_pos=b["value_pos"], value_mask=b["value_mask"],
                     reg_pos=b["value_pos"])  # fmt: skip
    logits = out.logits.double()
    token = F.cross_entropy(logits.flatten(0, 1), b["labels"].flatten(), ignore_index=-100)
    at_answer = logits[torch.arange(len(logits)), b["order_pos"]]
    answer = torch.where(b["order_label"] == 1, TOK.true_id, TOK.false_id)
    order = F.cross_entropy(at_answer, answer)
    gc = ((out.value_pred.double() - b["values"].double()) ** 2).mean()
    want = token + task.order_loss_weight * order + task.reg_loss_weight * gc
    got = task.model_step(b)
    torch.testing.assert_close(got["loss"].double(), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got["token_loss"].double(), token, rtol=1e-5, atol=1e-5)
    targets = b["labels"][b["labels"] != -100]
    assert int(got["n_bases"]) == sum(len(TOK.id_to_token(int(t))) for t in targets)  # what bits per base divides by


def test_batch_without_targets_is_an_error() -> None:
    b = batch()
    b["labels"][:] = -100
    with pytest.raises(ValueError, match="no DNA target"):
        make_task().model_step(b)


def test_optimizer_decays_only_matrices() -> None:
    opt = make_task().configure_optimizers()["optimizer"]  # the weight decay of the optimizer partial: 0.1
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])


def test_vocabulary_must_fit_the_tokenizer() -> None:
    cfg = GPTConfig.from_name("tiny", vocab_size=len(TOK), **SMALL)
    with pytest.raises(ValueError, match="does not fit the tokenizer"):
        PretrainTask(cfg, KmerTokenizer("fixed").to_dict())


def _release_pth(task: PretrainTask, path: Path) -> Path:
    rename = {"token_head.": "mlm_head.", "regression_head.": "num_regression."}
    sd = {}
    for key, value in task.model.state_dict().items():
        for ours, theirs in rename.items():
            key = key.replace(ours, theirs) if key.startswith(ours) else key
        sd[key] = value
    torch.save({"model": sd}, path)
    return path


def test_init_from_a_released_pth_loads_every_weight(tmp_path: Path) -> None:
    source, target = make_task(seed=1), make_task(seed=2)
    target.load_weights(_release_pth(source, tmp_path / "dnagpt.pth"))
    for (name, want), got in zip(source.model.state_dict().items(), target.model.state_dict().values(), strict=True):
        torch.testing.assert_close(got, want, msg=name)


def test_init_from_a_pth_of_another_vocabulary_is_an_error(tmp_path: Path) -> None:
    fixed = KmerTokenizer("fixed")
    path = _release_pth(make_task(tokenizer=fixed), tmp_path / "fixed.pth")
    with pytest.raises(ValueError, match="transformer.wte.weight"):
        make_task().load_weights(path)


def test_init_from_save_pretrained_checks_the_tokenizer(tmp_path: Path) -> None:
    source = make_task(seed=1)
    save_pretrained(source.model, tmp_path / "m", TOK.to_dict())
    target = make_task(seed=2)
    target.load_weights(tmp_path / "m")
    torch.testing.assert_close(target.model.transformer.wte.weight, source.model.transformer.wte.weight)
    save_pretrained(source.model, tmp_path / "other", KmerTokenizer(fixed_tail="drop").to_dict())
    with pytest.raises(ValueError, match="tokenizer"):
        make_task().load_weights(tmp_path / "other")


def test_missing_init_from_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="init_from"):
        make_task().load_weights(tmp_path / "nope.ckpt")


def test_resuming_with_another_tokenizer_is_an_error() -> None:
    task = make_task()
    checkpoint: dict = {}
    task.on_save_checkpoint(checkpoint)
    assert checkpoint["dnagpt"]["tokenizer_spec"] == TOK.to_dict()
    assert checkpoint["dnagpt"]["model_cfg"]["n_embd"] == 32
    checkpoint["dnagpt"]["tokenizer_spec"] = KmerTokenizer("fixed").to_dict()
    with pytest.raises(ValueError, match="trained with tokenizer"):
        task.on_load_checkpoint(checkpoint)


def test_gradient_clipping_with_the_fused_optimizer() -> None:
    task = make_task()
    task._trainer = SimpleNamespace(precision="bf16-mixed", strategy=None)  # the trainer attributes the hook reads
    task.optimizer_factory = partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.1, fused=True)  # as in the configs
    opt = task.configure_optimizers()["optimizer"]  # fused: Lightning's precision plugin would refuse to clip it
    task.model_step(batch())["loss"].backward()
    task.configure_gradient_clipping(opt, gradient_clip_val=0.01, gradient_clip_algorithm="norm")
    grads = [p.grad for p in task.model.parameters() if p.grad is not None]
    assert torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])) <= 0.01 + 1e-6


def test_order0_yardstick_equals_a_hand_count() -> None:
    """Entropy of the training unigram and add-one cross-entropy on validation targets, counted here with a Counter."""
    rng = np.random.default_rng(0)
    vocab = 12
    train_batches = [rng.integers(-1, vocab, size=(3, 7)) for _ in range(4)]  # -1 stands for ignored positions
    val_batches = [rng.integers(-1, vocab, size=(2, 5)) for _ in range(2)]
    logged: dict = {}
    config = SimpleNamespace(vocab_size=vocab)
    module = SimpleNamespace(model=SimpleNamespace(config=config), bases_of=torch.arange(vocab) % 7,
                             log_dict=lambda metrics, **_: logged.update(metrics))  # fmt: skip
    trainer = SimpleNamespace(sanity_checking=False, world_size=1)
    yardstick = Order0Baseline()
    for b in train_batches:
        yardstick.on_train_batch_end(trainer, module, None, {"labels": torch.as_tensor(np.where(b < 0, -100, b))}, 0)
    for b in val_batches:
        yardstick.on_validation_batch_end(trainer, module, None, {"labels": torch.as_tensor(np.where(b < 0, -100, b))}, 0)
    yardstick.on_validation_epoch_end(trainer, module)

    train_counts = Counter(int(x) for b in train_batches for x in b.flat if x >= 0)
    n = sum(train_counts.values())
    entropy = -sum(c / n * math.log(c / n) for c in train_counts.values())
    val = [int(x) for b in val_batches for x in b.flat if x >= 0]
    cross_entropy = -sum(math.log((train_counts[x] + 1) / (n + vocab)) for x in val) / len(val)
    assert float(logged["train/order0_entropy"]) == pytest.approx(entropy, rel=1e-6)
    assert float(logged["val/order0_ce"]) == pytest.approx(cross_entropy, rel=1e-6)
    bases = sum(x % 7 for x in val)  # the stub's bases per token id
    assert float(logged["val/order0_bits_per_base"]) == pytest.approx(cross_entropy * len(val) / bases / math.log(2))
