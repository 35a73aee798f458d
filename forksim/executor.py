"""Where replications run: in this process, on a local process pool, or on a dask.distributed cluster.
`forksim run` (runner.run_experiment), `forksim sweep` and `forksim plan` (through run_experiment)
all go through here.

An executor takes tagged jobs `(tag, args)` for one picklable function and yields `(tag, result)` as
they finish (in any order: callers place results by tag, so nothing depends on the order or on the
worker count). A task that raises is re-raised here as it was; an executor that loses its workers
(a process killed, out of memory, a lost dask scheduler) raises `WorkersLost`, after which no
result comes back for the tasks still out.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Iterator, Protocol

from .errors import ConfigError

__all__ = ["EXECUTORS", "Executor", "InProcess", "LocalPool", "DaskCluster", "WorkersLost", "make_executor",
           "default_workers"]

EXECUTORS = ("local", "dask")

Job = tuple[Any, tuple]  # (tag, the function's arguments)


class WorkersLost(Exception):
    """The executor lost its workers: no result can come back for the tasks still out."""


class Executor(Protocol):
    def run(self, fn: Callable[..., Any], jobs: Iterable[Job]) -> Iterator[tuple[Any, Any]]:
        """Yield (tag, fn(*args)) as the jobs finish."""

    def close(self, cancel: bool = False) -> None:
        """Release the workers (`cancel`: drop the tasks still queued)."""


def default_workers() -> int:
    """One worker per local CPU."""
    return os.cpu_count() or 1


class InProcess:
    """Every job in this process, in order (one worker: no process start, nothing pickled)."""

    def run(self, fn: Callable[..., Any], jobs: Iterable[Job]) -> Iterator[tuple[Any, Any]]:
        for tag, args in jobs:
            yield tag, fn(*args)

    def close(self, cancel: bool = False) -> None:
        pass


class LocalPool:
    """A local process pool of `workers` processes, started from a forkserver that has imported
    forksim (a worker never inherits the caller's threads or state)."""

    def __init__(self, workers: int):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["forksim.runner"])
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
        self.broken = False  # a worker died: the pool has nothing left to run

    def run(self, fn: Callable[..., Any], jobs: Iterable[Job]) -> Iterator[tuple[Any, Any]]:
        from concurrent.futures import as_completed
        from concurrent.futures.process import BrokenProcessPool

        futures = {self.pool.submit(fn, *args): tag for tag, args in jobs}
        for fut in as_completed(futures):
            try:
                res = fut.result()
            except BrokenProcessPool as exc:  # a worker died (killed, out of memory)
                self.broken = True
                raise WorkersLost(f"{exc.__class__.__name__}: {exc}") from None
            yield futures[fut], res

    def close(self, cancel: bool = False) -> None:
        # a broken pool is waited for (its manager thread is only tearing down): left running, it closes its wake-up
        # pipe while the interpreter's exit handler (concurrent.futures _python_exit) writes to it, and the exit
        # prints an OSError traceback (EBADF; seen once in CI, 2026-12-03, after the workers were killed)
        self.pool.shutdown(wait=not cancel or self.broken, cancel_futures=cancel)


class DaskCluster:
    """dask.distributed: a LocalCluster of `workers` single-threaded processes, or the cluster of the
    scheduler at `scheduler` (tcp://host:8786)."""

    def __init__(self, workers: int, scheduler: str | None = None):
        try:
            import logging

            from distributed import Client, LocalCluster
        except ImportError:  # pragma: no cover - a dependency
            raise ConfigError("needs dask.distributed (pip install 'dask[distributed]')", source="executor") from None
        self.cluster = None
        if scheduler:
            try:
                self.client = Client(scheduler, timeout="20s")
            except (OSError, TimeoutError, ValueError) as exc:
                raise ConfigError(f"cannot reach the dask scheduler: {exc}", source="scheduler") from None
        else:
            self.cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                        dashboard_address=None, silence_logs=logging.ERROR)
            self.client = Client(self.cluster)

    def run(self, fn: Callable[..., Any], jobs: Iterable[Job]) -> Iterator[tuple[Any, Any]]:
        from distributed import as_completed

        futures = {}
        for tag, args in jobs:
            key = f"forksim-{'-'.join(map(str, tag if isinstance(tag, tuple) else (tag,)))}-{os.urandom(4).hex()}"
            futures[self.client.submit(fn, *args, key=key, pure=False)] = tag
        for fut in as_completed(list(futures)):
            try:
                res = fut.result()
            except Exception as exc:  # noqa: BLE001 - sorted below
                if _lost(exc):
                    raise WorkersLost(f"{exc.__class__.__name__}: {exc}") from None
                raise
            yield futures[fut], res
            fut.release()

    def close(self, cancel: bool = False) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def _lost(exc: BaseException) -> bool:
    """Whether a dask future's error is the cluster's (a killed worker, a lost scheduler), not the task's."""
    from asyncio import CancelledError

    try:
        from distributed import KilledWorker
        from distributed.comm.core import CommClosedError
    except ImportError:  # pragma: no cover
        return isinstance(exc, (CancelledError, OSError, TimeoutError))
    return isinstance(exc, (KilledWorker, CommClosedError, CancelledError, OSError, TimeoutError))


def make_executor(kind: str = "local", workers: int | None = None, scheduler: str | None = None, *,
                  jobs: int | None = None) -> Executor:
    """The executor `kind` ("local" or "dask") with `workers` (default one per CPU; a local pool never
    has more workers than `jobs`, and one worker runs in this process)."""
    if kind not in EXECUTORS:
        raise ConfigError(f"unknown executor {kind!r} (one of: {', '.join(EXECUTORS)})", source="executor")
    if workers is not None and workers < 1:
        raise ConfigError("must be 1 or more", source="workers")
    n = workers or default_workers()
    if kind == "dask":
        return DaskCluster(n, scheduler)
    if scheduler:
        raise ConfigError("a scheduler address needs the dask executor", source="scheduler")
    n = max(1, min(n, jobs)) if jobs is not None else n
    return InProcess() if n == 1 else LocalPool(n)
