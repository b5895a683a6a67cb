"""Questions asked of a model state, cached: the probe answers of a request and the evaluation."""

from __future__ import annotations

from nscvf.eval import evaluate
from nscvf.method import state_memo
from nscvf.method.domain import Domain


def cached_evaluation(cache, fingerprint: str, vlm, target: str, mode: str, earlier=(), progress=None) -> tuple[dict, str]:
    """:func:`nscvf.eval.evaluate` of a model state (``fingerprint``), cached; earlier targets of the chain
    are their own group. Returns (evaluation, "computed" | "reused")."""
    earlier = tuple(e for e in earlier if e and e != target)
    key = ("eval", 2, fingerprint, target, mode, earlier)  # 2: with retain_by_character (issue 19)
    hit = cache.get(key)
    if hit is not None:
        return hit, "reused"
    hit = evaluate(vlm, target, renders=renders_for(mode), mc=mode == "full", earlier=earlier, progress=progress)
    cache.set(key, hit)
    return hit, "computed"


def renders_for(mode: str) -> int:
    return 2 if mode == "quick" else 3


def probe_answers(vlm, domain: Domain, forget: list, questions: list[str], state: tuple | None = None) -> dict:
    """Answers to every probe question on every forget image, and to the domain's text-only questions (those
    memoised per model ``state``: see :func:`nscvf.method.state_memo.state_key`)."""
    flat_q = [q for _ in forget for q in questions]
    ans = vlm.generate(flat_q, [im for im in forget for _ in questions])
    out = {"forget": {"questions": questions, "answers": {q: ans[j :: len(questions)] for j, q in enumerate(questions)}}}
    if domain.text_questions():
        out["text"] = {
            "questions": domain.text_questions(),
            "answers": state_memo.text_answers(vlm, state, domain.text_questions()),
        }
    return out
