"""The recorded traces' analyses on every CPU at once, after the measurements that recorded them.

A calibration measures on an otherwise idle machine, so a trace is read only once its run has ended; reading
it is pure Python (parsing a few hundred thousand tracefs lines and walking them), seconds of a quick
calibration when done one trace after another. `forked_map` runs them side by side in workers forked from
this process: they inherit its modules and the recorded texts, so only an index goes to a worker and only the
analysis comes back.
"""

from __future__ import annotations

import os
import signal
from typing import Callable, Sequence, TypeVar

from threadpoolctl import threadpool_limits

__all__ = ["forked_map"]

T = TypeVar("T")
R = TypeVar("R")

_ITEMS: Sequence = ()  # what the workers read (set before they are forked)
_FN: Callable | None = None


def _worker_start() -> None:
    # A worker leaves the signals to the calibration that forked it: its handlers would close the tracefs
    # instances the parent still owns (tracefs.install_signal_cleanup).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # One BLAS thread a worker: OpenBLAS's own threads (one per CPU, in numpy's and scipy's copies each) spin
    # between calls and took the other workers' CPUs; calibrate's checks, four simulations a worker, ran in 2.3 s
    # on 2 workers with them and 1.3 s without (2026-12-06, the Intel host)
    threadpool_limits(1)


def _call(i: int):
    assert _FN is not None
    return _FN(_ITEMS[i])


def forked_map(fn: Callable[[T], R], items: Sequence[T], cost: Callable[[T], float] | None = None,
               workers: int | None = None) -> list[R]:
    """[fn(item) for item in items], computed in up to `workers` (default: this process's CPUs) forked worker
    processes, the costliest items (by `cost`) handed out first; in this process where one worker or one item
    would do."""
    global _ITEMS, _FN
    workers = min(len(items), workers or len(os.sched_getaffinity(0)))
    if workers <= 1:
        return [fn(x) for x in items]
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    order = sorted(range(len(items)), key=lambda i: -cost(items[i])) if cost else range(len(items))
    _ITEMS, _FN = items, fn
    try:
        with ProcessPoolExecutor(workers, mp_context=get_context("fork"), initializer=_worker_start) as pool:
            futures = {i: pool.submit(_call, i) for i in order}
            return [futures[i].result() for i in range(len(items))]
    finally:
        _ITEMS, _FN = (), None
