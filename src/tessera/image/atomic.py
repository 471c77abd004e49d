"""Atomic file writing: a temporary file beside the target, synced, then renamed over it.

Every file tessera writes goes through :func:`write_atomically`: the target is either untouched or complete.
Temporary files are named after their target and their writer (a hash of the host name and the process id), so
that what a killed writer left behind can be told from the file of a writer still at work, and removed by a
later write into the same folder, or a later command's check of it (:func:`remove_stale_temporaries`). Scratch
folders (:func:`scratch_folder`: the patches of a streamed inpaint) are named and removed the same way.

A write may be watched (:class:`WatchedFile`): given a cancel event, every ``write()`` of the encoder checks it
and the event is checked once more right before the rename, so a cancelled save never leaves a file; given a
progress callback, it is told the bytes written so far.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import io
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from tessera.errors import CancelledError, InputError, OutputError, ResourceError

__all__ = [
    "STALE_TEMPORARY_SECONDS",
    "WatchedFile",
    "check_writable",
    "copy_atomically",
    "remove_stale_temporaries",
    "same_file",
    "scratch_folder",
    "write_atomically",
]


def copy_atomically(source: Path, target: Path) -> None:
    """Copy ``source``'s bytes to ``target`` (an unchanged copy, not a re-encoding), atomically, keeping its times."""
    import shutil

    def copy(file: BinaryIO) -> None:
        with open(source, "rb") as original:
            shutil.copyfileobj(original, file)

    write_atomically(Path(target), copy, "copy")
    shutil.copystat(source, target)


def same_file(first: Path, second: Path) -> bool:
    """Whether two paths name one file (by inode where both exist, else by resolved path)."""
    try:
        return os.path.samefile(first, second)
    except OSError:
        return first.resolve() == second.resolve()


def write_atomically(path: Path, write: Callable[[BinaryIO], None], format_name: str = "file", *,
                     cancel: threading.Event | None = None,
                     progress: Callable[[int], None] | None = None) -> None:
    """Let ``write`` fill a temporary file beside ``path``, sync it, then rename it over ``path``.

    Whatever fails, ``path`` is either untouched or complete and the temporary file is gone: any exception
    the process survives (KeyboardInterrupt included, and SIGTERM, which the CLI turns into one) removes it.
    What a killed writer leaves behind is removed by a later write into the same folder
    (:func:`remove_stale_temporaries`). OS errors become OutputError (ResourceError when the disk is full).
    Every file tessera writes goes through here.

    ``cancel`` (an event) and ``progress`` (called with the file's size so far) make the write watched:
    ``write`` then receives a :class:`WatchedFile`, each of whose writes checks the event, and the event is
    checked again right before the rename; a set event raises :class:`~tessera.errors.CancelledError` and
    leaves nothing behind. An encoder that computes its whole output before writing it (OpenCV, Pillow's WEBP)
    can only be stopped once it starts writing, or before the rename. Without either, ``write`` gets the plain
    file, as before.
    """
    path = Path(path)
    _check_cancel(cancel)
    _sweep_now_and_then(path.parent)
    temporary: Path | None = None
    try:
        temporary, file = _create_temporary(path)
        with file:
            watched = cancel is not None or progress is not None
            write(WatchedFile(file, cancel, progress) if watched else file)  # type: ignore[arg-type]
            file.flush()
            os.fsync(file.fileno())
        _check_cancel(cancel)  # the last moment a cancel can keep the target untouched
        os.replace(temporary, path)
    except BaseException as error:
        if temporary is not None:
            _remove_if_present(temporary)
        if isinstance(error, OSError):
            raise _output_error(path, error) from None
        if isinstance(error, ValueError) and not isinstance(error, InputError):
            raise OutputError(f"{path}: cannot encode as {format_name} ({error})") from None
        raise
    _sync_folder(path.parent)


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise CancelledError("cancelled while saving: nothing was written")


class WatchedFile:
    """A binary file that checks a cancel event before each write and reports the bytes written (the file's
    size so far: :attr:`written`).

    What :func:`write_atomically` hands an encoder when it is watched. Large writes are split into pieces of
    :attr:`PIECE` bytes, each checked and reported, so that one big buffer (an encoder's whole output) can
    still be stopped half-way and shows progress. It has no ``fileno()``: libraries that would write to the
    descriptor directly (Pillow's JPEG encoder, numpy's ``tofile``) write through :meth:`write` instead (for
    tifffile without imagecodecs that means a copy of the uncompressed strips: documented cost of watching).
    Reads, seeks and the rest go to the file.
    """

    PIECE = 4 << 20

    def __init__(self, file: BinaryIO, cancel: threading.Event | None = None,
                 progress: Callable[[int], None] | None = None):
        self._file = file
        self._cancel = cancel
        self._progress = progress
        self.written = 0

    def write(self, data: Any) -> int:
        try:
            view = memoryview(data).cast("B")
        except TypeError:  # not a contiguous buffer
            view = memoryview(bytes(data))
        for start in range(0, max(len(view), 1), self.PIECE):
            _check_cancel(self._cancel)
            piece = view[start:start + self.PIECE]
            if piece:
                self._file.write(piece)
                self.written = max(self.written, self._file.tell())  # rewritten headers are not counted twice
                if self._progress is not None:
                    self._progress(self.written)
        return len(view)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def fileno(self) -> int:
        raise io.UnsupportedOperation("a watched file is written through write()")

    def read(self, size: int = -1) -> bytes:
        return self._file.read(size)

    def readinto(self, buffer: Any) -> int:
        return self._file.readinto(buffer)  # type: ignore[attr-defined]

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def truncate(self, size: int | None = None) -> int:
        return self._file.truncate(size)

    def flush(self) -> None:
        self._file.flush()

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    @property
    def closed(self) -> bool:
        return self._file.closed

    @property
    def name(self) -> Any:
        return self._file.name

    @property
    def mode(self) -> str:
        return getattr(self._file, "mode", "wb")


def check_writable(path: Path) -> None:
    """Create and remove a temporary file beside ``path``: the one sure test that the folder takes new files.
    Commands call it before any work, so it is also when what killed writers left there is removed."""
    _sweep_now_and_then(path.parent)
    temporary, file = _create_temporary(path)
    file.close()
    _remove_if_present(temporary)


def _remove_if_present(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# Temporary files are named ".TARGET.HOST-PID-RANDOM.tessera-tmp": the host (a hash of its name) and the
# process id of the writer tell a later process whether the writer is gone, so that what a killed writer left
# can be removed without ever touching the file of a writer still at work.
_TEMPORARY_SUFFIX = ".tessera-tmp"
_SCRATCH_SUFFIX = ".tessera-scratch"  # a folder, named like a temporary file (its "target" is "scratch")
_TEMPORARY_NAME = re.compile(r"\.(?P<target>.+)\.(?P<host>[0-9a-f]{8})-(?P<pid>[0-9]{1,10})-[0-9a-f]{8}"
                             r"(?P<suffix>" + re.escape(_TEMPORARY_SUFFIX) + "|" + re.escape(_SCRATCH_SUFFIX) + ")")
_TARGET_NAME_BYTES = 120  # of the target's name kept in the temporary's (file names stop at 255 bytes)
STALE_TEMPORARY_SECONDS = 7 * 24 * 3600
"""A temporary file untouched for this long is stale whoever wrote it (a process id may have been reused)."""
_SWEEP_INTERVAL_SECONDS = 3600.0
_SWEPT_FOLDERS_KEPT = 10_000
_last_sweeps: dict[str, float] = {}  # folder -> monotonic time of this process's last sweep of it


@contextlib.contextmanager
def scratch_folder(parent: str | os.PathLike[str]) -> Iterator[Path]:
    """A new folder in ``parent`` for intermediate files, removed with its contents when the block ends, however
    it ends (SIGTERM included, which the CLI turns into an exception). Named after its writer like a temporary
    file, so that one a killed process left behind is removed by the next sweep of ``parent``."""
    import shutil

    parent = Path(parent)
    _sweep_now_and_then(parent)
    for _ in range(100):
        folder = parent / f".scratch.{_writer_tag()}{_SCRATCH_SUFFIX}"
        try:
            folder.mkdir()
            break
        except FileExistsError:
            continue
        except OSError as error:
            raise _output_error(folder, error) from None
    else:
        raise OutputError(f"{parent}: cannot create a scratch folder")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _create_temporary(path: Path) -> tuple[Path, BinaryIO]:
    """Create a new file beside ``path`` named after it and its writer (exclusive creation; the umask applies)."""
    for _ in range(100):
        name = f".{_shortened(path.name)}.{_writer_tag()}{_TEMPORARY_SUFFIX}"
        temporary = path.with_name(name)
        try:
            return temporary, open(temporary, "x+b")
        except FileExistsError:
            continue
        except OSError as error:
            raise _output_error(path, error) from None
    raise OutputError(f"{path}: cannot create a temporary file in {path.parent}")


def _writer_tag() -> str:
    """``HOST-PID-RANDOM``: the part of a temporary name that says which process wrote it (see _TEMPORARY_NAME)."""
    return f"{_host_tag()}-{os.getpid()}-{secrets.token_hex(4)}"


def _shortened(name: str) -> str:
    """``name`` cut to at most _TARGET_NAME_BYTES bytes on disk, between two characters."""
    while len(os.fsencode(name)) > _TARGET_NAME_BYTES:
        name = name[:-1]
    return name


@functools.lru_cache(maxsize=1)
def _host_tag() -> str:
    """Eight hex digits naming this machine in temporary file names (folders may be shared between machines)."""
    return hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def _process_is_running(pid: int) -> bool:
    """Whether process ``pid`` of this machine exists; True when that cannot be known (never delete on doubt)."""
    if pid < 1:
        return False
    if os.name != "posix":
        return True  # os.kill(pid, 0) would terminate the process on Windows
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):
        return True  # PermissionError: it exists, under another user
    return True


def _is_stale_temporary(entry: os.DirEntry[str], now: float) -> bool:
    """A temporary file (or scratch folder) of tessera's naming whose writer is gone (this machine, no such
    process) or that nobody has touched for :data:`STALE_TEMPORARY_SECONDS`."""
    match = _TEMPORARY_NAME.fullmatch(entry.name)
    if match is None:
        return False
    folder = match["suffix"] == _SCRATCH_SUFFIX
    try:
        if not (entry.is_dir(follow_symlinks=False) if folder else entry.is_file(follow_symlinks=False)):
            return False
        modified = entry.stat(follow_symlinks=False).st_mtime
    except OSError:
        return False
    if now - modified > STALE_TEMPORARY_SECONDS:
        return True
    return match["host"] == _host_tag() and not _process_is_running(int(match["pid"]))


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files and scratch folders that killed writers (``kill -9``, a power cut) left in
    ``folder``; return them.

    Only files and folders of tessera's own temporary naming are considered, and only those whose writer process
    is gone or that are older than :data:`STALE_TEMPORARY_SECONDS`: a live process's temporary file is never
    touched.
    """
    import shutil

    removed: list[Path] = []
    now = time.time()
    try:
        entries = os.scandir(folder)
    except OSError:
        return removed
    with entries:
        for entry in entries:
            if not _is_stale_temporary(entry, now):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
            except OSError:
                continue
            removed.append(Path(entry.path))
    return removed


def _sweep_now_and_then(folder: Path) -> None:
    """Remove stale temporary files from ``folder`` on this process's first write there, then at most hourly
    (a batch writing thousands of files into one folder lists it once an hour, not once per file)."""
    key = os.path.abspath(folder)
    now = time.monotonic()
    last = _last_sweeps.get(key)
    if last is not None and now - last < _SWEEP_INTERVAL_SECONDS:
        return
    if len(_last_sweeps) > _SWEPT_FOLDERS_KEPT:  # a long-running server writes into ever new folders
        _last_sweeps.clear()
    _last_sweeps[key] = now
    remove_stale_temporaries(folder)


def _output_error(path: Path, error: OSError) -> Exception:
    reason = error.strerror or str(error) or type(error).__name__
    if error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return ResourceError(f"{path}: cannot write, disk full ({reason})")
    if isinstance(error, PermissionError):
        return OutputError(f"{path}: cannot write, permission denied")
    return OutputError(f"{path}: cannot write ({reason})")


def _sync_folder(folder: Path) -> None:
    """Make the rename durable where the platform allows syncing a folder (POSIX)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
