"""The DNA language of DNAGPT: non-overlapping k-mer words plus named special tokens (numpy only).

The vocabulary matches the official DNAGPT release id for id, so released checkpoints load and behave. Ids 0-33
are the release's reserved tokens, written ``<t>`` in text: ``<0>``-``<9>``, the connectors ``<+> <-> <*> </> <=> <&>
<|> <!>`` (10-17), ``<M>`` (18, the number token), ``<B>``, ``<P>`` (20, padding), the species tokens ``<R>``-``<V>``
(21-29) and ``<W> <Y> <X> <Z>``. Other layers take these ids from here (``number_id``, ``pad_id``,
:data:`IGNORE_INDEX`), never as literals. Then come k-mers over ``N A G C T`` (in that order, most significant base
first):

* ``vocab="fixed"``: k-mers only, ``id = 34 + base5(kmer)``; 15,659 ids for k=6 (4096-token human model).
* ``vocab="dynamic"``: 1-mers, then 2-mers, ... k-mers, ``id = 34 + sum(5**j for 1 <= j < n) + base5(kmer)``
  for an n-mer; 19,564 ids for k=6 (the 512-token models).

A DNA run is cut into non-overlapping k-mers from the left. The tail is a shorter k-mer in the dynamic
vocabulary; the fixed vocabulary has no such word, so ``fixed_tail="error"`` (default) raises an InputError
naming the tail length and ``"drop"`` drops the tail.

Species/instruction tokens. The release does not say which letter is which species; we define it:

=============  =====  =================  ==========================================
species        tag    alias tag          also accepted by ``species_id()``
=============  =====  =================  ==========================================
human          <R>    <Human>            homo_sapiens
mouse          <I>    <Mouse>            mus_musculus
cow            <K>    <Cow>              bovine
zebrafish      <L>    <Zebrafish>
fruitfly       <O>    <Fruitfly>         drosophila, fly
worm           <Q>    <Worm>             c_elegans, celegans
arabidopsis    <S>    <Arabidopsis>      athaliana, a_thaliana
yeast          <U>    <Yeast>            scerevisiae
ecoli          <V>    <Ecoli>            e_coli
=============  =====  =================  ==========================================

Classification answers: the release answers "true" with the 1-mer ``N`` and "false" with ``A``. The fixed
vocabulary has no 1-mers, so there ``true_id``/``false_id`` are ``NNNNNN``/``AAAAAA``.

Cleaning: soft-masked lowercase is upper-cased and IUPAC ambiguity codes (``RYSWKMBDHV``) become ``N``.
Anything else, ``U`` included (this is a DNA model), is an InputError (a ValueError) naming the character and its
0-based position: the release silently maps unknown pieces to id 0 (which is ``<0>``); we never do.

Prompt grammar (``encode``/``decode``): special tokens in angle brackets (canonical or alias), DNA runs
between them (each run restarts k-mer chunking, as in the release), and one or more comma-separated
numbers directly after a ``<M>`` (whitespace allowed around them; nowhere else). ``decode`` writes
canonical tags and the shortest string that round-trips each float32, so ``decode(encode(text)) == text``
for canonical text and ``encode(decode(e)) == e``.

Values follow one rule: what comes after a ``<M>`` and starts like a number (a sign, a digit or a point) or spells a
non-finite one (``nan``, ``inf``, ``infinity`` in any case, signed or not, as a whole word) is a value, and each
value must be a finite float32 number; anything else there (``NaN``, ``-inf``, ``1e999``, ``1.2.3``, a dangling
comma) is an InputError saying so. So ``<M>nan`` is refused, not read as the soft-masked DNA ``NAN``. The one
exception is an upper-case ``NAN`` filling the whole gap up to the next tag: that is the DNA 3-mer ``decode`` writes,
kept so that ``encode(decode(e)) == e``. A value may be followed directly by a DNA run (``<M>0.5ACGT``).

>>> tok = KmerTokenizer()
>>> tok.encode("<R>ACGTAC<=><R>").ids.tolist()
[21, 9297, 14, 21]
>>> tok.encode_dna("ACGTNNA").tolist()
[9289, 35]
>>> e = tok.encode("<Human>ATGTCA<+><M>-0.3484, 1e-3<=><M>")
>>> e.ids.tolist(), e.value_pos.tolist(), e.n_positions
([21, 9930, 10, 18, 14, 18], [3, 3], 8)
>>> tok.decode(e.ids, e.values, e.value_pos)
'<R>ATGTCA<+><M>-0.3484,0.001<=><M>'
>>> fixed = KmerTokenizer("fixed")
>>> len(fixed), fixed.token_id("NNNNNN"), fixed.token_id("AAAAAA"), fixed.token_id("TTTTTT")
(15659, 34, 3940, 15658)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from dnagpt.utils.errors import CheckpointError, ConfigError, InputError

__all__ = ["IGNORE_INDEX", "SPECIES_TOKENS", "Encoded", "KmerTokenizer"]

IGNORE_INDEX = -100  # label of a position without a next-token target (torch cross_entropy's default ignore_index)
BASES = "NAGCT"  # code order of the release: N=0, A=1, G=2, C=3, T=4
_IUPAC = "RYSWKMBDHV"
_FORMAT_VERSION = 1

# Reserved tokens, ids 0-33 in the release's order.
SPECIALS: tuple[str, ...] = (
    *(f"<{d}>" for d in range(10)),
    "<+>", "<->", "<*>", "</>", "<=>", "<&>", "<|>", "<!>",
    "<M>", "<B>", "<P>",
    "<R>", "<I>", "<K>", "<L>", "<O>", "<Q>", "<S>", "<U>", "<V>",
    "<W>", "<Y>", "<X>", "<Z>",
)  # fmt: skip

SPECIES_TOKENS: dict[str, str] = {
    "human": "<R>", "mouse": "<I>", "cow": "<K>", "zebrafish": "<L>", "fruitfly": "<O>",
    "worm": "<Q>", "arabidopsis": "<S>", "yeast": "<U>", "ecoli": "<V>",
}  # fmt: skip
# The one alias table: extra species names -> canonical name.
_SPECIES_ALIASES: dict[str, str] = {
    "homo_sapiens": "human", "mus_musculus": "mouse", "bovine": "cow",
    "drosophila": "fruitfly", "fly": "fruitfly", "c_elegans": "worm", "celegans": "worm",
    "athaliana": "arabidopsis", "a_thaliana": "arabidopsis", "scerevisiae": "yeast", "e_coli": "ecoli",
}  # fmt: skip
_TAG_ALIASES = {f"<{name.capitalize()}>": tag for name, tag in SPECIES_TOKENS.items()}

_TAG_RE = re.compile(r"<[^<>]*>")
_NUM_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_NONFINITE = r"[+-]?(?i:nan|inf(?:inity)?)(?![A-Za-z])"  # how numpy/Python/JS spell NaN and infinities
_NONFINITE_RE = re.compile(_NONFINITE)
_VALUE_RE = re.compile(rf"{_NUM_RE.pattern}|{_NONFINITE}")
# values start after a <M>: a sign, digit or point, or a non-finite spelling other than a whole-gap DNA run NAN
_VALUES_START_RE = re.compile(rf"\s*(?=[+\-.\d]|(?!NAN$){_NONFINITE})")  # ends where the first value starts
_SEPARATOR_RE = re.compile(r"\s*(,?)\s*")
_WORD_RE = re.compile(r"[^\s,<]*")
_VALUE_RULE = "the value after <M> must be a finite number (float32; several values are separated by commas)"


def _build_code_table() -> bytes:
    """``bytes.translate`` table: byte -> base code 0..4 (IUPAC -> N, lowercase -> upper); 255 = invalid."""
    table = bytearray([255] * 256)
    for code, base in enumerate(BASES):
        table[ord(base)] = table[ord(base.lower())] = code
    for amb in _IUPAC:
        table[ord(amb)] = table[ord(amb.lower())] = 0
    return bytes(table)


_CODE_TABLE = _build_code_table()
_BASE_BYTES = np.frombuffer(BASES.encode(), dtype=np.uint8)


def _bad_char(run: str, pos: int, offset: int, in_text: bool) -> InputError:
    """The error for ``run[pos]``; inside a sentence, a number there is a value that lacks its ``<M>``."""
    if in_text and _NUM_RE.match(run, pos):
        return InputError(f"value without <M> at position {offset + pos} (numbers must directly follow a <M>)")
    return InputError(f"invalid DNA character {run[pos]!r} at position {offset + pos}")


def _read_values(text: str, start: int, end: int) -> tuple[list[float], int]:
    """The values after a ``<M>`` in ``text[start:end]`` (the gap before the next tag) and where the rest starts.

    One rule for every value (module docstring): a finite float32, or an InputError naming the value and its position.
    """
    if not (first := _VALUES_START_RE.match(text, start, end)):
        return [], start
    values: list[float] = []
    pos = first.end()
    while True:
        m = _VALUE_RE.match(text, pos, end)
        if m is None or (m.end() < end and not _may_follow_value(text[m.end()])):
            word = _WORD_RE.match(text, pos, end).group()
            if not word:
                raise InputError(f"no value after the ',' at position {text.rindex(',', start, pos)}; {_VALUE_RULE}")
            raise InputError(f"value {word!r} at position {pos} is not a number; {_VALUE_RULE}")
        values.append(_parse_value(m.group(), pos))
        sep = _SEPARATOR_RE.match(text, m.end(), end)
        if not sep.group(1):
            return values, sep.end()
        pos = sep.end()


def _may_follow_value(char: str) -> bool:
    """A value ends at whitespace, a comma, a tag or a DNA run (``<M>0.5ACGT``); any other character garbles it."""
    return char.isspace() or char in ",<" or (char.isascii() and _CODE_TABLE[ord(char)] != 255)


def _parse_value(s: str, pos: int) -> float:
    """``s`` (matched by ``_VALUE_RE``) as a finite float32; a spelled non-finite value or an overflow is refused."""
    if _NONFINITE_RE.fullmatch(s):
        raise InputError(f"value {s!r} at position {pos} is not finite; {_VALUE_RULE}")
    with np.errstate(over="ignore"):
        v = np.float32(s)
    if not np.isfinite(v):
        raise InputError(f"value {s!r} at position {pos} is outside the float32 range; {_VALUE_RULE}")
    return float(v)


def _format_value(v: float) -> str:
    return np.format_float_positional(np.float32(v), unique=True, trim="-")


@dataclass(frozen=True, eq=False)
class Encoded:
    """One tokenised sentence: token ids plus the continuous values that follow its ``<M>`` tokens."""

    ids: np.ndarray  # (L,) int64
    values: np.ndarray  # (V,) float32
    value_pos: np.ndarray  # (V,) int64: index in ids of the <M> each value follows; non-decreasing

    def __post_init__(self) -> None:
        for name, dtype in (("ids", np.int64), ("values", np.float32), ("value_pos", np.int64)):
            arr = np.asarray(getattr(self, name), dtype=dtype)
            if arr.ndim != 1:
                raise InputError(f"Encoded.{name} must be 1-D, got shape {arr.shape}")
            object.__setattr__(self, name, arr)
        if len(self.values) != len(self.value_pos):
            raise InputError(f"Encoded: {len(self.values)} values but {len(self.value_pos)} value_pos")

    @property
    def n_positions(self) -> int:
        """Sequence length after the values are inserted into the embedding sequence."""
        return len(self.ids) + len(self.values)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Encoded):
            return NotImplemented
        fields = ("ids", "values", "value_pos")
        return all(np.array_equal(getattr(self, f), getattr(other, f)) for f in fields)

    __hash__ = None  # type: ignore[assignment]


class KmerTokenizer:
    """DNAGPT's k-mer tokenizer; see the module docstring for layout, species table and grammar."""

    species_names: tuple[str, ...] = tuple(SPECIES_TOKENS)
    number_id = SPECIALS.index("<M>")
    pad_id = SPECIALS.index("<P>")
    plus_id = SPECIALS.index("<+>")
    eq_id = SPECIALS.index("<=>")

    def __init__(
        self,
        vocab: Literal["dynamic", "fixed"] = "dynamic",
        k: int = 6,
        fixed_tail: Literal["error", "drop"] = "error",
    ) -> None:
        if vocab not in ("dynamic", "fixed"):
            raise ConfigError(f"vocab must be 'dynamic' or 'fixed', got {vocab!r}")
        if not isinstance(k, int) or not 1 <= k <= 8:
            raise ConfigError(f"k must be an int in 1..8, got {k!r}")
        if fixed_tail not in ("error", "drop"):
            raise ConfigError(f"fixed_tail must be 'error' or 'drop', got {fixed_tail!r}")
        self.vocab, self.k, self.fixed_tail = vocab, k, fixed_tail
        lengths = range(1, k + 1) if vocab == "dynamic" else (k,)
        # offsets[n] = first id of the n-mers (0 where n-mers are not in this vocabulary)
        self._offsets = [0] * (k + 1)
        rows, lens, nxt = [], [], len(SPECIALS)
        for n in lengths:
            self._offsets[n] = nxt
            digits = (np.arange(5**n)[:, None] // 5 ** np.arange(n - 1, -1, -1)) % 5  # base-5, MSB first
            block = np.zeros((5**n, k), dtype=np.uint8)
            block[:, :n] = _BASE_BYTES[digits]
            rows.append(block)
            lens.append(np.full(5**n, n, dtype=np.int64))
            nxt += 5**n
        self._size = nxt
        specials = np.zeros((len(SPECIALS), k), dtype=np.uint8)
        self._bytes = np.concatenate([specials, *rows])  # (vocab, k) decode table, specials zero
        self._lens = np.concatenate([np.zeros(len(SPECIALS), dtype=np.int64), *lens])
        # smallest dtype that holds a k-mer index keeps the dot product cheap
        self._powers = (5 ** np.arange(k - 1, -1, -1)).astype(np.uint16 if 5**k <= 2**16 else np.uint32)
        self._special_ids = {t: i for i, t in enumerate(SPECIALS)} | {
            a: SPECIALS.index(t) for a, t in _TAG_ALIASES.items()
        }
        short = "N" if vocab == "dynamic" else "N" * k
        self.true_id = self.token_id(short)
        self.false_id = self.token_id(short.replace("N", "A"))

    # ----- identity -----
    def __len__(self) -> int:
        return self._size

    def _spec(self) -> tuple[str, int, str]:
        return self.vocab, self.k, self.fixed_tail

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KmerTokenizer):
            return NotImplemented
        return self._spec() == other._spec()

    def __hash__(self) -> int:
        return hash(self._spec())

    def __repr__(self) -> str:
        return f"KmerTokenizer(vocab={self.vocab!r}, k={self.k}, fixed_tail={self.fixed_tail!r})"

    def to_dict(self) -> dict:
        """JSON-serialisable spec, stored in checkpoints so a tokenizer/model mismatch is caught on load."""
        return {"version": _FORMAT_VERSION, "vocab": self.vocab, "k": self.k, "fixed_tail": self.fixed_tail,
                "vocab_size": len(self)}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict) -> KmerTokenizer:
        """Inverse of ``to_dict``; refuses unknown versions and a vocab_size that does not match."""
        if d.get("version") != _FORMAT_VERSION:
            raise CheckpointError(f"tokenizer spec version {d.get('version')!r} is not supported (expected 1)")
        missing = {"vocab", "k"} - set(d)
        if missing:
            raise CheckpointError(f"tokenizer spec lacks {sorted(missing)}: {d!r}")
        tok = cls(d["vocab"], d["k"], d.get("fixed_tail", "error"))
        if d.get("vocab_size", len(tok)) != len(tok):
            raise CheckpointError(f"tokenizer spec says vocab_size={d['vocab_size']} but {tok!r} has {len(tok)}")
        return tok

    @property
    def bases_per_token(self) -> np.ndarray:
        """(vocab,) how many bases each id spells: k for a full k-mer, less for a tail k-mer, 0 for a special token.

        What turns a token loss into bits per base honestly: divide by the bases the target tokens spell.
        """
        return self._lens.copy()

    # ----- single tokens -----
    def token_id(self, token: str) -> int:
        """Id of one token: a tag (``<M>``, ``<R>``, ``<Human>``) or an upper-case k-mer of this vocab."""
        if token in self._special_ids:
            return self._special_ids[token]
        n = len(token)
        if 1 <= n <= self.k and self._offsets[n] and set(token) <= set(BASES):
            return self._offsets[n] + int(sum(BASES.index(b) * 5 ** (n - 1 - j) for j, b in enumerate(token)))
        raise InputError(f"unknown token {token!r} for {self!r}")

    def id_to_token(self, i: int) -> str:
        """Canonical text of one id (``<R>``, never an alias)."""
        if not 0 <= i < len(self):
            raise InputError(f"id {i} is outside the vocabulary (0..{len(self) - 1})")
        if i < len(SPECIALS):
            return SPECIALS[i]
        return self._bytes[i, : self._lens[i]].tobytes().decode("ascii")

    def species_id(self, name: str) -> int:
        """Id of a species token from its name (case-insensitive; aliases such as ``bovine`` accepted)."""
        key = name.strip().lower()
        key = _SPECIES_ALIASES.get(key, key)
        if key not in SPECIES_TOKENS:
            known = ", ".join([*SPECIES_TOKENS, *_SPECIES_ALIASES])
            raise InputError(f"unknown species {name!r}; known names: {known}")
        return self._special_ids[SPECIES_TOKENS[key]]

    # ----- DNA -----
    def _codes(self, seq: str | bytes | np.ndarray, offset: int = 0, in_text: bool = False) -> np.ndarray:
        """Base codes 0..4 of a sequence, or an InputError naming the first bad character and its position."""
        if isinstance(seq, str):
            try:
                seq = seq.encode("ascii")
            except UnicodeEncodeError as err:
                raise _bad_char(seq, err.start, offset, in_text) from None
        if isinstance(seq, np.ndarray) and seq.dtype == np.uint8 and seq.ndim == 1:
            seq = seq.tobytes()
        elif not isinstance(seq, (bytes, bytearray, memoryview)):
            raise TypeError(f"expected str, bytes or a 1-D uint8 array, got {type(seq).__name__}")
        raw = bytes(seq)
        if not raw:
            raise InputError("empty DNA sequence")
        codes = np.frombuffer(raw.translate(_CODE_TABLE), dtype=np.uint8)  # C-speed 256-entry lookup
        if codes.max() == 255:
            pos = int(np.argmax(codes == 255))
            raise _bad_char(raw.decode("latin-1"), pos, offset, in_text)
        return codes

    def clean(self, seq: str | bytes | np.ndarray) -> np.ndarray:
        """Upper-case ``ACGTN`` bytes (uint8) of a sequence: soft-masking removed, IUPAC codes -> ``N``."""
        return _BASE_BYTES[self._codes(seq)]

    def _encode_codes(self, codes: np.ndarray, offset: int = 0) -> np.ndarray:
        k = self.k
        n_full, tail = divmod(len(codes), k)
        ids = codes[: n_full * k].reshape(n_full, k) @ self._powers
        ids = ids.astype(np.int64) + self._offsets[k]
        if tail == 0:
            return ids
        if self.vocab == "fixed":
            if self.fixed_tail == "drop":
                return ids
            raise InputError(
                f"DNA run of {len(codes)} bp at position {offset} leaves a {tail} bp tail that the fixed "
                f"{k}-mer vocabulary cannot encode (use fixed_tail='drop' or the dynamic vocabulary)"
            )
        tail_id = self._offsets[tail] + int(codes[n_full * k :] @ self._powers[k - tail :])
        return np.append(ids, tail_id)

    def encode_dna(self, seq: str | bytes | np.ndarray) -> np.ndarray:
        """Int64 ids of one DNA run, cut into non-overlapping k-mers from the left.

        >>> KmerTokenizer().encode_dna("acgtacRy").tolist()  # soft-masked; IUPAC -> N
        [9297, 39]
        """
        return self._encode_codes(self._codes(seq))

    def _check_ids(self, ids: Sequence[int] | np.ndarray, dna_only: bool) -> np.ndarray:
        """Ids as a 1-D int64 array, or an InputError naming the first id that is out of place and where."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        low = len(SPECIALS) if dna_only else 0
        if len(ids) and (ids.min() < low or ids.max() >= len(self)):
            pos = int(np.argmax((ids < low) | (ids >= len(self))))
            i = ids[pos]
            what = f"{SPECIALS[i]}, not a DNA token" if 0 <= i < len(SPECIALS) else "outside the vocabulary"
            raise InputError(f"id {i} at position {pos} is {what} (vocabulary 0..{len(self) - 1})")
        return ids

    def decode_dna(self, ids: Sequence[int] | np.ndarray) -> str:
        """DNA text of k-mer ids; a reserved or out-of-range id is an InputError naming its position.

        >>> KmerTokenizer().decode_dna([9297, 39])
        'ACGTACNN'
        """
        ids = self._check_ids(ids, dna_only=True)
        rows = np.take(self._bytes, ids, axis=0)  # (n, k) bytes, a short k-mer padded at its end
        if len(ids) and ids[:-1].min(initial=len(self)) >= self._offsets[self.k]:
            # usual case, only the last k-mer may be short: its padding is at the very end of the buffer
            text = rows.reshape(-1)[: (len(ids) - 1) * self.k + self._lens[ids[-1]]]
        else:
            text = rows[np.arange(self.k) < self._lens[ids][:, None]]
        return str(text.data, "ascii")

    # ----- sentences -----
    def encode(self, text: str) -> Encoded:
        """Tokenise a sentence of tags, DNA runs and ``<M>`` values (grammar: module docstring)."""
        if not text:
            raise InputError("empty text")
        pieces: list[np.ndarray] = []
        values: list[float] = []
        value_pos: list[int] = []
        n_ids, cursor, after_m = 0, 0, False
        for m in [*_TAG_RE.finditer(text), None]:
            end = m.start() if m else len(text)
            gap_start = cursor
            if after_m:
                read, gap_start = _read_values(text, cursor, end)
                values += read
                value_pos += [n_ids - 1] * len(read)
            if gap_start < end:
                if (lt := text.find("<", gap_start, end)) >= 0:
                    raise InputError(f"unterminated tag {text[lt : lt + 12]!r} at position {lt}")
                ids = self._encode_codes(self._codes(text[gap_start:end], gap_start, in_text=True), gap_start)
                pieces.append(ids)
                n_ids += len(ids)
            if m is None:
                break
            tag_id = self._special_ids.get(m.group())
            if tag_id is None:
                raise InputError(f"unknown tag {m.group()!r} at position {m.start()}")
            pieces.append(np.array([tag_id], dtype=np.int64))
            n_ids += 1
            cursor, after_m = m.end(), tag_id == self.number_id
        return Encoded(np.concatenate(pieces), np.array(values, np.float32), np.array(value_pos, np.int64))

    def decode(
        self,
        ids: Sequence[int] | np.ndarray,
        values: Sequence[float] | np.ndarray | None = None,
        value_pos: Sequence[int] | np.ndarray | None = None,
    ) -> str:
        """Canonical text of a sentence; ``encode(decode(e)) == e`` for any ``e`` made by ``encode``."""
        ids = self._check_ids(ids, dna_only=False)
        if not len(ids):
            raise InputError("decode needs at least one id (encode never yields an empty sentence)")
        values = np.asarray([] if values is None else values, dtype=np.float32).reshape(-1)
        value_pos = np.asarray([] if value_pos is None else value_pos, dtype=np.int64).reshape(-1)
        self._check_values(ids, values, value_pos)
        is_special = ids < len(SPECIALS)
        # boundaries of runs of DNA tokens / single special tokens; one slice per run, never per k-mer
        starts = np.flatnonzero(np.r_[True, is_special[1:] | is_special[:-1]])
        ends = np.r_[starts[1:], len(ids)]
        val_start = np.searchsorted(value_pos, starts)
        val_end = np.searchsorted(value_pos, starts, side="right")
        out = []
        bounds = zip(starts.tolist(), ends.tolist(), val_start.tolist(), val_end.tolist(), strict=True)
        for s, e, vs, ve in bounds:
            if not is_special[s]:
                out.append(self.decode_dna(ids[s:e]))
                continue
            out.append(SPECIALS[ids[s]])
            if ve > vs:
                out.append(",".join(_format_value(v) for v in values[vs:ve].tolist()))
        return "".join(out)

    def _check_values(self, ids: np.ndarray, values: np.ndarray, value_pos: np.ndarray) -> None:
        """Values must be finite and attached, in order, to ``<M>`` positions of ``ids``."""
        if len(values) != len(value_pos):
            raise InputError(f"{len(values)} values but {len(value_pos)} value_pos")
        if not len(values):
            return
        if np.any(np.diff(value_pos) < 0) or value_pos.min() < 0 or value_pos.max() >= len(ids):
            raise InputError(f"value_pos must be non-decreasing indices into ids (0..{len(ids) - 1})")
        not_m = ids[value_pos] != self.number_id
        if not_m.any():
            pos = int(value_pos[np.argmax(not_m)])
            raise InputError(f"a value is attached to position {pos}, which holds id {ids[pos]}, not <M>")
        if not np.isfinite(values).all():
            raise InputError(f"value {values[~np.isfinite(values)][0]} is not finite (the grammar has none)")

    def pad_batch(self, items: Sequence[Encoded], block_size: int | None = None) -> dict[str, np.ndarray]:
        """Right-pad sentences: ids with ``<P>`` (``pad_id``), values and their positions with 0."""
        if not items:
            raise InputError("pad_batch needs at least one item")
        if block_size is not None:
            for i, item in enumerate(items):
                if item.n_positions > block_size:
                    raise InputError(f"item {i} has n_positions={item.n_positions} > block_size={block_size}")
        out: dict[str, np.ndarray] = {}
        for field, key, mask_key, pad, dtype in (
            ("ids", "input_ids", "attention_mask", self.pad_id, np.int64),
            ("values", "values", "value_mask", 0, np.float32),
            ("value_pos", "value_pos", None, 0, np.int64),
        ):
            arrays = [getattr(item, field) for item in items]
            lens = np.array([len(a) for a in arrays])
            mask = np.arange(lens.max(initial=0)) < lens[:, None]
            padded = np.full(mask.shape, pad, dtype=dtype)
            padded[mask] = np.concatenate(arrays)
            out[key] = padded
            if mask_key:
                out[mask_key] = mask
        return out
