"""Undo right after the answers, in a real browser (issue 19 item 3): the accuracies are still being
computed (quick evaluation, 10-17 s on 2 cores), and Undo is not refused: it stops them and the page shows
the base model again, with no error.

    pytest -m browser tests/server/test_browser_undo.py -s
"""

from __future__ import annotations

import re
import time

import pytest
from support.app_server import AppServer
from support.browser import ARTIFACTS, require_browser

pytestmark = pytest.mark.browser
require_browser()
expect = pytest.importorskip("playwright.sync_api").expect


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = AppServer(tmp_path_factory.mktemp("browser_undo"), timeout=180)  # a loaded machine starts slowly
    yield s
    s.stop()


def test_undo_right_after_the_answers(page, server):
    page.goto(server.url + "/")
    expect(page.locator("#model_info")).to_contain_text("embedded model", timeout=60_000)
    page.locator("#examples .thumbnail-item").nth(0).click()
    expect(page.locator("#preview .thumbnail-item")).to_have_count(8, timeout=30_000)
    page.locator("#forget").click()  # the defaults: the quick evaluation follows the answers
    expect(page.locator("#status")).to_contain_text(re.compile(r"Request 1 (done|restored)"), timeout=240_000)
    evaluating = "evaluating" in page.locator("#numbers").inner_text()  # the accuracies were still coming
    t0 = time.time()  # (read before the click: Undo clears the panel at once)
    page.locator("#undo").click()
    expect(page.locator("#status")).to_contain_text("Undone: this session's model is the base model again",
                                                    timeout=60_000)  # fmt: skip
    undone = time.time() - t0
    page.wait_for_timeout(1500)  # whatever the stopped evaluation sends comes now
    text = page.locator("#status").inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "undo_right_after_answers.png"), full_page=True)
    assert "already running" not in page.content() and "Error" not in text, text
    assert "Undone" in text and evaluating
    print(f"Undo right after the answers: undone in {undone:.1f} s")
    assert undone < 15, undone
