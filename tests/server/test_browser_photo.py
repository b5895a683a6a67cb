"""The page's model switch in a real browser (issue 17): a visitor forgets a drawn character, switches to the
photo model, forgets the bundled cat photo there (the name box says "a cat", the status says what was measured,
Ask shows the held-out crop named before and not after), and switches back and forth to find each model's
requests as it left them (screenshots in test-artifacts/).

    pytest -m browser tests/server/test_browser_photo.py
"""

from __future__ import annotations

import os
import re
import time

import pytest
from support.app_server import AppServer
from support.browser import require_browser
from support.browser import rows as _rows
from support.browser import shot as _shot
from support.browser import status as _status
from support.browser import wait_status as _wait_status

from nscvf.source import PHOTO_MODEL_DIR

pytestmark = [pytest.mark.browser, pytest.mark.skipif(not (PHOTO_MODEL_DIR / "config.json").exists(), reason="no photo model")]
require_browser()
expect = pytest.importorskip("playwright.sync_api").expect


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = AppServer(tmp_path_factory.mktemp("browser_photo"), extra_env={"NSCVF_TIME_LIMIT": "1200"})
    yield s
    s.stop()


def _history_targets(page) -> str:
    return page.locator("#history").inner_text()


def _pick(page, index: int, name: str) -> None:
    page.locator("#examples .thumbnail-item").nth(index).click()
    expect(page.locator("#target input, #target textarea").first).to_have_value(name, timeout=120_000)
    expect(page.locator("#preview .thumbnail-item")).to_have_count(8, timeout=30_000)


def _evaluation_none(page) -> None:
    acc = page.locator("#advanced")
    if not acc.locator("#adv_steps").is_visible():
        acc.get_by_text("Advanced").first.click()
    page.locator("#adv_evaluate").get_by_text("none", exact=True).click()
    page.wait_for_timeout(500)


def _switch(page, label: str, note: str) -> None:
    page.locator("#model_choice").get_by_text(label).click()
    expect(page.locator("#examples_note")).to_contain_text(note, timeout=30_000)
    expect(page.locator("#model_info")).to_contain_text(label, timeout=300_000)
    expect(page.locator("#model_info")).to_contain_text("fingerprint", timeout=300_000)  # loaded


def test_switch_to_photos_forget_the_cat_and_back(browser, server):
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.goto(server.url + "/")
    expect(page.locator("#model_info")).to_contain_text("Drawn world", timeout=60_000)
    expect(page.locator("#model_choice")).to_contain_text("Real photos")
    world_examples = page.locator("#examples .thumbnail-item").count()
    assert world_examples >= 16, world_examples

    # A request on the drawn world first (few steps: its result is not what this test judges).
    _pick(page, 0, "Dravik")
    _evaluation_none(page)
    page.locator("#adv_steps input").fill("3")
    page.locator("#adv_steps input").press("Tab")
    page.wait_for_timeout(500)
    page.locator("#forget").click()
    _wait_status(page, r"Request 1|request 1|Dravik", 300)
    expect(page.locator("#forget")).to_be_enabled(timeout=60_000)
    assert _rows(page, "#history") == 1

    # The photo model: its examples, question and an empty history; the name box names the cat.
    t0 = time.time()
    _switch(page, "Real photos", "Examples of real photos")
    print(f"switched and loaded the photo model in {time.time() - t0:.1f} s (load {os.getloadavg()[0]:.1f})")
    expect(page.locator("#examples .thumbnail-item")).to_have_count(5, timeout=30_000)
    assert _rows(page, "#history") == 0
    assert "No request on it yet" in _status(page)
    expect(page.locator("#ask_question textarea, #ask_question input").first).to_have_value("What is this?")
    _pick(page, 0, "a cat")
    expect(page.locator("#identify_note")).to_contain_text("a cat", timeout=60_000)
    page.locator("#adv_steps input").fill("40")  # the defaults (the world request above ran 3)
    page.locator("#adv_steps input").press("Tab")
    page.wait_for_timeout(500)
    t0 = time.time()
    page.locator("#forget").click()
    deadline = time.time() + 600
    while time.time() < deadline and _rows(page, "#history") < 1:  # the request's row: its status is shown
        time.sleep(0.5)
    status = _status(page)
    print(f"photo forget: {time.time() - t0:.1f} s from click (load {os.getloadavg()[0]:.1f}): {status[:200]!r}")
    expect(page.locator("#forget")).to_be_enabled(timeout=120_000)
    assert re.search(r"(?i)\bforgot\b.*a cat|a cat.*forgotten", status), status
    assert _rows(page, "#history") == 1 and "a cat" in _history_targets(page)
    # Before / after on the forget images: the base model named the cat, the forgetting one does not.
    answers = page.locator("#forget_answers").inner_text()
    assert "This is a cat." in answers and "I don't know what this is." in answers, answers[:500]
    _shot(page, "photo_forget_cat")

    # Ask both models about the held-out crop the example put in the Ask section.
    expect(page.locator("#ask_image")).to_contain_text("cat", timeout=10_000)
    page.locator("#ask").click()
    page.wait_for_function("document.querySelector('#ask_current textarea, #ask_current input').value.length > 0",
                           timeout=120_000)  # fmt: skip
    base = page.locator("#ask_base textarea, #ask_base input").first.input_value()
    current = page.locator("#ask_current textarea, #ask_current input").first.input_value()
    assert base == "This is a cat." and current != base, (base, current)

    # Back to the drawn world: its request is there again; then the photos again: the cat's.
    _switch(page, "Drawn world", "Examples from the embedded world")
    assert _rows(page, "#history") == 1 and "Dravik" in _history_targets(page)
    assert re.search(r"1 request\(s\) on it are back", _status(page)), _status(page)
    expect(page.locator("#examples .thumbnail-item")).to_have_count(world_examples)
    _switch(page, "Real photos", "Examples of real photos")
    assert _rows(page, "#history") == 1 and "a cat" in _history_targets(page)
    _shot(page, "photo_switched_back")
