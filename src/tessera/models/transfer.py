"""The network side of a pull: an HTTP download into a ``.part`` file, resumed and bounded.

A transfer writes into ``<download>.part``, resumes it with an HTTP Range request, and never receives more than
the published size, or, for a model whose size is not published, a cap (:func:`download_cap`: 4 GiB unless
``max_bytes`` or ``$TESSERA_MAX_DOWNLOAD_BYTES`` says otherwise). A transfer cut short keeps its ``.part`` for the
next pull to resume; one over the limit, or one that fills the disk, deletes it. A complete download waiting for
the user's trust keeps a note beside it (``<download>.part.json``: what the pull showed) so the confirming pull
does not fetch it again. Its caller is :func:`tessera.models.download.pull`.
"""
from __future__ import annotations

import errno
import http.client
import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from ..errors import ModelError, OptionError, ResourceError
from ..image.atomic import write_atomically
from ..options import format_bytes, parse_size
from .catalog import CatalogEntry
from .checksums import CHUNK, SHA256_PATTERN, Digests

# progress(bytes_done, bytes_total_or_None), called as chunks arrive
DownloadProgress = Callable[[int, "int | None"], None]

DEFAULT_MAX_DOWNLOAD = 4 << 30
MAX_DOWNLOAD_VARIABLE = "TESSERA_MAX_DOWNLOAD_BYTES"
RAISE_CAP = f"--max-download or ${MAX_DOWNLOAD_VARIABLE} raise it"  # how a user lifts the cap, for messages

DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))  # the errno values of a full disk or quota

_TIMEOUT_S = 60.0
_USER_AGENT = "tessera-model-puller/1"


class _Interrupted(Exception):
    """A transfer that stopped early; the .part file is kept so the next pull resumes it."""


class _TooLarge(Exception):
    """A transfer that announced or sent more bytes than allowed; its .part file has been deleted."""


# ---------------------------------------------------------------------------------------------------- limits
def download_cap(max_bytes: int | str | None = None) -> int:
    """The most bytes a pull may receive (or extract from an archive) for a model whose size is not published.

    ``max_bytes`` (a byte count or a size such as ``"8G"``), else ``$TESSERA_MAX_DOWNLOAD_BYTES``, else 4 GiB.
    """
    if max_bytes is not None:
        value, what = max_bytes, "maximum download size"
    else:
        value, what = os.environ.get(MAX_DOWNLOAD_VARIABLE) or DEFAULT_MAX_DOWNLOAD, f"${MAX_DOWNLOAD_VARIABLE}"
    try:
        cap = parse_size(value)
    except ValueError as error:
        raise OptionError(f"{what} {value!r}: {error}") from None
    if cap is None or cap <= 0:
        raise OptionError(f"{what} must be positive, got {value!r}")
    return cap


def transfer_limit(entry: CatalogEntry, cap: int) -> tuple[int, str]:
    """(most bytes, why) for downloading ``entry``: its published size, since one byte more already proves the
    download wrong; else ``cap``."""
    if entry.size_bytes is not None:
        return entry.size_bytes, f"the published size of {entry.size_bytes:,} bytes"
    return cap, (f"the {format_bytes(cap)} cap for a model of unpublished size "
                 f"({RAISE_CAP})")


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


def _fetch(url: str, part: Path, progress: DownloadProgress | None, limit: int) -> None:
    """Download ``url`` into ``part``, continuing an existing partial file where the server allows it.

    At most ``limit`` bytes end up in ``part``: a response that announces more, or sends more, deletes it and
    raises _TooLarge.
    """
    offset = part.stat().st_size if part.exists() else 0
    if offset > limit:  # left by an earlier, looser pull: it cannot be the start of an acceptable file
        discard(part)
        offset = 0
    try:
        response = urllib.request.urlopen(_request(url, offset), timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as error:
        if error.code != 416 or not offset:
            raise
        # Range not satisfiable: the partial file is complete, or it is longer than the file and useless.
        if _range_total(error.headers.get("Content-Range")) == offset:
            return
        discard(part)
        _fetch(url, part, progress, limit)
        return
    with response:
        if offset and response.status == 206:
            start = (response.headers.get("Content-Range") or "").removeprefix("bytes ").split("-")[0]
            if start.strip() != str(offset):
                discard(part)
                raise _Interrupted(f"server resumed at byte {start!r}, not {offset}; partial file discarded")
            mode = "ab"
        else:  # the server sent the whole file: start over
            offset, mode = 0, "wb"
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        if total is not None and total > limit:
            discard(part)
            raise _TooLarge(f"the server announces {total:,} bytes")
        done = _receive(response, part, mode, offset, limit, total, progress)
    if done > limit:
        discard(part)
        raise _TooLarge(f"the server sent more than {limit:,} bytes")
    if total is not None and done < total:
        raise _Interrupted(f"connection closed at byte {done} of {total}")


def _receive(response: BinaryIO, part: Path, mode: str, done: int, limit: int, total: int | None,
             progress: DownloadProgress | None) -> int:
    """Append the response body to ``part`` and return the byte count, stopping at the first byte past ``limit``
    (which is not written: the caller sees a count over the limit and deletes the file)."""
    with open(part, mode) as stream:
        try:
            while chunk := response.read(min(CHUNK, limit - done + 1)):
                if done + len(chunk) > limit:
                    return done + len(chunk)
                stream.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
        except (http.client.IncompleteRead, ConnectionError, TimeoutError) as error:
            raise _Interrupted(f"connection lost at byte {done}: {error}") from error
    return done


# ---------------------------------------------------------------------------------------------------- parts
def _note_path(part: Path) -> Path:
    """Beside a complete download waiting for trust: what the pull showed (URL, size, sha256)."""
    return part.with_name(part.name + ".json")


def discard(part: Path) -> None:
    """Delete a download and its note (whichever exist)."""
    part.unlink(missing_ok=True)
    _note_path(part).unlink(missing_ok=True)


def read_note(part: Path) -> dict | None:
    """The note of ``part`` when it still describes it (same size), else None (a stale note is deleted)."""
    note = _note_path(part)
    try:
        content = json.loads(note.read_text(encoding="utf-8"))
        if part.stat().st_size == content["size"] and SHA256_PATTERN.fullmatch(content["sha256"]):
            return content
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        pass
    note.unlink(missing_ok=True)
    return None


def write_note(part: Path, url: str, digests: Digests) -> None:
    """Note beside the complete download in ``part`` what the pull showed of it, for the confirming pull."""
    text = json.dumps({"url": url, "size": digests.size, "sha256": digests.sha256}, indent=2) + "\n"
    write_atomically(_note_path(part), lambda file: file.write(text.encode("utf-8")), "JSON")


# ---------------------------------------------------------------------------------------------------- mirrors
def fetch_first(entry: CatalogEntry, urls: list[str], part: Path, progress: DownloadProgress | None,
                limit: tuple[int, str]) -> str:
    """Fill ``part`` with the complete download from the first URL that works and return that URL.

    A download already complete and waiting for trust (its note matches) is used as it is. A transfer cut short
    keeps ``part`` for the next pull to resume; one over ``limit`` or hitting a full disk deletes it.
    """
    note = read_note(part)
    if note is not None:
        return str(note["url"])
    most, why = limit
    failures: list[str] = []
    for url in urls:
        try:
            _fetch(url, part, progress, most)
            return url
        except _TooLarge as error:
            failures.append(f"{url}: {error}, over {why}; the partial download was deleted")
        except (_Interrupted, urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as error:
            if isinstance(error, OSError) and error.errno in DISK_FULL:
                discard(part)
                raise ResourceError(f"disk full while downloading {entry.name} into {part.parent}; "
                                    f"the partial download was deleted") from error
            failures.append(f"{url}: {error}")
    resume = " (partial download kept; pull again to resume)" if part.exists() else ""
    detail = "; ".join(failures) or "no URL to download from"
    raise ModelError(f"could not download {entry.name}: {detail}{resume}")
