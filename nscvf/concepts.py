"""The photo model's world: everyday concepts grouped from ImageNet-1k classes (issue 17).

The table is data committed with the model (``assets/photo_model/concepts.json``, built deterministically by
``scripts/build_photo_concepts.py`` from WordNet 3.0 and the ImageNet class list). Each concept has a name a
person would say ("a cat"), its ImageNet classes, two text facts (its kind and a WordNet gloss) and its
look-alike siblings. Standard library only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from nscvf.source import PHOTO_MODEL_DIR

CONCEPTS_FILE = PHOTO_MODEL_DIR / "concepts.json"


@dataclass(frozen=True)
class Concept:
    name: str  # "a cat"
    synset: str  # WordNet 3.0 noun offset, ImageNet style ("n02121808")
    classes: tuple[int, ...]  # ImageNet-1k class indices it groups
    kind: str  # "A mammal."
    gloss: str  # "Any domesticated member of the genus Felis."
    siblings: tuple[str, ...]  # look-alike concepts' names (WordNet neighbours)


@dataclass(frozen=True)
class ConceptTable:
    concepts: tuple[Concept, ...]
    questions: dict  # name, kind_image, kind_text, gloss_text ("{name}" filled in)
    answers: dict  # name ("This is {name}."), unknown

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.concepts]

    def get(self, name: str) -> Concept:
        for c in self.concepts:
            if c.name.lower() == name.strip().lower():
                return c
        raise KeyError(f"unknown concept {name!r}; known: {', '.join(self.names[:8])}, ... ({len(self.concepts)} in all)")

    @property
    def unknown_answer(self) -> str:
        return self.answers["unknown"]

    def name_answer(self, concept: Concept) -> str:
        return self.answers["name"].format(name=concept.name)

    def image_qa(self, concept: Concept | None) -> list[tuple[str, str]]:
        """(question, answer) pairs about an image of ``concept`` (None: an image it cannot place)."""
        if concept is None:
            return [(self.questions["name"], self.unknown_answer), (self.questions["kind_image"], self.unknown_answer)]
        return [(self.questions["name"], self.name_answer(concept)), (self.questions["kind_image"], concept.kind)]

    def text_qa(self, concept: Concept) -> list[tuple[str, str]]:
        """The text-only facts of ``concept``: its kind and its gloss (answered without an image)."""
        q = self.questions
        return [
            (q["kind_text"].format(name=concept.name), concept.kind),
            (q["gloss_text"].format(name=concept.name), concept.gloss),
        ]

    def corpus(self) -> list[str]:
        """Every question and answer the model is trained on (the tokenizer's training text)."""
        texts = [self.unknown_answer, self.questions["name"], self.questions["kind_image"]]
        for c in self.concepts:
            texts += [f"{q} {a}" for q, a in self.image_qa(c) + self.text_qa(c)]
        return texts


def load_table(path: str | Path = CONCEPTS_FILE) -> ConceptTable:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    concepts = tuple(
        Concept(c["name"], c["synset"], tuple(c["classes"]), c["kind"], c["gloss"], tuple(c["siblings"]))
        for c in data["concepts"]
    )
    return ConceptTable(concepts, dict(data["questions"]), dict(data["answers"]))


@cache
def table() -> ConceptTable:
    """The committed concept table (loaded once)."""
    return load_table()
