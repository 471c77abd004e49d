"""Faces: detection, alignment templates, similarity, paste-back, and the enhance task end to end."""
from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from skimage import data

from tessera.errors import CancelledError, ModelError, OptionError
from tessera.faces.align import (align_face, compose, estimate_similarity, face_template, matrix_scale,
                                 native_crop_size)
from tessera.faces.detect import Face, available_detector, detect_faces, merge_faces
from tessera.faces.paste import paste_face, soft_mask
from tessera.models.descriptor import Model
from tessera.tasks.faces import enhance_faces

needs_yuface = pytest.mark.skipif(importlib.util.find_spec("yuface") is None, reason="yuface is not installed")

# Pupil centres in scikit-image's astronaut, read by eye on a 5x enlargement of the face (x, y).
ASTRONAUT_EYES = np.array([(202.0, 101.0), (247.0, 102.0)])
EYE_TOLERANCE = 4.0  # px: the iris is about 9 px across


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()


def small_gpen() -> Model:
    """A random-weight GPEN at 64 px, loaded through spandrel and tessera's loader like a real checkpoint."""
    from tessera.models.gpen import GPEN, GPENArch
    from tessera.models.loader import as_model

    torch.manual_seed(0)
    return as_model(GPENArch().load(GPEN(64, 32, 2, 2, 0.125).state_dict()))


def group_photo(head_px: int, rows: int = 5, cols: int = 6, size: tuple[int, int] = (1280, 1920)) -> np.ndarray:
    """A flat backdrop with rows x cols copies of the astronaut's head, each ``head_px`` tall."""
    head = data.astronaut()[30:210, 140:310]
    small = cv2.resize(head, (round(head_px * 170 / 180), head_px), interpolation=cv2.INTER_AREA)
    height, width = size
    image = np.empty((height, width, 3), np.uint8)
    image[...] = (200, 200, 170)
    for r in range(rows):
        for c in range(cols):
            y = int((r + 0.5) * height / rows - head_px / 2)
            x = int((c + 0.5) * width / cols - small.shape[1] / 2)
            image[y:y + head_px, x:x + small.shape[1]] = small
    return image


def changed_outside(before: np.ndarray, after: np.ndarray, boxes: list[tuple[int, int, int, int]]) -> int:
    outside = np.ones(before.shape[:2], bool)
    for x0, y0, x1, y1 in boxes:
        outside[y0:y1, x0:x1] = False
    return int(np.any(before != after, axis=2)[outside].sum())


# ------------------------------------------------------------------------------------------------ detection
@needs_yuface
@pytest.mark.slow
def test_astronaut_gives_one_face_with_the_eye_landmarks_on_the_eyes(astronaut):
    faces = detect_faces(astronaut, detector="yunet")
    assert len(faces) == 1
    face = faces[0]
    eyes = face.landmarks[:2]
    assert np.all(np.hypot(*(eyes - ASTRONAUT_EYES).T) <= EYE_TOLERANCE), eyes
    gray = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY).astype(float)
    x0, y0, x1, y1 = map(int, face.box)
    for x, y in np.rint(eyes).astype(int):  # a pupil is darker than the face around it
        assert gray[y - 1:y + 2, x - 1:x + 2].mean() < np.median(gray[y0:y1, x0:x1])
    assert 0.6 <= face.score <= 1.0
    assert face.box[0] < eyes[0, 0] < eyes[1, 0] < face.box[2]


@pytest.mark.slow
def test_cascade_fallback_finds_the_astronaut_with_landmarks_near_the_eyes(astronaut):
    faces = detect_faces(astronaut, detector="cascade")
    assert len(faces) == 1
    eyes = faces[0].landmarks[:2]
    # The cascade only places landmarks at their average place in its box: looser, but on the eyes' row.
    assert np.all(np.hypot(*(eyes - ASTRONAUT_EYES).T) <= 3 * EYE_TOLERANCE), eyes


def test_auto_detector_falls_back_to_the_cascade_without_yuface(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "yuface" else real(name, *a))
    assert available_detector("auto") == "cascade"
    with pytest.raises(ModelError, match="yuface"):
        available_detector("yunet")
    with pytest.raises(OptionError, match="did you mean"):
        available_detector("yunett")


@pytest.mark.slow
def test_min_face_and_score_threshold_filter_faces(astronaut):
    assert detect_faces(astronaut, min_face=200) == []
    assert detect_faces(astronaut, min_score=1.0) == [] or available_detector() == "cascade"


@needs_yuface
@pytest.mark.slow
def test_small_faces_of_a_group_photo_are_found_in_full_resolution_tiles():
    photo = group_photo(36)  # 30 heads; in the 1280 px copy their faces are ~11 px, too small for YuNet
    coarse = detect_faces(photo, tiles="never")
    tiled = detect_faces(photo, tiles="auto")
    assert len(coarse) < 30
    assert len(tiled) == 30
    centres = np.array([[(f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2] for f in tiled])
    distances = np.hypot(*(centres[:, None] - centres[None]).transpose(2, 0, 1)) + np.eye(30) * 1e9
    assert distances.min() > 100  # one detection per head: the overlapping tiles were merged


def test_merging_passes_keeps_one_box_per_face_and_prefers_the_finer_pass():
    points = np.zeros((5, 2))
    fine = Face((100.0, 100.0, 200.0, 220.0), 0.90, points + 1)
    coarse = Face((98.0, 103.0, 203.0, 218.0), 0.92, points)  # the same face from the scaled copy
    partial = Face((150.0, 100.0, 200.0, 160.0), 0.95, points)  # a face cut by a tile border, inside the face
    other = Face((400.0, 100.0, 480.0, 200.0), 0.70, points)
    kept = merge_faces([[fine, partial], [coarse, other]])
    assert len(kept) == 2 and other in kept and fine in kept  # the part gives way to the whole face
    assert merge_faces([[fine], [coarse]]) == [fine]  # near-equal scores: the full-resolution pass wins
    assert merge_faces([[fine], [Face(coarse.box, 0.99, points)]])[0].score == 0.99


def test_a_photo_without_faces_gives_no_face():
    yy, xx = np.mgrid[0:300, 0:400]
    flat = np.dstack([xx * 255 // 400, yy * 255 // 300, np.full_like(xx, 128)]).astype(np.uint8)
    assert detect_faces(flat) == []


# ------------------------------------------------------------------------------------------------ alignment
def test_templates_match_the_published_points():
    assert np.allclose(face_template("facexlib", 512)[0], (192.98138, 239.94708))
    assert np.allclose(face_template("facexlib", 1024), face_template("facexlib", 512) * 2)
    gpen256 = [(101.0203, 121.442), (154.7151, 121.145), (128.0384, 151.9796), (105.9799, 183.4141),
               (150.4456, 183.1682)]
    assert np.allclose(face_template("gpen", 256), gpen256, atol=1e-3)
    assert np.allclose(face_template("gpen", 2048), face_template("gpen", 512) * 4)
    with pytest.raises(OptionError, match="face template"):
        face_template("retina", 512)


def test_similarity_estimate_recovers_a_known_similarity(rng):
    src = rng.uniform(0, 500, (5, 2))
    angle, scale, shift = 0.4, 1.7, np.array([12.0, -30.0])
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    matrix = estimate_similarity(src, src @ rotation.T + shift)
    assert np.allclose(matrix[:, :2], rotation) and np.allclose(matrix[:, 2], shift)
    assert matrix_scale(matrix) == pytest.approx(scale)


def test_aligned_crop_puts_the_landmarks_on_the_template(rng):
    # Five Gaussian dots placed by a known similarity of the template; the crop must show them on the template.
    template = face_template("facexlib", 128)
    angle, scale = 0.3, 0.9
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = (template - 64) @ rotation.T + (180, 150)
    ys, xs = np.mgrid[0:300, 0:400]
    dots = sum(np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * 1.5**2)) for x, y in points)
    image = np.repeat(dots[:, :, None], 3, axis=2).astype(np.float32)
    aligned = align_face(image, points, "facexlib", 128)
    assert aligned.crop.shape == (128, 128, 3) and aligned.crop.dtype == np.float32
    gray = aligned.crop[..., 0]
    for x, y in template:
        xi, yi = round(x), round(y)
        window = gray[yi - 4:yi + 5, xi - 4:xi + 5]
        ys, xs = np.mgrid[yi - 4:yi + 5, xi - 4:xi + 5]
        centroid = np.array([(xs * window).sum(), (ys * window).sum()]) / window.sum()
        assert np.hypot(*(centroid - (x, y))) < 0.2


def test_native_crop_size_follows_the_face():
    template = face_template("facexlib", 512)
    assert native_crop_size(template, "facexlib") == 512
    assert native_crop_size(template / 4, "facexlib") == 128
    assert native_crop_size(template / 4, "facexlib", scale=2) == 256
    assert native_crop_size(template / 100, "facexlib") == 64  # clamped


# ------------------------------------------------------------------------------------------------ paste-back
def test_soft_mask_is_one_inside_and_zero_at_the_border():
    mask = soft_mask(256)
    assert mask[128, 128] == 1 and mask[0, 128] == 0 and mask[128, -1] == 0
    assert np.all(np.diff(mask[128, :128]) >= 0)  # monotone ramp, no step


def test_paste_changes_only_pixels_inside_its_box(astronaut, rng):
    canvas = astronaut.copy()
    face = detect_faces(astronaut)[0]
    aligned = align_face(astronaut, face.landmarks, "facexlib", 128)
    box = paste_face(canvas, rng.random((128, 128, 3), dtype=np.float32), aligned.matrix)
    assert box is not None
    assert changed_outside(astronaut, canvas, [box]) == 0
    x0, y0, x1, y1 = box
    assert np.any(canvas[y0:y1, x0:x1] != astronaut[y0:y1, x0:x1])
    untouched = astronaut.copy()
    assert paste_face(untouched, aligned.crop, aligned.matrix, strength=0.0) is None
    assert np.array_equal(untouched, astronaut)


@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_aligning_then_pasting_back_unchanged_is_nearly_the_identity(astronaut, scale):
    """Align a face, paste the crop back unchanged: the geometry round-trips (no shift, no scale error)."""
    face = detect_faces(astronaut)[0]
    aligned = align_face(astronaut, face.landmarks, "facexlib", 512)
    size = (round(512 * scale), round(512 * scale))
    reference = cv2.resize(astronaut, size, interpolation=cv2.INTER_LANCZOS4) if scale != 1 else astronaut

    def error(matrix: np.ndarray) -> float:
        canvas = reference.copy()
        x0, y0, x1, y1 = paste_face(canvas, aligned.crop, matrix, scale=(scale, scale))
        return float(np.abs(canvas[y0:y1, x0:x1].astype(float) - reference[y0:y1, x0:x1]).mean())

    exact = error(aligned.matrix)
    assert exact < 2.0  # mean over the box, in 8-bit levels
    for shift in ([[0, 0, 1], [0, 0, 0]], [[0, 0, 0], [0, 0, 1]]):  # pasted one photo pixel off: worse
        assert exact < error(compose(aligned.matrix, np.eye(2, 3) + shift))


def test_overlapping_faces_blend_without_a_hard_edge():
    canvas = np.zeros((200, 400, 3), np.float32)
    base = np.array([[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]])  # photo -> 128 px crop: a face over x, y in 0..256
    first = paste_face(canvas, np.full((128, 128, 3), 0.8, np.float32), base)
    second = paste_face(canvas, np.full((128, 128, 3), 0.2, np.float32), base + [[0, 0, -64], [0, 0, 0]])
    assert first is not None and second is not None
    row = canvas[100, :, 0]
    assert np.abs(np.diff(row)).max() < 0.1  # soft masks: no step anywhere along the row
    assert row.max() > 0.75 and row.min() < 0.05 and np.any(np.abs(row - 0.2) < 0.01)


# ------------------------------------------------------------------------------------------------ enhance
def test_enhance_at_upscale_1_leaves_pixels_outside_the_faces_bit_identical(astronaut):
    result = enhance_faces(astronaut)
    out, done = result.image, result.report
    assert out.shape == astronaut.shape and out.dtype == astronaut.dtype
    assert done.weight_free and len(done.faces) == 1
    boxes = [face.box for face in done.faces]
    assert changed_outside(astronaut, out, boxes) == 0
    x0, y0, x1, y1 = boxes[0]
    fx0, fy0, fx1, fy1 = done.faces[0].face.box
    margin = 1.5 * max(fx1 - fx0, fy1 - fy0)  # the crop's footprint: the face plus hair and a little background
    assert fx0 - margin <= x0 and x1 <= fx1 + margin and fy0 - margin <= y0 and y1 <= fy1 + margin
    assert np.any(out[y0:y1, x0:x1] != astronaut[y0:y1, x0:x1])


@pytest.mark.slow
def test_enhance_with_a_random_gpen_runs_batches_and_saves_the_aligned_crops(astronaut, tmp_path):
    photo = np.concatenate([astronaut, astronaut[:, ::-1]], axis=1)  # two faces
    folder = tmp_path / "faces"
    result = enhance_faces(photo, model=small_gpen(), face_batch=2, save_faces=folder, device="cpu")
    out, done = result.image, result.report
    assert len(done.faces) == 2 and {face.size for face in done.faces} == {64}
    assert changed_outside(photo, out, [face.box for face in done.faces]) == 0
    crops = sorted(folder.glob("face_*.png"))
    assert [p.name for p in crops] == ["face_000.png", "face_000_restored.png", "face_001.png",
                                       "face_001_restored.png"]
    from tessera.image.read import load_image

    crop = load_image(crops[0]).pixels
    assert crop.shape == (64, 64, 3)
    # The saved crop is the aligned face: its eyes sit on GPEN's template (darker than the cheeks below them).
    eyes = face_template("gpen", 64)[:2]
    gray = crop.mean(axis=2)
    for x, y in np.rint(eyes).astype(int):
        assert gray[y, x] < gray[y + 10, x]


def test_enhance_upscales_the_background_and_pastes_faces_at_scale(astronaut):
    from tessera.tasks.upscale import upscale

    result = enhance_faces(astronaut, upscale=2)
    out, done = result.image, result.report
    background = upscale(astronaut, scale=2, model="lanczos").image
    assert out.shape == (1024, 1024, 3)
    assert done.background == "lanczos" and done.scale == (2.0, 2.0)
    assert changed_outside(background, out, [face.box for face in done.faces]) == 0
    x0, y0, x1, y1 = done.faces[0].box
    fx0, fy0, fx1, fy1 = (2 * v for v in done.faces[0].face.box)
    assert x0 < fx0 < fx1 < x1 and y0 < fy0 < fy1 < y1  # the paste covers the face at the output's scale
    with pytest.raises(OptionError, match="background 'none'"):
        enhance_faces(astronaut, upscale=2, background="none")


def test_strength_zero_and_a_faceless_photo_return_the_photo_unchanged(astronaut):
    assert np.array_equal(enhance_faces(astronaut, strength=0.0).image, astronaut)
    flat = np.full((120, 160, 3), 90, np.uint16)
    result = enhance_faces(flat)
    out, report = result.image, result.report
    assert np.array_equal(out, flat) and out.dtype == np.uint16 and report.faces == []


def test_sixteen_bit_and_float_photos_keep_their_dtype(astronaut):
    for photo in (astronaut.astype(np.uint16) * 257, astronaut.astype(np.float32) / 255):
        out = enhance_faces(photo).image
        assert out.dtype == photo.dtype and out.shape == photo.shape


def test_unknown_or_non_face_models_raise_model_errors(astronaut):
    from tessera.models.classical.lanczos import lanczos_model

    with pytest.raises(ModelError) as info:
        enhance_faces(astronaut, model="no-such-face-model")
    assert info.value.exit_code == 2
    with pytest.raises(ModelError, match="not a face model"):
        enhance_faces(astronaut, model=lanczos_model(2))
    with pytest.raises(OptionError, match="strength"):
        enhance_faces(astronaut, strength=2)


def test_codeformer_receives_the_fidelity_weight(astronaut):
    seen: list[float] = []

    class FakeCodeFormer(torch.nn.Module):
        def forward(self, x, weight=0.5):
            seen.append(weight)
            return (x, None)

    from dataclasses import replace

    fake = replace(small_gpen(), network=FakeCodeFormer(), architecture="CodeFormer", call_options=("fidelity",),
                   face_template="facexlib", call_fn=lambda network, image: network(image)[0])
    enhance_faces(astronaut, model=fake, fidelity=0.8)
    assert seen == [0.8]


def test_progress_reports_detection_and_faces_and_cancel_stops(astronaut):
    events = []
    enhance_faces(astronaut, progress=events.append)
    stages = {event.stage for event in events}
    assert {"detect", "faces"} <= stages
    assert events[-1].stage == "faces" and events[-1].done == events[-1].total == 1
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(CancelledError):
        enhance_faces(astronaut, cancel=cancel)


def test_deblur_and_suppress_hf_options_run_inside_the_face_only(astronaut):
    result = enhance_faces(astronaut, deblur=True, suppress_hf=True)
    out, report = result.image, result.report
    assert changed_outside(astronaut, out, [face.box for face in report.faces]) == 0


def test_face_mapped_keeps_pixel_centres():
    face = Face((10.0, 20.0, 30.0, 40.0), 0.9, np.array([[0.0, 0.0]] * 5))
    doubled = face.mapped(2.0)
    assert doubled.box == (20.0, 40.0, 60.0, 80.0)
    assert np.allclose(doubled.landmarks, 0.5)  # pixel 0's centre in a 2x raster lies at 0.5
    assert face.size == 20.0


@pytest.mark.slow
def test_a_neural_background_runs_through_the_tiling_engine_with_faces_pasted_at_its_scale(astronaut):
    from conftest import random_compact

    from tessera.tasks.upscale import upscale

    photo = np.ascontiguousarray(astronaut[40:232, 150:342])  # the head, 192 px
    network = Model(random_compact(num_feat=8, num_conv=2), "tiny-compact", scale=4)
    result = enhance_faces(photo, background=network, upscale=4, tile=64)
    out, done = result.image, result.report
    background = upscale(photo, model=network, scale=4, tile=64).image
    assert out.shape == (768, 768, 3)
    assert done.background == "tiny-compact" and len(done.faces) == 1 and done.scale == (4.0, 4.0)
    assert changed_outside(background, out, [face.box for face in done.faces]) == 0
    # The weight-free clean-up works at the face's output resolution: about 4x its size in the photo.
    assert done.faces[0].size >= 4 * 0.8 * native_crop_size(done.faces[0].face.landmarks, "facexlib")


# ------------------------------------------------------------------------------------------------ GPEN's and GFPGAN's options
def three_sizes() -> np.ndarray:
    """Three astronauts of different sizes: the largest at the left, the middle one at the right, the smallest
    at the centre of the photo (so 'centre' and 'largest' are different faces)."""
    photo = np.full((700, 1400, 3), 200, np.uint8)
    astronaut = data.astronaut()
    for scale, (x, y) in ((1.0, (0, 0)), (0.7, (1400 - 358, 0)), (0.5, (700 - 128 - 100, 350 - 128 - 60))):
        side = round(512 * scale)
        photo[y:y + side, x:x + side] = cv2.resize(astronaut, (side, side), interpolation=cv2.INTER_AREA)
    return photo


@pytest.fixture(scope="module")
def sizes_photo() -> np.ndarray:
    return three_sizes()


@pytest.mark.slow
def test_faces_are_numbered_largest_first_and_chosen_by_index_centre_or_size(sizes_photo):
    from tessera.options import FaceOptions
    from tessera.tasks.faces import find_faces

    faces = find_faces(sizes_photo, FaceOptions())
    assert len(faces) == 3
    assert faces[0].size > faces[1].size > faces[2].size and faces[0].box[0] < 300 and faces[1].box[0] > 1000
    for options, indices in (({"faces": "2,0"}, [0, 2]), ({"only_largest_face": True}, [0]),
                             ({"only_center_face": True}, [2])):
        result = enhance_faces(sizes_photo, model=small_gpen(), device="cpu", **options)
        out, report = result.image, result.report
        done = sorted(report.faces, key=lambda face: face.index)
        assert [face.index for face in done] == indices and report.found == 3
        for face in done:
            assert np.allclose(face.face.box, faces[face.index].box)
        assert changed_outside(sizes_photo, out, [face.box for face in done]) == 0
        for face in done:
            x0, y0, x1, y1 = face.box
            assert np.any(out[y0:y1, x0:x1] != sizes_photo[y0:y1, x0:x1])


def test_choosing_a_face_that_was_not_found_or_two_ways_at_once_is_refused(sizes_photo):
    from tessera.errors import InputError

    with pytest.raises(InputError, match=r"face 5 not found: the detector found faces 0-2"):
        enhance_faces(sizes_photo, faces=[1, 5])
    with pytest.raises(OptionError, match="both choose faces"):
        enhance_faces(sizes_photo, faces=[1], only_largest_face=True)
    with pytest.raises(OptionError, match="faces"):
        enhance_faces(sizes_photo, faces="1;2")


def test_face_order_is_stable_among_equal_sizes():
    from tessera.faces.boxes import index_order

    points = np.zeros((5, 2))
    right, left, low = (Face((300.0, 0.0, 400.0, 100.0), 0.9, points), Face((0.0, 0.0, 100.0, 100.0), 0.8, points),
                        Face((0.0, 200.0, 100.0, 300.0), 0.99, points))
    big = Face((0.0, 400.0, 150.0, 550.0), 0.7, points)
    for order in ([right, left, low, big], [low, big, left, right]):
        assert index_order(order) == [big, left, right, low]


def test_progress_moves_after_every_face(sizes_photo):
    events: list = []
    enhance_faces(sizes_photo, model=small_gpen(), face_batch=1, progress=events.append, device="cpu")
    faces = [(event.done, event.total) for event in events if event.stage == "faces"]
    assert {done for done, _ in faces} == {0, 1, 2, 3} and {total for _, total in faces} == {3}
    assert [done for done, _ in faces] == sorted(done for done, _ in faces)  # never backwards


@pytest.mark.parametrize("shape, upscale", [((96, 96), 1), ((120, 80), 2)])
def test_an_aligned_input_is_restored_whole_without_detection(astronaut, monkeypatch, shape, upscale):
    import tessera.tasks.faces as faces_task
    from tessera.models.classical.lanczos import resize

    monkeypatch.setattr(faces_task, "detect_faces", lambda *a, **k: pytest.fail("an aligned input is not searched"))
    photo = cv2.resize(astronaut[40:240, 140:340], shape[::-1], interpolation=cv2.INTER_AREA)
    network = small_gpen()
    result = enhance_faces(photo, model=network, aligned=True, upscale=upscale, device="cpu")
    out, report = result.image, result.report
    rows, cols = shape[0] * upscale, shape[1] * upscale
    assert out.shape == (rows, cols, 3)
    (face,) = report.faces
    assert face.size == 64 and face.box == (0, 0, cols, rows) and report.aligned
    # What GFPGAN's has_aligned does: the whole image at the network's size through the network, then resized.
    crop = np.clip(resize(photo.astype(np.float32) / 255, 64, 64), 0, 1)
    with torch.no_grad():
        restored = network(torch.from_numpy(crop).permute(2, 0, 1)[None]).permute(0, 2, 3, 1)[0].numpy()
    expected = np.clip(resize(np.rint(restored * 255).astype(np.float32) / 255, cols, rows), 0, 1)
    assert np.abs(out.astype(np.float32) - expected * 255).max() <= 1.01
    weight_free = enhance_faces(photo, aligned=True).report
    # the weight-free method runs at the input's own size, its long side rounded up to a multiple of 16
    assert weight_free.faces[0].size == {(96, 96): 96, (120, 80): 128}[shape]


@pytest.mark.slow
def test_saved_faces_stitch_back_bit_for_bit_and_an_edited_face_changes_only_its_box(astronaut, tmp_path):
    from tessera.image.read import load_image
    from tessera.image.write import save_image
    from tessera.tasks.faces_manifest import stitch_faces

    photo = np.concatenate([astronaut, astronaut[:, ::-1]], axis=1)
    for dtype, upscale, folder in ((np.uint8, 1, tmp_path / "u8"), (np.uint16, 2, tmp_path / "u16")):
        source = photo.astype(dtype) * (257 if dtype == np.uint16 else 1)
        result = enhance_faces(source, model=small_gpen(), upscale=upscale, strength=0.9, save_faces=folder,
                               device="cpu")
        out, report = result.image, result.report
        manifest = report.manifest
        assert manifest == folder / "manifest.json"
        assert np.array_equal(stitch_faces(manifest, source), out)
    # Edit face 0 (paint it black): only that face's box changes.
    restored = folder / "face_000_restored.png"
    save_image(np.zeros_like(load_image(restored).pixels), restored)
    edited = stitch_faces(folder / "manifest.json", photo.astype(np.uint16) * 257)
    (box,) = [face.box for face in report.faces if face.index == 0]
    assert changed_outside(out, edited, [box]) == 0 and np.any(edited != out)


def test_saved_aligned_faces_stitch_back_bit_for_bit(astronaut, tmp_path):
    from tessera.tasks.faces_manifest import stitch_faces

    crop = np.ascontiguousarray(astronaut[40:240, 140:340])
    result = enhance_faces(crop, model=small_gpen(), aligned=True, save_faces=tmp_path, device="cpu")
    out, report = result.image, result.report
    assert np.array_equal(stitch_faces(report.manifest, crop), out)


@pytest.fixture(scope="module")
def saved_once(astronaut, tmp_path_factory) -> Path:
    return enhance_faces(astronaut, save_faces=tmp_path_factory.mktemp("saved") / "faces").report.manifest.parent


@pytest.fixture
def saved_faces(astronaut, saved_once, tmp_path) -> tuple[np.ndarray, Path, dict]:
    """The astronaut, a copy of its --save-faces folder's manifest (in tmp_path/faces) and its JSON."""
    import json
    import shutil

    folder = shutil.copytree(saved_once, tmp_path / "faces")
    manifest = folder / "manifest.json"
    return astronaut, manifest, json.loads(manifest.read_text())


@pytest.mark.parametrize("edit, message", [
    (lambda m, d: m["faces"][0].update(restored="../outside.png"), "not inside the manifest's folder"),
    (lambda m, d: m["faces"][0].update(restored="/etc/hostname"), "not inside the manifest's folder"),
    (lambda m, d: m["faces"][0].update(restored="link.png") or (d / "link.png").symlink_to(d.parent / "x.png"),
     "leads out of the manifest's folder"),
    (lambda m, d: m.update(faces=[m["faces"][0]] * 10_001), "over the limit of 10,000"),
    (lambda m, d: m["faces"][0].update(matrix=[[1e300, 0, 0], [0, 1, 0]]), "valid 'matrix'"),
    (lambda m, d: m["faces"][0].update(matrix=[[0, 0, 0], [0, 0, 0]]), "degenerate"),
    (lambda m, d: m["faces"][0].update(size=True), "'size' must be a whole number"),
    (lambda m, d: m["faces"][0].update(size=32), "expected 32x32"),
    (lambda m, d: m.update(strength="1"), "'strength' must be a number"),
    (lambda m, d: m.update(background="/tmp/evil.pth"), "not a catalog model"),
    (lambda m, d: m.update(output_width=10**9), "'output_width' must be a whole number"),
    (lambda m, d: m.update(tessera="inpaint-regions"), "not a tessera face manifest"),
    (lambda m, d: m["faces"].append(7), "face 1 must be an object"),
    (lambda m, d: m["faces"][0].update(landmarks=[[1, 2]] * 4), "valid 'landmarks'"),
    (lambda m, d: m.update(parse_mask="ellipse"), "'parse_mask' must be one of box, parsenet"),
    (lambda m, d: m.update(face_batch=0), "'face_batch' must be auto or a whole number"),
])
def test_an_untrusted_face_manifest_is_checked_before_a_pixel_is_read(saved_faces, edit, message):
    import json

    from tessera.errors import InputError
    from tessera.tasks.faces_manifest import stitch_faces

    photo, manifest, data_ = saved_faces
    (manifest.parent.parent / "x.png").write_bytes((manifest.parent / data_["faces"][0]["restored"]).read_bytes())
    edit(data_, manifest.parent)
    manifest.write_text(json.dumps(data_))
    with pytest.raises(InputError, match=message):
        stitch_faces(manifest, photo)


def test_stitch_refuses_a_photo_of_another_size(saved_faces):
    from tessera.errors import InputError
    from tessera.tasks.faces_manifest import stitch_faces

    photo, manifest, _ = saved_faces
    with pytest.raises(InputError, match="was written for 512x512 uint8"):
        stitch_faces(manifest, photo[:500])


@pytest.mark.slow
def test_stitch_reproduces_enhance_with_parsing_masks(astronaut, tmp_path, monkeypatch):
    from test_face_parsing import cached_parsenet, small_parsenet

    from tessera.tasks.faces_manifest import read_face_manifest, stitch_faces

    cached_parsenet(tmp_path, monkeypatch, small_parsenet())
    photo = np.concatenate([astronaut, astronaut[:, ::-1]], axis=1)
    result = enhance_faces(photo, model=small_gpen(), parse_mask="parsenet", save_faces=tmp_path / "faces",
                           model_dir=tmp_path, device="cpu")
    out, report = result.image, result.report
    manifest = read_face_manifest(report.manifest)
    assert manifest.parse_mask == "parsenet" and len(manifest.faces) == 2
    assert np.array_equal(stitch_faces(manifest, photo, model_dir=tmp_path), out)
