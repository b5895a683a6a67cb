"""GPU jobs shaped for ZeroGPU: each call is self-contained, its inputs and outputs plain CPU data.

On a ZeroGPU Space every ``@spaces.GPU`` call runs in a worker process forked from the app: the weights
put on CUDA at start-up are there, but what the call changes in memory (peft adapters added to the shared
model, a session's chain) never comes back; only what it returns (pickled) does, and an exception other
than ``gr.Error`` comes back as its class name only. So a job here

- receives the session's chain as :class:`ChainState` (each request's result, adapter weights on the CPU
  and images; :func:`chain_state`) and a request (:class:`ForgetJob`, :class:`TeachJob`,
  :class:`RelearnJob`, :class:`EvaluateJob`, :class:`AskJob`, :class:`IdentifyJob`);
- rebuilds the chain on the process's base model (:func:`register_base`; a fresh process loads
  ``state.source``), runs the request, closes that chain again (no adapter is left in the worker);
- returns the new adapter weights, the result and the plot data (the result's ``embeddings``) on the CPU
  (:class:`StepOutcome`), and an error as :class:`Failed` (its class and message survive the worker);
- is a *generator* when it is long (forget, teach, relearn, evaluate): it yields :class:`Progress` at
  least every :data:`HEARTBEAT_S` and between steps, and its last item is :class:`Done` or
  :class:`Failed`. Closing it (Gradio's Cancel, the time limit) stops the work at the next step boundary.

:func:`run` is the main process's side: it checks that the job fits one call (:func:`check_fits`), calls
the job decorated by :func:`gpu_job` (``spaces.GPU(duration=...)`` when ``spaces`` is importable; a no-op
off ZeroGPU, so the same code runs on a CPU or a dedicated GPU), reports progress, closes the job on
cancel or time limit and returns the outcome. The session then applies it (:func:`apply_step`).
:class:`ProcessPerCall` is a stand-in of ``spaces.GPU`` that runs every call in a fresh process (tests,
``scripts/bench_zerogpu.py``). No Gradio here.
"""

from nscvf.zerogpu.call import budget_of, check_fits, duration, gpu_job, max_seconds, on_zerogpu, run, spaces_gpu
from nscvf.zerogpu.jobs import (
    HEARTBEAT_S,
    JOBS,
    _cpu_state,  # noqa: F401  (the module's names before it was split)
    _stream,  # noqa: F401
    apply_step,
    ask_job,
    base_model,
    evaluate_job,
    forget_job,
    identify_job,
    open_chain,
    register_base,
    relearn_job,
    teach_job,
)
from nscvf.zerogpu.process import ProcessPerCall, _check_cpu, _child_main  # noqa: F401  (tests call _check_cpu)
from nscvf.zerogpu.state import (
    AskJob,
    ChainState,
    Done,
    EvaluateJob,
    Failed,
    ForgetJob,
    IdentifyJob,
    Progress,
    RelearnJob,
    StepOutcome,
    StepState,
    Stopped,
    TeachJob,
    chain_state,
)

__all__ = [
    "HEARTBEAT_S", "JOBS", "AskJob", "ChainState", "Done", "EvaluateJob", "Failed", "ForgetJob", "IdentifyJob",
    "ProcessPerCall", "Progress", "RelearnJob", "StepOutcome", "StepState", "Stopped", "TeachJob", "apply_step",
    "ask_job", "base_model", "budget_of", "chain_state", "check_fits", "duration", "evaluate_job", "forget_job",
    "gpu_job", "identify_job", "max_seconds", "on_zerogpu", "open_chain", "register_base", "relearn_job", "run",
    "spaces_gpu", "teach_job",
]  # fmt: skip
