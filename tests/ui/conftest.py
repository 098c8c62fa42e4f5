"""Browser tests of the web UI: a real ``gristmill up``, Debian's Chromium, Playwright.

The UI is built (``scripts/build-ui``, a no-op when fresh) before the first test;
without Node.js that fails loudly rather than skipping. Chromium is the system one
(``GRISTMILL_TEST_CHROMIUM``, default ``/usr/bin/chromium``; ``scripts/test`` installs
it): never ``playwright install``. Each journey saves screenshots under
``tests/ui/screenshots/`` (gitignored) for review.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from tests.scripts.standalone import TOKEN, Standalone, gristmill, standalone

__all__ = ["gristmill", "standalone"]

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(__file__).parent / "screenshots"
CHROMIUM = os.environ.get("GRISTMILL_TEST_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="session")
def ui_built() -> None:
    """The web UI's build, made (or found fresh) by ``scripts/build-ui``."""
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build-ui")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"scripts/build-ui failed:\n{result.stderr[-4000:]}"


@pytest.fixture(scope="module")
def browser(ui_built: None, standalone: Standalone) -> Iterator[Browser]:
    """Chromium for one module, started after (and closed before) its ``gristmill up``:
    Playwright's sync API holds the thread's event loop while it runs, so the async
    fixtures must not set up or tear down meanwhile."""
    assert Path(CHROMIUM).exists(), (
        f"Chromium not found at {CHROMIUM}: run scripts/test (installs it as root) "
        "or `apt-get install chromium`"
    )
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            yield chromium
        finally:
            chromium.close()


def _context(browser: Browser, standalone: Standalone, *, signed_in: bool) -> BrowserContext:
    context = browser.new_context(
        base_url=standalone.base_url, viewport={"width": 1440, "height": 1000}
    )
    context.set_default_timeout(20_000)
    if signed_in:
        context.add_init_script(
            f"localStorage.setItem('gristmill.token', {TOKEN!r});"
            "localStorage.setItem('gristmill.workspace', 'main');"
        )
    return context


@pytest.fixture
def anonymous_page(browser: Browser, standalone: Standalone) -> Iterator[Page]:
    """A page with nothing in localStorage (the sign-in journey)."""
    context = _context(browser, standalone, signed_in=False)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def page(browser: Browser, standalone: Standalone) -> Iterator[Page]:
    """A page signed in with the admin token."""
    context = _context(browser, standalone, signed_in=True)
    try:
        yield context.new_page()
    finally:
        context.close()


class Shots:
    """Numbered screenshots of one test's journey."""

    def __init__(self, name: str) -> None:
        self.prefix = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
        self.count = 0
        SCREENSHOTS.mkdir(exist_ok=True)
        for old in SCREENSHOTS.glob(f"{self.prefix}-*.png"):  # an earlier run's
            old.unlink()

    def __call__(self, page: Page, step: str) -> None:
        self.count += 1
        page.screenshot(
            path=SCREENSHOTS / f"{self.prefix}-{self.count:02d}-{step}.png", full_page=True
        )


@pytest.fixture
def shot(request: pytest.FixtureRequest) -> Shots:
    return Shots(request.node.name)
