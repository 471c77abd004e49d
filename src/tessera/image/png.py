"""PNG's own structure, read and written without a codec: its header, its compressed rows, its chunks.

Pillow takes a zlib stream that ends before the last row as the end of the picture and leaves the rows it lacks
black; tessera tells a truncated PNG apart by a sentinel planted in the row written last
(:func:`plant_sentinel`), or by inflating the rows once where it cannot (:func:`check_png_rows`). On the write
side, the iCCP and eXIf chunks OpenCV cannot write are inserted by hand, and 16-bit gray+alpha, which neither
Pillow nor OpenCV writes, is encoded here.
"""

from __future__ import annotations

import io
import secrets
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from tessera.errors import ImageReadError

from . import decode  # BAND_BYTES is read from the module: one setting for every band (tests shrink it)
from .decode import corrupt
from .exif import EXIF_PREFIX

__all__ = [
    "PNG_SAMPLES",
    "check_png_rows",
    "encode_png16_gray_alpha",
    "plant_sentinel",
    "png_header",
    "png_last_row",
    "rows_missing",
    "sentinel_intact",
    "with_png_metadata",
]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # samples a pixel of each PNG colour type


def png_header(file: BinaryIO) -> tuple[int, int, bool]:
    """Bit depth, colour type and interlacing from a PNG's IHDR (8-bit RGB, not interlaced, when there is none)."""
    file.seek(0)
    header = file.read(29)
    if len(header) < 29 or not header.startswith(_PNG_SIGNATURE):
        return 8, 2, False
    return header[24], header[25], header[28] == 1


def png_last_row(file: BinaryIO, height: int) -> int | None:
    """The row a PNG decoder writes last: the last one, or with Adam7 the last odd one (that of the last pass);
    None for an interlaced picture one row high, whose last pass writes part of a row only."""
    if not png_header(file)[2]:
        return height - 1
    if height < 2:
        return None
    return height - 1 if (height - 1) % 2 else height - 2


def plant_sentinel(row: np.ndarray) -> bytes:
    """Fill ``row`` with random bytes before decoding, and return them (see :func:`sentinel_intact`)."""
    pattern = secrets.token_bytes(row.nbytes)
    row[:] = np.frombuffer(pattern, dtype=np.uint8)
    return pattern


def sentinel_intact(row: np.ndarray, pattern: bytes) -> bool:
    """Whether the decoder left ``row`` as planted: it never wrote its last row, the data ended early.

    Pillow takes a zlib stream that ends before the last row as the end of the picture and leaves the rows it
    lacks black; random bytes the decoded row would have to match exactly tell the two apart for free.
    """
    return row.tobytes() == pattern


def rows_missing(path: Path, size: tuple[int, int]) -> ImageReadError:
    width, height = size
    return ImageReadError(
        f"{path}: truncated or corrupt image data (its compressed rows end before the {height:,} rows of "
        f"{width:,} pixels its header claims)"
    )


def check_png_rows(file: BinaryIO, path: Path, width: int, height: int) -> None:
    """Refuse a PNG whose compressed data holds fewer rows than its header claims, by inflating it.

    The stream is inflated once, its output counted and thrown away (a band of memory at most), before any pixel
    is allocated. It costs a third of decoding, so it is used only where the last row cannot be checked instead
    (:func:`sentinel_intact`): an interlaced picture one row high, a Pillow that cannot decode into our memory.
    """
    depth, colour_type, interlaced = png_header(file)
    bits = depth * PNG_SAMPLES.get(colour_type, 1)
    expected = _png_filtered_bytes(width, height, bits, interlaced)
    inflater = zlib.decompressobj()
    produced = 0
    try:
        for piece in _png_data_pieces(file):
            while piece and produced < expected:
                produced += len(inflater.decompress(piece, decode.BAND_BYTES))
                piece = inflater.unconsumed_tail
            if produced >= expected or inflater.eof:
                break
    except zlib.error as error:
        raise corrupt(path, error) from None
    if produced < expected:
        raise ImageReadError(
            f"{path}: truncated or corrupt image data (its compressed rows hold {produced:,} of the {expected:,} "
            f"bytes that {width}x{height} pixels need)"
        )


def _png_filtered_bytes(width: int, height: int, bits: int, interlaced: bool) -> int:
    """The bytes of a PNG's filtered rows (a filter byte, then the samples) once inflated; Adam7 when interlaced."""
    if not interlaced:
        return height * (1 + (width * bits + 7) // 8)
    total = 0
    for top, left, step_y, step_x in ((0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2),
                                      (0, 1, 2, 2), (1, 0, 2, 1)):  # fmt: skip
        rows, columns = -(-(height - top) // step_y), -(-(width - left) // step_x)
        if rows > 0 and columns > 0:
            total += rows * (1 + (columns * bits + 7) // 8)
    return total


def _png_data_pieces(file: BinaryIO) -> Iterator[bytes]:
    """The payload of a PNG's IDAT chunks, in pieces of at most 1 MiB (chunk CRCs not checked)."""
    file.seek(len(_PNG_SIGNATURE))
    started = False
    while True:
        header = file.read(8)
        if len(header) < 8:
            return
        length, kind = struct.unpack(">I4s", header)
        if kind != b"IDAT":
            if started or kind == b"IEND":
                return
            file.seek(length + 4, io.SEEK_CUR)
            continue
        started = True
        while length:
            piece = file.read(min(length, 1 << 20))
            if not piece:
                return
            length -= len(piece)
            yield piece
        file.seek(4, io.SEEK_CUR)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def with_png_metadata(png: bytes, icc_profile: bytes | None, exif: bytes | None) -> bytes:
    """Insert iCCP and eXIf chunks right after IHDR (OpenCV before 4.12 cannot write them)."""
    chunks = b""
    if icc_profile:
        chunks += _png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc_profile))
    if exif:
        chunks += _png_chunk(b"eXIf", exif.removeprefix(EXIF_PREFIX))
    if not chunks:
        return png
    end_of_header = len(_PNG_SIGNATURE) + 8 + 13 + 4
    if png[len(_PNG_SIGNATURE) + 4 : len(_PNG_SIGNATURE) + 8] != b"IHDR":
        raise ValueError("the PNG encoder produced an unexpected header")
    return png[:end_of_header] + chunks + png[end_of_header:]


def encode_png16_gray_alpha(channels: np.ndarray) -> bytes:
    """A 16-bit gray+alpha PNG: every row with the Up filter, deflated, in IDAT chunks of at most 1 MiB."""
    height, width = channels.shape[:2]
    rows = np.ascontiguousarray(channels, dtype=">u2").view(np.uint8).reshape(height, width * 4)
    filtered = np.empty((height, width * 4 + 1), dtype=np.uint8)
    filtered[:, 0] = 2  # Up: each byte minus the byte above it (the row above the first is zero)
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
    compressed = zlib.compress(filtered.tobytes(), 3)
    header = struct.pack(">IIBBBBB", width, height, 16, 4, 0, 0, 0)
    step = 1 << 20
    data = b"".join(_png_chunk(b"IDAT", compressed[at : at + step]) for at in range(0, len(compressed), step))
    return _PNG_SIGNATURE + _png_chunk(b"IHDR", header) + data + _png_chunk(b"IEND", b"")
