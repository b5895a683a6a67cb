"""The Forget form, read and checked before anything runs: files, numbers (the app's ranges), the
estimated time against the time limit, the target name (messages written for the page). The config is
validated here once; the images are decoded and fingerprinted here once per request."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from nscvf import world
from nscvf.cache import image_set_fingerprint
from nscvf.errors import InputError
from nscvf.images import load_image
from nscvf.method.config import UnlearnConfig
from nscvf.method.methods import method_config
from webapp.state.settings import ADVANCED, APP_RANGES, MAX_NAME, config_fields

UNLIMITED = 10**9
NO_IMAGES = "no images: upload one or more images of what to forget, or click an example character"

# ---------------------------------------------------------------------------------------- the form


def image_paths(files, max_files: int, what: str = "images") -> list[str]:
    """The paths of uploaded files (Gradio gives paths, dicts or file objects); InputError when none or too many."""
    if not files:
        raise InputError(NO_IMAGES)
    if not isinstance(files, (list, tuple)):
        files = [files]
    paths = []
    for f in files:
        p = f if isinstance(f, (str, os.PathLike)) else (f.get("path") if isinstance(f, dict) else getattr(f, "name", None))
        if p:
            paths.append(str(p))
    if not paths:
        raise InputError(NO_IMAGES)
    if len(paths) > max_files:
        raise InputError(f"{len(paths)} {what} is too many: upload at most {max_files}")
    return paths


def number(name: str, value, integer: bool):
    """A number field of the form, or InputError naming the field and its range."""
    meta = config_fields()[name]
    if value is None or value == "":
        raise InputError(f"{name} is empty; enter a number from {meta['lo']:g} to {meta['hi']:g}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name}={value!r} is not a number") from None
    if not math.isfinite(v):
        raise InputError(f"{name}={value!r} is not a number")
    if integer:
        if v != int(v):
            raise InputError(f"{name}={value:g} must be a whole number")
        v = int(v)
    if name in APP_RANGES and not meta["lo"] <= v <= meta["hi"]:
        why = {"lr": "higher rates collapse the model", "energy": "lower thresholds leave no direction to train"}[name]
        raise InputError(f"{name}={v:g} is out of range; use {meta['lo']:g} to {meta['hi']:g} ({why})")
    return v


def make_config(form: dict):
    """UnlearnConfig from the form (``method``, the Advanced fields, ``evaluation``), validated, with what its
    method fixes. The evaluation runs after the answers are shown (:func:`webapp.service.forget.evaluate`):
    the engine gets none."""
    changes = {f: number(f, form.get(f), integer) for f, _, integer in ADVANCED}
    changes["method"] = (form.get("method") or "nscvf").strip()
    choices = config_fields()["evaluate"]["choices"]
    if (form.get("evaluation") or "quick") not in choices:
        raise InputError(f"evaluation={form.get('evaluation')!r} is not valid; choose one of {', '.join(choices)}")
    changes["evaluate"] = "none"
    return method_config(UnlearnConfig().replace(**changes))  # the config checks itself when made


@dataclass(frozen=True)
class ForgetRequest:
    """A parsed Forget form."""

    images: list
    paths: list[str]
    cfg: object  # UnlearnConfig
    evaluation: str
    name: str
    retain: list | None
    forget_fp: str = ""  # image_set_fingerprint(images), once per request (the cache key)
    retain_fp: str = ""  # the same of ``retain`` ("" without)

    @property
    def names(self) -> tuple:
        return tuple(Path(p).name for p in self.paths)


def parse_forget(form: dict, max_files: int) -> ForgetRequest:
    """Read the Forget form: ``files``, ``name``, ``method``, the Advanced fields, ``evaluation``,
    ``retain_files``. Every image is decoded (one clear error naming the file, never a server path)."""
    paths = image_paths(form.get("files"), max_files)
    images = [load_image(p) for p in paths]
    cfg = make_config(form)
    retain = None
    if form.get("retain_files"):
        retain = [load_image(p) for p in image_paths(form["retain_files"], max_files, what="images to keep")]
    name = (form.get("name") or "").strip()
    if len(name) > MAX_NAME:
        raise InputError(f"the name is too long (at most {MAX_NAME} characters)")
    retain_fp = image_set_fingerprint(retain) if retain else ""
    return ForgetRequest(images, paths, cfg, form.get("evaluation") or "quick", name, retain,
                         image_set_fingerprint(images), retain_fp)  # fmt: skip


def check_time(cfg, estimate, time_limit: float, steps_hi: int | None = None) -> None:
    """Refuse settings whose estimated time exceeds the time limit, or more Steps than the form offers
    (``steps_hi``: the Steps box's top, so that the box and the validation agree), before the job starts,
    saying what to lower."""
    if steps_hi is not None and cfg.steps > steps_hi:
        raise InputError(f"steps={cfg.steps} is out of range; use 1 to {steps_hi} (the most that fit the time limit "
                         f"of {time_limit:.0f} s)")  # fmt: skip
    need = estimate.seconds(cfg.steps)
    if need > time_limit:
        raise InputError(
            f"{cfg.steps} steps would take about {need:.0f} s on this machine, over the time limit of {time_limit:.0f} s: "
            f"lower Steps to at most {min(estimate.steps_max(time_limit), steps_hi or UNLIMITED)}"
        )


def page_target(domain, name: str, taught=()) -> str | None:
    """The canonical target name (a world character or a concept taught in this session), with a message
    written for the page (not the CLI's) when it is unknown."""
    if not name:
        return None
    try:
        return domain.resolve_target(name, [], taught)
    except world.UnknownCharacterError:
        raise InputError(
            f"{name!r} is not a character the embedded model knows; leave the name empty (it is inferred from the "
            f"images) or use one of: {', '.join([*taught, *world.NAMES])}"
        ) from None
