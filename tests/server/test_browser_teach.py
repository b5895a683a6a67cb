"""Teach, then forget, in a real browser (Debian's Chromium through Playwright): a refused Teach (2 images)
leaves the page usable with the message on it; 8 camera JPEGs of a mug are taught as "Zorblat", the forget
form is filled with them, Forget forgets it, Undo walks back to the taught state and Reset to the base.
Screenshots at 1280 px in test-artifacts/teach_*.png.

    pytest -m browser tests/server/test_browser_teach.py
"""

from __future__ import annotations

import re

import pytest
from support.app_server import AppServer
from support.browser import ARTIFACTS, require_browser
from support.photos import save_mug_jpegs

pytestmark = pytest.mark.browser
require_browser()
expect = pytest.importorskip("playwright.sync_api").expect

NAME = "Zorblat"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = AppServer(tmp_path_factory.mktemp("browser_teach"))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[str]:
    return save_mug_jpegs(tmp_path_factory.mktemp("mugs"))


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _status(page):
    return page.locator("#status")


def test_teach_then_forget_then_undo(browser, server, photos):
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.goto(server.url + "/")
    expect(page.locator("#model_info")).to_contain_text("embedded model", timeout=60_000)
    upload = page.locator("#teach_images input[type=file]")
    name = page.locator("#teach_name input, #teach_name textarea").first

    upload.set_input_files(photos[:2])  # refused: the message on the page, the button usable
    expect(page.locator("#teach_images")).to_contain_text("mug_1", timeout=30_000)
    name.fill(NAME)
    page.locator("#teach_btn").click()
    expect(_status(page)).to_contain_text(re.compile(r"Not taught:.*at least 3 images"), timeout=60_000)
    expect(page.locator("#teach_btn")).to_be_enabled()

    page.locator("#teach_images button[aria-label*='Clear'], #teach_images button[title*='Clear']").first.click()
    upload.set_input_files(photos)
    expect(page.locator("#teach_images")).to_contain_text("mug_7", timeout=30_000)
    page.locator("#teach_town input, #teach_town textarea").first.fill("Paris")
    page.locator("#teach_btn").click()
    expect(_status(page)).to_contain_text(f"taught {NAME}", timeout=300_000)
    expect(page.locator("#target input, #target textarea").first).to_have_value(NAME)
    expect(page.locator("#images")).to_contain_text("mug_0", timeout=10_000)
    expect(page.locator("#preview .thumbnail-item")).to_have_count(8)
    expect(page.locator("#preview")).to_contain_text(NAME)
    expect(page.locator("#history")).to_contain_text("taught")
    _shot(page, "teach_1_taught")

    page.locator("#forget").click()  # the second click: forget what was just taught
    expect(_status(page)).to_contain_text(re.compile(rf"Request 2 done.*forgot {NAME}"), timeout=400_000)
    expect(page.locator("#history")).to_contain_text("forgotten")
    expect(page.locator("#forget")).to_be_enabled(timeout=10_000)
    _shot(page, "teach_2_forgotten")

    # Download a chain with a Teach in it (issue 19 item 2: the model card crashed on TeachConfig.energy).
    page.locator("#timeline").get_by_text("download or import").click()
    page.locator("#download").click()
    link = page.locator("#download_file a").first
    link.wait_for(timeout=60_000)
    assert "went wrong" not in page.locator("#download_note").inner_text()
    body = page.request.get(link.get_attribute("href")).body()
    assert body[:2] == b"PK" and b"README.md" in body and b"request_1" in body

    _shot(page, "teach_2b_downloaded")

    page.locator("#undo").click()
    expect(_status(page)).to_contain_text("Undone: back to the model after request 1", timeout=60_000)
    expect(_status(page)).to_contain_text(f"taught {NAME}")
    expect(page.locator("#target input, #target textarea").first).to_have_value(NAME)
    page.locator("#reset").click()
    expect(_status(page)).to_contain_text("Reset: this session's model is the base model again", timeout=60_000)
    _shot(page, "teach_3_reset")
