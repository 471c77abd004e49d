"""Grid invariants: same-shape windows inside the image, kept parts that cover exactly, weights that sum to one."""
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
        assert span.size == min(window, length)
        if span.stop != length:
            assert span.start % align == 0
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
