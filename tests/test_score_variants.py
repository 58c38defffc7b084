"""Zero-shot variant scores on real sequence: a 30 kb excerpt of the shipped human genome (GRCh37 chr20), variants written
at its real positions, a small random network saved as a save_pretrained directory."""

from __future__ import annotations

import csv
import gzip
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from dnagpt.data.fasta import iter_records, reverse_complement
from dnagpt.model import DNAGPT, GPTConfig, save_pretrained
from dnagpt.model.pretrained import RELEASE_RENAMES
from dnagpt.score_variants import ScoreSummary, load_model, run, score_variants
from dnagpt.tokenizer import KmerTokenizer
from dnagpt.utils.errors import ConfigError, InputError
from dnagpt.utils.resolvers import register_resolvers
from dnagpt.variants import Reference
from dnagpt.vcf import INFO_ID, VcfReader

ROOT = Path(__file__).resolve().parent.parent
HUMAN = ROOT / "dnagpt" / "resources" / "bundled" / "human.fa.gz"
TOK = KmerTokenizer()
FLANK = 100
HEADER = "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"


@pytest.fixture(scope="module")
def human() -> tuple[str, str]:
    """The first 30 kb of the shipped human excerpt (upper case, no N), under the excerpt's record name."""
    name, seq = next(iter_records(HUMAN))
    seq = seq[:30_000].upper()
    assert set(seq) <= set("ACGT")
    return name, seq


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("variants")


def write_fasta(path: Path, name: str, seq: str) -> Path:
    path.write_text(f">{name}\n" + "\n".join(seq[i : i + 60] for i in range(0, len(seq), 60)) + "\n")
    return path


@pytest.fixture(scope="module")
def reference(human: tuple[str, str], work: Path) -> Path:
    return write_fasta(work / "excerpt.fa", *human)


@pytest.fixture(scope="module")
def model_dir(work: Path) -> Path:
    torch.manual_seed(0)
    save_pretrained(DNAGPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=128)), work / "model", TOK.to_dict())
    return work / "model"


def write_vcf(path: Path, rows: list[str], meta: tuple[str, ...] = ()) -> Path:
    text = "\n".join(["##fileformat=VCFv4.2", *meta, HEADER, *rows]) + "\n"
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def row(name: str, pos: int, ref: str, alt: str, vid: str = ".", info: str = ".") -> str:
    return f"{name}\t{pos}\t{vid}\t{ref}\t{alt}\t.\tPASS\t{info}"


def scores(tmp_path: Path, model: Path, vcf: Path, fasta: Path, **kwargs) -> tuple[list[dict], ScoreSummary]:
    """The TSV rows of one run, values as floats."""
    kwargs = {"flank": FLANK, "cache_dir": tmp_path / "cache", **kwargs}
    summary = score_variants(model, vcf, fasta, tmp_path / "out.tsv", tmp_path / "out.vcf", **kwargs)
    with open(tmp_path / "out.tsv") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    for r in rows:
        for key in ("llr", "llr_forward", "llr_reverse"):
            r[key] = None if r[key] == "NA" else float(r[key])
    return rows, summary


def test_reference_allele_scores_exactly_zero(tmp_path, human, reference, model_dir) -> None:
    name, seq = human
    vcf = write_vcf(tmp_path / "in.vcf", [
        row(name, 5_001, seq[5_000], f"{seq[5_000]},{'A' if seq[5_000] != 'A' else 'C'}", "snv"),
        row(name, 9_001, seq[9_000:9_004], seq[9_000:9_004], "mnv"),
        row(name, 12_001, seq[12_000:12_003], seq[12_000], "del"),
    ])  # fmt: skip
    rows, summary = scores(tmp_path, model_dir, vcf, reference, strand="both", phases=3)
    assert summary.alleles_scored == 4 and not summary.skipped
    same = [r for r in rows if r["ref"] == r["alt"]]
    assert len(same) == 2
    for r in same:
        assert r["llr"] == r["llr_forward"] == r["llr_reverse"] == 0.0
    assert all(r["llr"] != 0.0 for r in rows if r["ref"] != r["alt"])


def other_bases(ref: str) -> str:
    """An allele as long as ``ref`` that differs from it at every base."""
    return "".join("C" if b != "C" else "G" for b in ref)


@pytest.mark.parametrize(
    ("kind", "length", "make_alt"),
    [("snv", 1, other_bases), ("mnv", 3, other_bases), ("ins", 1, lambda r: r + "AC"), ("del", 5, lambda r: r[0])],
)
def test_swapping_ref_and_alt_flips_the_sign(tmp_path, human, model_dir, kind, length, make_alt) -> None:
    """Scoring ALT against REF on the reference, and REF against ALT on the reference with ALT in it, read the same
    windows the other way round."""
    name, seq = human
    pos = 7_001
    ref = seq[pos - 1 : pos - 1 + length]
    alt = make_alt(ref)
    edited = seq[: pos - 1] + alt + seq[pos - 1 + length :]
    forward, _ = scores(tmp_path / "a", model_dir, write_vcf(tmp_path / "a.vcf", [row(name, pos, ref, alt)]),
                        write_fasta(tmp_path / "ref.fa", name, seq), strand="both", phases=2)  # fmt: skip
    back, _ = scores(tmp_path / "b", model_dir, write_vcf(tmp_path / "b.vcf", [row(name, pos, alt, ref)]),
                     write_fasta(tmp_path / "alt.fa", name, edited), strand="both", phases=2)  # fmt: skip
    assert forward[0]["kind"] == kind
    assert forward[0]["llr"] != 0.0
    for key in ("llr", "llr_forward", "llr_reverse"):
        assert back[0][key] == -forward[0][key]


def full_log_likelihood(model: DNAGPT, text: str) -> float:
    """ln P of every word of ``text`` after ``<R>``: one unbatched forward pass and the whole log-softmax."""
    ids = torch.tensor([[TOK.species_id("human"), *TOK.encode_dna(text).tolist()]])
    with torch.no_grad():
        log_probs = model(ids).logits[0, :-1].double().log_softmax(-1)
    return float(log_probs.gather(1, ids[0, 1:, None]).sum())


@pytest.mark.parametrize(("ref_len", "alt"), [(1, "G"), (4, "first"), (1, "+TTA")])
def test_score_is_the_log_likelihood_ratio_of_the_documented_windows(
    tmp_path, human, reference, model_dir, ref_len, alt
) -> None:
    """The windows written out by hand (anchor flank, allele, far flank padded to whole 6-mers; the reverse strand
    anchored downstream), scored by brute force, give the LLR the batched scorer reports."""
    name, seq = human
    p0 = 15_000
    ref = seq[p0 : p0 + ref_len]
    alt = {"first": ref[0], "+TTA": ref + "TTA"}.get(alt, alt if alt != ref else "C")
    rows, _ = scores(tmp_path, model_dir, write_vcf(tmp_path / "in.vcf", [row(name, p0 + 1, ref, alt)]), reference)
    model, _ = load_model(model_dir)
    end = p0 + ref_len

    def windows(allele: str) -> tuple[str, str]:
        far = FLANK + (-(FLANK + len(allele) + FLANK)) % 6
        forward = seq[p0 - FLANK : p0] + allele + seq[end : end + far]
        reverse = reverse_complement(seq[p0 - far : p0] + allele + seq[end : end + FLANK])
        return forward, reverse

    (ref_f, ref_r), (alt_f, alt_r) = windows(ref), windows(alt)
    assert all(len(w) % 6 == 0 for w in (ref_f, ref_r, alt_f, alt_r))
    assert ref_f[:FLANK] == alt_f[:FLANK] and ref_r[:FLANK] == alt_r[:FLANK]
    expected_f = full_log_likelihood(model, alt_f) - full_log_likelihood(model, ref_f)
    expected_r = full_log_likelihood(model, alt_r) - full_log_likelihood(model, ref_r)
    assert rows[0]["llr_forward"] == pytest.approx(expected_f, abs=2e-4)
    assert rows[0]["llr_reverse"] == pytest.approx(expected_r, abs=2e-4)
    assert rows[0]["llr"] == pytest.approx((expected_f + expected_r) / 2, abs=2e-4)


def test_windows_share_the_words_before_the_allele(human, reference, work) -> None:
    name, seq = human
    fasta = Reference(reference, work / "cache", TOK)
    record = next(iter(VcfReader(write_vcf(work / "w.vcf", [row(name, 20_001, seq[20_000], seq[20_000] + "A")]))))
    index = fasta.locate(record, work / "w.vcf")
    for strand in ("forward", "reverse"):
        for phase in range(6):
            ref, ins = (fasta.window(index, record, a, FLANK, phase, strand, 6) for a in (record.ref, record.alts[0]))
            assert len(ref.text) % 6 == 0 and len(ins.text) % 6 == 0
            assert ref.first == ins.first == 1 + (FLANK + phase) // 6
            shared = 6 * (ref.first - 1)  # the whole words before the one that holds the allele
            assert ref.text[:shared] == ins.text[:shared] and ref.text[shared:] != ins.text[shared:]


def test_not_sequences_multiallelic_and_skips_are_counted(tmp_path, human, reference, model_dir, caplog) -> None:
    name, seq = human
    p = next(i for i in range(3_000, 3_100) if seq[i] in "GT")  # so that A and C are both real ALT alleles
    vcf = write_vcf(tmp_path / "in.vcf.gz", [
        row(name, p + 1, seq[p], "A,<DEL>,C,G]17:198982]", "multi", info=f"DP=7;{INFO_ID}=9"),
        row(name, 3_201, seq[3_200], "*", "star"),
        row(name, 3_301, seq[3_300], ".", "none"),
        row(name, len(seq), seq[-1], other_bases(seq[-1]), "edge"),
        row(name, 4_001, seq[4_000:4_700], seq[4_000], "long"),
    ], meta=(f'##INFO=<ID={INFO_ID},Number=A,Type=Float,Description="an earlier run">',))  # fmt: skip
    with caplog.at_level(logging.INFO, logger="dnagpt.score_variants"):
        rows, summary = scores(tmp_path, model_dir, vcf, reference)
    assert summary.skipped == {"symbolic": 1, "breakend": 1, "spanning deletion": 1, "missing": 1, "contig end": 1,
                               "longer than the context": 1}  # fmt: skip
    assert "4 ALT entries are not sequences" in caplog.text and "2 sequence alleles were not scored" in caplog.text
    assert [(r["id"], r["alt"]) for r in rows] == [("multi", "A"), ("multi", "C")]
    out = VcfReader(tmp_path / "out.vcf")
    ours = [m for m in out.meta if INFO_ID in m]
    assert len(ours) == 1 and ours[0].startswith(f"##INFO=<ID={INFO_ID},Number=A,Type=Float,") and "flank=100" in ours[0]
    infos = {r.id: r.fields[7] for r in out}
    a, c = (f"{r['llr']:.6g}" for r in rows)
    assert infos == {"multi": f"DP=7;{INFO_ID}={a},.,{c},.", "star": f"{INFO_ID}=.", "none": ".",
                     "edge": f"{INFO_ID}=.", "long": f"{INFO_ID}=."}  # fmt: skip


@pytest.mark.parametrize(
    ("make_row", "match"),
    [
        (
            lambda n, s: row(n, 101, "A" if s[100] != "A" else "C", "G"),
            r"line 3, column 'REF': record .* does not match "
            r"the reference, which has [ACGT] at ",
        ),
        (lambda n, s: row(n, len(s), s[-1] + "A", "A"), r"line 3, column 'POS': .* outside contig '20_34000001"),
        (lambda n, s: row("chrZ", 101, s[100], "G"), r"line 3, column 'CHROM': .*contig 'chrZ' is not in the reference"),
        (lambda n, s: row(n, 101, s[100], "G1"), r"line 3, column 'ALT': ALT allele 'G1' is neither bases"),
        (lambda n, s: row(n, 101, s[100], "G")[:-3], r"line 3: 7 tab-separated fields, the header has 8"),
        (lambda n, s: row(n, 101, "R", "G"), r"line 3, column 'REF': REF 'R' is not a sequence"),
    ],
    ids=["ref-mismatch", "beyond-contig-end", "unknown-contig", "bad-alt", "short-line", "bad-ref"],
)
def test_bad_records_name_the_line_and_column(tmp_path, human, reference, model_dir, make_row, match) -> None:
    name, seq = human
    good = [row(name, 1_001 + 50 * i, seq[1_000 + 50 * i], other_bases(seq[1_000 + 50 * i])) for i in range(40)]
    vcf = write_vcf(tmp_path / "bad.vcf", [*good, make_row(*human)])  # a chunk of good records is written first
    line = f"line {3 + len(good)}"
    with pytest.raises(InputError, match=match.replace("line 3", line)):
        scores(tmp_path, model_dir, vcf, reference)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.vcf", "cache"]  # no output, no partial file


def test_contig_naming_mismatch_gets_a_hint(tmp_path, human, model_dir) -> None:
    name, seq = human
    fasta = write_fasta(tmp_path / "chr.fa", "chr20", seq)
    vcf = write_vcf(tmp_path / "in.vcf", [row("20", 101, seq[100], "G")])
    with pytest.raises(InputError, match=r"contig '20' is not in the reference .* has 'chr20': the two files name"):
        scores(tmp_path, model_dir, vcf, fasta)


def test_bad_headers(tmp_path, reference, model_dir) -> None:
    (tmp_path / "plain.vcf").write_text(HEADER + "\n")
    with pytest.raises(InputError, match=r"plain.vcf, line 1: not a VCF: the first line must be '##fileformat=VCFv4.x'"):
        scores(tmp_path, model_dir, tmp_path / "plain.vcf", reference)
    (tmp_path / "noheader.vcf").write_text("##fileformat=VCFv4.2\n##source=x\n")
    with pytest.raises(InputError, match="no '#CHROM' header line"):
        scores(tmp_path, model_dir, tmp_path / "noheader.vcf", reference)
    (tmp_path / "cols.vcf").write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tREF\tALT\n")
    with pytest.raises(InputError, match=r"line 2: the header line must start with the 8 tab-separated columns"):
        scores(tmp_path, model_dir, tmp_path / "cols.vcf", reference)


def test_bad_settings(tmp_path, human, reference, model_dir) -> None:
    name, seq = human
    vcf = write_vcf(tmp_path / "in.vcf", [row(name, 101, seq[100], "G")])
    with pytest.raises(ConfigError, match="strand='sideways': use one of forward, reverse, both"):
        scores(tmp_path, model_dir, vcf, reference, strand="sideways")
    with pytest.raises(ConfigError, match=r"flank=400: .* more than the model's block_size 128; use flank <= 378"):
        scores(tmp_path, model_dir, vcf, reference, flank=400)
    with pytest.raises(ConfigError, match="species='martian'"):
        scores(tmp_path, model_dir, vcf, reference, species="martian")
    with pytest.raises(ConfigError, match=r"vcf=.*nope.vcf is not a file"):
        scores(tmp_path, model_dir, tmp_path / "nope.vcf", reference)


def test_a_released_checkpoint_scores_like_the_same_weights_saved_by_us(tmp_path, human, reference) -> None:
    """A released .pth brings no config: the tiny preset and the dynamic vocabulary come from its shapes."""
    torch.manual_seed(1)
    model = DNAGPT(GPTConfig.from_name("tiny"))
    back = {new: old for old, new in RELEASE_RENAMES.items()}
    release = {next((back[p] + k[len(p) :] for p in back if k.startswith(p)), k): v for k, v in model.state_dict().items()}
    torch.save({"model": release}, tmp_path / "release.pth")
    save_pretrained(model, tmp_path / "ours", TOK.to_dict())
    name, seq = human
    vcf = write_vcf(tmp_path / "in.vcf", [row(name, 2_001, seq[2_000], "A" if seq[2_000] != "A" else "T")])
    from_release, _ = scores(tmp_path / "r", tmp_path / "release.pth", vcf, reference, strand="forward")
    from_ours, _ = scores(tmp_path / "o", tmp_path / "ours", vcf, reference, strand="forward")
    assert from_release == from_ours and from_release[0]["llr_reverse"] is None


def test_hydra_config_runs(tmp_path, human, reference, model_dir) -> None:
    name, seq = human
    vcf = write_vcf(tmp_path / "in.vcf", [row(name, 101, seq[100], "G" if seq[100] != "G" else "C")])
    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT / "dnagpt" / "conf"), version_base="1.3"):
        cfg = compose("score_variants", overrides=[
            f"ckpt={model_dir}", f"vcf={vcf}", f"reference={reference}", f"flank={FLANK}", "strand=reverse",
            f"paths.output_dir={tmp_path}", f"cache_dir={tmp_path / 'cache'}", "extras.print_config=false",
        ])  # fmt: skip
    summary = run(cfg)
    assert summary.alleles_scored == 1 and summary.tsv == tmp_path / "variant_scores.tsv"
    with gzip.open(tmp_path / "variant_scores.vcf.gz", "rt") as fh:
        assert f"{INFO_ID}=" in fh.read()


@pytest.mark.slow
def test_command_line(tmp_path, human, reference, model_dir) -> None:
    """The documented command, as a process: scores on success; on bad input one paragraph naming the line, status 1."""
    name, seq = human
    good = write_vcf(tmp_path / "good.vcf", [row(name, 101, seq[100], "G" if seq[100] != "G" else "C")])
    bad = write_vcf(tmp_path / "bad.vcf", [row(name, 101, "A" if seq[100] != "A" else "C", "G")])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}

    def cli(vcf: Path, out: str) -> subprocess.CompletedProcess:
        args = [f"ckpt={model_dir}", f"vcf={vcf}", f"reference={reference}", f"flank={FLANK}",
                f"hydra.run.dir={tmp_path / out}", f"cache_dir={tmp_path / 'cache'}"]  # fmt: skip
        return subprocess.run([sys.executable, "-m", "dnagpt.score_variants", *args], capture_output=True, text=True,
                              env=env, cwd=tmp_path)  # fmt: skip

    ok = cli(good, "ok")
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "ok" / "variant_scores.tsv").read_text().count("\n") == 2
    failed = cli(bad, "bad")
    assert failed.returncode == 1
    assert "Input error: " in failed.stderr and "line 3, column 'REF'" in failed.stderr
    assert "Traceback" not in failed.stderr
