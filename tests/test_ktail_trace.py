"""tools/ktail_trace.py reads, per fork() call of a K-parent loop, what took its parent's CPU inside the call
and who had woken it, from tracefs text and the load generator's records."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from forksim.validation.measure import REC_DTYPE

_spec = importlib.util.spec_from_file_location("ktail_trace", Path(__file__).parents[1] / "tools" / "ktail_trace.py")
ktail_trace = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ktail_trace)  # type: ignore[union-attr]

A, B, A_CHILD, B_CHILD = 10, 20, 11, 21


def _line(comm: str, pid: int, cpu: int, t_s: float, event: str, rest: str) -> str:
    return f"{comm:>16}-{pid:<6} [{cpu:03d}] d..2. {t_s:.6f}: {event}: {rest}"


def _switch(cpu: int, t_s: float, prev: int, state: str, nxt: int) -> str:
    return _line("loadgen", prev, cpu, t_s, "sched_switch", f"prev_comm=loadgen prev_pid={prev} prev_prio=120 "
                 f"prev_state={state} ==> next_comm=loadgen next_pid={nxt} next_prio=120")


def _trace(taker: str) -> list[str]:
    """Parents A (CPU 0) and B (woken onto CPU 0 by its child exiting on CPU 1) with 21 earlier forks each (so
    that both count as parents) and B's child forked before; A's fork() at 100 s: its child is placed on CPU 0 at +20 us, and at +30 us A
    is switched out runnable for `taker` (B, woken from CPU 1 at +25 us, or its own new child), which runs to
    +80 us; then the other one to +100 us; A is back from +100 us and returns at +105 us."""
    out = [_line("loadgen", p, 0, 50.0 + i * 1e-3, "sched_process_fork",
                 f"comm=loadgen pid={p} child_comm=loadgen child_pid={1000 + 100 * p + i}")
           for p in (A, B) for i in range(21)]
    first, then = (B, A_CHILD) if taker == "parent" else (A_CHILD, B)
    out += [
        _line("loadgen", B, 1, 99.999950, "sched_process_fork", f"comm=loadgen pid={B} child_comm=loadgen child_pid={B_CHILD}"),
        _switch(0, 99.999990, 0, "R", A),
        _line("loadgen", A, 0, 100.000020, "sched_process_fork", f"comm=loadgen pid={A} child_comm=loadgen child_pid={A_CHILD}"),
        _line("loadgen", A, 0, 100.000020, "sched_wakeup_new", f"comm=loadgen pid={A_CHILD} prio=120 target_cpu=000"),
        _line("loadgen", B_CHILD, 1, 100.000025, "sched_waking", f"comm=loadgen pid={B} prio=120 target_cpu=000"),
        _switch(0, 100.000030, A, "R", first),
        _switch(0, 100.000080, first, "S" if first == B else "X", then),
        _switch(0, 100.000100, then, "X" if then == A_CHILD else "S", A),
        _switch(0, 100.000200, A, "S", 0),
    ]
    return out


def _rec() -> np.ndarray:
    rec = np.zeros(1, dtype=REC_DTYPE)
    rec["t0"], rec["t1"], rec["t2"] = 100_000_000_000, 100_000_105_000, 100_000_190_000
    rec["arrival"] = rec["t0"]
    return rec


def test_a_parent_preempted_at_its_fork_return_by_another_parent_woken_from_the_other_cpu() -> None:
    tr = ktail_trace.Trace(iter(_trace("parent")))
    (call,) = ktail_trace.calls(tr, _rec())
    assert call["P"] == A and call["C"] == A_CHILD and call["child_local"] == 1
    assert call["lat"] == pytest.approx(105.0) and call["on"] == pytest.approx(35.0)  # 0-30 and 100-105 us
    assert call["preempted"] == 1
    assert call["off"] == {"other parent": pytest.approx(50.0), "own new child": pytest.approx(20.0)}
    (out,) = call["outs"]
    assert (out["how"], out["role"], out["woken_by"], out["new"], out["remote"]) == \
        ("R", "other parent", "other parent's child", False, True)
    assert out["at_us"] == pytest.approx(30.0) and out["back_us"] == pytest.approx(70.0)
    took = ktail_trace.takeovers(tr, [call])
    rule = took["another parent woken from the other CPU, the running parent inside fork()"]
    assert rule["n"] == 1 and rule["took_the_cpu"] == 1.0
    assert rule["by_us_run_since_switch_in"] == {"30-40": [1, 1.0]}  # switched in at -10 us: 35 us by the wake-up


def test_a_parent_whose_own_new_child_took_the_cpu() -> None:
    tr = ktail_trace.Trace(iter(_trace("child")))
    (call,) = ktail_trace.calls(tr, _rec())
    (out,) = call["outs"]
    assert (out["how"], out["role"], out["woken_by"], out["new"], out["remote"]) == \
        ("R", "own new child", "itself", True, False)
    took = ktail_trace.takeovers(tr, [call])
    assert took["own new child, local (wake_up_new_task)"]["took_the_cpu"] == 1.0
    # B's wake-up from the other CPU did not take the CPU from A: the child ran next
    assert took["another parent woken from the other CPU, the running parent inside fork()"]["took_the_cpu"] == 0.0
