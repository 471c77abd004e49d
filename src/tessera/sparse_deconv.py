"""Deconvolution with a hyper-Laplacian prior on the image gradients, and borders left free.

Why: Wiener's quadratic regulariser must be strong to hold the noise down, and then it smooths every edge the blur
left (a face comes out softer than it went in); Richardson-Lucy sharpens but rings and doubles edges. Natural images
have sparse gradients (heavy-tailed, ``|g|^p`` with p < 1): penalising them that way keeps edges sharp and flat
parts flat. The problem ``weight/2 ||k * x - y||^2 + sum |grad x|^p`` is solved by half-quadratic splitting
(Krishnan and Fergus, "Fast image deconvolution using hyper-Laplacian priors", 2009): alternately a per-pixel
shrinkage of the gradients and a closed-form least-squares step in the Fourier domain, with a coupling ``beta``
that grows every round.

Borders: an FFT treats the image as periodic, so the blur at one border would mix in the opposite border, and a
mirrored border does not match a slanted motion blur either; both ring across small images. Here the image is
padded by the kernel's size and the blurred values in the pad are unknowns (Almeida and Figueiredo, "Deconvolving
images with unknown boundaries", 2013): each round sets them to the current estimate blurred, so only the real
pixels constrain the solution. No taper or window is needed.

Everything is whole-array numpy FFT work: 18 rounds of 2 forward and 2 inverse real FFTs per channel.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

EXPONENT = 2.0 / 3.0  # of the gradient prior |g|^p: 2/3 is Krishnan and Fergus's choice for natural images
_BETA_START, _BETA_STOP, _BETA_STEP = 1.0, 256.0, 2.0 * math.sqrt(2.0)
_INNER_ROUNDS = 3  # rounds per beta: lets the unknown border values follow the estimate
_SHRINK_STEPS = 3  # fixed-point steps of the generalised shrinkage
# Data weight from the noise: weight = _WEIGHT_SCALE * sigma^_WEIGHT_POWER, clipped. Tuned on scikit-image's photos
# blurred by 9 to 25 px with Gaussian noise of 0.003, 0.01 and 0.02 (bench/deblur.py): the best weight falls as
# about sigma^-4/3; a weight too large for the noise amplifies it, so the scale sits on the safe side.
_WEIGHT_SCALE, _WEIGHT_POWER = 4.0, -4.0 / 3.0
_WEIGHT_RANGE = (300.0, 20000.0)
_SIGMA_RANGE = (1e-3, 0.05)


def estimate_noise(gray: np.ndarray) -> float:
    """The standard deviation of white noise in a gray float image (Immerkaer's method, 1996).

    Convolves with a mask that cancels planes and linear ramps (the difference of two Laplacians) and reads the
    mean absolute response; edges inflate it a little, which errs on the smooth side. Clipped to [0.001, 0.05]."""
    mask = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)
    response = cv2.filter2D(np.asarray(gray, dtype=np.float32), -1, mask)[1:-1, 1:-1]
    if response.size == 0:
        return _SIGMA_RANGE[1]
    sigma = math.sqrt(math.pi / 2.0) * float(np.abs(response).mean()) / 6.0
    return float(np.clip(sigma, *_SIGMA_RANGE))


def balance_for_noise(sigma: float) -> float:
    """The regularisation-to-data ratio (1 / data weight) for noise ``sigma``: larger noise, smoother result."""
    weight = np.clip(_WEIGHT_SCALE * max(sigma, _SIGMA_RANGE[0]) ** _WEIGHT_POWER, *_WEIGHT_RANGE)
    return float(1.0 / weight)


def _otf(psf: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The kernel's transfer function on a ``shape`` grid (real FFT layout), centred on pixel (0, 0)."""
    grid = np.zeros(shape, dtype=np.float32)
    rows, cols = psf.shape
    grid[:rows, :cols] = psf
    grid = np.roll(grid, (-(rows // 2), -(cols // 2)), axis=(0, 1))
    return np.fft.rfft2(grid)


def _gradient_power(shape: tuple[int, int]) -> np.ndarray:
    """|Dx|^2 + |Dy|^2 of circular forward differences on a ``shape`` grid (real FFT layout)."""
    rows, cols = shape
    wy = 2.0 - 2.0 * np.cos(2.0 * np.pi * np.arange(rows) / rows)
    wx = 2.0 - 2.0 * np.cos(2.0 * np.pi * np.arange(cols // 2 + 1) / cols)
    return (wy[:, None] + wx[None, :]).astype(np.float32)


def _shrink(values: np.ndarray, threshold: float, power: float) -> np.ndarray:
    """argmin_w (w - v)^2 / 2 + threshold |w|^power, per element (generalised soft thresholding, Zuo et al. 2013).

    Below the cut-off the minimiser is 0; above it, a few fixed-point steps from |v| reach it."""
    cut = ((2.0 * threshold * (1.0 - power)) ** (1.0 / (2.0 - power))
           + threshold * power * (2.0 * threshold * (1.0 - power)) ** ((power - 1.0) / (2.0 - power)))
    size = np.abs(values)
    shrunk = size.copy()
    for _ in range(_SHRINK_STEPS):
        shrunk = size - threshold * power * np.maximum(shrunk, 1e-6) ** (power - 1.0)
    return np.where(size > cut, np.copysign(np.maximum(shrunk, 0.0), values), 0.0).astype(values.dtype)


def _forward_differences(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.roll(x, -1, axis=1) - x, np.roll(x, -1, axis=0) - x


def _adjoint_differences(gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    return (np.roll(gx, 1, axis=1) - gx) + (np.roll(gy, 1, axis=0) - gy)


def deconvolve_channel(channel: np.ndarray, psf: np.ndarray, balance: float, *,
                       power: float = EXPONENT) -> np.ndarray:
    """Deconvolve one channel (HxW float) by ``psf`` with the hyper-Laplacian prior; float32, not clipped.

    ``balance``: regularisation-to-data ratio (1 / the data weight), see :func:`balance_for_noise`."""
    pad = psf.shape[0]
    observed = np.pad(np.asarray(channel, dtype=np.float32), pad, mode="symmetric")
    shape = observed.shape
    inside = np.zeros(shape, dtype=bool)
    inside[pad:-pad, pad:-pad] = True
    kernel = _otf(psf, shape)
    kernel_conj, kernel_power = np.conj(kernel), (np.abs(kernel) ** 2).astype(np.float32)
    gradient_power = _gradient_power(shape)
    weight = 1.0 / balance
    estimate = observed.copy()
    spectrum = np.fft.rfft2(estimate)
    beta = _BETA_START
    while beta <= _BETA_STOP * 1.0001:
        denominator = weight * kernel_power + beta * gradient_power
        denominator[0, 0] = max(denominator[0, 0], 1e-12)
        for _ in range(_INNER_ROUNDS):
            reblurred = np.fft.irfft2(kernel * spectrum, s=shape)
            target = np.where(inside, observed, reblurred)  # the pad's blurred values: unknowns, kept consistent
            gx, gy = _forward_differences(estimate)
            prior = _adjoint_differences(_shrink(gx, 1.0 / beta, power), _shrink(gy, 1.0 / beta, power))
            spectrum = (weight * kernel_conj * np.fft.rfft2(target) + beta * np.fft.rfft2(prior)) / denominator
            estimate = np.fft.irfft2(spectrum, s=shape).astype(np.float32)
        beta *= _BETA_STEP
    return estimate[pad:-pad, pad:-pad]
