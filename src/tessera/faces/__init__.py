"""Faces: detection (YuNet through yuface, or scikit-image's cascade), alignment templates and paste-back.

The faces task (:mod:`tessera.tasks.faces`) chains them: :func:`detect_faces` finds boxes and five landmarks,
:func:`align_face` warps each face onto a network's template, and :func:`paste_face` puts the restored crop back
into its own box only, with a soft mask.
"""
from __future__ import annotations

from .align import AlignedFace, align_face, estimate_similarity, face_template, native_crop_size
from .detect import Face, available_detector, detect_faces
from .paste import paste_face, soft_mask

__all__ = ["AlignedFace", "Face", "align_face", "available_detector", "detect_faces", "estimate_similarity",
           "face_template", "native_crop_size", "paste_face", "soft_mask"]
