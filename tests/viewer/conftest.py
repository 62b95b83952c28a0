"""Viewer fixtures: the small output folder of viewer_folder.py and a real headless Chromium
driven by Playwright.

Chromium is Debian's package at /usr/bin/chromium (CI installs it, .ci/run); Playwright's own
browser download is never used. Without it the browser tests skip here and fail in CI.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from viewer_folder import make_output_dir

CHROMIUM = os.environ.get("SV3D_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]  # WebGL on the CPU


@pytest.fixture(scope="session")
def output_dir(tmp_path_factory) -> Path:
    return make_output_dir(tmp_path_factory.mktemp("viewer") / "mug", np.random.default_rng())


def _chromium_missing() -> str | None:
    if not Path(CHROMIUM).is_file():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set SV3D_CHROMIUM)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (it is in the test extra)"
    return None


@pytest.fixture(scope="session")
def playwright_driver():
    missing = _chromium_missing()
    if missing:
        if os.environ.get("CI", "").lower() in ("1", "true"):
            pytest.fail(f"browser tests cannot run in CI: {missing}")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="session")
def browser(playwright_driver):
    chromium = playwright_driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
    yield chromium
    chromium.close()


@pytest.fixture
def browser_without_webgl(playwright_driver):
    """A Chromium with WebGL switched off: the page must still show the orbit."""
    chromium = playwright_driver.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                 args=CHROMIUM_ARGS + ["--disable-webgl", "--disable-3d-apis"])
    yield chromium
    chromium.close()


class OpenedPage:
    """A page opened from file:// with every console error and uncaught exception recorded."""

    def __init__(self, browser, path: Path, size=(1400, 1600)):
        self.errors: list[str] = []
        self.requests: list[str] = []  # every URL the page asked for (files beside it, blob:/data: of the GLB)
        self.page = browser.new_page(viewport={"width": size[0], "height": size[1]})
        self.page.on("console", lambda m: self.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("requestfailed", lambda r: self.errors.append(f"request failed: {r.url} {r.failure}"))
        self.page.goto(path.resolve().as_uri())
        self.page.wait_for_load_state("load")

    def close(self):
        self.page.close()


@pytest.fixture
def open_page(browser):
    pages = []

    def opener(path: Path, on=None, **kwargs) -> OpenedPage:
        """Open `path` in the session's browser, or in `on` (another launched browser)."""
        pages.append(OpenedPage(on or browser, path, **kwargs))
        return pages[-1]

    yield opener
    for p in pages:
        p.close()


@pytest.fixture
def copy_of(tmp_path):
    """A private copy of a fixture folder, for tests that change it."""

    def copier(folder: Path) -> Path:
        dest = tmp_path / folder.name
        shutil.copytree(folder, dest)
        return dest

    return copier
