"""16-bit PNG at full depth through Pillow, whose samples have 8 bits: two passes, high byte then low byte.

Each pass writes Pillow's 4-byte pixels straight into the rows of the final array; between the passes the high
bytes wait in the room that is left, so the peak stays the decoded pixels plus a quarter of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from tessera.errors import ImageReadError

from .decode import Decoded, band_rows
from .pillow import is_animated, load_checked, open_with_pillow

__all__ = ["decode_png16"]

# Pillow keeps 8 bits a sample; the raw modes that give the high and the low byte of 16-bit PNG samples:
_PNG16_PASSES = {
    "RGB;16B": ("RGB;16B", "RGB;16L"),
    "RGBA;16B": ("RGBA;16B", "RGBA;16L"),
    "LA;16B": ("RGBA",),  # gray+alpha's 4 bytes a pixel fit Pillow's RGBA pixel as they are
}


def decode_png16(file: BinaryIO, path: Path, image: Image.Image, last_row: int | None) -> Decoded:
    """Decode a 16-bit colour PNG at full depth with Pillow, whose samples have 8 bits.

    Pillow's ``;16B`` and ``;16L`` raw modes keep the high and the low byte of each big-endian sample, so RGB and
    RGBA are decoded twice (gray+alpha once: its 4 bytes a pixel fit Pillow's RGBA pixel as they are). Each pass
    writes Pillow's 4-byte pixels at the start of the rows of the final 6-byte-a-pixel array; between the passes
    the high bytes wait in the remaining 2 bytes and in a plane of the samples left over, so the peak is the
    decoded pixels plus at most a quarter of them. ``last_row`` is checked to have been written by each pass.
    """
    rawmode = image.tile[0][3] if image.tile else None
    passes = _PNG16_PASSES.get(rawmode)  # type: ignore[arg-type]
    if passes is None:
        raise ImageReadError(f"{path}: unsupported image mode (16-bit PNG, raw mode {rawmode})")
    width, height = image.size
    animated = is_animated(image)
    pixels = np.empty((height, width, 3), np.uint16)
    rows = pixels.view(np.uint8).reshape(height, width * 6)
    decoded = rows[:, : width * 4].reshape(height, width, 4)  # where Pillow writes a pass
    band = band_rows(width * 6 * 4)
    if len(passes) == 1:  # gray+alpha: high and low bytes of L and A side by side
        info = _decode_png_pass(file, path, rows, passes[0], last_row)
        alpha = np.empty((height, width), np.uint16)
        for top in range(0, height, band):
            parts = decoded[top : top + band].astype(np.uint16)
            pixels[top : top + band] = ((parts[:, :, 0] << 8) | parts[:, :, 1])[:, :, None]
            alpha[top : top + band] = (parts[:, :, 2] << 8) | parts[:, :, 3]
        return Decoded(pixels, alpha, True, info, animated)
    samples = 4 if rawmode == "RGBA;16B" else 3
    waiting = rows[:, width * 4 :].reshape(height, width, 2)
    leftover = np.empty((height, width, samples - 2), np.uint8)
    _decode_png_pass(file, path, rows, passes[0], last_row)
    for top in range(0, height, band):
        high = decoded[top : top + band, :, :samples].copy()
        waiting[top : top + band] = high[:, :, :2]
        leftover[top : top + band] = high[:, :, 2:]
    info = _decode_png_pass(file, path, rows, passes[1], last_row)
    key = info.get("transparency")
    has_alpha = samples == 4 or isinstance(key, tuple)
    alpha = np.empty((height, width), np.uint16) if has_alpha else None
    for top in range(0, height, band):
        high = np.concatenate([waiting[top : top + band], leftover[top : top + band]], axis=2).astype(np.uint16)
        values = (high << 8) | decoded[top : top + band, :, :samples]
        pixels[top : top + band] = values[:, :, :3]
        if alpha is not None:
            opaque = values[:, :, 3] if samples == 4 else np.where((values == key).all(axis=2), 0, 65535)
            alpha[top : top + band] = opaque
    return Decoded(pixels, alpha, False, info, animated)


def _decode_png_pass(
    file: BinaryIO, path: Path, rows: np.ndarray, rawmode: str, last_row: int | None
) -> dict[str, Any]:
    """Decode the PNG in ``file`` with Pillow in raw mode ``rawmode`` into ``rows`` (Pillow's 4-byte pixels at the
    start of each row), checking that ``last_row`` was written; returns Pillow's info."""
    file.seek(0)
    with open_with_pillow(file, path) as image:
        tile = image.tile[0]
        image.tile = [tile._replace(args=rawmode) if hasattr(tile, "_replace") else (*tile[:3], rawmode)]
        image.im = Image.core.map_buffer(rows, image.size, "raw", 0, (image.mode, rows.shape[1], 1))
        load_checked(image, path, rows[last_row, : image.size[0] * 4] if last_row is not None else None)
        info = dict(image.info)
        Image.Image.close(image)
    return info
