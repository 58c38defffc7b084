"""Genome corpora (Hydra group ``corpus``): which FASTA files, their sampling weights, and the held-out
regions.

A corpus YAML is declarative (CONVENTIONS §3.3)::

    name: multispecies root: ${paths.data_dir}/genomes skip_missing: false          # bundled: true (a species
    without a file is skipped with a warning) species: {human: {fasta: hg38.fa.gz, weight: 1.0, url:
    https://..., sha256: null}, ...} holdout: {human: {val: ["21"], test: ["22:1-20000000"]}, ...}   # whole
    records or name:start-end (1-based) n_policy: {max_n_frac: 0.05} rc_augment: false

Held-out regions are cut out of the training regions, so no training window overlaps them. Validation and test
regions of one species must not overlap each other.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dnagpt.data.fasta import EncodedGenome, Region, parse_region

__all__ = ["Corpus", "SpeciesEntry", "SpeciesPlan", "plan_species"]

log = logging.getLogger(__name__)

_CORPUS_KEYS = {"name", "root", "species", "holdout", "n_policy", "rc_augment", "skip_missing"}
_SPECIES_KEYS = {"fasta", "weight", "url", "sha256"}


@dataclass(frozen=True)
class SpeciesEntry:
    """One species of a corpus; ``fasta`` is resolved under the corpus root (None when the corpus has no
    file)."""

    name: str
    fasta: Path | None
    weight: float
    url: str | None = None
    sha256: str | None = None
    val: tuple[str, ...] = ()
    test: tuple[str, ...] = ()


@dataclass(frozen=True)
class Corpus:
    name: str
    root: Path
    species: tuple[SpeciesEntry, ...]
    max_n_frac: float = 0.05
    rc_augment: bool = False
    skip_missing: bool = False

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | DictConfig) -> Corpus:
        """Validate a corpus config (a DictConfig or a plain dict); errors name the offending key."""
        if isinstance(cfg, DictConfig):
            cfg = OmegaConf.to_container(cfg, resolve=True)
        cfg = dict(cfg)
        unknown = set(cfg) - _CORPUS_KEYS
        if unknown:
            raise ValueError(f"corpus: unknown key(s) {sorted(unknown)}; allowed: {sorted(_CORPUS_KEYS)}")
        for key in ("name", "root", "species"):
            if cfg.get(key) in (None, "", {}):
                raise ValueError(f"corpus: {key!r} is required")
        name, root = str(cfg["name"]), Path(cfg["root"])
        holdout = dict(cfg.get("holdout") or {})
        stray = set(holdout) - set(cfg["species"])
        if stray:
            raise ValueError(f"corpus {name}: holdout names species not in 'species': {sorted(stray)}")
        species = []
        for sp_name, sp in cfg["species"].items():
            where = f"corpus {name}: species.{sp_name}"
            sp = dict(sp or {})
            bad = set(sp) - _SPECIES_KEYS
            if bad:
                raise ValueError(f"{where}: unknown key(s) {sorted(bad)}; allowed: {sorted(_SPECIES_KEYS)}")
            weight = float(sp.get("weight", 1.0))
            if not weight > 0:
                raise ValueError(f"{where}.weight must be > 0, got {weight}")
            hold = dict(holdout.get(sp_name) or {})
            if set(hold) - {"val", "test"}:
                raise ValueError(f"corpus {name}: holdout.{sp_name} allows only 'val' and 'test', got {sorted(hold)}")
            species.append(
                SpeciesEntry(
                    name=str(sp_name),
                    fasta=root / sp["fasta"] if sp.get("fasta") else None,
                    weight=weight,
                    url=sp.get("url"),
                    sha256=sp.get("sha256"),
                    val=tuple(hold.get("val") or ()),
                    test=tuple(hold.get("test") or ()),
                )
            )
        max_n_frac = float((cfg.get("n_policy") or {}).get("max_n_frac", 0.05))
        if not 0.0 <= max_n_frac < 1.0:
            raise ValueError(f"corpus {name}: n_policy.max_n_frac must be in [0, 1), got {max_n_frac}")
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
        return f"python -m dnagpt.data.download corpus={self.name}"

    def available_species(self) -> list[SpeciesEntry]:
        """Species whose FASTA exists. Missing files are an error naming each file and the download command,
        unless ``skip_missing`` (the bundled corpus), where each is skipped with a warning."""
        missing = [sp for sp in self.species if sp.fasta is None or not sp.fasta.is_file()]
        if missing and not self.skip_missing:
            lines = "\n".join(f"  {sp.name}: {sp.fasta or '(no file configured)'}" for sp in missing)
            raise FileNotFoundError(
                f"corpus {self.name}: {len(missing)} genome file(s) missing under {self.root}:\n{lines}\n"
                f"Fetch them with: {self.download_command}  (with the same paths.* overrides as this run)"
            )
        for sp in missing:
            log.warning(
                "corpus %s: species %s skipped: its FASTA is not available (%s)",
                self.name, sp.name, sp.fasta or "no file configured",
            )  # fmt: skip
        present = [sp for sp in self.species if sp not in missing]
        if not present:
            raise FileNotFoundError(f"corpus {self.name}: no genome file is available under {self.root}")
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
                raise ValueError(
                    f"{where}: val region {genome.names[v.record]}:{v.start + 1}-{v.end} overlaps test "
                    "region "
                    f"{genome.names[t.record]}:{t.start + 1}-{t.end}"
                )
    train = []
    for i, length in enumerate(genome.lengths):
        holes = [r for r in val + test if r.record == i]
        train.extend(_subtract(Region(i, 0, int(length)), holes))
    return SpeciesPlan(entry, genome, train, val, test)
