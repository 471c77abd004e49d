"""Face alignment: 5-point templates, the similarity that maps a face onto one, and the aligned crop.

A face network sees every face at the same place: the eyes, nose tip and mouth corners on its training
template. The crop is a similarity warp (rotation, uniform scale, translation) of the photo; only the part of the
photo under the crop is read, so the cost follows the face, not the photo. Points are (x, y) in pixel-centre
coordinates (pixel ``i`` covers ``[i - 0.5, i + 0.5)``), the convention of OpenCV's warps.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import InputError, look_up_option
from ..image.pixels import to_float

# Landmark order everywhere: left eye, right eye, nose tip, left mouth corner, right mouth corner.
# facexlib's template (GFPGAN, CodeFormer, RestoreFormer) for a 512 px crop.
_FACEXLIB_512 = np.array([(192.98138, 239.94708), (318.90277, 240.1936), (256.63416, 314.01935),
                          (201.26117, 371.41043), (313.08905, 371.15118)], dtype=np.float64)
# GPEN's template (its reference points with inner padding 0.25) for a 512 px crop: a looser crop. The published
# 256 px values are these halved (to 1e-4), and 1024/2048 are these times 2 and 4.
_GPEN_512 = np.array([(202.0407, 242.884), (309.4302, 242.29), (256.0768, 303.9592),
                      (211.9598, 366.8282), (300.8911, 366.3363)], dtype=np.float64)

TEMPLATES: dict[str, np.ndarray] = {"facexlib": _FACEXLIB_512, "gpen": _GPEN_512}

# Smallest and largest crop when the crop size follows the face (weight-free clean-up).
_NATIVE_MIN, _NATIVE_MAX, _NATIVE_ALIGN = 64, 2048, 16
# Below this scale a warp would alias: the source is first shrunk with area averaging.
_ANTIALIAS_BELOW = 0.9


def face_template(name: str, size: int) -> np.ndarray:
    """The five template points (5x2, x/y in pixels) of template ``name`` ("facexlib" or "gpen") for a crop of
    ``size`` px."""
    name = look_up_option(name, TEMPLATES, "face template")
    if size < 1:
        raise InputError(f"face crop size must be positive, got {size}")
    return TEMPLATES[name] * (size / 512.0)


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (no reflection) mapping points ``src`` onto ``dst``, as a 2x3 matrix.

    With ``a = s cos(t)``, ``b = s sin(t)`` the model ``x' = a x - b y + tx``, ``y' = b x + a y + ty`` is linear,
    so the least-squares fit (the same minimiser as Umeyama's method for similarities) is one ``lstsq``.
    """
    src = np.asarray(src, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
    if len(src) != len(dst) or len(src) < 2:
        raise InputError(f"a similarity needs at least 2 matching points, got {len(src)} and {len(dst)}")
    n = len(src)
    design = np.zeros((2 * n, 4))
    design[0::2] = np.column_stack([src[:, 0], -src[:, 1], np.ones(n), np.zeros(n)])
    design[1::2] = np.column_stack([src[:, 1], src[:, 0], np.zeros(n), np.ones(n)])
    (a, b, tx, ty), *_ = np.linalg.lstsq(design, dst.reshape(-1), rcond=None)
    if not np.isfinite([a, b, tx, ty]).all() or a * a + b * b < 1e-12:
        raise InputError("face landmarks are degenerate: no similarity maps them onto the template")
    return np.array([[a, -b, tx], [b, a, ty]])


def matrix_scale(matrix: np.ndarray) -> float:
    """The uniform scale of a similarity (for an affine map, the geometric mean of its axis scales)."""
    return float(np.sqrt(abs(np.linalg.det(np.asarray(matrix)[:, :2]))))


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The 2x3 affine map ``outer(inner(p))``."""
    full = np.vstack([outer, [0.0, 0.0, 1.0]]) @ np.vstack([inner, [0.0, 0.0, 1.0]])
    return full[:2]


def invert(matrix: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(matrix, dtype=np.float64))


def translation(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]])


def resize_map(fx: float, fy: float) -> np.ndarray:
    """The affine map of a resize by ``fx``, ``fy`` in pixel-centre coordinates: ``x' = f (x + 0.5) - 0.5``."""
    return np.array([[fx, 0.0, 0.5 * fx - 0.5], [0.0, fy, 0.5 * fy - 0.5]])


def footprint(matrix: np.ndarray, width: int, height: int, bounds: tuple[int, int],
              margin: int = 0) -> tuple[int, int, int, int] | None:
    """Integer box ``(x0, y0, x1, y1)`` covering the image under ``matrix`` of a ``width`` x ``height`` raster,
    grown by ``margin`` and clipped to ``bounds`` = (rows, cols); None when nothing of it is inside."""
    corners = np.array([[-0.5, -0.5], [width - 0.5, -0.5], [-0.5, height - 0.5], [width - 0.5, height - 0.5]])
    mapped = corners @ np.asarray(matrix)[:, :2].T + np.asarray(matrix)[:, 2]
    rows, cols = bounds
    x0 = max(int(np.floor(mapped[:, 0].min() + 0.5)) - margin, 0)
    y0 = max(int(np.floor(mapped[:, 1].min() + 0.5)) - margin, 0)
    x1 = min(int(np.ceil(mapped[:, 0].max() + 0.5)) + margin, cols)
    y1 = min(int(np.ceil(mapped[:, 1].max() + 0.5)) + margin, rows)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def warp(source: np.ndarray, matrix: np.ndarray, width: int, height: int, *, interpolation: int = cv2.INTER_CUBIC,
         border: int = cv2.BORDER_REFLECT_101) -> np.ndarray:
    """``cv2.warpAffine`` into a ``width`` x ``height`` raster, shrinking the source with area averaging first
    where the map minifies (a bare warp would alias: bicubic interpolation does not low-pass)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    scale = matrix_scale(matrix)
    if scale < _ANTIALIAS_BELOW:
        rows, cols = source.shape[:2]
        new_cols, new_rows = max(1, round(cols * scale)), max(1, round(rows * scale))
        source = cv2.resize(source, (new_cols, new_rows), interpolation=cv2.INTER_AREA)
        matrix = compose(matrix, invert(resize_map(new_cols / cols, new_rows / rows)))
    return cv2.warpAffine(source, matrix, (width, height), flags=interpolation, borderMode=border)


@dataclass(eq=False)
class AlignedFace:
    """A face warped onto a template: ``crop`` (size x size x 3 float32 in [0, 1]) and ``matrix`` (2x3), the
    similarity from photo pixels to crop pixels."""

    crop: np.ndarray
    matrix: np.ndarray

    @property
    def size(self) -> int:
        return self.crop.shape[0]


def alignment_matrix(landmarks: np.ndarray, template: str, size: int) -> np.ndarray:
    """The similarity from photo pixels to a ``size`` px crop that puts ``landmarks`` on ``template``."""
    return estimate_similarity(landmarks, face_template(template, size))


def native_square_size(side: float) -> int:
    """The crop size for a whole image of ``side`` px (an aligned input) run by a method of any size: ``side``
    rounded up to a multiple of 16, kept within 64..2048 px, as :func:`native_crop_size`."""
    size = int(np.ceil(side / _NATIVE_ALIGN - 1e-6) * _NATIVE_ALIGN)
    return int(min(max(size, _NATIVE_MIN), _NATIVE_MAX))


def native_crop_size(landmarks: np.ndarray, template: str, scale: float = 1.0) -> int:
    """The crop size at which the aligned face keeps its own resolution (times ``scale``), rounded up to a
    multiple of 16 and kept within 64..2048 px: for methods that work at any size."""
    unit = matrix_scale(alignment_matrix(landmarks, template, 512)) / 512.0
    return native_square_size(scale / max(unit, 1e-9))


def align_face(image: np.ndarray, landmarks: np.ndarray, template: str, size: int) -> AlignedFace:
    """Warp the face with ``landmarks`` in ``image`` (HxWx3, uint8/uint16/float32) onto ``template`` at ``size``.

    Only the part of ``image`` under the crop (plus the interpolation support) is read and converted; parts of the
    crop beyond the photo's border are filled by reflection.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"face alignment needs an HxWx3 image, got shape {image.shape}")
    matrix = alignment_matrix(landmarks, template, size)
    margin = int(np.ceil(4 / min(matrix_scale(matrix), 1.0)))  # interpolation support, in photo pixels
    box = footprint(invert(matrix), size, size, image.shape[:2], margin=margin)
    if box is None:
        raise InputError(f"face at {np.round(landmarks[0], 1).tolist()} lies outside the {image.shape[1]}x"
                         f"{image.shape[0]} image")
    x0, y0, x1, y1 = box
    region = to_float(image[y0:y1, x0:x1])
    local = compose(matrix, translation(x0, y0))
    crop = warp(region, local, size, size)
    return AlignedFace(np.clip(crop, 0.0, 1.0, out=crop), matrix)
