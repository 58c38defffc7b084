"""Embeddings: the vectors are the network's states at the right positions and layers, batching and windows change
nothing, the command writes the same rows as the API from FASTA, BED + reference and tables, and bad input is named."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from inference_data import HUMAN, PAS, TOK, compose_command, human_excerpt, save_ckpt, table_rows, tiny_task, write_fasta

from dnagpt.data.fasta import reverse_complement
from dnagpt.embed import Embedder, embed, embed_tokens, load_network, run
from dnagpt.inference.records import Record
from dnagpt.model.pretrained import save_pretrained
from dnagpt.tasks.gsr import GSRTask
from dnagpt.utils.errors import ConfigError, InputError

FP32 = {"precision": "fp32"}


@pytest.fixture(scope="module")
def task() -> GSRTask:
    return tiny_task(GSRTask).eval()


@pytest.fixture(scope="module")
def windows() -> list[str]:
    """Real PAS windows (606 bp) and human sequence of other lengths, soft-masked as shipped."""
    human = human_excerpt()
    return [r["sequence"] for r in table_rows(PAS, 3)[1]] + [human[1000:1250], human[5000:5007], human[9000:9600]]


def states(task: GSRTask, seq: str, species: bool = True) -> tuple[torch.Tensor, int, int, list[torch.Tensor]]:
    """Final states of the prompt [<R>] DNA <=>, where its DNA starts and ends, and the inputs of each block."""
    dna = TOK.encode_dna(seq).tolist()
    ids = torch.tensor([([TOK.species_id("human")] if species else []) + dna + [TOK.eq_id]])
    inputs: list[torch.Tensor] = []
    hooks = [b.register_forward_pre_hook(lambda _, a: inputs.append(a[0])) for b in task.model.transformer.h]
    with torch.no_grad():
        hidden = task.model(ids, compute_logits=False).hidden[0]
    for h in hooks:
        h.remove()
    first = int(species)
    return hidden, first, first + len(dna), [x[0] for x in inputs]


def test_vectors_are_the_states_the_pooling_names(task, windows) -> None:
    for pooling in ("mean", "last", "eq"):
        got = embed(windows, task, pooling=pooling, batch_size=2, **FP32)
        assert got.shape == (len(windows), 32) and got.dtype == np.float32
        for i, seq in enumerate(windows):
            hidden, a, b, _ = states(task, seq)
            want = {"mean": hidden[a:b].mean(0), "last": hidden[b - 1], "eq": hidden[b]}[pooling]
            np.testing.assert_allclose(got[i], want.numpy(), rtol=1e-4, atol=1e-5, err_msg=f"{pooling} row {i}")


def test_layers_are_the_inputs_of_the_blocks(task, windows) -> None:
    hidden, a, b, block_inputs = states(task, windows[0])
    for layer, want in ((0, block_inputs[0]), (1, block_inputs[1]), (2, hidden), (-1, hidden), (-3, block_inputs[0])):
        got = embed(windows[:1], task, layer=layer, pooling="last", **FP32)[0]
        np.testing.assert_allclose(got, want[b - 1].numpy(), rtol=1e-4, atol=1e-5, err_msg=f"layer {layer}")
    with pytest.raises(ConfigError, match=r"layer=3 must be a whole number in -3\.\.2"):
        embed(windows[:1], task, layer=3)


def test_batching_and_order_change_nothing(task, windows) -> None:
    alone = np.stack([embed([s], task, **FP32)[0] for s in windows])
    together = embed(windows, task, batch_size=4, **FP32)  # sorted by length, padded: causal attention never reads pads
    np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-5)
    without = embed(windows[:2], task, species=None, **FP32)
    hidden, a, b, _ = states(task, windows[0], species=False)
    np.testing.assert_allclose(without[0], hidden[a:b].mean(0).numpy(), rtol=1e-4, atol=1e-5)


def test_token_vectors_and_their_mean(task, windows) -> None:
    tokens = embed_tokens(windows, task, batch_size=3, **FP32)
    assert [len(t) for t in tokens] == [len(TOK.encode_dna(s)) for s in windows]
    hidden, a, b, _ = states(task, windows[3])
    np.testing.assert_allclose(tokens[3], hidden[a:b].numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.stack([t.mean(0) for t in tokens]), embed(windows, task, **FP32), rtol=1e-4, atol=1e-5)


def test_long_sequences_are_refused_or_windowed(task) -> None:
    seq = human_excerpt()[20000:21000]  # 167 tokens; a window holds 128 - 2 = 126
    with pytest.raises(InputError, match=r"record 1 \('long'\): 1000 bp are 167 DNA tokens, more than the 126"):
        embed([("long", seq)], task)
    got = embed([seq], task, long="window", **FP32)[0]
    w = 126 * TOK.k
    parts = embed([seq[:w], seq[w:]], task, **FP32)
    np.testing.assert_allclose(got, (parts[0] * 126 + parts[1] * 41) / 167, rtol=1e-4, atol=1e-5)
    tokens = embed_tokens([seq], task, long="window", **FP32)[0]
    assert tokens.shape == (167, 32)
    np.testing.assert_allclose(tokens[126:], embed_tokens([seq[w:]], task, **FP32)[0], rtol=1e-4, atol=1e-5)


def test_bf16_is_close_to_fp32(task, windows) -> None:
    bf16 = embed(windows, task, precision="bf16")
    fp32 = embed(windows, task, **FP32)
    cos = (bf16 * fp32).sum(1) / np.linalg.norm(bf16, axis=1) / np.linalg.norm(fp32, axis=1)
    assert cos.min() > 0.99
    # auto: bf16 on CPU only for the batches where it measured faster
    assert [Embedder(task.model, TOK, batch_size=b).bf16 for b in (32, 128)] == [False, True]


def test_embedding_streams_its_input(task) -> None:
    """The embedder pulls records a buffer at a time: the first vector comes out long before the input is read."""
    seq = human_excerpt()[:600]
    pulled = []

    def records():
        for i in range(200):
            pulled.append(i)
            yield Record(i, f"r{i}", seq)

    embedder = Embedder(task.model, TOK, batch_size=2)
    first = next(embedder(records()))
    assert first[0] == 0 and len(pulled) <= 2 * 8 + 1


def test_load_network_sources(task, tmp_path) -> None:
    ckpt = save_ckpt(task, tmp_path / "t.ckpt")
    pretrained = save_pretrained(task.model, tmp_path / "pre", TOK.to_dict())
    seqs = [human_excerpt()[:300]]
    want = embed(seqs, task, **FP32)
    for source in (ckpt, pretrained):
        np.testing.assert_allclose(embed(seqs, source, **FP32), want, rtol=1e-5, atol=1e-6)
    torch.save(task.model.state_dict(), tmp_path / "release.pth")
    with pytest.raises(ConfigError, match="holds weights only"):
        load_network(tmp_path / "release.pth")
    model, tok = load_network(tmp_path / "release.pth", task.model.config, TOK)
    np.testing.assert_allclose(embed(seqs, model, tokenizer=tok, **FP32), want, rtol=1e-5, atol=1e-6)


# ---- the command ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ckpt(task, tmp_path_factory) -> Path:
    return save_ckpt(task, tmp_path_factory.mktemp("ckpt") / "gsr.ckpt")


def command(tmp_path: Path, ckpt: Path, *overrides: str) -> tuple[np.ndarray, list[dict[str, str]]]:
    cfg = compose_command(
        "embed", [f"ckpt={ckpt}", "progress=false", "precision=fp32", "batch_size=3", *overrides], tmp_path
    )
    npy, index = run(cfg)
    with open(index, newline="") as fh:
        return np.load(npy), list(csv.DictReader(fh, delimiter="\t"))


def test_command_on_fasta_matches_the_api(task, ckpt, windows, tmp_path) -> None:
    fasta = write_fasta(tmp_path / "in.fa", [(f"w{i}", s) for i, s in enumerate(windows)])
    got, index = command(tmp_path, ckpt, f"input={fasta}", "pooling=eq")
    np.testing.assert_allclose(got, embed(windows, task, pooling="eq", **FP32), rtol=1e-5, atol=1e-6)
    assert [r["name"] for r in index] == [f"w{i}" for i in range(len(windows))]
    assert [int(r["bp"]) for r in index] == [len(s) for s in windows]
    assert (tmp_path / "embeddings.npy").is_file() and (tmp_path / "embeddings.index.tsv").is_file()
    tokens, index = command(tmp_path, ckpt, f"input={fasta}", "pooling=tokens", f"output={tmp_path / 't.npy'}")
    offsets = [int(r["offset"]) for r in index]
    counts = [int(r["tokens"]) for r in index]
    assert offsets == list(np.cumsum([0, *counts[:-1]])) and len(tokens) == sum(counts)
    np.testing.assert_allclose(tokens[offsets[3] : offsets[4]], embed_tokens(windows, task, **FP32)[3], rtol=1e-5, atol=1e-6)


def test_command_on_bed_cuts_the_reference_and_reverses_the_minus_strand(task, ckpt, tmp_path) -> None:
    human = human_excerpt()
    bed = tmp_path / "r.bed"
    bed.write_text("track name=test\n20_34000001-35500000\t1000\t1600\tplus\t0\t+\n20_34000001-35500000\t5000\t5300\n"
                   "20_34000001-35500000\t9000\t9606\tminus\t0\t-\n")  # fmt: skip
    got, index = command(tmp_path, ckpt, f"input={bed}", f"reference={HUMAN}")
    want = embed([human[1000:1600], human[5000:5300], reverse_complement(human[9000:9606])], task, **FP32)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert [r["name"] for r in index] == ["plus", "20_34000001-35500000:5000-5300", "minus"]
    bed.write_text("20_34000001-35500000\t1000\t2000000\n")
    with pytest.raises(InputError, match=r"r\.bed, line 1: region 1000-2000000 is not inside 20_34000001-35500000"):
        command(tmp_path, ckpt, f"input={bed}", f"reference={HUMAN}")
    bed.write_text("chrX\t10\t20\n")
    with pytest.raises(InputError, match=r"line 1, column 'chrom': chrom 'chrX' is not in reference="):
        command(tmp_path, ckpt, f"input={bed}", f"reference={HUMAN}")
    with pytest.raises(ConfigError, match="give reference=<FASTA>"):
        command(tmp_path, ckpt, f"input={bed}")


def test_command_on_a_table_reads_its_species_column(task, ckpt, tmp_path) -> None:
    header, rows = table_rows(PAS, 4)
    table = tmp_path / "pas.tsv"
    table.write_text("\t".join(header) + "\n" + "".join("\t".join(r[c] for c in header) + "\n" for r in rows))
    got, index = command(tmp_path, ckpt, f"input={table}")
    species = [r["species"] for r in rows]
    want = np.stack([embed([r["sequence"]], task, species=s, **FP32)[0] for r, s in zip(rows, species, strict=True)])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert [r["name"] for r in index] == [r["id"] for r in rows]
    as_csv = tmp_path / "pas.csv"  # the GUE layout: comma-separated
    as_csv.write_text("sequence,name\n" + "".join(f"{r['sequence']},{r['id']}\n" for r in rows))
    from_csv, index = command(tmp_path, ckpt, f"input={as_csv}", "columns.name=name", "species=bovine")
    np.testing.assert_allclose(from_csv[:2], want[:2], rtol=1e-5, atol=1e-6)  # the file's first rows are bovine
    rows[2]["species"] = "martian"
    table.write_text("\t".join(header) + "\n" + "".join("\t".join(r[c] for c in header) + "\n" for r in rows))
    with pytest.raises(InputError, match=r"pas\.tsv, line 4, column 'species': record '\S+': unknown species 'martian'"):
        command(tmp_path, ckpt, f"input={table}")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", r"in\.fa: empty file: no FASTA record"),
        (">a\nACGT\n>b\n", r"in\.fa, line 3: record 'b' \(record 2\) is empty"),
        (">a\nACGTACGT\n>b\nACGTUACG\n", r"in\.fa: record 2 \('b'\): invalid DNA character 'U' at position 4"),
    ],
)
def test_bad_fasta_names_the_record(ckpt, tmp_path, text: str, match: str) -> None:
    (tmp_path / "in.fa").write_text(text)
    with pytest.raises(InputError, match=match):
        command(tmp_path, ckpt, f"input={tmp_path / 'in.fa'}")
    assert not list(tmp_path.glob("*.npy")) and not list(tmp_path.glob("*.tsv"))  # nothing half-written


def test_bad_options_are_config_errors(ckpt, tmp_path) -> None:
    fasta = write_fasta(tmp_path / "in.fa", [("a", "ACGTACGT")])
    for override, match in (("pooling=max", "pooling='max' must be one of mean, last, eq, tokens"),
                            ("species=martian", "species=martian: unknown species"),
                            ("format=vcf", "format='vcf' must be one of")):  # fmt: skip
        with pytest.raises(ConfigError, match=match):
            command(tmp_path, ckpt, f"input={fasta}", override)
    with pytest.raises(ConfigError, match=r"input=\S+in\.seq: cannot tell the format from the name"):
        command(tmp_path, ckpt, f"input={fasta.rename(tmp_path / 'in.seq')}")


@pytest.mark.slow
def test_the_command_line(task, ckpt, windows, tmp_path) -> None:
    """``python -m dnagpt.embed`` as a user runs it: the vectors, then a bad record as one paragraph and exit status 1."""
    fasta = write_fasta(tmp_path / "in.fa", [(f"w{i}", s) for i, s in enumerate(windows)])
    base = [sys.executable, "-m", "dnagpt.embed", f"ckpt={ckpt}", f"hydra.run.dir={tmp_path / 'run'}", "precision=fp32"]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    subprocess.run([*base, f"input={fasta}", f"output={tmp_path / 'e.npy'}"], check=True, env=env, capture_output=True)
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), embed(windows, task, **FP32), rtol=1e-5, atol=1e-6)
    bad = write_fasta(tmp_path / "bad.fa", [("ok", "ACGTACGT"), ("oops", "ACGT-ACGT")])
    done = subprocess.run([*base, f"input={bad}"], env=env, capture_output=True, text=True)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().endswith("bad.fa: record 2 ('oops'): invalid DNA character '-' at position 4")
