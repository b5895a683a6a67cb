"""Run a two-request chain (Mirel then Dravik) and save adapter weights and answers: compare two checkouts."""
import json
import sys
import time

import torch

from nscvf import world
from nscvf.cache import Cache
from nscvf.method import UnlearnConfig, UnlearningChain
from nscvf.models import load_model

vlm = load_model()
ch = UnlearningChain(vlm, Cache(enabled=False))
out = {}
t = time.process_time()
w = time.time()
for tgt in ("Mirel", "Dravik"):
    r = ch.forget(world.forget_examples(tgt), config=UnlearnConfig(evaluate="none"), target=tgt)
    out[tgt] = {"steps": r.steps_run, "after": r.probes_after, "drift": r.retain_drift, "emb": r.embeddings["after"][:3],
                "timings": r.timings}
out["cpu"] = time.process_time() - t
out["wall"] = time.time() - w
torch.save(ch.adapter_state(), sys.argv[1] + ".pt")
json.dump(out, open(sys.argv[1] + ".json", "w"), default=str)
print(sys.argv[1], out["cpu"], out["wall"], [out[t]["steps"] for t in ("Mirel", "Dravik")])
