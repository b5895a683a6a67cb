"""The null space's eigendecompositions at one and two torch threads, in the main thread and in others (issue 20).

    python benchmarks/issue20/eigh_threads.py
    OMP_WAIT_POLICY=PASSIVE python benchmarks/issue20/eigh_threads.py   # as app.py sets it

One line per setting: where it ran, torch's thread count, seconds for 6 of 512 x 512 and 12 of 128 x 128 (float64,
the embedded model's layer widths).
"""

import threading
import time

import torch

torch.manual_seed(0)
A = torch.randn(512, 600, dtype=torch.float64)
B = torch.randn(128, 300, dtype=torch.float64)
C, D = A @ A.T, B @ B.T


def bench(where: str) -> None:
    t = time.time()
    for _ in range(6):
        torch.linalg.eigh(C)
    for _ in range(12):
        torch.linalg.eigh(D)
    print(where, torch.get_num_threads(), round(time.time() - t, 3), flush=True)


def in_thread(fn, *args) -> None:
    th = threading.Thread(target=fn, args=args)
    th.start()
    th.join()


def one_thread(where: str) -> None:
    torch.set_num_threads(1)
    bench(where)


bench("main")
bench("main")
in_thread(bench, "thread")
in_thread(bench, "another thread")
in_thread(one_thread, "thread, 1 torch thread")
one_thread("main, 1 torch thread")
