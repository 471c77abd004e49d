"""Weight-free inpainting: OpenCV's Telea fast marching and PatchMatch (the BSD ``patchmatch-cython`` package).

They need no download, so they are what ``tessera inpaint`` uses when LaMa's weights are not in the cache
(PatchMatch, which keeps texture where Telea smears; Telea when ``patchmatch-cython`` is not installed). Both
are wrapped as :class:`Model` objects with ``task="inpaint"`` so they run through the same planner (crops around
the holes, paste-back, feathering) as a network: cropping keeps PatchMatch's search near the hole and its cost
following the mask. The functions take and return HxWx3 float32 in [0, 1] with a boolean HxW hole mask.

- Telea (OpenCV ``INPAINT_TELEA``) propagates the rim inward: good for thin scratches and text, smears large
  holes. It runs per channel on float32, so 16-bit photos keep their precision.
- PatchMatch copies patches from the surroundings: texture for blobs and boxes. The package computes in 8 bits.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from ...errors import ModelError
from ..descriptor import Model

TELEA_RADIUS = 3  # best mean PSNR/SSIM of bench/inpaint_quality.py (r3 > r5 > r9)
PATCH_SIZE = 7  # bench/inpaint_quality.py: best texture of the settings within 1 dB of the best PSNR


def inpaint_telea(image: np.ndarray, mask: np.ndarray, radius: int = TELEA_RADIUS) -> np.ndarray:
    """Fill ``mask`` in ``image`` (HxWx3 float32 [0,1]) with Telea's fast-marching method, per channel.

    OpenCV's float path assumes 8-bit-like magnitudes (its thresholds are absolute), so values run in 0..255,
    in float32: 16-bit photos keep their precision.
    """
    hole = np.where(mask, 255, 0).astype(np.uint8)
    planes = [cv2.inpaint(np.ascontiguousarray(image[:, :, c] * np.float32(255)), hole, float(radius),
                          cv2.INPAINT_TELEA) for c in range(image.shape[2])]
    return np.clip(np.stack(planes, axis=2) / np.float32(255), 0.0, 1.0)


def inpaint_patchmatch(image: np.ndarray, mask: np.ndarray, patch_size: int = PATCH_SIZE, seed: int = 0,
                       **options: object) -> np.ndarray:
    """Fill ``mask`` in ``image`` (HxWx3 float32 [0,1]) with multi-scale PatchMatch (8-bit internally).

    ``seed`` makes the result reproducible; ``options`` go to ``patchmatch_cython.inpaint_pyramid``
    (``edge_weighted``, ``em_loops``, ``hole_refine``...). Holes with no known pixel around fall back to Telea.
    """
    from patchmatch_cython import inpaint_pyramid

    if mask.all():  # nothing to copy from
        return inpaint_telea(image, mask)
    pixels = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    filled = inpaint_pyramid(pixels, mask.astype(bool), patch_size=patch_size, seed=seed, **options)
    return filled.astype(np.float32) / 255.0


InpaintFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class _MaskedNetwork:
    """NCHW image and N1HW mask tensors in, NCHW out: runs ``fill`` on the host, one image at a time.

    Pixels outside the mask are returned unchanged, like LaMa's own composite.
    """

    fill: InpaintFn

    def __call__(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        images = x.detach().float().cpu().permute(0, 2, 3, 1).numpy()
        holes = mask.detach().float().cpu()[:, 0].numpy() > 0.5
        outputs = []
        for image, hole in zip(images, holes):
            filled = self.fill(image, hole) if hole.any() else image
            outputs.append(np.where(hole[:, :, None], filled, image))
        return torch.from_numpy(np.stack(outputs).astype(np.float32)).permute(0, 3, 1, 2).to(x.device, x.dtype)


def _masked_call(network: _MaskedNetwork, image: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    if mask is None:
        raise ValueError("a weight-free inpainting method needs a mask")
    return network(image, mask)


def telea_model(radius: int = TELEA_RADIUS) -> Model:
    """OpenCV Telea as a tessera Model."""
    return Model(
        network=_MaskedNetwork(lambda image, mask: inpaint_telea(image, mask, radius)),
        name="telea", task="inpaint", architecture="Telea (OpenCV, weight-free)",
        call_fn=_masked_call, context=radius, source="opencv", license="Apache-2.0 (OpenCV)",
        takes_mask=True, weight_free=True, details={"radius": radius},
    )


def patchmatch_available() -> bool:
    """Whether the ``patchmatch-cython`` package (the ``inpaint`` extra) is installed."""
    import importlib.util

    return importlib.util.find_spec("patchmatch_cython") is not None


def patchmatch_model(patch_size: int = PATCH_SIZE, seed: int = 0, **options: object) -> Model:
    """PatchMatch (patchmatch-cython) as a tessera Model; ModelError when the package is not installed."""
    if not patchmatch_available():
        raise ModelError("the patchmatch method needs the patchmatch-cython package: "
                         "pip install 'tessera[inpaint]' (or use --model telea)")
    return Model(
        network=_MaskedNetwork(lambda image, mask: inpaint_patchmatch(image, mask, patch_size, seed, **options)),
        name="patchmatch", task="inpaint", architecture="PatchMatch (patchmatch-cython, weight-free)",
        call_fn=_masked_call, source="patchmatch-cython", license="BSD-3-Clause",
        takes_mask=True, weight_free=True, details={"patch_size": patch_size, **options},
    )


WEIGHT_FREE_INPAINT: dict[str, Callable[[], Model]] = {
    "telea": telea_model,
    "patchmatch": patchmatch_model,
}
