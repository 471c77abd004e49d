"""Paste-back: put a restored face crop back into the photo, touching only the pixels under it.

The crop is warped with the inverse of its alignment (times the output scale) into the bounding box of its
footprint only, never into a full-frame canvas, so the cost of a face follows its size. A soft mask in crop space
is warped the same way: by default a square one (an inset, then a smooth ramp, both proportional to the crop, so
they scale with the face), or the face-parsing mask of the restored crop (facexlib's ParseNet, softened as
facexlib does), which follows the face's outline and leaves hair-free background, neck and clothes alone. Pixels
with a mask of zero keep their exact value.

In a group photo a larger face's crop covers its neighbours. So each face's mask is also zeroed, softly, over
the features (eyes, brows, nose, mouth) of the faces pasted before it (``keep_out``): each face's own features come
from its own restoration, whatever the paste order. Only earlier faces are spared: they are on the canvas already,
with their full masks, so the sparing never leaves a gap that neither face covers (a later face covers its own
features itself). :class:`FacePaster` does this for a whole photo.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

from ..errors import InputError
from ..image.pixels import from_float, to_float
from .align import compose, footprint, invert, resize_map, warp
from .parsenet import PARSING_SIZE

PARSER = "facexlib-parsenet"  # catalog name of the face parsing network of parse_mask "parsenet"

# Soft mask geometry, as fractions of the crop size: the ramp starts this far in from the crop's border...
_MASK_INSET = 1 / 40
# ...and rises to 1 over this width (a 512 px crop: 13 px inset, 51 px ramp; the template face stays at 1).
_MASK_RAMP = 1 / 10

# facexlib's softening of the parsing mask at 512 px (scaled for another parser size): two Gaussian blurs of
# this kernel and sigma, then a border of this width cleared, so no edge of the crop shows.
_PARSE_BLUR_KERNEL = 101
_PARSE_BLUR_SIGMA = 11.0
_PARSE_BORDER = 10

# A face's features: the hull of its five landmarks grown by this fraction of its eye (or eye-to-mouth) distance,
# which takes in the brows, the eye corners and the lips (in facexlib's 512 template: x 130-382, y 177-434).
_FEATURE_GROWTH = 0.5
# Another face's mask rises from 0 at the edge of a protected region to 1 this far out, as a fraction of the
# square root of the region's area (about 0.3 of the eye distance).
_KEEP_OUT_RAMP = 0.15


def _smoothstep(ramp: np.ndarray) -> np.ndarray:
    ramp = np.clip(ramp, 0.0, 1.0)
    return ramp * ramp * (3.0 - 2.0 * ramp)


@lru_cache(maxsize=8)
def soft_mask(size: int) -> np.ndarray:
    """The paste mask of a ``size`` px crop (float32, 1 inside, a smoothstep ramp to 0 near the border)."""
    index = np.arange(size, dtype=np.float32)
    to_border = np.minimum(index, size - 1 - index)
    ramp = _smoothstep((to_border - size * _MASK_INSET) / max(size * _MASK_RAMP, 1.0))
    mask = np.minimum(ramp[:, None], ramp[None, :]).astype(np.float32)
    mask.setflags(write=False)
    return mask


# ---------------------------------------------------------------------------------------------- parsing masks
def soften_face_region(region: np.ndarray, size: int) -> np.ndarray:
    """facexlib's paste mask from a face-region map (HxW, 1 on the face classes, 0 elsewhere, H = W as parsed):
    blurred twice, its border cleared, then resized to the ``size`` px crop (float32 in [0, 1])."""
    region = np.asarray(region, dtype=np.float32)
    if region.ndim == 3:
        region = region[:, :, 0]
    parsed = region.shape[0]
    factor = parsed / PARSING_SIZE
    kernel = max(1, round(_PARSE_BLUR_KERNEL * factor)) | 1  # odd
    sigma = _PARSE_BLUR_SIGMA * factor
    mask = cv2.GaussianBlur(region, (kernel, kernel), sigma, borderType=cv2.BORDER_REFLECT_101)
    mask = cv2.GaussianBlur(mask, (kernel, kernel), sigma, borderType=cv2.BORDER_REFLECT_101)
    border = max(1, round(_PARSE_BORDER * factor))
    mask[:border], mask[-border:], mask[:, :border], mask[:, -border:] = 0, 0, 0, 0
    if parsed != size:
        mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_LINEAR)
    return np.clip(mask, 0.0, 1.0).astype(np.float32)


def parsing_masks(parser: Any, crops: Sequence[np.ndarray], runtime: Any, batch: int | str = "auto") -> list[np.ndarray]:
    """The parsing paste masks of restored crops (each size x size x 3 in [0, 1]), run in batches by the engine.

    ``parser`` is a parsing Model (``load_model("facexlib-parsenet")``); each crop is resized to its input size
    with bilinear interpolation as facexlib does, and each mask comes back at its crop's size.
    """
    from dataclasses import replace

    from ..engine import run_model

    side = int(parser.face_size or PARSING_SIZE)
    inputs = [crop if crop.shape[0] == side else cv2.resize(np.asarray(crop, np.float32), (side, side),
                                                            interpolation=cv2.INTER_LINEAR) for crop in crops]
    quiet = replace(runtime, progress=None)  # the faces task reports faces, not parsing batches
    regions = run_model(parser, inputs, quiet, batch=batch, stage="parsing")
    return [soften_face_region(region, crop.shape[0]) for region, crop in zip(regions, crops)]


# ---------------------------------------------------------------------------------------------- keep-out regions
def output_map(scale_x: float, scale_y: float) -> np.ndarray:
    """The map from photo pixels to output pixels when the photo is resized by (scale_x, scale_y)."""
    return resize_map(scale_x, scale_y)


def feature_region(landmarks: np.ndarray, to_canvas: np.ndarray | None = None) -> np.ndarray:
    """The polygon (Nx2 float, canvas pixels) around a face's eyes, brows, nose and mouth, from its five
    landmarks (photo pixels) and the map ``to_canvas`` from photo to canvas (default: the identity)."""
    points = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    if to_canvas is not None:
        points = points @ np.asarray(to_canvas)[:, :2].T + np.asarray(to_canvas)[:, 2]
    eye_distance = float(np.linalg.norm(points[1] - points[0]))
    eye_to_mouth = float(np.linalg.norm(points[:2].mean(axis=0) - points[3:].mean(axis=0)))
    growth = _FEATURE_GROWTH * max(eye_distance, eye_to_mouth, 1.0)
    angles = np.linspace(0.0, 2.0 * np.pi, 16, endpoint=False)
    circle = growth * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    grown = (points[:, None, :] + circle[None]).reshape(-1, 2).astype(np.float32)
    return cv2.convexHull(grown)[:, 0, :].astype(np.float64)


def _ramp_width(polygon: np.ndarray) -> float:
    return max(1.0, _KEEP_OUT_RAMP * math.sqrt(abs(cv2.contourArea(polygon.astype(np.float32)))))


def _reach(polygon: np.ndarray) -> tuple[float, float, float, float]:
    """The box (x0, y0, x1, y1) a region's soft keep-out can reach: its bounds grown by its ramp."""
    ramp = _ramp_width(polygon)
    low, high = polygon.min(axis=0) - ramp, polygon.max(axis=0) + ramp
    return float(low[0]), float(low[1]), float(high[0]), float(high[1])


def _closeness(polygon: np.ndarray, box: tuple[int, int, int, int], *, inward: bool = False) -> np.ndarray | None:
    """Over ``box``: 1 inside ``polygon``, falling smoothly to 0 at its ramp width outside it (``inward``: 1 from
    the ramp width inside it, falling to 0 at its edge, 0 outside); None where the region does not reach the box."""
    ramp = _ramp_width(polygon)
    x0, y0, x1, y1 = box
    rx0, ry0, rx1, ry1 = _reach(polygon)
    if rx1 < x0 or ry1 < y0 or rx0 > x1 or ry0 > y1:
        return None
    margin = int(math.ceil(ramp)) + 1  # rasterise around the box too: a region just outside it still reaches in
    inside = np.zeros((y1 - y0 + 2 * margin, x1 - x0 + 2 * margin), np.uint8)
    shifted = (polygon - [x0 - margin, y0 - margin]) * 16  # 4 bits of sub-pixel precision
    cv2.fillPoly(inside, [np.rint(shifted).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    if not inside.any():
        return None
    distance = cv2.distanceTransform(inside if inward else 1 - inside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    distance = distance[margin:margin + y1 - y0, margin:margin + x1 - x0] / ramp
    return (_smoothstep(distance) if inward else 1.0 - _smoothstep(distance)).astype(np.float32)


def keep_out_weight(box: tuple[int, int, int, int], keep_out: Sequence[np.ndarray],
                    features: np.ndarray | None = None) -> np.ndarray | None:
    """Over ``box`` (canvas pixels): the factor of a face's mask that spares the ``keep_out`` regions (0 inside
    them, a smooth rise outside), except inside this face's own ``features`` region, where its own paste wins
    (rising from 0 at that region's edge, so it never reaches into a neighbour's features beyond it). None when
    no region reaches the box."""
    weight = None
    for polygon in keep_out:
        close = _closeness(np.asarray(polygon, dtype=np.float64), box)
        if close is not None:
            weight = 1.0 - close if weight is None else np.minimum(weight, 1.0 - close)
    if weight is not None and features is not None:
        own = _closeness(np.asarray(features, dtype=np.float64), box, inward=True)
        if own is not None:
            weight = np.maximum(weight, own)
    return weight


# ---------------------------------------------------------------------------------------------- paste
def canvas_box(matrix: np.ndarray, size: int, scale: tuple[float, float],
               shape: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int, int, int] | None]:
    """The map from a ``size`` px crop to the canvas (of ``shape`` rows, cols) and the box of canvas pixels it
    covers (None when outside)."""
    to_canvas = compose(output_map(*scale), invert(matrix))
    return to_canvas, footprint(to_canvas, size, size, shape)


def paste_face(canvas: np.ndarray, face: np.ndarray, matrix: np.ndarray, *, scale: tuple[float, float] = (1.0, 1.0),
               strength: float = 1.0, mask: np.ndarray | None = None, keep_out: Sequence[np.ndarray] = (),
               features: np.ndarray | None = None) -> tuple[int, int, int, int] | None:
    """Blend ``face`` (size x size x 3 float in [0, 1]) into ``canvas`` (HxWx3 uint8/uint16/float32, in place).

    ``matrix`` maps photo pixels to crop pixels (the alignment); ``scale`` is the canvas size over the photo size.
    ``strength`` in [0, 1] blends the restored face with what the canvas holds. ``mask`` (size x size in [0, 1],
    crop space) replaces the square :func:`soft_mask`, e.g. a parsing mask. ``keep_out``: polygons (Nx2, canvas
    pixels) this face must not change, softly (other faces' features); ``features``: this face's own region,
    exempt from them. Returns the box (x0, y0, x1, y1) of canvas pixels that may have changed, or None when the
    face lies outside the canvas.
    """
    size = face.shape[0]
    if mask is not None and np.shape(mask) != (size, size):
        raise InputError(f"paste mask is {'x'.join(map(str, np.shape(mask)))} but the face crop is {size}x{size}")
    to_canvas, box = canvas_box(matrix, size, scale, canvas.shape[:2])
    if box is None or strength <= 0:
        return None
    x0, y0, x1, y1 = box
    local = compose(np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0]]), to_canvas)
    width, height = x1 - x0, y1 - y0
    patch = warp(np.asarray(face, dtype=np.float32), local, width, height, border=cv2.BORDER_REPLICATE)
    crop_mask = soft_mask(size) if mask is None else np.asarray(mask, dtype=np.float32)
    alpha = warp(crop_mask, local, width, height, interpolation=cv2.INTER_LINEAR, border=cv2.BORDER_CONSTANT)
    alpha = np.clip(alpha, 0.0, 1.0) * np.float32(strength)
    spared = keep_out_weight(box, keep_out, features) if len(keep_out) else None
    if spared is not None:
        alpha = alpha * spared
    if patch.ndim == 2:
        patch = patch[:, :, None]
    region = canvas[y0:y1, x0:x1]
    touched = alpha > 0
    base = to_float(region[touched])
    blended = base + alpha[touched][:, None] * (np.clip(patch[touched], 0.0, 1.0) - base)
    region[touched] = from_float(blended, canvas.dtype)
    return box


class FacePaster:
    """Pastes the restored faces of one photo, each sparing the features of the faces pasted before it.

    ``landmarks``: the five landmarks (photo pixels) of every face, in paste order; ``scale``: canvas over photo
    size; ``parser``: a parsing Model for parsing masks, or None for square ones; ``runtime`` and ``batch`` run
    the parser. Made once per photo, then :meth:`paste` is called per chunk of faces.
    """

    def __init__(self, landmarks: Sequence[np.ndarray], scale: tuple[float, float], *, strength: float = 1.0,
                 parser: Any = None, runtime: Any = None, batch: int | str = "auto") -> None:
        to_canvas = output_map(*scale)
        self.scale, self.strength = scale, strength
        self.parser, self.runtime, self.batch = parser, runtime, batch
        self.regions = [feature_region(points, to_canvas) for points in landmarks]
        self._reaches = np.array([_reach(region) for region in self.regions]).reshape(-1, 4)

    def neighbours(self, index: int, box: tuple[int, int, int, int]) -> list[np.ndarray]:
        """The feature regions of the faces pasted before face ``index`` that reach ``box``."""
        x0, y0, x1, y1 = box
        reach = self._reaches[:index]
        near = (reach[:, 2] >= x0) & (reach[:, 0] <= x1) & (reach[:, 3] >= y0) & (reach[:, 1] <= y1)
        return [self.regions[i] for i in np.flatnonzero(near)]

    def paste(self, canvas: np.ndarray, first: int, faces: Sequence[np.ndarray],
              matrices: Sequence[np.ndarray]) -> list[tuple[int, int, int, int] | None]:
        """Paste restored crops ``faces`` (faces ``first``, ``first + 1``... of the paste order) into ``canvas``;
        returns each one's changed box (None where nothing was pasted)."""
        masks: list[np.ndarray | None] = [None] * len(faces)
        if self.parser is not None and self.strength > 0:
            masks = list(parsing_masks(self.parser, faces, self.runtime, self.batch))
        boxes = []
        for index, (face, matrix, mask) in enumerate(zip(faces, matrices, masks), first):
            _, box = canvas_box(matrix, face.shape[0], self.scale, canvas.shape[:2])
            keep_out = self.neighbours(index, box) if box is not None else []
            boxes.append(paste_face(canvas, face, matrix, scale=self.scale, strength=self.strength, mask=mask,
                                    keep_out=keep_out, features=self.regions[index]))
        return boxes


def face_parser(choice: str, model_dir: Any = None) -> Any:
    """The parsing Model for option ``parse_mask``: "box" None, "parsenet" facexlib's ParseNet (ModelError
    naming the pull command when it is not downloaded), "auto" ParseNet when it is in the cache, else None."""
    if parse_mask_choice(choice, model_dir) == "box":
        return None
    from ..models.loader import load_model

    return load_model(PARSER, model_dir=model_dir)


def parse_mask_choice(choice: str, model_dir: Any = None) -> str:
    """The paste mask option ``parse_mask`` resolves to now: "parsenet" or "box" ("auto": ParseNet when it is in
    the cache)."""
    if choice != "auto":
        return choice
    from ..models.catalog import get_entry, model_path

    return "parsenet" if model_path(get_entry(PARSER), model_dir).is_file() else "box"
