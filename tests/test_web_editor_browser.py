"""The Inpaint tab's editor on a 6000x4000 photo in a real browser (Debian's chromium, headless, Playwright).

An idle tab with the photo loaded sends nothing; the photo pans and zooms from its tile pyramid; a stroke painted
at 100 % lands where it was painted, to the photo pixel; inpaint, continue on the result, undo and redo the
result, all at full resolution. Screenshots go to test-artifacts/web/.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("gradio")
pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

from PIL import Image

from browser_helpers import ARTIFACTS, launch_chromium, new_page, shot
from conftest import serve_app
from tessera.web.app import WebConfig
from tessera.web.retention import prepare_output_dir

pytestmark = [pytest.mark.browser, pytest.mark.slow]

WIDTH, HEIGHT = 6000, 4000
VIEWER = "window.tesseraViewers['inpaint-viewer']"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("web-editor")
    config = WebConfig(output_dir=prepare_output_dir(tmp / "results"), editor_height=520)
    blocks, app, url = serve_app(config)
    yield app, url, config
    blocks.close()


@pytest.fixture(scope="module")
def browser():
    with launch_chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """A 6000x4000 JPEG made from scikit-image's coffee photo (a real photograph, enlarged)."""
    import cv2
    from skimage import data

    pixels = cv2.resize(data.coffee(), (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC)
    path = tmp_path_factory.mktemp("editor-files") / "coffee-24mp.jpg"
    Image.fromarray(pixels).save(path, quality=92)
    return path, np.asarray(Image.open(path).convert("RGB"))


def open_photo(page, path) -> str:
    """Upload the photo to the Inpaint tab; return the id of the version the viewer shows once its tiles are in."""
    page.locator("#inpaint-photo input[type=file]").set_input_files(str(path))
    page.wait_for_function(f"() => {VIEWER} && {VIEWER}.view().photo && {VIEWER}.view().tilesLoaded > 0")
    return page.evaluate(f"{VIEWER}.view().photo")


def view(page) -> dict:
    return page.evaluate(f"{VIEWER}.view()")


def drag(page, points: list[tuple[float, float]], steps: int = 12) -> None:
    """A mouse drag through the photo points (photo pixels), mapped to the page by the viewer's own transform."""
    screen = [page.evaluate(f"([x, y]) => {VIEWER}.toClient(x, y)", [x, y]) for x, y in points]
    page.mouse.move(screen[0]["x"], screen[0]["y"])
    page.mouse.down()
    for start, end in zip(screen, screen[1:]):
        for step in range(1, steps + 1):
            page.mouse.move(start["x"] + (end["x"] - start["x"]) * step / steps,
                            start["y"] + (end["y"] - start["y"]) * step / steps)
    page.mouse.up()


def latest_mask(config) -> np.ndarray:
    masks = sorted(config.output_dir.glob("*-mask-*/*-mask.png"), key=lambda p: p.stat().st_mtime)
    return np.asarray(Image.open(masks[-1])) > 127


def latest_result(config):
    results = [path for path in config.output_dir.glob("*-inpainted-*/*-inpainted.*") if path.is_file()]
    return max(results, key=lambda path: path.stat().st_mtime)


def run_and_wait(page) -> str:
    """Run; wait until the result is the viewer's new version (compared with the one before); the status."""
    shown = view(page)["photo"]
    page.locator("#inpaint-run").click()
    try:
        page.wait_for_function(f"(shown) => {VIEWER}.view().photo !== shown && {VIEWER}.view().compare",
                               arg=shown, timeout=240_000)
    except Exception:
        shot(page, "editor-failed")
        raise AssertionError(f"no result version: {page.locator('body').inner_text()[-3000:]}") from None
    status = page.locator("#inpaint-status").inner_text()
    assert "✓" in status, status
    return status


def distance_to_segment(xs, ys, start, end) -> np.ndarray:
    points = np.stack([xs + 0.5, ys + 0.5], axis=-1)  # pixel centres on the canvas's grid
    direction = np.subtract(end, start, dtype=np.float64)
    t = np.clip(((points - start) @ direction) / (direction @ direction), 0, 1)
    return np.linalg.norm(points - (np.asarray(start) + t[:, None] * direction), axis=-1)


def test_an_idle_tab_with_a_loaded_photo_sends_nothing(server, browser, photo):
    _app, url, _config = server
    page = new_page(browser, url)
    open_photo(page, photo[0])
    time.sleep(3)  # the fitted view's tiles arrive
    requests: list[str] = []
    page.on("request", lambda request: requests.append(f"{request.method} {request.url}"))
    time.sleep(30)
    shot(page, "editor-0-idle")
    assert requests == [], requests
    page.close()


def test_a_3_pixel_stroke_at_100_percent_lands_within_a_photo_pixel(server, browser, photo):
    _app, url, config = server
    page = new_page(browser, url)
    open_photo(page, photo[0])
    page.locator("#inpaint-viewer [data-action='100%']").click()
    page.evaluate(f"{VIEWER}.centerOn(3000, 2000, 1)")
    assert view(page)["s"] == 1
    page.locator("#inpaint-viewer canvas").hover()
    while view(page)["size"] > 3:  # the brush's size in photo pixels, with the [ key
        page.keyboard.press("[")
    assert view(page)["size"] == 3
    start, end = (2900.5, 1950.25), (3110.5, 2040.75)
    drag(page, [start, end], steps=40)
    page.wait_for_timeout(300)
    assert view(page)["strokes"] == 1
    shot(page, "editor-1-stroke-100-percent")
    page.evaluate(f"{VIEWER}.centerOn(3000, 2000, 4)")  # beyond 100 %: photo pixels as squares
    page.wait_for_timeout(500)
    shot(page, "editor-2-zoom-400-percent")
    run_and_wait(page)

    mask = latest_mask(config)
    assert mask.shape == (HEIGHT, WIDTH)
    ys, xs = np.nonzero(mask)
    distance = distance_to_segment(xs, ys, start, end)
    assert distance.max() <= 1.5 + 1.0, "a painted pixel more than 1 px outside the 3 px stroke"
    grid_x, grid_y = np.meshgrid(np.arange(2890, 3120), np.arange(1940, 2050))
    line = distance_to_segment(grid_x.ravel(), grid_y.ravel(), start, end).reshape(grid_x.shape)
    core = np.zeros_like(mask)
    core[1940:2050, 2890:3120] = line <= 0.5
    assert mask[core].all(), "the stroke's centre line is not all in the mask"
    page.close()


def test_inpaint_continue_on_the_result_undo_and_redo(server, browser, photo):
    _app, url, config = server
    path, pixels = photo
    page = new_page(browser, url)
    first = open_photo(page, path)
    page.locator("#inpaint-viewer [data-action=brush]").click()
    page.evaluate(f"{VIEWER}.setSize(90)")
    drag(page, [(1000, 1000), (1500, 1150)])
    shot(page, "editor-3-painted")
    status = run_and_wait(page)
    shot(page, "editor-4-compare")
    assert f"{WIDTH}×{HEIGHT} → {WIDTH}×{HEIGHT}" in status
    second = view(page)["photo"]
    assert second != first and view(page)["strokes"] == 0
    result_one = np.asarray(Image.open(latest_result(config)).convert("RGB"))
    mask_one = latest_mask(config)

    # Painting continues on the result: the second run starts from it and changes only its own mask.
    page.locator("#inpaint-viewer [data-action=brush]").click()
    assert not view(page)["compare"]
    drag(page, [(4200, 2600), (4600, 2850)])
    run_and_wait(page)
    third = view(page)["photo"]
    result_two = np.asarray(Image.open(latest_result(config)).convert("RGB"))
    mask_two = latest_mask(config)
    assert result_two.shape == pixels.shape
    assert not mask_two[mask_one].all()
    kept = ~(mask_two | mask_one)
    # JPEG output: the unpainted parts match the first result within re-encoding noise, the first fill is kept
    assert np.abs(result_two.astype(int) - result_one)[kept].mean() < 2.0
    assert np.abs(result_two.astype(int) - result_one)[mask_one & ~mask_two].mean() < 2.0
    assert np.abs(result_two.astype(int) - pixels)[mask_one & ~mask_two].mean() > 2.0

    page.locator("#inpaint-undo").click()
    page.wait_for_function(f"(id) => {VIEWER}.view().photo === id", arg=second)
    page.locator("#inpaint-redo").click()
    page.wait_for_function(f"(id) => {VIEWER}.view().photo === id", arg=third)
    shot(page, "editor-5-redone")
    page.close()
    assert ARTIFACTS.is_dir()


def choose(page, selector: str, value: str) -> None:
    """Pick ``value`` in the Gradio dropdown ``selector`` (type it, then take the list's entry)."""
    field = page.locator(f"{selector} input").first
    field.click()
    field.fill(value)
    page.locator("ul[role=listbox] li", has_text=value).first.click()
    page.wait_for_function("([s, v]) => document.querySelector(s + ' input').value === v", arg=[selector, value])


def test_an_8x_upscale_of_24_megapixels_is_refused_with_the_reason(server, browser, photo):
    app, url, config = server
    page = new_page(browser, url)
    page.get_by_role("tab", name="Upscale").click()
    page.locator("#upscale-photo input[type=file]").set_input_files(str(photo[0]))
    page.wait_for_function("() => document.querySelector('#upscale-photo').innerText.includes('coffee-24mp')")
    choose(page, "#opt-scale", "8")
    before = len(app.board.history)
    page.locator("#upscale-run").click()
    toast = page.locator(".toast-body").first
    toast.wait_for()
    text = " ".join(toast.inner_text().split())
    shot(page, "upscale-4-refused")
    assert "48000x32000" in text and "Scale" in text, text
    assert not list(config.output_dir.glob("*-upscaled-*")), "nothing was written"
    assert [record.outcome for record in list(app.board.history)[before:]] == ["failed"]
    page.close()


def test_cancel_during_the_save_leaves_no_file_and_the_next_job_waits(server, browser, photo, tmp_path):
    app, url, config = server
    page = new_page(browser, url)
    page.get_by_role("tab", name="Upscale").click()
    page.locator("#upscale-photo input[type=file]").set_input_files(str(photo[0]))
    page.wait_for_function("() => document.querySelector('#upscale-photo').innerText.includes('coffee-24mp')")
    choose(page, "#upscale-format", "PNG")  # 12000x8000 as PNG: a save of many seconds
    page.locator("#upscale-run").click()

    small = tmp_path / "small.png"
    Image.fromarray(photo[1][:400, :600]).save(small)
    other = new_page(browser, url)
    other.get_by_role("tab", name="Upscale").click()
    other.locator("#upscale-photo input[type=file]").set_input_files(str(small))
    # the upload is served while the first job computes on every core: slow on a loaded 2-core machine
    other.wait_for_function("() => document.querySelector('#upscale-photo').innerText.includes('small.png')",
                            timeout=240_000)
    other.locator("#upscale-run").click()  # queued behind the first

    try:
        page.wait_for_function("() => /saving PNG/.test(document.body.innerText)", timeout=240_000)
    except Exception:
        shot(page, "editor-failed")
        raise AssertionError(page.locator("body").inner_text()[-2500:]) from None
    shot(page, "upscale-5-saving")
    page.locator("#upscale-cancel").click()
    page.wait_for_function("() => /stopped, nothing was saved/.test(document.querySelector('#upscale-status')"
                           ".innerText)", timeout=120_000)
    shot(page, "upscale-6-cancelled-while-saving")
    other.wait_for_selector("#upscale-result a", timeout=120_000)
    results = [path.name for path in config.output_dir.glob("*-upscaled-*/*") if path.is_file()]
    assert results == [] or all(name.startswith("small-") or "view-" in name for name in results), results
    assert not list(config.output_dir.glob("*-upscaled-*/coffee-24mp-upscaled*"))
    assert not list(config.output_dir.rglob("*.tmp*")), "a temporary file was left"
    cancelled, finished = list(app.board.history)[-2:]
    assert (cancelled.outcome, finished.outcome) == ("cancelled", "ok")
    assert finished.started >= cancelled.ended, "the queued job started before the cancelled one had stopped"
    other.close()
    page.close()
