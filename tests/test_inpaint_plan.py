"""Planning of inpainting crops: grouping, border holes, shapes, budgets and strategies."""
from __future__ import annotations

import numpy as np
import pytest

from tessera.errors import OptionError
from tessera.tasks.inpaint_plan import plan_regions
from tessera.tasks.inpaint_regions import Box, auto_margin, find_holes, group_holes
from tessera.tasks.inpaint_sizing import Sizing


def _mask(shape, *boxes):
    mask = np.zeros(shape, bool)
    for y0, x0, y1, x1 in boxes:
        mask[y0:y1, x0:x1] = True
    return mask


def _check_cover(mask, regions):
    """Every hole pixel is pasted by exactly one region, every region's holes lie inside its crop."""
    count = np.zeros(mask.shape, np.int32)
    for region in regions:
        crop = region.crop
        assert 0 <= crop.y0 < crop.y1 <= mask.shape[0] and 0 <= crop.x0 < crop.x1 <= mask.shape[1]
        for hole in region.holes:
            assert crop.y0 <= hole.y0 and hole.y1 <= crop.y1 and crop.x0 <= hole.x0 and hole.x1 <= crop.x1
        paste = region.paste_mask(mask)
        count[crop.slices] += paste
    assert np.array_equal(count, mask.astype(np.int32))


def test_two_far_apart_marks_give_two_crops():
    mask = _mask((1000, 1500), (100, 100, 160, 160), (800, 1300, 860, 1360))
    regions = plan_regions(mask)
    assert len(regions) == 2
    assert not regions[0].crop.overlaps(regions[1].crop)
    _check_cover(mask, regions)


def test_overlapping_contexts_merge_into_one_crop():
    # 60x60 holes have a 64 px margin: 100 px apart, their contexts overlap
    mask = _mask((1000, 1500), (100, 100, 160, 160), (100, 260, 160, 320))
    regions = plan_regions(mask)
    assert len(regions) == 1
    assert len(regions[0].holes) == 2
    _check_cover(mask, regions)


def test_merging_is_transitive():
    holes = find_holes(_mask((400, 2000), (100, 100, 110, 110), (100, 230, 110, 240), (100, 360, 110, 370),
                             (100, 1500, 110, 1510)))
    groups = group_holes(holes, 400, 2000)
    assert sorted(len(g) for g in groups) == [1, 3]


def test_hole_at_the_border_gets_full_context():
    inner = plan_regions(_mask((1000, 1000), (470, 470, 530, 530)))[0]
    corner = plan_regions(_mask((1000, 1000), (0, 0, 60, 60)))[0]
    assert (corner.crop.height, corner.crop.width) == (inner.crop.height, inner.crop.width)
    assert corner.crop.y0 == 0 and corner.crop.x0 == 0
    margin = auto_margin(60 * 60)
    assert corner.crop.y1 >= 60 + 2 * margin and corner.crop.x1 >= 60 + 2 * margin


def test_crop_shapes_are_quantized_and_batchable():
    mask = _mask((2000, 2000), (100, 100, 150, 150), (1000, 1000, 1050, 1050), (1700, 300, 1745, 345))
    regions = plan_regions(mask, sizing=Sizing(quantum=64))
    assert len(regions) == 3
    assert len({r.run_shape for r in regions}) == 1
    assert all(side % 64 == 0 for r in regions for side in r.run_shape)
    pow2 = plan_regions(mask, sizing=Sizing(quantum=64, pow2=True))
    assert all(side & (side - 1) == 0 for r in pow2 for side in (r.pad_to or r.run_shape))


def test_small_photo_is_one_crop_of_the_whole_photo():
    mask = _mask((96, 128), (30, 40, 50, 70))
    (region,) = plan_regions(mask)
    assert region.crop == Box(0, 0, 96, 128)
    assert region.run_shape == (96, 128) and not region.downscaled and region.pad_to is None


def test_max_size_caps_the_network_input():
    mask = _mask((3000, 3000), (1000, 1000, 1900, 1900))
    regions = plan_regions(mask, sizing=Sizing(quantum=64, max_size=512))
    (region,) = regions
    assert region.downscaled and max(region.run_shape) <= 512
    _check_cover(mask, regions)
    free = plan_regions(mask, sizing=Sizing(quantum=64))
    assert not free[0].downscaled


def test_budget_downscales_in_auto_not_in_crop():
    mask = _mask((3000, 3000), (1000, 1000, 1900, 1900))
    tight = Sizing(quantum=64, fits=lambda h, w: h * w <= 700 * 700)
    (auto,) = plan_regions(mask, strategy="auto", sizing=tight)
    assert auto.downscaled and auto.run_shape[0] * auto.run_shape[1] <= 700 * 700
    (crop,) = plan_regions(mask, strategy="crop", sizing=tight)
    assert not crop.downscaled


def test_full_and_resize_are_one_pass_over_the_photo():
    mask = _mask((1200, 1600), (100, 100, 150, 150), (1000, 1400, 1050, 1450))
    (full,) = plan_regions(mask, strategy="full")
    assert full.crop == Box(0, 0, 1200, 1600) and not full.downscaled
    _check_cover(mask, [full])
    (resized,) = plan_regions(mask, strategy="resize", sizing=Sizing(max_size=800))
    assert resized.crop == Box(0, 0, 1200, 1600) and max(resized.run_shape) <= 800
    with pytest.raises(OptionError, match="max-size"):
        plan_regions(mask, strategy="full", sizing=Sizing(max_size=800))


def test_explicit_margin_and_weight_free_sizing():
    mask = _mask((500, 500), (200, 200, 220, 230))
    (region,) = plan_regions(mask, margin=10, sizing=Sizing(quantum=1))
    assert (region.crop.height, region.crop.width) == (40, 50)
    with pytest.raises(OptionError):
        plan_regions(mask, margin=-1)


@pytest.mark.parametrize("quantum", [64, 192])
def test_a_budget_nothing_fits_is_a_resource_error_whatever_the_quantum(quantum):
    from tessera.errors import ResourceError

    mask = np.zeros((600, 600), dtype=bool)
    mask[200:400, 200:400] = True
    with pytest.raises(ResourceError, match="memory budget"):
        plan_regions(mask, sizing=Sizing(quantum=quantum, fits=lambda height, width: height * width <= 10 * 10))


# ---------------------------------------------------------------------------------------------- long thin holes


def _line_mask(shape, *lines, thickness=6):
    import cv2

    mask = np.zeros(shape, np.uint8)
    for p0, p1 in lines:
        cv2.line(mask, p0, p1, 255, thickness)
    return mask > 0


def _check_known(regions):
    """Every known box lies in its region's crop and is a hole box of a region of an earlier phase."""
    for region in regions:
        earlier = [box for other in regions if other.phase < region.phase for box in other.holes]
        for box in region.known:
            assert region.crop.y0 <= box.y0 < box.y1 <= region.crop.y1
            assert region.crop.x0 <= box.x0 < box.x1 <= region.crop.x1
            assert any(e.y0 <= box.y0 and box.y1 <= e.y1 and e.x0 <= box.x0 and box.x1 <= e.x1 for e in earlier)


def test_a_6px_scratch_across_a_24mp_photo_runs_in_full_resolution_pieces_of_bounded_size():
    mask = _line_mask((4000, 6000), ((100, 300), (5900, 3700)))
    regions = plan_regions(mask, sizing=Sizing(quantum=64, max_size=2000, fits=lambda h, w: h * w <= 1500 ** 2))
    assert len(regions) > 10
    assert not any(r.downscaled for r in regions)
    assert max(max(r.run_shape) for r in regions) <= 1024
    assert sum(r.run_shape[0] * r.run_shape[1] for r in regions) < 6 * 10 ** 6  # not the photo: about the scratch
    _check_cover(mask, regions)
    _check_known(regions)
    assert {r.phase for r in regions} <= {1, 2, 3, 4} and any(r.known for r in regions)


def test_a_hairline_joined_to_a_blob_keeps_full_resolution_away_from_the_blob():
    import cv2

    mask = _line_mask((4000, 6000), ((2150, 2000), (5800, 2100)), thickness=3)
    disc = np.zeros(mask.shape, np.uint8)
    cv2.circle(disc, (1500, 2000), 700, 255, -1)
    mask |= disc > 0  # one connected component: the hairline starts at the disc's edge
    regions = plan_regions(mask, sizing=Sizing(quantum=64, max_size=2000))
    _check_cover(mask, regions)
    _check_known(regions)
    scaled = [r for r in regions if r.downscaled]
    assert len(scaled) == 1 and scaled[0].phase == 0  # the blob's part
    far = mask.copy()
    far[:, :1500 + 700 + 200] = False  # the hairline farther than 200 px from the disc
    assert far.any()
    for region in scaled:
        assert not region.paste_mask(far).any()


def test_a_sparse_group_is_split_only_when_the_pieces_cost_less_than_half():
    diagonal = _line_mask((2600, 2600), ((100, 100), (2500, 2500)))
    pieces = plan_regions(diagonal, sizing=Sizing(quantum=64))
    assert len(pieces) > 1 and not any(r.downscaled for r in pieces)
    assert sum(r.run_shape[0] * r.run_shape[1] for r in pieces) * 2 < 2600 * 2600
    _check_cover(diagonal, pieces)
    straight = _line_mask((600, 2600), ((100, 300), (2500, 300)))  # its one crop is hardly larger than pieces
    assert len(plan_regions(straight, sizing=Sizing(quantum=64))) == 1


def test_full_strategy_over_the_budget_is_refused_with_the_estimate():
    from tessera.errors import ResourceError

    mask = _mask((4000, 6000), (100, 100, 150, 150))
    sizing = Sizing(quantum=64, fits=lambda h, w: False, estimate=lambda h, w: 123 * 2 ** 30, budget=8 * 2 ** 30)
    with pytest.raises(ResourceError, match=r"6000x4000 photo in one pass, which needs about 123\.0 GiB, over the "
                                            r"memory budget of 8\.0 GiB; use --strategy auto"):
        plan_regions(mask, strategy="full", sizing=sizing)
    assert len(plan_regions(mask, strategy="auto", sizing=Sizing(quantum=64, fits=lambda h, w: h * w < 10 ** 6))) == 1
