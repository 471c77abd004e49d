"""The upscale task: pass planning, weight-free default, networks, alpha/16-bit/metadata kept."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import random_compact
from tessera.errors import OptionError
from tessera.image.pixels import Picture
from tessera.models.descriptor import Model
from tessera.tasks.upscale import plan_passes, upscale


@pytest.mark.parametrize("model_scale,target,factors,rest", [
    (4, 4, [4], 1.0), (4, 8, [4, 2], 1.0), (4, 16, [4, 4], 1.0), (4, 6, [4], 1.5),
    (2, 2, [2], 1.0), (2, 8, [2, 2, 2], 1.0), (4, 2, [2], 1.0), (1, 1, [1], 1.0), (4, 3, [2], 1.5),
])
def test_plan_passes(model_scale, target, factors, rest):
    assert plan_passes(model_scale, target) == (factors, pytest.approx(rest))


def test_weight_free_default_keeps_alpha_16bit_and_metadata(rng):
    pixels = (rng.random((40, 50, 3)) * 65535).astype(np.uint16)
    alpha = np.full((40, 50), 65535, dtype=np.uint16)
    alpha[:, :10] = 0
    picture = Picture(pixels=pixels, alpha=alpha, icc_profile=b"icc", exif=b"Exif\x00\x00stub")
    done = upscale(picture, device="cpu", model="lanczos")
    result, report = done.image, done.report
    assert report.weight_free and report.scale == 2.0
    assert result.pixels.shape == (80, 100, 3) and result.pixels.dtype == np.uint16
    assert result.alpha.shape == (80, 100) and result.alpha.dtype == np.uint16
    assert result.alpha[:, :12].max() < 1000 and result.alpha[:, 28:].min() > 64000
    assert result.icc_profile == b"icc" and result.exif == picture.exif


def test_weight_free_arbitrary_scale_on_an_array(rng):
    image = (rng.random((30, 41, 3)) * 255).astype(np.uint8)
    out = upscale(image, scale=2.5, device="cpu", model="lanczos").image
    assert isinstance(out, np.ndarray) and out.shape == (75, 102, 3) and out.dtype == np.uint8


def test_weight_free_upscale_is_close_to_opencv_lanczos(rng):
    import cv2

    image = (rng.random((64, 96, 3)) * 255).astype(np.uint8)
    out = upscale(image, scale=2, device="cpu", tile=16, model="lanczos").image
    reference = cv2.resize(image.astype(np.float32) / 255, (192, 128), interpolation=cv2.INTER_LANCZOS4)
    assert np.abs(out.astype(np.float32) / 255 - np.clip(reference, 0, 1)).max() <= 1 / 255


def test_network_passes_reach_eight_times(photo_uint8):
    net = random_compact(num_feat=8, num_conv=2)
    small = photo_uint8[:24, :30]
    done = upscale(small, model=Model(net, "tiny", scale=4), scale=8, device="cpu")
    out, report = done.image, done.report
    assert out.shape == (192, 240, 3)
    assert [p.scale for p in report.passes] == [4, 2] and report.finish is None
    # pass 2 is the network at x4 averaged down by 2: check it against that, computed directly
    first = upscale(small, model=Model(net, "tiny", scale=4), device="cpu").image
    with torch.inference_mode():
        x = torch.from_numpy(first.astype(np.float32) / 255).permute(2, 0, 1)[None]
        y = torch.nn.functional.avg_pool2d(net(x), 2).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    assert np.abs(out.astype(np.float32) / 255 - y).max() <= 1 / 255


def test_a_rest_after_whole_passes_is_finished_with_lanczos(photo_uint8):
    net = random_compact(num_feat=8, num_conv=2)
    done = upscale(photo_uint8[:20, :20], model=Model(net, "tiny", scale=4), scale=6, device="cpu")
    out, report = done.image, done.report
    assert out.shape == (120, 120, 3)
    assert [p.scale for p in report.passes] == [4]  # x6 = x4, then Lanczos x1.5 (not a pass over the x4 image)
    assert report.finish == "Lanczos 80x80 -> 120x120"


def test_bad_options(photo_uint8):
    with pytest.raises(OptionError):
        upscale(photo_uint8, scale=-1, device="cpu", model="lanczos")
    with pytest.raises(OptionError):
        upscale(photo_uint8, tile="big", device="cpu", model="lanczos")
    with pytest.raises(OptionError):
        upscale(photo_uint8, colour="blue", device="cpu", model="lanczos")


def test_batches_and_tiles_must_be_positive(photo_uint8):
    for options in ({"tile_batch": 0}, {"tile": 0}, {"tile_pad": -1}):
        with pytest.raises(OptionError, match="greater than or equal"):
            upscale(photo_uint8, device="cpu", **options, model="lanczos")


def test_a_gray_picture_comes_back_as_the_single_channel_save_image_writes():
    from tessera.tasks.common import deliver

    pixels = np.zeros((2, 2, 3), dtype=np.uint8)
    pixels[..., 0] = 200  # colour a network might add to a gray photo
    out = deliver(Picture(pixels=pixels, gray=True), "array")
    assert out.shape == (2, 2) and (out == round(0.299 * 200)).all()
