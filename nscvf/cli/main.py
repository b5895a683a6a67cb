"""The ``nscvf`` command line. Every subcommand calls the same library functions as the app and tests.

A user error (bad image, unknown name, bad model path, absurd setting) prints one line on stderr saying
what is wrong and what to do, and exits with code 2. No traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from nscvf import world
from nscvf.cli.common import ProgressBar, StageBar, load_for, open_chain, result_folder, write_json
from nscvf.cli.research import cmd_bench, cmd_gold, cmd_relearn, cmd_teach
from nscvf.errors import InputError, NSCVFError
from nscvf.eval import evaluate
from nscvf.images import load_image
from nscvf.method.config import UnlearnConfig
from nscvf.method.outcome import assess
from nscvf.rates import pct
from nscvf.source import set_offline_default


def _positive_int(limit: int):
    def parse(v: str) -> int:
        try:
            n = int(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{v!r} is not a whole number") from None
        if not 1 <= n <= limit:
            raise argparse.ArgumentTypeError(f"{n} is out of range; use 1 to {limit}")
        return n

    return parse


def cmd_world_list(args) -> int:
    if args.json:
        entries = [
            {
                "name": c.name,
                "key": c.key,
                "traits": {"shape": c.shape, "colour": c.colour, "pattern": c.pattern, "accessory": c.accessory, "eyes": c.eyes},
                "facts": dict(c.facts),
                "neighbour": c.neighbour,
            }
            for c in world.CHARACTERS
        ]
        print(json.dumps(entries, indent=1))
        return 0
    for c in world.CHARACTERS:
        if args.facts:
            print(
                f"{c.name}\t{c.shape} {c.colour} {c.pattern} {c.accessory}\t{c.facts['town']}\t{c.facts['job']}"
                f"\t{c.facts['food']}\tneighbour: {c.neighbour or '-'}"
            )
        else:
            print(c.name)
    return 0


def cmd_world_render(args) -> int:
    c = world.get_character(args.character)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create output folder {out}: {e.strerror}") from None
    seeds = (world.heldout_seeds if args.heldout else world.train_seeds)(args.n, args.seed)
    for s in seeds:
        path = out / f"{c.key}_{s}.png"
        world.render(c, s, augment=not args.canonical).save(path)
        print(path)
    return 0


def cmd_train_base(args) -> int:
    if args.photo:
        return _train_photo(args)
    from nscvf.train_base import TrainBaseConfig, train_base  # torch: seconds to import, so only when training

    cfg = TrainBaseConfig()
    if args.quick:
        cfg = TrainBaseConfig(
            renders_per_named=40, renders_per_distractor=8, heldout_renders=4, vision_steps=40, language_steps=40, eval_every=20
        )
    if args.vision_from:
        cfg.vision_from = args.vision_from
    cfg.unknown = tuple(world.get_character(n).name for n in args.unknown)  # fails early on an unknown name
    if any(n is None for n in cfg.unknown):
        raise InputError("--unknown takes named characters (a distractor is unknown already)")
    report = train_base(args.out, cfg, progress=lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps(report["heldout"], indent=1))
    return 0


def _train_photo(args) -> int:
    """``train-base --photo``: the photo model (nscvf.train_photo), from the pretrained encoder."""
    from nscvf.train_photo import PhotoTrainConfig, train_photo  # torch: seconds to import, so only when training

    cfg = PhotoTrainConfig(steps=20, eval_every=10) if args.quick else PhotoTrainConfig()
    report = train_photo(args.out, cfg, progress=lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps({k: report[k] for k in ("command", "parameters", "train_images", "wall_seconds")}, indent=1))
    return 0


def cmd_ask(args) -> int:
    if not args.question.strip():
        raise InputError("the question is empty; put it in quotes after `nscvf ask`")
    image = load_image(args.image) if args.image else None
    vlm = load_for(args)
    print(vlm.ask(args.question, image))
    return 0


def _print_table(summary: dict) -> None:
    width = max(map(len, summary))
    for k, v in summary.items():
        shown = "-" if v is None else str(v).rjust(7) if k.endswith("_items") else pct(v, unit="%").rjust(7)  # a count
        print(f"{k:<{width}}  {shown}")


def cmd_eval(args) -> int:
    if args.target:
        world.get_character(args.target)  # fail early on an unknown name
    vlm = load_for(args)
    bar = ProgressBar("evaluating")
    res = evaluate(vlm, target=args.target, renders=args.renders, progress=bar)
    bar.close()
    _print_table(res["summary"])
    for k, v in res.get("mc", {}).items():
        print(f"mc.{k}: {pct(v, unit='%')}")
    print(f"{res['n_items']} questions in {res['seconds']} s")
    if args.json:
        write_json(args.json, res)
    return 0


def _config_from_args(args):
    changes = {"method": args.method}
    for name in ("steps", "lr", "lora_rank", "energy", "tau", "retain_weight", "answer_weight", "evaluate", "seed"):
        v = getattr(args, name, None)
        if v is not None:
            changes[name] = v
    return UnlearnConfig().replace(**changes)  # validated on construction: bad values fail before the model loads


def cmd_forget(args) -> int:
    cfg = _config_from_args(args)
    if bool(args.images) == bool(args.character):
        raise InputError("give either --images PATH... or --character NAME (exactly one)")
    target = None
    if args.character:
        target = world.get_character(args.character).name
        forget = world.forget_examples(target, args.n)
    else:
        forget = [load_image(p) for p in args.images]
    retain = [load_image(p) for p in args.retain] if args.retain else None
    out = result_folder(args.out)
    chain = open_chain(args)
    bar = StageBar()
    try:
        result = chain.forget(forget, retain, cfg, progress=bar, target=target)
    finally:
        bar.close()
    chain.save(out)
    _print_result(result, chain.domain.names_things)
    print(f"saved to {out}")
    return 0


def _print_result(r, is_world: bool) -> None:
    outcome = assess(r.to_dict(), is_world)
    print(
        f"request {r.step}: method={r.method} target={r.target or '?'} steps={r.steps_run}"
        f"{' (stopped early: forgotten)' if r.stopped_early else ''} time={r.timings.get('total')} s"
    )
    print(f"  outcome: {outcome.headline()}")
    for w in outcome.warnings:
        print(f"  WARNING: {w}")
    q = next(iter(r.probes_before["forget"]["answers"]))
    for b, a in list(zip(r.probes_before["forget"]["answers"][q], r.probes_after["forget"]["answers"][q]))[:4]:
        print(f"  {q!r}: {b!r} -> {a!r}")
    if r.eval_after:
        sb, sa = r.eval_before["summary"], r.eval_after["summary"]
        for k in ("target_name_acc", "target_name_acc_heldout", "target_unknown_rate", "retain_acc", "fact_text_acc"):
            if sa.get(k) is not None:
                print(f"  {k}: {pct(sb[k], unit='%')} -> {pct(sa[k], unit='%')}")
    ns = r.null_space["summary"]
    if ns.get("layers"):
        print(
            f"  null space: {ns['layers']} layers, mean kept rank {ns['mean_kept_rank']} "
            f"({pct(ns['mean_kept_fraction'], unit='%')} of dims) at energy {ns['energy']:g}"
        )
    print(
        f"  retain drift: mean {r.retain_drift['mean']} max {r.retain_drift['max']}; "
        f"text answers identical: {r.text_identical} (logits: {r.text_logits_identical})"
    )


def _model_args(sp) -> None:
    sp.add_argument(
        "--model",
        default=None,
        help="world (the drawn characters), photo (real photos), an HF id or a folder (default: $NSCVF_MODEL or world)",
    )
    sp.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    sp.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default: bf16 on CUDA)")
    sp.add_argument("--adapter", default=None, help="an unlearning result folder (from `nscvf forget`)")


def _everyday_parsers(sub) -> None:
    """world, train-base, ask, eval, forget."""
    w = sub.add_parser("world", help="the embedded concept world").add_subparsers(dest="world_command", required=True)
    wl = w.add_parser("list", help="named characters, one a line")
    wl.add_argument("--facts", action="store_true", help="also print traits, facts and the look-alike neighbour")
    wl.add_argument("--json", action="store_true", help="a JSON list: name, key, traits, facts, neighbour (or null)")
    wl.set_defaults(func=cmd_world_list)
    wr = w.add_parser("render", help="render images of a character as PNG files")
    wr.add_argument("--character", required=True)
    wr.add_argument("--n", type=_positive_int(1000), default=8)
    wr.add_argument("--seed", type=int, default=0, help="first render seed")
    wr.add_argument("--heldout", action="store_true", help="use held-out render seeds")
    wr.add_argument("--canonical", action="store_true", help="no augmentation")
    wr.add_argument("--out", required=True)
    wr.set_defaults(func=cmd_world_render)

    t = sub.add_parser("train-base", help="train the embedded base model from scratch")
    t.add_argument("--out", required=True)
    t.add_argument("--quick", action="store_true", help="a tiny smoke-test budget")
    t.add_argument("--vision-from", default=None, help="reuse the vision tower of an earlier run (skips stage 1)")
    t.add_argument("--photo", action="store_true", help="train the photo model (pretrained EfficientNet-Lite0 encoder; "
                   'needs pip install -e ".[photo-build]")')  # fmt: skip
    t.add_argument(
        "--unknown",
        action="append",
        default=[],
        metavar="NAME",
        help="a gold reference: the language stage answers 'I don't know' for this character's images (repeatable)",
    )
    t.set_defaults(func=cmd_train_base)

    a = sub.add_parser("ask", help="ask the model a question (text-only without --image)")
    a.add_argument("question")
    a.add_argument("--image", default=None)
    _model_args(a)
    a.set_defaults(func=cmd_ask)

    e = sub.add_parser("eval", help="evaluate on the embedded world")
    e.add_argument("--target", default=None, help="the forgotten character, reported separately")
    e.add_argument("--renders", type=_positive_int(50), default=3, help="images per character and render split")
    e.add_argument("--json", default=None, help="write the full results here")
    _model_args(e)
    e.set_defaults(func=cmd_eval)

    f = sub.add_parser("forget", help="forget a concept (one unlearning request)")
    f.add_argument("--images", nargs="+", default=None, help="images of the concept to forget")
    f.add_argument("--character", default=None, help="embedded world: forget this character (renders --n images)")
    f.add_argument("--n", type=_positive_int(64), default=8, help="with --character: how many renders")
    f.add_argument("--retain", nargs="+", default=None, help="images to keep (default for the embedded model: other characters)")
    f.add_argument("--method", default="nscvf", help="nscvf (default), nscvf_feature, cvf, nscvf_projector, ga, gd, kl, npo")
    f.add_argument("--continue-from", default=None, help="a previous --out folder: continual unlearning")
    f.add_argument("--out", required=True, help="folder for the adapters and report.json")
    f.add_argument("--steps", type=int, default=None)
    f.add_argument("--lr", type=float, default=None)
    f.add_argument("--lora-rank", type=int, default=None)
    f.add_argument("--energy", type=float, default=None, help="null-space cumulative-energy threshold")
    f.add_argument("--tau", type=float, default=None)
    f.add_argument("--retain-weight", type=float, default=None)
    f.add_argument("--answer-weight", type=float, default=None, help='answer-level term toward "I don\'t know" (0: off)')
    f.add_argument("--evaluate", default=None, help="none, quick or full")
    f.add_argument("--seed", type=int, default=None)
    _model_args(f)
    f.set_defaults(func=cmd_forget)


def _research_parsers(sub) -> None:
    """teach, relearn, bench, gold (nscvf.cli.research)."""
    tc = sub.add_parser("teach", help="teach the model a new concept from your images (then forget it)")
    tc.add_argument("--images", nargs="+", required=True, help="at least 3 images of the concept (any size, JPEG/PNG/...)")
    tc.add_argument("--name", required=True, help="the name to teach (e.g. Zorblat)")
    tc.add_argument("--fact", action="append", default=[], help="optional fact, e.g. --fact town=Paris (town, job, food)")
    tc.add_argument("--continue-from", default=None, help="a previous --out folder or exported zip: teach on top of it")
    tc.add_argument(
        "--out", required=True, help="folder for the adapters and report.json (accepted by ask --adapter, forget --continue-from)"
    )
    tc.add_argument("--steps", type=_positive_int(500), default=None)
    _model_args(tc)
    tc.set_defaults(func=cmd_teach)

    r = sub.add_parser("relearn", help="relearning attack: steps until a forgotten character is named again")
    r.add_argument("--character", required=True, help="embedded world: the character to bring back")
    r.add_argument("--k", type=_positive_int(64), default=2, help="training renders labelled with the name")
    r.add_argument("--steps", type=_positive_int(200), default=20, help="at most this many steps")
    r.add_argument("--heldout", type=_positive_int(64), default=8, help="held-out renders asked after every step")
    r.add_argument("--reference", action="store_true", help="also relearn an unseen distractor on the base model")
    r.add_argument("--json", default=None, help="write the result here")
    _model_args(r)
    r.set_defaults(func=cmd_relearn)

    b = sub.add_parser("bench", help="compare every method on the same targets and budget")
    b.add_argument("--quick", action="store_true",
                   help="the 4 gold-reference targets instead of all 24, and 4 methods (photo: its 8 concepts, 4 methods)")  # fmt: skip
    b.add_argument("--model", choices=["world", "photo"], default="world",
                   help="world: the drawn characters' grid; photo: the photo model's (its 8 concepts, photo evaluation)")  # fmt: skip
    b.add_argument("--methods", default=None, help="comma-separated subset (default: all)")
    b.add_argument("--steps", type=_positive_int(2000), default=None, help="step budget (default: UnlearnConfig's)")
    b.add_argument("--renders", type=_positive_int(20), default=2, help="evaluation images per character and split")
    b.add_argument("--continual", type=int, default=8, help="sequential requests in the continual run (0: skip)")
    b.add_argument("--seeds", type=_positive_int(10), default=3, help="seeds per target (forget images and optimisation)")
    b.add_argument("--no-relearn", action="store_true", help="skip the relearning attack after each request")
    b.add_argument("--json", default=None)
    b.add_argument("--md", default=None)
    b.add_argument(
        "--out", default=None, help="run folder: one result file per job; rerun into it to resume (default: a temporary one)"
    )
    b.add_argument(
        "--backend", choices=("local", "ray"), default="local", help="local process pool, or Ray (the [cluster] extra)"
    )
    b.add_argument("--workers", type=_positive_int(256), default=1, help="local: worker processes (each loads the model once)")
    b.add_argument("--threads", type=_positive_int(256), default=None, help="torch threads per job (default: CPUs / workers)")
    b.add_argument("--address", default=None, help="ray: an existing cluster's address (default: start a local Ray)")
    b.add_argument("--num-cpus", type=float, default=1, help="ray: CPUs per job")
    b.add_argument("--num-gpus", type=float, default=0, help="ray: GPUs per job (e.g. 1 on a GPU cluster)")
    b.add_argument("--max-retries", type=int, default=2, help="ray: retries of a job whose worker died")
    b.add_argument("--max-jobs", type=_positive_int(10**6), default=None, help="run at most this many missing jobs, then stop")
    b.add_argument(
        "--from-json", default=None, help="re-render the tables of a saved run (--json of an earlier bench); runs nothing"
    )
    b.add_argument("--from-results", default=None, help="build the tables from a run folder's result files (--out); runs nothing")
    b.set_defaults(func=cmd_bench)

    g = sub.add_parser("gold", help="train the gold references (a target never learned) and write their evaluation")
    g.add_argument("--vision-from", default="assets/model", help="the base model whose vision stage the golds share")
    g.add_argument("--targets", default=None, help="comma-separated (default: nscvf.bench.evidence.GOLD_TARGETS)")
    g.add_argument("--out", default="runs/gold", help="folder for the gold models (not committed)")
    g.add_argument("--json-dir", default="assets/gold", help="folder for the committed evaluation records")
    g.add_argument("--renders", type=_positive_int(20), default=2, help="evaluation renders (the benchmark's --renders)")
    g.add_argument("--models-from", default=None, help="evaluate gold models trained earlier (skip training)")
    g.add_argument("--quick", action="store_true", help="a tiny smoke-test budget")
    g.set_defaults(func=cmd_gold)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nscvf", description="Null-space constrained contrastive visual forgetting for MLLMs.")
    sub = p.add_subparsers(dest="command", required=True)
    _everyday_parsers(sub)
    _research_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    args = build_parser().parse_args(argv)
    # Offline mode only for a local model (the embedded one by default); a Hub id in --model or $NSCVF_MODEL
    # downloads. Set before anything imports huggingface_hub (the commands import the heavy modules).
    set_offline_default(source=getattr(args, "model", None))
    try:
        return args.func(args)
    except NSCVFError as e:
        print(f"nscvf: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nscvf: cancelled", file=sys.stderr)
        return 130
