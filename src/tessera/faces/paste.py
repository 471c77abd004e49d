"""Paste-back: put a restored face crop back into the photo, touching only the pixels under it.

The crop is warped with the inverse of its alignment (times the output scale) into the bounding box of its
footprint only, never into a full-frame canvas, so the cost of a face follows its size. A soft mask built in crop
space (an inset, then a smooth ramp, both proportional to the crop, so they scale with the face) is warped the same
way; no rectangle shows, and where faces overlap each blends over what is already there. Pixels with a mask of
zero keep their exact value.
"""
from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from ..image import from_float, to_float
from .align import compose, footprint, invert, resize_map, warp

# Soft mask geometry, as fractions of the crop size: the ramp starts this far in from the crop's border...
_MASK_INSET = 1 / 40
# ...and rises to 1 over this width (a 512 px crop: 13 px inset, 51 px ramp; the template face stays at 1).
_MASK_RAMP = 1 / 10


@lru_cache(maxsize=8)
def soft_mask(size: int) -> np.ndarray:
    """The paste mask of a ``size`` px crop (float32, 1 inside, a smoothstep ramp to 0 near the border)."""
    index = np.arange(size, dtype=np.float32)
    to_border = np.minimum(index, size - 1 - index)
    ramp = np.clip((to_border - size * _MASK_INSET) / max(size * _MASK_RAMP, 1.0), 0.0, 1.0)
    ramp = ramp * ramp * (3.0 - 2.0 * ramp)
    mask = np.minimum(ramp[:, None], ramp[None, :]).astype(np.float32)
    mask.setflags(write=False)
    return mask


def output_map(scale_x: float, scale_y: float) -> np.ndarray:
    """The map from photo pixels to output pixels when the photo is resized by (scale_x, scale_y)."""
    return resize_map(scale_x, scale_y)


def paste_face(canvas: np.ndarray, face: np.ndarray, matrix: np.ndarray, *, scale: tuple[float, float] = (1.0, 1.0),
               strength: float = 1.0) -> tuple[int, int, int, int] | None:
    """Blend ``face`` (size x size x 3 float in [0, 1]) into ``canvas`` (HxWx3 uint8/uint16/float32, in place).

    ``matrix`` maps photo pixels to crop pixels (the alignment); ``scale`` is the canvas size over the photo size.
    ``strength`` in [0, 1] blends the restored face with what the canvas holds. Returns the box (x0, y0, x1, y1)
    of canvas pixels that may have changed, or None when the face lies outside the canvas.
    """
    size = face.shape[0]
    to_canvas = compose(output_map(*scale), invert(matrix))
    box = footprint(to_canvas, size, size, canvas.shape[:2])
    if box is None or strength <= 0:
        return None
    x0, y0, x1, y1 = box
    local = compose(np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0]]), to_canvas)
    width, height = x1 - x0, y1 - y0
    patch = warp(np.asarray(face, dtype=np.float32), local, width, height, border=cv2.BORDER_REPLICATE)
    alpha = warp(soft_mask(size), local, width, height, interpolation=cv2.INTER_LINEAR,
                 border=cv2.BORDER_CONSTANT)
    alpha = np.clip(alpha, 0.0, 1.0) * np.float32(strength)
    if patch.ndim == 2:
        patch = patch[:, :, None]
    region = canvas[y0:y1, x0:x1]
    touched = alpha > 0
    base = to_float(region[touched])
    blended = base + alpha[touched][:, None] * (np.clip(patch[touched], 0.0, 1.0) - base)
    region[touched] = from_float(blended, canvas.dtype)
    return box
