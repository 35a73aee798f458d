"""The creation pipeline with the shipped default profile: how fork latency scales with the parent's
image, the shared locks under contention, vfork semantics, conservation of creations,
determinism and monotonicity. Durations are simulated milliseconds, so the whole file is quick."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
import pytest

from forksim import runner
from forksim.config import parse_config
from forksim.metrics import records_frame
from forksim.predict import predict
from forksim.runner import run_experiment
from forksim.simulation import Observer
from forksim.streams import Streams

MiB, GiB = 1024**2, 1024**3
SIZES = (0, 16 * MiB, 64 * MiB, 256 * MiB, 1 * GiB, 4 * GiB)


@lru_cache(maxsize=None)
def pred(rss: int, clone: str = "fork", thp: bool = False) -> dict:
    return predict(rss, clone=clone, thp=thp, samples=200, seed=3)


def exp_of(data: dict):
    return parse_config(data, source="test")


def closed(*, cpus=2, parents=1, rss="1MiB", clone="fork", duration="20ms", warmup="2ms", reps=2, seed=11,
           hogs=0, image=None, child=None, think="0us", machine=None):
    img = {"rss": rss, **(image or {})}
    return exp_of({
        "experiment": {"name": "t", "duration": duration, "warmup": warmup, "replications": reps, "seed": seed},
        "machine": {"cpus": cpus, **(machine or {})},
        "workload": {"kind": "closed", "parents": parents, "think_time": think, "image": img,
                     "child": {"clone": clone, **(child or {})}},
        "background": {"cpu_hogs": hogs},
    })


def without_wall(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k != "sim_wall_s"}


# ------------------------------------------------------------------------- predict: scaling with RSS


def test_fork_latency_grows_with_rss_and_linearly_above_64mib():
    p50 = [pred(s)["fork_latency_us"]["p50"] for s in SIZES]
    mean = [pred(s)["fork_latency_us"]["mean"] for s in SIZES]
    assert all(b > a for a, b in zip(p50, p50[1:])), p50
    assert all(b > a for a, b in zip(mean, mean[1:])), mean
    # above 64 MiB the page-table copy dominates: the cost per MiB added is about constant
    big = [(s, v) for s, v in zip(SIZES, p50) if s >= 64 * MiB]
    per_mib = [(v2 - v1) / ((s2 - s1) / MiB) for (s1, v1), (s2, v2) in zip(big, big[1:])]
    assert max(per_mib) / min(per_mib) < 1.25, per_mib
    # and the 4 GiB fork costs about 64x the 64 MiB increment-wise, not a constant
    assert p50[-1] > 10 * p50[2]


def test_thp_makes_a_1gib_fork_far_cheaper():
    small_pages = pred(1 * GiB)["fork_latency_us"]["p50"]
    huge_pages = pred(1 * GiB, thp=True)["fork_latency_us"]["p50"]
    assert huge_pages < 0.2 * small_pages, (huge_pages, small_pages)


@pytest.mark.parametrize("clone", ["vfork", "posix_spawn", "thread"])
def test_no_mm_copy_kinds_stay_flat_as_rss_grows(clone):
    for stat in ("p50", "mean"):
        values = [pred(s, clone)["fork_latency_us"][stat] for s in (0, 256 * MiB, 4 * GiB)]
        assert max(values) <= 1.2 * min(values), (clone, stat, values)
    # while fork at 4 GiB is two orders of magnitude above fork at 0
    assert pred(4 * GiB)["fork_latency_us"]["p50"] > 20 * pred(0, clone)["fork_latency_us"]["p50"]


def test_thread_creation_is_cheaper_than_fork_at_rss_0():
    thread, fork = pred(0, "thread")["fork_latency_us"], pred(0)["fork_latency_us"]
    assert thread["p50"] < fork["p50"]
    assert thread["mean"] < fork["mean"]


def test_predict_reports_the_stages():
    r = pred(256 * MiB)
    assert r["samples"] >= 190
    assert r["stage_us"]["dup_mmap"] > 0.5 * r["fork_latency_us"]["mean"]
    assert pred(256 * MiB, "vfork")["stage_us"]["dup_mmap"] == 0.0


# ------------------------------------------------------------------------- locks


def _threaded_parent(threads: int):
    return closed(cpus=4, rss="1GiB", duration="300ms", warmup="20ms", reps=2, seed=5,
                  image={"threads": threads, "fault_rate": "20000/s"})


def test_mmap_lock_stalls_a_threaded_parent_for_about_the_dup_mmap_time():
    s = run_experiment(_threaded_parent(4)).summary
    dup = s["stage_us"]["dup_mmap"]
    stall = s["mmap_stall_us"]
    assert dup > 5000  # a 1 GiB copy takes milliseconds
    assert stall["count"] > 0
    assert 0.1 * dup <= stall["p50"] <= 1.5 * dup, (stall, dup)
    assert stall["max"] >= stall["p50"]
    mm = s["lock_wait_us"]["mmap_lock"]
    assert mm["max"] > 0.1 * dup and mm["mean"] > 0.0


def test_a_single_threaded_parent_never_stalls():
    s = run_experiment(_threaded_parent(1)).summary
    assert s["mmap_stall_us"]["count"] == 0
    assert s["lock_wait_us"]["mmap_lock"]["max"] == 0.0


@lru_cache(maxsize=None)
def _tasklist(parents: int) -> dict:
    return run_experiment(closed(cpus=64, parents=parents, rss=0, duration="10ms", warmup="2ms", seed=13)).summary


def test_tasklist_lock_contention_grows_with_parents():
    one, sixteen, many = (_tasklist(p)["lock_wait_us"]["tasklist_lock"] for p in (1, 16, 64))
    assert one["acquisitions"] > 0 and one["mean"] == 0.0 and one["max"] == 0.0
    assert sixteen["mean"] > 0.0
    assert many["mean"] > sixteen["mean"]
    assert many["p99"] >= sixteen["p99"]


# ------------------------------------------------------------------------- vfork semantics


@pytest.mark.parametrize("clone", ["vfork", "posix_spawn"])
def test_vfork_parent_returns_only_after_the_child_execs_or_exits(clone):
    r = run_experiment(closed(cpus=2, parents=2, rss="64MiB", clone=clone, duration="30ms",
                              child={"lifetime": "50us"}))
    df = r.records.dropna(subset=["fork_ret_us"])
    assert len(df) > 20
    assert (df["child_start_us"] <= df["fork_ret_us"]).all()
    # The parent is released when the child lets go of the shared mm (mm_release: in exec, or at
    # exit_mm early in do_exit), after the child's lifetime, and only then returns.
    assert (df["mm_release_us"] >= df["child_start_us"] + 50.0).all()
    assert (df["fork_ret_us"] >= df["mm_release_us"]).all()
    if clone == "vfork":  # no exec: the release is part of the exit, which finishes later
        done = df.dropna(subset=["child_exit_us"])
        assert (done["child_exit_us"] >= done["mm_release_us"]).all()


def test_pthread_join_returns_at_the_threads_mm_release():
    """CLONE_CHILD_CLEARTID: mm_release (in exit_mm, the end of do_exit's head) wakes the joiner's
    futex; the thread goes on with exit_files .. exit_notify and reaps itself. With the joiner's CPU
    idle (the thread placed on the other one), the join returns later the longer that head is, and
    never before mm_release."""
    from forksim.profile import Fraction

    def join_us(share: float) -> float:
        prof = _quiet_profile(exit_head_share=Fraction(value=share, source="test"))
        r = run_experiment(closed(cpus=2, parents=1, rss="0", clone="thread", duration="20ms", reps=1), profile=prof)
        df = r.records.dropna(subset=["reap_us"])
        assert len(df) > 50 and (df["reap_us"] >= df["mm_release_us"]).all()
        assert (df["mm_release_us"] >= df["child_start_us"]).all()
        return float((df["reap_us"] - df["start_us"]).mean())

    assert join_us(0.0) < join_us(0.5) < join_us(1.0)


def _quiet_profile(**update):
    """The default profile without interruptions (their stream depends on chunk boundaries)."""
    prof = runner.resolve_profile(closed())
    return prof.model_copy(update={"interruptions": None, **update})


def test_a_vfork_parent_waits_for_the_head_of_the_childs_exit():
    """mm_release (in exit_mm) wakes the vfork parent, but under preempt=none it runs only at the
    child's first preemption point, close_files' cond_resched: the parent's call is longer by the
    part of do_exit before it (profile.exit_head_share), and mm_release comes at that part's end."""
    from forksim.profile import Fraction

    def call_us(share: float) -> tuple[float, pd.DataFrame]:
        prof = _quiet_profile(exit_head_share=Fraction(value=share, source="test"))
        r = run_experiment(closed(cpus=1, parents=1, rss="0", clone="vfork", duration="20ms", reps=1),
                           profile=prof)
        df = r.records.dropna(subset=["fork_ret_us"])
        return float((df["fork_ret_us"] - df["start_us"]).mean()), df

    none, df0 = call_us(0.0)
    half, _ = call_us(0.5)
    whole, df1 = call_us(1.0)
    assert none < half < whole
    c = runner.Costs(_quiet_profile(), Streams(np.random.SeedSequence(0)))
    body = float(np.mean([c.draw("do_exit") - c.draw("exit_notify_hold") for _ in range(20_000)]))
    assert whole - none == pytest.approx(body, rel=0.1)
    # on one CPU the child runs from its start to mm_release without the parent
    head = df1["mm_release_us"] - df1["child_start_us"]
    assert (head > 0).all() and head.mean() == pytest.approx(body, rel=0.1)
    assert ((df0["mm_release_us"] - df0["child_start_us"]) < 1e-6).all()


@pytest.mark.parametrize("clone", ["fork", "thread"])
def test_exit_lock_sections_are_part_of_do_exit_not_added(clone):
    """The measured do_exit runs to the final schedule, so it already holds exit_notify's
    tasklist_lock section (and a thread's release_task): a shorter hold moves time from the
    locked part into the unlocked one and leaves the child's exit as long as it was. Without wake-up
    preemption: a thread's parent, woken at the join (mm_release) before the thread's exit_notify, would
    otherwise run inside the exit's wall time, and for as long as the hold let it."""
    def exits(factor: float) -> np.ndarray:
        prof = _quiet_profile().with_whatif({"exit_notify_hold.fixed_us": factor, "release_task_hold.fixed_us": factor})
        r = run_experiment(closed(cpus=1, parents=1, rss="0", clone=clone, duration="10ms", reps=1,
                                  machine={"wakeup_preemption": False}), profile=prof)
        df = r.records.dropna(subset=["child_exit_us"])
        return (df["child_exit_us"] - df["child_start_us"]).to_numpy()

    base, shorter = exits(1.0), exits(0.5)
    assert len(base) > 50
    np.testing.assert_allclose(shorter[: len(base)], base[: len(shorter)], rtol=1e-9, atol=1e-6)


class _Stages(Observer):
    """An observer of the stages only (forksim.simulation): (task name, stage, start, end)."""

    def __init__(self) -> None:
        self.stages: list[tuple] = []

    def on_stage(self, task, name, start, end) -> None:
        self.stages.append((task.name, name, start, end))


def _observed(exp) -> tuple[list[tuple], pd.DataFrame]:
    """Replication 0 of `exp` with a stage observer: the stages and the records table."""
    obs = _Stages()
    sim = runner.build_simulation(exp, runner.resolve_profile(exp), runner.replication_seeds(exp.experiment.seed, 1)[0],
                                  [obs])
    assert sim.machine.tracer is None  # a hook no observer overrides is not wired
    return obs.stages, records_frame([sim.run()])


def test_vfork_stage_order_from_the_on_stage_hook():
    """The on_stage hook: for posix_spawn the child's exec ends before the parent's call returns;
    for fork the parent's dup_mmap precedes the tail, and no exec stage exists."""
    exp = closed(cpus=2, parents=1, clone="posix_spawn", duration="20ms", reps=1, child={"lifetime": "20us"})
    stages, records = _observed(exp)
    execs = sorted(end for task, name, start, end in stages if name == "exec")
    rec = records.sort_values("start_us")
    returned = rec["fork_ret_us"].dropna().to_numpy()
    assert len(returned) > 5 and len(execs) >= len(returned)
    for i, ret in enumerate(returned):  # one parent: creations are sequential
        assert execs[i] <= ret + 1e-9
        assert execs[i] >= rec["start_us"].iloc[i]
    assert all(start <= end for *_, start, end in stages)
    # the hook fires per stage in kernel order for the parent
    parent_stages = [name for task, name, *_ in stages if task == "parent0"][:3]
    assert parent_stages == ["copy_process_setup", "copy_process_tail", "wait_reap"]

    stages, _ = _observed(closed(cpus=2, parents=1, clone="fork", rss="16MiB", duration="10ms", reps=1))
    parent_stages = [name for task, name, *_ in stages if task == "parent0"][:4]
    assert parent_stages == ["copy_process_setup", "dup_mmap", "copy_process_tail", "wait_reap"]
    assert not any(name == "exec" for _, name, *_ in stages)


def test_an_observer_does_not_change_the_replication():
    """Observing is not perturbing: the same replication with and without observers of every hook
    gives the same records, busy time and event count; on_window / on_end see the window's ends."""
    exp = closed(cpus=2, parents=2, rss="16MiB", duration="10ms", reps=1, hogs=1)
    prof, seed = runner.resolve_profile(exp), runner.replication_seeds(exp.experiment.seed, 1)[0]
    seen: dict[str, list] = {"cpu": [], "window": [], "end": []}

    class All(_Stages):
        def on_cpu(self, event, cpu, task, now):
            seen["cpu"].append(event)

        def on_window(self, sim, now):
            seen["window"].append(now)

        def on_end(self, sim, now):
            seen["end"].append(now)

    plain = runner.build_simulation(exp, prof, seed).run()
    obs = All()
    watched = runner.build_simulation(exp, prof, seed, [obs, _Stages()]).run()
    pd.testing.assert_frame_equal(plain.records, watched.records)
    assert (plain.busy_us, plain.events) == (watched.busy_us, watched.events)
    assert obs.stages and {"dispatch", "begin", "leave"} <= set(seen["cpu"])
    assert seen["window"] == [exp.experiment.warmup] and seen["end"] == [watched.window[1]]


# ------------------------------------------------------------------------- conservation


@pytest.mark.parametrize("clone", ["fork", "vfork", "posix_spawn", "fork_exec", "thread"])
def test_every_started_creation_is_completed_or_in_flight(clone):
    r = run_experiment(closed(cpus=2, parents=3, rss="8MiB", clone=clone, duration="15ms",
                              child={"lifetime": "200us"}, hogs=1))
    df, s = r.records, r.summary
    assert len(df) > 0 and df["start_us"].notna().all()
    open_ = df["reap_us"].isna()
    assert s["in_flight_at_end"] == int(open_.sum())
    assert s["in_flight_at_end"] <= 3 * 2  # at most one open creation per parent per replication
    done = df[~open_]
    for col in ("fork_latency_us", "roundtrip_latency_us", "child_start_latency_us"):
        v = done[col]
        assert v.notna().all(), col
        assert (v >= 0).all(), col
    assert (done["start_us"] <= done["fork_ret_us"]).all()
    # pthread_join returns at the thread's mm_release (its tid cleared), before its exit_notify: a
    # thread's exit may come after its join (or be unknown to its row); a process is reaped after its exit
    known = done["child_exit_us"].notna()
    assert known.all() or clone == "thread"
    assert (done["child_start_us"][known] <= done["child_exit_us"][known]).all()
    if clone != "thread":
        assert (done["child_exit_us"] <= done["reap_us"]).all()
    assert (done["fork_ret_us"] <= done["reap_us"]).all()
    assert 0.0 <= s["cpu_utilization"] <= 1.0
    for name in ("fork_latency_us", "roundtrip_latency_us", "child_start_latency_us"):
        lat = s[name]
        assert lat["mean"] is not None and lat["mean"] > 0
        given = [lat[p] for p in ("p50", "p90", "p99", "p999") if lat[p] is not None]  # a short run: no p99.9
        assert len(given) >= 2 and given == sorted(given)


def test_utilization_is_a_fraction_with_idle_cpus():
    s = run_experiment(closed(cpus=8, parents=1, duration="20ms", think="500us")).summary
    assert 0.0 < s["cpu_utilization"] < 0.5


# ------------------------------------------------------------------------- determinism


def test_same_seed_same_summary_and_different_seeds_differ():
    exp = closed(parents=2, rss="4MiB", duration="20ms", reps=3)
    a = run_experiment(exp, seed=1)
    b = run_experiment(exp, seed=1)
    c = run_experiment(exp, seed=2)
    assert without_wall(a.summary) == without_wall(b.summary)
    pd.testing.assert_frame_equal(a.records, b.records)
    assert without_wall(a.summary)["fork_latency_us"] != without_wall(c.summary)["fork_latency_us"]
    assert not np.array_equal(a.records["fork_latency_us"].to_numpy()[:50], c.records["fork_latency_us"].to_numpy()[:50])
    # replications within a run are independent streams
    firsts = [g["fork_latency_us"].iloc[0] for _, g in a.records.groupby("replication")]
    assert len(set(firsts)) == len(firsts)


def test_results_do_not_depend_on_the_worker_count():
    exp = closed(parents=2, rss="4MiB", duration="15ms", reps=3)
    one = run_experiment(exp, workers=1)
    two = run_experiment(exp, workers=2)
    assert without_wall(one.summary) == without_wall(two.summary)
    pd.testing.assert_frame_equal(one.records, two.records)


# ------------------------------------------------------------------------- monotonicity


@lru_cache(maxsize=None)
def _throughput(hogs: int = 0, rss: str = "1MiB") -> float:
    exp = closed(cpus=2, parents=2, rss=rss, hogs=hogs, duration="100ms", warmup="10ms", reps=3, seed=5)
    return run_experiment(exp).summary["throughput_per_s"]["mean"]


def test_more_cpu_hogs_never_increase_throughput():
    thr = [_throughput(hogs=h) for h in (0, 2, 4)]
    assert thr[0] > thr[1] >= thr[2], thr


def test_larger_rss_never_increases_throughput():
    thr = [_throughput(rss=r) for r in ("0", "16MiB", "64MiB", "256MiB")]
    assert all(b < a for a, b in zip(thr, thr[1:])), thr


def test_stage_breakdown_adds_up_to_the_fork_latency():
    """summary.stage_us splits the parent's time inside the call: its parts add up to the mean
    fork latency (one replication, so both are means over the same creations)."""
    s = run_experiment(closed(parents=2, rss="512MiB", duration="30ms", reps=1)).summary
    total = sum(s["stage_us"].values())
    assert total == pytest.approx(s["fork_latency_us"]["mean"], rel=1e-6), s["stage_us"]


def test_a_cpu_idle_briefly_wakes_faster_so_a_thread_loop_runs_faster():
    """pthread_create -> join on 2 CPUs: the thread often lands on the other, briefly idle CPU; a
    profile whose halted vCPU wakes at a tenth of idle_wake after short idle times simulates more
    creations per second, and the same profile without the curve is the old model."""
    from forksim.profile import IdleWakeCurve

    base = runner.resolve_profile(closed())
    fast = base.model_copy(update={"scheduler": base.scheduler.model_copy(update={
        "idle_wake_curve": IdleWakeCurve(idle_us=[50.0, 200.0], scale=[0.1, 1.0], source="test")})})

    def rate(prof):
        r = run_experiment(closed(cpus=2, parents=1, rss=0, clone="thread", duration="20ms", reps=1), profile=prof)
        return r.summary["throughput_per_s"]["mean"]

    assert rate(fast) > 1.1 * rate(base)


def test_the_waker_pays_the_ipi_cost_measured_at_the_wakee_cpus_idle_time():
    """ipi_send_curve: a wake-up of a halted CPU draws the waker's cost measured after the idle time
    nearest that CPU's. In a vfork loop on 2 CPUs the child runs on the other CPU and wakes its parent's
    CPU, halted for tens of microseconds, at mm_release: a 300 us cost after 10 us idle lands inside
    vfork(); the same cost after 10 ms idle never does. (A thread loop no longer shows it: its new thread
    stays behind its parent on the parent's CPU, wake_up_new_task's rule.)"""
    from forksim.profile import IpiSendCurve, StageCost

    base = runner.resolve_profile(closed())

    def with_stall_at(idle_us):
        costs = [StageCost(fixed_us=300.0 if x == idle_us else 1.0, source="test") for x in (10.0, 10_000.0)]
        return base.model_copy(update={"scheduler": base.scheduler.model_copy(update={
            "ipi_send_curve": IpiSendCurve(idle_us=[10.0, 10_000.0], costs=costs, source="test")})})

    def mean(prof):
        r = run_experiment(closed(cpus=2, parents=1, rss=0, clone="vfork", duration="20ms", reps=1), profile=prof)
        return r.summary["fork_latency_us"]["mean"]

    # some creations wake the other CPU (300 us x their share), none after 10 ms idle
    assert mean(with_stall_at(10.0)) > mean(with_stall_at(10_000.0)) + 20.0


def test_a_halted_cpus_wake_up_draws_from_the_latencies_measured_around_its_idle_time():
    """idle_wake_curve.residuals: the host stalls a halted vCPU's wake-up only after long idle times (2026-12-05
    Intel host: p99 5.8 us after 10 us idle, 373 us after 1 ms). A CPU woken at a measured idle time draws that
    time's latencies (idle_wake's median times the scale and shape there); one between two measured idle times
    draws one of the two, the upper one's with a share rising in log(idle), so never a latency neither gave (the
    scale between them times a stall). IdleWakeCurve.median_us is the median of those draws."""
    import simpy

    from forksim.kernel.costs import Costs
    from forksim.machine import Machine
    from forksim.model import SchedulerSpec
    from forksim.profile import IdleWakeCurve, Residual
    from forksim.streams import Streams

    exp = closed(cpus=2, parents=1, rss=0, clone="vfork", duration="20ms", reps=1)
    base = runner.resolve_profile(exp)
    stalls = Residual(family="empirical", quantiles=[1.0, 1.0, 1.0, 40.0], probabilities=[0.0, 0.5, 0.9, 1.0])
    curve = IdleWakeCurve(idle_us=[10.0, 10_000.0], scale=[0.5, 2.0], residuals=[Residual(family="none"), stalls],
                          source="test")

    def draws(curve: IdleWakeCurve, idle_us: float, n: int = 6_000) -> np.ndarray:
        prof = base.model_copy(update={"scheduler": base.scheduler.model_copy(update={"idle_wake_curve": curve})})
        params = SchedulerSpec.of(exp, prof).bind(Costs(prof, Streams(np.random.SeedSequence(0))))
        machine = Machine(simpy.Environment(), 2, params)
        return np.array([machine._halt_exit_after(idle_us) for _ in range(n)])

    median = base.scheduler.idle_wake.fixed_us
    assert np.allclose(draws(curve, 10.0), median * 0.5)  # no stall at the short idle time measured
    long = draws(curve, 20_000.0)  # past the last: its latencies
    assert np.median(long) == pytest.approx(median * 2.0, rel=0.01)
    assert np.quantile(long, 0.99) > 20 * np.median(long)
    between = draws(curve, 1_000.0)  # 2/3 of the way up in log(idle)
    lower = np.isclose(between, median * 0.5)
    assert lower.mean() == pytest.approx(1 / 3, abs=0.03)
    assert between[~lower].min() >= median * 2.0 * 0.999 and between.max() <= median * 2.0 * 40 * 1.001
    assert curve.median_us(1_000.0, median) == pytest.approx(np.median(between), rel=0.01)
    smooth = IdleWakeCurve(idle_us=[10.0, 10_000.0], scale=[0.5, 2.0], source="test", residuals=[
        Residual(family="lognormal", sigma=0.3),
        Residual(family="empirical", quantiles=[0.5, 1.0, 3.0, 40.0], probabilities=[0.0, 0.5, 0.9, 1.0])])
    for idle_us in (30.0, 100.0, 3_000.0):  # (where the median sits in a body: a gap between modes has none)
        assert smooth.median_us(idle_us, median) == pytest.approx(np.median(draws(smooth, idle_us, 20_000)), rel=0.03)
    with pytest.raises(ValueError, match="one residual per idle_us"):
        IdleWakeCurve(idle_us=[10.0, 10_000.0], scale=[1.0, 1.0], residuals=[stalls], source="test")


def test_the_launcher_forks_one_task_per_copy_process(monkeypatch):
    """A busy-machine load starts as the load generator does: a launcher forks the hogs, then the parents,
    each fork taking its copy_process stages (the profile's, for an empty image) before the new task is
    placed, so the tasks forked before it already run when the next one is placed."""
    from forksim.machine import Machine
    from forksim.workloads import base

    placed: list[tuple[str, float]] = []
    spawn = Machine.spawn

    def recording(self, task, parent=None, pack=False):
        if parent is not None and parent.name == "launcher":
            placed.append((task.name, self.env.now))
        return spawn(self, task, parent, pack)

    monkeypatch.setattr(Machine, "spawn", recording)
    from forksim.profile import Balancing

    exp = closed(cpus=2, parents=2, rss="0", hogs=2, duration="5ms", warmup="0", reps=1)
    profile = runner.resolve_profile(exp)
    profile = profile.model_copy(update={"balancing": Balancing()})  # the launcher runs with one
    run_experiment(exp, profile=profile)
    assert [name for name, _ in placed] == ["hog0", "hog1", "parent0", "parent1"]
    fork_floor = sum(profile.stages[s].fixed_us for s in base._LAUNCHER_FORK) * 0.25  # the draws vary about these
    gaps = np.diff([0.0] + [t for _, t in placed])
    assert (gaps > fork_floor).all(), (gaps, fork_floor)


def _slack_profile(us: float):
    from forksim.profile import StageCost

    prof = runner.resolve_profile(parse_config({"experiment": {"name": "t"}}, source="test"))
    slack = StageCost(fixed_us=us, source="test")
    return prof.model_copy(update={"scheduler": prof.scheduler.model_copy(update={"timer_slack": slack})})


def test_a_think_time_sleep_ends_its_timer_slack_late():
    """A closed loop's think time is a nanosleep: the kernel arms the timer for a range ending timer_slack_ns later
    and an idle CPU wakes at its end, so each cycle is the round trip, the think time and the slack (and the
    halted vCPU's wake-up, the same in both). 200 us more slack: a 1 ms-think loop's cycle grows by 200 us."""
    exp = parse_config({
        "experiment": {"name": "t", "duration": "200ms", "warmup": "10ms", "replications": 1, "seed": 3},
        "machine": {"cpus": 1},
        "workload": {"kind": "closed", "parents": 1, "think_time": "1ms", "image": {"rss": "0"}},
    }, source="test")
    cycle = {us: 1e6 / run_experiment(exp, profile=_slack_profile(us)).summary["throughput_per_s"]["mean"]
             for us in (0.0, 200.0)}
    assert cycle[200.0] - cycle[0.0] == pytest.approx(200.0, rel=0.1)


@pytest.mark.parametrize("wakeup, late", [("event", False), ("timer", True)])
def test_an_open_loads_parent_asleep_on_a_timer_starts_the_slack_late(wakeup, late):
    """At low load an arrival finds its parent asleep: woken by the arrival itself ('event': a socket) it starts at
    once; asleep in clock_nanosleep until the arrival's time ('timer': the validation's load generator) it starts
    the timer slack later, and the response grows by about that."""
    exp = parse_config({
        "experiment": {"name": "t", "duration": "300ms", "warmup": "10ms", "replications": 1, "seed": 4},
        "machine": {"cpus": 2},
        "workload": {"kind": "open", "parents": 1, "rate": "500/s", "arrival_wakeup": wakeup, "image": {"rss": "0"}},
    }, source="test")
    p50 = {us: run_experiment(exp, profile=_slack_profile(us)).summary["response_latency_us"]["p50"]
           for us in (0.0, 300.0)}
    assert p50[300.0] - p50[0.0] == (pytest.approx(300.0, rel=0.15) if late else pytest.approx(0.0, abs=5.0))
