"""GPEN: reproduces the original generator, detects its configuration, loads the official layouts strictly."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import spandrel
import torch
from spandrel import ArchRegistry, ArchSupport, ModelLoader, ModelTiling

from tessera.errors import InputError, ModelError
from tessera.models.gpen import GPEN, GPENArch, gpen_config_from_state_dict, upfirdn2d

GOLDEN = (Path(__file__).resolve().parents[1] / ".." / "shared" / "golden").resolve()
LAYOUTS = GOLDEN / "gpen_state_dict_layouts.json"
needs_golden = pytest.mark.skipif(not GOLDEN.is_dir(), reason=f"golden references not found at {GOLDEN}")

SMALL = {"size": 64, "style_dim": 32, "n_mlp": 2, "channel_multiplier": 2, "narrow": 0.125}


def random_gpen(config: dict, seed: int = 0) -> GPEN:
    """A GPEN with every parameter random (the feature-concat weights too, which start at zero)."""
    generator = torch.Generator().manual_seed(seed)
    model = GPEN(**config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    return model


def random_input(size: int, batch: int = 2, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=generator) * 2 - 1


def load_golden(name: str):
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = GOLDEN / f"gpen_golden_{name}.safetensors"
    data = load_file(path)
    with safe_open(path, "pt") as handle:
        metadata = handle.metadata()
    weights = {key[len("weights."):]: value.float() for key, value in data.items() if key.startswith("weights.")}
    return weights, data["input"], data["output"], metadata


# ------------------------------------------------------------------------------------------ golden references
@needs_golden
@pytest.mark.parametrize(("name", "tolerance"), [("tiny64", 1e-4), ("bfr256", 1e-3)])
@pytest.mark.slow
def test_reproduces_original_generator(name, tolerance):
    weights, image, expected, metadata = load_golden(name)
    config = gpen_config_from_state_dict(weights)
    assert config == {key: float(metadata[key]) for key in config}
    model = GPEN(**config).eval()
    model.load_state_dict(weights, strict=True)
    with torch.no_grad():
        output = model(image)
    assert output.shape == expected.shape
    error = (output - expected).abs().max().item()
    assert error <= tolerance, f"{name}: max abs error {error:.3g} > {tolerance}"


@needs_golden
@pytest.mark.parametrize("name", ["GPEN-BFR-256", "GPEN-BFR-512", "GPEN-BFR-1024", "GPEN-BFR-2048"])
def test_official_layouts_load_strictly(name):
    entry = json.loads(LAYOUTS.read_text())[name]
    state_dict = {key: torch.empty(shape, device="meta") for key, shape in entry["keys"].items()}
    config = gpen_config_from_state_dict(state_dict)
    assert config == entry["config"]
    with torch.device("meta"):
        model = GPEN(**config)
    assert {key: list(value.shape) for key, value in model.state_dict().items()} == entry["keys"]
    model.load_state_dict(state_dict, strict=True)
    assert GPENArch().detect(state_dict)


# ------------------------------------------------------------------------------------------ detection
@pytest.mark.parametrize(
    "config",
    [
        SMALL,
        {"size": 128, "style_dim": 64, "n_mlp": 3, "channel_multiplier": 1, "narrow": 0.25},
        {"size": 256, "style_dim": 512, "n_mlp": 8, "channel_multiplier": 2, "narrow": 0.5},
        {"size": 32, "style_dim": 16, "n_mlp": 1, "channel_multiplier": 1, "narrow": 0.0625},
    ],
)
def test_config_round_trips_through_state_dict(config):
    with torch.device("meta"):
        state_dict = GPEN(**config).state_dict()
    assert gpen_config_from_state_dict(state_dict) == config
    assert gpen_config_from_state_dict({f"module.{key}": value for key, value in state_dict.items()}) == config


def test_foreign_or_altered_layouts_raise_model_error():
    with torch.device("meta"):
        state_dict = GPEN(**SMALL).state_dict()
    with pytest.raises(ModelError, match="not a GPEN"):
        gpen_config_from_state_dict({"conv_first.weight": torch.empty(64, 3, 3, 3)})
    without_bias = {key: value for key, value in state_dict.items() if key != "generator.convs.3.activate.bias"}
    with pytest.raises(ModelError, match="convs.3.activate.bias"):
        gpen_config_from_state_dict(without_bias)
    with pytest.raises(ModelError, match="unexpected key"):
        gpen_config_from_state_dict({**state_dict, "generator.extra.weight": torch.empty(1)})
    reshaped = {**state_dict, "ecd2.0.1.weight": torch.empty(7, 7, 3, 3)}
    with pytest.raises(ModelError, match="ecd2.0.1.weight"):
        gpen_config_from_state_dict(reshaped)


@pytest.mark.slow
def test_spandrel_loader_detects_gpen_from_file(tmp_path):
    known = [support.architecture.id for support in spandrel.MAIN_REGISTRY]
    model = random_gpen(SMALL)
    with torch.no_grad():  # push part of the output below 0 so a clamp would show
        model.generator.to_rgbs[-1].bias.fill_(-3.0)
    path = tmp_path / "GPEN-tiny.pth"
    torch.save({f"module.{key}": value for key, value in model.state_dict().items()}, path)

    registry = ArchRegistry()
    registry.add(ArchSupport.from_architecture(GPENArch()))
    descriptor = ModelLoader(registry=registry).load_from_file(path)

    assert [support.architecture.id for support in spandrel.MAIN_REGISTRY] == known
    assert "GPEN" not in spandrel.MAIN_REGISTRY
    assert descriptor.architecture.id == "GPEN"
    assert descriptor.purpose == "FaceSR"
    assert (descriptor.scale, descriptor.input_channels, descriptor.output_channels) == (1, 3, 3)
    assert descriptor.supports_half and descriptor.supports_bfloat16
    assert descriptor.tiling == ModelTiling.INTERNAL
    requirements = descriptor.size_requirements
    assert (requirements.minimum, requirements.multiple_of, requirements.square) == (64, 64, True)
    loaded = descriptor.model
    assert isinstance(loaded, GPEN) and loaded.config == SMALL
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key

    image = random_input(64)
    with torch.no_grad():
        raw = descriptor._call_fn(loaded.eval(), image)
        expected = model(image)
    assert torch.equal(raw, expected)
    assert raw.min() < 0  # raw [-1, 1] output, not clamped


# ------------------------------------------------------------------------------------------ behaviour
def test_rejects_input_of_wrong_size():
    model = random_gpen(SMALL)
    with pytest.raises(InputError, match="64"):
        model(random_input(32))
    with pytest.raises(InputError, match="64"):
        model(torch.zeros(1, 1, 64, 64))


@pytest.mark.slow
def test_encoder_features_reach_the_output():
    model = random_gpen(SMALL)
    image = random_input(64)
    with torch.no_grad():
        before = model(image)
        model.generator.convs[-1].noise.weight.zero_()
        after = model(image)
    assert (before - after).abs().max() > 1e-3


@pytest.mark.slow
def test_batch_items_are_independent():
    model = random_gpen(SMALL)
    image = random_input(64, batch=3)
    with torch.no_grad():
        together = model(image)
        alone = torch.cat([model(image[i : i + 1]) for i in range(3)])
    assert torch.allclose(together, alone, atol=1e-5)


def test_bfloat16_runs_and_stays_close():
    model = random_gpen(SMALL)
    image = random_input(64)
    with torch.no_grad():
        reference = model(image)
        output = model.to(torch.bfloat16)(image.to(torch.bfloat16))
    assert output.dtype == torch.bfloat16
    assert torch.isfinite(output).all()
    error = (output.float() - reference).abs().max()
    assert error <= 0.05 * reference.abs().max(), f"bf16 error {error:.3g}"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_float16_on_cuda_stays_close():
    model = random_gpen(SMALL)
    image = random_input(64)
    with torch.no_grad():
        reference = model(image)
        output = model.cuda().half()(image.cuda().half()).float().cpu()
    assert torch.isfinite(output).all()
    assert (output - reference).abs().max() <= 0.02 * reference.abs().max()


# ------------------------------------------------------------------------------------------ upfirdn2d
def test_upfirdn2d_is_a_true_convolution():
    kernel = torch.arange(1.0, 17.0).reshape(4, 4)  # asymmetric: a missing flip would show
    delta = torch.zeros(1, 2, 1, 1)
    delta[0, 1] = 1.0
    response = upfirdn2d(delta, kernel, pad=(3, 3))
    assert torch.equal(response[0, 1], kernel)
    assert torch.equal(response[0, 0], torch.zeros(4, 4))


def test_upfirdn2d_down_and_negative_pad_match_their_definitions():
    generator = torch.Generator().manual_seed(3)
    image = torch.rand(2, 3, 9, 11, generator=generator)
    kernel = torch.rand(4, 4, generator=generator)
    full = upfirdn2d(image, kernel, up=2, pad=(2, 2))
    assert torch.allclose(upfirdn2d(image, kernel, up=2, down=2, pad=(2, 2)), full[:, :, ::2, ::2])
    cropped = upfirdn2d(image, kernel, up=2, pad=(-1, 1))  # starts 3 samples later than ``full``
    assert cropped.shape[2:] == (15, 19)
    assert torch.allclose(cropped, full[:, :, 3:18, 3:22])
    stuffed = torch.zeros(2, 3, 18, 22)
    stuffed[:, :, ::2, ::2] = image
    assert torch.allclose(upfirdn2d(image, kernel, up=2), upfirdn2d(stuffed, kernel))


@pytest.mark.slow
def test_gpen_2048_is_run_with_gpen_s_alpha_0_8_unless_a_strength_is_given():
    """GPEN's run.sh runs GPEN-BFR-2048 with --alpha 0.8: restored = 0.8 restored + 0.2 original under the mask."""
    from dataclasses import replace

    import numpy as np
    from skimage import data

    from tessera.models.catalog import get_entry
    from tessera.models.wrapping import from_descriptor
    from tessera.tasks.faces import enhance_faces

    descriptor = GPENArch().load(random_gpen(SMALL).state_dict())
    loaded = from_descriptor(descriptor, entry=get_entry("gpen-bfr-2048"))
    assert loaded.face_strength == 0.8 and loaded.face_size == 2048
    assert from_descriptor(descriptor, entry=get_entry("gpen-bfr-512")).face_strength is None
    network = replace(loaded, face_size=64)  # the random network is 64 px: run it at its own size
    photo = data.astronaut()
    first = enhance_faces(photo, model=network, device="cpu")
    second = enhance_faces(photo, model=network, strength=1.0, device="cpu")
    default, full = first.image.astype(float), second.image.astype(float)
    reports = [first.report, second.report]
    assert [report.strength for report in reports] == [0.8, 1.0]
    assert np.abs(full - photo).max() > 20
    assert np.abs((default - photo) - 0.8 * (full - photo)).max() <= 1.0  # rounding only
