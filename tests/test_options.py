"""The shared option schema refuses impossible values and combinations with one OptionError line, so the API,
the CLI and the web UI all refuse them before any work."""
from __future__ import annotations

import numpy as np
import pytest

from tessera.errors import OptionError
from tessera.image.write import save_image
from tessera.options import EngineOptions, FaceOptions, InpaintOptions, UpscaleOptions, parse_options

REFUSED = [
    (UpscaleOptions, {"scale": 20}, "scale"),
    (UpscaleOptions, {"scale": "0.0001"}, "scale"),
    (UpscaleOptions, {"scale": 0.5}, "scale"),
    (UpscaleOptions, {"scale": float("nan")}, "scale"),
    (UpscaleOptions, {"sharpen": 1.0, "model": "realesrgan-x4plus"}, "option sharpen: applies to the weight-free method"),
    (EngineOptions, {"device": "tpu"}, "unknown device"),
    (EngineOptions, {"device": "cuda:x"}, "unknown device"),
    (InpaintOptions, {"max_size": 8}, "max_size: must be at least 64"),
    (FaceOptions, {"background": "none", "upscale": 2}, "background 'none' keeps the photo's size"),
]


@pytest.mark.parametrize("schema, values, words", REFUSED)
def test_impossible_options_are_one_option_error_line(schema, values, words):
    with pytest.raises(OptionError, match=words) as caught:
        parse_options(schema, values)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("schema, values", [
    (UpscaleOptions, {"scale": 1}), (UpscaleOptions, {"scale": "16"}), (UpscaleOptions, {"sharpen": 1.0}),
    (EngineOptions, {"device": "cuda:1"}), (EngineOptions, {"device": "CPU"}), (InpaintOptions, {"max_size": 64}),
    (FaceOptions, {"background": "none"}), (FaceOptions, {"background": "lanczos", "upscale": 2}),
])
def test_possible_options_pass(schema, values):
    parse_options(schema, values)


@pytest.mark.parametrize("scale", [0.0001, 20])
def test_the_api_refuses_a_bad_scale_before_decoding(tmp_path, monkeypatch, scale):
    from tessera.tasks import common
    from tessera.tasks.upscale import upscale

    source = tmp_path / "photo.png"
    save_image(np.zeros((8, 8, 3), np.uint8), source)

    def decoder_reached(*args, **kwargs):
        raise AssertionError("the photo was decoded before the options were checked")

    monkeypatch.setattr(common, "load_image", decoder_reached)
    with pytest.raises(OptionError, match="scale"):
        upscale(source, scale=scale, model="lanczos")
