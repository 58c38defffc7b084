"""Bad task tables → one clear InputError each: (writer of the bad file, reader call) → what the message must say.

Each case writes one broken GSR/expression table or genomes panel file and reads it the way the DataModule does; the
error must be an ``InputError`` (never a traceback-only ``EOFError``/``UnicodeDecodeError``/``KeyError``) whose
message names the file and, where there is one, the line and column.
"""

import gzip
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from dnagpt.data.expression import ExpressionDataModule
from dnagpt.data.expression_table import read_expression_table
from dnagpt.data.genomes import GenomesDataModule
from dnagpt.data.genomes_panel import load_vcf_panel, read_hapt, read_legend
from dnagpt.data.gsr import GSRDataModule
from dnagpt.data.gsr_table import read_gsr_tsv
from dnagpt.tokenizer import KmerTokenizer
from dnagpt.utils.errors import InputError
from dnagpt.utils.resolvers import resource_path

TOK = KmerTokenizer()


def _head(resource: str, n: int) -> list[str]:
    with gzip.open(resource_path(resource), "rt") as fh:
        return [fh.readline() for _ in range(n)]


PAS = "".join(_head("gsr/pas_subset.tsv.gz", 3))  # header + 2 rows: species signal motif label source_file id sequence
TIS = "".join(_head("gsr/tis_subset.tsv.gz", 2))  # header + 1 row: ... chrom pos_1based strand sequence
SEQ = "".join(np.random.default_rng(0).choice(list("ACGT"), 120))
EXPR = f"gene\tchrom\ttss\tstrand\tlabel\tsequence\ng0\t1\t5000\t+\t0.5\t{SEQ}\ng1\t1\t90000\t-\t1.5\t{SEQ[::-1]}\n"
HAPT = "Real p_A 0 1 1\nReal p_B 1 0 0\n"
LEGEND = "id position a0 a1\n1:10_A_G 10 A G\n1:20_C_T 20 C T\n2:5_G_A 5 G A\n"
VCF = (
    '##fileformat=VCFv4.2\n##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
    "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\ts1\n1\t100\trs1\tA\tG\t.\t.\t.\tGT\t0|1\n"
)


def read_gsr(path: Path) -> object:
    return read_gsr_tsv(path, "tis" if "tis" in path.name else "pas")


def read_expression(path: Path) -> object:
    return read_expression_table(path, TOK, id_column="gene", label_column="label", sequence_column="sequence",
                                 sequence_length=120, coordinate_columns=("chrom", "tss", "strand"))  # fmt: skip


def gsr_setup(path: Path) -> None:
    GSRDataModule(TOK, 128, {"pas": str(path)}).setup()


def expression_setup(path: Path) -> None:
    ExpressionDataModule(TOK, 64, path, window=(-24, 24), tss_index=60, sequence_length=120, id_column="gene",
                         label_column="label", sequence_column="sequence", coordinate_columns=("chrom", "tss", "strand"),
                         val_size=2, test_size=2).setup()  # fmt: skip


def genomes_setup(path: Path) -> None:
    legend = resource_path("genomes/yelmen805.legend.gz")
    GenomesDataModule(TOK, 256, hapt=str(path), legend=legend).setup()


# ---- writers of bad files: (file name, bytes) ------------------------------------------------------------------------
def plain(name: str, text: str) -> Callable[[], tuple[str, bytes]]:
    return lambda: (name, text.encode())


def gz(name: str, text: str) -> Callable[[], tuple[str, bytes]]:
    return lambda: (name, gzip.compress(text.encode(), mtime=0))


def truncated_gz(name: str, text: str) -> Callable[[], tuple[str, bytes]]:
    """The first half of a gzip stream, as an interrupted download leaves it."""

    def write() -> tuple[str, bytes]:
        data = gzip.compress(text.encode(), mtime=0)
        return name, data[: len(data) // 2]

    return write


def with_byte(name: str, text: str, line: int) -> Callable[[], tuple[str, bytes]]:
    """``text`` with a Latin-1 ``é`` (byte 0xe9, not UTF-8) starting ``line`` (1-based)."""

    def write() -> tuple[str, bytes]:
        lines = text.encode().split(b"\n")
        lines[line - 1] = b"\xe9" + lines[line - 1]
        return name, b"\n".join(lines)

    return write


def edit(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


PAS_HEADER = PAS.split("\n", 1)[0]
EXPR_HEADER = EXPR.split("\n", 1)[0]

CASES = [
    # ---- GSR -----------------------------------------------------------------------------------------------------
    ("gsr_missing_column", plain("bad.tsv", edit(PAS, "\tlabel\t", "\tlabels\t")), read_gsr,
     ["bad.tsv, line 1: missing column(s) ['label']"]),
    ("gsr_label_value", plain("bad.tsv", edit(PAS, "\tAAAAAG\t1\t", "\tAAAAAG\tyes\t")), read_gsr,
     ["bad.tsv, line 2, column 'label': 'yes' is not a label: labels are 0 or 1"]),
    ("gsr_empty", plain("bad.tsv", ""), read_gsr, ["bad.tsv: is empty: expected a header row"]),
    ("gsr_header_only", plain("bad.tsv", PAS_HEADER + "\n"), read_gsr, ["bad.tsv: has a header but no data rows"]),
    ("gsr_duplicate_column", plain("bad.tsv", edit(PAS, "source_file", "label")), read_gsr,
     ["bad.tsv, line 1, column 'label': the header names this column 2 times (fields 4 and 5)"]),
    ("gsr_fractional_position", plain("tis_bad.tsv", edit(TIS, "\t22685\t", "\t22685.5\t")), read_gsr,
     ["tis_bad.tsv, line 2, column 'pos_1based': '22685.5' is not a whole number"]),
    ("gsr_not_utf8", with_byte("bad.tsv", PAS, 3), read_gsr, ["bad.tsv, line 3: byte 1 of the line (0xe9) is not UTF-8"]),
    ("gsr_truncated_gz", truncated_gz("bad.tsv.gz", PAS), read_gsr, ["bad.tsv.gz: ends early", "truncated"]),
    ("gsr_fake_gz", plain("bad.tsv.gz", PAS), read_gsr, ["bad.tsv.gz: is not gzip-compressed"]),
    ("gsr_gz_named_plain", gz("bad.tsv", PAS), read_gsr, ["bad.tsv, line 1:", "looks gzip-compressed: name it *.gz"]),
    # ---- expression ----------------------------------------------------------------------------------------------
    ("expr_missing_column", plain("bad.tsv", edit(EXPR, "\tstrand\t", "\tdirection\t")), read_expression,
     ["bad.tsv, line 1: missing column(s) ['strand']"]),
    ("expr_label_value", plain("bad.tsv", edit(EXPR, "\t0.5\t", "\thigh\t")), read_expression,
     ["bad.tsv, line 2, column 'label': 'high' is not a number"]),
    ("expr_empty", plain("bad.tsv", ""), read_expression, ["bad.tsv: is empty"]),
    ("expr_header_only", plain("bad.tsv", EXPR_HEADER + "\n"), read_expression, ["bad.tsv: has a header but no data rows"]),
    ("expr_duplicate_column", plain("bad.tsv", edit(EXPR, "gene\tchrom", "label\tchrom")), read_expression,
     ["bad.tsv, line 1, column 'label': the header names this column 2 times (fields 1 and 5)"]),
    ("expr_fractional_tss", plain("bad.tsv", edit(EXPR, "\t90000\t", "\t1234.5\t")), read_expression,
     ["bad.tsv, line 3, column 'tss': '1234.5' is not a whole number"]),
    ("expr_not_utf8", with_byte("bad.tsv", EXPR, 2), read_expression, ["bad.tsv, line 2: byte", "is not UTF-8 text"]),
    ("expr_truncated_gz", truncated_gz("bad.tsv.gz", EXPR), read_expression, ["bad.tsv.gz: ends early"]),
    ("expr_fake_gz", plain("bad.tsv.gz", EXPR), read_expression, ["bad.tsv.gz: is not gzip-compressed"]),
    # ---- genomes panel -------------------------------------------------------------------------------------------
    ("hapt_not_utf8", with_byte("bad.hapt", HAPT, 2), read_hapt, ["bad.hapt, line 2: byte", "is not UTF-8 text"]),
    ("hapt_truncated_gz", truncated_gz("bad.hapt.gz", HAPT * 50), read_hapt, ["bad.hapt.gz: ends early"]),
    ("hapt_fake_gz", plain("bad.hapt.gz", HAPT), read_hapt, ["bad.hapt.gz: is not gzip-compressed"]),
    ("hapt_empty", plain("bad.hapt", ""), read_hapt, ["bad.hapt: holds no haplotype"]),
    ("legend_not_utf8", with_byte("bad.legend", LEGEND, 3), read_legend, ["bad.legend, line 3: byte"]),
    ("legend_truncated_gz", truncated_gz("bad.legend.gz", LEGEND * 20), read_legend, ["bad.legend.gz: ends early"]),
    ("legend_fake_gz", plain("bad.legend.gz", LEGEND), read_legend, ["bad.legend.gz: is not gzip-compressed"]),
    ("legend_empty", plain("bad.legend", ""), read_legend, ["bad.legend: the legend lists no SNP"]),
    ("legend_fractional_position", plain("bad.legend", edit(LEGEND, " 20 ", " 20.5 ")), read_legend,
     ["bad.legend, line 3, column 'position': '20.5' is not a whole number"]),
    ("vcf_truncated_gz", truncated_gz("bad.vcf.gz", VCF * 5), load_vcf_panel, ["bad.vcf.gz: ends early"]),
    ("vcf_fake_gz", plain("bad.vcf.gz", VCF), load_vcf_panel, ["bad.vcf.gz: is not gzip-compressed"]),
    ("vcf_not_utf8", with_byte("bad.vcf", VCF, 4), load_vcf_panel, ["bad.vcf: byte 0xe9 is not UTF-8 text"]),
    ("vcf_empty", plain("bad.vcf", ""), load_vcf_panel, ["bad.vcf: is not a readable VCF"]),
    # ---- through the DataModules, as a run reads them ------------------------------------------------------------
    ("gsr_datamodule", plain("bad.tsv.gz", PAS), gsr_setup, ["bad.tsv.gz: is not gzip-compressed"]),
    ("expr_datamodule", plain("bad.tsv", edit(EXPR, "\t90000\t", "\t1234.5\t")), expression_setup,
     ["bad.tsv, line 3, column 'tss': '1234.5' is not a whole number"]),
    ("genomes_datamodule", truncated_gz("bad.hapt.gz", HAPT * 50), genomes_setup, ["bad.hapt.gz: ends early"]),
]  # fmt: skip


@pytest.mark.parametrize(("write", "read", "fragments"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_table_is_an_input_error_naming_the_place(
    tmp_path: Path, write: Callable[[], tuple[str, bytes]], read: Callable[[Path], object], fragments: list[str]
) -> None:
    name, data = write()
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(InputError) as info:
        read(path)
    message = str(info.value)
    assert message.startswith(str(tmp_path)) and "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


def test_the_good_versions_read(tmp_path: Path) -> None:
    """Unbroken, every file above reads: each case fails for the fault it names, not for another."""

    def good(name: str, text: str) -> Path:
        (tmp_path / name).write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
        return tmp_path / name

    assert len(read_gsr(good("good.tsv.gz", PAS))) == 2 and len(read_gsr(good("tis_good.tsv", TIS))) == 1
    assert len(read_expression(good("good.tsv.gz", EXPR)).ids) == 2
    assert read_hapt(good("good.hapt.gz", HAPT))[1].shape == (2, 3)
    assert len(read_legend(good("good.legend.gz", LEGEND))) == 3
    assert load_vcf_panel(good("good.vcf.gz", VCF)).haplotypes.shape == (2, 1)
