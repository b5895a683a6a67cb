"""The app in a real browser (Debian's Chromium through Playwright; BROWSER.md): never stuck after a failed
Forget, another visitor's Ask and Forget never wait behind a long training (a third visitor's Forget waits its
turn and is told when), every panel shows the current state after Undo and Reset, Compare fits the page, and
the page at 1280 px and 390 px (screenshots in test-artifacts/).

    pytest -m browser tests/server/test_browser_state.py
"""

from __future__ import annotations

import os
import re
import time

import pytest
from support.app_server import EXAMPLES, AppServer
from support.browser import ARTIFACTS, require_browser
from support.browser import rows as _rows
from support.browser import shot as _shot
from support.browser import status as _status
from support.browser import wait_status as _wait_status

pytestmark = pytest.mark.browser
require_browser()
expect = pytest.importorskip("playwright.sync_api").expect


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # A generous time limit: the 400-step request of the two-visitor test must not be refused by the app's
    # time estimate, which earlier tests' measured seconds per step raise on a slow or busy machine.
    s = AppServer(tmp_path_factory.mktemp("browser_state"), extra_env={"NSCVF_TIME_LIMIT": "3600"})
    yield s
    s.stop()


def _open(page, server) -> None:
    page.goto(server.url + "/")
    expect(page.locator("#model_info")).to_contain_text("embedded model", timeout=60_000)


def _example_names() -> list[str]:
    from webapp.state.settings import example_characters

    return [c.name for c in example_characters(EXAMPLES)]


def _pick(page, index: int, name: str | None = None) -> None:
    name = name or _example_names()[index]
    page.locator("#examples .thumbnail-item").nth(index).click()
    expect(page.locator("#target input, #target textarea").first).to_have_value(name, timeout=30_000)
    expect(page.locator("#preview .thumbnail-item")).to_have_count(8, timeout=30_000)


def _advanced(page, **values) -> None:
    acc = page.locator("#advanced")
    if not acc.locator("#adv_steps").is_visible():
        acc.get_by_text("Advanced").first.click()
    for field, value in values.items():
        if field == "evaluation":
            page.locator("#adv_evaluate").get_by_text(value, exact=True).click()
            continue
        box = page.locator(f"#adv_{field} input")
        # On a loaded machine the accordion's first render can put the default back after a fill (seen in
        # the full suite: 4 typed, 40 shown, and a request that ran "10 of 40 steps"): type until it sticks.
        for _ in range(20):
            box.fill(str(value))
            box.press("Tab")
            page.wait_for_timeout(250)
            if box.input_value() == str(value):
                break
        expect(box).to_have_value(str(value))
    page.wait_for_timeout(1000)  # let the last change event reach the app before the caller clicks Forget


def _failed_forget(page, pattern: str) -> None:
    page.locator("#forget").click()
    expect(page.locator("#status")).to_contain_text(re.compile("Not done:.*" + pattern), timeout=60_000)
    expect(page.locator("#forget")).to_be_enabled(timeout=10_000)
    time.sleep(11)  # the error toast has faded: the message is still there, the button still usable
    assert re.search(pattern, _status(page)) and page.locator("#forget").is_enabled()


def test_forget_usable_again_after_each_failure(page, server, tmp_path):
    _open(page, server)
    _failed_forget(page, r"no images: upload")
    bad = tmp_path / "corrupt.png"
    bad.write_text("not an image at all")
    page.locator("#images input[type=file]").set_input_files(str(bad))
    expect(page.locator("#images")).to_contain_text(re.compile(r"corrupt\s*\.png"), timeout=30_000)
    _failed_forget(page, r"corrupt\.png")
    page.locator("#images button[aria-label*='Clear'], #images button[title*='Clear']").first.click()
    _pick(page, 0)
    _advanced(page, lr=0.1)
    _failed_forget(page, r"lr=0\.1 is out of range; use 1e-05 to 0\.01")
    _shot(page, "state_1_after_failures")


PROGRESS = "#status .progress-text, #status .meta-text, #status .progress-level-inner"
STARTED = ("base answers", "null space", "step ", "evaluating", "restoring", "retained", "drawing")  # support.visitors
ETA = re.compile(r"your turn in about (\d+) s")


def _progress(page) -> str:
    return " ".join(page.locator(PROGRESS).all_inner_texts())


def _two_forgets_beside(a, b, c) -> dict:
    """B's and C's Forget (the defaults, no evaluation), C one second after B, while A's long job trains: when
    each one's training started (its first working stage), the first ETA C was shown, when each was done."""
    t0 = time.time()
    b.locator("#forget").click()
    time.sleep(1.0)
    tc = time.time()
    c.locator("#forget").click()
    seen: dict = {"b_started": None, "c_started": None, "eta": None, "b_done": None, "c_done": None}
    while time.time() - t0 < 300 and not (seen["b_done"] and seen["c_done"]):
        now = time.time()
        pb, pc = _progress(b), _progress(c)
        if seen["b_started"] is None and any(k in pb for k in STARTED):
            seen["b_started"] = round(now - t0, 2)
        if seen["eta"] is None and ETA.search(pc):
            seen["eta"], seen["load_at_eta"] = float(ETA.search(pc).group(1)), round(os.getloadavg()[0], 2)
            _shot(c, "state_1b_visitor_c_waits_its_turn")
        if seen["c_started"] is None and any(k in pc for k in STARTED):
            seen["c_started"], seen["load_at_start"] = round(now - tc, 2), round(os.getloadavg()[0], 2)
        for who, page, since in (("b", b, t0), ("c", c, tc)):
            if seen[f"{who}_done"] is None and re.search(r"Request 1 done", _status(page)):
                seen[f"{who}_done"] = round(now - since, 2)
        time.sleep(0.2)
    seen["a_training"] = bool(re.search(r"step \d+/400", _progress(a)))
    m = re.search(r"done\*?\*? in ([\d.]+) s", _status(c))
    seen["c_reported"] = float(m.group(1)) if m else None
    return seen


def test_other_visitor_asks_while_one_trains(browser, server):
    """While visitor A's long job (400 steps) trains: B's Ask is answered at once; then B's and C's Forget
    (issue 19 item 8): B starts at once (never behind A's long job), C waits at most for B, is told when its turn
    comes (within 2x of the wait it then had), and its status counts from the click, the wait included."""
    a, b, c = (browser.new_context(viewport={"width": 1280, "height": 900}).new_page() for _ in range(3))
    for page in (a, b, c):
        _open(page, server)
    _pick(b, 2)
    _advanced(b, evaluation="none")
    _pick(c, 3)
    _advanced(c, evaluation="none")
    _pick(a, 1)
    _advanced(a, steps=400, lr="0.00001", evaluation="none")  # a tiny learning rate: it trains to the end
    a.locator("#forget").click()
    progress = a.locator("#status .progress-text, #status .meta-text, #status .progress-level-inner")
    deadline = time.time() + 120
    while time.time() < deadline and not re.search(r"step \d+/400", " ".join(progress.all_inner_texts())):
        time.sleep(0.2)
    status = a.locator("#status").inner_text()
    assert re.search(r"step \d+/400", " ".join(progress.all_inner_texts())), f"A never started training: {status!r}"
    b.locator("#ask_question textarea, #ask_question input").first.fill("Where does Mirel live?")
    t0 = time.time()
    b.locator("#ask").click()
    b.wait_for_function("document.querySelector('#ask_base textarea, #ask_base input').value.length > 0", timeout=30_000)
    waited = time.time() - t0
    assert re.search(r"step \d+/400", " ".join(progress.all_inner_texts())), "A's training ended meanwhile"
    print(f"B's Ask answered in {waited:.2f} s while A trained")
    # Beside, not behind: A's 400 steps take minutes and it is still training (checked above); the seconds are
    # the machine's (1.2-1.7 s quiet, 3.9 s once at load ~6), not a speed target.
    assert waited < 20, waited

    got = _two_forgets_beside(a, b, c)
    print(f"B and C beside A's long job: {got} (load {os.getloadavg()[0]:.1f})")
    a.locator("#cancel").click()
    _wait_status(a, r"cancelled", 60)
    expect(a.locator("#forget")).to_be_enabled(timeout=10_000)
    assert got["a_training"], "A's long job ended before B and C were done: nothing was measured"
    assert got["b_done"] and got["c_done"], (got, _status(b), _status(c))
    assert got["b_started"] is not None and got["b_started"] < 10, got  # not behind A's long job
    assert got["c_started"] is not None and got["c_started"] < got["b_done"] + 10, got  # at most behind B
    if got["c_started"] > 5:  # it waited: it was told about when its turn would come
        assert got["eta"] is not None and got["c_started"] / 2 <= got["eta"] <= 2 * got["c_started"], got
    assert got["c_reported"] is not None and got["c_reported"] >= got["c_started"] - 1, (got, _status(c))


def _panels(page) -> dict:
    return {
        "name": page.locator("#target input, #target textarea").first.input_value(),
        "name_note": page.locator("#identify_note").inner_text(),
        "gallery": page.locator("#preview .thumbnail-item").count(),
        "captions": page.locator("#preview").inner_text(),
        "files": page.locator("#images").inner_text(),
        "history": _rows(page, "#history"),
        "forget_rows": _rows(page, "#forget_answers"),
        "plots": page.locator("#plot_before .js-plotly-plot").count(),
        "ask_base": page.locator("#ask_base textarea, #ask_base input").first.input_value(),
    }


# Where the Compare panel's content sticks out of the page or its own box (issue 19 item 9: column B was cut
# off at 1400 px): every cell's and plot's right edge against the panel's, and any element inside the table
# that scrolls sideways (hidden content).
_OVERFLOW_JS = """() => {
  const box = document.querySelector('#compare').getBoundingClientRect();
  const right = Math.min(box.right, document.documentElement.clientWidth);
  const out = [];
  for (const el of document.querySelectorAll('#compare_table th, #compare_table td, #compare_plot_a, #compare_plot_b')) {
    const r = el.getBoundingClientRect();
    if (r.width && r.right > right + 1) out.push(`${el.tagName}#${el.id}: right ${r.right.toFixed(0)} > ${right.toFixed(0)}`);
  }
  for (const el of document.querySelectorAll('#compare_table *')) {
    if (el.scrollWidth > el.clientWidth + 2 && getComputedStyle(el).overflowX !== 'visible')
      out.push(`${el.tagName}.${el.className}: scrolls ${el.scrollWidth} > ${el.clientWidth}`);
  }
  return out;
}"""


def _compare_fits(page) -> None:
    """Compare the last request with GD (its 4 steps, no evaluation): the table and both plots are filled and
    column B fits inside the panel at 1400 px and at 1000 px (screenshots of both)."""
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.locator("#compare").get_by_text("Compare two methods on this request").click()
    page.locator("#compare_btn").click()
    expect(page.locator("#compare_note")).to_contain_text("run with", timeout=240_000)
    expect(page.locator("#compare_table")).to_contain_text("B: gd")
    for pid in ("#compare_plot_a", "#compare_plot_b"):
        page.locator(f"{pid} .js-plotly-plot").wait_for(timeout=20_000)
    assert page.locator("#compare_table").get_by_text("image #8").count() >= 1
    for width in (1400, 1000):
        page.set_viewport_size({"width": width, "height": 1000})
        page.wait_for_timeout(800)
        page.locator("#compare").scroll_into_view_if_needed()
        page.locator("#compare").screenshot(path=str(ARTIFACTS / f"state_2b_compare_{width}.png"))
        cut = page.evaluate(_OVERFLOW_JS)
        assert not cut, (width, cut)
    page.locator("#compare").get_by_text("Compare two methods on this request").click()  # closed again
    page.set_viewport_size({"width": 1280, "height": 900})


def test_undo_and_reset_show_the_current_state_and_screenshots(page, server):
    page.set_viewport_size({"width": 1280, "height": 900})
    _open(page, server)
    _pick(page, 0)
    first = _example_names()[0]
    _advanced(page, steps=4, evaluation="none")
    page.locator("#forget").click()
    _wait_status(page, r"Request 1 (done|restored)")
    _pick(page, 1)
    second = _example_names()[1]
    page.locator("#forget").click()
    _wait_status(page, r"Request 2 (done|restored)")
    page.locator("#plot_after .js-plotly-plot").wait_for(timeout=20_000)
    page.locator("#ask").click()
    page.wait_for_function("document.querySelector('#ask_base textarea, #ask_base input').value.length > 0", timeout=60_000)
    p = _panels(page)
    assert p["history"] == 2 and p["gallery"] == 8 and "→" in p["captions"] and p["ask_base"]
    _shot(page, "state_2_two_requests_1280")
    _compare_fits(page)  # the session's model is unchanged by it: Undo below still goes back to request 1
    page.set_viewport_size({"width": 390, "height": 844})
    time.sleep(1)
    _shot(page, "state_3_two_requests_390")
    page.set_viewport_size({"width": 1280, "height": 900})

    page.locator("#undo").click()
    _wait_status(page, r"Undone: back to the model after request 1")
    time.sleep(1)
    p = _panels(page)
    assert second not in p["name_note"], p["name_note"]
    assert p["name"] == first and p["history"] == 1 and p["gallery"] == 8 and "→" in p["captions"], p
    assert re.search(first.lower(), p["files"]) and second.lower() not in p["files"].lower(), p["files"]
    assert p["forget_rows"] >= 8 and p["plots"] == 1 and p["ask_base"] == "", p
    _shot(page, "state_4_after_undo")

    page.locator("#reset").click()
    _wait_status(page, r"Reset: this session's model is the base model again")
    time.sleep(1)
    p = _panels(page)
    assert (
        p["name"] == "" and p["name_note"].strip() == "" and p["history"] == 0 and p["gallery"] == 0 and p["forget_rows"] == 0
    ), p
    assert p["plots"] == 0 and p["ask_base"] == "" and not re.search(first.lower() + "_0", p["files"]), p
    _shot(page, "state_5_after_reset")
