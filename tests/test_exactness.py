"""Exactness tests that can fail: a network whose output depends measurably on the far edge of its receptive
field, images large enough that every tile and every pass is cut, and the mutation check (one pixel less of
context than measured must show).

Random-weight networks barely respond to pixels far out (a Compact net's auto pad cut from 11 to 3 still gives
the untiled pixels), so they cannot tell a right context from a wrong one. :class:`EdgeReach` can: each of its
``depth`` convolutions averages a pixel with its diagonal neighbour, so an output pixel takes 1/2**depth of the
input pixel ``depth`` away (4 levels of a full-range edge at depth 6) and nothing farther.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tessera.engine import Runtime, measure_context, tiled_apply
from tessera.models.descriptor import Model
from tessera.tasks.upscale import upscale

DEPTH = 6


class EdgeReach(torch.nn.Module):
    """``depth`` 3x3 convolutions, each ``(x + x shifted one pixel diagonally) / 2``, then nearest x``scale``."""

    def __init__(self, depth: int = DEPTH, scale: int = 1):
        super().__init__()
        self.convs = torch.nn.ModuleList(torch.nn.Conv2d(3, 3, 3, padding=1, bias=False) for _ in range(depth))
        with torch.no_grad():
            for conv in self.convs:
                conv.weight.zero_()
                for c in range(3):
                    conv.weight[c, c, 1, 1] = 0.5
                    conv.weight[c, c, 2, 2] = 0.5
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = conv(x)
        return torch.nn.functional.interpolate(x, scale_factor=self.scale, mode="nearest") if self.scale > 1 else x


def untiled(network: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        y = network(x).clamp(0, 1)
    return np.round(y[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)


def levels_off(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int32) - b.astype(np.int32)).max())


def test_the_probe_measures_the_reach_exactly():
    assert measure_context(Model(EdgeReach(), "edge", scale=1), Runtime.create("cpu")) == DEPTH


@pytest.mark.parametrize("blend", ["crop", "feather"])
def test_auto_pad_is_exact_and_one_pixel_less_is_not(photo_uint8, blend):
    # sides of 48 px tiles + 2 x 5 px, whole multiples: with the short pad, windows overlap by exactly their pads
    image = photo_uint8[:58 + 5 * 48, :58 + 7 * 48]
    network = EdgeReach()
    reference = untiled(network, image)
    exact = tiled_apply(Model(network, "edge", scale=1), image, tile=48, blend=blend, device="cpu")
    assert levels_off(exact, reference) <= 1
    short = tiled_apply(Model(network, "edge", scale=1), image, tile=48, tile_pad=DEPTH - 1, blend=blend,
                        device="cpu")
    assert levels_off(short, reference) > 1  # the mutation: a pad one pixel short shows


@pytest.mark.slow
def test_every_pass_of_a_multi_pass_upscale_needs_its_context(photo_uint8):
    """x4 from an x2 network: two passes, both cut into tiles (tile 40 on 145 and 290 px sides; pass 2's side is
    a whole number of tiles past the first window of the short pad, so there its windows overlap by just that)."""
    network = EdgeReach(scale=2)
    image = photo_uint8[:145, :145]
    reference = untiled(network, untiled(network, image))
    done = upscale(image, model=Model(network, "edge x2", scale=2), scale=4, tile=40, device="cpu")
    assert [plan.tiles > 1 for plan in done.report.passes] == [True, True]
    assert levels_off(done.image, reference) <= 1
    short = upscale(image, model=Model(network, "edge x2", scale=2), scale=4, tile=40, tile_pad=DEPTH - 1,
                    device="cpu")
    assert levels_off(short.image, reference) > 1
