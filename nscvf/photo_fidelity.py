"""Fidelity of the photo model to its encoder's ImageNet head, on images it was not trained on (issue 17 targets).

For every held-out image (held-out emoji, scikit-image's and scikit-learn's photos and crops of them, held-out
unknown images) the model is asked "What is this?" end to end (pixels -> tower -> projector -> LLM), and its
answer is compared with what the head implies:

- **confident**: the head's top-1 p >= 0.5 on a class of the concept table -> the model must name that concept
  (target >= 90%);
- **cannot place**: an unknown image (noise, textures, drawn characters), or an image whose best concept
  probability is below 0.15 -> the model must say "I don't know what this is." (target >= 90%).

Images in neither group (the head unsure, or confident on a class outside the table) are counted, not scored.
"""

from __future__ import annotations

import torch

from nscvf.concepts import table


def expected(logits: torch.Tensor, label: str, unknown_below: float = 0.15) -> tuple[str, str | None]:
    """(group, expected answer) of one image from the head's logits: confident / cannot_place / unscored."""
    t = table()
    p = logits.float().softmax(-1)
    top = int(p.argmax())
    owner = {k: c for c in t.concepts for k in c.classes}
    best = max(float(p[list(c.classes)].sum()) for c in t.concepts)
    if label.startswith("unknown:"):
        return "cannot_place", t.unknown_answer
    if float(p[top]) >= 0.5 and top in owner:
        return "confident", t.name_answer(owner[top])
    if best < unknown_below:
        return "cannot_place", t.unknown_answer
    return ("confident_outside_table" if float(p[top]) >= 0.5 else "unsure"), None


def fidelity(vlm, images, labels: list[str], logits: torch.Tensor, batch_size: int = 32, progress=None) -> dict:
    """Ask every image "What is this?" and score the answers by group and by source (emoji, photo, crop, unknown)."""
    question = table().questions["name"]
    answers = []
    for i in range(0, len(images), batch_size):
        answers += vlm.generate([question] * len(images[i : i + batch_size]), images[i : i + batch_size], max_new_tokens=12)
        if progress is not None:
            progress(f"asked {len(answers)}/{len(images)} images")
    rows, groups = [], {}
    for label, lg, answer in zip(labels, logits, answers):
        group, want = expected(lg, label)
        ok = None if want is None else answer == want
        rows.append({"image": label, "group": group, "expected": want, "answer": answer, "correct": ok})
        source = label.split(":")[0]
        for key in (group, f"{group}/{source}"):
            g = groups.setdefault(key, {"n": 0, "correct": 0})
            g["n"] += 1
            g["correct"] += bool(ok)
    for g in groups.values():
        g["rate"] = round(g["correct"] / g["n"], 4) if g["n"] else None
    summary = {
        "confident_named": groups.get("confident", {}).get("rate"),
        "confident_n": groups.get("confident", {}).get("n", 0),
        "cannot_place_unknown": groups.get("cannot_place", {}).get("rate"),
        "cannot_place_n": groups.get("cannot_place", {}).get("n", 0),
        "targets": {"confident_named": 0.9, "cannot_place_unknown": 0.9},
    }
    return {"summary": summary, "groups": dict(sorted(groups.items())), "rows": rows}
