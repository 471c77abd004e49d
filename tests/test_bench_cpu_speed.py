"""The helpers of bench/cpu_speed.py: window geometry, FLOP counting, comparison, timing, JSON and tables.

Tiny random-weight convolutions only; the benchmark itself (real networks, ncnn) is run by hand.
"""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import load_bench

from tessera.tiling import plan_grid


@pytest.fixture(scope="module")
def bench():
    return load_bench("cpu_speed")


def test_ncnn_windows_are_lattice_cores_plus_context_on_each_side(bench):
    assert bench.ncnn_windows(512, 512, 128) == [(148, 148)] * 16
    assert bench.ncnn_windows(100, 70, 64) == [(84, 84), (84, 26), (56, 84), (56, 26)]
    assert bench.ncnn_windows(30, 30, 32, prepad=0) == [(30, 30)]


def test_flops_are_counted_per_window_shape_without_computing(bench):
    conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    per_pixel = 2 * 3 * 4 * 9
    assert bench.count_flops(conv, [(10, 20), (10, 20), (7, 5)]) == per_pixel * (2 * 200 + 35)
    assert conv.weight.device.type == "cpu"  # the meta copy leaves the network where it was


def test_tessera_windows_are_the_engine_plan_and_a_wrong_count_is_refused(bench):
    tiles = plan_grid(100, 80, 32, 8)
    plan = SimpleNamespace(tile=32, pad=8, tiles=len(tiles), blend="crop")
    windows = bench.tessera_windows(plan, 100, 80, align=1)
    assert windows == [(t.y.start, t.y.stop, t.x.start, t.x.stop) for t in tiles]
    assert {(y1 - y0, x1 - x0) for y0, y1, x0, x1 in windows} == {(48, 48)}
    assert all(0 <= y0 < y1 <= 100 and 0 <= x0 < x1 <= 80 for y0, y1, x0, x1 in windows)
    with pytest.raises(RuntimeError, match="re-planned"):
        bench.tessera_windows(SimpleNamespace(tile=32, pad=8, tiles=len(tiles) + 1, blend="crop"), 100, 80, 1)


def test_memory_format_is_read_from_the_plan_or_else_from_the_model(bench):
    assert bench.plan_memory_format(SimpleNamespace(memory_format="contiguous"),
                                    SimpleNamespace(channels_last=True)) == "contiguous"
    assert bench.plan_memory_format(SimpleNamespace(memory_format=torch.channels_last),
                                    SimpleNamespace(channels_last=False)) == "channels_last"
    assert bench.plan_memory_format(SimpleNamespace(), SimpleNamespace(channels_last=True)) == "channels_last"
    assert bench.plan_memory_format(SimpleNamespace(), SimpleNamespace(channels_last=False)) == "contiguous"


def test_levels_is_the_largest_difference_and_shapes_must_match(bench):
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[1, 2, 0], b[3, 3, 2] = 255, 3
    assert bench.levels(a, b) == 255 and bench.levels(b, a) == 255 and bench.levels(a, a) == 0
    with pytest.raises(ValueError, match="shapes differ"):
        bench.levels(a, a[:2])


def test_a_lever_is_timed_on_its_own_output_and_a_failing_one_is_reported(bench):
    torch.manual_seed(0)
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 3, padding=1), torch.nn.Sigmoid()).eval()
    x = bench.to_input(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8),
                       torch.contiguous_format)
    threads = torch.get_num_threads()
    figures, out = bench.step_row(bench._eager(torch.channels_last, threads=1), conv, x)
    with torch.inference_mode():
        expected = bench.to_uint8(conv(x))
    assert figures["seconds"] > 0 and bench.levels(out, expected) <= 1
    assert torch.get_num_threads() == threads  # the lever's thread count is undone

    def broken(network, x):
        raise RuntimeError("no kernel")
    figures, out = bench.step_row(broken, conv, x)
    assert out is None and figures == {"error": "RuntimeError: no kernel"}


def test_best_of_warms_up_then_keeps_the_fastest_run(bench):
    calls = []
    seconds, result = bench.best_of(lambda: calls.append(1) or len(calls), runs=2)
    assert len(calls) == 3 and result == 3 and seconds >= 0


def test_a_section_rerun_replaces_only_its_key(bench, tmp_path):
    path = tmp_path / "cpu_speed.json"
    bench.merge(path, "main", {"rows": [1]})
    bench.merge(path, "steps", {"rows": [2]})
    bench.merge(path, "main", {"rows": [3]})
    saved = json.loads(path.read_text())
    assert saved["main"] == {"rows": [3]} and saved["steps"] == {"rows": [2]}
    assert {"cpu", "avx512", "bf16_flags", "torch", "threads", "date", "platform"} <= set(saved["machine"])


def test_tables_show_each_row(bench):
    main = {"rows": [{
        "network": "x4plus", "photo": "512x512", "tessera_s": 250.0, "tessera_s_per_output_mp": 59.6, "bare_s": 240.0,
        "overhead": 0.0417, "ncnn_s": 200.0, "ncnn_tile": 128, "tessera_over_ncnn": 1.25, "max_levels_vs_untiled": 1,
        "gflops_bare": 100.0, "gflops_tessera": 96.0, "gflops_ncnn": 110.0,
        "plan": {"tiles": 16, "tile": 128, "pad": 40, "precision": "fp32", "memory_format": "channels_last"}}]}
    table = bench.markdown_main(main).splitlines()
    assert len(table) == 3 and "16 x 128+2x40 px" in table[2] and "+4.2%" in table[2] and "| 1.25 |" in table[2]
    steps = {"rows": [
        {"network": "x4plus", "window": "128x128", "variant": "fp32 contiguous", "seconds": 5.0, "speedup": 1.0,
         "max_levels_vs_fp32": 0},
        {"network": "x4plus", "window": "128x128", "variant": "ONNX", "error": "ImportError: x"}]}
    table = bench.markdown_steps(steps).splitlines()
    assert len(table) == 4 and "| 5 | 1x | 0 |" in table[2] and "failed: ImportError: x" in table[3]
    assert all(line.count("|") == table[0].count("|") for line in table)
