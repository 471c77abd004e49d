"""The face detectors a search can run on one raster: YuNet through ``yuface``, or scikit-image's LBP cascade.

YuNet (libfacedetection's weights, built into the yuface wheel: no download) gives boxes, scores and five
landmarks. Where yuface has no wheel (it ships them for CPython up to 3.11 on Linux x86-64 and Windows x64), the
cascade shipped with scikit-image finds the boxes and the landmarks are placed at their average position inside
such a box (measured with YuNet on scikit-image's astronaut and 25 LFW faces): slower, scoreless, less precise.
"""
from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable

import cv2
import numpy as np

from ..errors import ModelError, look_up_option
from ..image.pixels import from_float, to_float
from .boxes import Face

DETECTORS = ("auto", "yunet", "cascade")

# Relative landmark positions inside a cascade box (x, y as fractions of the box), YuNet's average.
_CASCADE_LANDMARKS = np.array([(0.290, 0.372), (0.699, 0.367), (0.473, 0.589), (0.326, 0.776), (0.680, 0.767)])
# The cascade's candidates in a colour photo must show skin; a photo whose mean chroma is below this is gray.
_MIN_SKIN = 0.25
_COLOURED_CHROMA = 3.0

# A backend: a uint8 BGR raster and a score threshold -> the faces in that raster's pixels.
Backend = Callable[[np.ndarray, float], list[Face]]


def yunet(bgr: np.ndarray, min_score: float) -> list[Face]:
    """YuNet on a uint8 BGR array of at most a few megapixels."""
    import yuface

    with warnings.catch_warnings():  # yuface warns above 960 px; the first pass may be up to max_side
        warnings.simplefilter("ignore", UserWarning)
        scores, boxes, landmarks = yuface.detect(np.ascontiguousarray(bgr), conf=min_score)
    faces = []
    for score, (x, y, w, h), points in zip(scores, boxes.astype(np.float64), landmarks.astype(np.float64)):
        if w <= 0 or h <= 0:
            continue
        faces.append(Face((float(x), float(y), float(x + w), float(y + h)), float(score) / 100.0,
                          points.reshape(5, 2)))
    return faces


def cascade(bgr: np.ndarray, min_score: float) -> list[Face]:
    """scikit-image's LBP cascade; landmarks at their average place in the box; every face scores 1."""
    from skimage.data import lbp_frontal_face_cascade_filename
    from skimage.feature import Cascade

    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.float64) / 255.0
    detector = Cascade(lbp_frontal_face_cascade_filename())
    side = min(gray.shape)
    if side < 20:
        return []
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


BACKENDS: dict[str, Backend] = {"yunet": yunet, "cascade": cascade}


def available_detector(name: str = "auto") -> str:
    """The detector that will run for ``name``: "yunet" or "cascade"; ModelError if it cannot run here."""
    name = look_up_option(name, DETECTORS, "face detector")
    has_yuface = importlib.util.find_spec("yuface") is not None
    has_skimage = importlib.util.find_spec("skimage") is not None
    if name in ("auto", "yunet") and has_yuface:
        return "yunet"
    if name == "yunet":
        raise ModelError("face detector 'yunet' needs the yuface package: pip install 'tessera[faces]' "
                         "(wheels for CPython 3.11 on Linux x86-64 and Windows x64)")
    if not has_skimage:
        raise ModelError("no face detector installed: pip install 'tessera[faces]' (yuface) or scikit-image")
    return "cascade"


def backend_for(name: str) -> Backend:
    """The backend function of an available detector name (looked up at call time, so tests can wrap it)."""
    return BACKENDS[available_detector(name)]


def as_uint8_bgr(pixels: np.ndarray) -> np.ndarray:
    """A contiguous uint8 BGR copy of an RGB raster of any supported dtype, as the backends take it."""
    if pixels.dtype != np.uint8:
        pixels = from_float(to_float(pixels), np.uint8)
    return np.ascontiguousarray(pixels[..., ::-1])
