"""Click -> answers in a real browser (Chromium via Playwright), as a visitor waits (issue 20).

    python benchmarks/issue20/browser_click.py [--root CHECKOUT] [--json OUT]

Starts ``python app.py`` (its warm-up on, as served; a fresh data dir and numba cache), opens the page, clicks
the Mirel example (the upload fills from the server's files), sets the evaluation to none, presses Forget and
times until the status says the request is done (cold first visit). Then a new browser context (another
visitor) does the same with Tobbin (warm new example), and once the app's log says UMAP is warm, Kestrin.
The browser shares this machine's cores with the app (a visitor's browser does not).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from support.app_server import AppServer  # noqa: E402
from support.browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

from webapp.state.settings import example_characters  # noqa: E402

DONE = re.compile(r"Request \d+ done")


def forget_example(browser, url: str, name: str) -> dict:
    """One visitor: open the page, pick the example ``name``, evaluation none, Forget; seconds from the click."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    try:
        page.goto(url + "/")
        page.locator("#model_info").filter(has_text="embedded model").wait_for(timeout=120_000)
        names = [c.name for c in example_characters(ROOT / "assets" / "examples")]
        page.locator("#examples .thumbnail-item").nth(names.index(name)).click()
        page.locator("#preview .thumbnail-item").nth(7).wait_for(timeout=60_000)
        acc = page.locator("#advanced")
        if not acc.locator("#adv_steps").is_visible():
            acc.get_by_text("Advanced").first.click()
        page.locator("#adv_evaluate").get_by_text("none", exact=True).click()
        page.wait_for_timeout(500)
        load = os.getloadavg()[0]
        t0 = time.time()
        page.locator("#forget").click()
        while not DONE.search(page.locator("#status").inner_text()):
            if time.time() - t0 > 300:
                raise SystemExit(f"{name}: not done after 300 s: {page.locator('#status').inner_text()}")
            time.sleep(0.05)
        seconds = time.time() - t0
        return {"example": name, "click_to_answers_s": round(seconds, 2), "load": round(load, 2),
                "status": page.locator("#status").inner_text().split("\n")[0]}  # fmt: skip
    finally:
        ctx.close()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=str(ROOT), help="the checkout whose app.py runs (A/B runs)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="browser_click_"))
    env = {"NSCVF_WARMUP": "1", "NUMBA_CACHE_DIR": str(tmp / "numba"), "PYTHONPATH": args.root}
    server = AppServer(tmp, extra_env=env, root=Path(args.root), timeout=180)
    out = {"root": args.root, "serving_s": round(server.serving_s, 2), "requests": []}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for name in ("Mirel", "Tobbin"):
                out["requests"].append(
                    forget_example(browser, server.url, name) | {"when": "cold" if name == "Mirel" else "warm"}
                )
                print(out["requests"][-1], flush=True)
            t = time.time()
            while "UMAP warmed up" not in server.log_path.read_text() and time.time() - t < 120:
                time.sleep(0.5)
            out["requests"].append(forget_example(browser, server.url, "Kestrin") | {"when": "UMAP warm"})
            print(out["requests"][-1], flush=True)
            browser.close()
    finally:
        server.stop()
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
