"""Filters: motion-blur estimation and deconvolution, and ringing suppression."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from conftest import load_bench
from tessera.errors import OptionError
from tessera.filters import (DEBLUR_METHODS, MotionBlur, deblur, deconvolve, estimate_motion_blur, motion_kernel,
                             suppress_hf)
from tessera.options import DeblurOptions, FaceOptions
from tessera.sparse_deconv import estimate_noise


def psnr(image: np.ndarray, reference: np.ndarray) -> float:
    error = np.mean((image.astype(np.float64) - reference.astype(np.float64)) ** 2)
    return float(10 * np.log10(1.0 / error))


def blurred_astronaut(length: float, angle: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The sharp astronaut (float) and an 8-bit copy blurred by a known motion kernel, with a little noise."""
    sharp = data.astronaut().astype(np.float32) / 255
    kernel = motion_kernel(length, angle).astype(np.float32)
    blurred = cv2.filter2D(sharp, -1, kernel, borderType=cv2.BORDER_REFLECT_101)
    noise = np.random.default_rng(seed).normal(0, 0.003, blurred.shape)
    return sharp, np.clip(np.rint((blurred + noise) * 255), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("length,angle", [(9, 0), (15, 30), (20, 120)])
def test_motion_kernel_is_a_normalised_segment_of_the_given_length_and_direction(length, angle):
    kernel = motion_kernel(length, angle)
    assert kernel.sum() == pytest.approx(1.0) and kernel.min() >= 0
    assert kernel.shape[0] == kernel.shape[1] and kernel.shape[0] % 2 == 1
    ys, xs = np.mgrid[0:kernel.shape[0], 0:kernel.shape[1]] - kernel.shape[0] // 2
    # Second moments: the segment's variance along its direction is L^2/12; none across it (bilinear spread only).
    direction = np.array([np.cos(np.radians(angle)), -np.sin(np.radians(angle))])
    along = xs * direction[0] + ys * direction[1]
    across = -xs * direction[1] + ys * direction[0]
    assert np.sqrt((kernel * along**2).sum() * 12) == pytest.approx(length, rel=0.08)
    assert (kernel * across**2).sum() < 0.2


@pytest.mark.parametrize("length,angle", [(9, 0), (15, 30), (21, 120)])
def test_the_blur_of_a_synthetic_motion_is_estimated(length, angle):
    _, blurred = blurred_astronaut(length, angle)
    blur = estimate_motion_blur(blurred)
    assert blur.length == pytest.approx(length, abs=1.5)
    assert min(abs(blur.angle - angle), 180 - abs(blur.angle - angle)) < 5


@pytest.mark.parametrize("method", ["wiener", "richardson-lucy"])
def test_deblur_gains_at_least_one_db_on_a_known_motion_blur(method):
    sharp, blurred = blurred_astronaut(15, 30)
    restored = deblur(blurred, method=method)  # the kernel is estimated, not given
    assert restored.dtype == np.uint8 and restored.shape == blurred.shape
    gain = psnr(restored / 255.0, sharp) - psnr(blurred / 255.0, sharp)
    assert gain >= 1.0, f"{method}: {gain:.2f} dB"


def test_the_default_deblur_sharpens_a_blurred_face_without_doubling_its_edges():
    """Issue 11 item 6: Wiener raised PSNR but softened faces; Richardson-Lucy sharpened but doubled edges."""
    bench = load_bench("deblur")
    sharp = bench.astronaut_face()
    blurred = bench.motion_blurred(sharp, 15, 100)
    results = {method: deblur(blurred, method=method) for method in DEBLUR_METHODS}  # kernel estimated
    default = results[DEBLUR_METHODS[0]]
    assert bench.psnr(default, sharp) > bench.psnr(blurred, sharp) + 5
    assert bench.laplacian_variance(default) > 5 * bench.laplacian_variance(blurred)
    assert bench.laplacian_variance(default) < bench.laplacian_variance(sharp)  # sharper, not noisier
    ghosts = {method: bench.ghost_score(result, sharp, 15, 100) for method, result in results.items()}
    assert ghosts["hyper-laplacian"] < min(0.08, ghosts["richardson-lucy"]), ghosts
    assert bench.laplacian_variance(results["wiener"]) < bench.laplacian_variance(blurred)  # the old default


def test_free_borders_keep_the_edge_of_a_slanted_blur_from_ringing():
    """A mirrored border does not match a slanted blur; with the pad's values left free the border band gains
    about as much as the middle."""
    bench = load_bench("deblur")
    sharp = bench.astronaut_face()[:128, :128]
    blurred = bench.motion_blurred(sharp, 11, 35)
    restored = deblur(blurred, blur=MotionBlur(11, 35))
    band = np.ones(sharp.shape[:2], bool)
    band[12:-12, 12:-12] = False
    gain = bench.psnr(restored[band], sharp[band]) - bench.psnr(blurred[band], sharp[band])
    assert gain > 3.0, f"{gain:.2f} dB in the border band"


def test_noise_is_measured_on_flat_and_textured_images():
    rng = np.random.default_rng(1)
    flat = 0.5 + rng.normal(0, 0.01, (128, 128))
    assert estimate_noise(flat) == pytest.approx(0.01, rel=0.1)
    ramp = np.linspace(0, 1, 128)[None, :] * np.ones((128, 1)) + rng.normal(0, 0.02, (128, 128))
    assert estimate_noise(ramp) == pytest.approx(0.02, rel=0.1)


def test_deconvolve_keeps_gray_images_gray_and_in_range():
    _, blurred = blurred_astronaut(9, 0)
    gray = cv2.cvtColor(blurred, cv2.COLOR_RGB2GRAY)[:96, :96].astype(np.float32) / 255
    out = deconvolve(gray, motion_kernel(9, 0))
    assert out.shape == gray.shape and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1


def test_deblur_reports_each_tile_and_every_front_end_defaults_to_the_same_method():
    _, blurred = blurred_astronaut(9, 0)
    events = []
    deblur(blurred[:200, :200], blur=MotionBlur(9, 0), tile=64, progress=events.append)
    assert [event.done for event in events] == list(range(1, events[-1].total + 1)) and events[-1].total > 1
    assert {event.stage for event in events} == {"tiles"}
    assert DeblurOptions().method == FaceOptions().deblur_method == DEBLUR_METHODS[0] == "hyper-laplacian"


def test_deblur_takes_only_the_cancel_event_of_a_callers_runtime():
    """The deconvolution runs on the host in float32 whatever runtime the caller passes (a half-precision or GPU
    one included); its cancel event still stops the tiles."""
    import threading

    import torch

    from tessera.engine import Runtime
    from tessera.errors import CancelledError

    _, blurred = blurred_astronaut(9, 0)
    crop, blur = blurred[:128, :128], MotionBlur(9, 0)
    half = Runtime(torch.device("cpu"), "bf16")
    assert np.array_equal(deblur(crop, blur=blur, tile=64, runtime=half), deblur(crop, blur=blur, tile=64))
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(CancelledError):
        deblur(crop, blur=blur, tile=64, runtime=Runtime(torch.device("cpu"), cancel=cancel))


def test_tiled_deblur_gains_as_much_as_one_piece():
    sharp, blurred = blurred_astronaut(12, 75)
    blur = estimate_motion_blur(blurred)
    sharp, blurred = sharp[:288, 64:352], blurred[:288, 64:352]  # the head: 9 tiles of 96 px
    whole = deblur(blurred, blur=blur, tile=2048)
    tiled = deblur(blurred, blur=blur, tile=96)
    assert abs(psnr(tiled / 255.0, sharp) - psnr(whole / 255.0, sharp)) < 0.5
    assert psnr(tiled / 255.0, sharp) - psnr(blurred / 255.0, sharp) >= 1.0


def test_a_sharp_photo_shows_no_blur_and_comes_back_unchanged():
    sharp = data.astronaut()
    assert not estimate_motion_blur(sharp).significant
    assert np.array_equal(deblur(sharp), sharp)
    assert np.array_equal(deblur(sharp, blur=MotionBlur(1.0, 0.0)), sharp)


def test_deblur_refuses_bad_arguments():
    with pytest.raises(OptionError, match="deblur method"):
        deblur(data.astronaut(), method="magic", blur=MotionBlur(5, 0))
    with pytest.raises(OptionError, match="tile"):
        deblur(data.astronaut(), tile=8)


def ringing_edge() -> tuple[np.ndarray, np.ndarray]:
    """A vertical step edge (0.2 -> 0.8), clean and with decaying oscillations beside it (as after sharpening)."""
    x = np.arange(128, dtype=np.float32)
    clean = np.where(x < 64, 0.2, 0.8).astype(np.float32)
    distance = np.abs(x - 63.5)
    ringing = 0.04 * np.cos(2 * np.pi * (distance - 0.5) / 3) * np.exp(-distance / 12)
    def rows(row: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(row[None, :, None], 64, axis=0), 3, axis=2)

    return rows(clean), rows(clean + ringing.astype(np.float32))


def test_suppress_hf_removes_ringing_and_keeps_the_edge():
    clean, ringing = ringing_edge()
    out = suppress_hf(ringing)
    assert out.dtype == np.float32
    flat = np.r_[40:60, 68:88]
    before = np.abs(ringing[32, flat, 0] - clean[32, flat, 0]).mean()
    after = np.abs(out[32, flat, 0] - clean[32, flat, 0]).mean()
    assert after < 0.5 * before
    step = out[32, 70:80, 0].mean() - out[32, 48:58, 0].mean()
    assert step > 0.9 * 0.6


def test_suppress_hf_keeps_dtype_and_strength_zero_is_a_copy():
    photo = data.astronaut()
    assert suppress_hf(photo).dtype == np.uint8
    assert suppress_hf(photo.astype(np.uint16) * 257).dtype == np.uint16
    assert np.array_equal(suppress_hf(photo, strength=0), photo)
    with pytest.raises(OptionError):
        suppress_hf(photo, strength=3)
