"""Face detection: boxes, scores and five landmarks, on photos of any size.

The detectors are in :mod:`.backends` (YuNet through yuface; scikit-image's cascade where yuface has no wheel).
Photos are searched as a pyramid (:mod:`.pyramid`): first whole on a copy of at most ``max_side`` px, then finer
levels only where the coarser one found faces near the size it can resolve (or, while no face has been found, a
bounded number of finer levels over the whole photo); every face is confirmed at a second scale. A scan-size
group photo whose faces the first pass already resolves costs little more than that pass, and a large photo
with no face is not searched at full resolution.
"""
from __future__ import annotations

from typing import Any, Literal

import numpy as np

from ..errors import InputError, look_up_option
from .backends import DETECTORS, available_detector, backend_for
from .boxes import Face, index_order, merge_faces
from .pyramid import PyramidSearch

__all__ = ["DETECTORS", "TILE_MODES", "Face", "available_detector", "detect_faces", "merge_faces"]

TILE_MODES = ("auto", "always", "never")


def detect_faces(image: Any, *, min_face: int = 16, min_score: float = 0.6,
                 detector: Literal["auto", "yunet", "cascade"] = "auto", max_side: int = 1280,
                 tiles: Literal["auto", "always", "never"] = "auto", runtime: Any = None) -> list[Face]:
    """Find the faces in ``image`` (a Picture, or HxWx3 RGB uint8/uint16/float32), in index order (largest first;
    among equal sizes top, then left first: the numbering of ``--list-faces``, ``faces=[...]`` and the web).

    ``min_face``: ignore faces whose box is smaller (short side, photo pixels). ``min_score``: the score
    threshold; a face's score is the lower of its scores at the scale it was found at and at a second one.
    ``max_side``: the first pass runs on a copy at most this large. ``tiles``: the finer passes: "auto" (a
    pyramid, searched only where the first pass found faces near its limit, or a bounded one while it found
    none), "always" (also the whole photo in full-resolution tiles) or "never" (the first pass only).
    ``runtime``: an engine Runtime, for progress ("detect") and cancellation.
    """
    pixels = getattr(image, "pixels", image)
    if not isinstance(pixels, np.ndarray) or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise InputError(f"face detection needs an HxWx3 RGB array, got {getattr(pixels, 'shape', type(pixels))}")
    if not 0.0 <= min_score <= 1.0:
        raise InputError(f"face score threshold must be in [0, 1], got {min_score}")
    if max_side < 1:
        raise InputError(f"face detection's first pass needs max_side >= 1, got {max_side}")
    tiles = look_up_option(tiles, TILE_MODES, "detection tile mode")
    search = PyramidSearch(pixels, backend_for(detector), min_score, min_face, runtime)
    first = search.first_level(max_side)
    if tiles == "never" or first.scale >= 1.0:
        levels = [first]
    elif tiles == "always":
        levels = [first, search.full_resolution()]
    else:
        levels = search.finer_levels(first)
    faces = [face for face in search.judge(levels) if face.size >= min_face]
    return index_order(faces)
