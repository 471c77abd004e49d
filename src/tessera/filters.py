"""Optional pre- and post-filters: motion deblurring and high-frequency (ringing) suppression.

Deblurring estimates a linear motion blur (direction and length) from the image itself, then deconvolves with
that kernel. The estimate reads the cepstrum: the spectrum of a straight motion blur of length L has evenly spaced
zeros across the motion, which put a strong negative peak in the cepstrum at distance L along it. The default
deconvolution has a hyper-Laplacian gradient prior and free borders (:mod:`tessera.sparse_deconv`): it raises both
PSNR and sharpness where Wiener (scikit-image, kept as a choice) trades sharpness for noise and Richardson-Lucy
doubles edges. Large images are deconvolved tile by tile with context, with one kernel and one noise level.

Ringing suppression is an edge-preserving (bilateral) smoothing: it flattens the small oscillations that
restoration networks and deconvolution leave beside edges, and keeps the edges.
"""
from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from typing import Any, get_args

import cv2
import numpy as np

from .errors import InputError, OptionError, look_up_option
from .image.pixels import from_float, to_float
from .options import DeblurMethodName as DeblurMethod
from .progress import ProgressCallback
from .sparse_deconv import balance_for_noise, deconvolve_channel, estimate_noise

DEBLUR_METHODS: tuple[str, ...] = get_args(DeblurMethod)  # the first is the default

_MIN_LENGTH = 2.0  # shorter blurs are left alone: deconvolving them only adds noise
_ESTIMATE_SIDE = 1024  # the estimate reads a central crop of at most this size
# Wiener balance (noise-to-signal) grows with the blur: a longer kernel amplifies more noise. Tuned on
# scikit-image's photos blurred by 5 to 21 px with 8-bit noise.
_BALANCE_PER_SQUARED_PX = 0.002
# A cepstral peak must stand this many deviations out: sharp photos reach ~10, blurred ones 16 and more.
_PEAK_RATIO = 12.0
_RL_ITERATIONS = 20


@dataclass(frozen=True)
class MotionBlur:
    """A straight motion blur: ``length`` in pixels, ``angle`` in degrees (0 = horizontal, counter-clockwise
    positive as seen on screen, i.e. y up)."""

    length: float
    angle: float

    @property
    def significant(self) -> bool:
        return self.length >= _MIN_LENGTH


def motion_kernel(length: float, angle: float) -> np.ndarray:
    """The point-spread function of a straight motion blur: an anti-aliased segment of ``length`` px at
    ``angle`` degrees, centred in an odd square, summing to 1."""
    if length <= 0 or not math.isfinite(length):
        raise InputError(f"motion blur length must be positive, got {length}")
    radius = length / 2.0
    size = 2 * math.ceil(radius) + 3
    centre = size // 2
    kernel = np.zeros((size, size), dtype=np.float64)
    dx, dy = math.cos(math.radians(angle)), -math.sin(math.radians(angle))
    samples = max(int(length * 8), 2)
    for t in np.linspace(-radius, radius, samples):
        x, y = centre + t * dx, centre + t * dy
        x0, y0 = math.floor(x), math.floor(y)
        fx, fy = x - x0, y - y0
        kernel[y0, x0] += (1 - fx) * (1 - fy)
        kernel[y0, x0 + 1] += fx * (1 - fy)
        kernel[y0 + 1, x0] += (1 - fx) * fy
        kernel[y0 + 1, x0 + 1] += fx * fy
    return kernel / kernel.sum()


def _gray(image: np.ndarray) -> np.ndarray:
    values = to_float(image)
    if values.ndim == 3:
        values = cv2.cvtColor(values[..., :3], cv2.COLOR_RGB2GRAY)
    return values.astype(np.float64)


def _central_gray(image: np.ndarray) -> np.ndarray:
    """The gray central square of at most 1024 px that the estimates read (only it is converted, never the
    whole photo)."""
    rows, cols = image.shape[:2]
    side = min(rows, cols, _ESTIMATE_SIDE)
    top, left = (rows - side) // 2, (cols - side) // 2
    return _gray(image[top:top + side, left:left + side])


def estimate_motion_blur(image: np.ndarray, *, max_length: int | None = None) -> MotionBlur:
    """Estimate a straight motion blur from ``image`` (HxW or HxWx3, any tessera dtype) by its cepstrum.

    Reads a central crop of at most 1024 px. ``max_length`` bounds the search (default: a quarter of the crop).
    Returns a zero-length blur when the image shows none.
    """
    if min(image.shape[:2]) < 32:
        return MotionBlur(0.0, 0.0)
    crop = _central_gray(image)
    side = crop.shape[0]
    crop = crop - crop.mean()
    window = np.outer(np.hanning(side), np.hanning(side))
    spectrum = np.abs(np.fft.fft2(crop * window))
    cepstrum = np.fft.fftshift(np.real(np.fft.ifft2(np.log(spectrum + 1e-3 * spectrum.mean() + 1e-12))))
    limit = int(max_length or side // 4)
    centre = side // 2
    ys, xs = np.mgrid[-centre:side - centre, -centre:side - centre]
    radius = np.hypot(xs, ys)
    # The cepstrum is symmetric: search the upper half-plane only, outside the central lobe.
    valid = (radius >= 3) & (radius <= limit) & ((ys < 0) | ((ys == 0) & (xs > 0)))
    search = np.where(valid, cepstrum, np.inf)
    y, x = np.unravel_index(np.argmin(search), search.shape)
    peak = -cepstrum[y, x]
    spread = np.std(cepstrum[valid])
    if not peak > _PEAK_RATIO * spread:  # no clear peak: no straight blur to undo
        return MotionBlur(0.0, 0.0)
    dx = float(xs[y, x]) + _vertex_offset(cepstrum[y, x - 1:x + 2])
    dy = float(ys[y, x]) + _vertex_offset(cepstrum[y - 1:y + 2, x])
    angle = math.degrees(math.atan2(-dy, dx)) % 180.0
    return MotionBlur(float(math.hypot(dx, dy)), angle)


def _vertex_offset(values: np.ndarray) -> float:
    """Where, within half a pixel, the parabola through three neighbouring samples peaks: the cepstral peak lies
    between pixels, and a whole-pixel length is up to 0.7 px off on a diagonal (enough to double edges)."""
    if values.size != 3:
        return 0.0
    left, centre, right = (float(v) for v in values)
    curvature = left - 2.0 * centre + right
    return float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5)) if curvature != 0 else 0.0


def estimate_balance(image: np.ndarray) -> float:
    """The hyper-Laplacian deconvolution's regularisation-to-data ratio for ``image`` (any tessera dtype), from
    the noise measured on its central crop."""
    return balance_for_noise(estimate_noise(_central_gray(image)))


def default_balance(psf: np.ndarray) -> float:
    """Wiener's noise-to-signal weight for a kernel: proportional to its extent squared."""
    extent_x = np.count_nonzero(psf.sum(axis=0) > 1e-6) - 1
    extent_y = np.count_nonzero(psf.sum(axis=1) > 1e-6) - 1
    length = math.hypot(extent_x, extent_y)
    return float(np.clip(_BALANCE_PER_SQUARED_PX * length ** 2, 0.01, 2.0))


def _deconvolve_channel(channel: np.ndarray, psf: np.ndarray, method: str, balance: float,
                        iterations: int) -> np.ndarray:
    from skimage import restoration

    if method == "wiener":
        return restoration.wiener(channel, psf, balance, clip=False)
    return restoration.richardson_lucy(channel, psf, num_iter=iterations, clip=False)


def deconvolve(image: np.ndarray, psf: np.ndarray, *, method: DeblurMethod = "hyper-laplacian",
               balance: float | None = None, iterations: int = _RL_ITERATIONS) -> np.ndarray:
    """Deconvolve ``image`` (HxW or HxWxC float in [0, 1]) by ``psf``; returns float32 clipped to [0, 1].

    ``balance``: the regulariser's weight against the data (larger: smoother); by default from the image's noise
    (hyper-Laplacian) or the kernel's length (Wiener). ``iterations``: Richardson-Lucy's. The hyper-Laplacian
    method leaves the borders free; for Wiener and Richardson-Lucy the image is mirrored at its borders by twice
    the kernel's size before the (circular) deconvolution, and cropped back after.
    """
    method = look_up_option(method, DEBLUR_METHODS, "deblur method")
    values = np.asarray(image, dtype=np.float32 if method == "hyper-laplacian" else np.float64)
    planar = values.ndim == 2
    if planar:
        values = values[:, :, None]
    if method == "hyper-laplacian":
        if balance is None:
            balance = estimate_balance(values if values.shape[2] >= 3 else values[..., 0])
        out = np.stack([deconvolve_channel(values[..., c], psf, balance) for c in range(values.shape[2])], axis=-1)
        out = np.clip(out, 0.0, 1.0).astype(np.float32)
        return out[..., 0] if planar else out
    if importlib.util.find_spec("skimage") is None:
        raise OptionError(f"the {method} deconvolution needs scikit-image: pip install scikit-image")
    if balance is None:
        balance = default_balance(psf)
    pad = psf.shape[0] * 2
    padded = np.pad(values, ((pad, pad), (pad, pad), (0, 0)), mode="symmetric")
    if method == "richardson-lucy":  # RL needs positive data
        padded = np.maximum(padded, 1e-6)
    out = np.stack([_deconvolve_channel(padded[..., c], psf, method, balance, iterations)
                    for c in range(padded.shape[2])], axis=-1)[pad:-pad, pad:-pad]
    out = np.clip(out, 0.0, 1.0).astype(np.float32)
    return out[..., 0] if planar else out


def deblur(image: Any, *, method: DeblurMethod = "hyper-laplacian", blur: MotionBlur | None = None,
           tile: int = 1024, balance: float | None = None, iterations: int = _RL_ITERATIONS,
           runtime: Any = None, progress: ProgressCallback | None = None) -> Any:
    """Remove a straight motion blur from ``image`` (a Picture, or HxWxC uint8/uint16/float32).

    ``blur``: the blur to undo; by default it is estimated from the image. The image is deconvolved in tiles of
    ``tile`` px with context on every side, so memory stays bounded on large photos; every tile uses the same
    kernel and the same ``balance`` (by default measured once on the whole image's central crop). ``runtime``:
    its cancel event is checked between tiles; ``progress`` receives a "tiles" event after each (the tiles run
    through the engine, :func:`tessera.engine.tiled_apply`, as a weight-free model). Returns the
    same kind and dtype; an image without a measurable blur comes back unchanged (a copy).
    """
    method = look_up_option(method, DEBLUR_METHODS, "deblur method")
    pixels = getattr(image, "pixels", image)
    if not isinstance(pixels, np.ndarray) or pixels.ndim not in (2, 3):
        raise InputError(f"deblur needs an HxW or HxWxC array, got {getattr(pixels, 'shape', type(pixels))}")
    if tile < 64:
        raise OptionError(f"deblur tile must be at least 64 px, got {tile}")
    blur = blur or estimate_motion_blur(pixels)
    if not blur.significant:
        out = pixels.copy()
    else:
        psf = motion_kernel(blur.length, blur.angle)
        if balance is None and method == "hyper-laplacian":
            balance = estimate_balance(pixels)
        out = _deconvolve_tiles(pixels, psf, tile, method, balance, iterations, runtime, progress)
    return image.with_pixels(out) if hasattr(image, "with_pixels") else out


def _deconvolve_tiles(pixels: np.ndarray, psf: np.ndarray, tile: int, method: str, balance: float | None,
                      iterations: int, runtime: Any, progress: ProgressCallback | None) -> np.ndarray:
    """Deconvolve through the engine: tiles of ``tile`` px with twice the kernel's size as context, merged by the
    same canvas as every network's. The deconvolution is a weight-free model on the host: whatever device and
    precision the caller's ``runtime`` names, only its cancel event is used (numpy needs float32 host tensors)."""
    import torch

    from .engine import Runtime, tiled_apply
    from .models.descriptor import Model

    def deconvolve_batch(x: torch.Tensor) -> torch.Tensor:
        windows = x.permute(0, 2, 3, 1).numpy()
        out = [deconvolve(w, psf, method=method, balance=balance, iterations=iterations) for w in windows]
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2)

    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    model = Model(deconvolve_batch, f"deconvolution ({method})", task="restore", architecture="deconvolution",
                  input_channels=channels, output_channels=channels, context=psf.shape[0] * 2, weight_free=True)
    per_tile = None if progress is None else (lambda event: event.done and progress(event))  # after each tile
    host = Runtime.create("cpu", "fp32", model=model, progress=per_tile, cancel=getattr(runtime, "cancel", None))
    out = tiled_apply(model, pixels, tile=tile, tile_pad=model.context, tile_batch=1, runtime=host)
    return out.reshape(pixels.shape)


def suppress_hf(image: Any, *, strength: float = 1.0) -> Any:
    """Smooth ringing and other small high-frequency oscillations while keeping edges (bilateral filter).

    ``strength`` in [0, 1] scales the range of values treated as ringing (0 returns a copy). ``image``: a
    Picture or HxWxC uint8/uint16/float32; the result has the same kind and dtype.
    """
    if not 0.0 <= strength <= 1.0:
        raise OptionError(f"suppress-hf strength must be in [0, 1], got {strength}")
    pixels = getattr(image, "pixels", image)
    if not isinstance(pixels, np.ndarray) or pixels.ndim not in (2, 3):
        raise InputError(f"suppress_hf needs an HxW or HxWxC array, got {getattr(pixels, 'shape', type(pixels))}")
    if strength == 0:
        out = pixels.copy()
    else:
        values = np.ascontiguousarray(to_float(pixels))
        smoothed = cv2.bilateralFilter(values, d=5, sigmaColor=0.1 * strength, sigmaSpace=1.5)
        out = from_float(smoothed.reshape(pixels.shape), pixels.dtype)
    return image.with_pixels(out) if hasattr(image, "with_pixels") else out
