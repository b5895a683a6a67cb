"""The app in a real browser (Debian's Chromium through Playwright; docs: BROWSER.md): pick an example,
run, see progress, see before/after answers and both plots with points, and no request leaves the
machine. Screenshots go to test-artifacts/.

    pytest -m browser tests/server/test_browser.py

Needs /usr/bin/chromium (`apt-get install -y chromium`) and `pip install playwright==1.65.2 pytest-playwright`.
"""

from __future__ import annotations

import json
import os
import re
import time

import pytest
from support.app_server import AppServer
from support.browser import ARTIFACTS, LOCAL, require_browser

pytestmark = pytest.mark.browser
# Steps of the browser run: the default (UnlearnConfig's, with early stopping) unless overridden.
STEPS = os.environ.get("NSCVF_BROWSER_STEPS")
# Other Advanced settings to type in, e.g. NSCVF_BROWSER_SETTINGS='{"energy": 0.01}' (default: the app's)
SETTINGS = json.loads(os.environ.get("NSCVF_BROWSER_SETTINGS") or "{}")
EVALUATION = os.environ.get("NSCVF_BROWSER_EVAL")  # quick (default), none or full
JOB_TIMEOUT_MS = int(os.environ.get("NSCVF_BROWSER_JOB_TIMEOUT", "300")) * 1000

require_browser()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = AppServer(tmp_path_factory.mktemp("browser_app"))
    yield s
    s.stop()


def _rows(page, elem: str) -> int:
    """Data rows of a gr.Dataframe (a virtual table: count from its aria-rowcount, header excluded)."""
    return int(page.locator(f"{elem} [role=grid]").get_attribute("aria-rowcount")) - 1


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_example_forget_progress_answers_plots_offline(page, server):
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(server.url + "/")

    # 1. One click on an example character fills the upload with its renders and the name box.
    page.locator("#examples .thumbnail-item").first.click()
    page.locator("#preview .thumbnail-item").nth(7).wait_for(timeout=60_000)
    assert page.locator("#preview .thumbnail-item").count() == 8
    assert page.locator("#images").get_by_text(re.compile(r"mirel_0\d")).count() >= 8
    assert page.locator("#target input, #target textarea").first.input_value() == "Mirel"
    if STEPS or EVALUATION or SETTINGS:
        page.locator("#advanced").get_by_text("Advanced").click()
    for field, value in [("steps", STEPS)] * bool(STEPS) + list(SETTINGS.items()):
        box = page.locator(f"#adv_{field} input")
        box.fill(str(value))
        box.press("Tab")
    if EVALUATION:
        page.locator("#adv_evaluate").get_by_text(EVALUATION, exact=True).click()
    _shot(page, "browser_1_example_picked")

    # 2. Forget: the progress bar names the stage and moves.
    t0 = time.time()
    page.locator("#forget").click()
    progress = page.locator("#status .progress-text, #status .progress-level-inner, #status .meta-text")
    progress.first.wait_for(timeout=60_000)
    stages = set()
    deadline = time.time() + JOB_TIMEOUT_MS / 1000
    shot_taken = False
    while time.time() < deadline:
        txt = " ".join(progress.all_inner_texts()) if progress.count() else ""
        stages |= set(
            re.findall(
                r"(reading images|base answers|evaluating \(before\)|null space|step \d+/\d+|evaluating|"
                r"retained characters|drawing plots|waiting for the model to load|preparing)",
                txt,
            )
        )
        if not shot_taken and re.search(r"step \d+/\d+|null space", txt):
            _shot(page, "browser_2_progress")
            shot_taken = True
        if "done" in page.locator("#status").inner_text() or "restored" in page.locator("#status").inner_text():
            break
        time.sleep(0.25)
    status = page.locator("#status").inner_text()
    assert re.search(r"Request 1 (done|restored)", status), status
    if STEPS and "done" in status:
        assert f"of {STEPS} steps" in status, status
    job_s = time.time() - t0
    assert stages, "no progress stage was shown"
    assert any(s.startswith("step ") for s in stages) or "restored" in status, stages

    # 3. Before/after answers for every forget image, retained characters and text-only questions.
    assert _rows(page, "#forget_answers") >= 8
    assert _rows(page, "#retain_answers") >= 2
    assert "Text-only answers are identical" in page.locator("#text_note").inner_text()
    assert _rows(page, "#numbers") >= 4
    assert page.locator("#forget_answers").get_by_text("Who is this?").count() >= 1

    # 4. Both plots drawn, with points.
    for pid in ("#plot_before", "#plot_after"):
        page.locator(f"{pid} .js-plotly-plot").wait_for(timeout=10_000)
        assert page.locator(f"{pid} .scatterlayer .point").count() > 20, pid
    plots_s = time.time() - t0 - job_s
    page.locator("#plot_after").scroll_into_view_if_needed()
    _shot(page, "browser_3_result")

    # 5. Ask both models about the held-out render the example put in the Ask box.
    page.locator("#ask").click()
    page.wait_for_function("document.querySelector('#ask_base textarea, #ask_base input').value.length > 0", timeout=60_000)
    _shot(page, "browser_4_ask")

    # Nothing was fetched off the machine (fonts, scripts, analytics).
    off = sorted({u for u in requests if not LOCAL.match(u)})
    assert not off, off
    print(f"stages seen: {sorted(stages)}; job {job_s:.1f} s; plots after job {plots_s:.1f} s")

    # Closing the tab frees the session's chain (demo.unload).
    page.close()
    deadline = time.time() + 30
    while time.time() < deadline and "freed" not in server.log():
        time.sleep(0.5)
    assert re.search(r"session \w+ freed", server.log()), server.log()[-1500:]
