"""tools/sched_trace.py's hog layout beside one parent, on a hand-made event list (time us, cpu, event, fields)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("sched_trace", Path(__file__).parents[1] / "tools" / "sched_trace.py")
sched_trace = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sched_trace)


def sw(t, cpu, prev, nxt, state="S"):
    return (t, cpu, "sched_switch", {"prev_pid": str(prev), "prev_state": state, "next_pid": str(nxt)})


def test_hog_layout_counts_the_hogs_beside_the_parent_and_the_busy_passes_rule():
    role = {1: "parent", 10: "hog", 11: "hog", 12: "hog"}
    # parent on CPU 0 throughout; hog 10 on CPU 0 from 1 us, 11 and 12 on CPU 1 (12 waiting there): the parent's
    # CPU holds two of ours, CPU 1 two: no chance. At 64 ms hog 10 moves to CPU 1 (not a rule move): the parent
    # alone, CPU 1 three, CPU 0 two short, to the end at 128 ms: two 32 ms intervals of chance
    ev = [sw(0, 0, 0, 1), sw(0, 1, 0, 12), sw(0.5, 1, 12, 11, "R"),
          sw(1, 0, 1, 10, "R"), sw(2, 0, 10, 1, "R"),
          (64e3, 0, "sched_migrate_task", {"pid": "10", "orig_cpu": "0", "dest_cpu": "1"}),
          (128e3, 0, "sched_wakeup", {"pid": "99", "target_cpu": "0"})]
    by_count, migrations, chances, pulls = sched_trace.hog_layout(ev, role)
    assert migrations == 1 and pulls == 0
    assert chances == pytest.approx(2.0, rel=1e-3)
    assert by_count[1] == pytest.approx(0.064 - 1e-6, rel=1e-6) and by_count[0] == pytest.approx(0.064, rel=1e-6)
    # a move from a CPU holding three of ours (hog 11 running, the parent and hog 10 waiting) to one running one
    # is the rule's: a pull
    moved = [sw(0, 0, 0, 1), sw(0, 1, 0, 12), sw(1, 0, 1, 10, "R"), sw(2, 0, 10, 11, "R"),
             (64e3, 0, "sched_migrate_task", {"pid": "10", "orig_cpu": "0", "dest_cpu": "1"})]
    assert sched_trace.hog_layout(moved, role)[3] == 1


def test_switched_in_fork_names_who_took_the_cpu_inside_a_call_and_for_how_long(tmp_path):
    """Two parents' calls (the load generator's records, ns) over a hand-made trace (us): parent 1's first call is
    preempted by rcu_preempt for 300 us, its second runs through; parent 2's call is preempted by parent 1 for 50 us
    and then sleeps (runnable first: only that switch counts)."""
    import numpy as np
    from forksim.validation.loadgen import REC_DTYPE

    role = {1: "parent", 2: "parent"} | {100 + i: "child" for i in range(25)}
    ev = [(0.0, 0, "sched_wakeup", {"pid": "99"})]
    ev += [(5.0 + i, 0, "sched_process_fork", {"pid": str(1 + i % 2), "child_pid": str(100 + i)}) for i in range(25)]

    def switch(t, cpu, prev, nxt, state, comm):
        return (t, cpu, "sched_switch", {"prev_pid": str(prev), "prev_state": state, "next_pid": str(nxt),
                                         "next_comm": comm})

    ev += [(1000.0, 0, "sched_process_fork", {"pid": "1", "child_pid": "200"}),
           switch(1010.0, 0, 1, 9, "R+", "rcu_preempt"), switch(1310.0, 0, 9, 1, "S", "loadgen"),
           (2000.0, 0, "sched_process_fork", {"pid": "1", "child_pid": "201"}),
           (3000.0, 1, "sched_process_fork", {"pid": "2", "child_pid": "202"}),
           switch(3010.0, 1, 2, 1, "R", "loadgen"), switch(3060.0, 1, 1, 2, "S", "loadgen"),
           switch(3070.0, 1, 2, 0, "S", "swapper/1"), (9000.0, 0, "sched_wakeup", {"pid": "99"})]
    ev.sort(key=lambda e: e[0])
    rec = np.zeros(3, dtype=REC_DTYPE)
    for i, (parent, t0, t1) in enumerate(((0, 990, 1400), (0, 1990, 2050), (1, 2990, 3100))):
        rec[i]["parent"], rec[i]["t0"], rec[i]["t1"] = parent, t0 * 1000, t1 * 1000
    path = tmp_path / "x.rec"
    rec.tofile(path)
    calls, who, off = sched_trace.switched_in_fork(ev, role, path)
    assert calls == 3
    assert who == {"rcu_preempt": 1, "parent": 1}
    assert off == [pytest.approx(300.0), pytest.approx(50.0 + 30.0)]
