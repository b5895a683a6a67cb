"""A session's timeline as one file, and back: :func:`export_timeline` (``chain.export``: peft adapters, a
model card, chain.json/report.json and the request records, zipped) and :func:`import_timeline`
(``UnlearningChain.load``, which refuses a file made for another base model), through the engine's public
API only. Each runs inside the session's lock; an import replaces the session's chain only once the file
has loaded completely (a refused or broken file changes nothing), then closes the old chain.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from nscvf.errors import InputError, NSCVFError
from nscvf.method.chain import UnlearningChain
from webapp.service.models import current_model
from webapp.service.showcase import draw_figures, retain_rows
from webapp.state.records import RequestRecord
from webapp.state.runtime import Runtime
from webapp.state.sessions import Session

log = logging.getLogger("nscvf.app")


def session_dir(sess: Session) -> Path:
    """The session's own temporary folder (exports, imported images); removed when the session ends."""
    with sess.lock:
        if sess.tmp_dir is None or not Path(sess.tmp_dir).is_dir():
            sess.tmp_dir = tempfile.mkdtemp(prefix=f"nscvf-{sess.sid[:8]}-")
        return Path(sess.tmp_dir)


def export_timeline(sess: Session) -> Path:
    """The session's chain as one zip file in its temporary folder (the previous export replaced)."""
    with sess.reading("download"):
        chain = sess.chain
        if chain is None or len(chain) == 0:
            raise InputError("nothing to download yet: this session has no request (press Forget first)")
        out = session_dir(sess) / "export"
        shutil.rmtree(out, ignore_errors=True)
        name = f"nscvf-timeline-{len(chain)}-requests-{chain.state_fingerprint}.zip"
        return chain.export(out / name)


@dataclass(frozen=True)
class Imported:
    """What an import did: the session's records now (one per request of the imported chain) and the file."""

    records: list
    file: str

    @property
    def last(self) -> RequestRecord | None:
        return self.records[-1] if self.records else None


def _load(rt: Runtime, path: Path, sess: Session):
    """The chain saved in ``path`` on the session's shared base model; InputError for anything that is not one."""
    if not path.is_file():
        raise InputError(f"{path.name}: no such file; upload a .zip downloaded from this app")
    h = rt.holder_of(sess)
    vlm = h.get()
    try:
        chain = UnlearningChain.load(vlm, path, h.cache)
    except InputError as e:
        others = [m.label for m in rt.settings.models if m.key != current_model(rt, sess)]
        if "another base model" in str(e) and others:  # made on the page's other model: say how to get there
            raise InputError(f"{e}. If it was made on {' or '.join(others)}, switch the Model (at the top) to it "
                             "and import it again") from None  # fmt: skip
        raise
    except NSCVFError:
        raise
    except Exception as e:  # noqa: BLE001  (a damaged archive: broken JSON, missing or corrupt adapter files)
        log.info("import of %s failed: %s: %s", path.name, type(e).__name__, e)
        raise InputError(f"{path.name}: not a readable timeline (damaged or incomplete)") from None
    results = chain.results
    if len(results) != len(chain):
        chain.close()
        raise InputError(f"{path.name}: holds {len(chain)} request(s) but the records of only {len(results)}")
    return chain


def _save_images(images, folder: Path) -> tuple[str, ...]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, im in enumerate(images):
        p = folder / f"{i:03d}.png"
        im.save(p)
        paths.append(str(p))
    return tuple(paths)


def _records(rt: Runtime, chain, folder: Path) -> list[RequestRecord]:
    """One record per imported request: its result and adapter, its images (saved, for the gallery and Undo);
    the last one's retained rows and plots drawn now (an earlier one's are drawn when Undo shows it)."""
    domain, out, now = chain.domain, [], time.time()
    for k, (step, r) in enumerate(zip(chain.steps, chain.results), 1):
        paths = _save_images(step.protect_images, folder / f"request_{k}")
        out.append(RequestRecord(r, chain.adapter_state(k), created=now, evaluation="none",
                                 evaluable=domain.can_evaluate(r.target), world=domain.names_things,
                                 names=tuple(f"imported {Path(p).name}" for p in paths), paths=paths,
                                 restored=True))  # fmt: skip
    if out:
        last = out[-1]
        rows = retain_rows(chain, last.target)  # no images to keep were uploaded: the Domain's own, if any
        out[-1] = last.replace(retain_rows=rows, figures=draw_figures(last.result.embeddings or {}, rt.warmup))
    return out


def import_timeline(rt: Runtime, sess: Session, path) -> Imported:
    """Replace the session's chain with the one saved in ``path`` (a zip by :func:`export_timeline` or
    ``nscvf``'s ``UnlearningChain.export``). Refused with InputError (nothing changed) for a file made for
    another base model, a file that is not a zip, or a damaged one."""
    if not path:
        raise InputError("no file: upload a .zip downloaded with \u201cDownload this session's timeline\u201d")
    path = Path(path)
    with sess.exclusive("timeline import", evaluation="cancel"):  # replaces the chain: its accuracies are moot
        chain = _load(rt, path, sess)
        folder = session_dir(sess) / f"import-{time.time_ns()}"
        try:
            records = _records(rt, chain, folder)
        except BaseException:
            chain.close()
            shutil.rmtree(folder, ignore_errors=True)
            raise
        old, sess.chain, sess.records = sess.chain, chain, records
        sess.numbers_due = False
        if old is not None:
            old.close()
        log.info("session %s imported %d request(s) from %s", sess.sid[:8], len(records), path.name)
        return Imported(records, path.name)
