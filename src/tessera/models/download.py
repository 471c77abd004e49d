"""Explicit downloads of catalog models into the cache, and checks of what is there.

Only :func:`pull` ever touches the network, and only when called (``tessera models pull NAME``). A pull writes into
``<file>.part`` and resumes it with an HTTP Range request, checks the published checksum (sha256, else md5; a
mismatch deletes the download and raises ChecksumError), extracts the weight file when the download is an archive,
then renames into place, so the final path only ever holds a complete, checked file. It records what it got (sha256,
URL, size) in ``<file>.json`` next to the weights: for models without a published checksum that record is the
reference later checks compare against (trust on first use). :func:`verify` recomputes checksums of cached files.
"""
from __future__ import annotations

import errno
import hashlib
import http.client
import json
import os
import shutil
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from ..errors import ChecksumError, ModelError, ResourceError
from ..image import write_atomically
from .catalog import CATALOG, CatalogEntry, get_entry, model_path, models_dir, record_path

# progress(bytes_done, bytes_total_or_None), called as chunks arrive
DownloadProgress = Callable[[int, "int | None"], None]

_CHUNK = 1 << 20
_TIMEOUT_S = 60.0
_USER_AGENT = "tessera-model-puller/1"


class _Interrupted(Exception):
    """A transfer that stopped early; the .part file is kept so the next pull resumes it."""


@dataclass(frozen=True)
class Digests:
    sha256: str
    md5: str
    size: int


def file_digests(path: str | os.PathLike[str]) -> Digests:
    """sha256 and md5 of a file, read once in chunks."""
    sha256, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            sha256.update(chunk)
            md5.update(chunk)
            size += len(chunk)
    return Digests(sha256.hexdigest(), md5.hexdigest(), size)


def _check_published(entry: CatalogEntry, digests: Digests, url: str) -> None:
    """Raise ChecksumError when the download differs from the published checksum (or exact size)."""
    if entry.sha256 and digests.sha256 != entry.sha256.lower():
        raise ChecksumError(f"{entry.download_name} from {url} has sha256 {digests.sha256}, "
                            f"published {entry.sha256}; the download was deleted")
    if not entry.sha256 and entry.md5 and digests.md5 != entry.md5.lower():
        raise ChecksumError(f"{entry.download_name} from {url} has md5 {digests.md5}, "
                            f"published {entry.md5}; the download was deleted")
    if entry.size_bytes is not None and digests.size != entry.size_bytes:
        raise ChecksumError(f"{entry.download_name} from {url} has {digests.size} bytes, "
                            f"published {entry.size_bytes}; the download was deleted")


# ---------------------------------------------------------------------------------------------------- transfer
def _request(url: str, offset: int) -> urllib.request.Request:
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.Request(url, headers=headers)


def _range_total(content_range: str | None) -> int | None:
    """The total size in a ``Content-Range: bytes a-b/TOTAL`` (or ``bytes */TOTAL``) header."""
    if not content_range or "/" not in content_range:
        return None
    total = content_range.rsplit("/", 1)[1].strip()
    return int(total) if total.isdigit() else None


def _fetch(url: str, part: Path, progress: DownloadProgress | None) -> None:
    """Download ``url`` into ``part``, continuing an existing partial file where the server allows it."""
    offset = part.stat().st_size if part.exists() else 0
    try:
        response = urllib.request.urlopen(_request(url, offset), timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as error:
        if error.code != 416 or not offset:
            raise
        # Range not satisfiable: the partial file is complete, or it is longer than the file and useless.
        if _range_total(error.headers.get("Content-Range")) == offset:
            return
        part.unlink()
        _fetch(url, part, progress)
        return
    with response:
        if offset and response.status == 206:
            start = (response.headers.get("Content-Range") or "").removeprefix("bytes ").split("-")[0]
            if start.strip() != str(offset):
                part.unlink()
                raise _Interrupted(f"server resumed at byte {start!r}, not {offset}; partial file discarded")
            mode = "ab"
        else:  # the server sent the whole file: start over
            offset, mode = 0, "wb"
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        done = offset
        with open(part, mode) as stream:
            try:
                while chunk := response.read(_CHUNK):
                    stream.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
            except (http.client.IncompleteRead, ConnectionError, TimeoutError) as error:
                raise _Interrupted(f"connection lost at byte {done}: {error}") from error
        if total is not None and done < total:
            raise _Interrupted(f"connection closed at byte {done} of {total}")


# ---------------------------------------------------------------------------------------------------- records
def read_record(entry: CatalogEntry, model_dir: str | os.PathLike[str] | None = None) -> dict | None:
    """What the last pull of ``entry`` recorded (sha256, URL, size, time), or None if it was never pulled."""
    path = record_path(entry, model_dir)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise ModelError(f"{path}: unreadable pull record: {error}") from error


def _write_record(entry: CatalogEntry, model_dir, *, url: str, download: Digests, stored: Digests) -> None:
    record = {
        "name": entry.name,
        "file": entry.filename,
        "url": url,
        "sha256": stored.sha256,
        "size": stored.size,
        "checked_against": (f"published {entry.checksum_kind}" if entry.checksum_kind != "none"
                            else "nothing published (trust on first use)"),
        "download": {"file": entry.download_name, "sha256": download.sha256, "md5": download.md5,
                     "size": download.size},
        "pulled_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    text = json.dumps(record, indent=2) + "\n"
    write_atomically(record_path(entry, model_dir), lambda file: file.write(text.encode("utf-8")), "JSON")


# ---------------------------------------------------------------------------------------------------- pull
def _install(entry: CatalogEntry, download: Path, target: Path) -> None:
    """Move the checked download to ``target``, extracting ``entry.archive_member`` first for archives."""
    if entry.archive_member is None:
        os.replace(download, target)
        return

    def extract(sink: BinaryIO) -> None:
        try:
            with zipfile.ZipFile(download) as archive, archive.open(entry.archive_member) as source:
                shutil.copyfileobj(source, sink, _CHUNK)
        except (zipfile.BadZipFile, KeyError) as error:
            raise ModelError(f"{entry.download_name}: cannot extract {entry.archive_member}: {error}") from error

    write_atomically(target, extract, "model file")
    download.unlink()


def pull(name: str, *, model_dir: str | os.PathLike[str] | None = None, progress: DownloadProgress | None = None,
         urls: Iterable[str] | None = None, force: bool = False) -> Path:
    """Download catalog model ``name`` into the cache and return the path of its weight file.

    Resumes an earlier interrupted pull, checks the published checksum (ChecksumError on mismatch: nothing is
    kept), writes the final file atomically and records its sha256 in ``<file>.json``. A file already in the
    cache is returned as is unless ``force``. ``urls`` replaces the catalog's mirrors (tests, private mirrors);
    ``progress(done, total)`` is called as bytes arrive.
    """
    entry = get_entry(name)
    target = model_path(entry, model_dir)
    if target.is_file() and not force:
        return target
    folder = models_dir(model_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ResourceError(f"cannot create the model cache {folder}: {error}") from error
    part = folder / f"{entry.download_name}.part"
    failures: list[str] = []
    for url in list(urls) if urls is not None else entry.urls:
        try:
            _fetch(url, part, progress)
        except (_Interrupted, urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as error:
            if isinstance(error, OSError) and error.errno == errno.ENOSPC:
                raise ResourceError(f"disk full while downloading {entry.name} into {folder}") from error
            failures.append(f"{url}: {error}")
            continue
        download = file_digests(part)
        try:
            _check_published(entry, download, url)
        except ChecksumError:
            part.unlink(missing_ok=True)
            raise
        _install(entry, part, target)
        stored = download if entry.archive_member is None else file_digests(target)
        _write_record(entry, model_dir, url=url, download=download, stored=stored)
        return target
    resume = " (partial download kept; pull again to resume)" if part.exists() else ""
    detail = "; ".join(failures) or "no URL to download from"
    raise ModelError(f"could not download {entry.name}: {detail}{resume}")


# ---------------------------------------------------------------------------------------------------- verify
Status = Literal["ok", "mismatch", "unchecked", "missing"]


@dataclass(frozen=True)
class Verification:
    """The result of checking one cached model: ``status`` is "ok", "mismatch", "unchecked" (nothing published
    or recorded to compare with) or "missing" (not in the cache)."""

    name: str
    path: Path
    status: Status
    kind: str  # what the file was compared with, e.g. "published sha256", "recorded sha256"
    expected: str | None = None
    actual: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "unchecked")


def _reference(entry: CatalogEntry, record: dict | None) -> tuple[str, str, str] | None:
    """(kind, algorithm, expected digest) the cached file is checked against, or None if there is nothing."""
    if entry.archive_member is None and entry.sha256:
        return "published sha256", "sha256", entry.sha256.lower()
    if entry.archive_member is None and entry.md5:
        return "published md5", "md5", entry.md5.lower()
    if record and record.get("sha256"):
        return "recorded sha256", "sha256", str(record["sha256"]).lower()
    return None


def verify_entry(entry: CatalogEntry, model_dir: str | os.PathLike[str] | None = None) -> Verification:
    """Recompute the checksum of ``entry``'s cached file and compare it with the published or recorded one."""
    path = model_path(entry, model_dir)
    if not path.is_file():
        return Verification(entry.name, path, "missing", "not in the cache")
    reference = _reference(entry, read_record(entry, model_dir))
    if reference is None:
        return Verification(entry.name, path, "unchecked", "nothing published or recorded")
    kind, algorithm, expected = reference
    digests = file_digests(path)
    actual = digests.sha256 if algorithm == "sha256" else digests.md5
    status: Status = "ok" if actual == expected else "mismatch"
    return Verification(entry.name, path, status, kind, expected, actual)


def verify(name: str | None = None, *, model_dir: str | os.PathLike[str] | None = None) -> list[Verification]:
    """Check one model (ModelError if it is unknown or not in the cache) or, with no name, every cached model."""
    if name is not None:
        entry = get_entry(name)
        result = verify_entry(entry, model_dir)
        if result.status == "missing":
            raise ModelError(f"model {entry.name!r} is not in the cache ({result.path}); "
                             f"run `tessera models pull {entry.name}`")
        return [result]
    return [result for entry in CATALOG if (result := verify_entry(entry, model_dir)).status != "missing"]
