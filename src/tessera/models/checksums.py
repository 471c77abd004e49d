"""Checksums of cached model files: their digests, the records pulls leave, and the checks against both.

Each pull records what it got (sha256, URL, size, what it was checked against) in ``<file>.json``
(:func:`write_record`); for models without a published checksum that record is the reference later checks compare
with, and they report such a file as "unverified", not "ok".

:func:`check_cached_file` is the check on load: a cached catalog file that does not match its published or recorded
checksum, or that has neither, is refused before anything reads it. Its hashing is remembered in
``<file>.digests.json`` against the file's size and times (:func:`cached_digests`), so it costs once per version.
:func:`verify` (``tessera models verify``) always hashes again.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import ChecksumError, ModelError, OutputError, ResourceError
from ..image.atomic import write_atomically
from .catalog import CATALOG, CatalogEntry, digests_path, get_entry, model_path, record_path

CHUNK = 1 << 20  # bytes read or copied at a time, by the hashing here and by the transfers of a pull
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Digests:
    """A file's sha256 and md5 (hex) and its size in bytes."""

    sha256: str
    md5: str
    size: int


def file_digests(path: str | os.PathLike[str]) -> Digests:
    """sha256 and md5 of a file, read once in chunks; ModelError naming the file when it cannot be read."""
    sha256, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    try:
        with open(path, "rb") as stream:
            while chunk := stream.read(CHUNK):
                sha256.update(chunk)
                md5.update(chunk)
                size += len(chunk)
    except OSError as error:
        raise ModelError(f"{path}: cannot read ({error.strerror or error})") from error
    return Digests(sha256.hexdigest(), md5.hexdigest(), size)


def pull_command(entry: CatalogEntry, model_dir: str | os.PathLike[str] | None) -> str:
    """The ``tessera models pull`` command line for ``entry`` in this cache, for messages."""
    flag = f" --model-dir {shlex.quote(os.fspath(model_dir))}" if model_dir is not None else ""
    return f"tessera models pull {entry.name}{flag}"


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
def stat_key(path: Path) -> dict[str, int]:
    """What identifies one version of a file without reading it: size, mtime and ctime in nanoseconds.

    ctime is in the key because, unlike mtime, it cannot be set back by hand: a file rewritten and then given its
    old mtime still counts as changed.
    """
    try:
        info = path.stat()
    except OSError as error:
        raise ModelError(f"{path}: cannot read ({error.strerror or error})") from error
    return {"size": info.st_size, "mtime_ns": info.st_mtime_ns, "ctime_ns": info.st_ctime_ns}


def remember_digests(entry: CatalogEntry, model_dir, key: dict[str, int], digests: Digests) -> None:
    """Keep ``digests`` for this version of the cached file, if it is still that version; best effort: a cache
    that cannot be written (read-only, full) only means hashing again next time."""
    path = model_path(entry, model_dir)
    if stat_key(path) != key:
        return
    text = json.dumps({"file": entry.filename, **key, "sha256": digests.sha256, "md5": digests.md5}) + "\n"
    try:
        write_atomically(digests_path(entry, model_dir), lambda file: file.write(text.encode("utf-8")), "JSON")
    except (OutputError, ResourceError):
        pass


def _remembered_digests(entry: CatalogEntry, model_dir, key: dict[str, int]) -> Digests | None:
    """The digests kept for this version (``key``) of the cached file, or None when none are, or they are
    unreadable or describe another version."""
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
    key = stat_key(model_path(entry, model_dir))
    remembered = _remembered_digests(entry, model_dir, key)
    if remembered is not None:
        return remembered
    digests = file_digests(model_path(entry, model_dir))
    remember_digests(entry, model_dir, key, digests)
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
    key = stat_key(path)
    digests = file_digests(path)
    remember_digests(entry, model_dir, key, digests)
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
