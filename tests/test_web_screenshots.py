"""Screenshots of each tab after real work, in English and in Chinese, for the README (`make screenshots`).

Each tab runs its job in the real browser first (Inpaint: a 3000x2000 photo painted and inpainted, the viewer
comparing; Faces: the astronaut's face enhanced; Upscale: a x2 result compared), so the pictures show the page
as a user sees it. They are written to test-artifacts/web/screens/; `make screenshots` copies them to
docs/screenshots/.
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("gradio")
pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

from PIL import Image

from browser_helpers import ARTIFACTS, launch_chromium, new_page
from conftest import serve_app
from tessera.web.app import WebConfig
from tessera.web.retention import prepare_output_dir

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SCREENS = ARTIFACTS / "screens"
LANGUAGES = {"en": ("en-US", {"inpaint": "Inpaint", "faces": "Faces", "upscale": "Upscale"}),
             "zh": ("zh-CN", {"inpaint": "消除修复", "faces": "人脸增强", "upscale": "放大"})}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    config = WebConfig(output_dir=prepare_output_dir(tmp_path_factory.mktemp("web-screens") / "results"),
                       editor_height=460)
    blocks, app, url = serve_app(config)
    yield url
    blocks.close()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    import cv2
    from skimage import data

    folder = tmp_path_factory.mktemp("screen-photos")
    coffee = cv2.resize(data.coffee(), (3000, 2000), interpolation=cv2.INTER_CUBIC)
    Image.fromarray(coffee).save(folder / "coffee.jpg", quality=92)
    Image.fromarray(np.ascontiguousarray(data.astronaut()[:400, :480])).save(folder / "astronaut.png")
    Image.fromarray(data.chelsea()).save(folder / "chelsea.png")
    return folder


def wait_viewer_compare(page, viewer: str) -> None:
    shown = f"window.tesseraViewers['{viewer}']"
    page.wait_for_function(f"() => {shown} && {shown}.view().compare && {shown}.view().tilesLoaded >= 2",
                           timeout=240_000)
    page.wait_for_timeout(800)  # the last tiles land


@pytest.mark.parametrize("language", list(LANGUAGES))
def test_screenshots_of_each_tab_after_a_job(server, photos, language):
    locale, tabs = LANGUAGES[language]
    SCREENS.mkdir(parents=True, exist_ok=True)
    with launch_chromium() as browser:
        page = new_page(browser, server, locale=locale)
        if language == "zh":  # the page's own switch: the choice is kept in a cookie
            page.context.add_cookies([{"name": "tessera_lang", "value": "zh-CN", "url": server}])
            page.reload()
            page.wait_for_selector("#inpaint-photo")

        page.locator("#inpaint-photo input[type=file]").set_input_files(str(photos / "coffee.jpg"))
        viewer = "window.tesseraViewers['inpaint-viewer']"
        page.wait_for_function(f"() => {viewer} && {viewer}.view().photo && {viewer}.view().tilesLoaded > 0")
        page.evaluate(f"{viewer}.setSize(70)")
        points = [page.evaluate(f"([x, y]) => {viewer}.toClient(x, y)", point)
                  for point in ([1900, 700], [2250, 800], [2350, 1000])]
        page.mouse.move(points[0]["x"], points[0]["y"])
        page.mouse.down()
        for point in points[1:]:
            page.mouse.move(point["x"], point["y"], steps=8)
        page.mouse.up()
        page.locator("#inpaint-run").click()
        wait_viewer_compare(page, "inpaint-viewer")
        page.screenshot(path=str(SCREENS / f"{language}-inpaint.png"), full_page=True)

        page.get_by_role("tab", name=tabs["faces"]).click()
        page.locator("#faces-photo input[type=file]").set_input_files(str(photos / "astronaut.png"))
        page.wait_for_selector("#faces-detected img")
        page.locator("#faces-run").click()
        wait_viewer_compare(page, "faces-compare")
        page.screenshot(path=str(SCREENS / f"{language}-faces.png"), full_page=True)

        page.get_by_role("tab", name=tabs["upscale"]).click()
        page.locator("#upscale-photo input[type=file]").set_input_files(str(photos / "chelsea.png"))
        page.wait_for_function("() => document.querySelector('#upscale-photo').innerText.includes('chelsea')")
        page.locator("#upscale-run").click()
        wait_viewer_compare(page, "upscale-compare")
        page.screenshot(path=str(SCREENS / f"{language}-upscale.png"), full_page=True)
        page.close()
    for tab in ("inpaint", "faces", "upscale"):
        assert (SCREENS / f"{language}-{tab}.png").stat().st_size > 20_000
