"""Grid invariants: aligned windows of one size (the last one shorter by less than the alignment) inside the image,
kept parts that cover exactly, weights that sum to one."""
from __future__ import annotations

import numpy as np
import pytest

from tessera.errors import OptionError
from tessera.tiling import Canvas, plan_axis, plan_grid, split_tile


@pytest.mark.parametrize("length", [1, 7, 64, 100, 257, 437, 1000])
@pytest.mark.parametrize("window,pad", [(32, 4), (64, 11), (96, 0), (120, 20)])
@pytest.mark.parametrize("align", [1, 2, 8])
def test_crop_spans_partition_the_axis(length, window, pad, align):
    window = -(-window // align) * align
    spans = plan_axis(length, window, pad, align=align)
    covered = np.zeros(length, dtype=int)
    for span in spans:
        assert 0 <= span.start and span.stop <= length
        assert span.start % align == 0
        if span.stop != length:
            assert span.size == min(window, length)
        else:  # against the far border: starts at the first aligned origin past length - window
            assert min(window, length) - align < span.size <= min(window, length)
        # what a window keeps is at least `pad` away from a window border that is not the image border
        assert span.keep_start >= (0 if span.start == 0 else span.start + pad)
        assert span.keep_end <= (length if span.stop == length else span.stop - pad)
        covered[span.keep_start:span.keep_end] += 1
    assert (covered == 1).all()


@pytest.mark.parametrize("length", [100, 257, 437])
@pytest.mark.parametrize("window,pad", [(40, 6), (64, 11)])
def test_feather_weights_sum_to_one(length, window, pad):
    spans = plan_axis(length, window, pad, feather=True)
    total = np.zeros(length * 2, dtype=np.float64)
    for span in spans:
        weights = span.weights(2)
        piece = np.ones((span.keep_end - span.keep_start) * 2) if weights is None else weights
        total[span.keep_start * 2:span.keep_end * 2] += piece
    np.testing.assert_allclose(total, 1.0, atol=1e-6)


def test_feather_canvas_of_a_constant_is_that_constant():
    height, width = 150, 211
    tiles = [t.with_weights(1) for t in plan_grid(height, width, 40, 8, feather=True)]
    assert len(tiles) > 4
    out = np.zeros((height, width, 3), dtype=np.float32)
    canvas = Canvas(out, feather=True, convert=lambda a: a)
    for t in tiles:
        canvas.add(t, np.full((t.y.size, t.x.size, 3), 0.5, dtype=np.float32), 1)
    np.testing.assert_allclose(canvas.finish(), 0.5, atol=1e-6)


def _feathered(height: int, width: int, tile: int, pad: int, scale: int, *, planned: bool, split: int = 0):
    """Feather-merge random window results into a canvas, planned (banded) or not (whole-output accumulator);
    with ``split`` every second tile is re-planned into ``split`` px children first, as the back-off does."""
    out = np.zeros((height * scale, width * scale, 3), dtype=np.float32)
    canvas = Canvas(out, feather=True, convert=lambda a: a)
    tiles = canvas.plan(height, width, tile, pad, feather=True) if planned else plan_grid(
        height, width, tile, pad, feather=True)
    tiles = [t.with_weights(scale) for t in tiles]
    if split:
        tiles = [child for i, t in enumerate(tiles)
                 for child in (split_tile(t, height, width, split, pad, align=1, scale=scale) if i % 2 else [t])]
    for t in tiles:
        window = np.random.default_rng(t.y.start * 100003 + t.x.start).random(
            (t.y.size * scale, t.x.size * scale, 3), dtype=np.float32)
        canvas.add(t, window, scale)
    return canvas.finish(), canvas


@pytest.mark.parametrize("split", [0, 24])
def test_feather_band_gives_the_whole_output_accumulator_and_holds_about_one_row_of_windows(split):
    height, width, tile, pad, scale = 410, 230, 60, 12, 2
    banded, canvas = _feathered(height, width, tile, pad, scale, planned=True, split=split)
    whole, unplanned = _feathered(height, width, tile, pad, scale, planned=False, split=split)
    np.testing.assert_array_equal(banded, whole)
    assert unplanned.largest_band == height * scale
    window_rows = (tile + 2 * pad) * scale
    assert 0 < canvas.largest_band <= window_rows + 2 * pad * scale, canvas.largest_band


def test_feather_band_converts_rows_as_they_finish():
    """Rows reach the target while later tiles are still to come: the band does not wait for the end."""
    height, width = 300, 120
    out = np.zeros((height, width, 1), dtype=np.float32)
    canvas = Canvas(out, feather=True, convert=lambda a: a)
    tiles = [t.with_weights(1) for t in canvas.plan(height, width, 40, 8, feather=True)]
    half = len(tiles) // 2
    for t in tiles[:half]:
        canvas.add(t, np.full((t.y.size, t.x.size, 1), 0.25, dtype=np.float32), 1)
    finished = int((out[:, :, 0] == 0.25).all(axis=1).sum())
    assert finished >= tiles[half - 1].y.keep_start - 16, finished
    for t in tiles[half:]:
        canvas.add(t, np.full((t.y.size, t.x.size, 1), 0.25, dtype=np.float32), 1)
    np.testing.assert_allclose(canvas.finish(), 0.25, atol=1e-6)


def test_grid_covers_a_region_only():
    tiles = plan_grid(300, 400, 50, 10, region=(100, 180, 30, 390))
    covered = np.zeros((300, 400), dtype=int)
    for t in tiles:
        top, bottom, left, right = t.keep
        covered[top:bottom, left:right] += 1
    assert (covered[100:180, 30:390] == 1).all()
    assert covered.sum() == 80 * 360


def test_split_tile_partitions_the_parent():
    parent = plan_grid(300, 400, 200, 10)[0]
    children = split_tile(parent, 300, 400, 64, 10, align=1, scale=1)
    covered = np.zeros((300, 400), dtype=int)
    for t in children:
        top, bottom, left, right = t.keep
        covered[top:bottom, left:right] += 1
    top, bottom, left, right = parent.keep
    assert (covered[top:bottom, left:right] == 1).all() and covered.sum() == parent.keep_area


def test_impossible_tiles_are_refused():
    with pytest.raises(OptionError):
        plan_grid(100, 100, 0, 4)
    with pytest.raises(OptionError):
        plan_axis(100, 20, 10)
