"""The benchmark end to end at the smallest size (one target, two methods, a few steps): the stable JSON
keys, the markdown table, and re-rendering a saved run with `nscvf bench --from-json`."""

import json

from nscvf import bench
from nscvf.cli import main

KEYS = {
    "forget_acc",
    "forget_acc_heldout",
    "unknown_rate",
    "wrong_name_rate",
    "retain_acc",
    "text_identical",
    "retain_drift",
    "seconds_per_request",
    "peak_rss_mb",
}


def test_bench_smallest_run_and_rerender(tmp_path, capsys):
    seen = []
    res = bench.run_bench(
        targets=["Mirel"],
        methods=["nscvf", "ga"],
        steps=4,
        renders=1,
        continual_n=2,
        progress=lambda m: None,
        partial=seen.append,
    )
    assert [sorted(p["per_target"]) for p in seen] == [["nscvf"], ["ga", "nscvf"]]  # partial results after each method
    for m in ("nscvf", "ga"):
        s = res["methods"][m]
        assert KEYS <= set(s), KEYS - set(s)
        assert 0 <= s["forget_acc_heldout"] <= 1 and 0 <= s["retain_acc"] <= 1 and s["seconds_per_request"] > 0
        assert res["per_target"][m][0]["steps_run"] <= 4
    assert res["methods"]["nscvf"]["text_identical"]  # the language model is frozen
    assert res["methods"]["nscvf"]["projection_share"] is not None and res["null_space_overhead_per_step"] is None
    steps = res["continual"]["steps"]
    assert [s["target"] for s in steps] == ["Mirel", "Tobbin"] and set(steps[1]["earlier_targets_acc"]) == {"Mirel"}
    md = bench.to_markdown(res)
    assert "| nscvf |" in md and "| ga |" in md and "## Continual" in md

    saved = tmp_path / "bench.json"
    saved.write_text(json.dumps(res))
    assert main(["bench", "--from-json", str(saved), "--md", str(tmp_path / "b.md")]) == 0
    assert (tmp_path / "b.md").read_text() == md
    assert main(["bench", "--from-json", str(tmp_path / "b.md")]) == 2
    assert "not a benchmark result" in capsys.readouterr().err
