"""What the browser tests share: Debian's chromium launched headless by Playwright (never a downloaded browser),
a page at a fixed size, waiting for text, screenshots under test-artifacts/web/."""
from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "web"
TIMEOUT = 60_000  # ms


@contextlib.contextmanager
def launch_chromium() -> Iterator[Any]:
    """A headless chromium for a test module; skips with the reason where chromium or Playwright is missing."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium); .ci/run installs it")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser: Any, url: str, locale: str = "en-US", wait_for: str = "#inpaint-photo") -> Any:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1100}, locale=locale, accept_downloads=True)
    page.set_default_timeout(TIMEOUT)
    page.goto(url)
    page.wait_for_selector(wait_for)
    return page


def wait_for_text(page: Any, selector: str, pattern: str, timeout: float | None = None) -> None:
    """Wait until the text of ``selector`` (which may not be rendered yet) matches the regular expression."""
    page.wait_for_function(
        "([selector, pattern]) => { const node = document.querySelector(selector);"
        " return node !== null && new RegExp(pattern).test(node.innerText); }",
        arg=[selector, pattern], polling=100, timeout=timeout)


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
