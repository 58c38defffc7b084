"""data.phases: every 6-mer cut of a window for GSR and expression (docs/phases.md).

Phases off must leave the release prompts byte-identical; phases on must cut the right substrings, multiply training
rows (or draw one phase per window), keep held-out splits one row per window, and average exactly the six scores.
"""

import hashlib
import logging
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset, default_collate

from dnagpt.data.batching import PhaseRows, RandomPhaseSampler, ResumableSampler
from dnagpt.data.expression import ExpressionDataModule, phase_spans
from dnagpt.data.gsr import GSRDataModule, cut_signal
from dnagpt.eval.attention import AttentionMaps
from dnagpt.eval.gsr import predict as gsr_predict
from dnagpt.model.config import GPTConfig
from dnagpt.pipeline import evaluate, train
from dnagpt.tasks.expression import ExpressionTask
from dnagpt.tasks.gsr import GSRTask
from dnagpt.tokenizer import KmerTokenizer
from dnagpt.utils.errors import ConfigError
from dnagpt.utils.resolvers import resource_path

TOK = KmerTokenizer()
PAS = resource_path("gsr/pas_subset.tsv.gz")
TIS = resource_path("gsr/tis_subset.tsv.gz")
MINI = resource_path("expression/xpresso_mini_hg19_chr20_promoters.tsv.gz")
SMALL = dict(block_size=128, n_layer=2, n_head=2, n_embd=32)


def gsr_dm(tok: KmerTokenizer = TOK, **kw) -> GSRDataModule:
    dm = GSRDataModule(tok, 128, {"pas": PAS, "tis": TIS}, **({"species": {"pas": ["human"]}} | kw))
    dm.setup()
    return dm


def expr_dm(tok: KmerTokenizer = TOK, **kw) -> ExpressionDataModule:
    dm = ExpressionDataModule(tok, 128, MINI, **({"window": (-150, 150)} | kw))
    dm.setup()
    return dm


def everything(dataset) -> dict[str, torch.Tensor]:
    return default_collate([dataset[i] for i in range(len(dataset))])


def fingerprint(dataset) -> str:
    batch, h = everything(dataset), hashlib.sha256()
    for key in sorted(batch):
        h.update(key.encode())
        h.update(batch[key].numpy().tobytes())
    return h.hexdigest()[:16]


# ---- phases off: the release prompts, byte for byte ------------------------------------------------------------------
# every field of every item, computed before phases existed (both signals, both vocabularies, default expression set)
RELEASE = {
    "dynamic": ({"train": "fe258d0b0d2e8514", "val": "44d87db16852ee09", "test": "22138e5926d3b55e"},
                {"train": "0f903f2501359531", "val": "13ab464ae4f5de57", "test": "0b184649e1f9fe83"}),
    "fixed": ({"train": "0fabbd9a834d3a57", "val": "ed3fcaeffa8d2711", "test": "b08a544565cd2d8e"},
              {"train": "16875c3cac9f98a0", "val": "220034808ff7a9b4", "test": "06be0c61ec39f846"}),
}  # fmt: skip


@pytest.mark.parametrize("vocab", ["dynamic", "fixed"])
def test_phases_off_prompts_are_byte_identical_to_the_release_prompts(vocab: str) -> None:
    tok = KmerTokenizer(vocab=vocab)
    gsr = gsr_dm(tok, signals=["pas", "tis"], species=None)
    expr = ExpressionDataModule(tok, 512, MINI)
    expr.setup()
    got = (
        {s: fingerprint(d) for s, d in gsr.datasets.items()},
        {s: fingerprint(expr.dataset(s)) for s in RELEASE[vocab][1]},
    )
    assert got == RELEASE[vocab]


# ---- what the phases are ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("signal", ["pas", "tis"])
def test_gsr_phases_are_the_six_cuts_of_the_window(signal: str) -> None:
    dm = gsr_dm(signals=[signal], species=None, phases=6)
    table = dm.tables["test"]
    for i in range(3):
        item = dm.datasets["test"][i]
        ids = item["input_ids"]
        assert ids.shape == (6, 101) and item["answer_pos"].item() == 100 and item["attention_mask"].all()
        assert (ids[:, 0] == TOK.species_id(table.species[i])).all() and (ids[:, -1] == TOK.eq_id).all()
        cut = cut_signal(table.sequence[i], signal)
        assert len(cut) == 600
        for s in range(6):  # phase s drops s bp in front and 6 - s behind: 99 whole 6-mers
            assert TOK.decode_dna(ids[s, 1:-1].numpy()) == cut[s : s + 594], (i, s)
        assert item["label"].item() == table.label[i]


def test_expression_phases_shift_the_window_inside_the_stored_sequence() -> None:
    release, dm = expr_dm(), expr_dm(phases=6)
    seq = dm.table.sequences[int(dm.split_data("val").rows[0])]
    item, single = dm.dataset("val")[0], release.dataset("val")[0]
    assert item["input_ids"].shape == (6, 53) and torch.equal(item["input_ids"][0], single["input_ids"])
    for s in range(6):  # the TSS is at stored index 7000; the window [-150, 150) read s bp further downstream
        assert TOK.decode_dna(item["input_ids"][s, 1:-2].numpy()) == seq[6850 + s : 7150 + s]
    for key in ("values", "value_pos", "reg_pos", "target", "row"):
        assert torch.equal(item[key], single[key]), key
    # at the downstream end of the stored sequence the window moves upstream; one filling it is trimmed instead
    edge = expr_dm(window=(3200, 3500), phases=6)
    seq = edge.table.sequences[int(edge.split_data("test").rows[0])]
    edge_ids = edge.dataset("test")[0]["input_ids"]
    assert [TOK.decode_dna(edge_ids[s, 1:-2].numpy()) for s in range(6)] == [seq[10200 - s : 10500 - s] for s in range(6)]
    assert phase_spans(0, 10500, 10500, 6) == [(s, 10494 + s) for s in range(6)]


def test_phase_options_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"data.phases=3 must be 1 .* or 6"):
        GSRDataModule(TOK, 128, {"pas": PAS}, phases=3)
    with pytest.raises(ConfigError, match=r"data.train_phases='every' must be one of random, all"):
        ExpressionDataModule(TOK, 512, MINI, phases=6, train_phases="every")


# ---- rows: training expanded or drawn, held-out splits one row per window -------------------------------------------
def test_expansion_multiplies_training_rows_and_keeps_held_out_rows_per_window() -> None:
    off, dm = gsr_dm(), gsr_dm(phases=6, train_phases="all")
    n = len(dm.tables["train"])
    loader = dm.train_dataloader()
    assert isinstance(loader.dataset, PhaseRows) and type(loader.sampler) is ResumableSampler
    assert len(loader.dataset) == 6 * n == 6 * len(off.train_dataloader().dataset)
    assert len(loader) == 6 * len(off.train_dataloader())
    assert sorted(loader.sampler) == list(range(6 * n))  # every phase of every window once per epoch
    row = loader.dataset[6 * 7 + 4]  # window 7, phase 4: a plain single-phase prompt
    assert (
        torch.equal(row["input_ids"], dm.datasets["train"][7]["input_ids"][4])
        and row["label"] == dm.tables["train"].label[7]
    )
    for split in ("val", "test"):  # held out: one row per window, in the table's order
        labels = torch.cat([b["label"] for b in getattr(dm, f"{split}_dataloader")()])
        assert labels.tolist() == dm.tables[split].label.tolist() == off.tables[split].label.tolist()
    expr = expr_dm(phases=6, train_phases="all")
    assert len(expr.train_dataloader().dataset) == 6 * len(expr.split_data("train").rows)
    assert torch.cat([b["row"] for b in expr.test_dataloader()]).tolist() == expr.split_data("test").rows.tolist()


def test_random_phase_reads_each_window_once_an_epoch_and_resumes_exactly() -> None:
    dm = gsr_dm(phases=6)
    n = len(dm.tables["train"])
    loader = dm.train_dataloader()
    assert type(loader.sampler) is RandomPhaseSampler and len(loader) == len(gsr_dm().train_dataloader())
    epoch0 = list(loader.sampler)
    windows, phases = np.divmod(epoch0, 6)
    assert sorted(windows) == list(range(n)) and set(phases) == set(range(6))
    rows = PhaseRows(dm.datasets["train"], 6, "random")
    again = RandomPhaseSampler(rows, 8, dm.seed)
    assert list(again) == epoch0  # seeded
    again.set_epoch(1)
    epoch1 = list(again)
    assert epoch1 != epoch0 and sorted(np.divmod(epoch1, 6)[0]) == list(range(n))
    resumed = RandomPhaseSampler(rows, 8, dm.seed, start=(1, 3))  # epoch 1 after 3 batches: the same phases follow
    assert list(resumed) == epoch1[24:]
    assert resumed.layout() == {"seed": dm.seed, "world_size": 1, "batch_size": 8, "samples": n, "phases": 6}


# ---- averaging -------------------------------------------------------------------------------------------------------
def single_phase(batch: dict[str, torch.Tensor], s: int) -> dict[str, torch.Tensor]:
    return {k: v[:, s] if k in ("input_ids", "attention_mask") else v for k, v in batch.items()}


@torch.no_grad()
def test_gsr_score_is_the_mean_of_the_six_single_phase_scores() -> None:
    torch.manual_seed(0)
    task = GSRTask(GPTConfig.from_name("tiny", vocab_size=len(TOK), **SMALL).to_dict(), TOK.to_dict()).eval()
    dm = gsr_dm(phases=6)
    batch = default_collate([dm.datasets["test"][i] for i in range(16)])
    singles = [task.answer_logits(single_phase(batch, s)) for s in range(6)]
    assert task.answer_logits(batch).shape == (16, 6, len(TOK))
    torch.testing.assert_close(task.answer_logits(batch), torch.stack(singles, dim=1), atol=1e-4, rtol=1e-4)
    want = torch.stack([task.score(logits) for logits in singles]).mean(0)
    res = task.shared_step(batch, "val")
    torch.testing.assert_close(res["p_true"], want, atol=1e-5, rtol=1e-5)
    target = torch.where(batch["label"] == 1, TOK.true_id, TOK.false_id)  # the loss: CE of every phase
    want_loss = torch.stack([F.cross_entropy(logits, target) for logits in singles]).mean()
    torch.testing.assert_close(res["loss"], want_loss, atol=1e-4, rtol=1e-4)
    assert len(dm.datasets["test"]) == len(dm.tables["test"])  # the evaluator's rows: one score per window
    p = gsr_predict(task, DataLoader(Subset(dm.datasets["test"], range(24)), batch_size=8))
    assert p.shape == (24,)
    np.testing.assert_allclose(p[:16], want.numpy(), atol=1e-5)


@torch.no_grad()
def test_expression_prediction_is_the_mean_of_the_six_single_phase_predictions() -> None:
    torch.manual_seed(0)
    cfg = GPTConfig.from_name("tiny", vocab_size=len(TOK), **SMALL)
    task = ExpressionTask(cfg, TOK.to_dict(), optimizer=partial(torch.optim.AdamW, lr=1e-3)).eval()
    dm = expr_dm(phases=6, feature_columns=["mouse_ortholog_expr_label"])  # a real number inserted after <+><M>
    batch = next(iter(dm.val_dataloader()))
    assert batch["input_ids"].shape[:2] == (8, 6) and batch["values"].shape == (8, 1)
    singles = torch.stack([task.predict(single_phase(batch, s)) for s in range(6)], dim=1)
    torch.testing.assert_close(task.predict(batch), singles.mean(1), atol=1e-5, rtol=1e-5)
    res = task.shared_step(batch, "val")
    torch.testing.assert_close(res["pred"], singles.mean(1), atol=1e-5, rtol=1e-5)
    want_loss = F.mse_loss(singles, batch["target"][:, None].expand(-1, 6))  # the loss: MSE of every phase
    torch.testing.assert_close(res["loss"], want_loss, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(singles[:, 0], singles[:, 3])  # the phases are different prompts


def test_attention_maps_refuse_phased_rows() -> None:
    task = GSRTask(GPTConfig.from_name("tiny", vocab_size=len(TOK), **SMALL).to_dict(), TOK.to_dict())
    loader = DataLoader(Subset(gsr_dm(phases=6).datasets["test"], range(2)), batch_size=2)
    with pytest.raises(ConfigError, match="evaluate with data.phases=1"):
        AttentionMaps(max_windows=2).collect(task, loader)


# ---- end to end ------------------------------------------------------------------------------------------------------
GSR_PHASES = ["task=gsr", "model.block_size=128", "data.species.pas=[human]", "data.phases=6"]


def test_short_gsr_fit_with_phases_through_hydra(make_cfg) -> None:
    metrics = train(make_cfg("train", [*GSR_PHASES, "data.train_phases=all"]))
    assert {"val/auroc", "val/loss", "test/auroc", "test/acc"} <= set(metrics)
    assert all(np.isfinite(v) for v in metrics.values())


@pytest.mark.slow
def test_phases_train_then_evaluate_gsr_and_expression(make_cfg, tmp_path: Path, caplog) -> None:
    train(make_cfg("train", GSR_PHASES))
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    ev = make_cfg("evaluate", [*GSR_PHASES, f"ckpt_path={ckpt}"])
    ev.paths.output_dir = str(tmp_path / "eval")
    with caplog.at_level(logging.WARNING):
        got = evaluate(ev)
    assert {"test/all/auroc", "test/pas_human/auroc", "test/all/baseline_auroc"} <= set(got)
    assert "data.phases" not in caplog.text
    # the checkpoint records its phases: data.phases unset scores it as fitted, the same figures as data.phases=6
    ev = make_cfg("evaluate", [*GSR_PHASES[:-1], f"ckpt_path={ckpt}"])
    ev.paths.output_dir = str(tmp_path / "eval_unset")
    assert evaluate(ev)["test/all/auroc"] == got["test/all/auroc"]
    # phase 0 alone on purpose: the run says how the checkpoint was fitted
    ev = make_cfg("evaluate", [*GSR_PHASES[:-1], "data.phases=1", f"ckpt_path={ckpt}", "trainer.limit_test_batches=1"])
    ev.paths.output_dir = str(tmp_path / "eval_phase0")
    with caplog.at_level(logging.WARNING):
        evaluate(ev)
    assert f"{ckpt} was fitted with data.phases=6, this run reads data.phases=1: leave data.phases unset" in caplog.text
    expr = ["task=expression", "data.window=[-150,150]", "model.block_size=64", "data.phases=6"]
    out = tmp_path / "expr"
    cfg = make_cfg("train", expr)
    cfg.paths.output_dir = str(out)
    train(cfg)
    ev = make_cfg("evaluate", [*expr, f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}"])
    ev.paths.output_dir = str(tmp_path / "expr_eval")
    assert "test/r2" in evaluate(ev)
    predictions = (tmp_path / "expr_eval" / "expression_predictions_test.csv").read_text().splitlines()
    assert len(predictions) == 1 + 67  # a header, then one row per test gene of the mini set
