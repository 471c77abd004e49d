"""Face detection on photos of any size: the pyramid search, its reasons to look, and judging across scales."""
from __future__ import annotations

import importlib.util

import cv2
import numpy as np
import pytest
from conftest import load_bench
from skimage import data

from tessera.faces import backends
from tessera.faces.boxes import Face
from tessera.faces.detect import detect_faces
from tessera.faces.pyramid import Level, PyramidSearch, Region, _unseen_above, merge_regions

needs_yuface = pytest.mark.skipif(importlib.util.find_spec("yuface") is None, reason="yuface is not installed")


@pytest.fixture
def searched(monkeypatch) -> list[tuple[int, int]]:
    """The raster shape of every detector call (YuNet wrapped where it runs)."""
    shapes: list[tuple[int, int]] = []
    real = backends.BACKENDS["yunet"]

    def counting(bgr: np.ndarray, min_score: float) -> list[Face]:
        shapes.append(bgr.shape[:2])
        return real(bgr, min_score)

    monkeypatch.setitem(backends.BACKENDS, "yunet", counting)
    return shapes


@pytest.fixture
def level_scales(monkeypatch) -> list[float]:
    """The scale of every pyramid level searched (verification crops are not levels)."""
    scales: list[float] = []
    real = PyramidSearch.search

    def recording(self, scale, regions, tile=960):
        scales.append(scale)
        return real(self, scale, regions, tile)

    monkeypatch.setattr(PyramidSearch, "search", recording)
    return scales


def backdrop(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """A textured photo without faces: smooth colour waves, blotches and grain, built at 1/8 size then enlarged."""
    rng = np.random.default_rng(seed)
    low_rows, low_cols = rows // 8, cols // 8
    yy, xx = np.mgrid[0:low_rows, 0:low_cols].astype(np.float32)
    blotches = cv2.GaussianBlur(rng.normal(0, 1, (low_rows, low_cols)).astype(np.float32), (0, 0), 3) * 120
    low = np.dstack([120 + 50 * np.sin(xx / 40) + blotches, 110 + 40 * np.cos(yy / 30) + blotches,
                     100 + 30 * np.sin((xx + yy) / 50) + blotches])
    photo = cv2.resize(np.clip(low, 0, 255).astype(np.uint8), (cols, rows), interpolation=cv2.INTER_LINEAR)
    grain = rng.integers(-6, 7, photo.shape, dtype=np.int16)
    return np.clip(photo.astype(np.int16) + grain, 0, 255).astype(np.uint8)


def with_heads(photo: np.ndarray, head_px: int, places: list[tuple[int, int]]) -> list[tuple[int, int, int, int]]:
    """Paste the astronaut's head, ``head_px`` tall, centred at each (x, y); returns the pasted boxes."""
    head = data.astronaut()[30:210, 140:310]
    small = cv2.resize(head, (round(head_px * 170 / 180), head_px), interpolation=cv2.INTER_AREA)
    boxes = []
    for x, y in places:
        x0, y0 = x - small.shape[1] // 2, y - head_px // 2
        photo[y0:y0 + head_px, x0:x0 + small.shape[1]] = small
        boxes.append((x0, y0, x0 + small.shape[1], y0 + head_px))
    return boxes


def found_in(faces: list[Face], boxes: list[tuple[int, int, int, int]]) -> int:
    return sum(any(x0 <= f.centre[0] <= x1 and y0 <= f.centre[1] <= y1 for f in faces) for x0, y0, x1, y1 in boxes)


# -------------------------------------------------------------------------------------------- the pyramid
@needs_yuface
@pytest.mark.slow
def test_a_large_photo_without_faces_is_not_searched_at_full_resolution(searched, level_scales):
    photo = backdrop(3000, 4000)
    assert detect_faces(photo) == []
    # The first pass (1280x960) and one finer level over the whole photo (2560x1920 in overlapping tiles): under
    # two thirds of the photo's 12 Mpx, where full-resolution tiles everywhere searched 1.6 times them.
    assert level_scales[:2] == [0.32, 0.64] and all(scale < 1.0 for scale in level_scales)
    assert sum(rows * cols for rows, cols in searched) < 0.65 * photo.shape[0] * photo.shape[1]


@needs_yuface
@pytest.mark.slow
def test_the_group_photo_upscaled_4x_gives_every_face_and_no_false_one():
    bench = load_bench("faces")
    photo, boxes = bench.group_photo(4)
    faces = detect_faces(photo)
    found, false = bench.match_faces(faces, boxes)
    assert (found, len(false)) == (len(boxes), 0), [face.box for face in false]


@needs_yuface
def test_a_photo_whose_faces_are_all_large_runs_one_pass(level_scales):
    photo = backdrop(2000, 3000)
    boxes = with_heads(photo, 480, [(600, 1000), (1500, 1000), (2400, 1000)])
    faces = detect_faces(photo)
    assert len(faces) == 3 and found_in(faces, boxes) == 3
    assert level_scales == [1280 / 3000]


@needs_yuface
@pytest.mark.slow
def test_tiny_faces_in_a_large_photo_are_found_by_the_finer_levels(searched, level_scales):
    photo = backdrop(3000, 4000, seed=1)
    places = [(700 + 500 * i, 900 + 700 * (i % 3)) for i in range(6)]
    boxes = with_heads(photo, 60, places)  # faces ~40 px: ~13 px in the 1280 px first pass, too small there
    assert found_in(detect_faces(photo, tiles="never"), boxes) < 6
    faces = detect_faces(photo)
    assert found_in(faces, boxes) == 6 and len(faces) == 6
    assert len(level_scales) >= 2 * 2  # each call above: the first pass, then at least one finer level


# -------------------------------------------------------------------------------------------- judging
@needs_yuface
def test_a_detection_that_does_not_hold_at_a_second_scale_is_dropped(monkeypatch):
    astronaut = data.astronaut()
    real = backends.BACKENDS["yunet"]
    texture = Face((400.0, 380.0, 440.0, 420.0), 0.9, np.full((5, 2), 420.0))

    def seeing_things(bgr: np.ndarray, min_score: float) -> list[Face]:
        found = real(bgr, min_score)  # the photo itself is one raster; the verification mosaic is another
        return found + [texture] if bgr.shape[:2] == astronaut.shape[:2] else found

    monkeypatch.setitem(backends.BACKENDS, "yunet", seeing_things)
    faces = detect_faces(astronaut)
    assert len(faces) == 1 and faces[0].box[0] < 300  # the astronaut's face, confirmed; the texture is gone
    assert 0.6 <= faces[0].score <= 1.0


def test_a_finer_detection_a_coarser_level_should_have_seen_is_dropped():
    points = np.zeros((5, 2))
    large = Face((1000.0, 1000.0, 1200.0, 1200.0), 0.9, points)  # 100 px at scale 0.5: resolved there
    small = Face((3000.0, 1000.0, 3060.0, 1060.0), 0.9, points)  # 30 px at scale 0.5: below its limit
    coarse = Level(0.5, [Region(0, 0, 4000, 3000)])
    assert _unseen_above(large, [coarse]) and not _unseen_above(small, [coarse])
    coarse.faces.append(Face((1010.0, 1005.0, 1195.0, 1190.0), 0.8, points))  # the coarser level saw it
    assert not _unseen_above(large, [coarse])
    elsewhere = Level(0.5, [Region(2000, 0, 4000, 3000)])  # that level did not search the large face's place
    assert not _unseen_above(large, [elsewhere])


def test_windows_that_overlap_merge_into_their_bounding_box():
    merged = merge_regions([Region(0, 0, 10, 10), Region(5, 5, 20, 20), Region(50, 50, 60, 60),
                            Region(18, 0, 30, 6)])
    assert sorted((r.x0, r.y0, r.x1, r.y1) for r in merged) == [(0, 0, 30, 20), (50, 50, 60, 60)]


def test_a_small_face_opens_a_window_at_the_next_level_and_a_large_one_does_not():
    search = PyramidSearch(np.zeros((3000, 4000, 3), np.uint8), backends.yunet, 0.6, 16)
    points = np.zeros((5, 2))
    small = Face((2000.0, 1500.0, 2060.0, 1560.0), 0.9, points)  # 15 px at scale 0.25: near the limit
    large = Face((200.0, 200.0, 600.0, 600.0), 0.9, points)  # 100 px at scale 0.25
    (window,) = search.windows(Level(0.25, [search.whole], [small, large]), 0.5)
    assert window.contains(*small.centre) and not window.contains(*large.centre)
    assert window.x1 - window.x0 >= 2 * 256 / 0.5  # at least WINDOW_MIN_PX either side at the next level
