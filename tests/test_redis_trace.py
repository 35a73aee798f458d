"""tools/redis_trace.py reads a fork's placement, IPIs and the parent's wait after clone from tracefs text."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("redis_trace", Path(__file__).parents[1] / "tools" / "redis_trace.py")
redis_trace = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(redis_trace)  # type: ignore[union-attr]

TRACE = """\
          <idle>-0       [001] d..2. 100.000000: sched_switch: prev_comm=cc1 prev_pid=77 prev_prio=120 prev_state=S ==> next_comm=swapper/1 next_pid=0 next_prio=120
    redis-server-10    [000] ..... 100.500000: sys_clone(clone_flags: 0x1200011, newsp: 0, parent_tidptr: 0, child_tidptr: 0x1, tls: 0)
    redis-server-10    [000] ...2. 100.503900: ipi_send_cpu: cpu=1 callsite=on_each_cpu_cond_mask+0x20/0x60 callback=generic_smp_call_function_single_interrupt+0x0/0x10
    redis-server-10    [000] dN.2. 100.504000: sched_wakeup_new: comm=redis-server pid=11 prio=120 target_cpu=000
    redis-server-10    [000] .N... 100.504003: sys_clone -> 0xb
    redis-server-10    [000] d..2. 100.504006: sched_switch: prev_comm=redis-server prev_pid=10 prev_prio=120 prev_state=R ==> next_comm=redis-server next_pid=11 next_prio=120
    redis-server-11    [000] d..2. 100.505006: sched_switch: prev_comm=redis-server prev_pid=11 prev_prio=120 prev_state=R+ ==> next_comm=redis-server next_pid=10 next_prio=120
"""


def test_a_local_child_that_preempts_its_parent(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text(TRACE)
    (f,) = redis_trace.forks(redis_trace.events(path), 10)
    assert f["ccpu"] == f["pcpu"] == 0  # the child stayed on the parent's CPU
    assert f["other"] == "idle" and f["other_idle_us"] == pytest.approx(504000.0)
    assert f["exit"] - f["enter"] == pytest.approx(4003.0)
    assert f["ipis"] == 1 and f["ipi_on_each_cpu_cond_mask"] == pytest.approx(3900.0)
    assert f["ran_instead_child"] is True
    assert f["back"] - f["out"] == pytest.approx(1000.0)  # the parent waited while its child ran


def test_a_parent_that_blocks_after_clone_did_not_wait(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text(TRACE.replace("prev_pid=10 prev_prio=120 prev_state=R ", "prev_pid=10 prev_prio=120 prev_state=S "))
    (f,) = redis_trace.forks(redis_trace.events(path), 10)
    assert "out" not in f  # a sleep (wait4, a blocking read) is not a preemption
