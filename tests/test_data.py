"""Genome corpora, the streaming pre-training pipeline and the multi-task sample layout."""

from __future__ import annotations

import dataclasses
import gzip
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from dnagpt.data.corpus import Corpus, plan_species
from dnagpt.data.fasta import EncodedGenome, build_cache, reverse_complement
from dnagpt.data.pretrain import PretrainDataModule
from dnagpt.data.pretrain_stream import PretrainStreamDataset, PretrainWindowDataset, heldout_windows, make_shards
from dnagpt.data.samples import SampleBuilder, SampleDraw, gc_fraction
from dnagpt.tokenizer import IGNORE_INDEX, KmerTokenizer
from dnagpt.utils.errors import ConfigError, InputError, MissingFileError
from dnagpt.utils.resolvers import register_resolvers, resource_path

CONF = Path(__file__).resolve().parents[1] / "dnagpt" / "conf"
BLOCK = 40  # tiny sentences: 33 DNA tokens = 198 bp windows


@pytest.fixture(scope="module")
def tok() -> KmerTokenizer:
    return KmerTokenizer()


def write_fasta(path: Path, records: dict[str, str], width: int = 60) -> Path:
    text = "".join(
        f">{n} test\n" + "".join(s[i : i + width] + "\n" for i in range(0, len(s), width)) for n, s in records.items()
    )
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode(), mtime=0))
    else:
        path.write_text(text)
    return path


def random_dna(rng: np.random.Generator, n: int) -> str:
    """Random DNA with soft-masked stretches, IUPAC codes and a run of N (what real assemblies contain)."""
    s = rng.choice(list("ACGT"), size=n)
    s[n // 5 : n // 5 + n // 10] = np.char.lower(s[n // 5 : n // 5 + n // 10])
    s[rng.integers(0, n, size=n // 200)] = "R"
    s[n // 2 : n // 2 + n // 8] = "N"
    return "".join(s)


@pytest.fixture
def tiny_corpus(tmp_path: Path) -> dict:
    rng = np.random.default_rng(0)
    write_fasta(tmp_path / "human.fa", {"chr1": random_dna(rng, 30_000), "chr2": random_dna(rng, 12_000)})
    write_fasta(tmp_path / "yeast.fa.gz", {"I": random_dna(rng, 20_000), "II": random_dna(rng, 9_000)})
    return {
        "name": "tiny",
        "root": str(tmp_path),
        "species": {
            "human": {"fasta": "human.fa", "weight": 2.0},
            "yeast": {"fasta": "yeast.fa.gz", "weight": 1.0},
        },
        "holdout": {
            "human": {"val": ["chr2"], "test": ["chr1:1-3000"]},
            "yeast": {"val": ["II:1-4000"], "test": ["II:4001-9000"]},
        },
        "n_policy": {"max_n_frac": 0.05},
        "rc_augment": False,
    }


def make_dm(corpus, tok, tmp_path, **kw) -> PretrainDataModule:
    args = {
        "block_size": BLOCK,
        "batch_size": 4,
        "cache_dir": tmp_path / "cache",
        "shard_windows": 4,
        "seed": 3,
    }
    dm = PretrainDataModule(corpus, tok, **(args | kw))
    dm.prepare_data()
    dm.setup("fit")
    return dm


def bundled_cfg() -> dict:
    register_resolvers()
    return OmegaConf.to_container(OmegaConf.load(CONF / "corpus" / "bundled.yaml"), resolve=True)


@pytest.fixture(scope="module")
def bundled_dm(tok, tmp_path_factory) -> PretrainDataModule:
    dm = PretrainDataModule(bundled_cfg(), tok, block_size=128, batch_size=8, cache_dir=tmp_path_factory.mktemp("c"))
    dm.prepare_data()
    dm.setup("fit")
    return dm


def take(stream, n: int) -> list:
    return [next(stream) for _ in range(n)]


# ----- FASTA, reverse complement ----------------------------------------------------------------------------
def test_reverse_complement():
    assert reverse_complement("ACGTN") == "NACGT"
    assert reverse_complement(b"acgR") == b"Ycgt"
    rng = np.random.default_rng(1)
    for _ in range(20):
        s = "".join(rng.choice(list("ACGTNacgtnRYKMSWBDHV"), size=int(rng.integers(1, 50))))
        assert reverse_complement(reverse_complement(s)) == s
        arr = np.frombuffer(s.upper().encode(), dtype=np.uint8)
        assert reverse_complement(arr).tobytes() == reverse_complement(s.upper()).encode()
    with pytest.raises(TypeError):
        reverse_complement([1, 2])


def test_cache_is_clean_and_plain_equals_gzip(tmp_path, tok):
    rng = np.random.default_rng(2)
    recs = {"a": random_dna(rng, 5000), "b": "acgtRYNN" * 10}
    plain = build_cache(write_fasta(tmp_path / "x.fa", recs), tmp_path / "c", tok)
    gz = build_cache(write_fasta(tmp_path / "x.fa.gz", recs), tmp_path / "c", tok)
    assert plain != gz
    g1, g2 = EncodedGenome(plain), EncodedGenome(gz)
    assert g1.names == ["a", "b"] and g1.lengths.tolist() == [5000, 80]
    for i in range(2):
        a = g1.window(i, 0, int(g1.lengths[i]))
        assert a.tobytes() == g2.window(i, 0, int(g2.lengths[i])).tobytes()
        assert a.tobytes() == tok.clean(list(recs.values())[i]).tobytes()
    assert g1.window(1, 0, 8).tobytes() == b"ACGTNNNN"
    assert not list(tmp_path.glob("*.fxi"))  # no index written next to the source


def test_plain_and_gzip_corpora_give_the_same_windows(tiny_corpus, tok, tmp_path):
    root = Path(tiny_corpus["root"])
    gz = {
        **tiny_corpus,
        "species": {**tiny_corpus["species"], "human": {"fasta": "human2.fa.gz", "weight": 2.0}},
    }
    (root / "human2.fa.gz").write_bytes(gzip.compress((root / "human.fa").read_bytes()))
    a = make_dm(tiny_corpus, tok, tmp_path)
    b = make_dm(gz, tok, tmp_path)
    for x, y in zip(take(iter(a.train_dataloader()), 5), take(iter(b.train_dataloader()), 5), strict=True):
        assert all(torch.equal(x[k], y[k]) for k in x)


# ----- bad input --------------------------------------------------------------------------------------------
def test_all_n_genome_has_no_usable_window(tmp_path, tok):
    write_fasta(tmp_path / "g.fa", {"chrN": "N" * 5000, "chrn": "n" * 3000})
    corpus = {"name": "n", "root": str(tmp_path), "species": {"human": {"fasta": "g.fa"}}}
    with pytest.raises(ValueError, match=r"g\.fa, records chrN.*no usable window") as err:
        make_dm(corpus, tok, tmp_path)
    assert "5% N" in str(err.value) and isinstance(err.value, InputError)


def test_window_longer_than_every_region(tmp_path, tok):
    write_fasta(tmp_path / "g.fa", {"short": "ACGT" * 40})
    corpus = {"name": "s", "root": str(tmp_path), "species": {"human": {"fasta": "g.fa"}}}
    with pytest.raises(ValueError, match=r"window \(198 bp for block_size 40\) is longer than every training region"):
        make_dm(corpus, tok, tmp_path)


def test_missing_files_name_each_file_and_the_download_command(tiny_corpus, tok, tmp_path):
    """Checked when the DataModule is built, before anything is encoded; the command is given for files with a url."""
    mouse = {"fasta": "mm.fa.gz", "url": "https://example.org/mm.fa.gz"}
    corpus = {**tiny_corpus, "species": {**tiny_corpus["species"], "mouse": mouse, "cow": {"fasta": None}}}
    with pytest.raises(FileNotFoundError) as err:
        PretrainDataModule(corpus, tok, block_size=BLOCK, batch_size=4, cache_dir=tmp_path / "c")
    msg = str(err.value)
    assert "mm.fa.gz" in msg and "cow" in msg and "python download.py corpus=tiny" in msg
    assert isinstance(err.value, MissingFileError) and "\n" not in msg  # one paragraph
    assert f"corpus.species.mouse.fasta={tmp_path / 'mm.fa.gz'} does not exist" in msg
    assert "corpus.species.cow.fasta is null" in msg


def test_an_explicit_fasta_path_is_never_skipped(tok, tmp_path):
    """``skip_missing`` (the bundled corpus) skips the species the corpus has no file for, never a path one typed."""
    cfg = bundled_cfg()
    cfg["species"]["human"]["fasta"] = "/x/typo.fa"
    with pytest.raises(MissingFileError) as err:
        PretrainDataModule(cfg, tok, block_size=128, batch_size=8, cache_dir=tmp_path)
    msg = str(err.value)
    assert msg.startswith("corpus bundled: corpus.species.human.fasta=/x/typo.fa does not exist; check the path")
    assert "download" not in msg  # no url: nothing to fetch, the path is wrong


def test_a_corpus_without_any_file_is_an_error(tmp_path, tok):
    corpus = {"name": "none", "root": str(tmp_path), "skip_missing": True, "species": {"human": {"fasta": None}}}
    with pytest.raises(ConfigError, match="corpus none: no species has a file"):
        PretrainDataModule(corpus, tok, block_size=BLOCK, batch_size=4)


def test_skip_missing_warns_and_skips(tiny_corpus, tok, tmp_path, caplog):
    corpus = {
        **tiny_corpus,
        "skip_missing": True,
        "species": {**tiny_corpus["species"], "zebrafish": {"fasta": None}},
    }
    with caplog.at_level(logging.WARNING):
        dm = make_dm(corpus, tok, tmp_path)
    assert [sp.name for sp in dm._species] == ["human", "yeast"]
    assert "species zebrafish skipped" in caplog.text


def test_batch_size_must_divide_world_size(tiny_corpus, tok, tmp_path):
    dm = PretrainDataModule(tiny_corpus, tok, block_size=BLOCK, batch_size=4, cache_dir=tmp_path / "c")
    dm.trainer = SimpleNamespace(global_rank=0, world_size=3, accumulate_grad_batches=1, training=False)
    with pytest.raises(ValueError, match=r"batch_size=4 .*world size 3 .*4 is not divisible by 3 × 1 = 3"):
        dm.setup("fit")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            {"holdout": {"human": {"val": ["chr9"]}}},
            r"holdout\.human\.val: region|holdout\.human\.val: 'chr9'",
        ),
        (
            {"holdout": {"human": {"val": ["chr1:1-99999999"]}}},
            r"holdout\.human\.val: region 'chr1:1-99999999' is outside",
        ),
        ({"holdout": {"human": {"val": ["chr1:1-500"], "test": ["chr1:400-900"]}}}, "overlaps test region"),
        ({"holdout": {"mouse": {"val": ["x"]}}}, "holdout names species not in 'species'"),
        ({"n_policy": {"max_n_frac": 1.5}}, r"max_n_frac must be in \[0, 1\)"),
        ({"shuffle": True}, r"unknown key\(s\) \['shuffle'\]"),
        (
            {"species": {"human": {"fasta": "human.fa", "weigth": 1}}, "holdout": {}},
            r"species\.human: unknown key\(s\) \['weigth'\]",
        ),
        ({"species": {"martian": {"fasta": "human.fa"}}, "holdout": {}}, "unknown species 'martian'"),
    ],
)
def test_bad_corpus_config_names_the_key(tiny_corpus, tok, tmp_path, change, match):
    with pytest.raises(ValueError, match=match) as err:
        make_dm({**tiny_corpus, **change}, tok, tmp_path)
    assert isinstance(err.value, ConfigError)  # reported as one paragraph, without a traceback


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"holdout": {"human": {"val": "chr2"}}}, r"holdout\.human\.val must be a list of records or regions"),
        ({"holdout": {"human": {"val": [1.5]}}}, r"holdout\.human\.val: 1\.5 is not a record name or region"),
        ({"holdout": {"human": ["chr2"]}}, r"holdout\.human must be a mapping"),
        ({"species": ["human"]}, r"corpus tiny: species must be a mapping"),
        ({"species": {"human": {"fasta": "human.fa", "weight": "heavy"}}, "holdout": {}}, r"weight must be a number"),
        ({"n_policy": {"max_n_frac": "5%"}}, r"n_policy\.max_n_frac must be a number, got '5%'"),
    ],
)
def test_mistyped_corpus_values_name_the_key(tiny_corpus, tok, tmp_path, change, match):
    """Values of the wrong type: once silently misread (a string of regions read letter by letter) or a TypeError."""
    with pytest.raises(ConfigError, match=match):
        PretrainDataModule({**tiny_corpus, **change}, tok, block_size=BLOCK, batch_size=4, cache_dir=tmp_path)


def test_an_unquoted_record_number_is_a_record_name(tiny_corpus):
    corpus = Corpus.from_config({**tiny_corpus, "holdout": {"human": {"val": [21], "test": ["22:1-100"]}}})
    assert corpus.species[0].val == ("21",) and corpus.species[0].test == ("22:1-100",)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"shard_windows": 0}, r"data\.shard_windows=0 must be >= 1"),
        ({"num_workers": -1, "val_windows": 0}, r"data\.num_workers=-1 must be >= 0; data\.val_windows=0 must be >= 1"),
        ({"reverse_prob": 2.0}, r"data\.reverse_prob must be in \[0, 1\], got 2\.0"),
    ],
)
def test_bad_data_values_name_the_key(tiny_corpus, tok, tmp_path, kw, match):
    with pytest.raises(ConfigError, match=match):
        PretrainDataModule(tiny_corpus, tok, block_size=BLOCK, batch_size=4, cache_dir=tmp_path, **kw)


def test_block_too_small_for_prompts(tok):
    with pytest.raises(ValueError, match="block_size 20 is too small for 2 GC prompts"):
        SampleBuilder(tok, 20)


# ----- sharding, N policy, resume ---------------------------------------------------------------------------
def test_shards_are_disjoint_and_cover_everything(tiny_corpus, tok, tmp_path):
    dm = make_dm(tiny_corpus, tok, tmp_path)
    for sp in dm._species:
        rows = [tuple(r) for r in sp.shards.tolist()]
        assert len(rows) > 6
        for n_readers in (1, 2, 3, 4, 7):
            parts = [PretrainStreamDataset.worker_shards(sp.shards, g, n_readers) for g in range(n_readers)]
            got = [tuple(r) for p in parts for r in p.tolist()]
            assert sorted(got) == sorted(rows) and len(set(got)) == len(rows)
        by_record = {}
        for rec, s, e in rows:  # shards themselves never overlap
            by_record.setdefault(rec, []).append((s, e))
        for spans in by_record.values():
            spans.sort()
            assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))


def test_readers_see_disjoint_windows(tiny_corpus, tok, tmp_path):
    dm = make_dm(tiny_corpus, tok, tmp_path)
    ds = dm.train_dataset()
    wbp = dm.builder.window_bp
    seen = []
    for gid in range(3):
        s = ds.samples(gid, 3)
        seen.append({(i, rec, start) for i, rec, start, _, _ in take(s, 150)})
    for a in range(3):
        for b in range(a + 1, 3):
            for i, rec, start in seen[a]:
                assert not any(j == i and r == rec and abs(st - start) < wbp for j, r, st in seen[b])


def test_heldout_regions_never_appear_in_training(bundled_dm):
    wbp = bundled_dm.builder.window_bp
    for plan, sp in zip(bundled_dm._plans, bundled_dm._species, strict=True):
        held = plan.val + plan.test
        assert held, plan.entry.name
        for rec, s, e in sp.shards.tolist():
            assert not any(h.record == rec and s < h.end and h.start < e for h in held)
    ds = bundled_dm.train_dataset()
    for i, rec, start, _, _ in take(ds.samples(0, 1), 400):
        held = bundled_dm._plans[i].val + bundled_dm._plans[i].test
        assert not any(h.record == rec and start < h.end and h.start < start + wbp for h in held)


def test_no_window_above_the_n_threshold_and_skips_are_counted(tiny_corpus, tok, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        dm = make_dm(tiny_corpus, tok, tmp_path)
    assert "windows with > 5% N" in caplog.text
    ds = dm.train_dataset()
    max_n = int(0.05 * dm.builder.window_bp)
    for i, rec, start, window, _ in take(ds.samples(0, 1), 400):
        assert np.count_nonzero(window == ord("N")) <= max_n
        assert window.tobytes() == dm._species[i].genome.window(rec, start, start + len(window)).tobytes()
    assert sum(ds.stats["skipped_n"].values()) > 0
    with caplog.at_level(logging.INFO):
        take(ds.samples(0, 1), 1000)  # completes passes: each logs its yield and skip counts
    assert "passes" in caplog.text and "skipped (more than 9 N of 198 bp)" in caplog.text


def test_stream_is_deterministic_and_seed_dependent(tiny_corpus, tok, tmp_path):
    a, b = make_dm(tiny_corpus, tok, tmp_path), make_dm(tiny_corpus, tok, tmp_path)
    c = make_dm(tiny_corpus, tok, tmp_path, seed=4)
    ka = [(i, r, s, d) for i, r, s, _, d in take(a.train_dataset().samples(0, 1), 50)]
    kb = [(i, r, s, d) for i, r, s, _, d in take(b.train_dataset().samples(0, 1), 50)]
    kc = [(i, r, s, d) for i, r, s, _, d in take(c.train_dataset().samples(0, 1), 50)]
    assert ka == kb and ka != kc


def test_species_follow_their_weights(tiny_corpus, tok, tmp_path):
    dm = make_dm(tiny_corpus, tok, tmp_path)
    species = [i for i, *_ in take(dm.train_dataset().samples(0, 1), 3000)]
    assert abs(np.mean(np.array(species) == 0) - 2 / 3) < 0.04  # human weight 2, yeast 1


def batches_equal(x: list[dict], y: list[dict]) -> bool:
    return len(x) == len(y) and all(torch.equal(a[k], b[k]) for a, b in zip(x, y, strict=True) for k in a)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_reproduces_the_stream(tiny_corpus, tok, tmp_path, num_workers):
    full_dm = make_dm(tiny_corpus, tok, tmp_path, num_workers=num_workers)
    full = take(iter(full_dm.train_dataloader()), 12)

    dm = make_dm(tiny_corpus, tok, tmp_path, num_workers=num_workers)
    dm.trainer = SimpleNamespace(training=True, global_rank=0, world_size=1)
    first = [dm.on_after_batch_transfer(b, 0) for b in take(iter(dm.train_dataloader()), 7)]
    dm.trainer.training = False
    dm.on_after_batch_transfer(first[0], 0)  # a validation batch is not counted
    state = dm.state_dict()
    assert state["train_batches"] == 7

    resumed = make_dm(tiny_corpus, tok, tmp_path, num_workers=num_workers)
    resumed.load_state_dict(state)
    rest = take(iter(resumed.train_dataloader()), 5)
    assert batches_equal(first + rest, full)
    assert not batches_equal(rest, full[:5])


def test_resume_with_another_layout_warns(tiny_corpus, tok, tmp_path, caplog):
    dm = make_dm(tiny_corpus, tok, tmp_path)
    with caplog.at_level(logging.WARNING):
        dm.load_state_dict({"train_batches": 3, "seed": 3, "world_size": 2, "num_workers": 0, "local_batch_size": 2})
    assert dm.train_batches == 3 and "not the one an uninterrupted run would have seen" in caplog.text


# ----- held-out windows -------------------------------------------------------------------------------------
def test_heldout_windows_are_fixed_and_inside_their_regions(tiny_corpus, tok, tmp_path):
    a, b = (
        make_dm(tiny_corpus, tok, tmp_path, val_windows=6),
        make_dm(tiny_corpus, tok, tmp_path, val_windows=6),
    )
    assert batches_equal(list(a.val_dataloader()), list(b.val_dataloader()))
    assert batches_equal(list(a.val_dataloader()), list(a.val_dataloader()))
    items = a.heldout_dataset("val").items
    assert [i for i, *_ in items] == [0, 0, 0, 0, 1, 1]  # weights 2 : 1
    for i, region, _ in items:
        plan = a._plans[i]
        assert any(r.record == region.record and r.start <= region.start and region.end <= r.end for r in plan.val)
    assert len(a.test_dataloader()) > 0


def test_heldout_windows_without_the_datamodule(tiny_corpus, tok, tmp_path):
    """The stream module picks the windows by itself; the DataModule only adds the error when there are none."""
    dm = make_dm(tiny_corpus, tok, tmp_path, val_windows=6)
    items = heldout_windows(dm._plans, dm.builder, "val", 6, dm.seed, dm.corpus.max_n_frac)
    assert items == dm.heldout_dataset("val").items
    direct = PretrainWindowDataset(dm._species, dm.builder, items)
    assert batches_equal([direct[k] for k in range(len(direct))], [dm.heldout_dataset("val")[k] for k in range(6)])
    no_regions = [dataclasses.replace(p, val=[]) for p in dm._plans]
    assert heldout_windows(no_regions, dm.builder, "val", 6, dm.seed, dm.corpus.max_n_frac) == []


def test_no_heldout_window_is_an_error(tiny_corpus, tok, tmp_path):
    corpus = {**tiny_corpus, "holdout": {"human": {"val": ["chr1:1-100"]}}}
    dm = make_dm(corpus, tok, tmp_path)
    with pytest.raises(ValueError, match=r"no usable val window: give holdout\.<species>\.val regions of at least 198"):
        dm.val_dataloader()


# ----- sample layout ----------------------------------------------------------------------------------------
def check_sample(sample: dict, tok: KmerTokenizer, builder: SampleBuilder) -> str:
    """Assert every layout invariant of one sample; return its DNA as presented."""
    ids, labels = sample["input_ids"].numpy(), sample["labels"].numpy()
    vpos, values, vmask = sample["value_pos"].numpy(), sample["values"].numpy(), sample["value_mask"].numpy()
    T = len(ids)
    assert T + len(vpos) == builder.block_size
    assert (ids[vpos] == tok.number_id).all() and ids[T - 2] == tok.eq_id == ids[int(sample["order_pos"])]
    assert ids[0] == int(sample["species"])
    assert ids[T - 1] == (tok.true_id if int(sample["order_label"]) else tok.false_id)
    not_dna = np.zeros(T, dtype=bool)
    not_dna[[0, *vpos, T - 2, T - 1]] = True
    for t in range(T):
        if t == T - 1 or not_dna[t + 1]:
            assert labels[t] == IGNORE_INDEX
        else:
            assert labels[t] == ids[t + 1]
    dna_pieces = np.split(ids, np.concatenate([vpos, [T - 2]]))  # each piece starts with <species> or <M>
    segments = [tok.decode_dna(p[1:]) for p in dna_pieces[:-1]]  # drop the species token / <M> at each piece's head
    assert all(len(s) >= 6 * builder.min_segment_tokens for s in segments)
    for s, v, m in zip(segments[:-1], values, vmask, strict=True):
        expected = gc_fraction(s)
        assert m == (not np.isnan(expected))
        assert v == pytest.approx(expected if m else 0.0, abs=1e-6)
    dna = "".join(segments)
    assert len(dna) == builder.window_bp
    return dna


def test_sample_layout_on_bundled_genomes(bundled_dm, tok):
    ds = bundled_dm.train_dataset()
    reversed_seen = forward_seen = 0
    for (i, rec, start, window, draw), sample in zip(take(ds.samples(0, 1), 40), take(iter(ds), 40), strict=True):
        dna = check_sample(sample, tok, bundled_dm.builder)
        genome = bundled_dm._species[i].genome
        raw = genome.window(rec, start, start + len(window)).tobytes().decode()
        assert (dna[::-1] if draw.reverse else dna) == raw  # un-reversing a reversed sample gives the genome
        reversed_seen += draw.reverse
        forward_seen += not draw.reverse
    assert reversed_seen and forward_seen


def test_reversed_sample_is_a_genome_substring(bundled_dm, tok):
    sample = next(s for s in iter(bundled_dm.train_dataset()) if int(s["order_label"]) == 1)
    dna = check_sample(sample, tok, bundled_dm.builder)
    sp = next(s for s in bundled_dm._species if s.species_id == int(sample["species"]))
    whole = b"".join(sp.genome.window(r, 0, int(n)).tobytes() + b"|" for r, n in enumerate(sp.genome.lengths))
    assert whole.find(dna[::-1].encode()) >= 0


def test_gc_value_without_acgt_is_masked(tok):
    b = SampleBuilder(tok, BLOCK, reverse_prob=0.0)
    window = np.frombuffer(b"N" * 60 + b"GC" * 69, dtype=np.uint8)
    s = b.build(window, tok.species_id("human"), SampleDraw(reverse=False, rc=False, cuts=(10, 20)))
    assert s["value_mask"].tolist() == [False, True] and s["values"].tolist() == [0.0, 1.0]


def test_rc_augment_reverse_complements(tok):
    b = SampleBuilder(tok, BLOCK, rc_augment=True)
    rng = np.random.default_rng(5)
    draws = [b.draw(rng) for _ in range(200)]
    assert 60 < sum(d.rc for d in draws) < 140
    window = np.frombuffer(b"ACGTTG" * 33, dtype=np.uint8)
    d = next(d for d in draws if d.rc and not d.reverse)
    dna = check_sample({k: torch.as_tensor(v) for k, v in b.build(window, 21, d).items()}, tok, b)
    assert dna == reverse_complement(window.tobytes()).decode()


def test_fixed_vocabulary_samples(tiny_corpus, tmp_path):
    fixed = KmerTokenizer("fixed")
    dm = make_dm(tiny_corpus, fixed, tmp_path)
    for sample in take(iter(dm.train_dataset()), 10):
        check_sample(sample, fixed, dm.builder)


# ----- configs ----------------------------------------------------------------------------------------------
@pytest.fixture
def conf_root(tmp_path) -> Path:
    """A minimal root config with the real corpus, data and paths groups (the keys the pipeline relies on)."""
    root = tmp_path / "conf"
    for group in ("corpus", "data", "paths"):
        shutil.copytree(CONF / group, root / group)
    (root / "root.yaml").write_text(
        "defaults:\n  - _self_\n  - corpus: bundled\n  - data: pretrain\n  - paths: default\n"
        "seed: 11\nmodel:\n  block_size: 64\n"
    )
    return root


@pytest.mark.parametrize("corpus", ["bundled", "human", "multispecies"])
def test_corpus_configs_compose(conf_root, tok, tmp_path, corpus):
    register_resolvers()
    with initialize_config_dir(config_dir=str(conf_root), version_base="1.3"):
        cfg = compose(
            "root",
            overrides=[f"corpus={corpus}", f"paths.data_dir={tmp_path / 'data'}", "data.num_workers=0"],
        )
    if corpus != "bundled":  # not on disk here: building the DataModule names the files and the download command
        with pytest.raises(InstantiationException) as err:
            instantiate(cfg.data, tokenizer=tok)
        assert isinstance(err.value.__cause__, FileNotFoundError)
        assert f"python download.py corpus={corpus}" in str(err.value.__cause__)
        for sp in Corpus.from_config(cfg.corpus).species:  # empty stand-ins: the rest of the config builds
            sp.fasta.parent.mkdir(parents=True, exist_ok=True)
            sp.fasta.touch()
    dm = instantiate(cfg.data, tokenizer=tok)
    assert dm.builder.block_size == 64 and dm.seed == 11
    assert dm.cache_dir == tmp_path / "data" / "cache" / "genomes"
    if corpus == "bundled":
        assert dm.corpus.root == Path(resource_path("bundled"))
        dm.prepare_data()
        dm.setup("fit")
        assert len(dm.val_dataloader()) > 0 and len(dm.test_dataloader()) > 0
        assert {s.name for s in dm._species} == {sp.name for sp in dm.corpus.species} - {"zebrafish"}
    else:
        assert all(sp.url.startswith("https://") for sp in dm.corpus.species)


def test_bundled_files_match_their_checksums():
    import hashlib

    corpus = Corpus.from_config(bundled_cfg())
    for sp in corpus.species:
        if sp.fasta is not None:
            assert hashlib.sha256(sp.fasta.read_bytes()).hexdigest() == sp.sha256, sp.name


def test_bundled_shards_and_plans(bundled_dm):
    for plan, sp in zip(bundled_dm._plans, bundled_dm._species, strict=True):
        shards, stats = make_shards(plan, bundled_dm.builder.window_bp, 16, 0.05)
        assert np.array_equal(shards, sp.shards) and stats["windows"] > 20
    human = next(p for p in bundled_dm._plans if p.entry.name == "human")
    again = plan_species(human.entry, human.genome, "bundled")
    assert again.train == human.train and len(human.train) == 1  # the held-out tail is cut off the one record


# ----- Lightning integration -------------------------------------------------------------------------------
class Recorder(L.LightningModule):
    """Trains nothing; records the batches Lightning trains on."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch["input_ids"].clone())
        return (self.w * batch["values"].mean()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(dm, max_steps: int, ckpt_path=None, save_to=None) -> list[torch.Tensor]:
    module = Recorder()
    trainer = L.Trainer(
        accelerator="cpu", max_steps=max_steps, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    if save_to is not None:
        trainer.save_checkpoint(save_to)
    return module.seen


@pytest.mark.slow
def test_lightning_resume_sees_the_uninterrupted_stream(tiny_corpus, tok, tmp_path):
    full = _fit(make_dm(tiny_corpus, tok, tmp_path, num_workers=2), 7)
    ckpt = tmp_path / "mid.ckpt"
    first = _fit(make_dm(tiny_corpus, tok, tmp_path, num_workers=2), 3, save_to=ckpt)
    assert torch.load(ckpt, weights_only=False)["PretrainDataModule"]["train_batches"] == 3
    rest = _fit(make_dm(tiny_corpus, tok, tmp_path, num_workers=2), 7, ckpt_path=ckpt)
    assert len(first) == 3 and len(rest) == 4
    assert all(torch.equal(a, b) for a, b in zip(first + rest, full, strict=True))
