"""Reading a manifest someone else may have written: the checks the inpaint and face manifests share.

``--save-regions`` and ``--save-faces`` folders are meant to be edited by hand, shared and sent around, so a
manifest and the files it names are untrusted input. These helpers read a manifest as a bounded regular file
(never blocking on a FIFO), check numbers are JSON integers in range, and resolve every file name it lists to a
regular file inside the manifest's own folder (no ``..``, no absolute path, no symbolic link leading out). Each
failure is one :class:`~tessera.errors.InputError` line that names the manifest.
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path, PurePath, PureWindowsPath
from typing import Any

import numpy as np

from ..errors import InputError, OutputError
from ..image.atomic import write_atomically
from ..image.pixels import from_float, to_float

MAX_MANIFEST_BYTES = 16 << 20        # a manifest of 10,000 entries takes about 3 MB
MAX_SIDE = 2**31 - 1                 # the largest photo side a manifest may state
DTYPES = ("uint8", "uint16", "float32")


def write_json(path: Path, data: Any) -> Path:
    """Write ``data`` as JSON atomically (temporary file in the folder, then rename)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    text = json.dumps(data, indent=2) + "\n"
    write_atomically(path, lambda file: file.write(text.encode("utf-8")), "JSON")
    return path


def regular_file(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` if it is a regular file; InputError otherwise (missing, a folder, a FIFO, a device...)."""
    path = Path(path)
    os.close(open_regular(path, what))
    return path


def open_regular(path: Path, what: str) -> int:
    """A read-only descriptor of the regular file ``path``; InputError for anything else.

    Checked with ``stat`` before anything opens it, then opened without blocking (``O_NONBLOCK``) and checked
    again to be that same regular file: a FIFO would block its reader for ever, and a device never ends.
    """
    try:
        before = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"{what} {path} does not exist") from None
    except (OSError, ValueError) as error:
        raise InputError(f"{what} {path} cannot be read ({getattr(error, 'strerror', None) or error})") from None
    if not stat.S_ISREG(before.st_mode):
        raise InputError(f"{what} {path} is not a regular file")
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as error:
        raise InputError(f"{what} {path} cannot be read ({error.strerror or error})") from None
    opened = os.fstat(descriptor)
    if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (before.st_dev, before.st_ino):
        os.close(descriptor)
        raise InputError(f"{what} {path} changed while it was being checked")
    return descriptor


def read_json(path: Path, written_by: str) -> Any:
    """The JSON document in the regular file ``path`` (at most MAX_MANIFEST_BYTES), read without blocking.

    ``written_by`` names the option that writes such manifests, for the message about an oversized one."""
    try:
        with os.fdopen(open_regular(path, "manifest"), "rb") as file:
            data = file.read(MAX_MANIFEST_BYTES + 1)
    except OSError as error:
        raise InputError(f"manifest {path} cannot be read ({error.strerror or error})") from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise InputError(f"manifest {path} is over {MAX_MANIFEST_BYTES >> 20} MiB: not one {written_by} wrote")
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        raise InputError(f"manifest {path} is not a readable JSON file: {reason}") from None


def shown(value: Any) -> str:
    """``repr(value)`` cut to a length that keeps an error message on one readable line."""
    text = " ".join(repr(value).split())
    return text if len(text) <= 60 else text[:57] + "..."


def whole_number(value: Any, low: int, high: int) -> int | None:
    """``value`` when it is a JSON integer (not a boolean, not a float) in ``low..high``, else None."""
    if type(value) is int and low <= value <= high:
        return value
    return None


def int_field(data: dict[str, Any], key: str, low: int, high: int, path: Path) -> int:
    """``data[key]`` as a whole number in ``low..high``; InputError naming the manifest otherwise."""
    value = whole_number(data.get(key), low, high)
    if value is None:
        raise InputError(f"manifest {path}: {key!r} must be a whole number from {low} to {high:,}, "
                         f"got {shown(data.get(key))}")
    return value


def folder_file(name: Any, kind: str, folder: Path, inside: Path, path: Path) -> Path:
    """The file ``name`` a manifest lists as a checked path: relative, inside the manifest's folder ``inside``
    (its real path) once symbolic links are followed, and a regular file. ``kind`` names it in messages."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise InputError(f"manifest {path}: an entry lacks its {kind} file name (got {shown(name)})")
    relative = PurePath(name)
    if relative.is_absolute() or PureWindowsPath(name).drive or ".." in relative.parts:
        raise InputError(f"manifest {path}: {kind} file {shown(name)} is not inside the manifest's folder")
    real = Path(os.path.realpath(folder / relative))
    if not real.is_relative_to(inside):
        raise InputError(f"manifest {path}: {kind} file {shown(name)} leads out of the manifest's folder "
                         f"(a symbolic link)")
    return regular_file(real, f"{kind} file")


def load_pixels(path: Path, shape: tuple[int, int], dtype: np.dtype, gray: bool, what: str) -> np.ndarray:
    """A listed (possibly hand-edited) image file as HxWx3 pixels of ``dtype``, decoded within ``shape``."""
    from ..image.read import load_image

    picture = load_image(path, max_pixels=shape[0] * shape[1])
    pixels = picture.pixels
    if pixels.shape[:2] != shape:
        raise InputError(f"{what} {path} is {pixels.shape[1]}x{pixels.shape[0]}, expected {shape[1]}x{shape[0]}")
    if pixels.dtype != dtype:
        pixels = from_float(to_float(pixels), dtype)
    if gray:
        pixels = np.repeat(pixels[:, :, :1], 3, axis=2)
    return pixels
