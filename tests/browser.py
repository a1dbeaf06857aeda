"""A real browser for the tests of pages we serve: Debian's ``chromium``, driven by Playwright
(a browser-automation library we did not write), WebGL drawn in software (SwiftShader). Without
chromium or Playwright the tests that need it skip, unless HANDSSCA_REQUIRE_BROWSER=1 (as in CI,
whose .ci/run installs chromium) makes that a failure."""

from __future__ import annotations

import contextlib
import os
import shutil
import time

import numpy as np
import pytest

# Software WebGL: no GPU in CI; SwiftShader is what chromium falls back to, asked for by name.
CHROMIUM_ARGS = ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]


def _unavailable(why: str):
    if os.environ.get("HANDSSCA_REQUIRE_BROWSER") == "1":
        pytest.fail(f"a browser is required (HANDSSCA_REQUIRE_BROWSER=1): {why}")
    pytest.skip(why)


@contextlib.contextmanager
def browser_page(width: int = 800, height: int = 600):
    """A headless chromium page of ``width`` x ``height`` CSS pixels (Playwright's sync API)."""
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        _unavailable("no chromium here (Debian: apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


def screenshot(page) -> np.ndarray:
    """The page as an (H, W, 3) RGB array."""
    import cv2

    png = np.frombuffer(page.screenshot(), np.uint8)
    return cv2.imdecode(png, cv2.IMREAD_COLOR)[:, :, ::-1].copy()


def wait_for(condition, timeout_s: float = 45.0, every_s: float = 0.5):
    """Polls ``condition()`` until it returns something other than None or False (returned) or
    ``timeout_s`` passes (None)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value is not None and value is not False:
            return value
        time.sleep(every_s)
    return None
