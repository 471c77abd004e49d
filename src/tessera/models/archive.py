"""Extracting the weight file of a model published inside a zip archive, bounded like the download itself.

The member's declared size must be under the pull's cap and plausible for its compressed size (weights barely
deflate, so a member declaring many times its compressed bytes is a decompression bomb), and exactly the declared
bytes must come out; anything else removes what was extracted and raises ModelError.
"""
from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO

from ..errors import ModelError
from ..options import format_bytes
from .catalog import CatalogEntry
from .checksums import CHUNK
from .transfer import RAISE_CAP

# Weights are floating-point numbers, which deflate barely at all; a member declaring many times its compressed
# bytes is a decompression bomb, not a checkpoint.
_MAX_COMPRESSION_RATIO = 50


def _copy_member(source: BinaryIO, sink: BinaryIO, declared: int, what: str) -> None:
    """Copy an archive member, refusing one that holds more or fewer bytes than it declares."""
    written = 0
    while chunk := source.read(min(CHUNK, declared - written + 1)):
        written += len(chunk)
        if written > declared:
            raise ModelError(f"{what} holds more than the {declared:,} bytes it declares")
        sink.write(chunk)
    if written != declared:
        raise ModelError(f"{what} holds {written:,} bytes, not the {declared:,} it declares")


def extract_member(entry: CatalogEntry, archive_path: Path, destination: Path, cap: int) -> None:
    """Extract ``entry.archive_member`` into ``destination``, bounded: its declared size must be under ``cap`` and
    plausible for its compressed size, and the bytes written must be exactly the declared ones. On any failure
    ``destination`` is removed."""
    what = f"{entry.download_name}: {entry.archive_member}"
    try:
        with zipfile.ZipFile(archive_path) as archive:
            info = archive.getinfo(entry.archive_member)
            if info.file_size > cap:
                raise ModelError(f"{what} declares {info.file_size:,} bytes, over the {format_bytes(cap)} cap "
                                 f"({RAISE_CAP})")
            if info.file_size > _MAX_COMPRESSION_RATIO * max(info.compress_size, 1) + CHUNK:
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
