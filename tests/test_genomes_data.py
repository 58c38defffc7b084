"""Haplotype readers, bad input, individual-level splits, sentence encoding and the DataModule (real 805-SNP panel)."""

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from dnagpt.data.genomes import GenomesDataModule, collate_sentences, decode_haplotypes, encode_haplotypes
from dnagpt.data.genomes_panel import (
    individuals_of,
    load_hapt_panel,
    load_vcf_panel,
    read_hapt,
    read_legend,
    split_individuals,
    write_hapt,
    write_legend,
    write_vcf,
)
from dnagpt.tokenizer import KmerTokenizer
from dnagpt.utils.errors import MissingFileError
from dnagpt.utils.resolvers import resource_path

HAPT = Path(resource_path("genomes/yelmen805.hapt.gz"))
LEGEND = Path(resource_path("genomes/yelmen805.legend.gz"))
TOK = KmerTokenizer()


@pytest.fixture(scope="module")
def panel():
    return load_hapt_panel(HAPT, LEGEND)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


LEGEND3 = "id position a0 a1\n1:10_A_G 10 A G\n1:20_C_T 20 C T\n2:5_G_A 5 G A\n"


def test_shipped_panel_shape_and_individuals(panel) -> None:
    assert panel.haplotypes.shape == (5008, 805)
    assert set(np.unique(panel.haplotypes)) == {0, 1}
    assert len(np.unique(panel.individuals)) == 2504
    assert panel.names[0].endswith("_A") and panel.individuals[0] == panel.individuals[1]
    assert panel.legend.chrom[0] == "1" and panel.legend.a0[0] == "C" and panel.legend.a1[0] == "T"
    assert len(set(panel.legend.chrom)) == 22


def test_hapt_reader_values(tmp_path: Path) -> None:
    names, haps = read_hapt(_write(tmp_path / "x.hapt", "Real p_A 0 1 1\nReal p_B 1 0 0\n"))
    assert names.tolist() == ["p_A", "p_B"]
    assert haps.tolist() == [[0, 1, 1], [1, 0, 0]]
    assert individuals_of(names).tolist() == ["p", "p"]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("Real a_A 0 1 1\nReal a_B 1 0\n", r"line 2: haplotype a_B has 2 SNPs but line 1 has 3: ragged"),
        ("Real a_A 0 1 1\nReal a_B 1 2 0\n", r"line 2: haplotype a_B, SNP column 2: symbol '2'"),
        ("Real a_A 0 1 1\nReal a_B 1 . 0\n", r"SNP column 2: symbol '\.'"),
        ("Real a_A 0 10 1\n", r"line 1: haplotype a_A, SNP column 2: symbol '10'"),
        ("Real a_A\n", "line 1: no genotypes"),
        ("", "no haplotype"),
    ],
)
def test_hapt_bad_input(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        read_hapt(_write(tmp_path / "bad.hapt", text))


def test_legend_disagreeing_with_haplotypes(tmp_path: Path) -> None:
    hapt = _write(tmp_path / "x.hapt", "Real p_A 0 1\nReal p_B 1 0\n")
    with pytest.raises(ValueError, match="has 2 SNP columns but the legend .* lists 3 SNPs"):
        load_hapt_panel(hapt, _write(tmp_path / "x.legend", LEGEND3))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("snp pos ref alt\n", "line 1: must be the header"),
        ("id position a0 a1\n1:1 1 A\n", "line 2: 3 fields"),
        ("id position a0 a1\n1:1 x A G\n", "line 2, column 'position': 'x'"),
        ("id position a0 a1\n1:1 1 A A\n", r"SNP 0 \(1:1\) has alleles a0='A' a1='A'"),
        ("id position a0 a1\n1:1 1 A GT\n", "two different single nucleotides"),
        ("id position a0 a1\n", "lists no SNP"),
    ],
)
def test_legend_bad_input(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        read_legend(_write(tmp_path / "bad.legend", text))


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.hapt"):
        read_hapt(tmp_path / "nope.hapt")


VCF_HEAD = (
    "##fileformat=VCFv4.2\n##FORMAT=<ID=GT,Number=1,Type=String,Description=\"Genotype\">\n"
    "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\ts1\ts2\n"
)


def test_vcf_reader(tmp_path: Path) -> None:
    body = "1\t100\trs1\tA\tG\t.\t.\t.\tGT\t0|1\t1|1\n2\t7\t.\tc\tT\t.\t.\t.\tGT\t1|0\t0|0\n"
    vcf = _write(tmp_path / "x.vcf", VCF_HEAD + body)
    p = load_vcf_panel(vcf)
    assert p.names.tolist() == ["s1_A", "s1_B", "s2_A", "s2_B"]
    assert p.individuals.tolist() == ["s1", "s1", "s2", "s2"]
    assert p.haplotypes.T.tolist() == [[0, 1, 1, 1], [1, 0, 0, 0]]
    assert p.legend.a0.tolist() == ["A", "C"] and p.legend.a1.tolist() == ["G", "T"]
    assert p.legend.ids.tolist() == ["rs1", "2:7_C_T"] and p.legend.chrom.tolist() == ["1", "2"]


@pytest.mark.parametrize(
    ("call", "match"),
    [("0/1", r"variant 2 \(CHROM 1 POS 200\), sample s2: GT '0/1' is unphased"),
     (".|.", "not a phased biallelic call"),
     ("0|2", "not a phased biallelic call")],
)
def test_vcf_without_phased_genotypes(tmp_path: Path, call: str, match: str) -> None:
    body = f"1\t100\trs1\tA\tG\t.\t.\t.\tGT\t0|1\t1|1\n1\t200\trs2\tC\tT\t.\t.\t.\tGT\t0|0\t{call}\n"
    with pytest.raises(ValueError, match=match):
        load_vcf_panel(_write(tmp_path / "x.vcf", VCF_HEAD + body))


@pytest.mark.filterwarnings("ignore:'GT' FORMAT header not found")
def test_vcf_without_gt_field(tmp_path: Path) -> None:
    head = "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
    with pytest.raises(ValueError, match="no variant with a GT field"):
        load_vcf_panel(_write(tmp_path / "x.vcf", head + "1\t100\trs1\tA\tG\t.\t.\t.\n"))


def test_writers_round_trip(tmp_path: Path, panel) -> None:
    sub = panel.rows(np.arange(7)).first_snps(40)  # odd count: the last VCF sample is haploid
    write_hapt(tmp_path / "a.hapt.gz", sub.haplotypes, sub.names)
    write_legend(tmp_path / "a.legend", sub.legend)
    back = load_hapt_panel(tmp_path / "a.hapt.gz", tmp_path / "a.legend")
    np.testing.assert_array_equal(back.haplotypes, sub.haplotypes)
    assert back.legend.ids.tolist() == sub.legend.ids.tolist()
    write_vcf(tmp_path / "a.vcf.gz", sub.haplotypes[:6], sub.legend)
    vcf = load_vcf_panel(tmp_path / "a.vcf.gz")
    np.testing.assert_array_equal(vcf.haplotypes, sub.haplotypes[:6])
    write_vcf(tmp_path / "odd.vcf", sub.haplotypes, sub.legend)
    assert "\t1\n" in (tmp_path / "odd.vcf").read_text() or "\t0\n" in (tmp_path / "odd.vcf").read_text()


def test_split_keeps_individuals_together(panel) -> None:
    splits = split_individuals(panel.individuals, 0.1, 0.2, seed=3)
    sides = [set(panel.individuals[i]) for i in splits.values()]
    assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
    assert sum(len(i) for i in splits.values()) == len(panel.names)
    assert len(sides[2]) == round(0.2 * 2504) and len(sides[1]) == round(0.1 * 2504)
    again = split_individuals(panel.individuals, 0.1, 0.2, seed=3)
    other = split_individuals(panel.individuals, 0.1, 0.2, seed=4)
    assert all(np.array_equal(splits[s], again[s]) for s in splits)
    assert not np.array_equal(splits["test"], other["test"])


def test_shipped_panel_split_is_pinned(panel) -> None:
    """Individuals per split of the shipped panel, as before the split rule was shared."""
    got = {s: (len(i), hashlib.sha256(i.astype(np.int64).tobytes()).hexdigest()[:16])
           for s, i in split_individuals(panel.individuals, 0.1, 0.2, seed=0).items()}  # fmt: skip
    assert got == {"train": (3506, "1d5c094947c4307c"), "val": (500, "59cc1bad82169c9c"), "test": (1002, "48e8dbf48b9770d4")}


@pytest.mark.parametrize(("val", "test"), [(0.5, 0.5), (0.1, 0.0), (-0.1, 0.2)])
def test_split_bad_fractions(val: float, test: float) -> None:
    with pytest.raises(ValueError, match="fraction"):
        split_individuals(np.array(["a", "b", "c"]), val, test, seed=0)


def test_sentence_round_trip(panel) -> None:
    ids = encode_haplotypes(panel.haplotypes[:50], panel.legend, TOK)
    assert ids.shape == (50, 136)  # <R> + 134 6-mers + one 1-mer
    assert (ids[:, 0] == TOK.species_id("human")).all()
    first = TOK.decode_dna(ids[0, 1:2])
    want = "".join(panel.legend.a1[j] if panel.haplotypes[0, j] else panel.legend.a0[j] for j in range(6))
    assert first == want
    haps, invalid = decode_haplotypes(ids[:, 1:], panel.legend, TOK)
    np.testing.assert_array_equal(haps, panel.haplotypes[:50])
    assert not invalid.any()


def test_decode_flags_invalid_alleles(panel) -> None:
    legend = panel.legend[:6]
    ids = TOK.encode_dna("".join(legend.a0[:5]) + "N")[None]  # N is neither allele of SNP 5
    haps, invalid = decode_haplotypes(ids, legend, TOK)
    assert invalid.tolist() == [[False] * 5 + [True]]
    _, invalid = decode_haplotypes(ids, panel.legend[:7], TOK)  # 6 nucleotides for 7 SNPs: the whole row
    assert invalid.all()


def test_collate_shifts_labels() -> None:
    batch = collate_sentences([torch.tensor([21, 5, 6]), torch.tensor([21, 7, 8])])
    assert batch["labels"].tolist() == [[5, 6, -100], [7, 8, -100]]
    assert batch["attention_mask"].all()


def _module(**kw) -> GenomesDataModule:
    args = {"tokenizer": TOK, "block_size": 64, "hapt": str(HAPT), "legend": str(LEGEND), "batch_size": 4} | kw
    return GenomesDataModule(**args)


def test_datamodule_batches_and_splits() -> None:
    dm = _module(max_snps=60)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == (4, 11)  # <R> + 10 6-mers
    assert (batch["labels"][:, :-1] == batch["input_ids"][:, 1:]).all()
    assert len(dm.haplotypes("test")) == len(dm.splits["test"]) > 0
    assert set(dm.panel.individuals[dm.splits["test"]]).isdisjoint(dm.panel.individuals[dm.splits["train"]])


def test_datamodule_refuses_short_block_and_bad_batch() -> None:
    with pytest.raises(ValueError, match="805 SNPs make sentences of 136 tokens, more than block_size=64"):
        _module().setup("fit")
    with pytest.raises(ValueError, match="give hapt= and legend=, or vcf="):
        GenomesDataModule(TOK, 64)
    with pytest.raises(ValueError, match="max_snps=900"):
        _module(max_snps=900).setup("fit")


def test_datamodule_checks_its_files_and_fractions_when_built(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match=r"^legend=\S*nope\.legend is not a file$"):
        _module(legend=str(tmp_path / "nope.legend"))
    with pytest.raises(MissingFileError, match=r"^vcf=\S*nope\.vcf is not a file$"):
        _module(vcf=str(tmp_path / "nope.vcf"))  # a VCF replaces hapt + legend: only it is checked
    with pytest.raises(ValueError, match="val_fraction=0.5, test_fraction=0.5"):
        _module(val_fraction=0.5, test_fraction=0.5)


def test_gz_and_plain_give_the_same_panel(tmp_path: Path) -> None:
    plain = tmp_path / "x.hapt"
    with gzip.open(HAPT, "rt") as fh:
        plain.write_text("".join(fh.readline() for _ in range(4)))
    names, haps = read_hapt(plain)
    assert haps.shape == (4, 805) and names[0] == "split1_GENERATEDSAMPLE0_A"


def test_shipped_dense_panel() -> None:
    dense = load_hapt_panel(resource_path("genomes/dense.hapt.gz"), resource_path("genomes/dense.legend.gz"))
    assert dense.haplotypes.shape == (900, 10_000)
    assert len(np.unique(dense.individuals)) == 450 and set(dense.legend.chrom) == {"22"}
    assert (np.diff(dense.legend.position) > 0).all()
    maf = np.minimum(dense.haplotypes.mean(0), 1 - dense.haplotypes.mean(0))
    assert maf.min() >= 0.01  # the simulation kept common SNPs only
    assert encode_haplotypes(dense.haplotypes[:2], dense.legend, TOK).shape == (2, 1668)
