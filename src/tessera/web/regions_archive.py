"""Edited regions uploaded back for a re-stitch, unpacked safely: a .zip, or loose files.

An uploaded archive is untrusted. :func:`extract_archive` reads the central directory's size and member count
before Python's ``zipfile`` parses it, then admits only what a regions folder holds (image files, checked by
their first bytes, and one manifest), under plain names (no ``..``, no absolute paths or drive letters, no
control characters, no duplicates, no links or special files, nothing encrypted), within bounds on members,
bytes per member, bytes in all and the compression ratio, counting bytes as they are written and leaving a
margin on the scratch disk. :func:`gather_files` takes loose uploads the same way. Every refusal is one line
naming the archive, never a server path. The re-stitch itself is :mod:`.regions`.
"""
from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import struct
import threading
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from ..errors import CancelledError, InputError, ResourceError, TesseraError
from .regions_text import HINT

MANIFEST_NAME = "manifest.json"
MAX_WEB_REGIONS = 2_000              # regions a re-stitch takes (the library's manifests may list 10,000)
MAX_MEMBERS = 3 * MAX_WEB_REGIONS + 64   # input, mask, result per region, the manifest, a few folders
MAX_CENTRAL_DIRECTORY = 8 << 20      # bytes of the archive's central directory (parsed into memory)
MAX_MEMBER_BYTES = 2 << 30           # uncompressed bytes of one member
MAX_TOTAL_BYTES = 4 << 30            # uncompressed bytes of all members together
MAX_RATIO = 100                      # uncompressed / compressed, for members over RATIO_FLOOR bytes
RATIO_FLOOR = 1 << 20                # small members (the manifest, tiny masks) may compress well
MAX_DEPTH = 8                        # folders in a member's name
DISK_MARGIN = 64 << 20               # free bytes left on the scratch disk after extraction
CHUNK = 1 << 20
_IGNORED = re.compile(r"(^|/)(__MACOSX/.*|\.DS_Store|Thumbs\.db|desktop\.ini)$", re.IGNORECASE)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")


@dataclass(frozen=True)
class ArchiveLimits:
    """The bounds of an uploaded archive (see the module's docstring)."""

    members: int = MAX_MEMBERS
    central_directory: int = MAX_CENTRAL_DIRECTORY
    member_bytes: int = MAX_MEMBER_BYTES
    total_bytes: int = MAX_TOTAL_BYTES
    ratio: float = MAX_RATIO


LOOSE = "the uploaded files"  # what messages call loose uploads (manifest.json and region files, no .zip)


def _named(archive: str, name: str) -> str:
    """How a message names one entry: ``member 'x.png'`` of an archive, ``file 'x.png'`` of loose uploads."""
    return f"{'file' if archive == LOOSE else 'member'} {name!r}"


def _refuse(name: str, why: str) -> InputError:
    return InputError(f"{name}: {why} ({HINT})")


def _central_directory(file: BinaryIO, size: int, name: str) -> tuple[int, int]:
    """``(entries, central directory bytes)`` from the archive's end record (zip64 too), as zipfile finds it:
    at the very end, else the last signature in the 64 KiB comment area. Read before zipfile parses anything."""
    tail_size = min(size, 22 + 65535 + 20)
    file.seek(size - tail_size)
    tail = file.read(tail_size)
    at = len(tail) - 22 if tail[-22:-18] == b"PK\x05\x06" else tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        raise _refuse(name, "not a .zip archive")
    entries, directory_bytes = struct.unpack("<HI", tail[at + 10:at + 16])
    if entries == 0xFFFF or directory_bytes == 0xFFFFFFFF or tail[at + 16:at + 20] == b"\xff\xff\xff\xff":
        locator = tail[at - 20:at] if at >= 20 else b""
        if locator[:4] != b"PK\x06\x07":
            raise _refuse(name, "a damaged .zip archive (no zip64 end record)")
        (offset,) = struct.unpack("<Q", locator[8:16])
        if offset > size - 56:
            raise _refuse(name, "a damaged .zip archive (zip64 end record out of the file)")
        file.seek(offset)
        record = file.read(56)
        if record[:4] != b"PK\x06\x06":
            raise _refuse(name, "a damaged .zip archive (bad zip64 end record)")
        entries, directory_bytes = struct.unpack("<QQ", record[32:48])
    return entries, directory_bytes


def member_parts(name: str, archive: str) -> tuple[str, ...]:
    """The folders and file name of a member as a checked relative path; InputError for anything that could
    land outside the scratch folder or that no file system takes."""
    if not name or any(ord(ch) < 32 or ch == "\x7f" for ch in name):
        raise _refuse(archive, f"{_named(archive, name)} has a control character in its name")
    normal = name.replace("\\", "/")
    if normal.startswith("/") or re.match(r"^[A-Za-z]:", normal):
        raise _refuse(archive, f"{_named(archive, name)} has an absolute path")
    parts = tuple(part for part in normal.split("/") if part not in ("", "."))
    if ".." in parts:
        raise _refuse(archive, f"{_named(archive, name)} leads out of its folder (..)")
    if not parts:
        raise _refuse(archive, f"{_named(archive, name)} has no name")
    if len(parts) > MAX_DEPTH or any(len(os.fsencode(part)) > 255 for part in parts):
        raise _refuse(archive, f"{_named(archive, name[:60])}… is nested too deep or has too long a name")
    return parts


def _kind(info: zipfile.ZipInfo) -> str:
    """``dir``, ``file``, or what else the member's Unix mode says it is (``symbolic link``, ``device``...)."""
    mode = info.external_attr >> 16
    if info.is_dir() or stat.S_ISDIR(mode):
        return "dir"
    if stat.S_IFMT(mode) == 0 or stat.S_ISREG(mode):  # no type bits: an archiver that records permissions only
        return "file"
    if stat.S_ISLNK(mode):
        return "symbolic link"
    return "special file"


def is_image_start(head: bytes) -> bool:
    """Whether ``head`` (a file's first bytes) starts an image format tessera reads for region files."""
    return (head.startswith(b"\x89PNG\r\n\x1a\n") or head.startswith(b"\xff\xd8\xff")
            or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")
            or head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+") or head.startswith(b"BM"))


@dataclass
class _Plan:
    """What an archive or a set of files will put into the scratch folder."""

    files: list[tuple[tuple[str, ...], Any, int]] = field(default_factory=list)  # parts, source, declared size
    names: set[tuple[str, ...]] = field(default_factory=set)
    folders: set[tuple[str, ...]] = field(default_factory=set)
    manifest: tuple[str, ...] | None = None
    total: int = 0


def _admit(plan: _Plan, parts: tuple[str, ...], source: Any, size: int, archive: str, limits: ArchiveLimits,
           member: str) -> None:
    """Add one file to ``plan`` after the checks of its name, kind and size."""
    key = tuple(parts)
    if key in plan.names or key in plan.folders:
        raise _refuse(archive, f"{_named(archive, member)} is in it twice")
    plan.names.add(key)
    suffix = PurePosixPath(parts[-1]).suffix.lower()
    if parts[-1].lower() == MANIFEST_NAME:
        if plan.manifest is not None:
            raise _refuse(archive, f"it holds more than one {MANIFEST_NAME}")
        plan.manifest = key
    elif suffix not in IMAGE_SUFFIXES:
        raise _refuse(archive, f"{_named(archive, member)} is neither an image file nor the {MANIFEST_NAME}")
    if size > limits.member_bytes:
        raise _refuse(archive, f"{_named(archive, member)} declares {size:,} bytes, over the limit of "
                               f"{limits.member_bytes:,}")
    plan.total += size
    if plan.total > limits.total_bytes:
        raise _refuse(archive, f"its files declare over {limits.total_bytes:,} bytes in all")
    plan.files.append((key, source, size))


def _check_disk(scratch: Path, need: int) -> None:
    free = shutil.disk_usage(scratch).free
    if need + DISK_MARGIN > free:
        raise ResourceError(f"the edited regions need {need / (1 << 20):.0f} MiB on the server's disk, "
                            f"{free / (1 << 20):.0f} MiB are free")


def _write_member(scratch: Path, parts: tuple[str, ...], source: BinaryIO, declared: int, archive: str,
                  member: str, is_manifest: bool) -> int:
    """Copy one member into ``scratch`` (a new file, never through a link), at most ``declared`` bytes; return
    the bytes written. An image member must start as an image does."""
    parent = scratch.joinpath(*parts[:-1])
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise _refuse(archive, f"{_named(archive, member)} clashes with another member of the same name") from None
    if not Path(os.path.realpath(parent)).is_relative_to(Path(os.path.realpath(scratch))):
        raise _refuse(archive, f"{_named(archive, member)} leads out of its folder")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        descriptor = os.open(parent / parts[-1], flags, 0o600)
    except (FileExistsError, NotADirectoryError, IsADirectoryError):
        raise _refuse(archive, f"{_named(archive, member)} clashes with another member of the same name") from None
    written = 0
    with os.fdopen(descriptor, "wb") as out:
        while True:
            chunk = source.read(CHUNK)
            if not chunk:
                break
            if written == 0 and not is_manifest and not is_image_start(chunk[:16]):
                raise _refuse(archive, f"{_named(archive, member)} is not an image file (its content is no PNG, JPEG, "
                                       f"WEBP, TIFF or BMP)")
            written += len(chunk)
            if written > declared:
                raise _refuse(archive, f"{_named(archive, member)} holds more bytes than it declares (a zip bomb?)")
            out.write(chunk)
    if written == 0:
        raise _refuse(archive, f"{_named(archive, member)} is empty")
    return written


def check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise CancelledError("cancelled")


def extract_archive(archive: str | os.PathLike[str], scratch: str | os.PathLike[str], *,
                    name: str | None = None, limits: ArchiveLimits = ArchiveLimits(),
                    cancel: threading.Event | None = None) -> Path:
    """Extract the uploaded .zip ``archive`` into the empty folder ``scratch``, safely (see the module's
    docstring); return the path of its manifest.json. ``name`` names the archive in messages (default: its
    file name). Nothing is written before every member's name, kind and declared size passed; ``cancel`` is
    looked at between members (CancelledError)."""
    archive, scratch = Path(archive), Path(scratch)
    shown = name or archive.name
    try:
        size = archive.stat().st_size
        with open(archive, "rb") as file:
            entries, directory_bytes = _central_directory(file, size, shown)
            if entries > limits.members:
                raise _refuse(shown, f"it has {entries:,} members, over the limit of {limits.members:,}")
            if directory_bytes > limits.central_directory:
                raise _refuse(shown, f"its list of members takes {directory_bytes:,} bytes, over the limit of "
                                     f"{limits.central_directory:,}")
            file.seek(0)
            with zipfile.ZipFile(file) as zipped:
                members = zipped.infolist()
                if len(members) > limits.members:
                    raise _refuse(shown, f"it has {len(members):,} members, over the limit of {limits.members:,}")
                plan = _plan_archive(members, shown, limits)
                _check_disk(scratch, plan.total)
                written = 0
                for parts, info, declared in plan.files:
                    check_cancel(cancel)
                    with zipped.open(info) as source:
                        written += _write_member(scratch, parts, source, declared, shown, info.filename,
                                                 parts == plan.manifest)
                    if written > limits.total_bytes:
                        raise _refuse(shown, f"its files hold over {limits.total_bytes:,} bytes in all")
    except zipfile.BadZipFile as error:
        raise _refuse(shown, f"a damaged .zip archive ({error})") from None
    except (NotImplementedError, RuntimeError) as error:  # an unknown compression method, encryption
        raise _refuse(shown, f"a .zip archive that cannot be read here ({error})") from None
    except (EOFError, zipfile.LargeZipFile, struct.error, ValueError) as error:
        if isinstance(error, TesseraError):
            raise
        raise _refuse(shown, f"a damaged .zip archive ({error})") from None
    except OSError as error:
        raise _os_error(shown, error) from None
    return scratch.joinpath(*plan.manifest)


def _os_error(shown: str, error: OSError) -> TesseraError:
    if error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return ResourceError(f"{shown}: the server's disk is full while extracting the edited regions")
    return InputError(f"{shown}: cannot be read or extracted ({error.strerror or error})")


def _plan_archive(members: Sequence[zipfile.ZipInfo], shown: str, limits: ArchiveLimits) -> _Plan:
    plan = _Plan()
    for info in members:
        parts = member_parts(info.filename, shown)
        if _IGNORED.search("/".join(parts)):
            continue  # what macOS and Windows add to archives they make: never extracted
        kind = _kind(info)
        if kind == "dir":
            plan.folders.add(parts)
            continue
        if kind != "file":
            raise _refuse(shown, f"{_named(shown, info.filename)} is a {kind}, not a file")
        if info.flag_bits & 0x1:
            raise _refuse(shown, f"{_named(shown, info.filename)} is encrypted")
        _admit(plan, parts, info, info.file_size, shown, limits, info.filename)
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > RATIO_FLOOR and ratio > limits.ratio:
            raise _refuse(shown, f"{_named(shown, info.filename)} expands {ratio:,.0f} times (a zip bomb?)")
    if plan.manifest is None:
        raise _refuse(shown, f"it holds no {MANIFEST_NAME}")
    return plan


def gather_files(files: Sequence[str | os.PathLike[str]], scratch: str | os.PathLike[str], *,
                 limits: ArchiveLimits = ArchiveLimits(), cancel: threading.Event | None = None) -> Path:
    """Copy loose uploads (a manifest.json and region files) into the empty folder ``scratch`` by file name,
    under the same rules as an archive's members; return the manifest's path."""
    scratch = Path(scratch)
    shown = LOOSE
    if len(files) > limits.members:
        raise _refuse(shown, f"{len(files):,} files are over the limit of {limits.members:,}")
    plan = _Plan()
    for path in map(Path, files):
        parts = member_parts(path.name, shown)
        try:
            size = os.stat(path).st_size
        except OSError:
            raise InputError(f"{path.name}: the upload is gone (the page was open too long?): upload it "
                             f"again") from None
        _admit(plan, parts, path, size, shown, limits, path.name)
    if plan.manifest is None:
        raise _refuse(shown, f"they hold no {MANIFEST_NAME}")
    _check_disk(scratch, plan.total)
    from ..tasks.manifest_checks import open_regular

    for parts, path, declared in plan.files:
        check_cancel(cancel)
        with os.fdopen(open_regular(Path(path), "upload"), "rb") as source:
            _write_member(scratch, parts, source, declared, shown, path.name, parts == plan.manifest)
    return scratch.joinpath(*plan.manifest)
