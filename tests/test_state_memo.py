"""The process memo (issue 20): a request with it on gives the very same result and adapter weights as with it
off, a chain state never sees what was computed under another state, and the memo's own rules (budgets,
errors, the switch)."""

import hashlib

import pytest
import torch

from nscvf import world
from nscvf.cache import Cache, Memo, image_fingerprint, memo
from nscvf.method import UnlearnConfig, UnlearningChain, state_memo
from nscvf.method.domain import WorldDomain

# Small sets and few steps (the stop check runs at step 2), on the embedded model's world domain: its default
# image sets, the per-image features and the chunked covariances under the base model are all used.
CFG = UnlearnConfig(steps=4, min_steps=2, check_every=2, evaluate="none", retain_batch=8)
SMALL = WorldDomain(retain_per_character=2, retain_per_distractor=0, protect_per_character=3, region_size=16)


def _forget_images(name, n=3):
    return world.forget_examples(name, n)


@pytest.fixture
def memo_state():
    """The process memo, emptied (its counts start at zero), switched back as it was afterwards; what it
    holds then stays for later tests (it changes nothing but time)."""
    was = memo.enabled
    memo.clear()
    yield memo
    memo.configure(was)


def _chain_of_two(vlm):
    """Forget Dravik, then Mirel, on a fresh chain with an in-memory result cache."""
    chain = UnlearningChain(vlm, Cache(enabled=False), SMALL)
    results = [chain.forget(_forget_images(t), config=CFG, target=t) for t in ("Dravik", "Mirel")]
    states = [chain.adapter_state(k) for k in (1, 2)]
    chain.close()
    return results, states


def _same(a, b):
    """Everything a request reports but its timings and cache notes, and byte-identical adapter weights."""
    (ra, sa), (rb, sb) = a, b
    for x, y in zip(ra, rb):
        for field in ("target", "probes_before", "probes_after", "losses", "steps_run", "stopped_early", "null_space",
                      "retain_drift", "retain_drift_base", "embeddings", "text_identical", "text_logits_identical"):  # fmt: skip
            assert getattr(x, field) == getattr(y, field), field
    for x, y in zip(sa, sb):
        assert x.keys() == y.keys()
        assert all(x[k].dtype == y[k].dtype and x[k].numpy().tobytes() == y[k].numpy().tobytes() for k in x)


def test_a_request_is_the_same_with_the_memo_off_and_on(embedded, memo_state):
    from nscvf.method.shared import SharedBase
    from nscvf.method.warmup import warm_up

    memo_state.configure(False)
    assert warm_up(embedded, domain=SMALL) is None  # the app's warm-up with the memo off: nothing would be kept
    off = _chain_of_two(embedded)
    assert memo_state.stats() == {}  # off: nothing was kept
    memo_state.configure(True)
    # The process's warm-up request (the app runs it before serving; on another target, the last character)
    # fills the memo with the base model's features and chunks, and leaves no adapter behind.
    adapters = SharedBase.of(embedded).adapter_names()
    out = warm_up(embedded, domain=SMALL)
    assert out["target"] == world.CHARACTERS[-1].name not in ("Dravik", "Mirel")
    assert out["timings"]["seconds_per_step"] > 0  # its steps' pace calibrates the app's estimate (issue 19)
    assert SharedBase.of(embedded).adapter_names() == adapters
    warm = memo_state.stats()
    on = _chain_of_two(embedded)
    _same(off, on)
    used = {k: v["hits"] - warm.get(k, {}).get("hits", 0) for k, v in memo_state.stats().items()}
    # The requests after the warm-up one were served from the memo (else this test would compare nothing), and
    # the second request, after a forget request, saw its own state's features (else it would differ from off).
    assert used["render"] > 100 and used["features"] > 50 and used["covariance"] > 0 and used["image_inputs"] > 100


def test_a_chain_state_never_sees_the_features_of_another(embedded, memo_state):
    chain = UnlearningChain(embedded, Cache(enabled=False), SMALL)
    images = [world.render(c, 1_000_123) for c in world.CHARACTERS[:6]]
    base_key = state_memo.state_key(chain.shared, (), (), chain.state_fingerprint)
    base = state_memo.features(embedded, base_key, images)[1]
    chain.forget(_forget_images("Dravik"), config=CFG.replace(steps=2), target="Dravik")
    snap = chain.snapshot()
    key = state_memo.state_key(chain.shared, snap.adapters, snap.adapters, snap.fingerprint)
    assert key != base_key
    after = state_memo.features(chain.vlm, key, images)[1]
    memo_state.configure(False)
    fresh = chain.vlm.image_features(images)[1]
    assert torch.equal(after, fresh) and not torch.equal(after, base)
    # Only the base and the chain's own states have keys: a request's training adapter never does.
    assert state_memo.state_key(chain.shared, ("request_x",), snap.adapters, snap.fingerprint) is None
    chain.close()


def test_features_of_an_image_do_not_depend_on_its_batch(embedded):
    """What per-image features rest on: an image's features alone, in a batch of 16 and of 5 are the same bits."""
    images = [world.render(c, s) for c in world.CHARACTERS[:4] for s in range(4)]
    whole = embedded.image_features(images)[0]
    alone = [embedded.image_features([im])[0][0] for im in images[:3]]
    fives = [t for i in range(0, 16, 5) for t in embedded.image_features(images[i : i + 5])[0]]
    assert all(torch.equal(a, b) for a, b in zip(whole, alone)) and all(torch.equal(a, b) for a, b in zip(whole, fives))


def test_content_defined_chunks_survive_a_left_out_character():
    c = world.CHARACTERS
    fps = lambda chars: [hashlib.sha256(f"{ch.key}:{s}".encode()).hexdigest() for ch in chars for s in range(24)]  # noqa: E731
    whole, without = fps(c), fps(c[:3] + c[4:])
    keys = lambda f: {tuple(f[i] for i in r) for r in state_memo.chunks(f)}  # noqa: E731
    a, b = keys(whole), keys(without)
    assert sum(len(k) for k in a) == len(whole) and sum(len(k) for k in b) == len(without)
    shared = sum(len(k) for k in a & b)
    assert shared >= 0.7 * len(without), f"only {shared} of {len(without)} images in a shared chunk"
    assert state_memo.chunks([]) == []


def test_renders_are_drawn_once_and_handed_out_as_copies(memo_state):
    c = world.get_character("Lunet")
    first = world.render(c, 3)
    first.paste((0, 0, 0), (0, 0, 64, 64))  # a caller scribbles on its copy
    again = world.render(c, 3)
    memo_state.configure(False)
    drawn = world.render(c, 3)
    assert again.tobytes() == drawn.tobytes() != first.tobytes()
    assert memo_state.stats()["render"]["hits"] == 1


def test_memo_budgets_errors_and_switch(monkeypatch):
    m = Memo(enabled=True, budgets={"t": 3 * (4 * 10)})
    calls = []

    def compute(missing):
        calls.append(list(missing))
        return [torch.zeros(10) + i for i in missing]

    keys = ["a", "b", "c", "d"]
    values = m.get_many("t", keys, compute)
    assert calls == [[0, 1, 2, 3]] and [int(v[0]) for v in values] == [0, 1, 2, 3]
    assert m.stats()["t"]["entries"] == 3  # the budget holds three 40-byte tensors: the oldest went out
    m.get_many("t", ["b", "e"], compute)
    assert calls[-1] == [1]  # only the one not kept is computed, in one call
    with pytest.raises(ValueError):
        m.get("t", "x", lambda: (_ for _ in ()).throw(ValueError("bad input")))
    assert m.get("t", "x", lambda: "ok") == "ok"  # a failed computation leaves nothing behind
    m.get("t", "big", lambda: torch.zeros(1000))  # larger than the budget: computed, never kept
    assert "big" not in m._kinds["t"]
    monkeypatch.setenv("NSCVF_MEMO", "0")
    off = Memo()
    assert not off.enabled and off.get("t", "k", lambda: 1) == 1 and off.stats() == {}


def test_renders_are_chunked_per_character_so_a_new_target_reuses_every_other_chunk():
    """Issue 20: the protected set's covariance chunks follow the renders' characters (``world.GROUP_KEY``), so
    leaving one character out keeps every other chunk whole; images without a group keep content-defined cuts."""
    chars, d = world.CHARACTERS[:4], world.DISTRACTORS[:3]
    images = [world.render(c, s) for c in chars for s in range(3)] + [world.render(x, 0) for x in d]
    groups = state_memo.image_groups(images)
    assert groups[:3] == [chars[0].name] * 3 and groups[-3:] == ["distractors"] * 3
    assert world.render(chars[0], 0).copy().info[world.GROUP_KEY] == chars[0].name  # copies keep it
    fps = [image_fingerprint(im) for im in images]
    key = lambda f, g: {tuple(f[i] for i in part) for part in state_memo.chunks(f, g)}  # noqa: E731
    whole = key(fps, groups)
    assert len(whole) == 5 and sum(map(len, whole)) == len(images)  # 4 characters and the distractors
    without = key(fps[3:], groups[3:])  # the first character left out
    assert without <= whole and len(without) == 4
    untagged = state_memo.chunks(fps, [None] * len(fps))
    assert [i for part in untagged for i in part] == list(range(len(fps)))  # in order, content-defined
    assert state_memo.chunks(fps) == untagged
