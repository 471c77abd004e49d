"""EXIF blocks: the orientation they carry (applied to decoded pixels, then reset to 1) and their TIFF surgery.

A decoder hands its pixels as stored to :func:`assemble`, which turns them upright by the EXIF orientation (in
place where it can) and makes the Picture, whose ``exif`` then says orientation 1. On the way out, the EXIF
block of a TIFF is split into IFD0 tags and EXIF/GPS sub-IFDs (:func:`append_tiff_sub_ifds`), since tifffile
writes neither pointer tag itself.
"""

from __future__ import annotations

import io
import struct
import warnings
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import tifffile
from PIL import Image, TiffImagePlugin

from .decode import DECODE_ERRORS, Decoded, FirstFrameWarning, band_rows
from .pixels import Picture

__all__ = [
    "DESCRIPTIVE_TAGS",
    "EXIF_IFD_TAG",
    "EXIF_PREFIX",
    "GPS_IFD_TAG",
    "INTEROP_IFD_TAG",
    "ORIENTATION_TAG",
    "append_tiff_sub_ifds",
    "assemble",
    "descriptive_tiff_tags",
    "exif_orientation",
    "exif_sub_ifds",
    "normalise_exif",
    "parse_exif",
    "placeholder_tag",
    "reset_orientation",
    "valid_orientation",
]

EXIF_PREFIX = b"Exif\x00\x00"
ORIENTATION_TAG = 0x0112
EXIF_IFD_TAG = 0x8769
GPS_IFD_TAG = 0x8825
INTEROP_IFD_TAG = 0xA005
# IFD0 tags that describe the photograph rather than the file layout: carried between TIFF and EXIF blocks.
DESCRIPTIVE_TAGS = (0x010E, 0x010F, 0x0110, 0x0131, 0x0132, 0x013B, 0x8298)


def assemble(
    path: Path,
    decoded: Decoded,
    *,
    orientation: int,
    icc_profile: bytes | None,
    exif: bytes | None,
    format: str | None,
) -> Picture:
    """Turn decoded pixels upright and make them a Picture; warn about an animation only now that all went well."""
    pixels = _orient(decoded.pixels, orientation)
    alpha = None if decoded.alpha is None else _orient(decoded.alpha, orientation)
    if decoded.animated:
        warnings.warn(f"{path}: animated {format}: only its first frame is read", FirstFrameWarning, stacklevel=4)
    return Picture(
        pixels=pixels,
        alpha=alpha,
        gray=decoded.gray,
        icc_profile=icc_profile or None,
        exif=reset_orientation(exif) if exif else None,
        source=path,
        format=format,
    )


def _orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """Turn an HxW(xC) array stored with EXIF ``orientation`` upright.

    The mirrorings and the half turn (2, 3, 4) are done in place, band by band; the transpositions (5 to 8) need
    a new array (one more copy of the pixels while it is made).
    """
    if orientation >= 5:
        return _transposed(array, orientation)
    if orientation in (2, 3):
        _mirror_in_place(array)
    if orientation in (3, 4):
        _flip_in_place(array)
    return array


def _mirror_in_place(array: np.ndarray) -> None:
    rows = band_rows(array[:1].nbytes)
    for top in range(0, array.shape[0], rows):
        array[top : top + rows] = array[top : top + rows, ::-1]  # numpy buffers the overlapping band


def _flip_in_place(array: np.ndarray) -> None:
    height = array.shape[0]
    rows = band_rows(array[:1].nbytes)
    for top in range(0, height // 2, rows):
        bottom = min(top + rows, height // 2)
        upper = array[top:bottom].copy()
        array[top:bottom] = array[height - bottom : height - top][::-1]
        array[height - bottom : height - top] = upper[::-1]


def _transposed(array: np.ndarray, orientation: int) -> np.ndarray:
    """An upright copy of an HxW(xC) array stored with a transposing EXIF ``orientation``, 5 to 8 (as
    PIL.ImageOps.exif_transpose turns it); the others are turned in place by :func:`_orient`."""
    if orientation == 5:
        array = array.swapaxes(0, 1)
    elif orientation == 6:
        array = np.rot90(array, -1)
    elif orientation == 7:
        array = array[::-1, ::-1].swapaxes(0, 1)
    elif orientation == 8:
        array = np.rot90(array, 1)
    return np.ascontiguousarray(array)


def normalise_exif(exif: object) -> bytes | None:
    """Return EXIF bytes with the ``Exif\\0\\0`` prefix, or None."""
    if not isinstance(exif, (bytes, bytearray)) or not exif:
        return None
    exif = bytes(exif)
    return exif if exif.startswith(EXIF_PREFIX) else EXIF_PREFIX + exif


def exif_orientation(exif: bytes | None) -> int:
    """The orientation (1 to 8) an EXIF block records; 1 when it records none or cannot be parsed."""
    if not exif:
        return 1
    parsed = Image.Exif()
    try:
        parsed.load(exif)
        return valid_orientation(parsed.get(ORIENTATION_TAG, 1))
    except (*DECODE_ERRORS, TypeError):
        return 1


def valid_orientation(value: object) -> int:
    """``value`` as an EXIF orientation, 1 to 8; 1 (upright) for anything else."""
    try:
        orientation = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return 1
    return orientation if 1 <= orientation <= 8 else 1


def reset_orientation(exif: bytes) -> bytes:
    """Return ``exif`` with its orientation tag set to 1, patched in place so every other byte is kept."""
    data = bytearray(exif)
    base = len(EXIF_PREFIX)
    order = {b"II": "<", b"MM": ">"}.get(bytes(data[base : base + 2]))
    try:
        if order is None:
            raise ValueError("no TIFF header")
        (ifd,) = struct.unpack_from(order + "I", data, base + 4)
        (count,) = struct.unpack_from(order + "H", data, base + ifd)
        for index in range(count):
            entry = base + ifd + 2 + 12 * index
            tag, kind, number = struct.unpack_from(order + "HHI", data, entry)
            if tag == ORIENTATION_TAG and kind == 3 and number == 1:
                struct.pack_into(order + "H", data, entry + 8, 1)
                break
    except (struct.error, ValueError):
        return _reset_orientation_with_pillow(exif)
    return bytes(data)


def _reset_orientation_with_pillow(exif: bytes) -> bytes:
    parsed = Image.Exif()
    try:
        parsed.load(exif)
        if ORIENTATION_TAG not in parsed:
            return exif
        parsed[ORIENTATION_TAG] = 1
        return parsed.tobytes()
    except (*DECODE_ERRORS, TypeError):
        return exif


def parse_exif(exif: bytes | None) -> Image.Exif | None:
    if not exif:
        return None
    parsed = Image.Exif()
    try:
        parsed.load(exif)
        return parsed
    except (*DECODE_ERRORS, TypeError) as error:
        warnings.warn(f"EXIF metadata unreadable, not written to the TIFF ({error})", stacklevel=5)
        return None


def descriptive_tiff_tags(exif: Image.Exif | None) -> list[tuple[int, str, int, bytes, bool]]:
    """The camera, date and author strings of the EXIF block as TIFF IFD0 tags."""
    if exif is None:
        return []
    tags = []
    for tag in DESCRIPTIVE_TAGS:
        value = exif.get(tag)
        if isinstance(value, str) and value and not (tag == 0x010E and _describes_old_pixels(value)):
            tags.append((tag, "s", 0, value.encode("ascii", "replace"), True))
    return tags


def _describes_old_pixels(description: str) -> bool:
    """An ImageDescription written by software about the pixels themselves (tifffile's JSON shape, ImageJ's
    header): wrong for a result of another size, and read back by those tools as the layout of the new file."""
    text = description.lstrip()
    return (text.startswith("{") and '"shape"' in text) or text.startswith("ImageJ=")


def exif_sub_ifds(exif: Image.Exif | None) -> dict[int, dict[int, Any]]:
    if exif is None:
        return {}
    sub_ifds = {}
    for tag in (EXIF_IFD_TAG, GPS_IFD_TAG):
        try:
            entries = {key: value for key, value in exif.get_ifd(tag).items() if key != INTEROP_IFD_TAG}
        except (*DECODE_ERRORS, TypeError):
            continue
        if entries:
            sub_ifds[tag] = entries
    return sub_ifds


def placeholder_tag(tag: int) -> int:
    """tifffile refuses to write the EXIF and GPS pointer tags; write them one code higher, then rename.

    No tag exists between the code and code + 1, so the IFD stays sorted after the rename.
    """
    return tag + 1


def append_tiff_sub_ifds(file: BinaryIO, sub_ifds: dict[int, dict[int, Any]], bigtiff: bool) -> None:
    """Append the EXIF/GPS sub-IFDs to a TIFF just written and point IFD0's placeholder tags at them."""
    file.flush()
    file.seek(0)
    with tifffile.TiffFile(file) as tiff:
        tags = tiff.pages.first.tags
        pointers = {
            tag: (tags[placeholder_tag(tag)].offset, tags[placeholder_tag(tag)].valueoffset) for tag in sub_ifds
        }
    header = b"II+\x00\x08\x00\x00\x00" + struct.pack("<Q", 16) if bigtiff else b"II*\x00" + struct.pack("<I", 8)
    for tag, entries in sub_ifds.items():
        file.seek(0, io.SEEK_END)
        position = file.tell()
        if position % 2:
            file.write(b"\x00")
            position += 1
        directory = TiffImagePlugin.ImageFileDirectory_v2(ifh=header, group=tag)
        for key, value in entries.items():
            directory[key] = value
        file.write(directory.tobytes(position))
        entry_offset, value_offset = pointers[tag]
        file.seek(entry_offset)
        file.write(struct.pack("<H", tag))
        file.seek(value_offset)
        file.write(struct.pack("<Q" if bigtiff else "<I", position))
    file.seek(0, io.SEEK_END)
