"""Independent requests from the base (one chain each): weights, steps, answers, accuracies; compare two checkouts.

    PYTHONPATH=<checkout> python benchmarks/issue20/ident_base.py OUT Mirel,Dravik,Tobbin,Ebbo quick [METHOD]
"""

import json
import sys

import torch

from nscvf import world
from nscvf.cache import Cache
from nscvf.method import UnlearnConfig, UnlearningChain
from nscvf.models import load_model

vlm = load_model()
out, states = {}, {}
for tgt in sys.argv[2].split(","):
    ch = UnlearningChain(vlm, Cache(enabled=False))
    r = ch.forget(world.forget_examples(tgt), config=UnlearnConfig(evaluate=sys.argv[3], method=(sys.argv[4:] or ["nscvf"])[0]), target=tgt)
    out[tgt] = {"steps": r.steps_run, "after": r.probes_after, "drift": r.retain_drift, "eval": r.eval_after,
                "ns": r.null_space["summary"], "emb": r.embeddings["after"][:2]}  # fmt: skip
    states[tgt] = ch.adapter_state()
    ch.close()
    print(tgt, r.steps_run, r.retain_drift["mean"], flush=True)
torch.save(states, sys.argv[1] + ".pt")
json.dump(out, open(sys.argv[1] + ".json", "w"), default=str)
