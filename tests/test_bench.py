"""The benchmark end to end at the smallest size (one target with a look-alike sibling and a gold record,
two methods, two seeds, a few steps): the stable JSON keys (every number as mean/std/n over seeds), the
markdown tables, and re-rendering a saved run with `nscvf bench --from-json`."""

import json

from nscvf import bench
from nscvf.bench import evidence
from nscvf.bench.grid import run_bench
from nscvf.cli import main

SPREAD_KEYS = {
    "forget_acc",
    "forget_acc_heldout",
    "unknown_rate",
    "wrong_name_rate",
    "retain_acc",
    "neighbour_retain_acc",
    "neighbour_retain_acc_eval",
    "neighbour_gap_gold",
    "target12_unknown",
    "target12_sibling_named",
    "neighbour_drift",
    "retain_drift",
    "seconds_per_request",
    "harmonic_mean",
    "ks_stat",
    "ks_p",
    "relearn_steps",
    "feature_distance_gold",
    "feature_distance_original",
}


def test_bench_smallest_run_and_rerender(tmp_path, capsys, monkeypatch, embedded):
    # A stand-in gold record for Mirel measured on the base model itself (the real ones come from `nscvf gold`):
    # enough to exercise every comparison; the base still names Mirel, so it relearns in 0 steps.
    gold_dir = tmp_path / "gold"
    gold_dir.mkdir()
    record = evidence.gold_record(embedded, "Mirel", renders=1)
    assert record["relearn_steps"] == {"1": 0, "2": 0, "4": 0} and record["neighbour"] == "Fenna"
    evidence.gold_path("Mirel", gold_dir).write_text(json.dumps(record))
    monkeypatch.setenv("NSCVF_GOLD_DIR", str(gold_dir))
    settings = bench.BenchSettings(targets=("Mirel",), methods=("nscvf", "ga"), steps=4, renders=1, continual_n=2, seeds=2)
    res, rep = run_bench(settings, tmp_path / "run", progress=lambda m: None)
    assert rep.complete and len(rep.ran) == 2 + 2 * 2  # base, continual, 2 methods x 2 seeds
    base_vs_gold = res["base"]["gold"]["Mirel"]["original_vs_gold"]
    assert base_vs_gold["ks_stat"] == 0.0 and base_vs_gold["gold_agreement"]["target"] == 1.0  # the same model
    for m in ("nscvf", "ga"):
        s = res["methods"][m]
        assert SPREAD_KEYS <= set(s), SPREAD_KEYS - set(s)
        for k in SPREAD_KEYS:
            assert set(s[k]) == {"mean", "std", "n"} and s[k]["n"] == 2, (m, k, s[k])
        assert set(s["gold_agreement"]) == {"target", "neighbour", "retain", "text"}
        assert 0 <= s["forget_acc_heldout"]["mean"] <= 1 and 0 <= s["neighbour_retain_acc"]["mean"] <= 1
        assert s["seconds_per_request"]["mean"] > 0 and s["seeds"] == [0, 1]
        rows = res["per_target"][m]
        assert [r["seed"] for r in rows] == [0, 1] and all(r["steps_run"] <= 4 for r in rows)
        assert all(set(r["relearn_steps_k"]) == {"1", "2", "4"} for r in rows)
        assert s["per_gold_target"]["Mirel"]["ks_p"]["n"] == 2
    assert res["methods"]["nscvf"]["text_identical"]  # the language model is frozen
    assert res["methods"]["nscvf"]["projection_share"] is not None and res["null_space_overhead_per_step"] is None
    steps = res["continual"]["steps"]
    assert [s["target"] for s in steps] == ["Mirel", "Tobbin"] and set(steps[1]["earlier_targets_acc"]) == {"Mirel"}
    md = bench.to_markdown(res)
    assert "| nscvf |" in md and "| ga |" in md and "## Continual" in md and "## Against the gold reference" in md
    assert " ± " in md

    saved = tmp_path / "bench.json"
    saved.write_text(json.dumps(res))
    assert main(["bench", "--from-json", str(saved), "--md", str(tmp_path / "b.md")]) == 0
    assert (tmp_path / "b.md").read_text() == md
    assert main(["bench", "--from-json", str(tmp_path / "b.md")]) == 2
    assert "not a benchmark result" in capsys.readouterr().err


def test_settings_choose_the_grid_and_each_cells_config(capsys):
    quick, full = bench.BenchSettings(quick=True), bench.BenchSettings()
    assert quick.target_names == list(bench.QUICK_TARGETS) and quick.method_names == bench.QUICK_METHODS
    assert len(full.target_names) == 24 and full.method_names == bench.METHOD_ORDER
    assert quick.continual_targets == full.target_names[:4] and len(full.continual_targets) == 8
    assert bench.BenchSettings(targets=("Dravik",), methods=("ga",)).target_names == ["Dravik"]
    cfg = bench.BenchSettings(steps=7).config("ga", seed=2)
    assert (cfg.method, cfg.steps, cfg.seed, cfg.evaluate) == ("ga", 7, 2, "none")
    assert bench.BenchSettings().config().steps == 40 and bench.BenchSettings().config().method == "nscvf"
    assert quick.measures_warm("Mirel", 0) and not quick.measures_warm("Mirel", 1) and not quick.measures_warm("Dravik", 0)
    assert main(["bench", "--methods", "nscvf,magic"]) == 2
    assert "unknown method(s) magic" in capsys.readouterr().err
