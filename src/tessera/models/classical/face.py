"""Weight-free face clean-up: the default of ``tessera enhance`` when no face network is downloaded.

Each aligned face is denoised (non-local means), given a little local contrast (CLAHE on the lightness) and a
mild unsharp mask whose radius follows the crop size. It restores nothing a network would, but it works out of
the box and shows the whole pipeline (detection, alignment, paste-back) at work. It runs on the face's own
resolution: the descriptor declares no fixed ``face_size``, and the faces task then sizes each crop to its face.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from ...image.pixels import from_float
from ..descriptor import Model
from .lanczos import sharpen

NAME = "classical-face"

_DENOISE_H = 3  # non-local means strength on the 8-bit scale: mild, keeps skin texture
_CLAHE_CLIP = 1.5
_CLAHE_TILES = 4  # per side, relative to the crop: the crop is the face
_CONTRAST_MIX = 0.5
_SHARPEN_AMOUNT = 0.35
_SHARPEN_SIGMA_PER_PX = 1 / 384  # a 512 px crop: sigma 1.3 px


def clean_face(face: np.ndarray) -> np.ndarray:
    """Clean up one aligned face (HxWx3 float32 RGB in [0, 1]); returns float32 in [0, 1].

    Denoising and contrast are computed on 8 bits but applied as corrections to the float input, so 16-bit
    sources keep their precision outside what the clean-up changes.
    """
    face = np.clip(np.asarray(face, dtype=np.float32), 0.0, 1.0)
    eight = from_float(face, np.uint8)
    denoised = cv2.fastNlMeansDenoisingColored(eight, None, _DENOISE_H, _DENOISE_H, 7, 15)
    out = np.clip(face + (denoised.astype(np.float32) - eight.astype(np.float32)) * np.float32(1 / 255), 0.0, 1.0)

    lab = cv2.cvtColor(out, cv2.COLOR_RGB2Lab)  # float32: L in [0, 100]
    lightness = from_float(lab[..., 0] / 100.0, np.uint8)
    clahe = cv2.createCLAHE(clipLimit=_CLAHE_CLIP, tileGridSize=(_CLAHE_TILES, _CLAHE_TILES))
    boost = clahe.apply(lightness).astype(np.float32) - lightness.astype(np.float32)
    lab[..., 0] = np.clip(lab[..., 0] + _CONTRAST_MIX * boost * np.float32(100 / 255), 0.0, 100.0)
    out = np.clip(cv2.cvtColor(lab, cv2.COLOR_Lab2RGB), 0.0, 1.0)

    sigma = max(0.7, face.shape[0] * _SHARPEN_SIGMA_PER_PX)
    return sharpen(out, _SHARPEN_AMOUNT, sigma).astype(np.float32)


class _CleanFaceNetwork:
    """NCHW float tensor in [0, 1] -> the same, each image cleaned up on the host with OpenCV."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        faces = x.detach().float().cpu().permute(0, 2, 3, 1).numpy()
        cleaned = np.stack([clean_face(face) for face in faces])
        return torch.from_numpy(cleaned).permute(0, 3, 1, 2).to(x.device, x.dtype)


def classical_face_model() -> Model:
    """The weight-free face clean-up as a tessera Model (task "face", any crop size, facexlib template)."""
    return Model(
        network=_CleanFaceNetwork(),
        name=NAME,
        task="face",
        architecture="classical face clean-up (weight-free)",
        scale=1,
        face_size=None,
        face_template="facexlib",
        context=0,
        license="n/a",
    )
