"""Sub-phase timings of warm new examples: a warm-up request on Mirel, then each target given (issue 20).

    PYTHONPATH=<checkout> python benchmarks/issue20/subphases.py Dravik Tobbin Quessa Kestrin
"""

import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
import profile_request as pr  # noqa: E402

from nscvf import cache, world  # noqa: E402
from nscvf.method import request, state_memo  # noqa: E402
from nscvf.models import load_model  # noqa: E402

PARTS = {
    "probe_answers": (request, "probe_answers"),
    "features(prev)": (request, "features"),
    "embedding_data": (request, "embedding_data"),
    "null_spaces(eigh)": (request, "null_spaces"),
    "protected_covs": (request, "protected_covariances"),
    "_covariances(new chunks)": (state_memo, "_covariances"),
    "image_set_fp": (request, "image_set_fingerprint"),
    "measure": (request, "measure"),
    "references": (request, "references"),
    "text_answers": (state_memo, "text_answers"),
    "text_logits": (request, "text_logits"),
    "retain_drift": (request, "retain_drift"),
    "evaluate": (request, "evaluate"),
}

vlm = load_model()
results = cache.Cache(tempfile.mkdtemp())
pr._request(vlm, world.forget_examples("Mirel"), "Mirel", 40, results)
for t in sys.argv[1:]:
    spent, undo = pr._timed_parts(PARTS)
    r, s, wall, cpu = pr._request(vlm, world.forget_examples(t), t, 40, results)
    for m, a, o in undo:
        setattr(m, a, o)
    tm = r.timings
    print(t, f"wall {wall:.2f} opt {tm['optimise']:.2f} ratio {tm['total'] / tm['optimise']:.3f} steps {r.steps_run}", os.getloadavg()[0])
    print("  phases", {p: tm.get(p) for p in pr.PHASES})
    print("  ", spent)
