"""Which model a session works on (issue 17: the page offers the drawn world and real photos, each loaded once
and shared by every session on it): :func:`switch_model`, without Gradio."""

from __future__ import annotations

from dataclasses import dataclass

from nscvf.errors import InputError
from webapp.state.records import RequestRecord
from webapp.state.runtime import Runtime
from webapp.state.sessions import Session
from webapp.state.settings import ModelChoice


@dataclass(frozen=True)
class Switched:
    """A session now on ``model``: its requests on that model (none the first time: the base model), and whether
    it was on another model before (False: it was on this one already)."""

    model: ModelChoice
    records: list
    changed: bool

    @property
    def last(self) -> RequestRecord | None:
        return self.records[-1] if self.records else None


def current_model(rt: Runtime, sess: Session | None) -> str | None:
    """The key of the model a session works on (the page's default until it switches)."""
    return (sess.model if sess is not None else None) or rt.settings.default_model


def switch_model(rt: Runtime, sess: Session, key: str | None) -> Switched:
    """Put the session on the model ``key``: its work on the model it leaves is kept (shelved) and comes back
    when it switches back; the new model starts loading in the background (shared with every session on it).
    Refused (:class:`~nscvf.errors.InputError`) for a model the page does not offer, and
    (:class:`~webapp.state.sessions.Busy`) while the session runs a request; its own evaluation is cancelled
    first, as Undo does."""
    choice = rt.settings.model(key)
    if choice is None:
        offered = ", ".join(m.key for m in rt.settings.models) or "none"
        raise InputError(f"this app does not offer the model {key!r}; choose one of: {offered}")
    with sess.exclusive("model switch", evaluation="cancel"):
        was = current_model(rt, sess)
        sess.switch(choice.key, was)
        records = list(sess.records)
    rt.holder(choice.key).start()
    return Switched(choice, records, choice.key != was)
