"""Where a taught name goes: teach "Zorblat" on 8 crops of one bundled photo, then count the evaluation set's images
called by it, per kind (emoji render, photo crop, emoji view), and what they were answered before (issue 17).

    python benchmarks/issue17/teach_reach.py astronaut
"""

import collections
import sys
import time

from nscvf import photo_eval, photo_images
from nscvf.method import UnlearningChain
from nscvf.method.photo_domain import bundled
from nscvf.models import load_model
from nscvf.source import PHOTO_MODEL_DIR

vlm = load_model(str(PHOTO_MODEL_DIR), device="cpu")
labels, images, before = photo_eval.evaluation_set(vlm)
photos = {f[len("photo_") : -len(".jpg")]: im for _, f, im in bundled() if f.startswith("photo_")}
crops = photo_images.crops(photos[sys.argv[1]], 8, seed=1)
print("answers on the training crops before:", collections.Counter(photo_eval.ask_names(vlm, crops)))
chain = UnlearningChain(vlm)
t = time.time()
chain.teach(crops, "Zorblat")
print("teach s", round(time.time() - t, 1))
after = photo_eval.ask_names(chain.model_at(len(chain)), images)
kinds = collections.defaultdict(lambda: [0, 0])
for lab, a in zip(labels, after):
    k = lab.split(":")[0]
    kinds[k][1] += 1
    kinds[k][0] += "zorblat" in a.lower()
print("called Zorblat, per kind:", {k: f"{v[0]}/{v[1]}" for k, v in kinds.items()})
took = collections.Counter(b for b, a in zip(before, after) if "zorblat" in a.lower())
print("their answers before:", took.most_common(8))
