"""The browser the tests under tests/server/ drive: Debian's Chromium through Playwright (BROWSER.md), with
no request leaving the machine. Screenshots go to test-artifacts/."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from support.app_server import ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE localhost",
]
ARTIFACTS = ROOT / "test-artifacts"
LOCAL = re.compile(r"^(https?://(127\.0\.0\.1|localhost)(:\d+)?/|data:|blob:|about:)")


def require_browser() -> None:
    """Skip the calling test module (at import) without Chromium or Playwright."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)", allow_module_level=True)
    pytest.importorskip("playwright")
    pytest.importorskip("pytest_playwright")


# ------------------------------------------------------------------ the page's panels, read as a visitor sees them


def shot(page, name: str) -> None:
    """A full-page screenshot, test-artifacts/NAME.png."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def rows(page, elem: str) -> int:
    """The data rows of the table ``elem`` (its header row aside)."""
    return int(page.locator(f"{elem} [role=grid]").get_attribute("aria-rowcount")) - 1


def status(page) -> str:
    return page.locator("#status").inner_text()


def wait_status(page, pattern: str, timeout: float = 240) -> str:
    """The status line once it matches ``pattern`` (AssertionError with the last one after ``timeout`` s)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        s = status(page)
        if re.search(pattern, s):
            return s
        time.sleep(0.25)
    raise AssertionError(f"status never matched {pattern!r}: {status(page)}")
