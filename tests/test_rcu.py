"""RCU callbacks of exited tasks (forksim.rcu, CPU._interruptions): known answers on the engine, the
calibration's fit (calibration/rcu.py), and a profile without the section unchanged."""

from __future__ import annotations

import math

import numpy as np
import pytest
import simpy

from forksim.calibration.plan import Store
from forksim.calibration.rcu import fit_rcu, rcu_run
from forksim.calibration.segments import Event
from forksim.machine import Machine, SchedulerParams
from forksim.profile_sections import RcuCallbacks
from forksim.rcu import RcuBacklog, RcuSpec
from engine_tasks import start_task  # tests/engine_tasks.py
from conftest import REFERENCE_PROFILE

TICK = 4000.0
GRACE = 10000.0


def _machine(cpus: int = 1, cap: float = math.inf, **kw) -> tuple[simpy.Environment, Machine]:
    env = simpy.Environment()
    params = SchedulerParams(tick_us=TICK, slice_us=1e9, wakeup_granularity_us=0.0,
                             rcu=RcuSpec(reap_us=5.0, exit_mm_us=10.0, grace_us=GRACE, softirq_cap_us=cap),
                             interruption_gap=lambda: math.inf, **kw)
    return env, Machine(env, cpus, params)


def test_callbacks_run_after_the_next_grace_period_at_a_tick():
    b = RcuBacklog(GRACE, TICK)
    # queued during grace period 0 (0..10 ms): run after period 1 ends (20 ms), at the tick there
    assert b.due(100.0) == 20000.0
    assert b.due(9999.0) == 20000.0
    # queued in period 1: period 2 ends at 30 ms, the first tick at or after it is 32 ms
    assert b.due(10000.0) == 32000.0
    b.queue(100.0, 3.0)
    b.queue(200.0, 4.0)  # the same batch
    assert list(b.batches) == [[20000.0, 7.0]]


def test_a_chunk_running_when_the_batch_is_due_is_stretched_by_exactly_the_batch():
    """15 us queued at t=1 ms (a reap and a dying mm) run at 20 ms: a 30 ms chunk started at 2 ms
    ends 15 us late; the same chunk on a CPU with nothing queued is not stretched."""
    env, m = _machine(2)
    ends = {}

    def queue_then_run(task):
        yield task.run(1000.0)
        task.cpu.queue_rcu(5.0)
        task.cpu.queue_rcu(10.0)
        yield task.run(1000.0)
        yield task.run(30000.0)
        ends["busy"] = env.now

    def plain(task):
        yield task.run(2000.0)
        yield task.run(30000.0)
        ends["plain"] = env.now

    start_task(env, m, "a", queue_then_run, cpu=0)
    start_task(env, m, "b", plain, cpu=1)
    env.run()
    assert ends["busy"] == pytest.approx(32015.0)
    assert ends["plain"] == pytest.approx(32000.0)


def _batch_due_at_20ms_then_run(task, us: float):
    """`us` of RCU callbacks queued at 1 ms (due at the 20 ms tick), then a 30 ms chunk that cannot be preempted
    from 2 ms on: the batch lands in it."""
    yield task.run(1000.0)
    task.cpu.queue_rcu(us)
    yield task.run(1000.0)
    yield task.run(30000.0)


def test_a_batch_over_the_softirq_cap_leaves_the_rest_to_ksoftirqd_on_that_cpu():
    """500 us due at 20 ms with a 200 us cap: the running 30 ms chunk ends 200 us late; ksoftirqd/0
    then runs the other 300 us on that CPU (the chunk cannot be preempted, and the task reaches no softirq point
    of its own), so the CPU is busy 300 us longer than the task."""
    env, m = _machine(1, cap=200.0)
    ends = {}

    def body(task):
        yield from _batch_due_at_20ms_then_run(task, 500.0)
        ends["task"] = env.now

    start_task(env, m, "a", body)
    env.run()
    assert ends["task"] == pytest.approx(32200.0)
    assert env.now == pytest.approx(32500.0)
    assert m.cpus[0].busy_us == pytest.approx(32500.0)


def test_the_running_tasks_softirq_points_take_the_rest_a_budget_at_a_time_before_ksoftirqd_runs():
    """1000 us due at 20 ms with a 200 us budget: the tick's irq_exit runs 200 inside the running chunk; the
    task's next softirq points (it keeps the CPU: the chunk was not preemptible) take 200 each; ksoftirqd, woken
    as the first budget ended, finds what is left once the task sleeps. Every us of the batch runs once."""
    env, m = _machine(1, cap=200.0)
    got = {}

    def body(task):
        yield from _batch_due_at_20ms_then_run(task, 1000.0)
        got["end"] = env.now
        got["pieces"] = [task.cpu.softirq_point() for _ in range(2)]
        got["left"] = task.cpu.rcu.pending

    start_task(env, m, "a", body)
    env.run()
    assert got["end"] == pytest.approx(32200.0)
    assert got["pieces"] == [200.0, 200.0]
    assert got["left"] == pytest.approx(400.0)
    # the task exits at 32.2 ms (its two pieces are the caller's to charge); ksoftirqd then runs the 400 left
    assert env.now == pytest.approx(32600.0)
    assert m.cpus[0].busy_us == pytest.approx(32600.0)
    assert m.cpus[0].rcu.pending == 0.0


def test_a_creating_call_runs_a_budget_of_the_pending_callbacks_in_copy_process_setup():
    """The clone path's softirq point: with callbacks pending on the parent's CPU, the next fork's setup is one
    budget longer, and the budget leaves the pending work."""
    from forksim import runner
    from forksim.config import parse_config

    exp = parse_config({"experiment": {"name": "t", "duration": "100ms", "warmup": "0ms", "replications": 1, "seed": 3},
                        "machine": {"cpus": 1}, "workload": {"kind": "closed", "parents": 1, "image": {"rss": "0"}}},
                       source="test")
    base = runner.resolve_profile(exp).model_copy(update={"interruptions": None})
    capped = base.model_copy(update={"rcu_callbacks": RcuCallbacks(reap_us=40.0, exit_mm_us=60.0, grace_us=GRACE,
                                                                   softirq_cap_us=150.0, source="assumption: test")})
    recs = runner.run_experiment(exp, profile=capped).records
    plain = runner.run_experiment(exp, profile=base).records
    # some setups carry a whole budget (150 us) on top of a plain setup (a few us)
    assert (recs["setup_us"] > 150.0).any()
    assert not (plain["setup_us"] > 150.0).any()


def _sleep_through_a_batch(batch_us: float, wake_at: float, cap: float = math.inf, preemptible: bool = False):
    """One task runs 1 ms, queues `batch_us` of callbacks (due at 20 ms), sleeps until `wake_at`, then runs a
    10 ms chunk on the same, otherwise idle CPU: (the machine, when the chunk ended)."""
    env, m = _machine(1, cap=cap)
    ends = {}

    def body(task):
        yield task.run(1000.0)
        task.cpu.queue_rcu(batch_us)
        woken = task.sleep()
        env.process(_wake_at(env, m, task, wake_at))
        yield woken
        yield task.run(10000.0, preemptible=preemptible)
        ends["t"] = env.now

    start_task(env, m, "a", body)
    env.run()
    return m, ends["t"]


@pytest.mark.parametrize("wake_at, late", [(25000.0, 0.0), (20030.0, 20.0)])
def test_a_batch_due_while_the_cpu_idles_runs_there_and_delays_only_a_task_arriving_before_it_is_done(wake_at, late):
    """50 us due at 20 ms on an idle CPU: a task woken at 25 ms starts at once, one woken 30 us after the batch
    began waits the 20 us of softirq left."""
    _m, end = _sleep_through_a_batch(50.0, wake_at)
    assert end == pytest.approx(wake_at + late + 10000.0)


def test_run_idle_chains_the_batches_due_while_idle_and_returns_what_is_left():
    b = RcuBacklog(GRACE, TICK)
    b.batches.extend([[100.0, 300.0], [200.0, 50.0], [5000.0, 10.0]])
    # the first from 100 us: softirq to 200, ksoftirqd to 400; at 150 us 50 us of softirq and 200 of ksoftirqd are left
    assert b.run_idle(150.0, cap=100.0) == (50.0, 200.0)
    assert list(b.batches) == [[200.0, 50.0], [5000.0, 10.0]]
    b.batches.appendleft([100.0, 300.0])
    # both: the second waits for the first (from 400 us), all softirq; done by 450 us
    assert b.run_idle(420.0, cap=100.0) == (30.0, 0.0)
    assert b.run_idle(4000.0, cap=100.0) == (0.0, 0.0)  # nothing due yet
    assert list(b.batches) == [[5000.0, 10.0]]


def test_ksoftirqd_keeps_the_rest_of_a_batch_that_ran_in_idle_and_competes_with_the_woken_task():
    """500 us due at 20 ms on an idle CPU, 200 us cap: a task woken at 20.1 ms waits the 100 us of softirq left;
    ksoftirqd, queued on that CPU with the 300 us left, runs after it (this machine's slice outlasts the chunk)."""
    m, end = _sleep_through_a_batch(500.0, 20100.0, cap=200.0, preemptible=True)
    assert end == pytest.approx(20100.0 + 100.0 + 10000.0)
    assert m.env.now == pytest.approx(end + 300.0)
    assert m.cpus[0].busy_us == pytest.approx(1000.0 + 10000.0 + 100.0 + 300.0)


def _wake_at(env, m, task, at):
    yield env.timeout(at - env.now)
    m.wake(task, None)


def test_the_clone_path_queues_a_reap_on_the_parents_cpu_and_an_exit_on_the_childs():
    from forksim import runner
    from forksim.config import parse_config

    exp = parse_config({"experiment": {"name": "t", "duration": "200ms", "warmup": "0ms", "replications": 1, "seed": 3},
                        "machine": {"cpus": 2}, "workload": {"kind": "closed", "parents": 1, "pin": True,
                                                             "image": {"rss": "0"}}}, source="test")
    base = runner.resolve_profile(exp).model_copy(update={"interruptions": None})
    with_rcu = base.model_copy(update={"rcu_callbacks": RcuCallbacks(reap_us=40.0, exit_mm_us=60.0, grace_us=GRACE,
                                                                    source="assumption: test")})
    a = runner.run_experiment(exp, profile=base).summary
    b = runner.run_experiment(exp, profile=with_rcu).summary
    # pinned: every creation's 100 us of callbacks run on the parent's CPU, which is always busy
    loss = 1 - b["throughput_per_s"]["mean"] / a["throughput_per_s"]["mean"]
    cycle_us = 1e6 / a["throughput_per_s"]["mean"]
    assert loss == pytest.approx(100.0 / (cycle_us + 100.0), rel=0.25)
    assert b["fork_latency_us"]["p99"] > a["fork_latency_us"]["p99"]


def _ev(ts_us, name, cpu=1, pid=100, child=None, **f):
    """An event as parse_trace gives it; `child`: the pid field of sched_process_exit/free."""
    fields = {k: str(v) for k, v in f.items()} | ({"pid": str(child)} if child is not None else {})
    return Event(ts_us * 1e3, pid, cpu, name, fields)


def test_fit_from_two_traced_loops():
    def loop(per_exit_us, n=10):
        followed = [_ev(i * 200.0, "sched_process_exit", child=1000 + i) for i in range(n)]
        every = []
        for i in range(n):
            every += [_ev(i * 200.0 + 50, "softirq_entry", vec=9), _ev(i * 200.0 + 50 + per_exit_us, "softirq_exit", vec=9),
                      _ev(i * 200.0 + 12000.0, "sched_process_free", child=1000 + i)]
        every += [_ev(5.0, "softirq_entry", vec=9, pid=0), _ev(500.0, "softirq_exit", vec=9, pid=0)]  # idle: left out
        every += [_ev(7.0, "softirq_entry", vec=7), _ev(9.0, "softirq_exit", vec=7)]  # not RCU
        return rcu_run(followed, sorted(every, key=lambda e: e.ts), 1, ksoftirqd=-1)

    store = Store()
    store.add("rcu", {"exit_cpu": "same", "cpu": 1}, {}, [], [loop(20.0)])
    store.add("rcu", {"exit_cpu": "other", "cpu": 1}, {}, [], [loop(8.0)])
    sec = fit_rcu(store, TICK)
    assert sec["reap_us"] == pytest.approx(8.0)
    assert sec["exit_mm_us"] == pytest.approx(12.0)
    assert sec["grace_us"] == pytest.approx((12000.0 - TICK / 2) / 1.5, abs=0.1)
    assert sec["source"].startswith("measured:")
    assert fit_rcu(Store(), TICK) is None


def test_fit_takes_the_gp_kthread_and_the_vfree_worker_where_the_traces_hold_them():
    gp = 15

    def loop(run_us, fqs, vfree_runs=0):
        followed = [_ev(i * 200.0, "sched_process_exit", child=1000 + i) for i in range(10)]
        every = [_ev(i * 200.0 + 12000.0, "sched_process_free", child=1000 + i) for i in range(10)]
        every += [_ev(i * 400.0 + 50, "softirq_entry", vec=9) for i in range(10)]
        every += [_ev(i * 400.0 + 60, "softirq_exit", vec=9) for i in range(10)]
        for i in range(15):  # rcu_preempt switched in and out on CPU 0, another task's switch on CPU 1 between
            every += [_ev(i * 700.0, "sched_switch", cpu=0, prev_pid=0, next_pid=gp),
                      _ev(i * 700.0 + 1.0, "sched_switch", cpu=1, prev_pid=7, next_pid=8),
                      _ev(i * 700.0 + run_us, "sched_switch", cpu=0, prev_pid=gp, next_pid=0)]
        for i in range(vfree_runs):  # the deferred vfree worker (pid 50), 20 us a run; another work item between
            every += [_ev(i * 900.0, "workqueue_execute_start", cpu=0, pid=50, function="delayed_vfree_work"),
                      _ev(i * 900.0 + 20.0, "workqueue_execute_end", cpu=0, pid=50, function="delayed_vfree_work"),
                      _ev(i * 900.0 + 30.0, "workqueue_execute_start", cpu=0, pid=50, function="vmstat_update"),
                      _ev(i * 900.0 + 90.0, "workqueue_execute_end", cpu=0, pid=50, function="vmstat_update")]
        return rcu_run(followed, sorted(every, key=lambda e: e.ts), 1, ksoftirqd=-1, gp_kthread=gp) | {
            "fqs_jiffies": fqs}

    def fit(fqs, vfree_runs=12):
        store = Store()
        store.add("rcu", {"exit_cpu": "same", "cpu": 1}, {}, [], [loop(4.0, fqs)])
        store.add("rcu", {"exit_cpu": "other", "cpu": 1}, {}, [], [loop(6.0, fqs, vfree_runs)])
        return fit_rcu(store, TICK)

    assert loop(4.0, 1)["gp_kthread_runs_us"] == [4.0] * 15
    sec = fit(1)
    assert sec["gp_kthread_us"] == pytest.approx(5.0) and sec["fqs_jiffies"] == 1
    assert "rcu_preempt" in sec["source"] and "jiffies_till_next_fqs" in sec["source"]
    # the worker's 12 runs of 20 us over the other-CPU loop's 10 stacks
    assert sec["vfree_per_stack_us"] == pytest.approx(24.0) and "delayed_vfree_work" in sec["source"]
    RcuCallbacks(**sec)  # a valid profile section
    # rcutree's parameter unread and no worker traced (a raw file from before 2026-12-06): the section as before
    old = fit(None, vfree_runs=0)
    assert not {"gp_kthread_us", "fqs_jiffies", "vfree_per_stack_us"} & set(old) and old["grace_us"] == sec["grace_us"]


def test_a_profile_section_refuses_an_fqs_wait_under_a_tick():
    with pytest.raises(ValueError, match="fqs_jiffies"):
        RcuCallbacks(reap_us=1.0, exit_mm_us=1.0, grace_us=GRACE, gp_kthread_us=5.0, fqs_jiffies=0,
                     source="assumption: test")


def test_a_profile_without_the_section_loads_and_runs_as_before():
    from forksim.profile import load_profile

    assert load_profile(REFERENCE_PROFILE).rcu_callbacks is None


# ------------------------------------------------------------------ the grace-period kthread (rcu_preempt)

def _gp_machine(cpus: int, fqs_ticks: int = 1, run_us: float = 5.0) -> tuple[simpy.Environment, Machine]:
    env = simpy.Environment()
    params = SchedulerParams(tick_us=TICK, slice_us=1e9, wakeup_granularity_us=0.0,
                             rcu=RcuSpec(reap_us=5.0, exit_mm_us=10.0, grace_us=GRACE, gp_kthread_us=run_us,
                                         fqs_us=fqs_ticks * TICK),
                             interruption_gap=lambda: math.inf)
    return env, Machine(env, cpus, params)


def _gp_runs(m: Machine) -> list[float]:
    """When rcu_preempt began each of its runs (the tracer's "begin")."""
    starts: list[float] = []
    m.tracer = lambda ev, cpu, task, now: starts.append(now) if ev == "begin" and task.name == "rcu_preempt" else None
    return starts


@pytest.mark.parametrize("fqs_ticks", [1, 2, 3])
def test_the_gp_kthread_wakes_every_fqs_and_at_each_periods_first_tick_while_callbacks_wait(fqs_ticks):
    """Callbacks queued every millisecond for 100 ms (the last due at the 112 ms tick): the kthread runs at ticks
    only, every fqs ticks at most apart while callbacks wait (every tick with fqs 1), at each grace period's first
    tick, and never once the last batch's tick has come."""
    env, m = _gp_machine(2, fqs_ticks)
    starts = _gp_runs(m)

    def queue(task):
        for _ in range(100):
            task.cpu.queue_rcu(1.0)
            yield task.run(1000.0)
        yield task.sleep()

    start_task(env, m, "q", queue, cpu=0)
    env.run(until=300_000.0)
    ticks = [round(s / TICK) for s in starts]
    assert all(abs(s - t * TICK) < 50.0 for s, t in zip(starts, ticks))  # at a tick (plus the vCPU's halt exit)
    assert ticks[0] == min(fqs_ticks, 3) and 27 - fqs_ticks < ticks[-1] <= 27
    assert max(np.diff(ticks)) <= fqs_ticks
    if fqs_ticks == 1:
        assert ticks == list(range(1, 28))
    first_ticks = {math.ceil(k * GRACE / TICK) for k in range(1, 11)}
    assert first_ticks <= set(ticks)


def test_no_gp_kthread_without_callbacks_or_without_its_figures():
    env, m = _gp_machine(2)
    starts = _gp_runs(m)
    env.run(until=100_000.0)
    assert starts == []
    env, m = _machine(2)  # an RcuSpec without gp_kthread_us
    starts = _gp_runs(m)
    m.cpus[0].queue_rcu(5.0)
    env.run(until=100_000.0)
    assert starts == []


def test_the_gp_kthread_takes_the_cpu_only_from_a_task_past_its_protected_slice():
    """One CPU, a task running 30 ms alone while its callbacks wait: alone it is never past its slice (nothing else
    queued), so each wake-up of the kthread waits for the task to block; a slice of 1 ms (RUN_TO_PARITY ends at each
    tick's check) lets the kthread in at its wake-up ticks."""
    ends = {}
    for slice_us in (1e9, 1000.0):
        env = simpy.Environment()
        params = SchedulerParams(tick_us=TICK, slice_us=slice_us, wakeup_granularity_us=0.0, eevdf=True,
                                 rcu=RcuSpec(reap_us=5.0, exit_mm_us=10.0, grace_us=GRACE, gp_kthread_us=5.0,
                                             fqs_us=TICK),
                                 interruption_gap=lambda: math.inf)
        m = Machine(env, 1, params)
        starts = _gp_runs(m)

        def work(task):
            task.cpu.queue_rcu(1.0)
            yield task.run(30_000.0, preemptible=True)
            ends[slice_us] = (env.now, list(starts))
            yield task.sleep()

        start_task(env, m, "w", work, cpu=0)
        env.run(until=40_000.0)
    end, runs = ends[1e9]
    assert runs == [] and end == pytest.approx(30_000.0, abs=1.0)
    end, runs = ends[1000.0]
    assert runs and end > 30_000.0 + 5.0 * len(runs) - 1.0


# ------------------------------------------------------------------ stacks freed after RCU (deferred vfree)

def test_the_stack_cache_takes_what_fits_and_says_so():
    from forksim.kernel.stack import StackCache

    cache = StackCache(2, 2)
    assert cache.alloc(0) and cache.alloc(0) and not cache.alloc(0)
    assert cache.free(1) is False  # full since boot
    assert cache.free(0) is True
    assert cache.refill(0, 5) == 1 and cache.refill(0, 5) == 0


def test_stacks_the_cache_cannot_take_are_freed_at_their_batchs_tick_by_the_cpus_worker():
    """Five stacks queued on CPU 0 at 1 ms (their callbacks run at the 20 ms tick), while CPU 0's cache is full: at
    that tick the worker runs 5 x 3 us there. With two slots freed before the tick (two stacks taken by forks), the
    cache takes two back and the worker frees three."""
    from forksim.kernel.stack import StackCache, StackVfree

    for taken, freed_by_worker in ((0, 5), (2, 3)):
        env = simpy.Environment()
        params = SchedulerParams(tick_us=TICK, slice_us=1e9, wakeup_granularity_us=0.0,
                                 rcu=RcuSpec(reap_us=0.0, exit_mm_us=0.0, grace_us=GRACE, vfree_per_stack_us=3.0),
                                 interruption_gap=lambda: math.inf)
        m = Machine(env, 2, params)
        cache = StackCache(2, 2)
        vfree = StackVfree(m, cache, 3.0)
        runs: list[tuple[float, str, str]] = []
        m.tracer = lambda ev, cpu, task, now: runs.append((now, ev, task.state)) if task.name == "kworker/0:vfree" \
            else None

        def exits(task):
            yield task.run(1000.0)
            for _ in range(5):
                assert not cache.free(0)
                vfree.queue(task.cpu)
            yield task.run(1000.0)
            for _ in range(taken):
                assert cache.alloc(0)
            yield task.sleep()

        start_task(env, m, "x", exits, cpu=0)
        env.run(until=50_000.0)
        begin = next(t for t, ev, _ in runs if ev == "begin")
        end = next(t for t, ev, state in runs if ev == "leave")
        assert begin == pytest.approx(20_000.0, abs=50.0)  # the tick after the next grace period (a halt exit)
        assert end - begin == pytest.approx(3.0 * freed_by_worker)
        assert cache.slots[0] == 2


def test_a_profile_without_the_workers_cost_frees_no_stack_after_rcu(monkeypatch):
    from forksim import runner
    from forksim.config import parse_config
    from forksim.kernel.clone import Kernel

    exp = parse_config({"experiment": {"name": "t", "duration": "50ms", "warmup": "0ms", "replications": 1, "seed": 3},
                        "machine": {"cpus": 2}, "workload": {"kind": "closed", "parents": 2,
                                                             "image": {"rss": "0"}}}, source="test")
    base = runner.resolve_profile(exp).model_copy(update={"interruptions": None})
    rcu = RcuCallbacks(reap_us=1.0, exit_mm_us=1.0, grace_us=GRACE, source="assumption: test")
    seen = []
    orig = Kernel.__init__

    def init(self, *a, **k):
        orig(self, *a, **k)
        seen.append(self.vfree)

    monkeypatch.setattr(Kernel, "__init__", init)
    for sec in (rcu, rcu.model_copy(update={"vfree_per_stack_us": 1.0})):
        runner.run_experiment(exp, profile=base.model_copy(update={"rcu_callbacks": sec}))
    assert seen[0] is None and seen[-1] is not None
