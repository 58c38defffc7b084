"""Download the genome files of a corpus, resumable and checksum-verified (the library; the command is ``download.py``).

Each file is fetched with ``requests`` into ``<file>.part`` and resumed with an HTTP Range request after an
interruption (a server that ignores the range restarts the file). The finished file is checked against the corpus'
``sha256``; where that is null the checksum obtained is recorded in ``<root>/SHA256SUMS`` and later runs verify against
it. Existing verified files are skipped. What cannot be fixed by running again raises a ``DnagptError``: a checksum
mismatch or a malformed ``SHA256SUMS`` an ``InputError``, a server that refuses the file or stays unreachable a
``DownloadError``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

import requests
from tqdm.auto import tqdm

from dnagpt.data.corpus import Corpus
from dnagpt.utils.errors import DnagptError, InputError

__all__ = ["DownloadError", "download_corpus", "download_file", "sha256_file"]

log = logging.getLogger(__name__)

SUMS_FILE = "SHA256SUMS"
_CHUNK = 1 << 20
_RETRYABLE = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


class DownloadError(DnagptError, ConnectionError):
    """A file the server refuses (HTTP error) or that could not be fetched after the retries."""

    label = "Download error"


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks (genomes are gigabytes)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _fetch_once(session: requests.Session, url: str, part: Path, timeout: float) -> None:
    """Append the rest of ``url`` to ``part`` (or restart it when the server ignores the range)."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    with session.get(url, headers=headers, stream=True, timeout=timeout) as r:
        if r.status_code == 416:  # nothing left to fetch, or a .part longer than the file
            m = re.match(r"bytes \*/(\d+)", r.headers.get("Content-Range", ""))
            if m and int(m.group(1)) != offset:
                part.unlink()
                raise requests.ConnectionError(f"stale partial file of {offset} bytes (remote {m.group(1)}): restarting")
            return
        r.raise_for_status()
        if r.status_code == 206 and not r.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
            raise InputError(f"server answered range {r.headers.get('Content-Range')!r} to a request from {offset}", url)
        if r.status_code != 206:
            offset = 0  # full body: start over
        length = r.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        with (
            open(part, "ab" if offset else "wb") as fh,
            tqdm(total=total, initial=offset, unit="B", unit_scale=True, desc=part.name.removesuffix(".part")) as bar,
        ):
            for chunk in r.iter_content(_CHUNK):
                fh.write(chunk)
                bar.update(len(chunk))
        if total is not None and part.stat().st_size != total:
            raise requests.exceptions.ChunkedEncodingError(f"connection closed at {part.stat().st_size} of {total} bytes")


def download_file(
    url: str,
    dest: str | Path,
    sha256: str | None = None,
    *,
    retries: int = 3,
    timeout: float = 60.0,
    session: requests.Session | None = None,
) -> str:
    """Fetch ``url`` to ``dest`` with resume; return the file's sha256. A checksum mismatch is an ``InputError``."""
    dest = Path(dest)
    if dest.exists():
        digest = sha256_file(dest)
        if sha256 and digest != sha256:
            raise InputError(f"sha256 {digest} does not match the corpus ({sha256}); delete it and retry", dest)
        log.info("%s already present (sha256 %s)", dest, digest)
        return digest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    session = session or requests.Session()
    for attempt in range(1, retries + 1):
        try:
            _fetch_once(session, url, part, timeout)
            break
        except requests.HTTPError as err:
            answer = f"HTTP {err.response.status_code} {err.response.reason}"
            raise DownloadError(f"{url}: the server answered {answer}; check the url of this file in the corpus") from err
        except _RETRYABLE as err:
            if attempt == retries:
                raise DownloadError(f"{url}: failed after {retries} attempts ({err}); run again to resume") from err
            log.warning("%s: attempt %d failed (%s); resuming", url, attempt, err)
    digest = sha256_file(part)
    if sha256 and digest != sha256:
        part.unlink()
        raise InputError(f"downloaded file has sha256 {digest}, the corpus expects {sha256}; the file was removed", url)
    os.replace(part, dest)
    return digest


def _read_sums(path: Path) -> dict[str, str]:
    """``{file name: sha256}`` recorded by earlier runs (``sha256sum`` format: ``<hex>  <name>`` per line)."""
    if not path.exists():
        return {}
    sums = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split(maxsplit=1)
        if not fields:
            continue
        if len(fields) != 2 or not re.fullmatch(r"[0-9a-f]{64}", fields[0]):
            raise InputError(f"expected '<64 hex digits>  <file name>', got {line!r}; fix or delete the file", path, number)
        sums[fields[1]] = fields[0]
    return sums


def download_corpus(corpus: Corpus, *, session: requests.Session | None = None) -> dict[str, str]:
    """Fetch every file of ``corpus`` that has a URL; return ``{species: sha256}`` and update ``SHA256SUMS``."""
    sums_path = corpus.root / SUMS_FILE
    sums = _read_sums(sums_path)
    got = {}
    for sp in corpus.species:
        if sp.fasta is None or not sp.url:
            if sp.fasta is not None and sp.fasta.is_file():
                got[sp.name] = sha256_file(sp.fasta)
            else:
                log.warning("corpus %s: species %s has no URL and no local file; skipped", corpus.name, sp.name)
            continue
        expected = sp.sha256 or sums.get(sp.fasta.name)
        got[sp.name] = download_file(sp.url, sp.fasta, expected, session=session)
        sums[sp.fasta.name] = got[sp.name]
        sums_path.parent.mkdir(parents=True, exist_ok=True)
        sums_path.write_text("".join(f"{d}  {n}\n" for n, d in sorted(sums.items())))
    return got
