"""GSR task: table hygiene and splits, prompt layout, bad input, loss and metrics, baseline, train → evaluate."""

import gzip
import hashlib
import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dnagpt.checkpointing import CKPT_KEY, lightning_checkpoint
from dnagpt.data.gsr import GSRDataModule, GSRDataset, cut_signal
from dnagpt.data.gsr_table import GSRTable, balance, block_split, deduplicate, random_split, read_gsr_tsv
from dnagpt.eval.gsr import binary_scores, group_index
from dnagpt.eval.kmer_baselines import KmerLogistic, kmer_counts
from dnagpt.model.config import GPTConfig
from dnagpt.model.pretrained import RELEASE_RENAMES, save_pretrained
from dnagpt.pipeline import evaluate, train
from dnagpt.tasks.gsr import GSRTask
from dnagpt.tokenizer import KmerTokenizer
from dnagpt.utils.errors import CheckpointError, MissingFileError
from dnagpt.utils.resolvers import resource_path

PAS = Path(resource_path("gsr/pas_subset.tsv.gz"))
TIS = Path(resource_path("gsr/tis_subset.tsv.gz"))
TOK = KmerTokenizer()


def rows_of(path: Path, n: int | None = None) -> tuple[list[str], list[dict[str, str]]]:
    with gzip.open(path, "rt") as fh:
        header = fh.readline().rstrip("\n").split("\t")
        rows = [dict(zip(header, line.rstrip("\n").split("\t"), strict=True)) for line in fh]
    return header, rows[:n]


def write_tsv(path: Path, header: list[str], rows: list[dict[str, str]]) -> Path:
    path.write_text("\t".join(header) + "\n" + "".join("\t".join(r[c] for c in header) + "\n" for r in rows))
    return path


def table(species, label, seqs=None, chrom=None, start=None, motif=None, signal="pas") -> GSRTable:
    n = len(label)
    rng = np.random.default_rng(0)
    seqs = seqs if seqs is not None else ["".join(rng.choice(list("ACGT"), 606)) for _ in range(n)]
    start = np.asarray(start if start is not None else np.arange(n) * 10_000, dtype=np.int64)
    return GSRTable(
        signal=np.array([signal] * n, dtype=object), species=np.array(species, dtype=object),
        motif=np.array(motif or ["AATAAA"] * n, dtype=object), label=np.asarray(label, dtype=np.int64),
        sequence=np.array(seqs, dtype=object), chrom=np.array(chrom or ["1"] * n, dtype=object),
        start=start, end=start + 606, path=np.array(["t"] * n, dtype=object), line=np.arange(n) + 2,
    )  # fmt: skip


# ---- k-mer features and baseline ---------------------------------------------------------------------------------
def test_kmer_counts_match_a_naive_count() -> None:
    rng = np.random.default_rng(1)
    seqs = ["".join(rng.choice(list("ACGTN"), size=int(rng.integers(0, 40)), p=[0.23] * 4 + [0.08])) for _ in range(30)]
    got = kmer_counts(seqs, k=3).toarray()
    index = {c: i for i, c in enumerate("ACGT")}
    want = np.zeros((len(seqs), 64), dtype=np.int64)
    for r, s in enumerate(seqs):
        for j in range(len(s) - 2):
            if "N" not in s[j : j + 3]:
                want[r, index[s[j]] * 16 + index[s[j + 1]] * 4 + index[s[j + 2]]] += 1
    np.testing.assert_array_equal(got, want)
    assert kmer_counts([b"ACGT"], k=6).shape == (1, 4096)
    with pytest.raises(ValueError, match="k must be"):
        kmer_counts(["ACGT"], k=0)


def test_baseline_learns_a_separable_problem_and_needs_the_sides_apart() -> None:
    rng = np.random.default_rng(2)
    seqs, labels = [], []
    for i in range(300):
        s = list(rng.choice(list("ACGT"), 120))
        at = 20 if i % 2 else 80  # the same motif upstream in positives, downstream in negatives
        s[at : at + 12] = "GGGGGGGGGGGG"
        seqs.append("".join(s))
        labels.append(i % 2)
    y = np.array(labels[200:])
    split = KmerLogistic(k=6, cut=60).fit(seqs[:200], labels[:200]).predict_proba(seqs[200:])[:, 1]
    whole = KmerLogistic(k=6).fit(seqs[:200], labels[:200]).predict_proba(seqs[200:])[:, 1]
    assert binary_scores(split, y)["acc"] > 0.9
    assert binary_scores(whole, y)["acc"] < 0.75
    with pytest.raises(ValueError, match="both classes"):
        KmerLogistic().fit(seqs[:4], [1, 1, 1, 1])


# ---- hygiene and splits ------------------------------------------------------------------------------------------
def test_deduplicate_within_species_only_and_drops_label_conflicts() -> None:
    a, b, c = "A" * 606, "C" * 606, "G" * 606
    t = table(["human", "human", "mouse", "human", "human", "human"], [1, 1, 1, 0, 1, 0], seqs=[a, a, a, b, c, c])
    out, dropped = deduplicate(t)
    assert sorted(zip(out.species, out.sequence, strict=True)) == [("human", a), ("human", b), ("mouse", a)]
    assert dropped == {"human": 1, "human:conflict": 2}


def test_balance_equalises_labels_per_motif() -> None:
    t = table(["human"] * 7, [1, 1, 1, 0, 1, 0, 0], motif=["AATAAA"] * 4 + ["ATTAAA"] * 3)
    out = balance(t, seed=0)
    for motif in ("AATAAA", "ATTAAA"):
        labels = out.label[out.motif == motif]
        assert (labels == 1).sum() == (labels == 0).sum() == 1


def test_random_split_is_stratified_disjoint_and_deterministic() -> None:
    species = ["human"] * 400 + ["mouse"] * 200
    t = table(species, [i % 2 for i in range(600)], seqs=["A" * 606] * 600)
    code = random_split(t, [0.6, 0.15, 0.25], seed=3)
    assert set(code.tolist()) == {0, 1, 2}  # one code per row: disjoint by construction, and every row assigned
    for sp, n in (("human", 200), ("mouse", 100)):
        for lab in (0, 1):
            rows = (t.species == sp) & (t.label == lab)
            assert np.bincount(code[rows], minlength=3).tolist() == [round(n * 0.6), round(n * 0.15), round(n * 0.25)]
    np.testing.assert_array_equal(code, random_split(t, [0.6, 0.15, 0.25], seed=3))
    assert not np.array_equal(code, random_split(t, [0.6, 0.15, 0.25], seed=4))
    with pytest.raises(ValueError, match="summing to 1"):
        random_split(t, [0.6, 0.3, 0.3], seed=0)


def test_block_split_never_puts_overlapping_windows_on_both_sides() -> None:
    rng = np.random.default_rng(5)
    n = 800
    chrom = rng.choice(["1", "2", "3"], n).tolist()
    start = rng.integers(0, 3_000_000, n)
    t = table(["human"] * n, rng.integers(0, 2, n), seqs=["A" * 606] * n, chrom=chrom, start=start)
    code = block_split(t, [0.6, 0.15, 0.25], seed=0, block_bp=50_000)
    for i in range(n):
        overlap = (t.chrom == t.chrom[i]) & (t.start < t.end[i]) & (t.end > t.start[i])
        assert (code[overlap] == code[i]).all()
    frac = np.bincount(code, minlength=3) / n
    assert np.allclose(frac, [0.6, 0.15, 0.25], atol=0.08)
    np.testing.assert_array_equal(code, block_split(t, [0.6, 0.15, 0.25], seed=0, block_bp=50_000))


def test_block_split_holds_out_whole_chromosomes() -> None:
    t = table(["yeast"] * 6, [0, 1] * 3, seqs=["A" * 606] * 6, chrom=["I", "I", "II", "II", "III", "III"])
    code = block_split(t, [0.6, 0.15, 0.25], seed=0, holdout_chromosomes={"yeast": {"val": ["II"], "test": ["III"]}})
    assert code.tolist() == [0, 0, 1, 1, 2, 2]
    with pytest.raises(ValueError, match=r"holdout_chromosomes.yeast.test: \['XX'\]"):
        block_split(t, [0.6, 0.15, 0.25], seed=0, holdout_chromosomes={"yeast": {"test": ["XX"]}})


def test_shipped_tis_block_split_has_no_overlap_across_splits() -> None:
    t = read_gsr_tsv(TIS, "tis")
    t = t.take(np.flatnonzero(t.species == "arabidopsis"))
    code = block_split(t, [0.6, 0.15, 0.25], seed=1, block_bp=100_000)
    order = np.argsort(t.start)
    s, e, c = t.start[order], t.end[order], code[order]
    for i in range(len(s) - 1):  # sorted by start: any overlap involves a neighbour chain, check consecutive rows
        j = i + 1
        while j < len(s) and s[j] < e[i]:
            assert c[j] == c[i]
            j += 1


def _fingerprint(t: GSRTable) -> tuple[int, str]:
    """Rows and a hash of which file lines a split holds, in its order."""
    code = t.line * 2 + (t.signal == "tis")
    return len(t), hashlib.sha256(code.astype(np.int64).tobytes()).hexdigest()[:16]


HOLDOUT = {"yeast": {"val": ["BK006935.2", "BK006938.2"], "test": ["BK006940.2", "BK006941.2", "BK006942.2", "BK006948.2"]}}


@pytest.mark.parametrize(
    ("kw", "want"),
    [
        ({}, {"train": (4800, "eebced1be1baab01"), "val": (1200, "9a423274938ebcaa"), "test": (2000, "3404a4eb85a68a7b")}),
        ({"signals": ["tis"], "split": "block", "holdout_chromosomes": HOLDOUT},
         {"train": (1368, "c8d15549998a3aba"), "val": (321, "bb4fbbc94d1dbdae"), "test": (525, "5c478e70edf0c8cf")}),
    ],
    ids=["pas_random", "tis_block"],
)  # fmt: skip
def test_shipped_subset_splits_are_pinned(kw, want) -> None:
    """Dedup, balance, split and row order of the shipped subsets, as before the table code was shared."""
    dm = GSRDataModule(TOK, 128, {"pas": str(PAS), "tis": str(TIS)}, **kw)
    dm.setup()
    assert {name: _fingerprint(t) for name, t in dm.tables.items()} == want


# ---- prompt layout -----------------------------------------------------------------------------------------------
def test_prompt_removes_the_signal_and_ends_with_the_answer_position() -> None:
    t = read_gsr_tsv(PAS, "pas").take(np.arange(3))
    ds = GSRDataset(t, TOK, motifs=sorted(set(t.motif)))
    item = ds[1]
    ids = item["input_ids"]
    assert ids.shape == (102,) and item["answer_pos"].item() == 101
    assert ids[0].item() == TOK.species_id(t.species[1]) and ids[-1].item() == TOK.eq_id
    cut = t.sequence[1][:300] + t.sequence[1][306:]
    assert TOK.decode_dna(ids[1:-1].numpy()) == cut == cut_signal(t.sequence[1], "pas")
    assert item["label"].item() == t.label[1] and item["attention_mask"].all()
    tis = read_gsr_tsv(TIS, "tis").take(np.arange(2))
    assert TOK.decode_dna(GSRDataset(tis, TOK, ["ATG"])[0]["input_ids"][1:-1].numpy()) == (
        tis.sequence[0][:300] + tis.sequence[0][303:]
    )


# ---- bad input ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda h, r: (h[:-1], r), r"\.tsv, line 1: missing column\(s\) \['sequence'\]"),
        (lambda h, r: (h, [r[0] | {"sequence": r[0]["sequence"][:-1]}]),
         r"\.tsv, line 2, column 'sequence': has 605 nt"),
        (lambda h, r: (h, [r[0] | {"label": "2"}]), r"\.tsv, line 2, column 'label': '2' is not a label"),
        (lambda h, r: (h, [r[0] | {"label": "nan"}]), r"\.tsv, line 2, column 'label': 'nan' is not a label"),
        (lambda h, r: (h, [r[0], r[1] | {"sequence": "X" + r[1]["sequence"][1:]}]),
         r"\.tsv, line 3, column 'sequence': has 'X' at position 0"),
        (lambda h, r: (h, [r[0] | {"motif": "GGGGGG"}]),
         r"\.tsv, line 2, column 'motif': the window holds '\w+' at 301-306, not its motif"),
    ],
    ids=["missing_column", "length", "label_2", "label_nan", "bad_char", "motif"],
)  # fmt: skip
def test_bad_pas_rows_name_file_line_and_column(tmp_path: Path, edit, match: str) -> None:
    header, rows = rows_of(PAS, 2)
    header, rows = edit(header, rows)
    with pytest.raises(ValueError, match=match):
        read_gsr_tsv(write_tsv(tmp_path / "bad.tsv", header, rows), "pas")


def test_nan_position_and_short_row_are_errors(tmp_path: Path) -> None:
    header, rows = rows_of(TIS, 2)
    with pytest.raises(ValueError, match=r"bad\.tsv, line 3, column 'pos_1based': 'nan' is not a whole number"):
        read_gsr_tsv(write_tsv(tmp_path / "bad.tsv", header, [rows[0], rows[1] | {"pos_1based": "nan"}]), "tis")
    path = tmp_path / "short.tsv"
    path.write_text("\t".join(header) + "\nyeast\tTIS\n")
    with pytest.raises(ValueError, match=r"short\.tsv, line 2: 2 tab-separated fields, the header has 9"):
        read_gsr_tsv(path, "tis")


def test_unknown_species_names_file_and_line(tmp_path: Path) -> None:
    header, rows = rows_of(PAS, 2)
    path = write_tsv(tmp_path / "bad.tsv", header, [rows[0], rows[1] | {"species": "martian"}])
    with pytest.raises(ValueError, match=r"bad\.tsv, line 3, column 'species': unknown species 'martian'"):
        GSRDataset(read_gsr_tsv(path, "pas"), TOK, ["AATAAA", "AAAAAG"])


def test_datamodule_rejects_bad_configuration() -> None:
    kw = {"tokenizer": TOK, "files": {"pas": str(PAS)}}
    with pytest.raises(ValueError, match="GSR prompts are 102 tokens, more than the model's block_size 64"):
        GSRDataModule(block_size=64, **kw)
    dm = GSRDataModule(block_size=128, species={"pas": ["human", "yeast"]}, **kw)
    with pytest.raises(ValueError, match=r"data.species.pas: \['yeast'\] not in"):
        dm.setup()
    with pytest.raises(ValueError, match="split must be"):
        GSRDataModule(block_size=128, split="chromosome", **kw)
    with pytest.raises(ValueError, match="signals"):
        GSRDataModule(block_size=128, signals=["tis"], **kw)
    with pytest.raises(MissingFileError, match=r"^files\.pas=\S*nope\.tsv\.gz is not a file$"):
        GSRDataModule(TOK, 128, {"pas": "/no/where/nope.tsv.gz"})  # checked when built, read in setup


# ---- task ----------------------------------------------------------------------------------------------------------
def tiny_task(**kwargs) -> GSRTask:
    cfg = GPTConfig.from_name("tiny", block_size=128, n_layer=2, n_head=2, n_embd=32, vocab_size=len(TOK))
    torch.manual_seed(0)
    return GSRTask(cfg.to_dict(), TOK.to_dict(), **kwargs)


def pas_batch(n: int = 8) -> dict[str, torch.Tensor]:
    t = read_gsr_tsv(PAS, "pas").take(np.arange(n))
    ds = GSRDataset(t, TOK, sorted(set(t.motif)))
    return {k: torch.stack([ds[i][k] for i in range(n)]) for k in ds[0]}


def test_task_loss_is_answer_token_cross_entropy_and_metrics_accumulate() -> None:
    task = tiny_task()
    batch = pas_batch()
    res = task.shared_step(batch, "val")
    logits = task.model(batch["input_ids"]).logits[:, -1]  # full forward: the <=> row
    target = torch.where(batch["label"] == 1, TOK.true_id, TOK.false_id)
    torch.testing.assert_close(res["loss"], F.cross_entropy(logits, target))
    p = torch.softmax(logits[:, [TOK.false_id, TOK.true_id]], -1)[:, 1]
    torch.testing.assert_close(res["p_true"], p)
    acc = task.metrics["val"]["acc"].compute()
    assert acc == ((p >= 0.5).long() == batch["label"]).float().mean()
    res["loss"].backward()  # the loss reaches the token head
    assert task.model.token_head[3].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="GSR labels are 0 or 1"):
        task.shared_step(batch | {"label": batch["label"] + 1}, "val")


def test_mean_readout_feeds_the_token_head_the_mean_state_up_to_the_answer() -> None:
    task = tiny_task(readout="mean").eval()
    batch = pas_batch()
    hidden = task.model(batch["input_ids"], compute_logits=False).hidden
    means = [h[: int(a) + 1].mean(0) for h, a in zip(hidden, batch["answer_pos"], strict=True)]
    want = task.model.logits(torch.stack(means))
    torch.testing.assert_close(task.answer_logits(batch), want, atol=1e-5, rtol=1e-5)
    padded = batch | {"input_ids": F.pad(batch["input_ids"], (0, 5), value=TOK.token_id("ACGTAC"))}
    torch.testing.assert_close(task.answer_logits(padded), want, atol=1e-5, rtol=1e-5)  # tokens after <=> are ignored
    assert not torch.allclose(tiny_task().eval().answer_logits(batch), want, atol=1e-3)  # the release reads <=> alone
    with pytest.raises(ValueError, match="task.readout='pool' must be one of answer, mean"):
        tiny_task(readout="pool")


def test_the_readout_is_recorded_and_scoring_with_the_other_is_refused(tmp_path: Path) -> None:
    saved: dict = {"state_dict": {}, "global_step": 0}
    tiny_task(readout="mean").on_save_checkpoint(saved)
    assert saved[CKPT_KEY]["task"] == {"readout": "mean"}
    saved["state_dict"] = {f"model.{k}": v for k, v in tiny_task().model.state_dict().items()}
    ckpt = lightning_checkpoint(saved, tmp_path / "tuned.ckpt")
    tiny_task(readout="mean").load_weights(ckpt, key="ckpt_path")
    tiny_task().load_weights(ckpt, key="init_from")  # a fine-tune may start from it with either read-out
    with pytest.raises(CheckpointError, match=r"tuned\.ckpt was fine-tuned with task\.readout=mean, this run asks "
                                              r"task\.readout=answer: use task\.readout=mean"):  # fmt: skip
        tiny_task().load_weights(ckpt, key="ckpt_path")
    with pytest.raises(CheckpointError, match="the checkpoint was fine-tuned with task.readout=mean"):
        tiny_task().on_load_checkpoint(saved)  # a resume with the other read-out
    legacy = lightning_checkpoint(saved | {CKPT_KEY: {**saved[CKPT_KEY], "task": {}}}, tmp_path / "old.ckpt")
    with pytest.raises(CheckpointError, match=r"old\.ckpt was fine-tuned with task\.readout=answer, this run asks "
                                              r"task\.readout=mean: use task\.readout=answer"):  # fmt: skip
        tiny_task(readout="mean").load_weights(legacy, key="ckpt_path")  # recorded nothing: the release's read-out


def test_layer_lr_decay_sets_each_groups_peak_rate() -> None:
    task = tiny_task(optimizer=partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.1), layer_lr_decay=0.5)
    optimizer = task.configure_optimizers()["optimizer"]
    lr = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert lr[id(task.model.token_head[3].weight)] == 1e-3
    assert lr[id(task.model.transformer.h[0].attn.c_attn.weight)] == pytest.approx(2.5e-4)
    assert lr[id(task.model.transformer.wte.weight)] == pytest.approx(1.25e-4)
    assert all("lr_scale" not in g for g in optimizer.param_groups)
    with pytest.raises(ValueError, match=r"task.layer_lr_decay=1.5 must lie in \(0, 1\]"):
        tiny_task(layer_lr_decay=1.5)


def test_group_index_covers_species_and_motifs() -> None:
    g = group_index(np.array(["pas"] * 3), np.array(["human", "mouse", "human"]), np.array(["A", "A", "B"]))
    assert {k: v.tolist() for k, v in g.items()} == {
        "all": [0, 1, 2], "pas_human": [0, 2], "pas_mouse": [1], "pas_motif_A": [0, 1], "pas_motif_B": [2],
    }  # fmt: skip


# ---- end to end ----------------------------------------------------------------------------------------------------
GSR_FAST = ["task=gsr", "model.block_size=128", "data.species.pas=[human,mouse]", "trainer.limit_test_batches=null"]


@pytest.mark.slow
def test_train_then_evaluate_with_attention(make_cfg, tmp_path: Path) -> None:
    metrics = train(make_cfg("train", GSR_FAST))
    assert {"val/auroc", "val/auroc_best", "val/mcc", "test/acc", "test/f1"} <= set(metrics)
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    ev = make_cfg("evaluate", [*GSR_FAST, f"ckpt_path={ckpt}", "analysis=attention", "analysis.max_windows=8"])
    ev.paths.output_dir = str(tmp_path / "eval")
    got = evaluate(ev)
    out = tmp_path / "eval"
    for name in ("roc_pas_human", "confusion_pas_mouse", "attention_profile", "attention_map_true", "attention_map_false"):
        assert (out / f"{name}.png").stat().st_size > 5000, name
    for key in ("test/pas_human/mcc", "test/pas_human/baseline_acc", "test/all/auroc", "attention/true/near_signal_frac"):
        assert key in got, key
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["test/all/baseline_auroc"] == pytest.approx(got["test/all/baseline_auroc"])
    assert "test/pas_human/baseline_mcc" in (out / "metrics.csv").read_text()
    assert got["test/all/acc"] == pytest.approx(got["test/acc"], abs=0.01)  # same rows (bf16 vs fp32 may flip one)


def release_pth(task: GSRTask, path: Path) -> Path:
    back = {ours: theirs for theirs, ours in RELEASE_RENAMES.items()}
    sd = {}
    for k, v in task.model.state_dict().items():
        prefix = next((p for p in back if k.startswith(p)), "")
        sd[back.get(prefix, "") + k[len(prefix) :] if prefix else k] = v
    torch.save({"model": sd}, path)
    return path


@pytest.mark.slow
def test_released_pth_is_evaluated_and_a_misfit_is_an_error(make_cfg, tmp_path: Path) -> None:
    task = tiny_task()
    pth = release_pth(task, tmp_path / "release.pth")
    save_pretrained(task.model, tmp_path / "ours", TOK.to_dict())  # the same weights in our own format
    small = ["model=tiny", "model.block_size=128", "model.n_layer=2", "model.n_head=2", "model.n_embd=32"]
    scored = {}
    for name, path in (("release", pth), ("ours", tmp_path / "ours")):
        ev = make_cfg("evaluate", [*GSR_FAST, *small, f"ckpt_path={path}", "trainer.limit_test_batches=2"])
        ev.paths.output_dir = str(tmp_path / name)
        scored[name] = evaluate(ev)
    # the release's names load onto the same layers: every test metric, per species too, is that of our own format
    keys = [k for k in scored["ours"] if k.startswith("test/") and "baseline" not in k]
    assert "test/pas_human/auroc" in keys
    assert {k: scored["release"][k] for k in keys} == pytest.approx({k: scored["ours"][k] for k in keys})
    wrong = make_cfg("evaluate", [*GSR_FAST, *small, "model.n_embd=64", f"ckpt_path={pth}"])
    with pytest.raises(ValueError, match="shape"):
        evaluate(wrong)
    fixed = make_cfg("evaluate", [*GSR_FAST, *small, "tokenizer=kmer6_fixed", f"ckpt_path={pth}"])
    with pytest.raises(ValueError, match="vocab|shape"):
        evaluate(fixed)
