"""Network namespaces (kernel/netns.py, locks.Mutex, calibration/netns.py) and a DAMON monitor's rmap walks
(kernel/damon.py): known answers on the engine for
cleanup_net's batching and the rtnl_mutex a clone(CLONE_NEWNET) meets, the trace fit, and a profile without
the section unchanged."""

from __future__ import annotations

import math

import pytest
import simpy

from forksim.calibration.netns import analyse, fit
from forksim.kernel.netns import Netns
from forksim.locks import LockStats, Mutex
from forksim.machine import Machine, SchedulerParams
from forksim.profile_sections import NetnsCleanup
from engine_tasks import start_task  # tests/engine_tasks.py


def _spec(**kw) -> NetnsCleanup:
    base = dict(rtnl_setup_us=200.0, rtnl_fixed_us=0.0, rtnl_per_netns_us=1000.0, rtnl_grace_us=500.0,
                pre_us=100.0, cpu_fixed_us=0.0, cpu_per_netns_us=1000.0, post_us=3000.0, source="test")
    base.update(kw)
    return NetnsCleanup(**base)


def _machine(cpus: int = 2) -> tuple[simpy.Environment, Machine]:
    env = simpy.Environment()
    params = SchedulerParams(tick_us=4000.0, slice_us=1e9, wakeup_granularity_us=0.0,
                             interruption_gap=lambda: math.inf)
    return env, Machine(env, cpus, params)


def test_mutex_hands_over_in_arrival_order_and_records_waits():
    env = simpy.Environment()
    mutex = Mutex(env, LockStats("m"))
    order = []

    def holder(name, at, hold):
        yield env.timeout(at)
        ev = mutex.acquire(name)
        if ev is not None:
            yield ev
        order.append((name, env.now))
        yield env.timeout(hold)
        mutex.release()

    for name, at in (("a", 0.0), ("b", 1.0), ("c", 2.0)):
        env.process(holder(name, at, 10.0))
    env.run()
    assert order == [("a", 0.0), ("b", 10.0), ("c", 20.0)]
    assert list(mutex.stats.waits) == [0.0, 9.0, 18.0]
    assert mutex.holder is None


def test_puts_during_a_batch_make_the_next_batch():
    """Three namespaces die at t=0: one batch of 3. Two more die while it runs: the item runs again at once
    with both, as net_cleanup_work re-queued during cleanup_net does."""
    env, m = _machine()
    net = Netns(m, _spec(), lambda us: us)

    def deaths():
        for _ in range(3):
            net.put_net()
        yield env.timeout(1000.0)
        net.put_net()
        net.put_net()

    env.process(deaths())
    env.run()
    assert net.batches == [3, 2]
    assert not net.queued and net.dying == 0


def test_a_clone_meeting_the_batch_waits_out_its_rtnl_section():
    """A batch of 2 takes rtnl at 100 us (after pre_us), runs 2 x 1000 us of unregister chain and sleeps a
    500 us grace period holding it: released at 2600 us. A copy_net_ns on the other CPU at 600 us waits
    2000 us, then holds rtnl 200 us; one at 3000 us does not wait."""
    env, m = _machine()
    net = Netns(m, _spec(), lambda us: us)
    waits = []

    def creator(task):
        for at in (600.0, 3000.0):
            yield task.sleep_for(at - env.now)
            waits.append((yield from net.copy_net_ns(task)))
            waits.append(env.now)

    net.put_net()
    net.put_net()
    start_task(env, m, "creator", creator, cpu=1)
    env.run()
    assert waits[0] == pytest.approx(2000.0)
    assert waits[1] == pytest.approx(2800.0)
    assert waits[2] == 0.0
    assert waits[3] == pytest.approx(3200.0)


def _trace_line(comm: str, pid: int, cpu: int, us: float, event: str, rest: str) -> str:
    return f"{comm}-{pid} [{cpu:03d}] ..... {us / 1e6:.6f}: {event}: {rest}"


def test_fit_reads_the_batches_and_chains_from_a_trace():
    """A synthetic trace: batches of n = 5, 10, 20, 30, 40, 50 namespaces (one child exit each), each item with an
    unregister chain of 50 + 100 n us, a 1 ms sleep after it, 200 us lead-in; the creator's register chains
    150 us. The fit gives those numbers back."""
    lines, t, pid = [], 0.0, 1000
    kw, cr = ("kworker/u8:0", 7), ("clonebench", 500)
    start_prev = None
    for n in (5, 10, 20, 30, 40, 50):
        for _ in range(n):  # the creator's clones: a register chain each, then the child's exit
            for k in range(40):
                lines.append(_trace_line(*cr, 0, t + k * 150.0 / 39, "notifier_run", "rtnetlink_event"))
            t += 300.0
            pid += 1
            lines.append(_trace_line("clonebench", pid, 0, t, "sched_process_exit", f"comm=clonebench pid={pid}"))
            t += 100.0
        a = t + 1.0
        lines.append(_trace_line(*kw, 1, a, "workqueue_execute_start", "work struct 0000: function cleanup_net"))
        first, chain = a + 200.0, 50.0 + 100.0 * n
        for k in range(int(chain // 20) + 2):  # the last call at exactly `chain`
            lines.append(_trace_line(*kw, 1, first + min(chain, k * 20.0), "notifier_run", "rtnetlink_event"))
        last = first + chain
        lines.append(_trace_line(*kw, 1, last + 10.0, "sched_switch",
                                 "prev_comm=kworker prev_pid=7 prev_prio=120 prev_state=D ==> next_comm=swapper "
                                 "next_pid=0 next_prio=120"))
        lines.append(_trace_line("swapper", 0, 1, last + 1010.0, "sched_switch",
                                 "prev_comm=swapper prev_pid=0 prev_prio=120 prev_state=R ==> next_comm=kworker "
                                 "next_pid=7 next_prio=120"))
        lines.append(_trace_line(*kw, 1, last + 1500.0, "workqueue_execute_end", "work struct 0000: function cleanup_net"))
        start_prev = a
        t = last + 1600.0
    assert start_prev is not None
    raw = analyse("\n".join(lines), None, "clonebench")
    assert [i["n"] for i in raw["items"]] == [5, 10, 20, 30, 40, 50]  # the first: every death since the start
    sec = fit(raw, "synthetic")
    assert sec is not None
    assert sec["rtnl_per_netns_us"] == pytest.approx(100.0, rel=0.01)
    assert sec["rtnl_fixed_us"] == pytest.approx(50.0, abs=2.0)
    assert sec["rtnl_grace_us"] == pytest.approx(1000.0, rel=0.01)
    assert sec["pre_us"] == pytest.approx(200.0, abs=1.0)
    assert sec["rtnl_setup_us"] == pytest.approx(150.0, rel=0.01)
    NetnsCleanup(**sec)  # a valid profile section


def test_too_few_batches_fit_nothing():
    assert fit({"items": [], "setup_chain_us": [], "exits": 0}, "x") is None


def test_profile_without_the_section_keeps_the_deferred_worker(tmp_path):
    from forksim.kernel.copies import Copies
    from forksim.profile import load_profile

    p = load_profile("default")
    x = Copies(p, "fork", ["CLONE_NEWNET"])
    if p.netns_cleanup is None:
        assert not x.netns_clone and x.deferred_us == p.flag_cost("CLONE_NEWNET").deferred_us
    with_section = p.model_copy(update={"netns_cleanup": _spec()})
    y = Copies(with_section, "fork", ["CLONE_NEWNET"])
    assert y.netns_clone and y.deferred_us == 0.0
    assert y.tail_us == pytest.approx(max(0.0, with_section.flag_cost("CLONE_NEWNET").call_us - 200.0))


def test_kdamond_walk_holds_the_anon_vma_root_against_fork_and_exit():
    """kernel/damon.py: walks of 1 us per mapping over 1,000 mappings (1 ms each), 100 a second: with the gap
    draw at its mean the first walk runs 9-10 ms. A writer (anon_vma_clone) at 9.5 ms waits 0.5 ms; one at
    10.5 ms does not wait."""
    from forksim.kernel.damon import Kdamond
    from forksim.profile_sections import DamonRmap

    env, m = _machine()
    k = Kdamond(m, DamonRmap(per_mapping_us=1.0, walks_per_s=100.0, source="test"), 1000, lambda us: us,
                lambda: 1.0 - math.exp(-1.0))
    assert k.walk_us == 1000.0
    waits = []

    def writer(task):
        for at in (9500.0, 10500.0):
            yield task.sleep_for(at - env.now)
            waits.append((yield from k.anon_vma_write(task)))

    start_task(env, m, "parent", writer, cpu=1)
    env.run(until=12000.0)
    assert waits == [pytest.approx(500.0), 0.0]
    assert k.walks == 1
