"""Tests of the DNA language: reference ids, layout vs an independent enumeration, grammar, errors."""

from __future__ import annotations

import gzip
import itertools
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dnagpt.tokenizer import SPECIES_TOKENS, Encoded, KmerTokenizer
from dnagpt.utils.errors import ConfigError, InputError

BUNDLED = Path(__file__).resolve().parents[1] / "dnagpt" / "resources" / "bundled"
# The released DNAGPT's reserved tokens, ids 0..33, written out by hand (not imported from the tokenizer).
RELEASE_SPECIALS = (
    "<0> <1> <2> <3> <4> <5> <6> <7> <8> <9> <+> <-> <*> </> <=> <&> <|> <!> <M> <B> <P> "
    "<R> <I> <K> <L> <O> <Q> <S> <U> <V> <W> <Y> <X> <Z>"
).split()
IUPAC = "RYSWKMBDHV"
DNA_ALPHABET = "ACGTN" + IUPAC + "acgtn" + IUPAC.lower()


@pytest.fixture(scope="module")
def dyn() -> KmerTokenizer:
    return KmerTokenizer("dynamic")


@pytest.fixture(scope="module")
def fixed() -> KmerTokenizer:
    return KmerTokenizer("fixed")


def reference_vocab(vocab: str, k: int) -> list[str]:
    """The released vocabulary by straightforward enumeration: the reserved tokens, then k-mers over N A G C T (N=0 ...
    T=4, most significant base first), 1..k-mers (dynamic) or k-mers only (fixed)."""
    lengths = range(1, k + 1) if vocab == "dynamic" else [k]
    return RELEASE_SPECIALS + ["".join(p) for n in lengths for p in itertools.product("NAGCT", repeat=n)]


def naive_clean(seq: str) -> str:
    return seq.upper().translate(str.maketrans(IUPAC, "N" * len(IUPAC)))


def naive_encode(seq: str, vocab: list[str], k: int) -> list[int]:
    """Dict lookup per non-overlapping k-mer, tail kept as a shorter k-mer."""
    index = {t: i for i, t in enumerate(vocab)}
    clean = naive_clean(seq)
    return [index[clean[i : i + k]] for i in range(0, len(clean), k)]


# ----- reference facts -----
def test_reference_examples(dyn: KmerTokenizer, fixed: KmerTokenizer) -> None:
    assert dyn.encode("<R>ACGTAC<=><R>").ids.tolist() == [21, 9297, 14, 21]
    assert dyn.encode_dna("ACGTNNA").tolist() == [9289, 35]
    assert [fixed.token_id(t) for t in ("NNNNNN", "AAAAAA", "TTTTTT")] == [34, 3940, 15658]
    assert [dyn.token_id(b) for b in "NAGCT"] == [34, 35, 36, 37, 38]
    assert [dyn.token_id(t) for t in ("<+>", "<=>", "<M>", "<P>")] == [10, 14, 18, 20]
    assert [dyn.token_id(t) for t in "<R> <I> <K> <L> <O> <Q> <S> <U> <V>".split()] == list(range(21, 30))


@pytest.mark.parametrize(
    ("n", "first", "last"),
    [(1, 34, 38), (2, 39, 63), (3, 64, 188), (4, 189, 813), (5, 814, 3938), (6, 3939, 19563)],
)
def test_dynamic_blocks(dyn: KmerTokenizer, n: int, first: int, last: int) -> None:
    assert dyn.token_id("N" * n) == first
    assert dyn.token_id("T" * n) == last


def test_vocab_sizes_and_named_ids(dyn: KmerTokenizer, fixed: KmerTokenizer) -> None:
    assert (len(dyn), len(fixed)) == (19564, 15659)
    assert (dyn.pad_id, dyn.number_id, dyn.plus_id, dyn.eq_id) == (20, 18, 10, 14)
    assert (dyn.true_id, dyn.false_id) == (dyn.token_id("N"), dyn.token_id("A")) == (34, 35)
    assert (fixed.true_id, fixed.false_id) == (34, 3940)


@pytest.mark.parametrize("vocab", ["dynamic", "fixed"])
@pytest.mark.parametrize("k", [3, 6])
def test_layout_matches_enumeration(vocab: str, k: int) -> None:
    tok = KmerTokenizer(vocab, k=k)  # type: ignore[arg-type]
    ref = reference_vocab(vocab, k)
    assert len(tok) == len(ref)
    assert [tok.id_to_token(i) for i in range(len(ref))] == ref
    assert [tok.token_id(t) for t in ref] == list(range(len(ref)))
    kmers = [t for t in ref if len(t) == k and not t.startswith("<")]
    ids = tok.encode_dna("".join(kmers))
    assert ids.tolist() == [ref.index(kmers[0]) + i for i in range(len(kmers))]
    assert tok.decode_dna(ids) == "".join(kmers)


# ----- DNA encoding -----
@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=DNA_ALPHABET, min_size=1, max_size=60))
def test_dynamic_roundtrip_and_chunking(seq: str) -> None:
    tok = KmerTokenizer()
    ids = tok.encode_dna(seq)
    assert ids.dtype == np.int64
    assert len(ids) == math.ceil(len(seq) / 6)
    assert tok.decode_dna(ids) == naive_clean(seq)
    assert ids.tolist() == naive_encode(seq, reference_vocab("dynamic", 6), 6)
    assert bytes(tok.clean(seq)).decode() == naive_clean(seq)


@settings(max_examples=50, deadline=None)
@given(st.text(alphabet=DNA_ALPHABET, min_size=1, max_size=10).map(lambda s: s * 6))
def test_fixed_roundtrip(seq: str) -> None:
    tok = KmerTokenizer("fixed")
    ids = tok.encode_dna(seq)
    assert tok.decode_dna(ids) == naive_clean(seq)
    assert ids.tolist() == [tok.token_id(naive_clean(seq)[i : i + 6]) for i in range(0, len(seq), 6)]


def test_input_types_agree(dyn: KmerTokenizer) -> None:
    seq = "acgtRYnnACGTA"
    expected = dyn.encode_dna(seq)
    for variant in (seq.encode(), bytearray(seq.encode()), np.frombuffer(seq.encode(), dtype=np.uint8)):
        np.testing.assert_array_equal(dyn.encode_dna(variant), expected)
    assert dyn.clean(seq).dtype == np.uint8


def test_fixed_tail_policy() -> None:
    with pytest.raises(ValueError, match="leaves a 4 bp tail"):
        KmerTokenizer("fixed").encode_dna("ACGTACGTAC")
    assert KmerTokenizer("fixed", fixed_tail="drop").encode_dna("ACGTACGTAC").tolist() == [5358 + 34]
    with pytest.raises(ValueError, match="run of 2 bp at position 12 leaves a 2 bp tail"):
        KmerTokenizer("fixed").encode("<R>ACGTAC<=>AC")


def test_real_sequence_matches_naive(dyn: KmerTokenizer) -> None:
    """1.5 Mb of soft-masked Arabidopsis with IUPAC codes, against the dict-per-k-mer tokenizer."""
    with gzip.open(BUNDLED / "arabidopsis.fa.gz", "rt") as fh:
        seq = "".join(line.strip() for line in fh if not line.startswith(">"))
    ids = dyn.encode_dna(seq)
    assert ids.tolist() == naive_encode(seq, reference_vocab("dynamic", 6), 6)
    assert dyn.decode_dna(ids) == naive_clean(seq)


@pytest.mark.parametrize(
    ("seq", "pattern"),
    [
        ("ACGU", r"invalid DNA character 'U' at position 3"),
        ("AC GT", r"invalid DNA character ' ' at position 2"),
        ("ACGTé", r"invalid DNA character 'é' at position 4"),
        ("", r"empty DNA sequence"),
    ],
)
def test_bad_dna(dyn: KmerTokenizer, seq: str, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        dyn.encode_dna(seq)
    with pytest.raises(ValueError, match=pattern):
        dyn.clean(seq)


def test_bad_bytes_input(dyn: KmerTokenizer) -> None:
    with pytest.raises(ValueError, match="'U' at position 3"):
        dyn.encode_dna(np.frombuffer(b"ACGU", dtype=np.uint8))
    with pytest.raises(ValueError, match="at position 2"):
        dyn.encode_dna(b"AC\xffGT")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(34, 19563), min_size=1, max_size=20))
def test_decode_dna_any_ids(ids: list[int]) -> None:
    tok = KmerTokenizer()
    assert tok.decode_dna(ids) == "".join(tok.id_to_token(i) for i in ids)


def test_bad_dna_type(dyn: KmerTokenizer) -> None:
    with pytest.raises(TypeError, match="list"):
        dyn.encode_dna(list("ACGT"))  # type: ignore[arg-type]


def test_decode_dna_rejects_non_dna(dyn: KmerTokenizer) -> None:
    with pytest.raises(ValueError, match=r"id 21 at position 1 is <R>, not a DNA token"):
        dyn.decode_dna([9297, 21])
    with pytest.raises(ValueError, match="id 19564 at position 0 is outside the vocabulary"):
        dyn.decode_dna([19564])
    with pytest.raises(ValueError, match="id -1 at position 0"):
        dyn.decode_dna([-1])


# ----- special tokens -----
def test_reserved_tokens_never_split(dyn: KmerTokenizer) -> None:
    aliases = [f"<{name.capitalize()}>" for name in SPECIES_TOKENS]
    for tag in RELEASE_SPECIALS + aliases:
        i = dyn.token_id(tag)
        assert dyn.encode(tag).ids.tolist() == [i]
        assert dyn.encode(f"R{tag}R").ids.tolist() == [34, i, 34]  # IUPAC R next to the tag stays DNA
    assert dyn.encode("ACG<P>T").ids.tolist() == [dyn.token_id("ACG"), 20, dyn.token_id("T")]


def test_species(dyn: KmerTokenizer) -> None:
    expected = {"human": "<R>", "mouse": "<I>", "cow": "<K>", "zebrafish": "<L>", "fruitfly": "<O>",
                "worm": "<Q>", "arabidopsis": "<S>", "yeast": "<U>", "ecoli": "<V>"}  # fmt: skip
    assert dyn.species_names == tuple(expected) == tuple(SPECIES_TOKENS)
    for name, tag in expected.items():
        assert dyn.species_id(name) == dyn.species_id(name.upper()) == dyn.token_id(tag)
        assert dyn.token_id(f"<{name.capitalize()}>") == dyn.token_id(tag)
    aliases = {"Bovine": "cow", "c_elegans": "worm", "CElegans": "worm", "Drosophila": "fruitfly",
               "fly": "fruitfly", "athaliana": "arabidopsis", "A_thaliana": "arabidopsis",
               "scerevisiae": "yeast", "E_coli": "ecoli", "Homo_Sapiens": "human",
               "mus_musculus": "mouse"}  # fmt: skip
    for alias, name in aliases.items():
        assert dyn.species_id(alias) == dyn.species_id(name)
    with pytest.raises(ValueError, match=r"unknown species 'dog'.*human.*bovine"):
        dyn.species_id("dog")


def test_token_lookup_errors(dyn: KmerTokenizer, fixed: KmerTokenizer) -> None:
    for bad in ("acgtac", "<Dog>", "ACGTACG", "", "U"):
        with pytest.raises(ValueError, match="unknown token"):
            dyn.token_id(bad)
    with pytest.raises(ValueError, match="unknown token 'N'"):
        fixed.token_id("N")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        dyn.id_to_token(len(dyn))
    assert dyn.id_to_token(21) == "<R>"


# ----- prompt grammar -----
def test_grammar_examples(dyn: KmerTokenizer) -> None:
    e = dyn.encode("<R>ACGT<+><M>0.1,-2.5e-3,7<=><M>")
    assert e.ids.tolist() == [21, dyn.token_id("ACGT"), 10, 18, 14, 18]
    np.testing.assert_array_equal(e.values, np.array([0.1, -2.5e-3, 7], dtype=np.float32))
    assert e.value_pos.tolist() == [3, 3, 3]
    assert e.n_positions == 9
    assert dyn.decode(e.ids, e.values, e.value_pos) == "<R>ACGT<+><M>0.1,-0.0025,7<=><M>"
    assert dyn.encode("<Human>ACGT<+><M> 0.1 , -2.5e-3,7 <=><M>") == e
    assert dyn.decode(dyn.encode("<R>acgtRY").ids) == "<R>ACGTNN"


def fmt(v: float) -> str:
    return np.format_float_positional(np.float32(v), unique=True, trim="-")


tags = st.sampled_from(RELEASE_SPECIALS)
f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
dna_runs = st.text(alphabet="ACGTN", min_size=1, max_size=20)


@st.composite
def sentences(draw: st.DrawFn, fixed_k: int | None = None) -> tuple[str, list[float]]:
    """A canonical sentence: tags, each followed by optional values (after <M>) and an optional DNA run."""
    parts, values = [], []
    for tag in draw(st.lists(tags, min_size=1, max_size=8)):
        parts.append(tag)
        if tag == "<M>" and (vals := draw(st.lists(f32, max_size=3))):
            values += vals
            parts.append(",".join(fmt(v) for v in vals))
        if draw(st.booleans()):
            run = draw(dna_runs)
            parts.append(run * fixed_k if fixed_k else run)
    return "".join(parts), values


@settings(max_examples=150, deadline=None)
@given(sentences())
def test_grammar_roundtrip(sentence: tuple[str, list[float]]) -> None:
    tok = KmerTokenizer()
    text, values = sentence
    e = tok.encode(text)
    np.testing.assert_array_equal(e.values, np.array(values, dtype=np.float32))
    assert (e.ids[e.value_pos] == tok.number_id).all()
    assert np.all(np.diff(e.value_pos) >= 0)
    assert tok.decode(e.ids, e.values, e.value_pos) == text
    assert tok.encode(tok.decode(e.ids, e.values, e.value_pos)) == e


@settings(max_examples=50, deadline=None)
@given(sentences(fixed_k=6))
def test_grammar_roundtrip_fixed(sentence: tuple[str, list[float]]) -> None:
    tok = KmerTokenizer("fixed")
    e = tok.encode(sentence[0])
    assert tok.decode(e.ids, e.values, e.value_pos) == sentence[0]


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("<R>ACGT<=>0.5", r"value without <M> at position 10"),
        ("<R>-1", r"value without <M> at position 3"),
        ("<R>AC-GT", r"invalid DNA character '-' at position 5"),
        ("<R>AC.5", r"value without <M> at position 5"),
        ("<R>AC<Foo>", r"unknown tag '<Foo>' at position 5"),
        ("<R>AC<M", r"unterminated tag '<M' at position 5"),
        ("<M>1e39", r"value '1e39' at position 3 is outside the float32 range"),
        ("<R>ACXT", r"invalid DNA character 'X' at position 5"),
        ("", r"empty text"),
    ],
)
def test_grammar_errors(dyn: KmerTokenizer, text: str, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        dyn.encode(text)


@pytest.mark.parametrize("value", ["NaN", "nan", "-nan", "Infinity", "inf", "-inf", "+Inf", "INF"])
def test_non_finite_values_are_refused(dyn: KmerTokenizer, value: str) -> None:
    """Every spelling of a non-finite number after <M> is refused by one rule, never read as DNA (``NaN`` is N-A-N)."""
    rule = "the value after <M> must be a finite number"
    for text, pos in ((f"<R><M>{value}<=>", 6), (f"<M>{value}", 3), (f"<M>0.5, {value}", 8)):
        with pytest.raises(InputError, match=rf"value '{re.escape(value)}' at position {pos} is not finite; {rule}"):
            dyn.encode(text)


@pytest.mark.parametrize("value", ["1e999", "-1e39", "3.5e38"])
def test_overflowing_values_are_refused(dyn: KmerTokenizer, value: str) -> None:
    rule = "the value after <M> must be a finite number"
    with pytest.raises(InputError, match=rf"value '{value}' at position 3 is outside the float32 range; {rule}"):
        dyn.encode(f"<M>{value}")


@pytest.mark.parametrize(("value", "expected"), [("1e-3", 1e-3), ("-2", -2.0), (".5", 0.5), ("+7.", 7.0)])
def test_finite_values_are_accepted(dyn: KmerTokenizer, value: str, expected: float) -> None:
    e = dyn.encode(f"<R><M>{value}<=>")
    assert e.ids.tolist() == [21, 18, 14] and e.value_pos.tolist() == [1]
    np.testing.assert_array_equal(e.values, np.array([expected], dtype=np.float32))


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("<M>1.2.3", r"value '1.2.3' at position 3 is not a number"),
        ("<M>1e<=>", r"value '1e' at position 3 is not a number"),
        ("<M>0x1F", r"value '0x1F' at position 3 is not a number"),
        ("<M>-", r"value '-' at position 3 is not a number"),
        ("<M>.", r"value '.' at position 3 is not a number"),
        ("<M>1,x", r"value 'x' at position 5 is not a number"),
        ("<M>1,", r"no value after the ',' at position 4"),
        ("<M>1, <=>", r"no value after the ',' at position 4"),
    ],
)
def test_unparsable_values_are_refused(dyn: KmerTokenizer, text: str, pattern: str) -> None:
    with pytest.raises(InputError, match=f"{pattern}; the value after <M> must be a finite number"):
        dyn.encode(text)


def test_dna_after_m_stays_dna(dyn: KmerTokenizer) -> None:
    """Upper-case NAN filling the gap is the DNA 3-mer decode writes; a longer word or a value then DNA stay DNA."""
    nan_kmer, acgt = dyn.token_id("NAN"), dyn.token_id("ACGT")
    for ids in ([18, nan_kmer], [18, nan_kmer, 14]):
        e = dyn.encode(dyn.decode(ids))
        assert e.ids.tolist() == ids and not len(e.values)
    assert dyn.encode("<M>NaNACGT").ids.tolist() == [18, *dyn.encode_dna("NANACGT").tolist()]  # soft-masked DNA
    e = dyn.encode("<M>0.5ACGT")
    assert e.ids.tolist() == [18, acgt] and e.values.tolist() == [0.5]
    assert dyn.encode(dyn.decode(e.ids, e.values, e.value_pos)) == e


def test_errors_are_typed(dyn: KmerTokenizer) -> None:
    """Bad text is an InputError, a bad tokenizer setting a ConfigError (both still ValueErrors)."""
    with pytest.raises(InputError, match="invalid DNA character"):
        dyn.encode("<R>ACGU")
    with pytest.raises(ConfigError, match="vocab must be"):
        KmerTokenizer("bpe")  # type: ignore[arg-type]
    assert issubclass(InputError, ValueError) and issubclass(ConfigError, ValueError)


def test_decode_errors(dyn: KmerTokenizer) -> None:
    with pytest.raises(ValueError, match="1 values but 0 value_pos"):
        dyn.decode([18], [1.0], [])
    with pytest.raises(ValueError, match="position 0, which holds id 21, not <M>"):
        dyn.decode([21, 18], [1.0], [0])
    with pytest.raises(ValueError, match="non-decreasing"):
        dyn.decode([18, 18], [1.0, 2.0], [1, 0])
    with pytest.raises(ValueError, match="not finite"):
        dyn.decode([18], [float("nan")], [0])
    with pytest.raises(ValueError, match="id 99999 at position 1"):
        dyn.decode([21, 99999])
    with pytest.raises(ValueError, match="at least one id"):
        dyn.decode([])


def test_encoded_validation() -> None:
    with pytest.raises(ValueError, match="2 values but 1 value_pos"):
        Encoded(np.array([18]), np.array([1.0, 2.0]), np.array([0]))
    assert Encoded([21], [], []) != Encoded([22], [], [])


# ----- batching -----
def test_pad_batch(dyn: KmerTokenizer) -> None:
    items = [dyn.encode("<R>ACGTACGT<+><M>1,2<=><M>"), dyn.encode("<I>AC")]
    batch = dyn.pad_batch(items)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (2, 7)
    assert batch["input_ids"].dtype == np.int64 and batch["attention_mask"].dtype == bool
    assert batch["input_ids"][1].tolist() == [22, dyn.token_id("AC")] + [dyn.pad_id] * 5
    assert batch["attention_mask"].sum(axis=1).tolist() == [7, 2]
    assert batch["values"].tolist() == [[1.0, 2.0], [0.0, 0.0]] and batch["values"].dtype == np.float32
    assert batch["value_pos"].tolist() == [[4, 4], [0, 0]]
    assert batch["value_mask"].tolist() == [[True, True], [False, False]]
    assert dyn.pad_batch(items, block_size=9)["input_ids"].shape == (2, 7)
    with pytest.raises(ValueError, match="item 0 has n_positions=9 > block_size=8"):
        dyn.pad_batch(items, block_size=8)
    with pytest.raises(ValueError, match="at least one item"):
        dyn.pad_batch([])


# ----- identity and serialisation -----
def test_dict_roundtrip_and_equality(dyn: KmerTokenizer, fixed: KmerTokenizer) -> None:
    for tok in (dyn, fixed, KmerTokenizer("fixed", k=4, fixed_tail="drop")):
        spec = json.loads(json.dumps(tok.to_dict()))
        assert spec["version"] == 1 and spec["vocab_size"] == len(tok)
        assert KmerTokenizer.from_dict(spec) == tok
        assert hash(KmerTokenizer.from_dict(spec)) == hash(tok)
    assert dyn != fixed
    assert dyn != KmerTokenizer(k=5)
    assert fixed != KmerTokenizer("fixed", fixed_tail="drop")
    with pytest.raises(ValueError, match="version 2"):
        KmerTokenizer.from_dict({**dyn.to_dict(), "version": 2})
    with pytest.raises(ValueError, match="vocab_size=15659"):
        KmerTokenizer.from_dict({**dyn.to_dict(), "vocab_size": 15659})
    with pytest.raises(ValueError, match="lacks"):
        KmerTokenizer.from_dict({"version": 1})


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"vocab": "bpe"}, "vocab must be"),
        ({"k": 0}, "k must be"),
        ({"fixed_tail": "pad"}, "fixed_tail must be"),
    ],
)
def test_constructor_errors(kwargs: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        KmerTokenizer(**kwargs)
