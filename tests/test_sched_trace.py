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
