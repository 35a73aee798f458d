"""The scheduler's policies against known answers: EEVDF (forksim.sched.eevdf) and load balancing
(forksim.sched.balance). Times in microseconds; the kernel's defaults (HZ=250, 1.5 ms slice)."""

from __future__ import annotations

import pytest
import simpy

from forksim.machine import Machine, SchedulerParams
from forksim.sched import eevdf
from forksim.sched.balance import FULLY_BUSY, HAS_SPARE, OVERLOADED, BalanceParams, decay

TICK, SLICE = 4000.0, 1500.0


def eevdf_params(**kw) -> SchedulerParams:
    return SchedulerParams(tick_us=TICK, slice_us=SLICE, wakeup_granularity_us=0.0, eevdf=True, **kw)


def hog(m: Machine, name: str, ran: dict, pin=None):
    """An always-runnable task; `ran[name]` is its CPU time so far (counted per 100 us chunk done)."""
    task = m.new_task(name)
    if pin is None:
        first, _ = m.spawn(task, None)
    else:  # placed on CPU `pin` as if forked there (pack)
        first = simpy.Event(m.env)
        task._wake_event = first
        eevdf.place_new(task, m.cpus[pin], SLICE)
        m._activate(task, m.cpus[pin], None)

    def body():
        yield first
        while True:
            yield task.run(100.0, preemptible=True)
            ran[name] = ran.get(name, 0.0) + 100.0

    m.env.process(body())
    return task



def _two_hogs_after_10ms():
    """One EEVDF CPU that two always-runnable hogs have shared for 10 ms."""
    env = simpy.Environment()
    m = Machine(env, 1, eevdf_params())
    ran: dict[str, float] = {}
    a, b = hog(m, "a", ran), hog(m, "b", ran)
    env.run(until=10_000.0)
    return env, m, m.cpus[0], a, b

def test_two_always_runnable_tasks_share_one_cpu_evenly():
    """Two hogs on one CPU for a second: each gets half within 1% (slices end at ticks)."""
    env = simpy.Environment()
    m = Machine(env, 1, eevdf_params())
    ran: dict[str, float] = {}
    for name in ("a", "b"):
        hog(m, name, ran)
    env.run(until=1e6)
    share = ran["a"] / (ran["a"] + ran["b"])
    assert share == pytest.approx(0.5, abs=0.01), ran
    assert ran["a"] + ran["b"] == pytest.approx(1e6, abs=200.0)


def test_a_woken_task_is_placed_with_its_lag():
    """place_entity with PLACE_LAG: V - vlag * (n + 1) / n, deadline a slice later; a new task has
    no lag and half a slice to its deadline."""
    env, m, cpu, a, b = _two_hogs_after_10ms()
    sleeper = m.new_task("s")
    sleeper.vlag = 300.0
    sleeper.state = "sleeping"
    sleeper.prev_cpu = cpu
    cpu._sync_min_vruntime()
    v, n = eevdf.avg_vruntime(cpu)
    assert n == 2 and v == pytest.approx((a.vruntime + b.vruntime) / 2)
    eevdf.place_woken(sleeper, cpu, SLICE)
    assert sleeper.vruntime == pytest.approx(v - 300.0 * 3 / 2)
    assert sleeper.deadline == pytest.approx(sleeper.vruntime + SLICE)
    new = m.new_task("n")
    eevdf.place_new(new, cpu, SLICE)
    assert new.vruntime == pytest.approx(v) and new.deadline == pytest.approx(v + SLICE / 2)


def test_lag_at_sleep_is_clamped_and_negative_lag_dropped():
    """update_entity_lag clamps to max(2 slices, a tick); DELAY_DEQUEUE leaves no negative lag."""
    env, m, cpu, a, b = _two_hogs_after_10ms()
    cpu._sync_min_vruntime()
    v, _ = eevdf.avg_vruntime(cpu)
    a.vruntime = v - 1e6  # far behind: lag clamped
    assert eevdf.dequeue_lag(a, cpu, SLICE, TICK) == pytest.approx(eevdf.lag_limit(SLICE, TICK))
    a.vruntime = v + 1e6  # far ahead: negative lag, dropped
    assert eevdf.dequeue_lag(a, cpu, SLICE, TICK) == 0.0


@pytest.mark.parametrize("sleep, keep_lag, runs_at", [
    (100.0, False, 2 * TICK),        # no lag: waits for the hog's protected slice, seen at the 8 ms tick
    (2000.0, False, TICK + 2000.0),  # woken after the protection ended: preempts at once
    (100.0, True, TICK + 100.0),     # its own (positive) lag makes the hog ineligible: preempts at once
])
def test_run_to_parity_protects_an_eligible_running_slice(sleep, keep_lag, runs_at):
    """A hog and a task that first runs at the 4 ms tick (the hog's first, half-slice request ends
    at 0.75 ms; the tick notices it), then sleeps `sleep`. The hog, picked again at 4 ms, is
    protected up to its deadline (5.5 ms) while it is eligible (pick_eevdf drops an ineligible
    current): a woken task with no lag waits for the tick at 8 ms; one woken after the protection
    preempts at once; one that keeps the lag it left with (it waited 4 ms: owed service) is placed
    that far behind V, the hog is no longer eligible, and it preempts at once."""
    env = simpy.Environment()
    m = Machine(env, 1, eevdf_params())
    ran: dict[str, float] = {}
    seen = {}

    def sleeper():
        task = m.new_task("s")
        ev, _ = m.spawn(task, None)
        yield ev
        seen["first"] = env.now
        woken = task.sleep()
        seen["lag"] = task.vlag
        if not keep_lag:
            task.vlag = 0.0
        yield env.timeout(sleep)
        m.wake(task, None)
        yield woken
        seen["again"] = env.now
        task.sleep()

    hog(m, "h", ran)
    env.process(sleeper())
    env.run(until=20_000.0)
    assert seen["first"] == pytest.approx(TICK)
    assert seen["lag"] > 0.0
    assert seen["again"] == pytest.approx(runs_at, abs=1.0)


def test_pelt_load_halves_in_32_ms():
    assert decay(32 * 1024.0) == pytest.approx(0.5)
    env = simpy.Environment()
    m = Machine(env, 1, eevdf_params(balance=BalanceParams()))
    t = m.new_task("t")
    t.load_avg, t.load_t, t.state = 0.0, 0.0, "runnable"
    env.run(until=32 * 1024.0)
    t._pelt(True)
    assert t.load_avg == pytest.approx(512.0)


@pytest.mark.parametrize("idle_pull, moved", [(1.0, True), (0.0, False)])
def test_an_idle_cpu_pulls_one_of_two_hogs_within_the_interval(idle_pull, moved):
    """Two hogs on CPU 0, CPU 1 idle: they switch at every tick, so the nohz idle balance (after the
    tick's switch) finds the waiting one cache hot (it ran until then: migration_cost) and fails, until
    its failures pass cache_nice_tries: at the third tick it moves it to CPU 1. With vCPU packing (an
    idle vCPU never pulls) both stay on CPU 0."""
    env = simpy.Environment()
    bal = BalanceParams(interval_us=2000.0, idle_pull=idle_pull, uniform=lambda: 0.5)
    m = Machine(env, 2, eevdf_params(balance=bal))
    ran: dict[str, float] = {}
    a, b = hog(m, "a", ran, pin=0), hog(m, "b", ran, pin=0)
    env.run(until=2 * TICK + 1.0)
    assert {a.cpu.id, b.cpu.id} == {0}
    env.run(until=3 * TICK + 1.0)
    on = {a.cpu.id, b.cpu.id}
    assert (on == {0, 1}) is moved, (a, b)
    env.run(until=200_000.0)
    assert ({a.cpu.id, b.cpu.id} == {0, 1}) is moved
    if moved:  # each then has a CPU to itself
        assert ran["a"] == pytest.approx(ran["b"], rel=0.05)


def test_a_busy_cpu_takes_a_hog_from_an_overloaded_one():
    """Three hogs on CPU 0 and one on CPU 1: periodic balancing from CPU 1 (every interval x
    busy_factor) takes one hog: two and two."""
    env = simpy.Environment()
    bal = BalanceParams(interval_us=2000.0, idle_pull=0.0, uniform=lambda: 0.5)
    m = Machine(env, 2, eevdf_params(balance=bal))
    ran: dict[str, float] = {}
    tasks = [hog(m, f"h{i}", ran, pin=0) for i in range(3)] + [hog(m, "h3", ran, pin=1)]
    env.run(until=500_000.0)
    per = [sum(1 for t in tasks if t.cpu.id == c) for c in (0, 1)]
    assert per == [2, 2], per


def test_a_balanced_pass_starts_the_failed_attempts_over():
    """sched_balance_rq's out_balanced sets nr_balance_failed to 0: failures count only in a row, so a hot
    task (or one whose load outweighs the imbalance) is forced over only after passes that each found an
    imbalance and moved nothing."""
    env = simpy.Environment()
    # PELT kept, the periodic passes off: this test makes the passes itself
    bal = BalanceParams(enabled=False, interval_us=2000.0, idle_pull=0.0, uniform=lambda: 0.5)
    m = Machine(env, 2, eevdf_params(balance=bal))
    ran: dict[str, float] = {}
    hog(m, "a", ran, pin=0), hog(m, "b", ran, pin=0), hog(m, "c", ran, pin=1)
    balancer, cpu0, cpu1 = m._balancer, m.cpus[0], m.cpus[1]
    env.run(until=200_000.0)  # PELT: CPU 0 overloaded (load 2048), CPU 1 fully busy (1024)
    # an imbalance of 512, and a hog's load (1024) does not fit it: a failure (the next pass would halve the load)
    assert not balancer.busy_pass(cpu1)
    assert balancer.failed[1] == 1
    cpu0.rq.clear()  # CPU 0 with one task: nothing to balance
    assert not balancer.busy_pass(cpu1)
    assert balancer.failed[1] == 0


def test_eevdf_with_short_slices_is_processor_sharing():
    """M/G/1 (hyperexponential service, cv^2 = 4) under EEVDF with a 4% slice and tick: the mean
    response is that of exact processor sharing on the same arrivals and service times within 3%
    (EEVDF's lag placement and half-slice first deadline included)."""
    from test_engine import ps_exact, simulate

    import numpy as np

    diffs = []
    for ss in np.random.SeedSequence(404).spawn(2):
        q = 0.04
        params = SchedulerParams(tick_us=q, slice_us=q, wakeup_granularity_us=q, eevdf=True)
        run = simulate(ss, 0.7, 1, 4_000, "hyperexponential", params, True)
        exact = ps_exact(run.arrivals, run.service)
        diffs.append(float(run.response[500:].mean()) / float(exact[500:].mean()))
    assert np.mean(diffs) == pytest.approx(1.0, abs=0.03), diffs


def test_duty_cycle_hog_never_spins_on_a_remainder_below_the_clock_resolution():
    # 0.6 x 10 ms leaves a remainder of ~1e-12 us that `now + remainder` cannot represent past ~8 ms:
    # the hog ran chunks of no time forever (a validate scenario hung). In a subprocess, so a
    # regression fails on the timeout instead of hanging the suite.
    import subprocess
    import sys

    code = ("from forksim.config import parse_config\nfrom forksim.runner import run_experiment\n"
            "exp = parse_config({'experiment': {'duration': '300ms', 'warmup': '10ms', 'replications': 1},"
            " 'machine': {'cpus': 2, 'profile': 'default'}, 'workload': {'parents': 1},"
            " 'background': {'cpu_hogs': 1, 'hog_duty': 0.6}})\n"
            "s = run_experiment(exp).summary\nprint(s['forks'], s['cpu_utilization'])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    forks, util = out.stdout.split()
    assert int(forks) > 0 and 0.3 < float(util) <= 1.0


@pytest.mark.parametrize("text, expect", [
    ("se.sum_exec_runtime   :   0.000000\nse.slice                                     :              1400000\n", 1400.0),
    ("se.sum_exec_runtime   :   0.000000\n", None),  # a kernel before 6.12 prints no slice
])
def test_the_base_slice_falls_back_to_proc_self_sched(monkeypatch, text, expect):
    """With debugfs locked, the base slice is a nice-0 task's own se.slice (ns -> us); without one
    the reason debugfs failed is kept."""
    from pathlib import Path

    from forksim.lab import facts

    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: text)
    value, why = facts.proc_sched_slice("debugfs: locked")
    assert value == expect
    assert why.endswith("debugfs: locked)" if expect else "debugfs: locked")


@pytest.mark.parametrize("eevdf_on", [True, False])
def test_a_new_child_waits_for_a_running_hogs_protected_slice(eevdf_on):
    """The traced 6.18 behaviour (tools/sched_trace.py, 2 hogs + 2 forking parents: a new child beside
    a running hog preempted it at once only 18-33% of the time): a parent runs at the 4 ms tick,
    forks 100 us later and sleeps in wait(); the hog, picked again then, is protected up to its
    deadline. The child (no lag, half a slice to its deadline) leaves the hog eligible, so under EEVDF
    it waits for the tick after the protection ends (8 ms). The plain fair queue follows
    wake_up_new_task's rule (forksim.sched.eevdf.new_task_resched: the hog alone with the child is
    not rescheduled at the enqueue) and its slice-end tick: 8 ms too."""
    env = simpy.Environment()
    m = Machine(env, 1, eevdf_params() if eevdf_on else SchedulerParams(
        tick_us=TICK, slice_us=SLICE, wakeup_granularity_us=0.0))
    seen = {}

    def parent():
        task = m.new_task("p")
        ev, _ = m.spawn(task, None)
        yield ev
        seen["parent"] = env.now
        yield task.run(100.0, preemptible=False)
        task.sleep()  # wait(): the hog is picked now
        yield env.timeout(100.0)
        child = m.new_task("p.fork")
        seen["fork"] = env.now
        first, _ = m.spawn(child, task)
        yield first
        seen["child"] = env.now

    hog(m, "h", {})
    env.process(parent())
    env.run(until=20_000.0)
    assert seen["parent"] == pytest.approx(TICK) and seen["child"] == pytest.approx(2 * TICK, abs=1.0)


@pytest.mark.parametrize("balanced", [False, True])
def test_a_pinned_task_and_its_children_never_leave_their_cpu(balanced):
    """workload.pin (sched_setaffinity): two always-runnable tasks pinned to CPU 0 share it while CPU 1
    idles (no newidle, nohz or periodic pull moves them), a child spawned by one inherits the pin although
    CPU 1 is idle, and an unpinned task still goes to the idle CPU."""
    env = simpy.Environment()
    params = eevdf_params(balance=BalanceParams() if balanced else None)
    m = Machine(env, 2, params)
    ran: dict[str, float] = {}
    a, first_a = m.start_task("a", pin=0)
    b, first_b = m.start_task("b", pin=2)  # 2 % 2 CPUs: CPU 0 too
    seen: dict[str, set] = {"a": set(), "b": set(), "child": set()}

    def spin(task, first, name):
        yield first
        while True:
            seen[name].add(task.cpu.id)
            yield task.run(100.0, preemptible=True)
            ran[name] = ran.get(name, 0.0) + 100.0

    def child_of_a():
        yield env.timeout(5_000.0)
        child = m.new_task("child")
        first, _ = m.spawn(child, a)
        yield first
        seen["child"].add(child.cpu.id)
        yield child.run(50.0)
        seen["child"].add(child.cpu.id)
        child.exit()

    env.process(spin(a, first_a, "a"))
    env.process(spin(b, first_b, "b"))
    env.process(child_of_a())
    env.run(until=100_000.0)
    assert seen == {"a": {0}, "b": {0}, "child": {0}}
    assert ran["a"] == pytest.approx(ran["b"], rel=0.1)
    free, first_free = m.start_task("free")
    assert free.cpu is m.cpus[1]


def test_a_sync_wakeup_keeps_the_wakee_on_its_idle_previous_cpu():
    """exit_notify's sync wake of a parent asleep in wait4 from a child running on the other CPU:
    wake_affine_idle picks the waker's CPU, but select_idle_sibling returns the previous CPU when it is
    idle ("don't be stupid"), so the parent wakes where it slept (traced on 6.18: 0 of 253 moved). When
    the previous CPU is busy, the sync wake-up pulls it to the waker's."""
    for prev_busy in (False, True):
        env = simpy.Environment()
        m = Machine(env, 2, eevdf_params())
        parent, first_p = m.start_task("parent")
        child, first_c = m.start_task("child")
        ran: dict[str, float] = {}
        if prev_busy:
            hog(m, "hog", ran, pin=0)
        where = {}

        def parent_body():
            yield first_p
            yield parent.sleep()
            where["woke_on"] = parent.cpu.id

        def child_body():
            yield first_c
            yield env.timeout(100.0)
            m.wake(parent, child, sync=True)
            yield child.run(10.0)
            child.exit()

        env.process(parent_body())
        env.process(child_body())
        env.run(until=20_000.0)
        assert where["woke_on"] == (1 if prev_busy else 0), (prev_busy, where)


def _forking_parent_beside(m: Machine, ran: dict, hogs_here: int, hogs_there: int, settle_us: float = 0.0):
    """A parent on CPU 0 running (a long chunk), `hogs_here` hogs waiting beside it, `hogs_there` on CPU 1;
    the hogs (kept there: their affinity) run `settle_us` alone first (their PELT utilisation builds up)."""
    for i in range(hogs_here):
        hog(m, f"h{i}", ran, pin=0).affinity = m.cpus[0]
    for i in range(hogs_there):
        hog(m, f"r{i}", ran, pin=1).affinity = m.cpus[1]
    m.env.run(until=settle_us)
    parent = m.new_task("parent")
    first = simpy.Event(m.env)
    parent._wake_event = first
    eevdf.place_new(parent, m.cpus[0], SLICE)
    m._activate(parent, m.cpus[0], None)
    return parent


@pytest.mark.parametrize("here, there, expect", [(1, 1, 1), (0, 2, 0), (1, 2, 0)])
def test_fork_placement_with_no_idle_cpu_follows_the_group_types(here, there, expect):
    """sched_balance_find_dst_group (forksim.sched.idlest), the hogs running 200 ms first: the parent's CPU
    overloaded (parent + a hog) against one fully busy with a lone hog pushes the child there; a new parent
    alone (spare capacity) against two hogs (overloaded) keeps it; both overloaded with loads within
    imbalance_pct keep it. Fresh hogs (no utilisation yet) leave both CPUs with spare capacity: kept."""
    from forksim.sched.idlest import find_dst_cpu

    env = simpy.Environment()
    bal = BalanceParams(interval_us=2000.0, uniform=lambda: 0.5)
    m = Machine(env, 2, eevdf_params(balance=bal))
    ran: dict[str, float] = {}
    parent = _forking_parent_beside(m, ran, here, there, settle_us=200_000.0)
    env.run(until=200_001.0)
    assert not m._idle
    assert find_dst_cpu(m, m.cpus[0], bal).id == expect, (m.cpus, parent)


@pytest.mark.parametrize("share, others, draw, expect", [(0.0, 1.0, 0.5, 1), (1.0, 0.0, 0.5, 0),
                                                          (0.6, 0.0, 0.5, 0), (0.6, 1.0, 0.7, 1)])
def test_measured_fork_shares_with_no_idle_cpu(share, others, draw, expect):
    """BalanceParams.fork_local_no_idle: parent + hog on CPU 0 (overloaded), a lone hog on CPU 1 (fully
    busy): the kernel's case is "higher_type" with one runnable task more on the parent's CPU, so the child
    stays with that cell's share (a U(0,1) draw below it), whatever the other cells' shares."""
    from forksim.sched.idlest import NO_IDLE_KEYS, find_dst_cpu

    shares = tuple(share if k == "higher_type/one_more" else others for k in NO_IDLE_KEYS)
    env = simpy.Environment()
    bal = BalanceParams(interval_us=2000.0, fork_local_no_idle=shares, uniform=lambda: draw)
    m = Machine(env, 2, eevdf_params(balance=bal))
    _forking_parent_beside(m, {}, 1, 1, settle_us=200_000.0)
    env.run(until=200_001.0)
    assert find_dst_cpu(m, m.cpus[0], bal).id == expect


@pytest.mark.parametrize("local, idlest, case", [
    ((HAS_SPARE, 900.0), (FULLY_BUSY, 1024.0), "lower_type"),
    ((OVERLOADED, 2048.0), (FULLY_BUSY, 1024.0), "higher_type"),
    ((HAS_SPARE, 3000.0), (HAS_SPARE, 100.0), "both_spare"),  # no idle CPU on either side: kept
    ((OVERLOADED, 2200.0), (OVERLOADED, 2048.0), "load_keep"),  # within imbalance_pct
    ((OVERLOADED, 2600.0), (OVERLOADED, 2048.0), "load_push"),
    ((FULLY_BUSY, 1100.0), (FULLY_BUSY, 1000.0), "load_keep"),  # more by 10%, less than NICE_0_LOAD x 17%
])
def test_the_kernels_case_for_a_new_task_with_no_idle_cpu(local, idlest, case):
    """forksim.sched.idlest.verdict: sched_balance_find_dst_group's decision for (group type, PELT load)."""
    from forksim.sched.idlest import KEEPS, verdict

    assert verdict(local, idlest, 117) == case
    assert (case in KEEPS) == (case in ("lower_type", "both_spare", "load_keep"))


def test_a_delayed_sleeper_counts_as_queued_for_fork_placement():
    """rq->nr_running counts a DELAY_DEQUEUE sleeper until it leaves the queue (forksim.sched.idlest)."""
    from forksim.sched.idlest import nr_queued

    env = simpy.Environment()
    m = Machine(env, 1, eevdf_params(balance=BalanceParams()))
    cpu = m.cpus[0]
    t = m.new_task("t")
    t.state = "sleeping"
    t._delayed = cpu
    cpu.delayed.append(t)
    assert nr_queued(m, cpu) == 1
    eevdf.undelay(t)  # picked off (or woken): gone
    assert nr_queued(m, cpu) == 0 and t._delayed is None


def test_pick_eevdf_runs_the_eligible_task_with_the_earliest_deadline():
    """pick_index: of tasks at V the one with the earlier deadline runs (a new child's half slice beats a
    hog part-way through its slice), not the lower vruntime; an ineligible task (above V) waits
    whatever its deadline."""
    env = simpy.Environment()
    m = Machine(env, 1, eevdf_params())
    cpu = m.cpus[0]
    hog_, child, late = m.new_task("hog"), m.new_task("child"), m.new_task("late")
    hog_.vruntime, hog_.deadline = 1000.0, 1900.0
    child.vruntime, child.deadline = 1001.0, 1751.0
    late.vruntime, late.deadline = 5000.0, 100.0  # V = 2333: not eligible
    for t in (hog_, child, late):
        cpu._enqueue(t)
    assert cpu._pick() is child
    assert cpu._pick() is hog_  # V now 3000: the hog is eligible, late is not
    assert cpu._pick() is late


@pytest.mark.parametrize("queued_deadline, preempts", [(1500.0, False), (2500.0, True)])
def test_a_wakee_preempts_an_ineligible_runner_only_if_it_is_the_pick(queued_deadline, preempts):
    """check_preempt_wakeup_fair: `__pick_eevdf() == pse`. The running task is above V (ineligible), so
    its protection is dropped; the woken task (at V, deadline V + half a slice) preempts only when no
    eligible queued task has an earlier deadline."""
    m, cpu, cur, woken = _ineligible_runner(queued_deadline)
    assert eevdf.wakeup_preempts(cpu, cur, woken, 0.0, 1400.0, 1e-6) is preempts


def test_a_task_switched_out_past_its_deadline_queues_with_a_new_one():
    """update_deadline runs in put_prev_entity's update_curr: a hog that ran alone for 10 ms, far past its
    first deadline, queues with its deadline a slice past its vruntime, so a new child placed beside it
    (at V, half a slice) is picked first; with the deadline it ran through, the hog would be."""
    env = simpy.Environment()
    m = Machine(env, 1, eevdf_params())
    h = hog(m, "h", {})
    env.run(until=10_000.0)
    cpu = m.cpus[0]
    cpu._account(h)
    child = m.new_task("child")
    eevdf.place_new(child, cpu, SLICE)
    cpu._enqueue(child)
    cpu._preempt(h)
    assert h.deadline == pytest.approx(h.vruntime + SLICE)
    assert cpu.current is child


def test_a_new_child_leaves_its_parent_the_cpu_inside_its_protected_slice():
    """wake_up_new_task: the same state as a new child keeps the forking parent running, however it stands
    against V (traced: 10 of 40,955 children forked inside the parent's slice ran first; the pick would give
    most)."""
    m, cpu, cur, child = _ineligible_runner(2500.0)
    assert eevdf.wakeup_preempts(cpu, cur, child, 0.0, 1400.0, 1e-6, new=True) is False
    cur._protect_end = 0.0  # past its slice, another task queued: update_curr reschedules it
    assert eevdf.wakeup_preempts(cpu, cur, child, 0.0, 1400.0, 1e-6, new=True) is True


def _ineligible_runner(queued_deadline: float):
    """One CPU: `cur` running above V inside its protected slice, `other` queued below V with the deadline
    given, and a third task just queued at V (deadline V + half a slice)."""
    env = simpy.Environment()
    m = Machine(env, 1, eevdf_params())
    cpu = m.cpus[0]
    cur, other, task = m.new_task("cur"), m.new_task("other"), m.new_task("task")
    cur.vruntime, cur.deadline, cur._protect_end = 1100.0, 2400.0, 1e9
    other.vruntime, other.deadline = 900.0, queued_deadline
    cpu.current = cur
    cpu._enqueue(other)
    task.vruntime, task.deadline = 1000.0, 2000.0  # V of the three = 1000: at V, eligible
    cpu._enqueue(task)
    assert eevdf.avg_vruntime(cpu) == (1000.0, 3)
    return m, cpu, cur, task


def _fork_loop(m: Machine, cpu: int, work_us: float = 40.0, child_us: float = 60.0):
    """A parent on `cpu` that forks a child onto its own CPU, sleeps in wait until the child (`child_us`
    of work) exits and wakes it, and forks again: the CPU is busy all the time with short-lived tasks."""
    parent = m.new_task("parent")
    first = simpy.Event(m.env)
    parent._wake_event = first
    eevdf.place_new(parent, m.cpus[cpu], SLICE)
    m._activate(parent, m.cpus[cpu], None)

    def child_life(child, started):
        yield started
        yield child.run(child_us)
        m.wake(parent, child, sync=True)
        child.exit()

    def body():
        yield first
        n = 0
        while True:
            yield parent.run(work_us)
            child = m.new_task(f"child{n}")
            n += 1
            started, _ = m.spawn(child, parent, pack=True)
            m.env.process(child_life(child, started))
            yield parent.sleep()

    m.env.process(body())
    return parent


def test_a_cpu_busy_with_short_lived_children_has_spare_capacity_and_takes_no_hog():
    """Two hogs on CPU 0, a fork loop alone on CPU 1 (busy all the time): each child's utilisation leaves
    with it, so CPU 1's util_avg stays under capacity / imbalance_pct (group_has_spare) and the periodic
    balance evens task counts only: 2 against 1 is as even as it gets, and the hogs stay packed, as
    traced on this kernel (closed-fork-K1-rss0-hogs2: no hog migration in the window)."""
    from forksim.sched.balance import HAS_SPARE, cpu_stats, group_type

    env = simpy.Environment()
    bal = BalanceParams(interval_us=2000.0, idle_pull=0.0, uniform=lambda: 0.5)
    m = Machine(env, 2, eevdf_params(balance=bal))
    ran: dict[str, float] = {}
    a, b = hog(m, "a", ran, pin=0), hog(m, "b", ran, pin=0)
    _fork_loop(m, 1)
    env.run(until=400_000.0)
    assert (a.cpu.id, b.cpu.id) == (0, 0)
    assert m._balancer.migrations == 0
    busy = m.busy_per_cpu()[1] / env.now
    _, util, runnable = cpu_stats(m.cpus[1], env.now)
    assert busy > 0.95 and util < 1024.0 * 100 / 117
    assert group_type(1, util, runnable, 117) == HAS_SPARE


@pytest.mark.parametrize("util, load, expect", [(0.0, 0.0, 512.0), (400.0, 800.0, 312.0), (300.0, 3000.0, 102.3)])
def test_a_new_task_starts_at_its_share_of_the_cpus_utilisation(util, load, expect):
    """post_init_entity_util_avg: util x 1024 / (load + 1), at most half the spare capacity."""
    from forksim.sched import balance

    env = simpy.Environment()
    m = Machine(env, 1, eevdf_params(balance=BalanceParams()))
    orig = balance.cpu_stats
    try:
        balance.cpu_stats = lambda *_: (load, util, 0.0)
        assert balance.initial_util(m.cpus[0], 0.0) == pytest.approx(expect, abs=0.1)
    finally:
        balance.cpu_stats = orig


def test_a_delayed_sleeper_counts_in_v_until_picked_and_is_woken_where_it_sleeps():
    """DELAY_DEQUEUE: a sleeper above V stays queued on its CPU (its vruntime in V) while others run;
    woken meanwhile it is requeued there (ttwu_runnable) with its vruntime kept, whatever CPU the wake
    rule would pick; once eligible and chosen by pick_eevdf it leaves with zero lag."""
    env = simpy.Environment()
    m = Machine(env, 2, eevdf_params())
    cpu = m.cpus[0]
    s, x, y = m.new_task("s"), m.new_task("x"), m.new_task("y")
    s.vruntime, s.deadline = 3000.0, 3500.0
    x.vruntime, x.deadline = 1000.0, 2400.0
    y.vruntime, y.deadline = 1100.0, 2500.0
    s.state, s._delayed, s.prev_cpu = "sleeping", cpu, cpu
    cpu.delayed.append(s)
    for t in (x, y):
        cpu._enqueue(t)
    assert eevdf.avg_vruntime(cpu) == (pytest.approx(5100.0 / 3), 3)
    assert cpu._pick() is x and s._delayed is cpu  # s is above V: not eligible, still queued
    m.wake(s, None, to=m.cpus[1])
    assert s.cpu is cpu and s.vruntime == 3000.0 and not cpu.delayed
    # queued now: y (1100) and s (3000). A sleeper t delayed at 4000 is above V = 2700 and stays at a
    # pick; once y has run past it (V = 4000) it is eligible with the earliest deadline: picked off
    t = m.new_task("t")
    t.vruntime, t.deadline, t.state, t._delayed = 4000.0, 3200.0, "sleeping", cpu
    cpu.delayed.append(t)
    assert eevdf.pick_index(cpu.rq, 1e-6, cpu.delayed) >= 0 and t._delayed is cpu
    y.vruntime = 5000.0
    assert cpu.rq[eevdf.pick_index(cpu.rq, 1e-6, cpu.delayed)][2] is s
    assert t._delayed is None and not cpu.delayed and t.vlag == 0.0


def one_parent() -> tuple:
    """A one-CPU EEVDF machine and a parent task started on it: (env, machine, parent, its first run)."""
    env = simpy.Environment()
    m = Machine(env, 1, eevdf_params())
    parent = m.new_task("parent")
    first, _ = m.spawn(parent, None)
    return env, m, parent, first


def fork_then_sleep(m: Machine, parent, first, run_us: float, child_body, seen: dict) -> None:
    """The parent's process: after its first run it runs `run_us`, forks a child placed on its CPU (whose process
    is child_body(child, the child's first run)) and sleeps at once; seen["woken"]: when it runs again."""
    def body():
        yield first
        yield parent.run(run_us)
        child = m.new_task("child")
        child_first, _ = m.spawn(child, parent)
        m.env.process(child_body(child, child_first))
        yield parent.sleep()
        seen["woken"] = m.env.now

    m.env.process(body())


@pytest.mark.parametrize("wake_at, preempts", [(3990.0, True), (4000.0, False)])
def test_a_delayed_sleeper_woken_by_the_runner_reads_v_with_the_runners_stored_vruntime(wake_at, preempts):
    """A parent that forked at 3,700 us and slept at once (lag 0: delayed) is woken by its child (a vfork
    child's mm_release). requeue_delayed_entity reads V with the child's vruntime as stored at its pick, 290 us
    stale: the parent keeps its vruntime, and at the wake-up check's update_curr the child, inside its protected
    slice, is past V, ineligible: the parent is the pick and preempts it. At the tick (4,000 us) the child's
    vruntime was stored just then: the parent, with lag above zero, is placed at V and the child keeps the CPU."""
    env, m, parent, first = one_parent()
    seen = {}

    def child_body(child, child_first):
        yield child_first
        yield child.run(wake_at - env.now)
        assert m.cpus[0].stored_vruntime() == pytest.approx(child.vruntime - (wake_at - 3700.0 if wake_at % TICK else 0.0))
        m.wake(parent, child)
        seen["resched"] = child.need_resched
        yield child.run(1.0)
        child.exit()

    fork_then_sleep(m, parent, first, 3700.0, child_body, seen)
    env.run(until=5000.0)
    assert seen["resched"] is preempts


def test_a_task_on_its_way_to_the_cpu_has_its_queued_vruntime_stored():
    """A task chosen but not yet running (a halted vCPU waking for it) has run nothing since its pick: the
    vruntime V reads for it is the one it was queued with, however long ago the CPU last stored one."""
    env = simpy.Environment()
    m = Machine(env, 1, eevdf_params(idle_wake=lambda: 30.0))
    task = m.new_task("t")
    m.spawn(task, None)
    env.run(until=10.0)  # inside the 30 us halt exit
    cpu = m.cpus[0]
    assert cpu.current is task and cpu.in_transit
    assert cpu.stored_vruntime() == task.vruntime


def test_the_ticks_balance_pass_sees_the_switch_that_tick_made():
    """Two hogs sharing CPU 0 switch at ticks (their slices end there); the balance pass of each tick runs
    after that switch (SCHED_SOFTIRQ after sched_tick): the CPU's current task it sees is the one just
    switched to, and the waiting one is the hog that was switched out (the one a balancer may pull)."""
    env = simpy.Environment()
    bal = BalanceParams(interval_us=2000.0, idle_pull=0.0, uniform=lambda: 0.5)
    m = Machine(env, 2, eevdf_params(balance=bal))
    ran: dict[str, float] = {}
    hog(m, "a", ran, pin=0)
    hog(m, "b", ran, pin=0)
    dispatched: dict[float, str] = {}
    m.tracer = lambda ev, cpu, task, now: dispatched.__setitem__(now, task.name) if (
        ev == "dispatch" and cpu.id == 0) else None
    seen: dict[float, tuple[str, list[str]]] = {}
    tick = m._balancer.tick

    def spy():
        c = m.cpus[0]
        seen[env.now] = (c.current.name, [e[2].name for e in c.rq])
        tick()

    m._balancer.tick = spy
    env.run(until=100_000.0)
    switches = [t for t in dispatched if t in seen]
    assert len(switches) >= 10
    for t in switches:
        current, waiting = seen[t]
        assert current == dispatched[t]
        assert waiting == [{"a": "b", "b": "a"}[current]]


@pytest.mark.parametrize("child_runs, picked", [(800.0, False), (1500.0, True)])
def test_the_tick_past_the_childs_protected_slice_picks_off_a_delayed_parent(child_runs, picked):
    """A parent that forks at 3,000 us and sleeps at once (lag 0: delayed) beside its child. The child, new, is
    protected for half a slice (to 3,750 us). A child that exits at 3,800 us finds its parent still queued and
    wakes it in place (ttwu_runnable). One that runs to 4,500 us meets the tick at 4,000: update_curr counts the
    delayed parent (nr_queued 2), the slice is over, and the pick takes the parent (eligible, the earlier
    deadline) off the queue with zero lag; the child runs on, and its exit's wake-up of the parent goes through
    select_task_rq (Task.picked_off). Traced: the parent of a 128 MiB fork loop went to the idle CPU in 0.98 of
    the wake-ups after such a tick, against 0 of 360 without (2026-12-05)."""
    env, m, parent, first = one_parent()
    seen = {}

    def child_body(child, child_first):
        yield child_first
        yield child.run(child_runs, preemptible=True)
        seen["delayed"], seen["picked_off"], seen["vlag"] = parent._delayed is not None, parent.picked_off, parent.vlag
        m.wake(parent, child, sync=True)
        child.exit()

    fork_then_sleep(m, parent, first, 3000.0, child_body, seen)
    env.run(until=6000.0)
    assert seen["delayed"] is not picked and seen["picked_off"] is picked
    if picked:
        assert seen["vlag"] == 0.0
    assert seen["woken"] == pytest.approx(3000.0 + child_runs, abs=50.0)


def test_the_ticks_balance_pass_comes_its_measured_delay_after_the_tick():
    """balancing.tick_pass_delay_us: the pass runs that long after each tick (SCHED_SOFTIRQ's detach, traced 20-70 us
    after it), so a kernel thread the tick woke (5 us of work) has run and left the CPU: the pass finds the hog it
    displaced running again and nothing waiting (at the tick itself it would find the thread running and the hog
    waiting, or the thread waiting beside the hog)."""
    from forksim.kthread import KernelThread

    env = simpy.Environment()
    bal = BalanceParams(interval_us=2000.0, idle_pull=0.0, uniform=lambda: 0.5, tick_pass_delay_us=35.0)
    m = Machine(env, 2, eevdf_params(balance=bal))
    ran: dict[str, float] = {}
    hog(m, "a", ran, pin=0)
    work = []
    thread = KernelThread(m, "rcu_preempt", 0, lambda: work.pop() if work else 0.0)

    def ticks():
        while True:
            yield env.timeout(TICK - env.now % TICK)
            work.append(5.0)
            thread.wake()

    env.process(ticks())
    seen: dict[float, tuple[str, tuple[str, ...]]] = {}
    tick = m._balancer.tick

    def spy():
        c = m.cpus[0]
        seen[env.now] = (c.current.name, tuple(e[2].name for e in c.rq))
        tick()

    m._balancer.tick = spy
    env.run(until=40_000.0)
    assert sorted(seen) == pytest.approx([k * TICK + 35.0 for k in range(1, 10)])
    assert ran["a"] > 30_000.0 and thread.task is not None  # the thread ran at the ticks
    assert set(seen.values()) == {("a", ())}


def test_a_kernel_thread_carries_a_long_sleepers_pelt_load_not_a_new_tasks():
    """A kernel thread (alive since boot, asleep nearly always) first woken inside the run weighs nothing on its
    CPU's load; a new task would start at 1024 (init_entity_runnable_average) and weigh for ~100 ms."""
    from forksim.kthread import KernelThread
    from forksim.sched.balance import cpu_stats, task_load

    env = simpy.Environment()
    m = Machine(env, 2, eevdf_params(balance=BalanceParams(interval_us=2000.0, idle_pull=0.0)))
    ran: dict[str, float] = {}
    hog(m, "a", ran, pin=0)
    work = [5.0]
    thread = KernelThread(m, "rcu_preempt", 0, lambda: work.pop() if work else 0.0)
    env.timeout(10_000.0).callbacks.append(thread.wake)
    env.run(until=10_100.0)
    assert thread.task is not None and thread.idle  # ran its 5 us and sleeps
    assert task_load(thread.task, env.now) < 5.0
    assert cpu_stats(m.cpus[0], env.now)[0] == pytest.approx(task_load(m.cpus[0].current, env.now), abs=5.0)
