"""LaMa through the planner: with a random-weight spandrel LaMa, `strategy=auto` on a photo small enough for one
crop gives exactly what a direct spandrel call gives (uint8), and leaves every other pixel as it was."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tessera.tasks.inpaint import inpaint, sizing_for
from tessera.tasks.inpaint_regions import Box


@pytest.fixture(scope="module")
def lama():
    """spandrel's LaMa with random weights, loaded from its state dict as spandrel loads a checkpoint."""
    from spandrel import ModelLoader
    from spandrel.architectures.LaMa import LaMa

    torch.manual_seed(0)
    state = LaMa(in_nc=4, out_nc=3).state_dict()
    return ModelLoader().load_from_state_dict(state).eval()


@pytest.mark.slow
def test_auto_on_a_small_photo_equals_a_direct_spandrel_call(lama):
    from skimage import data

    photo = np.ascontiguousarray(data.astronaut()[200:296, 150:278])  # 96x128: one crop = the whole photo
    mask = np.zeros(photo.shape[:2], np.uint8)
    mask[30:52, 40:75] = 255
    done = inpaint(photo, mask, model=lama, strategy="auto", device="cpu")
    out, report = done.image, done.report
    assert len(report.regions) == 1 and report.regions[0].crop == Box(0, 0, 96, 128)

    x = torch.from_numpy(photo.astype(np.float32) / 255).permute(2, 0, 1)[None]
    m = torch.from_numpy((mask > 127).astype(np.float32))[None, None]
    with torch.inference_mode():
        y = lama(x, m)
    direct = np.clip(np.rint(y[0].permute(1, 2, 0).numpy() * 255), 0, 255).astype(np.uint8)
    hole = mask > 127
    assert np.array_equal(out[hole], direct[hole])
    assert np.array_equal(out[~hole], photo[~hole])
    assert (out[hole] != photo[hole]).any()



@pytest.mark.slow
def test_lama_crops_are_power_of_two_in_half_precision(lama):
    from tessera.engine import Runtime
    from tessera.models.loader import as_model

    model = as_model(lama)
    runtime = Runtime.create("cpu", "fp32", model=model)
    assert sizing_for(model, runtime, None).pow2 is False
    half = Runtime(runtime.device, "bf16", runtime.budget)
    sizing = sizing_for(model, half, None)
    assert sizing.pow2 and sizing.up(300) == 512 and sizing.up(200) == 256



@pytest.mark.slow
def test_bf16_runs_with_power_of_two_crops_and_stays_close_to_fp32(lama):
    """torch.fft has no bf16: the Fourier units run in float32 inside a bf16 network (checked here on the CPU)."""
    from skimage import data

    photo = np.ascontiguousarray(data.astronaut()[200:296, 150:278])
    mask = np.zeros(photo.shape[:2], np.uint8)
    mask[30:52, 40:75] = 255
    hole = mask > 127
    x = torch.from_numpy(photo.astype(np.float32) / 255).permute(2, 0, 1)[None]
    with torch.inference_mode():
        y = lama(x, torch.from_numpy(hole.astype(np.float32))[None, None])
    reference = np.rint(y[0].permute(1, 2, 0).numpy() * 255)
    try:
        done = inpaint(photo, mask, model=lama, strategy="crop", device="cpu", precision="bf16")
    finally:
        lama.model.float()
    half, report = done.image, done.report
    (region,) = report.regions
    assert report.precision == "bf16" and region.pad_to == (128, 128)
    assert np.array_equal(half[~hole], photo[~hole])
    assert np.abs(half[hole] - reference[hole]).mean() < 3
