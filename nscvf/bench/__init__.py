"""``nscvf bench``: every method on the same targets, data and step budget, through the same engine and
the same evaluation as the app and the CLI; plus a continual run of sequential requests.

One file per job: :mod:`~nscvf.bench.settings` (the grid), :mod:`~nscvf.bench.run` (running it: one
cell is one request, :func:`~nscvf.bench.run.run_cell`), :mod:`~nscvf.bench.summary` (means over
targets, spread over seeds), :mod:`~nscvf.bench.report` (Markdown and files) and
:mod:`~nscvf.bench.evidence` (the neighbour, gold and relearning measurements), :mod:`~nscvf.bench.jobs`
(the grid as jobs, one result file each, and the benchmark assembled from the files) and
:mod:`~nscvf.bench.grid` (running the jobs on a local process pool or on Ray).

Beside the target and the retained characters it measures the target's look-alike sibling
(``neighbour``), and, for targets with a committed gold reference, the agreement with gold, the KS test
of P("I don't know") against gold, feature-profile distances and the relearning attack.

``from nscvf.bench import ...`` gives the torch-free parts; :mod:`nscvf.bench.run` imports the engine.
"""

from nscvf.bench.jobs import Job, RunFolder, assemble, plan
from nscvf.bench.report import to_markdown, write
from nscvf.bench.settings import METHOD_ORDER, QUICK_METHODS, QUICK_TARGETS, BenchSettings
from nscvf.bench.summary import quick_vs_full, resummarise, spread, summarise

__all__ = [
    "METHOD_ORDER",
    "QUICK_METHODS",
    "QUICK_TARGETS",
    "BenchSettings",
    "Job",
    "RunFolder",
    "assemble",
    "plan",
    "quick_vs_full",
    "resummarise",
    "spread",
    "summarise",
    "to_markdown",
    "write",
]
