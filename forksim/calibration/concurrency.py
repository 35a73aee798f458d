"""The profile's `concurrent_creation` (kernel/shared.py): what a creation and an exit pay when another CPU,
creating for another process, wrote the kernel's shared creation state last.

Measured as the difference it makes: fork() pinned to one CPU, alone, against the same loop while another
forkbench fork loop (another process, rss 0) runs pinned to the other CPU; the rounds alternate the order.
Per round, the p50 of the call (its CPU time, as the fork sweep's) and of the rest of the round trip (the
child's start, exit and the reap) beside the other loop minus alone; the medians over rounds are the extras.
A co-runner that only spins, or streams 64 MiB of memory, slowed the same loop by under 1 us (Intel host,
2026-12-02), a forking one by 6.5 us in fork() and 11 us in the rest: the shared lines, not the core.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from .bench import background
from .fit import median
from .samples import Evidence, fork_field, vals

__all__ = ["ALONE", "BESIDE", "beside_forker", "fit_concurrent_creation"]

ALONE, BESIDE = "fork_alone", "fork_beside_forker"  # the store kinds of the two sides
_SIGMA = 0.3  # the extras' lognormal residual: not separable from the loop's own spread (assumption)
_START_S = 0.05  # the co-runner's start (exec, its image, its first forks) before the measured loop begins


def beside_forker(forkbench: str, other: int, run: Callable[[], None]) -> Callable[[], None]:
    """`run` with a forkbench fork loop pinned to CPU `other` for its whole length (stopped after it)."""
    def job() -> None:
        with background([forkbench, "fork", "-r", "0", "-n", "100000000", "-w", "0", "-c", str(other)]):
            time.sleep(_START_S)
            run()

    return job


def _per_round(ev: Evidence) -> tuple[list[float], list[float]] | None:
    """Per round: (fork() p50 beside minus alone, the rest of the round trip's p50 beside minus alone), us."""
    beside, alone = ev.store.select(BESIDE), ev.store.select(ALONE)
    rounds = sorted({r["key"].get("round", 0) for r in beside} & {r["key"].get("round", 0) for r in alone})
    if not rounds:
        return None
    f = fork_field(beside + alone)

    def p50(runs: list[dict[str, Any]], rnd: int, field: str) -> float:
        return median(vals([r for r in runs if r["key"].get("round", 0) == rnd], field))

    def rest(runs: list[dict[str, Any]], rnd: int) -> float:
        return p50(runs, rnd, "rt_ns") - p50(runs, rnd, "fork_ns")

    return ([p50(beside, r, f) - p50(alone, r, f) for r in rounds],
            [rest(beside, r) - rest(alone, r) for r in rounds])


def fit_concurrent_creation(ev: Evidence) -> dict[str, Any] | None:
    """The profile's `concurrent_creation` from the two sides' runs; None without them (one CPU, or a raw file
    older than the measurement)."""
    d = _per_round(ev)
    if d is None:
        return None
    fork_d, exit_d = d
    fork_us, exit_us = max(0.0, median(fork_d)), max(0.0, median(exit_d))
    ev.diag["concurrent_creation"] = {"fork_beside_minus_alone_us": [round(x, 2) for x in fork_d],
                                      "rest_beside_minus_alone_us": [round(x, 2) for x in exit_d]}
    return {"fork_us": round(fork_us, 3), "exit_us": round(exit_us, 3), "sigma": _SIGMA, "source": (
        f"measured: fork() {ev.pin_txt} at RSS 0, alone against the same loop beside another process's fork loop "
        f"pinned to the other CPU ({len(fork_d)} rounds alternating the order); per round, p50 beside minus alone "
        f"of the call ({', '.join(f'{x:.1f}' for x in fork_d)} us) and of the rest of the round trip: the child's "
        f"start, exit and reap ({', '.join(f'{x:.1f}' for x in exit_d)} us); medians over rounds (floored at 0); "
        f"sigma {_SIGMA}: assumption. Measured on fork(); vfork, posix_spawn and threads take it as fork does "
        f"(the same copy_process and exit paths: assumption)")}
