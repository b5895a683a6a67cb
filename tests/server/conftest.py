"""Fixtures of the tests that start the app (tests/server/): the browser the Playwright tests launch
(Chromium from :mod:`support.browser`, offline) and its window size. The server itself is started per test
module (each needs its own settings) by :class:`support.app_server.AppServer`."""

from __future__ import annotations

import pytest
from support.browser import CHROMIUM, CHROMIUM_ARGS


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    return {**browser_context_args, "viewport": {"width": 1400, "height": 1000}}


@pytest.fixture(autouse=True)
def _close_own_contexts(request):
    """After each test, close the browser contexts it opened itself (``browser.new_context()``): a live Gradio
    page keeps its renderer busy (seen: four renderers of finished tests at ~8% CPU each while the suite went on).
    Runs after pytest-playwright's own ``context`` fixture has closed its context."""
    yield
    if "browser" in request.fixturenames:
        for ctx in list(request.getfixturevalue("browser").contexts):
            ctx.close()
