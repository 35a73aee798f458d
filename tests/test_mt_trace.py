"""tools/mt_trace.py cuts each fork() of a multi-threaded parent at its mm's mmap_lock: the wait for the lock
(and, where the forker slept, until it was woken and then until it ran), the walk, when the writers blocked
and where the walk's end woke them, from tracefs text."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("mt_trace", Path(__file__).parents[1] / "tools" / "mt_trace.py")
mt_trace = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mt_trace)  # type: ignore[union-attr]

F, W1, W2, CHILD = 100, 101, 102, 200


def _line(pid: int, cpu: int, t_us: float, event: str, rest: str) -> str:
    return f"{'loadgen':>16}-{pid:<6} [{cpu:03d}] d..2. {1.0 + t_us / 1e6:.6f}: {event}: {rest}"


def _lock(pid: int, cpu: int, t_us: float, what: str, mm: str, write: bool, success: bool | None = None) -> str:
    rest = f"mm={mm} memcg_id=1 write={'true' if write else 'false'}"
    if success is not None:
        rest += f" success={'true' if success else 'false'}"
    return _line(pid, cpu, t_us, f"mmap_lock_{what}", rest)


def _threads_made() -> list[str]:
    """F creates W1 and W2 with clone3 (on CPU 1, before t=0)."""
    out = []
    for i, w in enumerate((W1, W2)):
        t = -1000.0 + 10 * i
        out += [_line(F, 1, t, "sys_enter", "NR 435 (7ffd, 58, 0, 0, 0, 0)"),
                _line(F, 1, t + 1, "sched_process_fork", f"comm=loadgen pid={F} child_comm=loadgen child_pid={w}"),
                _line(F, 1, t + 2, "sys_exit", f"NR 435 = {w}")]
    return out


def _trace() -> list[str]:
    """F (CPU 1) creates W1 and W2 with clone3, then forks at t=0: it asks for its mm's lock at +10, sleeps at
    +30 (a writer still holds it for read), is woken at +1000 and runs at +5000, when it takes the lock; the
    writers fault at +5020 and +5030; the walk ends at +11001, waking W1 and W2 onto CPU 0; fork() returns
    at +11050."""
    out = _threads_made()
    out += [
        _line(F, 1, 0.0, "sys_enter", "NR 56 (1200011, 0, 0, 7ff8, 0, 0)"),
        _lock(F, 1, 10.0, "start_locking", "A", True),
        _line(F, 1, 30.0, "sched_switch", f"prev_comm=loadgen prev_pid={F} prev_prio=120 prev_state=D ==> "
                                         f"next_comm=loadgen next_pid={W1} next_prio=120"),
        _line(W1, 1, 1000.0, "sched_wakeup", f"comm=loadgen pid={F} prio=120 target_cpu=001"),
        _line(W1, 1, 5000.0, "sched_switch", f"prev_comm=loadgen prev_pid={W1} prev_prio=120 prev_state=R ==> "
                                             f"next_comm=loadgen next_pid={F} next_prio=120"),
        _lock(F, 1, 5001.0, "acquire_returned", "A", True, True),
        _lock(F, 1, 5002.0, "start_locking", "B", True),
        _lock(F, 1, 5002.0, "acquire_returned", "B", True, True),
        _lock(W1, 0, 5020.0, "start_locking", "A", False),
        _lock(W2, 0, 5030.0, "start_locking", "A", False),
        _lock(F, 1, 11000.0, "released", "B", True),
        _lock(F, 1, 11001.0, "released", "A", True),
        _line(0, 0, 11010.0, "sched_wakeup", f"comm=loadgen pid={W1} prio=120 target_cpu=000"),
        _line(0, 0, 11011.0, "sched_wakeup", f"comm=loadgen pid={W2} prio=120 target_cpu=000"),
        _line(F, 1, 11040.0, "sched_process_fork", f"comm=loadgen pid={F} child_comm=loadgen child_pid={CHILD}"),
        _line(F, 1, 11050.0, "sys_exit", f"NR 56 = {CHILD}"),
    ]
    return out


def test_a_fork_that_slept_for_a_handed_over_reader():
    ev = mt_trace.parse(_trace())
    forker, threads = mt_trace.roles(ev)
    assert (forker, threads) == (F, {W1, W2})
    (f,) = mt_trace.forks(ev, forker, threads)
    assert f["fork_us"] == pytest.approx(11050.0)
    assert f["lock_wait_us"] == pytest.approx(4991.0)
    assert f["until_granted_us"] == pytest.approx(990.0)
    assert f["runq_us"] == pytest.approx(4000.0)
    assert f["hold_us"] == pytest.approx(6000.0)  # the parent's mm A, not the child's B
    assert f["writers_blocked_after_us"] == pytest.approx([19.0, 29.0])
    assert mt_trace.woken_placement(ev, [f], threads) == {("other", "other"): 1}


def test_summary_counts_the_sleeping_fork():
    s = mt_trace.summarise(mt_trace.parse(_trace()))
    assert s["forks"] == 1 and s["writers"] == 2
    assert s["lock_waits"]["slept"] == 1 and s["lock_waits"]["runq_us"] == [4000]
    assert s["woken_writers_placed"] == {"other+other": 1}


def _switch(cpu: int, t_us: float, prev: int, state: str, nxt: int) -> str:
    return _line(prev, cpu, t_us, "sched_switch", f"prev_comm=loadgen prev_pid={prev} prev_prio=120 prev_state={state} "
                                                  f"==> next_comm=loadgen next_pid={nxt} next_prio=120")


def _waiting_writer_trace(pulled: bool) -> list[str]:
    """W1 waits on the forker's CPU 1 (preempted there) when the walk takes the lock at +10; W2 sleeps on CPU 0,
    which idles. At +2000 the idle CPU 0's own pass pulls W1 (`pulled`), or at +4000 CPU 1's tick hands it
    the CPU; the walk ends at +6000."""
    out = _threads_made()
    out += [_switch(0, -500.0, W2, "D", 0), _switch(1, -100.0, W1, "R", F),
            _line(F, 1, 0.0, "sys_enter", "NR 56 (1200011, 0, 0, 7ff8, 0, 0)"),
            _lock(F, 1, 5.0, "start_locking", "A", True), _lock(F, 1, 10.0, "acquire_returned", "A", True, True)]
    if pulled:
        out += [_line(0, 0, 2000.0, "sched_migrate_task", f"comm=loadgen pid={W1} prio=120 orig_cpu=1 dest_cpu=0"),
                _switch(0, 2001.0, 0, "R", W1)]
    else:
        out += [_switch(1, 4000.0, F, "R", W1), _switch(1, 4006.0, W1, "D", F)]
    out += [_lock(F, 1, 6000.0, "released", "A", True), _line(F, 1, 6050.0, "sys_exit", f"NR 56 = {CHILD}")]
    return out


@pytest.mark.parametrize("pulled", [True, False])
def test_a_writer_waiting_on_the_forkers_cpu_is_pulled_by_the_idle_cpu_or_runs_at_the_tick(pulled):
    ev = mt_trace.parse(_waiting_writer_trace(pulled))
    forker, threads = mt_trace.roles(ev)
    fs = mt_trace.forks(ev, forker, threads)
    got = mt_trace.walk_starts(ev, fs, threads)
    assert got["writers_on_forker_cpu"] == {1: 1}
    ww = got["waiting_writer"]
    assert ww["pulled"] == ([pytest.approx(1.99)] if pulled else [])
    assert ww["ran_on_forker_cpu"] == ([] if pulled else [pytest.approx(3.99)])
    assert ww["neither"] == 0
    assert mt_trace.writer_moves(ev, fs, threads) == {"idle_in_walk": int(pulled), "idle_between": 0, "in_a_task": 0}
