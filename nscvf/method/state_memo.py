"""What a request reads of a model state that does not depend on the request, computed once per process
(issue 20): processor inputs of images, features of images, the protected inputs' covariances and the
answers to the text questions and to a question on an image under a model state.

Everything goes through :data:`nscvf.cache.memo` under a key that names what the value depends on: the model
state by :func:`state_key` (content fingerprints, so the state after a forget request is another key and
never sees the features of the state before it), images by their content. With the memo off
(``NSCVF_MEMO=0``) the same functions compute every value again, the same way: it changes nothing but time.

Two requests on different targets share most of their image sets (the retain and protected sets leave out
the target's renders), so features are kept per image, and covariances per *chunk* of a set: one chunk per
character for renders (their ``info`` says which), so a set with one character's renders left out has every
other chunk of the set with it and a new target computes none; other images are cut where an image's
fingerprint says so (content-defined, as rsync and backup tools cut files), so such a set with a few images
left out or added still has most of its chunks. Features of one image do not depend on the other images of
its batch (``tests/test_state_memo.py`` checks it); the covariance of a set is the sum of its chunks' in
their order, with the memo on or off.
"""

from __future__ import annotations

import hashlib

import torch

from nscvf.cache import image_fingerprint, memo
from nscvf.method.nullspace import CovarianceCollector
from nscvf.world import GROUP_KEY

CHUNK_EVERY = 32  # a covariance chunk ends after an image whose fingerprint is 0 modulo this (mean chunk size)
CHUNK_MAX = 96  # ... or at this many images (a cut forced by length moves the cuts after it, until a content cut)
BATCH = 64  # images per forward pass of the covariance pass
ORDER = "groups"  # how a set's covariance is summed (:func:`chunks`): part of its disk cache key
CHUNKED_BYTES = 64 * 2**20  # covariances kept per chunk only while one set of sums is at most this big


def state_key(shared, adapters, chain_adapters, chain_fingerprint: str) -> tuple | None:
    """The memo key of the model state with ``adapters`` active: the base (no adapter), or the chain's state
    ``chain_adapters`` (its content fingerprint and the adapters' LoRA configurations, which the weights'
    fingerprint does not cover). None for any other state (nothing of it is memoised): e.g. a request's own
    adapter, which changes at every step."""
    adapters = tuple(adapters)
    if not adapters:
        return ("base", shared.fingerprint)
    if adapters != tuple(chain_adapters):
        return None
    configs = hashlib.sha256("|".join(repr(shared.peft.peft_config[a]) for a in adapters).encode()).hexdigest()[:16]
    return ("chain", chain_fingerprint, configs)


def image_inputs(vlm, images, fingerprints: list[str] | None = None) -> list[dict]:
    """``vlm.image_inputs([im])`` for each image."""
    where, fps = vlm.reading_key(), fingerprints or [image_fingerprint(im) for im in images]
    return memo.get_many("image_inputs", [(*where, f) for f in fps], lambda miss: [vlm.image_inputs([images[i]]) for i in miss])


def features(vlm, state: tuple | None, images) -> tuple[list, torch.Tensor]:
    """``vlm.image_features(images)`` in ``state`` (from :func:`state_key`; None: computed, not memoised):
    token features per image (memoised per image) and their pooled z(x)."""
    if state is None or not images:
        return vlm.image_features(images)
    where = (state, *vlm.reading_key())  # the state's weights, and how the processor reads an image
    keys = [(*where, image_fingerprint(im)) for im in images]
    tokens = memo.get_many("features", keys, lambda miss: vlm.image_features([images[i] for i in miss])[0])
    # heavy: nscvf.models imports every family's transformers classes (2.5 s at the app's page build)
    from nscvf.models.base import pool_tokens

    return tokens, pool_tokens(tokens)


def text_answers(vlm, state: tuple | None, questions: list[str]) -> list[str]:
    """``vlm.generate(questions)`` (text only) in ``state``."""
    if state is None:
        return vlm.generate(questions, None)
    return list(memo.get("text_answers", (state, tuple(questions)), lambda: vlm.generate(questions, None)))


def answers(vlm, state: tuple | None, question: str, images) -> list[str]:
    """``vlm.generate([question] * len(images), images)`` in ``state``, memoised per image (a request's retain
    answers are drawn from the same retain set every time)."""
    if state is None or not images:
        return vlm.generate([question] * len(images), images)
    where = (state, *vlm.reading_key(), question)
    keys = [(*where, image_fingerprint(im)) for im in images]
    return memo.get_many("answers", keys, lambda miss: vlm.generate([question] * len(miss), [images[i] for i in miss]))


def text_logits(vlm, state: tuple | None, questions: list[str]):
    """``vlm.text_logits(questions)`` in ``state``."""
    if state is None:
        return vlm.text_logits(questions)
    return memo.get("text_logits", (state, tuple(questions)), lambda: vlm.text_logits(questions))


# ------------------------------------------------------------------------------- covariances


def chunks(fingerprints: list[str], groups: list[str | None] | None = None) -> list[list[int]]:
    """The covariance chunks of a list of images (by their fingerprints and groups), as lists of indices.

    Images with a group (``world.GROUP_KEY``: a render's character) come first, by group name: one chunk per
    group (cut again at ``CHUNK_MAX`` images), so a set with one character left out has every other chunk
    of the set with it. The others follow in their order, cut where the content says: a chunk ends after an
    image whose fingerprint is 0 modulo ``CHUNK_EVERY``, or at ``CHUNK_MAX`` images."""
    groups = groups or [None] * len(fingerprints)
    out: list[list[int]] = []
    for i in sorted((i for i, g in enumerate(groups) if g is not None), key=lambda i: (groups[i], i)):
        if out and groups[out[-1][0]] == groups[i] and len(out[-1]) < CHUNK_MAX:
            out[-1].append(i)
        else:
            out.append([i])
    part: list[int] = []
    for i in (i for i, g in enumerate(groups) if g is None):
        part.append(i)
        if int(fingerprints[i][:8], 16) % CHUNK_EVERY == 0 or len(part) == CHUNK_MAX:
            out.append(part)
            part = []
    return out + ([part] if part else [])


def image_groups(images) -> list[str | None]:
    """Each image's group (``world.GROUP_KEY`` in its PIL ``info``: a render's character), None where it has none."""
    return [getattr(im, "info", {}).get(GROUP_KEY) for im in images]


def protected_covariances(work, state: tuple | None, layers: dict, images, progress=None, fingerprints=None) -> dict:
    """Sum of x x^T and the sample count of every layer's inputs over ``images`` (``{name: (sum, count)}``,
    aliased names sharing one tensor; see :class:`CovarianceCollector`), as the model ``work`` computes them
    in ``state``. Summed over the chunks of the set (:func:`chunks`), each memoised, where one set of sums
    is small (the embedded model: ~10 MB) and ``state`` is the base model (where every visitor's first
    request starts; a later chain state is one session's, rarely asked again); else in one pass, in the
    set's order, as one chunk. ``fingerprints``: the images' (computed if not given).
    ``progress(done, total)`` before each forward pass (the point where Cancel is honoured)."""
    fps = fingerprints or [image_fingerprint(im) for im in images]
    inputs = image_inputs(work, images, fps)
    size = sum(m.in_features**2 * 8 for m in layers.values() if hasattr(m, "in_features"))
    chunked = state is not None and state[0] == "base" and size <= CHUNKED_BYTES
    where = (state, *work.reading_key(), tuple(sorted(layers)))
    report = progress or (lambda done, total: None)
    total, done = None, 0
    for part in chunks(fps, image_groups(images)) if chunked else [list(range(len(images)))]:

        def compute(part=part, done=done):
            return _covariances(work, layers, inputs, part, lambda d: report(done + d, len(inputs)))

        key = (*where, hashlib.sha256("".join(fps[i] for i in part).encode()).hexdigest()[:16])
        covs = memo.get("covariance", key, compute) if chunked else compute()
        total = covs if total is None else _add(total, covs)
        done += len(part)
    return total if total is not None else _covariances(work, layers, inputs, [], lambda d: report(d, 0))


def _covariances(work, layers: dict, inputs: list[dict], part: list[int], progress) -> dict:
    """The covariances of the ``inputs`` at the indices ``part``, in batches of ``BATCH`` (``progress(done)``
    before each)."""
    with torch.no_grad(), work.scope(), CovarianceCollector(layers) as col:
        for i in range(0, len(part), BATCH):
            progress(i)
            work.project_images(work.collate([inputs[j] for j in part[i : i + BATCH]]))
    return col.covariances()


def _add(a: dict, b: dict) -> dict:
    """``a + b`` for two covariance dicts of the same layers, aliases kept (new tensors: memoised ones are
    never changed)."""
    sums: dict[int, torch.Tensor] = {}
    out = {}
    for name, (s, c) in a.items():
        if id(s) not in sums:
            sums[id(s)] = s + b[name][0]
        out[name] = (sums[id(s)], c + b[name][1])
    return out
