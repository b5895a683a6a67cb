"""Fair turns between visitors through the app's API (issue 19 item 8): while visitor A's long request
trains, B's ordinary Forget starts at once (it never waits behind a long job), C's (right after B's)
waits only for B, is told when its turn comes (within 2x of the wait it then had), and both status lines
report the time since the click, the wait included.

    pytest tests/server/test_visitor_turns.py -s     # prints the waits and ETAs
"""

from __future__ import annotations

import pytest
from support.app_server import AppServer
from support.visitors import second_visitors

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = AppServer(tmp_path_factory.mktemp("turns"), timeout=180)  # a loaded machine starts slowly
    yield s
    s.stop()


def test_second_visitors_forget_during_a_long_job(server):
    got = second_visitors(server.url)
    b, c = got["B"], got["C"]
    print({k: {f: v[f] for f in ("started_s", "eta_s", "eta_from", "total_s", "reported_s")} for k, v in (("B", b), ("C", c))})
    assert got["A_running_when_done"], "A's long request ended before B and C: nothing was measured"
    assert "cancelled" in got["A_status"], got["A_status"]
    assert b["reported_s"] is not None and c["reported_s"] is not None, (b["status"], c["status"])
    assert b["started_s"] is not None and b["started_s"] < 10, b  # not behind A's long job
    assert c["started_s"] is not None and c["started_s"] < b["total_s"] + 10, c  # at most behind B (one turn)
    if c["started_s"] > 5:  # it waited: it was told about when its turn would come
        assert c["eta_from"] == "app" and c["started_s"] / 2 <= c["eta_s"] <= 2 * c["started_s"], c
    for v in (b, c):  # the status counts from the click, the wait included
        assert v["reported_s"] >= v["started_s"] - 1 and v["reported_s"] <= v["total_s"] + 1, v
