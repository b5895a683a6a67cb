"""The research commands of the CLI: teach a concept, the relearning attack, the benchmark."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from nscvf.cli_common import StageBar, load_for
from nscvf.errors import InputError


def cmd_teach(args) -> int:
    from nscvf.images import load_image
    from nscvf.method.chain import UnlearningChain
    from nscvf.method.outcome import assess
    from nscvf.method.teach import TeachConfig
    from nscvf.models import load_model

    facts = {}
    for f in args.fact:
        key, sep, value = f.partition("=")
        if not sep or not value.strip():
            raise InputError(f"--fact {f!r}: write it as name=value, e.g. --fact town=Paris")
        facts[key.strip()] = value.strip()
    images = [load_image(p) for p in args.images]
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not (out / "chain.json").exists():
        raise InputError(f"{out} exists and is not an unlearning result folder; choose a new --out")
    vlm = load_model(args.model, device=args.device, dtype=args.dtype)
    chain = UnlearningChain.load(vlm, args.continue_from) if args.continue_from else UnlearningChain(vlm)
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
    from nscvf import world
    from nscvf.method.relearn import relearn

    c = world.get_character(args.character)
    vlm = load_for(args)
    train = [world.render(c, s) for s in world.train_seeds(args.k, world.SEEDS["forget_example"])]
    held = [world.render(c, s) for s in world.heldout_seeds(args.heldout, world.SEEDS["eval_heldout"])]
    bar = StageBar()
    try:
        out = {
            "character": c.name,
            "adapter": args.adapter,
            "relearn": relearn(vlm, train, c.name, held, args.steps, progress=bar),
        }
        if args.reference:  # a look the model never knew, taught the same name on the base model
            d = world.HELDOUT_DISTRACTORS[0]
            train = [world.render(d, s) for s in world.train_seeds(args.k, world.SEEDS["forget_example"])]
            held = [world.render(d, s) for s in world.heldout_seeds(args.heldout, world.SEEDS["eval_heldout"])]
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
    from nscvf import bench

    if args.from_json:
        try:
            res = bench.resummarise(json.loads(Path(args.from_json).read_text()))
        except (OSError, ValueError, KeyError) as e:
            raise InputError(f"{args.from_json}: not a benchmark result ({e}); pass the --json file of `nscvf bench`") from None
        bench.write(res, args.json, args.md)
        print(bench.to_markdown(res))
        return 0
    methods = args.methods.split(",") if args.methods else None
    if methods:
        from nscvf.method.methods import all_methods

        bad = [m for m in methods if m not in all_methods()]
        if bad:
            raise InputError(f"unknown method(s) {', '.join(bad)}; choose from {', '.join(all_methods())}")
    res = bench.run_bench(
        quick=args.quick,
        steps=args.steps,
        methods=methods,
        renders=args.renders,
        continual_n=args.continual,
        progress=lambda m: print(m, file=sys.stderr, flush=True),
        partial=(lambda r: bench.write(r, args.json + ".partial", None)) if args.json else None,
    )
    res["command"] = "nscvf " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("nscvf") else "nscvf bench"
    bench.write(res, args.json, args.md)
    print(bench.to_markdown(res))
    return 0
