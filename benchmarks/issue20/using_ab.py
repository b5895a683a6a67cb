import importlib.util
import subprocess
import tempfile
import time
from pathlib import Path

from nscvf import world
from nscvf.cache import Cache
from nscvf.method import UnlearnConfig, UnlearningChain
from nscvf.method import shared as S
from nscvf.models import load_model

new_using = S.SharedBase.using

def _old_using():
    """SharedBase.using as it was before issue 20's session 7 (main at 82e89aa), read from git."""
    src = subprocess.run(["git", "show", "82e89aa:nscvf/method/shared.py"], capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "old_shared.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("old_shared", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.SharedBase.using


old_using = _old_using()

vlm = load_model()
cache = Cache(enabled=False)
cfg = UnlearnConfig(evaluate="none")
def req(t):
    ch = UnlearningChain(vlm, cache)
    c = time.process_time()
    w = time.time()
    r = ch.forget(world.forget_examples(t), config=cfg, target=t)
    out = (round(time.process_time() - c, 3), round(time.time() - w, 3), r.steps_run, r.timings["optimise"])
    ch.close()
    return out
req("Mirel")
for i in range(3):
    for name, u in (("old", old_using), ("new", new_using)) if i % 2 == 0 else (("new", new_using), ("old", old_using)):
        S.SharedBase.using = u
        print(name, req("Dravik"), flush=True)
