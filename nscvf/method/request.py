"""One unlearning request as five phases over one :class:`RequestState`:

    prepare -> references -> null_space -> optimise -> measure

Each phase is a short function that reads and fills the state. The request runs on the shared base model
(:mod:`nscvf.method.shared`): its new LoRA adapter is added next to the chain's earlier ones, trained with
those active, and deleted again if anything fails, so a failed or cancelled request leaves the chain and
the model as they were and never copies the model. The request never calls back into the chain: it reads
a :class:`ChainSnapshot` and returns the result and the adapter's weights.
"""

from __future__ import annotations

import random
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from nscvf.cache import Cache, image_fingerprint, image_set_fingerprint
from nscvf.errors import Cancelled, InputError, ResourceError
from nscvf.eval import evaluate
from nscvf.images import ensure_images
from nscvf.method import state_memo
from nscvf.method.config import UnlearnConfig
from nscvf.method.context import StepContext, activation_checkpointing, answer_batches
from nscvf.method.contrastive import pooled, retain_drift
from nscvf.method.domain import Domain, augment
from nscvf.method.lora import lora_config
from nscvf.method.memory import check_step_memory, checkpointing_on
from nscvf.method.methods import get_method, method_config
from nscvf.method.nullspace import lora_layers, null_spaces, project_lora_A
from nscvf.method.outcome import forget_set_problem, identification
from nscvf.method.probes import cached_evaluation, probe_answers, renders_for
from nscvf.method.result import UnlearnResult
from nscvf.method.state_memo import features, image_inputs, state_key, text_logits


@dataclass
class ChainSnapshot:
    """What a request reads of the chain it extends (the chain itself is not touched)."""

    shared: object  # SharedBase
    domain: Domain
    cache: Cache
    adapters: tuple  # the live adapter names of the chain's requests, in order
    forgotten: list  # targets of the chain's forget requests
    protected: list  # (target, images): what protects each earlier request's outcome in later ones
    fingerprint: str  # the chain state's fingerprint (cache keys)
    index: int  # this request's number (1-based)
    taught: dict = field(default_factory=dict)  # taught concept -> (adapters before its teach request, its images)


@dataclass
class Request:
    """A request's inputs, as given (validated by :func:`prepare`)."""

    forget_images: object
    retain_images: object = None
    config: UnlearnConfig = field(default_factory=UnlearnConfig)
    target: str | None = None
    region_images: object = None


class _StopTraining(Exception):
    """The caller's stop signal, raised at a step boundary: training ends, what it learned is kept."""


@dataclass
class RequestState:
    """Everything the phases read and write."""

    before: ChainSnapshot
    cfg: UnlearnConfig
    progress: object = None
    cancel: object = None
    stop: object = None  # an Event: stop training at the next step, keep and measure what was learned
    partial: bool = False
    method: object = None
    forget: list = field(default_factory=list)
    retain: list = field(default_factory=list)
    region_images: list = field(default_factory=list)
    region_adapters: tuple | None = None  # the state whose features of region_images are the region (None: before)
    target: str | None = None
    questions: list = field(default_factory=list)
    probes_before: dict = field(default_factory=dict)
    eval_before: dict | None = None
    adapter: str = ""
    work: object = None  # the model with the chain's adapters and this request's
    layers: dict = field(default_factory=dict)
    refs: dict = field(default_factory=dict)
    spaces: dict = field(default_factory=dict)
    losses: list = field(default_factory=list)
    steps_run: int = 0
    stopped_early: bool = False
    timings: dict = field(default_factory=dict)
    cache_info: dict = field(default_factory=dict)
    rng: random.Random = field(default_factory=random.Random)
    current: str = "starting"  # the stage running now (named in error messages)

    def stage(self, name: str, done: int = 0, total: int = 1) -> None:
        """Report progress; the point where Cancel is honoured."""
        self.current = name
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled("cancelled; the model is unchanged")
        if name.startswith("step ") and self.stop is not None and self.stop.is_set() and self.steps_run > 0:
            raise _StopTraining
        if self.progress is not None:
            self.progress(name, done, total)

    @contextmanager
    def timed(self, name: str):
        t = time.time()
        yield
        self.timings[name] = round(self.timings.get(name, 0) + time.time() - t, 3)

    def previous(self):
        """The model as the chain is before this request (the original model for the first request)."""
        return self.before.shared.view(self.before.adapters)

    def state(self, adapters) -> tuple | None:
        """The memo key of the model state with ``adapters`` active (:func:`state_memo.state_key`)."""
        b = self.before
        return state_key(b.shared, adapters, b.adapters, b.fingerprint)


def run_request(
    before: ChainSnapshot, request: Request, progress=None, cancel=None, stop=None
) -> tuple[UnlearnResult, dict, str, list]:
    """Run the five phases. Returns (result, the new adapter's peft state dict on the CPU, its live name,
    the forget images as read).
    ``cancel`` (an Event) abandons the request; ``stop`` ends training early and keeps a partial request."""
    from peft import get_peft_model_state_dict  # peft: heavy, only when a request runs

    cfg = method_config(request.config)  # a new config (a valid one: UnlearnConfig validates on construction)
    st = RequestState(before, cfg, progress, cancel, stop, rng=random.Random(cfg.seed))
    t0 = time.time()
    torch.manual_seed(cfg.seed)
    prepare(st, request)
    try:
        references(st)
        null_space(st)
        try:
            optimise(st)
        except _StopTraining:
            st.partial = True
        result = measure(st)
        result.partial = st.partial
        with before.shared.lock:
            state = get_peft_model_state_dict(before.shared.peft, adapter_name=st.adapter)
            state = {k: v.detach().cpu().clone() for k, v in state.items()}
    except BaseException as e:
        # Never lose work: a failed or cancelled request leaves the chain and the model as they were.
        if st.adapter:
            before.shared.delete_adapters([st.adapter])
        if isinstance(e, torch.OutOfMemoryError):
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            raise ResourceError(
                f"out of memory at '{st.current}': raise micro_batches, lower retain_batch or the image resolution "
                "(or use fewer forget images); the model is unchanged"
            ) from None
        raise
    result.timings = st.timings | {"total": round(time.time() - t0, 3)}
    result.cache = st.cache_info
    return result, state, st.adapter, st.forget


# ----------------------------------------------------------------------------------- prepare


def prepare(st: RequestState, request: Request) -> None:
    """Read the images, ask the model about them, name the target, pick retain and region images and
    evaluate the model before the request (cached per chain state)."""
    cfg, b, dom = st.cfg, st.before, st.before.domain
    st.method = get_method(cfg.method, cfg)
    st.stage("reading images")
    with st.timed("read"):
        images = request.forget_images
        if images is None or len(images) == 0:
            raise InputError("no forget images: give at least one image of the concept to forget")
        if len(images) > cfg.max_forget_images:
            raise InputError(f"{len(images)} forget images is more than max_forget_images={cfg.max_forget_images}")
        st.forget = ensure_images(images)
    st.stage("base answers")
    with st.timed("base_answers"):
        st.questions = dom.probe_questions()
        st.probes_before = cached_probes(st)
        identity = st.probes_before["forget"]["answers"][st.questions[0]]
        st.target = dom.resolve_target(request.target, identity, b.taught)
        if dom.names_things and st.target not in b.taught:  # never trained silently under another name (issue 19)
            problem = forget_set_problem(identification(identity, st.target), st.target)
            if problem:
                raise InputError(problem)
    with st.timed("images"):
        if request.retain_images is None:
            # Earlier targets are not retained: they are protected in their forgotten state instead.
            st.retain = dom.retain_images([st.target, *b.forgotten])
        else:
            st.retain = ensure_images(request.retain_images)
            if not st.retain:
                raise InputError("the retain set is empty: pass images of what must be kept, or none for the default")
        regions = request.region_images
        st.region_images = dom.region_images() if regions is None else ensure_images(regions)
    if regions is None and st.target in b.taught:
        # A taught concept's "unknown" is where its images were before it was taught: pull them back there
        # (the distractors' region is far from photographs; pulling them there moved everything, measured).
        st.region_adapters, images = b.taught[st.target]
        rng = random.Random(cfg.seed + 7)
        st.region_images = list(images) + [augment(im, rng) for im in images for _ in range(3)]
    if dom.can_evaluate(st.target) and cfg.evaluate != "none":
        st.stage("evaluating (before)")
        with st.timed("eval_before"):
            st.eval_before, how = cached_evaluation(b.cache, b.fingerprint, st.previous(), st.target, cfg.evaluate, b.forgotten)
            st.cache_info["eval_before"] = how


def cached_probes(st: RequestState) -> dict:
    b = st.before
    key = ("probes", b.fingerprint, image_set_fingerprint(st.forget), tuple(st.questions))
    hit = b.cache.get(key)
    st.cache_info["base_answers"] = "computed" if hit is None else "reused"
    if hit is None:
        hit = probe_answers(st.previous(), b.domain, st.forget, st.questions, st.state(b.adapters))
        b.cache.set(key, hit)
    return hit


# -------------------------------------------------------------------------------- references


def references(st: RequestState) -> None:
    """Add this request's adapter, and compute the frozen references of the loss with the chain's state
    before the request: the target's and retained images' features, the region, the answer batches."""
    b, cfg = st.before, st.cfg
    shared = b.shared
    st.adapter = shared.new_name(f"request_{b.index}")
    shared.add_adapter(st.adapter, lora_config(shared.base_vlm, cfg))
    st.work = shared.view(b.adapters + (st.adapter,))
    with shared.lock:
        st.layers = lora_layers(shared.peft, st.adapter)
        language = st.work.language_parameter_names()
        trainable = [n for n, p in shared.peft.base_model.model.named_parameters() if f".{st.adapter}." in n]
        assert trainable and not any(n in language for n in trainable), "a language-model parameter is trainable"
    with st.timed("references"):
        prev = st.previous()
        views = [
            im if v == 0 or not cfg.augment else augment(im, st.rng) for im in st.forget for v in range(4)
        ]  # fmt: skip
        state = st.state(b.adapters)
        refs = {"forget_inputs": image_inputs(prev, views)}
        refs["retain_inputs"] = image_inputs(prev, st.retain)
        with torch.no_grad():
            orig, _ = features(prev, state, st.forget)
            refs["forget_orig_pooled"] = torch.stack([pooled(t[None].float())[0] for t in orig]).to(prev.device)
            refs["retain_orig"], _ = features(prev, state, st.retain)
            region = b.adapters if st.region_adapters is None else st.region_adapters
            refs["region"] = features(b.shared.view(region), st.state(region), st.region_images)[1].to(prev.device)
        if st.method.needs_answers or cfg.answer_weight > 0:
            qs, fa = st.questions, st.probes_before["forget"]["answers"]
            f_items = [(st.forget[i], q, fa[q][i]) for i in range(len(st.forget)) for q in qs]
            r_imgs = st.rng.sample(st.retain, min(16, len(st.retain)))
            unknown = st.before.domain.unknown_answer
            refs["answers"] = answer_batches(prev, f_items, r_imgs, qs[0], unknown, cfg.micro_batches, state,
                                             st.method.answer_batches)  # fmt: skip
        st.refs = refs
    # CUDA: refuse a step that will not fit, before any optimisation (the CPU is not checked).
    estimate = check_step_memory(st.work, cfg, refs, checkpointing_on(cfg, st.work.device), st.method.answer_batches)
    if estimate is not None:
        st.timings["step_memory_estimate_gib"] = estimate["step_gib"]


# -------------------------------------------------------------------------------- null space


def null_space(st: RequestState) -> None:
    """The null space of the protected inputs (retained images, the domain's protected set and earlier
    targets in their forgotten state) per tuned layer; A <- A P once before training (METHOD.md)."""
    cfg, b = st.cfg, st.before
    if not (st.method.null_space and cfg.null_space):
        return
    st.stage("null space")
    with st.timed("null_space"), b.shared.thread_count():
        earlier = [im for target, images in b.protected if target != st.target for im in images]
        protect = list(st.retain) + b.domain.protect_images(st.target) + earlier
        fps = [image_fingerprint(im) for im in protect]  # once: for the disk key and the memo's chunks
        key = ("cov", b.fingerprint, image_set_fingerprint(protect, fps), tuple(sorted(st.layers)), state_memo.ORDER)
        hit = b.cache.get(key)
        st.cache_info["covariance"] = "computed" if hit is None else "reused"
        if hit is None:
            covs = protected_covariances(st, protect, fps)
            arrays = {id(s): s.cpu().numpy() for s, _ in covs.values()}  # one array per shared input
            b.cache.set(key, {n: (arrays[id(s)], c) for n, (s, c) in covs.items()})
        else:
            device = st.work.device
            tensors = {id(a): torch.from_numpy(a).to(device) for a, _ in hit.values()}  # aliases stay shared
            covs = {n: (tensors[id(a)], c) for n, (a, c) in hit.items()}
        st.spaces = null_spaces(covs, cfg.energy, cfg.relative_threshold)
        if all(s.kept_rank == 0 for s in st.spaces.values()):
            raise InputError(
                f"the retain set leaves no null space in any layer at energy={cfg.energy:g}: "
                "raise the energy threshold (e.g. 1e-3) or use fewer retain images"
            )
        with b.shared.lock:
            project_lora_A(st.layers, st.spaces, st.adapter)


def protected_covariances(st: RequestState, protect: list, fingerprints: list[str]) -> dict:
    """Sum of x x^T of every tuned layer's inputs over the protected images, as the model computes them
    in the chain's state before the request (this request's adapter is still zero)."""

    def progress(done: int, total: int) -> None:
        st.stage("null space", done, total)

    return state_memo.protected_covariances(st.work, st.state(st.before.adapters), st.layers, protect, progress, fingerprints)


# ---------------------------------------------------------------------------------- optimise


def optimise(st: RequestState) -> None:
    """AdamW on this request's LoRA parameters; A <- A P after every step for null-space methods; stop
    once the forget images and fixed augmented views of them are forgotten (checked every few steps).
    A step's batch is drawn once and run as ``micro_batches`` micro-batches whose gradients accumulate to
    the one-batch gradient (each loss is its share of the step's mean). Each step holds the shared model
    only for itself: other sessions' calls run between steps."""
    cfg, shared, work = st.cfg, st.before.shared, st.work
    ctx = StepContext(work, cfg, st.rng, st.refs)
    opt = torch.optim.AdamW(shared.adapter_parameters(st.adapter), lr=cfg.lr, weight_decay=0.0)
    checkpointing = checkpointing_on(cfg, work.device)
    # Checking the given images alone stopped while new renders of the target were still named (measured).
    view_rng = random.Random(cfg.seed + 1)
    check = list(st.forget) + [augment(im, view_rng) for im in st.forget for _ in range(cfg.check_views)]
    t_opt, t_proj = time.time(), 0.0
    for k in range(cfg.steps):
        st.stage(f"step {k + 1}/{cfg.steps}", k, cfg.steps)
        with shared.using(work.adapters, train=True, trainable=st.adapter), activation_checkpointing(shared.model, checkpointing):
            opt.zero_grad(set_to_none=True)
            ctx.begin_step()
            loss, logs = 0.0, {}
            for j in range(cfg.micro_batches):
                ctx.micro(j)
                part, part_logs = st.method.loss(ctx)
                if part.requires_grad:  # a micro-batch with no item of any term has nothing to back-propagate
                    part.backward()
                loss += part.item()
                logs = {a: logs.get(a, 0.0) + v for a, v in part_logs.items()}
            opt.step()
            tp = time.time()
            project_lora_A(st.layers, st.spaces, st.adapter)
            t_proj += time.time() - tp
        st.steps_run = k + 1
        st.losses.append({"step": k + 1, "loss": round(loss, 5), **{a: round(v, 5) for a, v in logs.items()}})
        due = cfg.stop_when_forgotten and k + 1 >= cfg.min_steps and (k + 1) % cfg.check_every == 0 and k + 1 < cfg.steps
        if due and st.before.domain.forgotten(work, check, st.questions[0], st.refs["region"], st.refs["forget_orig_pooled"]):
            st.stopped_early = True
            break
    st.timings["optimise"] = round(time.time() - t_opt, 3)
    st.timings["projection"] = round(t_proj, 4)
    st.timings["seconds_per_step"] = round((time.time() - t_opt) / max(1, st.steps_run), 4)


# ----------------------------------------------------------------------------------- measure


def measure(st: RequestState) -> UnlearnResult:
    """Answers and evaluation after the request; text answers and logits and retain drift against the
    state before the request (what this request changed) and drift against the original model (what the
    chain changed); the embedding-plot data and the null space's per-layer report."""
    cfg, b, work, base, prev = st.cfg, st.before, st.work, st.before.shared.base_vlm, st.previous()
    st.stage("evaluating")
    with st.timed("eval_after"):
        probes_after = probe_answers(work, b.domain, st.forget, st.questions)
        eval_after = None
        if st.eval_before is not None:
            eval_after = evaluate(work, st.target, renders=renders_for(cfg.evaluate), mc=cfg.evaluate == "full", earlier=b.forgotten,
                                  progress=lambda d, n: st.stage("evaluating", d, n))  # fmt: skip
        text_qs = b.domain.text_questions() or ["What is this?"]
        logits_identical = bool(torch.equal(work.text_logits(text_qs), text_logits(prev, st.state(b.adapters), text_qs)))
        # Drift of what is retained (earlier targets are forgotten on purpose).
        held, what = b.domain.drift_images([st.target, *b.forgotten], st.retain)
        after = work.image_features(held)[0]
        drift = retain_drift(after, features(prev, st.state(b.adapters), held)[0]) | {"images": what}
        drift_base = drift if prev is base else retain_drift(after, features(base, st.state(()), held)[0]) | {"images": what}
        st.stage("evaluating")
        embeddings = embedding_data(st)
    text_before = st.probes_before.get("text", {}).get("answers")
    return UnlearnResult(
        step=b.index,
        adapter_name=f"request_{b.index}",
        method=cfg.method,
        config=cfg.to_dict(),
        target=st.target,
        n_forget=len(st.forget),
        n_retain=len(st.retain),
        probes_before=st.probes_before,
        probes_after=probes_after,
        eval_before=st.eval_before,
        eval_after=eval_after,
        null_space=null_space_report(st),
        retain_drift=drift,
        retain_drift_base=drift_base,
        text_identical=probes_after.get("text", {}).get("answers") == text_before,
        text_logits_identical=logits_identical,
        steps_run=st.steps_run,
        stopped_early=st.stopped_early,
        losses=st.losses,
        embeddings=embeddings,
    )


def null_space_report(st: RequestState) -> dict:
    """Per-layer kept rank and energy, and a summary (users need to see what the threshold kept)."""
    spaces, cfg = st.spaces, st.cfg
    if not spaces:
        return {"summary": {"constrained": False}, "layers": {}}
    summary = {
        "energy": cfg.energy,
        "relative_threshold": cfg.relative_threshold,
        "layers": len(spaces),
        "mean_kept_rank": round(sum(s.kept_rank for s in spaces.values()) / len(spaces), 2),
        "mean_kept_fraction": round(sum(s.kept_rank / s.dim for s in spaces.values()) / len(spaces), 4),
        "max_energy_in_null_space": max(s.discarded_energy for s in spaces.values()),
    }
    return {"summary": summary, "layers": {n: s.stats() for n, s in spaces.items()}}


def embedding_data(st: RequestState) -> dict:
    """Pooled features z(x) of the forget images, retained images and the unknown region, before the
    request (the chain's state) and after it: the data of the embedding plots."""
    keep, keep_labels = st.before.domain.plot_points(st.target, st.retain)
    region = st.region_images if st.region_adapters is None else st.before.domain.region_images()
    unknown = region[:24]
    images = st.forget + keep + unknown
    groups = ["forget"] * len(st.forget) + ["retain"] * len(keep) + ["unknown"] * len(unknown)
    labels = [f"forget #{i + 1}" for i in range(len(st.forget))] + keep_labels + ["unknown region"] * len(unknown)
    _, after = st.work.image_features(images)
    prev, state = st.previous(), st.state(st.before.adapters)
    before = torch.cat([features(prev, state, part)[1].reshape(-1, after.shape[-1]) for part in (st.forget, keep, unknown)])
    return {
        "groups": groups,
        "labels": labels,
        "before": [[round(v, 5) for v in row] for row in before.tolist()],
        "after": [[round(v, 5) for v in row] for row in after.tolist()],
    }
