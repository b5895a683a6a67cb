"""What ``chain.json`` and ``report.json`` of a saved chain may say: the schema :func:`step_record` writes
and :mod:`nscvf.method.archive` checks before anything else of the file is read (steps ``request_1`` ..
``request_<n>`` in order, known kinds and typed settings in range, bounded strings; each request's record with
known keys, tied to its step, its nested numbers shaped as the engine writes them). Strict JSON only: UTF-8,
no NaN/Infinity, bounded nesting.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import typing
from dataclasses import dataclass

from nscvf.errors import InputError
from nscvf.method.config import RETIRED, UnlearnConfig
from nscvf.method.result import UnlearnResult

MAX_STEPS = 100  # requests in one chain
MAX_TEXT = 200  # characters of a target name or a fingerprint
MAX_JSON_DEPTH = 64
KINDS = ("forget", "teach")
STEP_KEYS = ("name", "kind", "target", "config", "forget_fp")


def step_name(k: int) -> str:
    """The public name (and folder) of request ``k`` (1-based) in a saved chain."""
    return f"request_{k}"


def step_record(s) -> dict:
    """A ChainStep as chain.json holds it (the schema :func:`parse_chain_json` checks)."""
    return dict(zip(STEP_KEYS, (s.name, s.kind, s.target, s.config.to_dict(), s.forget_fp)))


class Refused(Exception):
    """A reason the reader refuses a file; :func:`nscvf.method.archive.read_chain` makes it one InputError
    line with the file's label."""


def shown(name: str) -> str:
    """A name from the file, safe to show on one line (escaped, cut short)."""
    s = ascii(name)
    return s if len(s) <= 60 else s[:57] + "...'"


def parse_json(data: bytes, what: str):
    """Strict JSON: UTF-8, no NaN/Infinity (nor a number that overflows to it), bounded nesting."""

    def no_constant(c):
        raise ValueError(f"non-finite number {c}")

    try:
        value = json.loads(data.decode("utf-8"), parse_constant=no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise Refused(f"not a readable timeline ({what} is not valid JSON)") from None
    depth = _depth(value)
    if depth < 0:
        raise Refused(f"not a readable timeline ({what} holds a number too large)")
    if depth > MAX_JSON_DEPTH:
        raise Refused(f"not a readable timeline ({what} is nested too deeply)")
    return value


_SCALARS = frozenset((type(None), bool, int, float, str))


def _depth(v, d: int = 0) -> int:
    """How deeply ``v`` nests (stopping past MAX_JSON_DEPTH); -1 if it holds a non-finite float."""
    if d > MAX_JSON_DEPTH:
        return d
    if isinstance(v, dict):
        v = list(v.values())
    if not isinstance(v, list):
        return -1 if type(v) is float and not math.isfinite(v) else d
    if set(map(type, v)) <= _SCALARS:  # a list of numbers (a plot's points): checked at once
        return d + 1 if all(map(math.isfinite, [x for x in v if type(x) is float])) else -1
    depths = [_depth(x, d + 1) for x in v]
    return -1 if -1 in depths else max(depths, default=d + 1)


def _text(v, what: str, empty=True, none=False, pattern: str | None = None, limit: int = MAX_TEXT) -> str | None:
    if v is None and none:
        return None
    if not isinstance(v, str) or len(v) > limit or not v.isprintable() or (not v and not empty):
        raise Refused(f"not a readable timeline ({what} must be a short line of text)")
    if pattern and v and not re.fullmatch(pattern, v):
        raise Refused(f"not a readable timeline ({what} is not valid)")
    return v


def _check_value(v, hint, what: str) -> None:
    """``v`` (from JSON) has the type ``hint`` (int, float, str, bool, dict, list, or X | None)."""
    options = typing.get_args(hint) or (hint,)
    for t in options:
        if t is type(None) and v is None:
            return
        if t is bool and isinstance(v, bool):
            return
        if t is int and isinstance(v, int) and not isinstance(v, bool):
            return
        if t is float and isinstance(v, (int, float)) and not isinstance(v, bool):
            return
        if t in (str, dict, list) and isinstance(v, t):
            return
    raise Refused(f"not a readable timeline ({what} has the wrong type)")


def _fields(cls, d, what: str, required: bool) -> dict:
    """``d`` checked field by field against the dataclass ``cls``: unknown keys refused, types checked."""
    if not isinstance(d, dict):
        raise Refused(f"not a readable timeline ({what} must be an object)")
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(d) - set(hints))
    if unknown:
        raise Refused(f"not a readable timeline ({what} has unknown key(s) {', '.join(shown(k) for k in unknown[:3])})")
    if required:
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in d and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]  # fmt: skip
        if missing:
            raise Refused(f"not a readable timeline ({what} lacks {', '.join(missing[:3])})")
    for k, v in d.items():
        _check_value(v, hints[k], f"{what} {k}")
    return d


def without_retired(d):
    """A forget step's saved settings without the keys that moved off the config (NPO's beta, the render
    counts: issue 16), dropped by name; anything else, and a non-dict, is left for the schema to judge."""
    return {k: v for k, v in d.items() if k not in RETIRED} if isinstance(d, dict) else d


def _settings(kind: str, d, what: str):
    """The settings object of a step of ``kind`` from its chain.json dict (never ``cls(**d)`` unchecked)."""
    if kind == "teach":
        from nscvf.method.teach import TeachConfig as cls  # torch: teach imports torch; only a teach step's settings
    else:
        cls = UnlearnConfig
        d = without_retired(d)
    d = _fields(cls, d, what, required=False)
    try:
        cfg = cls(**d).validate()
    except InputError as e:
        raise Refused(f"not a readable timeline ({what}: {e})") from None
    # What shapes the adapter, for both kinds (TeachConfig.validate checks only its budget).
    ranges = UnlearnConfig.fields_help()
    for f in ("lora_rank", "lora_alpha", "first_layer"):
        lo, hi = ranges[f]["lo"], ranges[f]["hi"]
        if not lo <= getattr(cfg, f) <= hi:
            raise Refused(f"not a readable timeline ({what} {f} is out of range)")
    if (kind == "teach") != (cfg.modules == "visual+language") or (kind == "teach") != (cfg.method == "teach"):
        raise Refused(f"not a readable timeline ({what}: method and modules do not fit a {kind} request)")
    return cfg


@dataclass
class ChainMeta:
    base_model: str
    base_fingerprint: str
    steps: list  # (name, kind, target, config, forget_fp)


def parse_chain_json(data: bytes) -> ChainMeta:
    """chain.json checked against the schema save writes (see :func:`step_record`)."""
    meta = parse_json(data, "chain.json")
    if not isinstance(meta, dict) or set(meta) != {"base_model", "base_fingerprint", "steps"}:
        raise Refused("not a readable timeline (chain.json must hold exactly base_model, base_fingerprint and steps)")
    base_model = _text(meta["base_model"], "chain.json base_model", limit=1000)  # a name or a local path
    fingerprint = _text(meta["base_fingerprint"], "chain.json base_fingerprint", empty=False, pattern=r"[0-9a-f]{1,64}")
    steps = meta["steps"]
    if not isinstance(steps, list) or len(steps) > MAX_STEPS:
        raise Refused(f"not a readable timeline (chain.json steps must be a list of at most {MAX_STEPS} requests)")
    out = []
    for k, s in enumerate(steps, 1):
        what = f"chain.json step {k}"
        if not isinstance(s, dict) or set(s) != set(STEP_KEYS):
            raise Refused(f"not a readable timeline ({what} must hold exactly {', '.join(STEP_KEYS)})")
        if s["name"] != step_name(k):
            raise Refused(f"not a readable timeline ({what} must be named {step_name(k)})")
        if s["kind"] not in KINDS:
            raise Refused(f"not a readable timeline ({what} kind must be forget or teach)")
        target = _text(s["target"], f"{what} target", none=True)
        forget_fp = _text(s["forget_fp"], f"{what} forget_fp", pattern=r"[0-9a-f]{1,64}")
        out.append((s["name"], s["kind"], target, _settings(s["kind"], s["config"], f"{what} config"), forget_fp))
    return ChainMeta(base_model, fingerprint, out)


# What a request's records hold, as far as anything reads them (the outcome, the CLI, the app's views): a
# spec is a type, None, a tuple of alternatives, [spec] (a list of), or a dict of "key" / "?key" (optional)
# to specs, where a ``str`` key gives the spec of every other key (absent: other keys may hold anything).
ANY = object()
NUM = (int, float)
OPT_NUM = (None, int, float)
SCALAR = (None, bool, int, float, str)
_PROBES = {"forget": {"questions": [str], "answers": {str: [str]}}, "?text": {"questions": [str], "answers": [str]}}
_EVAL = (None, {"?summary": {str: OPT_NUM}, "?n_items": OPT_NUM, "?seconds": OPT_NUM, "?retain_by_character": {str: [int]}})
_DRIFT = {"?mean": OPT_NUM, "?max": OPT_NUM, "?images": str}
RESULT_SPECS = {
    "probes_before": _PROBES,
    "probes_after": _PROBES,
    "eval_before": _EVAL,
    "eval_after": _EVAL,
    "null_space": {
        "?summary": {"?layers": int, "?constrained": bool, str: (None, bool, int, float)},
        "?layers": {str: {str: OPT_NUM}},
    },
    "retain_drift": _DRIFT,
    "retain_drift_base": _DRIFT,
    "embeddings": {"?groups": [str], "?labels": [str], "?before": [[NUM]], "?after": [[NUM]]},
    "losses": [{str: OPT_NUM}],
    "timings": {str: OPT_NUM},
    "cache": {str: SCALAR},
    "history": [{str: SCALAR}],
    "measures": {str: OPT_NUM},
}


_LEAVES = ((None, (type(None),)), (bool, (bool,)), (int, (int,)), (float, (int, float)), (str, (str,)))


def _leaf(spec) -> frozenset | None:
    """The exact types a scalar spec (a type, None, or a tuple of them) allows; None for any other spec."""
    specs = spec if isinstance(spec, tuple) else (spec,)
    found = [next((types for leaf, types in _LEAVES if s is leaf), None) for s in specs]
    return None if None in found else frozenset(t for types in found for t in types)


def conforms(v, spec) -> bool:
    """Whether the JSON value ``v`` has the shape ``spec`` (see RESULT_SPECS); bool is no number here."""
    if spec is ANY:
        return True
    leaf = _leaf(spec)
    if leaf is not None:
        return type(v) in leaf
    if isinstance(spec, tuple):
        return any(conforms(v, s) for s in spec)
    if isinstance(spec, list):
        if not isinstance(v, list):
            return False
        inner = _leaf(spec[0])
        if inner is not None:  # a list of scalars, checked at once
            return set(map(type, v)) <= inner
        return all(conforms(x, spec[0]) for x in v)
    if not isinstance(v, dict):
        return False
    named = {k.lstrip("?"): (k.startswith("?"), t) for k, t in spec.items() if isinstance(k, str)}
    if any(not optional and k not in v for k, (optional, _) in named.items()):
        return False
    other = spec.get(str, ANY)
    return all(conforms(x, named[k][1] if k in named else other) for k, x in v.items())


def _check_record(d: dict, what: str) -> None:
    """The nested records of one request: their shapes (RESULT_SPECS) and what ties them together."""
    for key, spec in RESULT_SPECS.items():
        if key in d and not conforms(d[key], spec):
            raise Refused(f"not a readable timeline ({what} {key} is not a record this library writes)")
    for key in ("probes_before", "probes_after"):
        forget = d[key]["forget"]
        answers = forget["answers"]
        if not forget["questions"] or any(len(answers.get(q, ())) != d["n_forget"] for q in forget["questions"]):
            raise Refused(f"not a readable timeline ({what} {key} does not answer every question on its {d['n_forget']} images)")
    emb = d.get("embeddings") or {}
    lengths = {len(emb[k]) for k in ("groups", "labels", "before", "after") if k in emb}
    widths = {len(row) for k in ("before", "after") for row in emb.get(k, [])}
    if len(lengths) > 1 or len(widths) > 1:
        raise Refused(f"not a readable timeline ({what} embeddings do not line up)")


def parse_report(data: bytes | None, meta: ChainMeta) -> list:
    """report.json's request records, each checked against UnlearnResult and against its step in chain.json."""
    if data is None:
        return []
    report = parse_json(data, "report.json")
    if (
        not isinstance(report, dict)
        or not set(report) <= {"chain", "requests"}
        or not isinstance(report.get("requests", []), list)
    ):
        raise Refused("not a readable timeline (report.json must hold chain and a list of requests)")
    requests = report.get("requests", [])
    if len(requests) > len(meta.steps):
        raise Refused("not a readable timeline (report.json holds more requests than chain.json)")
    out = []
    for k, (r, (name, kind, target, cfg, _)) in enumerate(zip(requests, meta.steps), 1):
        what = f"report.json request {k}"
        d = _fields(UnlearnResult, r, what, required=True)
        if kind == "forget":
            d = d | {"config": without_retired(d["config"])}
        if (d["step"], d["adapter_name"], d.get("kind", "forget"), d["target"], d["method"], d["config"]) != (
            k, name, kind, target, cfg.method, cfg.to_dict()
        ):  # fmt: skip
            raise Refused(f"not a readable timeline ({what} does not match step {k} of chain.json)")
        _check_record(d, what)
        out.append(UnlearnResult(**d))
    return out
