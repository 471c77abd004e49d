"""Face detection: boxes, scores and five landmarks, on photos of any size.

The detector is YuNet through ``yuface`` (libfacedetection's bundled weights: no download). Where yuface is not
installed, scikit-image's LBP frontal-face cascade (shipped with scikit-image) finds the boxes and the landmarks
are placed at their average position inside such a box (measured with YuNet on scikit-image's astronaut and 25
LFW faces); it is slower, scoreless and less precise, and it says so.

Photos are searched in two passes. First on a copy scaled to at most ``max_side`` px: quick, and enough when the
faces are large. When that copy shows small faces or none at all, the photo is searched again at full resolution
in overlapping tiles, and the two passes are merged with non-maximum suppression (a group photo of 30 people has
faces of 20 px in a 1280 px copy, too small to find reliably).
"""
from __future__ import annotations

import importlib.util
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import cv2
import numpy as np

from ..errors import InputError, ModelError, look_up_option
from ..image import from_float, to_float
from ..tiling import plan_axis

DETECTORS = ("auto", "yunet", "cascade")
TILE_MODES = ("auto", "always", "never")

# YuNet finds faces down to ~15 px reliably. When the scaled copy's smallest face is under this many pixels,
# smaller ones were probably missed: search full-resolution tiles too.
SMALL_FACE_PX = 32
# Detection tiles: YuNet in yuface is tuned for inputs up to 960 px.
_TILE = 960
# Relative landmark positions inside a cascade box (x, y as fractions of the box), YuNet's average.
_CASCADE_LANDMARKS = np.array([(0.290, 0.372), (0.699, 0.367), (0.473, 0.589), (0.326, 0.776), (0.680, 0.767)])
# The cascade's candidates in a colour photo must show skin; a photo whose mean chroma is below this is gray.
_MIN_SKIN = 0.25
_COLOURED_CHROMA = 3.0
_NMS_IOU = 0.35
_NMS_CONTAINED = 0.7  # a box this much inside another is a part of that face


@dataclass(eq=False)
class Face:
    """One detected face: ``box`` (x0, y0, x1, y1) in photo pixels, ``score`` in [0, 1] and ``landmarks`` (5x2,
    x/y: left eye, right eye, nose tip, left and right mouth corner)."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray = field(repr=False)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def size(self) -> float:
        """The short side of the box, the face's size for ``min_face``."""
        return min(self.width, self.height)

    def mapped(self, scale: float, dx: float = 0.0, dy: float = 0.0) -> Face:
        """This face in another raster: coordinates scaled by ``scale`` (pixel centres kept) then shifted."""
        def move(x: np.ndarray, offset: np.ndarray) -> np.ndarray:
            return (x + 0.5) * scale - 0.5 + offset

        x0, y0, x1, y1 = self.box
        box = (float(x0 * scale + dx), float(y0 * scale + dy), float(x1 * scale + dx), float(y1 * scale + dy))
        return Face(box, self.score, move(self.landmarks, np.array([dx, dy])))


Backend = Callable[[np.ndarray, float], list[Face]]


def _yunet(bgr: np.ndarray, min_score: float) -> list[Face]:
    """YuNet on a uint8 BGR array of at most a few megapixels."""
    import yuface

    with warnings.catch_warnings():  # yuface warns above 960 px; the scaled copy may be up to max_side
        warnings.simplefilter("ignore", UserWarning)
        scores, boxes, landmarks = yuface.detect(np.ascontiguousarray(bgr), conf=min_score)
    faces = []
    for score, (x, y, w, h), points in zip(scores, boxes.astype(np.float64), landmarks.astype(np.float64)):
        if w <= 0 or h <= 0:
            continue
        faces.append(Face((float(x), float(y), float(x + w), float(y + h)), float(score) / 100.0,
                          points.reshape(5, 2)))
    return faces


def _cascade(bgr: np.ndarray, min_score: float) -> list[Face]:
    """scikit-image's LBP cascade; landmarks at their average place in the box; every face scores 1."""
    from skimage.data import lbp_frontal_face_cascade_filename
    from skimage.feature import Cascade

    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.float64) / 255.0
    detector = Cascade(lbp_frontal_face_cascade_filename())
    side = min(gray.shape)
    found = detector.detect_multi_scale(img=gray, scale_factor=1.15, step_ratio=1, min_size=(20, 20),
                                        max_size=(side, side), min_neighbor_number=5,
                                        intersection_score_threshold=0.5)
    ycc = cv2.cvtColor(bgr, cv2.COLOR_BGR2YCrCb)
    coloured = float(np.abs(ycc[..., 1:].astype(np.float32) - 128).mean()) > _COLOURED_CHROMA
    faces = []
    for hit in found:
        x, y, w, h = float(hit["c"]), float(hit["r"]), float(hit["width"]), float(hit["height"])
        if coloured and _skin_fraction(ycc, x, y, w, h) < _MIN_SKIN:
            continue  # the cascade's usual false positive: face-like texture on clothes or walls
        points = np.array([x, y]) + _CASCADE_LANDMARKS * np.array([w, h])
        faces.append(Face((x, y, x + w, y + h), 1.0, points))
    return faces


def _skin_fraction(ycc: np.ndarray, x: float, y: float, w: float, h: float) -> float:
    """Share of skin-coloured pixels (the classic Cr/Cb box) in the central 60 % of a box."""
    inner = ycc[int(y + 0.2 * h):int(y + 0.8 * h), int(x + 0.2 * w):int(x + 0.8 * w)]
    if inner.size == 0:
        return 0.0
    cr, cb = inner[..., 1], inner[..., 2]
    return float(((cr >= 133) & (cr <= 173) & (cb >= 77) & (cb <= 127)).mean())


def available_detector(name: str = "auto") -> str:
    """The detector that will run for ``name``: "yunet" or "cascade"; ModelError if it cannot run here."""
    name = look_up_option(name, DETECTORS, "face detector")
    has_yuface = importlib.util.find_spec("yuface") is not None
    has_skimage = importlib.util.find_spec("skimage") is not None
    if name in ("auto", "yunet") and has_yuface:
        return "yunet"
    if name == "yunet":
        raise ModelError("face detector 'yunet' needs the yuface package: pip install 'tessera[faces]'")
    if not has_skimage:
        raise ModelError("no face detector installed: pip install 'tessera[faces]' (yuface) or scikit-image")
    return "cascade"


_BACKENDS: dict[str, Backend] = {"yunet": _yunet, "cascade": _cascade}


def _as_uint8_bgr(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype != np.uint8:
        pixels = from_float(to_float(pixels), np.uint8)
    return np.ascontiguousarray(pixels[..., ::-1])


def _iou_and_containment(a: tuple[float, ...], b: tuple[float, ...]) -> tuple[float, float]:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0, inter / min(area_a, area_b) if min(area_a, area_b) > 0 else 0.0


def merge_faces(groups: list[list[Face]]) -> list[Face]:
    """Non-maximum suppression over detections from several passes (pass them finest first).

    Boxes that overlap (IoU) are one face: the better score wins, the earlier pass among near-equal scores.
    A box mostly inside another is a part of that face (a face cut by a tile border, a false face on a cheek):
    the larger box is kept, whatever the scores.
    """
    # Scores are compared in steps of 0.05 so that, among near-equal ones, the earlier (finer) pass wins.
    ranked = sorted(((rank, face) for rank, faces in enumerate(groups) for face in faces),
                    key=lambda item: (-round(item[1].score / 0.05), item[0], -item[1].score))
    kept: list[Face] = []
    for _, face in ranked:
        for index, other in enumerate(kept):
            iou, contained = _iou_and_containment(face.box, other.box)
            if iou > _NMS_IOU:
                break
            if contained > _NMS_CONTAINED:
                if face.width * face.height > other.width * other.height:
                    kept[index] = face
                break
        else:
            kept.append(face)
    return kept


def _touches_inner_border(face: Face, x0: int, y0: int, x1: int, y1: int, shape: tuple[int, int]) -> bool:
    """Whether a face found in tile (x0, y0, x1, y1) is cut by a tile border that is not the photo's border."""
    rows, cols = shape
    bx0, by0, bx1, by1 = face.box
    edge = 2.0
    return ((x0 > 0 and bx0 <= x0 + edge) or (y0 > 0 and by0 <= y0 + edge)
            or (x1 < cols and bx1 >= x1 - edge) or (y1 < rows and by1 >= y1 - edge))


def _tile_spans(length: int, overlap: int) -> list[tuple[int, int]]:
    window = min(_TILE, length)
    return [(span.start, span.stop) for span in plan_axis(length, window, overlap // 2)]


def detect_faces(image: Any, *, min_face: int = 16, min_score: float = 0.6,
                 detector: Literal["auto", "yunet", "cascade"] = "auto", max_side: int = 1280,
                 tiles: Literal["auto", "always", "never"] = "auto", runtime: Any = None) -> list[Face]:
    """Find the faces in ``image`` (a Picture, or HxWx3 RGB uint8/uint16/float32), largest first.

    ``min_face``: ignore faces whose box is smaller (short side, photo pixels). ``min_score``: YuNet's score
    threshold. ``max_side``: the first pass runs on a copy at most this large. ``tiles``: the full-resolution
    tiled pass: "auto" (when the first pass finds small faces or none), "always" or "never". ``runtime``: an
    engine Runtime, for progress ("detect") and cancellation.
    """
    pixels = getattr(image, "pixels", image)
    if not isinstance(pixels, np.ndarray) or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise InputError(f"face detection needs an HxWx3 RGB array, got {getattr(pixels, 'shape', type(pixels))}")
    if not 0.0 <= min_score <= 1.0:
        raise InputError(f"face score threshold must be in [0, 1], got {min_score}")
    tiles = look_up_option(tiles, TILE_MODES, "detection tile mode")
    backend = _BACKENDS[available_detector(detector)]
    rows, cols = pixels.shape[:2]
    shrink = min(1.0, max_side / max(rows, cols))
    if shrink < 1.0:
        small = cv2.resize(pixels, (max(1, round(cols * shrink)), max(1, round(rows * shrink))),
                           interpolation=cv2.INTER_AREA)
    else:
        small = pixels
    _report(runtime, 0, 1)
    if runtime is not None:
        runtime.check_cancelled()
    first = backend(_as_uint8_bgr(small), min_score)
    first = [face.mapped(cols / small.shape[1]) for face in first] if small is not pixels else first
    smallest = min((face.size * shrink for face in first), default=0.0)
    search_tiles = shrink < 1.0 and (tiles == "always" or (tiles == "auto" and (not first
                                                                               or smallest < SMALL_FACE_PX)))
    groups = [first]
    if search_tiles:
        groups.insert(0, _detect_tiled(pixels, backend, min_score, shrink, runtime))
    else:
        _report(runtime, 1, 1)
    faces = [face for face in merge_faces(groups) if face.size >= min_face and face.score >= min_score]
    return sorted(faces, key=lambda face: -face.size)


def _detect_tiled(pixels: np.ndarray, backend: Backend, min_score: float, shrink: float,
                  runtime: Any) -> list[Face]:
    """The full-resolution pass: overlapping tiles, wide enough that any face the scaled copy could have missed
    lies whole inside one of them; faces cut by an inner tile border are dropped (a neighbour has them whole)."""
    rows, cols = pixels.shape[:2]
    overlap = int(min(_TILE // 2, max(128, math.ceil(SMALL_FACE_PX / shrink * 0.75))))
    spans_y, spans_x = _tile_spans(rows, overlap), _tile_spans(cols, overlap)
    found: list[Face] = []
    total = len(spans_y) * len(spans_x) + 1  # the scaled copy was the first step
    _report(runtime, 1, total)
    for index, ((y0, y1), (x0, x1)) in enumerate((sy, sx) for sy in spans_y for sx in spans_x):
        if runtime is not None:
            runtime.check_cancelled()
        for face in backend(_as_uint8_bgr(pixels[y0:y1, x0:x1]), min_score):
            face = face.mapped(1.0, x0, y0)
            if not _touches_inner_border(face, x0, y0, x1, y1, (rows, cols)):
                found.append(face)
        _report(runtime, index + 2, total)
    return found


def _report(runtime: Any, done: int, total: int) -> None:
    if runtime is not None:
        runtime.report("detect", done, total)
