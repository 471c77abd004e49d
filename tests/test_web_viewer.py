"""The viewer's server side (tile pyramids, strokes made masks, bounded input from the page) and the Inpaint tab's
versions (open, paint, run, continue on the result, undo, redo, upload a mask), without a browser."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gradio")

from PIL import Image

from tessera.errors import InputError
from tessera.web import viewer
from tessera.web.viewer import Stroke, build_pyramid, load_pyramid, parse_strokes, strokes_mask


def painted(strokes: list[dict]) -> str:
    return json.dumps({"photo": None, "strokes": strokes})


def test_a_pyramid_halves_down_to_one_tile_and_reloads_from_its_description(tmp_path):
    ys, xs = np.mgrid[0:1500, 0:2100]
    pixels = np.dstack([xs * 255 // 2100, ys * 255 // 1500, (xs + ys) * 255 // 3600]).astype(np.uint8)
    pyramid = build_pyramid(pixels, tmp_path / "view")
    assert pyramid.levels == ((2100, 1500), (1050, 750), (525, 375), (262, 187))
    doc = pyramid.doc()
    assert [(level["cols"], level["rows"]) for level in doc["levels"]] == [(5, 3), (3, 2), (2, 1), (1, 1)]
    tile = np.asarray(Image.open(tmp_path / "view" / "L0" / "2-4.jpg"))
    assert tile.shape == (1500 - 1024, 2100 - 2048, 3)  # edge tiles are cut to the photo
    full = np.asarray(Image.open(tmp_path / "view" / "L0" / "0-0.jpg")).astype(int)
    assert np.abs(full - pixels[:512, :512]).max() <= 4  # the photo's pixels at full size, as JPEG
    assert load_pyramid(tmp_path / "view") == pyramid
    with pytest.raises(InputError, match="upload the photo again"):
        load_pyramid(tmp_path / "gone")


def test_a_huge_result_starts_its_pyramid_below_full_size(tmp_path, monkeypatch):
    monkeypatch.setattr(viewer, "FULL_LEVEL_PIXELS", 100_000)
    pyramid = build_pyramid(np.zeros((400, 600, 3), np.uint8), tmp_path / "v")
    assert pyramid.first_scale == 2 and pyramid.levels[0] == (300, 200) and (pyramid.width, pyramid.height) == (600, 400)


def test_a_stroke_covers_exactly_the_pixels_within_half_the_brush_of_its_path():
    start, end = np.array([10.5, 20.25]), np.array([70.5, 40.75])
    mask = strokes_mask([Stroke(False, 3.0, np.stack([start, end]))], 100, 60)
    ys, xs = np.mgrid[0:60, 0:100]
    centres = np.stack([xs + 0.5, ys + 0.5], axis=-1)
    direction = end - start
    t = np.clip(((centres - start) @ direction) / (direction @ direction), 0, 1)
    distance = np.linalg.norm(centres - (start + t[..., None] * direction), axis=-1)
    assert (mask == (distance <= 1.5)).all()


def test_strokes_apply_in_order_and_the_eraser_clears_an_uploaded_mask_too():
    base = np.zeros((50, 50), bool)
    base[:, :10] = True
    strokes = [Stroke(False, 10, np.array([[25.0, 25.0]])),            # a disc
               Stroke(True, 4, np.array([[0.0, 25.0], [50.0, 25.0]]))]  # erased across both
    mask = strokes_mask(strokes, 50, 50, base=base)
    assert mask[20, 25] and mask[29, 25] and not mask[31, 25] and mask[10, 5]
    assert not mask[25, 25] and not mask[25, 5] and not base[:, 10:].any()


@pytest.mark.parametrize("value, message", [
    ("{not json", "malformed painting"),
    (painted([{"size": 5}]), "malformed stroke"),
    (painted([{"size": "big", "points": [[1, 2]]}]), "malformed stroke"),
    (painted([{"size": 0, "points": [[1, 2]]}]), "impossible size"),
    (painted([{"size": 1e9, "points": [[1, 2]]}]), "impossible size"),
    (painted([{"size": 5, "points": []}]), "impossible size"),
    ('{"strokes": [{"size": 5, "points": [[NaN, 1]]}]}', "impossible size"),
    (painted([{"size": 5, "points": [[1, 2]]}] * (viewer.MAX_STROKES + 1)), "too many strokes"),
    (painted([{"size": 5, "points": [[1, 2]] * (viewer.MAX_POINTS + 1)}]), "points"),
])
def test_what_the_page_sends_as_strokes_is_checked_and_bounded(value, message):
    with pytest.raises(InputError, match=message):
        parse_strokes(value)


def test_no_strokes_is_an_empty_list():
    assert parse_strokes(None) == [] and parse_strokes(painted([])) == [] and parse_strokes('{"x": 1}') == []
    (stroke,) = parse_strokes(painted([{"erase": True, "size": 7, "points": [[1, 2], [3, 4]]}]))
    assert stroke.erase and stroke.size == 7 and stroke.points.tolist() == [[1, 2], [3, 4]]

# ----------------------------------------------------------------------------------------------- versions


class Request:
    def __init__(self, session: str = "alice"):
        self.session_hash, self.headers = session, {}


@pytest.fixture
def editing(tmp_path):
    from tessera.web.editing import EditorHandlers
    from tessera.web.handlers import WebApp, WebConfig
    from tessera.web.limits import Limits
    from tessera.web.retention import prepare_output_dir
    from tessera.web.uploads import UploadGate

    uploads = tmp_path / "uploads"
    uploads.mkdir()
    app = WebApp(WebConfig(output_dir=prepare_output_dir(tmp_path / "results"), limits=Limits(max_pixels=200_000)))
    app.gate = UploadGate(uploads)
    pixels = np.asarray(Image.open(Path(__file__).parent / "data" / "photo.png").convert("RGB")) if (
        Path(__file__).parent / "data" / "photo.png").exists() else None
    if pixels is None:
        from skimage import data

        pixels = np.ascontiguousarray(data.astronaut()[:300, :400])
    Image.fromarray(pixels).save(uploads / "photo.png")
    return EditorHandlers(app), uploads / "photo.png", pixels


def test_run_continue_on_the_result_undo_and_redo(editing):
    handlers, photo, pixels = editing
    value, history, current = handlers.open_photo(str(photo), Request())
    first = json.loads(value)["photo"]["id"]
    assert current == str(photo.resolve()) and len(history["versions"]) == 1

    def run(points):
        strokes = painted([{"erase": False, "size": 20, "points": points}])
        photo_in, mask = handlers.prepare_mask(strokes, history, Request())
        result, *_ = handlers.app.inpaint_job(photo_in, mask, Request(), progress=None, model="telea")
        value, history_out, mask_download, _upload = handlers.push_result(result, history, Request())
        return (value, history_out, mask_download), result, mask

    (value, history, mask_download), result_one, mask_one = run([[60, 60], [120, 80]])
    shown = json.loads(value)
    assert shown["photo"]["id"] != first and shown["before"]["id"] == first and shown["editable"]
    assert mask_download == mask_one and history["index"] == 1
    (value, history, _), result_two, mask_two = run([[300, 200], [350, 240]])
    one, two = (np.asarray(Image.open(path).convert("RGB")).astype(int) for path in (result_one, result_two))
    first_fill = np.asarray(Image.open(mask_one)) > 0
    assert (two[first_fill] == one[first_fill]).all()  # the second run started from the first result
    assert (one[first_fill] != pixels[first_fill]).any()
    third = json.loads(value)["photo"]["id"]

    value, history, _upload = handlers.undo_result(history, Request())
    assert json.loads(value)["photo"]["id"] == shown["photo"]["id"] and history["index"] == 1
    value, history, _upload = handlers.redo_result(history, Request())
    assert json.loads(value)["photo"]["id"] == third
    import gradio as gr

    with pytest.raises(gr.Error, match="latest version"):
        handlers.redo_result(history, Request())
    # the last mask runs again on the version shown (here: after going back to the first result)
    handlers.undo_result(history, Request())
    assert handlers.rerun_mask(history, Request()) == (result_one, mask_two)


def test_an_uploaded_mask_is_scaled_to_the_photo_or_refused(editing):
    import gradio as gr

    handlers, photo, pixels = editing
    _value, history, _current = handlers.open_photo(str(photo), Request())
    height, width = pixels.shape[:2]
    half = np.zeros((height // 2, width // 2), np.uint8)
    half[10:20, 10:30] = 255
    Image.fromarray(half).save(photo.parent / "mask.png")
    value, history = handlers.upload_mask(str(photo.parent / "mask.png"), history, Request())
    assert json.loads(value)["overlay"]["width"] == width
    _photo, mask = handlers.prepare_mask(painted([]), history, Request())  # no strokes: the upload alone
    made = np.asarray(Image.open(mask)) > 0
    assert made.shape == (height, width) and made[25, 30] and not made[100, 100]
    Image.new("L", (width, height // 3)).save(photo.parent / "wrong.png")
    with pytest.raises(gr.Error, match="upload a mask of the photo's size"):
        handlers.upload_mask(str(photo.parent / "wrong.png"), history, Request())


def test_nothing_painted_and_a_photo_over_the_limit_are_refused_before_a_mask_is_made(editing):
    import gradio as gr

    handlers, photo, _pixels = editing
    _value, history, _current = handlers.open_photo(str(photo), Request())
    with pytest.raises(gr.Error, match="paint over what to remove first"):
        handlers.prepare_mask(painted([]), history, Request())
    with pytest.raises(gr.Error, match="no mask has run yet"):
        handlers.rerun_mask(history, Request())
    handlers.app.config.limits.__dict__  # frozen: a second app with a lower limit instead
    from tessera.web.editing import EditorHandlers
    from tessera.web.handlers import WebApp, WebConfig
    from tessera.web.limits import Limits

    small = WebApp(WebConfig(output_dir=handlers.app.config.output_dir, limits=Limits(max_pixels=1000)))
    small.gate = handlers.app.gate
    with pytest.raises(gr.Error, match="over this server's limit of 1,000"):
        EditorHandlers(small).prepare_mask(painted([{"size": 5, "points": [[5, 5]]}]), history, Request())
    assert not list(handlers.app.config.output_dir.glob("*-mask-*"))


def test_a_result_whose_photo_was_replaced_meanwhile_is_not_added_to_the_new_photos_versions(editing):
    import gradio as gr

    handlers, photo, _pixels = editing
    _value, history, _current = handlers.open_photo(str(photo), Request())
    photo_in, mask = handlers.prepare_mask(painted([{"size": 20, "points": [[60, 60], [90, 70]]}]), history,
                                           Request())
    result, *_ = handlers.app.inpaint_job(photo_in, mask, Request(), progress=None, model="telea")
    other = photo.parent / "other.png"
    Image.open(photo).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(other)
    _value, new_history, _current = handlers.open_photo(str(other), Request())
    new_history["pending"] = history["pending"]  # the state the page holds now: the new photo's, the old run's
    with pytest.raises(gr.Error, match="another photo was opened"):
        handlers.push_result(result, new_history, Request())
    assert len(new_history["versions"]) == 1


def test_a_painting_too_costly_to_draw_is_refused():
    corner_to_corner = {"size": 2000, "points": [[0, 0], [6000, 4000]] * 20}
    with pytest.raises(InputError, match="upload a mask instead"):
        strokes_mask(parse_strokes(painted([corner_to_corner])), 6000, 4000)


def test_work_continued_on_a_jpeg_result_starts_from_its_exact_pixels(editing):
    """A JPEG photo's result is downloaded as JPEG, but the next version reads its lossless copy: what the second
    run did not paint is the first result's pixels exactly, not a second JPEG generation of them."""
    handlers, photo, pixels = editing
    jpeg = photo.with_suffix(".jpg")
    Image.fromarray(pixels).save(jpeg, quality=90)
    _value, history, _current = handlers.open_photo(str(jpeg), Request())
    exact = []
    for points in ([[60, 60], [120, 80]], [[300, 200], [350, 240]]):
        photo_in, mask = handlers.prepare_mask(painted([{"size": 20, "points": points}]), history, Request())
        result, *_ = handlers.app.inpaint_job(photo_in, mask, Request(), progress=None, model="telea")
        assert result.endswith("-inpainted.jpg")  # named and, for "auto", encoded as the photo was
        handlers.push_result(result, history, Request())
        current = history["versions"][history["index"]]["path"]
        assert current.endswith(".jpg.working.tif")
        exact.append(np.asarray(Image.open(current).convert("RGB")).astype(int))
    second_run = np.asarray(Image.open(mask)) > 0
    assert (exact[1][~second_run] == exact[0][~second_run]).all()
