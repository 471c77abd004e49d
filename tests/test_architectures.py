"""bench/architectures.py: small random-weight networks per spandrel architecture, detected back by spandrel."""
from __future__ import annotations

import time

import pytest
import spandrel
import torch

from conftest import load_bench
from tessera.errors import ModelError, OptionError

arches = load_bench("architectures")

REPRESENTATIVE = ["SPAN", "SwinIR", "DITN", "RealCUGAN", "HAT", "DAT"]


def _forward(descriptor, size: int, generator_seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(1, descriptor.input_channels, size, size, generator=torch.Generator().manual_seed(generator_seed))
    with torch.inference_mode():
        return x, descriptor(x)


def test_tables_cover_every_architecture_once():
    names = set(arches.ARCHITECTURES)
    assert arches.LOCAL.isdisjoint(arches.GLOBAL)
    assert set(arches.LOCAL) | set(arches.GLOBAL) == names
    assert set(arches.WINDOW_PERIOD) == names
    assert all(isinstance(p, int) and p >= 1 for p in arches.WINDOW_PERIOD.values())
    assert all(reason.strip() for reason in arches.GLOBAL.values())
    assert names.isdisjoint(arches.SKIPPED)
    assert set(arches.NOTES) <= names
    assert arches.locality("SPAN") == "LOCAL" and arches.locality("RCAN").startswith("GLOBAL: ")
    assert arches.locality("no such network") == "unknown"


@pytest.mark.parametrize("name", REPRESENTATIVE)
def test_representative_builds_detects_and_scales(name):
    arch_id, scale, _ = arches._SPECS[name]
    descriptor = arches.ARCHITECTURES[name]()
    assert isinstance(descriptor, spandrel.ImageModelDescriptor)
    assert descriptor.architecture.id == arch_id and descriptor.scale == scale
    assert not descriptor.model.training
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in descriptor.model.parameters())
    _, y = _forward(descriptor, 48)
    assert y.shape == (1, descriptor.output_channels, 48 * scale, 48 * scale)
    assert torch.isfinite(y).all()


def test_builds_are_seeded_and_reproducible():
    first = arches.ARCHITECTURES["SPAN"]().model.state_dict()
    second = arches.ARCHITECTURES["SPAN"]().model.state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_zero_initialised_parameters_are_woken():
    # NAFNet zero-initialises its residual scales (beta, gamma): left at zero they would skip every block.
    model = arches.ARCHITECTURES["NAFNet"]().model
    zeros = [n for n, p in model.named_parameters() if not bool(p.any())]
    assert zeros == []


@pytest.mark.parametrize("name, local", [("SPAN", True), ("SwinIR", True), ("RCAN", False), ("ATD", False)])
def test_locality_matches_a_far_perturbation(name, local):
    """Changing the top-left 8x8 block changes the far bottom-right corner exactly when the network is global."""
    assert (name in arches.LOCAL) is local
    descriptor = arches.ARCHITECTURES[name]()
    x, y = _forward(descriptor, 128)
    x2 = x.clone()
    x2[..., :8, :8] = 1.0 - x2[..., :8, :8]
    with torch.inference_mode():
        y2 = descriptor(x2)
    far = 32 * descriptor.scale
    far_diff = (y[..., -far:, -far:] - y2[..., -far:, -far:]).abs().max().item()
    near_diff = (y[..., :8, :8] - y2[..., :8, :8]).abs().max().item()
    assert near_diff > 1e-3
    assert (far_diff == 0.0) is local, far_diff


def test_wrong_detection_is_a_model_error(monkeypatch):
    _, _, compact = arches._SPECS["Compact"]
    monkeypatch.setitem(arches._SPECS, "mislabelled", ("SwinIR", 4, compact))
    with pytest.raises(ModelError, match="detected Compact"):
        arches._load("mislabelled")


def test_main_rejects_unknown_names():
    with pytest.raises(OptionError, match="unknown architecture"):
        arches.main(["NoSuchNet"])


def test_main_prints_a_row(capsys):
    assert arches.main(["Compact"]) == 0
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Compact")]
    assert len(row) == 1 and row[0].split()[1:3] == ["4", "16768"]


@pytest.mark.slow
def test_every_architecture_builds_and_runs():
    start = time.perf_counter()
    failures = []
    for name, build in arches.ARCHITECTURES.items():
        try:
            descriptor = build()
            _, y = _forward(descriptor, 48)
            expected = (1, descriptor.output_channels, 48 * descriptor.scale, 48 * descriptor.scale)
            if tuple(y.shape) != expected or not bool(torch.isfinite(y).all()):
                failures.append(f"{name}: {tuple(y.shape)} (want {expected}) finite={bool(torch.isfinite(y).all())}")
        except Exception as exc:  # collect every failure, not only the first
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
    assert failures == []
    print(f"{len(arches.ARCHITECTURES)} architectures built and run in {time.perf_counter() - start:.1f} s")
