"""Malformed FASTA files: each is one InputError naming the file, the line where there is one, and what is wrong.

The streaming check gives the same answer however the file is cut into pieces.
"""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from dnagpt.data import fasta
from dnagpt.data.fasta import build_cache, check_fasta, iter_records
from dnagpt.tokenizer import KmerTokenizer
from dnagpt.utils.errors import InputError, MissingFileError


def _dna(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).choice(list(b"ACGT"), size=n).astype(np.uint8).tobytes()


def _wrapped(seq: bytes, width: int = 60) -> bytes:
    return b"".join(seq[i : i + width] + b"\n" for i in range(0, len(seq), width))


_BIG = b">r1 big\n" + _wrapped(_dna(20_000))
_GZ = gzip.compress(_BIG, mtime=0)
_CORRUPT_GZ = _GZ[:20] + bytes(b ^ 0xFF for b in _GZ[20:60]) + _GZ[60:]
_BINARY = b"\x89PNG\r\n\x1a\n" + np.random.default_rng(1).bytes(4096)

# (case, file content, file name, a fragment the message must hold, line it names or None)
BAD_FASTA: list[tuple[str, bytes, str, str, int | None]] = [
    ("NUL in sequence", b">r1\nACGT\nAC\x00GT\nACGT\n", "a.fa", "control byte 0x00 inside a sequence line", 3),
    ("NUL in gzip", gzip.compress(b">r1\nACGT\nAC\x00GT\n"), "a.fa.gz", "control byte 0x00 inside a sequence line", 3),
    ("0x01 in sequence", b">r1\nACGT\x01ACGT\n", "a.fa", "control byte 0x01 inside a sequence line", 2),
    ("NUL in header", b">r\x001\nACGT\n", "a.fa", "control byte 0x00 in a header line", 1),
    ("binary garbage", bytes(range(256)) * 4, "a.fa", "not a FASTA file: control byte 0x00 before the first '>'", 1),
    ("binary image", _BINARY, "a.fa", "not a FASTA file: non-ASCII byte 0x89 before the first '>' header line", 1),
    ("empty file", b"", "a.fa", "empty file: no FASTA record", None),
    ("empty gzip", gzip.compress(b""), "a.fa.gz", "empty file: no FASTA record", None),
    ("blank lines only", b"\n\r\n\n", "a.fa", "no FASTA record (blank lines only)", None),
    ("no header line", b"ACGT\nACGT\n", "a.fa", "not a FASTA file: 'A' before the first '>' header line", 1),
    ("sequence before the first header", b"\n\nACGT\n>r1\nACGT\n", "a.fa", "'A' before the first '>' header", 3),
    ("FASTQ", b"@r1\nACGT\n+\nIIII\n", "a.fa", "not a FASTA file: '@' before the first '>' header line", 1),
    ("header only", b">r1 chromosome 1\n", "a.fa", "record 'r1' (record 1) is empty", 1),
    ("header only, no newline", b">r1", "a.fa", "record 'r1' (record 1) is empty", 1),
    ("empty record", b">r1\nACGT\n>r2\n\n>r3\nAC\n", "a.fa", "record 'r2' (record 2) is empty", 3),
    ("empty last record", b">r1\nACGT\n>r2\n\n", "a.fa", "record 'r2' (record 2) is empty", 3),
    ("header without a name", b"> chromosome 1\nACGT\n", "a.fa", "a '>' header line without a record name", 1),
    ("lone '>'", b">r1\nACGT\n>\nACGT\n", "a.fa", "a '>' header line without a record name", 3),
    ("truncated gzip", _GZ[: len(_GZ) // 2], "a.fa.gz", "truncated gzip file (no end-of-stream marker)", None),
    ("corrupt gzip", _CORRUPT_GZ, "a.fa.gz", "corrupt gzip data", None),
    ("fake .fa.gz", b">r1\nACGT\n", "a.fa.gz", "is not gzip-compressed although its name ends in .gz", None),
    ("space in sequence", b">r1 x y\nACGT\nAC GT\n", "a.fa", "a space inside a sequence line", 3),
    ("tab in sequence", b">r1\tx\nACGT\tACGT\n", "a.fa", "a tab inside a sequence line", 2),
    ("trailing space", b">r1\nACGT \nACGT\n", "a.fa", "a space inside a sequence line", 2),
    ("non-UTF-8 header", b">r1 caf\xe9\nACGT\n", "a.fa", "the header line is not UTF-8 text (byte 0xe9 at column 8)", 1),
    ("non-UTF-8 sequence", b">r1\nAC\xe9GT\n", "a.fa", "non-ASCII byte 0xe9 inside a sequence line", 2),
    ("UTF-8 letter in sequence", ">r1\nACGTé\n".encode(), "a.fa", "non-ASCII byte 0xc3 inside a sequence line", 2),
    ("CRLF, then NUL", b">r1\r\nACGT\r\nA\x00\r\n", "a.fa", "control byte 0x00 inside a sequence line", 3),
]
_IDS = [case[0] for case in BAD_FASTA]


@pytest.fixture(scope="module")
def tok() -> KmerTokenizer:
    return KmerTokenizer()


@pytest.mark.parametrize(("case", "content", "name", "fragment", "line"), BAD_FASTA, ids=_IDS)
def test_bad_fasta_is_one_clear_error(tmp_path, tok, case, content, name, fragment, line):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError) as err:
        build_cache(path, tmp_path / "c", tok)
    place = f"{path}, line {line}" if line is not None else str(path)
    assert str(err.value).startswith(f"{place}: ") and fragment in str(err.value), case
    assert err.value.line == line
    assert not list((tmp_path / "c").glob("a-*"))  # no cache, whole or half, left behind


@pytest.mark.parametrize("piece", [1, 2, 3, 7, 64])
def test_the_answer_does_not_depend_on_where_pieces_are_cut(tmp_path, monkeypatch, piece):
    """Every header, line end and bad byte falls on a piece boundary for some cut: the message stays the same."""
    answers = {}
    for case, content, name, _, _ in BAD_FASTA:
        if case in ("truncated gzip", "corrupt gzip", "binary image"):
            continue  # large; their errors come from the whole stream, not from a line
        path = tmp_path / f"{len(answers)}-{name}"
        path.write_bytes(content)
        with pytest.raises(InputError) as err:
            check_fasta(path)
        answers[path] = str(err.value)
    monkeypatch.setattr(fasta, "_PIECE", piece)
    for path, expected in answers.items():
        with pytest.raises(InputError) as err:
            check_fasta(path)
        assert str(err.value) == expected


GOOD_FASTA = [
    b">chr1 Homo sapiens\tchromosome 1\nACGTNNNNacgt\nRYKM\n\n>chr2\nACGT",  # spaces/tabs in headers; blank line
    b"\n\n>r1\r\nACGT\r\nAC\r\n>r2 x\r\nA\r\n",  # blank lines first; Windows line ends
    b">r1 caf\xc3\xa9\nAC>GT\n",  # a UTF-8 header; a '>' inside a sequence line is the tokenizer's to refuse
]


@pytest.mark.parametrize("piece", [1, 2, 5, 1 << 20])
@pytest.mark.parametrize("content", GOOD_FASTA)
def test_good_fasta_passes_for_any_piece_size(tmp_path, monkeypatch, content, piece):
    monkeypatch.setattr(fasta, "_PIECE", piece)
    plain, gz = tmp_path / "g.fa", tmp_path / "g.fa.gz"
    plain.write_bytes(content)
    gz.write_bytes(gzip.compress(content[:7]) + gzip.compress(content[7:]))  # two gzip members, as bgzip writes
    check_fasta(plain)
    check_fasta(gz)


def test_gzip_pieces_stay_bounded(tmp_path):
    """A highly compressible genome (a 20 Mb run of N is ~20 kB of gzip) is never gunzipped whole."""
    path = tmp_path / "n.fa.gz"
    path.write_bytes(gzip.compress(b">n\n" + b"N" * 20_000_000 + b"\n", compresslevel=1))
    sizes = [len(p) for p in fasta._pieces(path)]
    assert max(sizes) <= fasta._PIECE and sum(sizes) == 20_000_004
    check_fasta(path)


def test_a_header_line_is_carried_whole_but_not_forever(tmp_path, monkeypatch):
    monkeypatch.setattr(fasta, "_PIECE", 4)
    path = tmp_path / "h.fa"
    path.write_bytes(b">r1 " + b"x" * 40 + b"\nACGT\n")
    check_fasta(path)
    monkeypatch.setattr(fasta, "_MAX_HEADER", 16)
    with pytest.raises(InputError, match=r"h\.fa, line 1: a '>' line longer than 16 bytes"):
        check_fasta(path)


def test_missing_fasta_is_a_missing_file_error(tmp_path):
    with pytest.raises(MissingFileError, match="FASTA file not found"):
        list(iter_records(tmp_path / "nope.fa"))


def test_nul_no_longer_drops_the_rest_of_a_record(tmp_path, tok):
    """pyfastx ends a record at a NUL: without the check, the bases after it would be silently lost."""
    path = tmp_path / "n.fa"
    path.write_bytes(b">r1\nACGTACGT\nACGT\x00" + b"ACGT" * 100 + b"\n")
    with pytest.raises(InputError, match=r"n\.fa, line 3: control byte 0x00"):
        build_cache(path, tmp_path / "c", tok)
    path.write_bytes(path.read_bytes().replace(b"\x00", b""))
    assert fasta.EncodedGenome(build_cache(path, tmp_path / "c", tok)).lengths.tolist() == [412]


# ----- the errors the reader gives after the line checks (pyfastx records, tokenizer letters) --------------------
@pytest.mark.parametrize(
    ("content", "match"),
    [
        (">r1\nACGT\n>r2\n\n>r3\nAC\n", r"record 'r2' \(record 2\) is empty"),
        ("just some text\nnot a genome\n", "not a FASTA file"),
        (">r1\nACGT\n>r1\nAC\n", "duplicate record name 'r1'"),
        (">r1\nACGTACGTXX\n", r"record 'r1'.*invalid DNA character 'X' at position 8"),
    ],
)
def test_bad_fasta_errors_name_file_and_record(tmp_path, tok, content, match):
    path = tmp_path / "bad.fa"
    path.write_text(content)
    with pytest.raises(ValueError, match=match) as err:
        build_cache(path, tmp_path / "c", tok)
    assert "bad.fa" in str(err.value)
    assert not list((tmp_path / "c").glob("bad-*/manifest.json"))  # no half cache left behind


def test_truncated_gzip_is_an_error(tmp_path):
    data = gzip.compress(b">r1\n" + b"ACGT" * 5000 + b"\n")
    (tmp_path / "t.fa.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"t\.fa\.gz: truncated gzip"):
        list(iter_records(tmp_path / "t.fa.gz"))
