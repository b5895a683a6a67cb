"""Print the README's table of the embedded model's held-out numbers from assets/model/training_report.json."""

import json
import sys
from pathlib import Path

from nscvf.rates import pct

report = json.loads((Path(__file__).resolve().parent.parent / "assets" / "model" / "training_report.json").read_text())
h = report["heldout"]
rows = [
    ("name from image, held-out renders", h["name_acc_heldout"], ">= 97%"),
    ("name from image, held-out renders + held-out paraphrases", h["name_acc_heldout_paraphrase"], ">= 97%"),
    ("fact from image, held-out renders", h["fact_image_acc_heldout"], ">= 95%"),
    ("fact from image, held-out renders + held-out paraphrases", h["fact_image_acc_heldout_paraphrase"], ">= 95%"),
    ("fact from text", h["fact_text_acc"], "100%"),
    ("fact from text, held-out paraphrases", h["fact_text_acc_paraphrase"], "100%"),
    ('"I don\'t know" on unseen distractor characters', h["unknown_rate_unseen_distractors"], ">= 95%"),
    ("a character with a look-alike sibling called by the sibling's name", h.get("sibling_confusion_heldout"), "-"),
]
out = ["| measure (nscvf eval, 3 renders per character and split) | accuracy | target |", "|---|---|---|"]
out += [f"| {name} | {pct(v, unit='%')} | {t} |" for name, v, t in rows]
w = report["wall_seconds"]
out += [
    "",
    f"{report['parameters']:,} parameters; trained by `{report['command']}` in {w['total'] / 60:.0f} min "
    f"on this machine ({report['torch_threads']} threads).",
]
sys.stdout.write("\n".join(out) + "\n")
