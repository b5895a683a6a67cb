"""The app's public API as the gradio_client tests call it: /forget's arguments and output order (shared by
tests/server/ and the Space-build test in tests/test_space.py)."""

from __future__ import annotations

import json
import os

from nscvf.method.config import UnlearnConfig

# The app's defaults (UnlearnConfig's) unless overridden, e.g. NSCVF_TEST_SETTINGS='{"energy": 0.01}'.
DEFAULTS = {k: v["default"] for k, v in UnlearnConfig.fields_help().items()}
DEFAULTS.update(json.loads(os.environ.get("NSCVF_TEST_SETTINGS") or "{}"))
STEPS = int(os.environ.get("NSCVF_TEST_STEPS") or DEFAULTS["steps"])
EVALUATION = os.environ.get("NSCVF_TEST_EVAL", "quick")
# Output order of /forget, /undo, /reset (the session-id State is not part of the API).
STATUS, HISTORY, GALLERY, FORGET, RETAIN, TEXT_NOTE, TEXT, PLOT_B, PLOT_A, PLOT_NOTE, NUMBERS = range(11)


def forget_args(
    paths,
    name="",
    method="nscvf",
    steps=STEPS,
    lr=DEFAULTS["lr"],
    rank=DEFAULTS["lora_rank"],
    energy=DEFAULTS["energy"],
    tau=DEFAULTS["tau"],
    retain_weight=DEFAULTS["retain_weight"],
    evaluation=EVALUATION,
    keep=None,
):
    from gradio_client import handle_file

    return (
        [handle_file(p) for p in paths],
        name,
        method,
        steps,
        lr,
        rank,
        energy,
        tau,
        retain_weight,
        evaluation,
        [handle_file(p) for p in keep] if keep else None,
    )


def rows(df) -> list[list]:
    return df["data"] if isinstance(df, dict) else df


def plot_points(p) -> int:
    fig = json.loads(p["plot"]) if isinstance(p, dict) else None
    return sum(len(t.get("text") or []) for t in (fig or {}).get("data", []))  # x/y are binary-encoded


def identity_rows(out, target):
    return [r for r in rows(out[FORGET]) if r[1] == "Who is this?"]
