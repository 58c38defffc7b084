"""Genome corpora (Hydra group ``corpus``): which FASTA files, their sampling weights, and the held-out regions.

A corpus YAML is declarative, files and regions only (``dnagpt/conf/corpus/*.yaml``)::

    name: multispecies
    root: ${paths.data_dir}/genomes
    skip_missing: false          # bundled: true, so a species without a file (fasta: null) is skipped with a warning
    species:
      human: {fasta: hg38.fa.gz, weight: 1.0, url: https://..., sha256: null}
      ...
    holdout:                     # whole records or name:start-end (1-based, inclusive)
      human: {val: ["21"], test: ["22:1-20000000"]}
      ...
    n_policy: {max_n_frac: 0.05}
    rc_augment: false

A ``fasta`` naming a file that does not exist is always an error naming the key and the path (with the download
command when the species has a ``url``): ``skip_missing`` only skips the species the corpus offers no file for. Held-out
regions are cut out of the training regions, so no training window overlaps them. Validation and test regions of one
species must not overlap each other.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dnagpt.data.fasta import EncodedGenome, Region, parse_region
from dnagpt.data.splits import SPLITS
from dnagpt.utils.errors import ConfigError, MissingFileError

__all__ = ["Corpus", "SpeciesEntry", "SpeciesPlan", "plan_species"]

log = logging.getLogger(__name__)

_CORPUS_KEYS = {"name", "root", "species", "holdout", "n_policy", "rc_augment", "skip_missing"}
_SPECIES_KEYS = {"fasta", "weight", "url", "sha256"}
_HELD_OUT = SPLITS[1:]  # the splits a holdout names regions for: val, test


def _mapping(value: Any, key: str) -> dict:
    """``value`` as a dict (None: empty), or a ConfigError naming ``key``."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key} must be a mapping, got {value!r}")
    return dict(value)


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    return float(value)


def _regions(value: Any, key: str) -> tuple[str, ...]:
    """A list of record names or regions; an unquoted number in YAML (``val: [21]``) is the record name ``"21"``."""
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ConfigError(f'{key} must be a list of records or regions, such as ["21", "22:1-20000000"]; got {value!r}')
    bad = [v for v in value if isinstance(v, bool) or not isinstance(v, (str, int))]
    if bad:
        raise ConfigError(f"{key}: {bad[0]!r} is not a record name or region (name or name:start-end)")
    return tuple(str(v) for v in value)


@dataclass(frozen=True)
class SpeciesEntry:
    """One species of a corpus; ``fasta`` is resolved under the corpus root (None when the corpus has no file)."""

    name: str
    fasta: Path | None
    weight: float
    url: str | None = None
    sha256: str | None = None
    val: tuple[str, ...] = ()
    test: tuple[str, ...] = ()


@dataclass(frozen=True)
class Corpus:
    """A validated corpus config: its species (files, weights, held-out regions) and the N policy."""

    name: str
    root: Path
    species: tuple[SpeciesEntry, ...]
    max_n_frac: float = 0.05
    rc_augment: bool = False
    skip_missing: bool = False

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | DictConfig) -> Corpus:
        """Validate a corpus config (a DictConfig or a plain dict); a ConfigError names the offending key."""
        if isinstance(cfg, DictConfig):
            cfg = OmegaConf.to_container(cfg, resolve=True)
        cfg = _mapping(cfg, "corpus")
        unknown = set(cfg) - _CORPUS_KEYS
        if unknown:
            raise ConfigError(f"corpus: unknown key(s) {sorted(unknown)}; allowed: {sorted(_CORPUS_KEYS)}")
        for key in ("name", "root", "species"):
            if cfg.get(key) in (None, "", {}):
                raise ConfigError(f"corpus: {key!r} is required")
        name, root = str(cfg["name"]), Path(cfg["root"])
        species_cfg = _mapping(cfg["species"], f"corpus {name}: species")
        holdout = _mapping(cfg.get("holdout"), f"corpus {name}: holdout")
        stray = set(holdout) - set(species_cfg)
        if stray:
            raise ConfigError(f"corpus {name}: holdout names species not in 'species': {sorted(stray)}")
        species = []
        for sp_name, sp in species_cfg.items():
            where = f"corpus {name}: species.{sp_name}"
            sp = _mapping(sp, where)
            bad = set(sp) - _SPECIES_KEYS
            if bad:
                raise ConfigError(f"{where}: unknown key(s) {sorted(bad)}; allowed: {sorted(_SPECIES_KEYS)}")
            weight = _number(sp.get("weight", 1.0), f"{where}.weight")
            if not weight > 0:
                raise ConfigError(f"{where}.weight must be > 0, got {weight}")
            hold = _mapping(holdout.get(sp_name), f"corpus {name}: holdout.{sp_name}")
            if set(hold) - set(_HELD_OUT):
                raise ConfigError(f"corpus {name}: holdout.{sp_name} allows only 'val' and 'test', got {sorted(hold)}")
            val, test = (_regions(hold.get(s), f"corpus {name}: holdout.{sp_name}.{s}") for s in _HELD_OUT)
            species.append(
                SpeciesEntry(
                    name=str(sp_name),
                    fasta=root / str(sp["fasta"]) if sp.get("fasta") else None,
                    weight=weight,
                    url=sp.get("url"),
                    sha256=sp.get("sha256"),
                    val=val,
                    test=test,
                )
            )
        n_policy = _mapping(cfg.get("n_policy"), f"corpus {name}: n_policy")
        max_n_frac = _number(n_policy.get("max_n_frac", 0.05), f"corpus {name}: n_policy.max_n_frac")
        if not 0.0 <= max_n_frac < 1.0:
            raise ConfigError(f"corpus {name}: n_policy.max_n_frac must be in [0, 1), got {max_n_frac}")
        return cls(
            name=name,
            root=root,
            species=tuple(species),
            max_n_frac=max_n_frac,
            rc_augment=bool(cfg.get("rc_augment", False)),
            skip_missing=bool(cfg.get("skip_missing", False)),
        )

    @property
    def download_command(self) -> str:
        return f"dnagpt download corpus={self.name} (in a clone: python download.py corpus={self.name})"

    def available_species(self) -> list[SpeciesEntry]:
        """The species to train on; a file that is named but absent is an error naming its key and path.

        A species with ``fasta: null`` is an error too, unless ``skip_missing`` (the bundled corpus, which has no
        offline sequence for some species): then it is skipped with a warning. Only files are checked (cheap), not
        their content.
        """
        absent = [sp for sp in self.species if sp.fasta is not None and not sp.fasta.is_file()]
        unset = [sp for sp in self.species if sp.fasta is None]
        problems = [f"corpus.species.{sp.name}.fasta={sp.fasta} does not exist" for sp in absent]
        if not self.skip_missing:
            problems += [f"corpus.species.{sp.name}.fasta is null (no file configured)" for sp in unset]
        if problems:
            if any(sp.url for sp in absent):
                advice = (f"fetch the files with: {self.download_command} (with the same --config-dir and paths.* "
                          "overrides as this run)")
            else:
                advice = f"check the path (a relative fasta is taken under corpus.root={self.root})"
            raise MissingFileError(f"corpus {self.name}: {'; '.join(problems)}; {advice}")
        for sp in unset:
            log.warning("corpus %s: species %s skipped: the corpus offers no file for it (fasta: null)", self.name, sp.name)
        present = [sp for sp in self.species if sp.fasta is not None]
        if not present:
            raise ConfigError(f"corpus {self.name}: no species has a file (every species.<name>.fasta is null)")
        return present


@dataclass
class SpeciesPlan:
    """Where one species' windows come from: its encoded genome and its train / val / test regions."""

    entry: SpeciesEntry
    genome: EncodedGenome
    train: list[Region]
    val: list[Region]
    test: list[Region]


def _subtract(region: Region, holes: list[Region]) -> list[Region]:
    out, cursor = [], region.start
    for h in sorted(holes, key=lambda r: r.start):
        if h.start > cursor:
            out.append(Region(region.record, cursor, h.start))
        cursor = max(cursor, h.end)
    if cursor < region.end:
        out.append(Region(region.record, cursor, region.end))
    return out


def plan_species(entry: SpeciesEntry, genome: EncodedGenome, corpus_name: str) -> SpeciesPlan:
    """Parse the held-out regions and cut them out of every record to get the training regions."""
    where = f"corpus {corpus_name}: holdout.{entry.name}"
    val = [parse_region(t, genome, f"{where}.val") for t in entry.val]
    test = [parse_region(t, genome, f"{where}.test") for t in entry.test]
    for v in val:
        for t in test:
            if v.record == t.record and v.start < t.end and t.start < v.end:
                raise ConfigError(
                    f"{where}: val region {genome.names[v.record]}:{v.start + 1}-{v.end} overlaps test region "
                    f"{genome.names[t.record]}:{t.start + 1}-{t.end}"
                )
    train = []
    for i, length in enumerate(genome.lengths):
        holes = [r for r in val + test if r.record == i]
        train.extend(_subtract(Region(i, 0, int(length)), holes))
    return SpeciesPlan(entry, genome, train, val, test)
