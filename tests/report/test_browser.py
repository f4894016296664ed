"""The report page in a real headless Chromium: it loads from disk alone and every image renders.

Uses the Debian ``chromium`` package (``apt-get install chromium``; ``.ci/run`` installs it), not
a browser downloaded by Playwright. Every request that is not for a local file is aborted and
recorded, so the test fails if the page tries to reach the network. The screenshot it checks
is kept under pytest's temporary folder; its path is printed and recorded as the test
property ``screenshot``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib.image
import pytest
from playwright.sync_api import sync_playwright

from deepmouse.report.plots import FIGURES, write_report
from tests.report.conftest import build_zoo_store

# The Debian package's browser binary; /usr/bin/chromium is a shell wrapper around it.
DEBIAN_CHROMIUM = Path("/usr/lib/chromium/chromium")
CHROMIUM = str(DEBIAN_CHROMIUM) if DEBIAN_CHROMIUM.is_file() else shutil.which("chromium")
VIEWPORT = {"width": 1280, "height": 900}

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium binary (/usr/lib/chromium/chromium or `chromium` on PATH); "
                             "install it with `apt-get install chromium`")


def open_in_chromium(page_path: Path, screenshot_path: Path) -> dict:
    """Load ``page_path`` from disk with the network blocked, take a full-page screenshot.

    Returns
    -------
    dict
        ``blocked`` (URLs of every non-file request, all aborted), ``console_errors``,
        ``page_errors``, ``images`` (``[naturalWidth, naturalHeight]`` of each ``<img>``),
        ``title`` and ``banner`` (the text of the simulated-data banner, or None).
    """
    blocked: list[str] = []
    console_errors: list[str] = []
    page_errors: list[str] = []

    def on_console(message):
        if message.type == "error":
            console_errors.append(message.text)

    def route(route, request):
        if request.url.startswith("file://"):
            route.continue_()
        else:
            blocked.append(request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            # bypass_csp: the route, not the page's own policy, decides what loads, so an
            # attempted request is always seen here.
            context = browser.new_context(viewport=VIEWPORT, bypass_csp=True)
            context.route("**/*", route)
            page = context.new_page()
            page.on("console", on_console)
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            page.goto(page_path.resolve().as_uri(), wait_until="load")
            images = page.eval_on_selector_all("img", "imgs => imgs.map(i => [i.naturalWidth, i.naturalHeight])")
            banner = page.locator(".simulated")
            banner_text = banner.inner_text() if banner.count() and banner.is_visible() else None
            title = page.title()
            page.screenshot(path=str(screenshot_path), full_page=True)
        finally:
            browser.close()
    return {"blocked": blocked, "console_errors": console_errors, "page_errors": page_errors,
            "images": images, "title": title, "banner": banner_text}


def test_report_renders_offline_in_chromium(tmp_path, record_property):
    db = build_zoo_store(tmp_path / "store.duckdb")
    write_report(db, tmp_path / "reports")
    screenshot = tmp_path / "report-screenshot.png"
    seen = open_in_chromium(tmp_path / "reports/index.html", screenshot)
    print(f"report screenshot: {screenshot}")
    record_property("screenshot", str(screenshot))

    assert seen["blocked"] == []
    assert seen["console_errors"] == [] and seen["page_errors"] == []
    assert len(seen["images"]) == len(FIGURES)  # every figure has data in this store
    assert all(width > 0 and height > 0 for width, height in seen["images"]), seen["images"]
    assert "SIMULATED DATA" in seen["title"] and "SIMULATED DATA" in seen["banner"]

    pixels = matplotlib.image.imread(screenshot)[..., :3]
    height, width = pixels.shape[:2]
    assert width == VIEWPORT["width"] and height > 3 * VIEWPORT["height"]  # the whole page, figures below
    assert pixels.std() > 0.1  # not blank
    assert (pixels < 0.9).any(axis=-1).mean() > 0.02  # ink on a good part of the page
    assert ((pixels[..., 0] > 0.55) & (pixels[..., 1] < 0.15) & (pixels[..., 2] < 0.25)).any()  # the red banner


def test_a_request_off_disk_is_caught(tmp_path):
    """The network block is not vacuous: a page that asks for a remote image is caught."""
    page = tmp_path / "page.html"
    page.write_text('<!DOCTYPE html><html><body><img src="https://example.invalid/x.png"></body></html>')
    seen = open_in_chromium(page, tmp_path / "screenshot.png")
    assert seen["blocked"] == ["https://example.invalid/x.png"]
    assert seen["images"] == [[0, 0]]
