"""Detected faces as boxes: the :class:`Face` record, box overlap, and non-maximum suppression across passes."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

NMS_IOU = 0.35
NMS_CONTAINED = 0.7  # a box this much inside another is a part of that face


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

    @property
    def centre(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2

    def mapped(self, scale: float, dx: float = 0.0, dy: float = 0.0) -> Face:
        """This face in another raster: coordinates scaled by ``scale`` (pixel centres kept) then shifted."""
        def move(x: np.ndarray, offset: np.ndarray) -> np.ndarray:
            return (x + 0.5) * scale - 0.5 + offset

        x0, y0, x1, y1 = self.box
        box = (float(x0 * scale + dx), float(y0 * scale + dy), float(x1 * scale + dx), float(y1 * scale + dy))
        return Face(box, self.score, move(self.landmarks, np.array([dx, dy])))

    def rescored(self, score: float) -> Face:
        return Face(self.box, score, self.landmarks)


def iou_and_containment(a: tuple[float, ...], b: tuple[float, ...]) -> tuple[float, float]:
    """Intersection over union of two boxes, and the share of the smaller box that lies inside the other."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0, inter / min(area_a, area_b) if min(area_a, area_b) > 0 else 0.0


def same_face(a: Face, b: Face) -> bool:
    """Whether two detections are one face for :func:`merge_faces`: they overlap, or one is a part of the other."""
    iou, contained = iou_and_containment(a.box, b.box)
    return iou > NMS_IOU or contained > NMS_CONTAINED


def index_order(faces: list[Face]) -> list[Face]:
    """Faces in their index order, the one every front end numbers them by: largest first; among equal sizes
    top first, then left first."""
    return sorted(faces, key=lambda face: (-face.size, face.box[1], face.box[0]))


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
            iou, contained = iou_and_containment(face.box, other.box)
            if iou > NMS_IOU:
                break
            if contained > NMS_CONTAINED:
                if face.width * face.height > other.width * other.height:
                    kept[index] = face
                break
        else:
            kept.append(face)
    return kept
