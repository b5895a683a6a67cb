"""The research commands of the CLI: teach a concept, the relearning attack, the benchmark, the golds.

The engine, the model loader and the benchmark runner import torch (seconds): imported inside the command
that needs them, so ``nscvf --help`` and ``nscvf world list`` stay instant."""

from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
from pathlib import Path

from nscvf import bench, world
from nscvf.bench import evidence
from nscvf.cli.common import StageBar, load_for, load_model, open_chain, result_folder
from nscvf.errors import InputError
from nscvf.images import load_image
from nscvf.method.outcome import assess


def cmd_teach(args) -> int:
    from nscvf.method.teach import TeachConfig  # torch: see the module docstring

    facts = {}
    for f in args.fact:
        key, sep, value = f.partition("=")
        if not sep or not value.strip():
            raise InputError(f"--fact {f!r}: write it as name=value, e.g. --fact town=Paris")
        facts[key.strip()] = value.strip()
    images = [load_image(p) for p in args.images]
    out = result_folder(args.out)
    chain = open_chain(args)
    cfg = TeachConfig() if args.steps is None else TeachConfig(steps=args.steps)
    bar = StageBar()
    try:
        result = chain.teach(images, args.name, facts or None, cfg, progress=bar)
    finally:
        bar.close()
    chain.save(out)
    print(f"request {result.step}: {assess(result.to_dict()).headline()} ({result.steps_run} steps, {result.timings['total']} s)")
    for k, v in result.measures.items():
        print(f"  {k}: {v}")
    print(f"saved to {out}")
    return 0


def cmd_relearn(args) -> int:
    from nscvf.method.relearn import relearn  # torch: see the module docstring

    c = world.get_character(args.character)
    vlm = load_for(args)
    train, held = world.forget_examples(c, args.k), world.heldout_examples(c, args.heldout)
    bar = StageBar()
    try:
        out = {
            "character": c.name,
            "adapter": args.adapter,
            "relearn": relearn(vlm, train, c.name, held, args.steps, progress=bar),
        }
        if args.reference:  # a look the model never knew, taught the same name on the base model
            d = world.HELDOUT_DISTRACTORS[0]
            train, held = world.forget_examples(d, args.k), world.heldout_examples(d, args.heldout)
            base = getattr(vlm, "chain", None)
            out["reference"] = relearn(base.base_vlm if base else vlm, train, c.name, held, args.steps, progress=bar)
    finally:
        bar.close()
    for key in ("relearn", "reference"):
        if key in out:
            at = out[key]["named_at"]
            print(f"{key}: {'not named again within ' + str(args.steps) + ' steps' if at is None else f'named again after {at} step(s)'}"
                  f" (k={args.k}; named fraction per step {out[key]['curve']})")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


def cmd_bench(args) -> int:
    if args.from_json or args.from_results:
        res = _saved_bench(args)
        bench.write(res, args.json, args.md)
        print(bench.to_markdown(res))
        return 0
    methods = args.methods.split(",") if args.methods else None
    from nscvf.bench.grid import GridOptions, run_grid  # torch: see the module docstring
    from nscvf.method.methods import all_methods  # torch (the methods' losses)

    if methods:
        bad = [m for m in methods if m not in all_methods()]
        if bad:
            raise InputError(f"unknown method(s) {', '.join(bad)}; choose from {', '.join(all_methods())}")
    if args.backend == "ray" and importlib.util.find_spec("ray") is None:
        raise InputError('--backend ray needs Ray: pip install -e ".[cluster]"')
    settings = bench.BenchSettings(
        quick=args.quick,
        steps=args.steps,
        methods=tuple(methods) if methods else None,
        renders=args.renders,
        seeds=args.seeds,
        relearn=not args.no_relearn,
        continual_n=args.continual,
        model=args.model,
    )
    opts = GridOptions(
        backend=args.backend, workers=args.workers, threads=args.threads, address=args.address, num_cpus=args.num_cpus,
        num_gpus=args.num_gpus, max_retries=args.max_retries, max_jobs=args.max_jobs,
    )  # fmt: skip
    command = "nscvf " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("nscvf") else "nscvf bench"
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or tmp
        try:
            rep = run_grid(settings, out, opts, progress=say, command=command)
        except KeyboardInterrupt:
            say(f"interrupted: the finished jobs are kept in {out}; the same command runs only what is missing")
            return 130
        for name, err in rep.failed.items():
            say(f"FAILED {name}: {err} (traceback in {Path(out) / 'jobs'})")
        if not rep.complete:
            left = rep.total - len(rep.ran) - len(rep.skipped)
            say(f"{left} of {rep.total} jobs have no result; rerun the same command to run them")
        res = bench.assemble(out)
    bench.write(res, args.json, args.md)
    print(bench.to_markdown(res))
    return 0 if rep.complete else 1


def _saved_bench(args) -> dict:
    """A saved benchmark re-rendered: a --json file (its summary recomputed) or a run folder's job files."""
    if args.from_results:
        return bench.assemble(args.from_results)
    try:
        return bench.resummarise(json.loads(Path(args.from_json).read_text()))
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"{args.from_json}: not a benchmark result ({e}); pass the --json file of `nscvf bench`") from None


def cmd_gold(args) -> int:
    """Train the gold references (the base recipe with one target unknown) and commit what the benchmark
    compares against: ``assets/gold/<key>.json`` (answers, P("I don't know"), profile, relearning steps)."""
    from nscvf.train_base import TrainBaseConfig, train_golds  # torch: see the module docstring

    targets = [world.get_character(n) for n in (args.targets.split(",") if args.targets else evidence.GOLD_TARGETS)]
    if any(c.is_distractor for c in targets):
        raise InputError("gold targets are named characters (a distractor is unknown already)")
    cfg = TrainBaseConfig(vision_from=args.vision_from)
    if args.quick:
        cfg = TrainBaseConfig(
            vision_from=args.vision_from, renders_per_named=40, renders_per_distractor=8, heldout_renders=4,
            extra_distractors=20, language_steps=40, eval_every=20,
        )  # fmt: skip
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    if args.models_from:
        reports = {c.name: json.loads((Path(args.models_from) / c.key / "training_report.json").read_text()) for c in targets}
        root = Path(args.models_from)
    else:
        reports = train_golds(args.out, [c.name for c in targets], cfg, progress=say)
        root = Path(args.out)
    out_dir = Path(args.json_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for c in targets:
        rep = reports[c.name]
        training = {
            "command": f"nscvf gold --vision-from {args.vision_from} --out {args.out}",
            "recipe": "the base model's training recipe (same seed, same config) with its vision stage loaded from "
            f"{args.vision_from} and the language stage answering 'I don't know who this is.' for every image of {c.name} "
            "(its text facts still taught)",
            "wall_seconds": rep["wall_seconds"],
            "heldout": rep["heldout"],
        }
        say(f"gold {c.name}: evaluating")
        record = evidence.gold_record(load_model(str(root / c.key)), c.name, args.renders, training, progress=say)
        path = evidence.gold_path(c.name, out_dir)
        path.write_text(json.dumps(record, indent=0))
        print(f"{c.name}: split accuracy {record['split_accuracy']}, relearning steps {record['relearn_steps']} -> {path}")
    return 0
