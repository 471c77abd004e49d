"""The measured CPU tile choice (tessera.engine.cpu_tiles): candidates, caching, bounds, and the choice itself."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from tessera.engine import Runtime
from tessera.engine import cpu_tiles
from tessera.errors import OptionError
from tessera.models.descriptor import Model

from conftest import random_compact


class Counting(torch.nn.Module):
    """A network that counts its forwards."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.net(x)


class Sleeper:
    """A fake network whose forward takes a known time: ``overhead`` seconds per call plus ``per_pixel`` per
    window pixel, ``cliff_per_pixel`` instead beyond ``cliff`` pixels (a cache falling off); records the shapes."""

    def __init__(self, overhead: float, per_pixel: float, cliff: int = 1 << 60, cliff_per_pixel: float = 0.0):
        self.overhead, self.per_pixel, self.cliff, self.cliff_per_pixel = overhead, per_pixel, cliff, cliff_per_pixel
        self.shapes: list[tuple[int, int]] = []

    def seconds(self, pixels: int) -> float:
        return self.overhead + pixels * (self.per_pixel if pixels <= self.cliff else self.cliff_per_pixel)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape[-2:]))
        time.sleep(self.seconds(x.shape[-2] * x.shape[-1]))
        return x


def cpu() -> Runtime:
    return Runtime(torch.device("cpu"), "fp32")


def windows_along(length: int, tile: int, pad: int) -> int:
    """Windows of one plan_axis row, counted independently: same-size windows, core ``tile`` apart, the last
    one against the border."""
    window = tile + 2 * pad
    return 1 if window >= length else 1 + math.ceil((length - window) / tile)


def test_candidates_are_evened_spread_and_bounded():
    tiles = cpu_tiles.cpu_candidates(1024, 1024, 1)
    assert tiles == [128, 256, 342, 512]
    tiles = cpu_tiles.cpu_candidates(1500, 1500, 1)
    assert tiles == sorted(tiles) and 3 <= len(tiles) <= 4 and tiles[0] <= 128 and tiles[-1] <= 512
    for tile in tiles:  # each covers the side in whole tiles with less than one tile of slack
        count = math.ceil(1500 / tile)
        assert count * tile >= 1500 and (count - 1) * tile < 1500
    assert all(b >= 1.3 * a for a, b in zip(tiles, tiles[1:]))


def test_candidates_respect_the_largest_that_fits_and_the_alignment():
    assert cpu_tiles.cpu_candidates(1000, 200, 8) == [128, 200]
    assert all(t <= 200 and t % 8 == 0 for t in cpu_tiles.cpu_candidates(1000, 200, 8))
    assert cpu_tiles.cpu_candidates(150, 150, 1) == [75, 150]  # small image: one window is a candidate
    assert cpu_tiles.cpu_candidates(64, 64, 1) == [64]
    with pytest.raises(OptionError):
        cpu_tiles.cpu_candidates(0, 64, 1)


def test_grid_counts_the_windows_plan_grid_plans():
    from tessera.tiling import plan_grid

    for height, width, tile, pad, align in ((1024, 1024, 128, 11, 1), (600, 437, 96, 10, 4), (300, 200, 512, 7, 1)):
        shape, count, load = cpu_tiles._grid(tile, pad, height, width, align)
        planned = plan_grid(height, width, tile, pad, align=align)
        assert count == len(planned) and shape == max(t.window_shape for t in planned)
        assert load * shape[0] * shape[1] == pytest.approx(sum(h * w for h, w in (t.window_shape for t in planned)))


def test_a_second_call_runs_no_forward_and_other_images_reuse_windows():
    counting = Counting(random_compact(2, num_feat=8, num_conv=2))
    model = Model(counting, "counting", scale=2)
    runtime = cpu()
    first = cpu_tiles.measure_cpu_tiles(model, runtime, 400, 400, 4, [32, 64, 96])
    probed = counting.calls
    assert 3 * 3 <= probed <= 3 * 6  # a warm-up and two to five timings per candidate
    assert first.probe_seconds > 0 and all(c.seconds is not None for c in first.candidates)
    again = cpu_tiles.measure_cpu_tiles(model, runtime, 400, 400, 4, [96, 64, 32])
    assert counting.calls == probed and again.tile == first.tile and again.probe_seconds == 0
    # another image with the same windows: measured already
    wrapped_again = Model(counting, "same network, another wrapper", scale=2)
    other = cpu_tiles.measure_cpu_tiles(wrapped_again, runtime, 380, 420, 4, [32, 64, 96])
    assert counting.calls == probed and other.probe_seconds == 0
    assert [c.seconds for c in other.candidates] == [c.seconds for c in first.candidates]


def test_the_thread_count_is_part_of_the_cache_key():
    counting = Counting(random_compact(2, num_feat=8, num_conv=2))
    model = Model(counting, "counting", scale=2)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        cpu_tiles.fastest_cpu_tile(model, cpu(), 300, 300, 4, [32, 64])
        one = counting.calls
        assert one >= 6
        cpu_tiles.fastest_cpu_tile(model, cpu(), 300, 300, 4, [32, 64])
        assert counting.calls == one
        torch.set_num_threads(2)
        cpu_tiles.fastest_cpu_tile(model, cpu(), 300, 300, 4, [32, 64])
        assert counting.calls >= one + 6
    finally:
        torch.set_num_threads(threads)


def test_probing_stops_after_a_slow_forward(monkeypatch):
    monkeypatch.setattr(cpu_tiles, "_SLOW_FORWARD_S", 0.03)
    # windows of 40 px: 3 ms; of 72 px: predicted 10 ms from that, but past a cliff: 100 ms, slow
    sleeper = Sleeper(0.0, 2e-6, cliff=3000, cliff_per_pixel=2e-5)
    choice = cpu_tiles.measure_cpu_tiles(Model(sleeper, "sleeper"), cpu(), 1024, 1024, 4, [32, 64, 128, 256])
    assert sleeper.shapes == [(40, 40)] * 6 + [(72, 72)]  # 3 ms: 5 timings; the slow one once; larger never
    assert [c.seconds is None for c in choice.candidates] == [False, False, True, True]
    assert "took" in choice.note and choice.tile == 32 and choice.timed == 2
    model = Model(sleeper, "sleeper")  # the same network: decided already
    assert cpu_tiles.fastest_cpu_tile(model, cpu(), 1024, 1024, 4, [32, 64, 128, 256], fallback=max) == 32


def test_a_first_window_too_slow_to_compare_leaves_the_choice_to_the_fallback(monkeypatch):
    monkeypatch.setattr(cpu_tiles, "_SLOW_FORWARD_S", 0.01)
    sleeper = Sleeper(0.02, 0.0)
    model = Model(sleeper, "sleeper")
    assert cpu_tiles.fastest_cpu_tile(model, cpu(), 1024, 1024, 4, [32, 64, 128], fallback=max) == 128
    assert sleeper.shapes == [(40, 40)]  # one forward, then nothing
    assert cpu_tiles.fastest_cpu_tile(model, cpu(), 1024, 1024, 4, [32, 64, 128]) == 32


def test_probing_skips_a_window_predicted_to_be_slow(monkeypatch):
    monkeypatch.setattr(cpu_tiles, "_SLOW_FORWARD_S", 0.03)
    sleeper = Sleeper(0.0, 8e-6)  # 40 px: 13 ms, so 72 px is predicted at 41 ms: not run
    choice = cpu_tiles.measure_cpu_tiles(Model(sleeper, "sleeper"), cpu(), 1024, 1024, 4, [32, 64, 128])
    assert sleeper.shapes == [(40, 40)] * 6
    assert "stopped before the 64px tile" in choice.note and choice.tile == 32


def test_probing_stops_at_the_first_grid_no_faster_than_a_smaller_one():
    sleeper = Sleeper(0.0, 1e-6, cliff=2000, cliff_per_pixel=1e-5)  # the 72 px window is past the cliff
    choice = cpu_tiles.measure_cpu_tiles(Model(sleeper, "sleeper"), cpu(), 1024, 1024, 4, [32, 64, 128])
    assert set(sleeper.shapes) == {(40, 40), (72, 72)}
    assert choice.tile == 32 and choice.candidates[-1].seconds is None and "no faster" in choice.note


def test_timings_per_window(monkeypatch):
    sleeper = Sleeper(0.004, 0.0)
    model = Model(sleeper, "sleeper")
    best, warm_up = cpu_tiles._time_window(model, cpu(), 30, 20)
    assert len(sleeper.shapes) == 6 and sleeper.shapes[0] == (30, 20)  # short forwards: a warm-up and 5 timings
    assert 0.004 <= best <= warm_up + 0.02
    sleeper.shapes.clear()
    monkeypatch.setattr(cpu_tiles, "_MIN_TIMED_S", 0.0)
    cpu_tiles._time_window(model, cpu(), 30, 20)
    assert len(sleeper.shapes) == 3  # a warm-up and the best of two
    sleeper.shapes.clear()
    monkeypatch.setattr(cpu_tiles, "_ONE_TIMING_S", 0.002)
    cpu_tiles._time_window(model, cpu(), 30, 20)
    assert len(sleeper.shapes) == 2  # a slow warm-up: one timing


def test_a_window_is_timed_with_the_merge_of_its_kept_part(monkeypatch):
    merged = []
    monkeypatch.setattr(cpu_tiles, "from_float", lambda piece, dtype: merged.append((piece.shape, dtype)))
    model = Model(random_compact(2, num_feat=8, num_conv=2), "x2", scale=2)
    cpu_tiles._time_window(model, cpu(), 40, 30, (20, 10))
    assert merged and all(m == ((40, 20, 3), np.uint8) for m in merged)  # HxWxC at output scale, uint8
    cpu_tiles.measure_cpu_tiles(model, cpu(), 300, 30, 5, [20, 40])  # windows 30 (kept 20) and 50 (kept 40)
    assert {m[0] for m in merged[-4:]} == {(80, 60, 3)} and ((40, 60, 3), np.uint8) in merged


def test_probing_stops_before_it_would_pass_its_budget():
    # windows of 40, 72, 136 px: 3.6, 7.2, 20.5 ms, each grid clearly faster than the one before; the 264 px
    # window (72 ms, 3 forwards) would pass 0.1 s whatever ran before it
    sleeper = Sleeper(0.002, 1e-6)
    choice = cpu_tiles.measure_cpu_tiles(Model(sleeper, "sleeper"), cpu(), 1024, 1024, 4, [32, 64, 128, 256],
                                         budget_s=0.1)
    assert (40, 40) in sleeper.shapes and (264, 264) not in sleeper.shapes
    assert choice.candidates[-1].seconds is None and "stopped before the" in choice.note
    assert choice.probe_seconds < 0.3


def test_a_small_image_is_not_probed():
    sleeper = Sleeper(0.0, 1e-6)
    choice = cpu_tiles.measure_cpu_tiles(Model(sleeper, "sleeper"), cpu(), 45, 40, 4, [32, 64])
    assert sleeper.shapes == [] and choice.tile == 64 and "not probed" in choice.note
    assert cpu_tiles.fastest_cpu_tile(Model(Sleeper(0, 0), "one"), cpu(), 900, 900, 4, [128]) == 128
    assert cpu_tiles.fastest_cpu_tile(Model(sleeper, "sleeper"), cpu(), 45, 40, 4, [32, 64], fallback=min) == 32


def test_the_measured_choice_is_the_cheapest_grid():
    """Per-call overhead makes small tiles lose, a cache cliff past 300x300 px makes the largest lose."""
    sleeper = Sleeper(0.004, 1e-7, cliff=300 * 300, cliff_per_pixel=1e-6)
    height = width = 1024
    pad, candidates = 8, [64, 128, 256, 512]
    expected = {t: windows_along(height, t, pad) * windows_along(width, t, pad)
                * sleeper.seconds(min(t + 2 * pad, height) * min(t + 2 * pad, width)) for t in candidates}
    assert min(expected, key=expected.get) == 256 and sorted(expected.values())[1] > 1.8 * expected[256]
    choice = cpu_tiles.measure_cpu_tiles(Model(sleeper, "sleeper"), cpu(), height, width, pad, candidates)
    assert choice.tile == 256
    for cost in choice.candidates:
        if cost.seconds is not None:  # each window timed as long as it sleeps, give or take a busy machine
            asleep = sleeper.seconds(cost.window[0] * cost.window[1])
            assert asleep <= cost.seconds < 2 * asleep + 0.02
            assert cost.windows == windows_along(height, cost.tile, pad) ** 2


def test_a_masked_network_is_probed_with_a_mask():
    seen = []

    def inpaint(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        seen.append((tuple(x.shape), tuple(mask.shape)))
        return x

    model = Model(inpaint, "inpaint", task="inpaint")
    cpu_tiles.measure_cpu_tiles(model, cpu(), 200, 160, 2, [16, 32])
    assert seen and all(m == (1, 1) + x[2:] for x, m in seen)


def test_bad_arguments_are_refused():
    model = Model(Sleeper(0, 0), "sleeper")
    with pytest.raises(OptionError):
        cpu_tiles.measure_cpu_tiles(model, cpu(), 100, 100, 4, [])
    with pytest.raises(OptionError):
        cpu_tiles.measure_cpu_tiles(model, cpu(), 100, 100, -1, [32])
