"""Questions to the models, without Gradio: who the base model says the uploaded images show
(:func:`identify`, before any training) and one question to the base and the session's model (:func:`ask`),
each one GPU call (:func:`webapp.service.jobs.gpu_call`)."""

from __future__ import annotations

from dataclasses import dataclass

from nscvf import zerogpu
from nscvf.errors import InputError
from nscvf.images import load_image
from webapp.service.form import image_paths
from webapp.service.jobs import base_state, gpu_call, gpu_state
from webapp.state.runtime import Runtime
from webapp.state.sessions import Session
from webapp.state.settings import MAX_QUESTION


def identify(rt: Runtime, files, given: str | None = None, wait_s: float = 60.0, model: str | None = None):
    """Who the base model (``model``: a ModelChoice key; None: the default) says the uploaded images show (before
    training): an :class:`nscvf.method.outcome.Identification` with its warnings, or None (no readable image, or
    the model is not loaded yet)."""
    h = rt.holder(model)
    h.start()
    if not files or not h.wait(wait_s) or not h.ready:
        return None
    images = []
    for p in image_paths(files, rt.settings.max_files):
        try:
            images.append(load_image(p))
        except InputError:
            pass  # the preview names the bad file
    if not images:
        return None
    request = zerogpu.IdentifyJob(tuple(images), (given or "").strip() or None)
    return gpu_call("identify", base_state(rt, model), request)["identification"]


@dataclass(frozen=True)
class Answers:
    base: str
    current: str
    k: int  # requests in the session's chain (0: the current model is the base model)


def ask(rt: Runtime, sess: Session, question: str | None, image_file=None) -> Answers:
    """The base model's and this session's model's answers to one question (about an image, or text only)."""
    q = (question or "").strip()
    if not q:
        raise InputError("the question is empty: type a question")
    if len(q) > MAX_QUESTION:
        raise InputError(f"the question is {len(q)} characters long; use at most {MAX_QUESTION}")
    imgs = [load_image(image_paths(image_file, 1)[0])] if image_file else None
    with sess.reading("question"):
        out = gpu_call("ask", gpu_state(rt, sess), zerogpu.AskJob(q, imgs[0] if imgs else None, max_new_tokens=24))
        return Answers(out["base"], out["current"], out["k"])
