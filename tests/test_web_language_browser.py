"""The Chinese page in a real browser (Debian's chromium, headless, driven by Playwright): the language chosen with
the page's cookie holds across reloads in a browser whose own language is English, and a run with progress, a
warning and an error shows no English beyond names (models, formats, files) and units.

The page records, every 50 ms, the texts of the upscale tab's result area (where Gradio shows the progress), its
status line and every toast; after the runs the test reads them all. Screenshots under test-artifacts/web/.
Skips with a reason where chromium or Playwright is missing.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gradio")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

from PIL import Image

from conftest import serve_app
from tessera.web.app import WebConfig
from tessera.web.i18n import COOKIE
from tessera.web.retention import prepare_output_dir
from test_web_language import english_left

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # one chromium and one server for the module

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "web"
TIMEOUT = 60_000  # ms

# Collects what the page shows: the upscale tab's result area and status, and the toasts (title and text).
RECORDER = """
window.__seen = new Set();
setInterval(() => {
  for (const node of document.querySelectorAll(
      "#upscale-result, #upscale-status, .toast-body, [data-testid='toast-body'], .toast-wrap")) {
    const text = (node.innerText || "").trim();
    if (text) { window.__seen.add(text); }
  }
}, 50);
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("web-language")
    config = WebConfig(output_dir=prepare_output_dir(tmp / "results"), preview_side=320, editor_height=320)
    blocks, app, url = serve_app(config)
    yield app, url
    blocks.close()


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium); .ci/run installs it")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def animated(tmp_path_factory) -> Path:
    """A two-frame GIF of noise: reading it warns that only the first frame is read (FirstFrameWarning)."""
    rng = np.random.default_rng(0)
    frames = [Image.fromarray((rng.random((300, 360, 3)) * 255).astype(np.uint8)) for _ in range(2)]
    path = tmp_path_factory.mktemp("language-files") / "moving.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    return path


def chinese_page(browser, url: str):
    """A page in a browser whose own language is English, with the page's cookie set to Chinese."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1400, "height": 1100}, locale="en-US")
    context.add_cookies([{"name": COOKIE, "value": "zh-CN", "url": url}])
    context.add_init_script(RECORDER)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    page.goto(url)
    page.wait_for_selector("#tab-upscale-button")
    return page


def assert_chinese_tabs(page) -> None:
    for text in ("消除修复", "人脸增强", "放大", "高级设置"):
        assert page.get_by_text(text, exact=True).first.is_visible(), text
    assert page.get_by_role("tab", name="Inpaint", exact=True).count() == 0
    assert page.evaluate("navigator.language") == "zh-CN"


def wait_for_text(page, selector: str, pattern: str) -> None:
    page.wait_for_function(
        "([selector, pattern]) => { const node = document.querySelector(selector);"
        " return node !== null && new RegExp(pattern).test(node.innerText); }",
        arg=[selector, pattern], polling=100)


def seen(page) -> list[str]:
    """What the page showed; a file name that Gradio's file box breaks before its extension joined again."""
    return sorted(re.sub(r"\n(\.\w+)\b", r"\1", text) for text in page.evaluate("Array.from(window.__seen)"))


def test_the_chosen_language_holds_across_reloads_and_the_switch_changes_it(server, browser):
    _app, url = server
    page = chinese_page(browser, url)
    assert_chinese_tabs(page)
    page.reload()
    page.wait_for_selector("#tab-upscale-button")
    assert_chinese_tabs(page)
    for tab in ("消除修复", "人脸增强", "放大"):  # every tab's words (and Gradio's) in Chinese
        page.get_by_role("tab", name=tab).click()
        page.wait_for_timeout(300)
        body = re.sub(r"\n(\.\w+)\b", r"\1", page.inner_text("body"))
        assert not english_left(body), (tab, sorted(set(english_left(body))))
    page.screenshot(path=str(ARTIFACTS / "zh-CN-reloaded.png"), full_page=True)
    switch = page.locator("#language-switch")
    if switch.count():  # the header's switch (tessera.web.language), where the page has it
        switch.get_by_role("button", name="English").click()
        page.wait_for_function("() => navigator.language === 'en-US'")
        page.wait_for_selector("#tab-upscale-button")
        assert page.get_by_text("Advanced settings", exact=True).first.is_visible()
        assert any(cookie["value"] == "en" for cookie in page.context.cookies() if cookie["name"] == COOKIE)
        page.locator("#language-switch").get_by_role("button", name="中文").click()
        page.wait_for_function("() => navigator.language === 'zh-CN'")
        page.wait_for_selector("#tab-upscale-button")
        assert_chinese_tabs(page)
        pressed = page.locator("#language-switch button[aria-pressed=true]")
        pressed.wait_for()
        assert pressed.inner_text() == "中文"
    page.context.close()


def test_a_chinese_run_with_progress_a_warning_and_an_error_shows_no_english(server, browser, animated):
    app, url = server
    page = chinese_page(browser, url)
    page.get_by_role("tab", name="放大").click()
    page.locator("#upscale-photo input[type=file]").set_input_files(str(animated))
    wait_for_text(page, "#upscale-photo", animated.name)
    page.locator("#advanced").get_by_text("高级设置").click()
    tile = page.locator("#opt-tile textarea, #opt-tile input").first
    tile.fill("8")  # some 1700 tiles: a job long enough to show its progress
    tile.press("Tab")
    page.wait_for_function("() => document.querySelector('#opt-tile textarea, #opt-tile input')?.value === '8'")

    page.locator("#upscale-run").click()
    wait_for_text(page, "#upscale-status", "✓")
    shot_texts = seen(page)
    page.screenshot(path=str(ARTIFACTS / "zh-CN-upscale-warning.png"), full_page=True)

    # A job that fails: a scale over the web UI's limit.
    scale = page.locator("#opt-scale input").first
    scale.fill("9")
    scale.press("Enter")
    page.locator("#upscale-run").click()
    page.wait_for_function("() => Array.from(window.__seen).some((text) => text.includes('放大倍数'))")
    page.screenshot(path=str(ARTIFACTS / "zh-CN-upscale-error.png"), full_page=True)
    texts = seen(page)
    body = re.sub(r"\n(\.\w+)\b", r"\1", page.inner_text("body"))
    body += "\n" + "\n".join(page.evaluate(  # what the fields show (a menu's chosen label is an input's value)
        "Array.from(document.querySelectorAll('input')).filter((e) => e.type !== 'file').map((e) => e.value)"))
    page.context.close()

    assert any("只读取第一帧" in text for text in texts), texts             # the warning reached the page
    assert any(re.search(r"分块 \d+/\d+", text) for text in shot_texts), texts  # the progress, in Chinese
    assert any("不超过 8" in text for text in texts), texts                 # the error, in Chinese
    assert [record.outcome for record in list(app.board.history)[-2:]] == ["ok", "failed"]
    english = {text: english_left(text) for text in texts if english_left(text)}
    assert not english, english
    # the whole page and its fields' values, Gradio's own strings included
    assert not english_left(body), sorted(set(english_left(body)))
