"""Placement by creation family (kernel/clone.py _local_share: a thread's and posix_spawn's own measured
shares) and sched_exec's move of an exec'ing child (Machine.exec_target, Kernel._sched_exec); and their
calibration (segments.placement_counts, scheduling.fit_placement). Simulated milliseconds: quick."""

from __future__ import annotations

import pandas as pd
import pytest
import simpy

from forksim import runner
from forksim.calibration import tracefs
from forksim.calibration.plan import SPAWN_MODE, THREAD_MODE, VFORK_MODE, Store
from forksim.calibration.scheduling import MIN_IDLE_EXECS, fit_placement
from forksim.config import parse_config
from forksim.machine import Machine, SchedulerParams
from forksim.profile import Fraction
from forksim.runner import run_experiment


def _loop(clone: str):
    return parse_config({
        "experiment": {"name": "t", "duration": "20ms", "warmup": "2ms", "replications": 1, "seed": 5},
        "machine": {"cpus": 2},
        "workload": {"kind": "closed", "parents": 1, "image": {"rss": "0"}, "child": {"clone": clone}},
    }, source="test")


def _records(clone: str, **shares: float) -> pd.DataFrame:
    exp = _loop(clone)
    prof = runner.resolve_profile(exp)
    placement = {**prof.placement, **{k: Fraction(value=v, source="assumption: test") for k, v in shares.items()}}
    prof = prof.model_copy(update={"interruptions": None, "placement": placement, "placement_recent_idle": None})
    r = run_experiment(exp, profile=prof)
    df = r.records[~r.records["warmup"]]
    assert len(df) > 50
    return df


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_a_thread_takes_the_thread_share_not_the_fork_share(share):
    """thread_local_when_idle decides where a new thread goes while the other CPU is idle, whatever
    fork_local_when_idle says (the opposite here): all on the parent's CPU, or none."""
    df = _records("thread", fork_local_when_idle=1.0 - share, thread_local_when_idle=share)
    local = (df["child_cpu"] == df["parent_cpu"]).mean()
    assert local == pytest.approx(share, abs=0.05)


def test_a_thread_without_its_own_share_falls_back_to_the_fork_share():
    exp = _loop("thread")
    prof = runner.resolve_profile(exp)
    placement = {k: v for k, v in prof.placement.items() if k != "thread_local_when_idle"}
    placement["fork_local_when_idle"] = Fraction(value=1.0, source="assumption: test")
    prof = prof.model_copy(update={"interruptions": None, "placement": placement})
    df = run_experiment(exp, profile=prof).records
    assert (df["child_cpu"] == df["parent_cpu"]).mean() > 0.95


def _machine() -> tuple[simpy.Environment, Machine]:
    env = simpy.Environment()
    return env, Machine(env, 2, SchedulerParams(idle_wake=lambda: 20.0))


def test_sched_exec_keeps_a_lone_child_and_moves_one_that_shares_its_cpu():
    """find_idlest_group counts the exec'ing task's own CPU idle without it (idle_cpu_without): a child
    alone there stays (upstream, alone_moves 0) or moves with the measured share; a child with another
    task waiting on its CPU goes to the idle CPU; a pinned child and a machine without an idle CPU: never."""
    env, m = _machine()
    child, _ = m.start_task("child", pin=None)
    env.run(until=50)
    assert child.cpu is m.cpus[0] and m.cpus[1].idle
    assert m.exec_target(child, 0.0, lambda: 0.5) is None
    assert m.exec_target(child, 1.0, lambda: 0.5) is m.cpus[1]
    assert m.exec_target(child, 0.4, lambda: 0.5) is None  # the draw over the share: stays
    other = m.new_task("other", pin=0)
    m.spawn(other, child)
    assert m.exec_target(child, 0.0, lambda: 0.5) is m.cpus[1]
    pinned, _ = m.start_task("pinned", pin=1)
    env.run(until=100)
    assert m.exec_target(child, 1.0, lambda: 0.0) is None  # both CPUs busy now


def test_a_posix_spawn_child_moved_at_exec_releases_its_parent_from_the_other_cpu():
    """With exec_moves_when_idle 1 the child placed on its parent's CPU (spawn share 1) execs on the other
    CPU: it exits there, and the spawn call (the parent released at exec_mmap) takes longer than when the
    child stays: the stopper's switch, the other CPU's halt exit and the parent's own halt exit."""
    stay = _records("posix_spawn", spawn_local_when_idle=1.0, exec_moves_when_idle=0.0)
    move = _records("posix_spawn", spawn_local_when_idle=1.0, exec_moves_when_idle=1.0)
    assert (stay["child_cpu"] == stay["parent_cpu"]).mean() > 0.95  # child_cpu: where it first ran
    assert (move["child_cpu"] == move["parent_cpu"]).mean() > 0.95
    call = lambda df: (df["fork_ret_us"] - df["start_us"]).median()  # noqa: E731
    assert call(move) > call(stay) + 5.0


def _segs_trace():
    sw = tracefs.parse_trace(
        "  a-1 [001] d..2. 100: sched_switch: prev_comm=a prev_pid=1 prev_prio=120 prev_state=S ==> "
        "next_comm=swapper/1 next_pid=0 next_prio=120\n"
        "  b-2 [001] d..2. 500: sched_switch: prev_comm=swapper/1 prev_pid=0 prev_prio=120 prev_state=R ==> "
        "next_comm=b next_pid=2 next_prio=120\n", tsc_hz=1e9)
    segs = [{"t_wakeup_new": 150.0, "waker_cpu": 0.0, "target_cpu": 0.0, "t_exec": 200.0, "exec_cpu": 0.0,
             "exec_moved": 1.0},  # CPU 1 idle at the exec: moved
            {"t_wakeup_new": 250.0, "waker_cpu": 0.0, "target_cpu": 0.0, "t_exec": 300.0, "exec_cpu": 0.0,
             "exec_moved": 0.0},  # CPU 1 idle at the exec: stayed
            {"t_wakeup_new": 550.0, "waker_cpu": 0.0, "target_cpu": 0.0, "t_exec": 600.0, "exec_cpu": 0.0,
             "exec_moved": 1.0}]  # CPU 1 busy: not counted
    return segs, sw


def test_placement_counts_count_execs_that_found_another_cpu_idle():
    segs, sw = _segs_trace()
    c = tracefs.placement_counts(segs, sw, 2)
    assert c["execs"] == 3 and c["exec_other_cpu_idle"] == 2 and c["exec_moved"] == 1


def test_fit_placement_fits_each_family_and_exec_moves_on_its_own():
    store = Store()
    counts = {VFORK_MODE: (20, 10), SPAWN_MODE: (20, 19), THREAD_MODE: (40, 10)}
    for mode, (idle, local) in counts.items():
        store.add(mode, {"traced": True, "pinned": False, "mode": mode}, {}, [])
        store.runs[-1]["placement"] = {"other_cpu_idle": idle, "stayed_local": local, "unknown": 0, "creations": idle}
    store.runs[-2]["placement"].update(execs=MIN_IDLE_EXECS * 2, exec_other_cpu_idle=MIN_IDLE_EXECS * 2,
                                       exec_moved=MIN_IDLE_EXECS // 2)
    out = fit_placement(store)
    assert out["vfork_local_when_idle"]["value"] == 0.5
    assert out["spawn_local_when_idle"]["value"] == 0.95
    assert out["thread_local_when_idle"]["value"] == 0.25
    assert out["exec_moves_when_idle"]["value"] == 0.25
    assert out["fork_local_when_idle"]["value"] == 0.0  # no fork run: upstream's assumption
    assert "assumption" in out["fork_local_when_idle"]["source"]
    store.runs[-2]["placement"].update(exec_other_cpu_idle=MIN_IDLE_EXECS - 1)
    assert "exec_moves_when_idle" not in fit_placement(store)  # too few execs for a share


def test_fit_placement_leaves_out_a_new_family_it_could_not_measure():
    out = fit_placement(Store())
    assert "thread_local_when_idle" not in out and "spawn_local_when_idle" not in out
    assert "exec_moves_when_idle" not in out


def test_validation_marks_a_row_measured_under_host_steal():
    from forksim.validation.document import _row_name

    row = {"scenario": "closed-thread-K1-rss0", "measured_full": {"cpu": {"steal_frac": 0.288}}}
    assert _row_name(row) == "closed-thread-K1-rss0 (host steal: 29%)"
    quiet = {"scenario": "closed-fork-K1-rss0", "measured_full": {"cpu": {"steal_frac": 0.038}}}
    assert _row_name(quiet) == "closed-fork-K1-rss0"
    assert _row_name({"scenario": "x"}) == "x"  # older files: no CPU accounting


# ---------------------------------------------------------------- the vfork spread rule (placement_recent_idle)

def test_placement_counts_record_how_long_the_other_cpu_had_been_idle():
    segs, sw = _segs_trace()  # CPU 1 idle from 100 ns to 500 ns
    tracefs.placement_counts(segs, sw, 2)
    assert segs[0]["other_idle_us"] == pytest.approx(0.05) and segs[1]["other_idle_us"] == pytest.approx(0.15)
    assert "other_idle_us" not in segs[2]  # CPU 1 busy


def _vfork_run(store: Store, mode: str, pts: list[tuple[float, bool]]) -> None:
    segs = [{"t_wakeup_new": 1e6 * j, "waker_cpu": 0.0, "target_cpu": 0.0 if local else 1.0, "other_idle_us": idle}
            for j, (idle, local) in enumerate(pts)]
    store.add(mode, {"traced": True, "pinned": False, "mode": mode}, {}, [], segs)
    store.runs[-1]["placement"] = {"other_cpu_idle": len(pts), "stayed_local": sum(k for _, k in pts)}


def test_fit_recent_idle_splits_vfork_creations_at_the_boundary():
    from forksim.calibration.scheduling import RECENT_IDLE_BELOW_US, fit_recent_idle

    store = Store()
    # 20 recent-idle vfork creations, 5 kept local; 10 long-idle ones (all local) and 10 posix_spawn (9 local)
    _vfork_run(store, VFORK_MODE, [(30.0, j < 5) for j in range(20)] + [(2000.0, True)] * 10)
    _vfork_run(store, SPAWN_MODE, [(5000.0, j < 9) for j in range(10)])
    sec, local = fit_recent_idle(store)
    assert sec["below_us"] == RECENT_IDLE_BELOW_US and sec["vfork_local"] == 0.25
    assert local["value"] == 0.95  # 19 of the 20 CLONE_VFORK creations that found it idle 500 us or more
    from forksim.profile import RecentIdle

    RecentIdle.model_validate(sec)


def test_fit_recent_idle_needs_ten_recent_creations_and_ten_long_ones():
    from forksim.calibration.scheduling import fit_recent_idle

    store = Store()
    _vfork_run(store, VFORK_MODE, [(30.0, False)] * 9)
    assert fit_recent_idle(store) == (None, None)
    _vfork_run(store, VFORK_MODE, [(30.0, False), (900.0, True)])
    sec, local = fit_recent_idle(store)
    assert sec["vfork_local"] == 0.0 and local is None  # one long-idle creation: vfork_local_when_idle stays


def test_derived_idle_time_is_the_time_since_the_previous_child_left_the_other_cpu():
    from forksim.calibration.scheduling import _derived_idle_us

    # ns timestamps; the child of the first creation went to CPU 1 and its parent's vfork took 20 us of wall
    # time (5 us of it before task_newtask): CPU 1 idle from 15 us after that creation's wake_up_new_task
    segs = [{"t_wakeup_new": 0.0, "waker_cpu": 0.0, "target_cpu": 1.0, "total_wall": 20.0, "to_newtask": 5.0},
            {"t_wakeup_new": 55e3, "waker_cpu": 0.0, "target_cpu": 0.0, "total_wall": 20.0, "to_newtask": 5.0},
            {"t_wakeup_new": 90e3, "waker_cpu": 1.0, "target_cpu": 1.0, "total_wall": 20.0, "to_newtask": 5.0}]
    assert _derived_idle_us(segs) == [None, pytest.approx(40.0), None]  # the parent moved: unknown


def _exit_wakes(store: Store, cpus: list[int], prev: int = 0) -> None:
    samples = [{"b": "exitwake", "i": i, "prev_cpu": prev, "waker_cpu": 1 - prev, "cpu": c} for i, c in enumerate(cpus)]
    store.add("sched", {"mode": "exitwake", "a": prev, "b": 1 - prev}, {}, samples)


def test_fit_placement_measures_wake_prev_where_the_model_applies_it():
    """wake_prev_when_busy from the exit wake-ups of schedbench exitwake (a child alone on the other CPU, the
    parent's CPU running a hog): the share that came back on the busy CPU, pooled over runs and CPU pairs."""
    store = Store()
    _exit_wakes(store, [0] * 27 + [1] * 3)
    _exit_wakes(store, [1] * 10, prev=1)
    out = fit_placement(store)
    assert out["wake_prev_when_busy"]["value"] == pytest.approx(37 / 40, abs=1e-3)
    assert out["wake_prev_when_busy"]["_counts"] == {"exit_wakes": 40, "stayed_on_prev": 37}
    assert "exitwake" in out["wake_prev_when_busy"]["source"]


def test_fit_placement_leaves_wake_prev_out_below_the_fewest_exit_wakes():
    from forksim.calibration.scheduling import MIN_EXIT_WAKES

    store = Store()
    _exit_wakes(store, [0] * (MIN_EXIT_WAKES - 1))
    assert "wake_prev_when_busy" not in fit_placement(store)


@pytest.mark.parametrize("direct", [True, False])
def test_calibrate_keeps_the_direct_wake_prev_over_the_traced_loads(direct):
    """The busy traces' share of parents staying on their CPU (woken from one with other tasks runnable too) is
    the profile's only where schedbench exitwake measured none; beside a direct measurement its source names it."""
    from forksim.calibration.calibrate import _merge_busy_placement

    traced = {"value": 0.99, "source": "measured: traced loads"}
    placement = {"wake_prev_when_busy": {"value": 0.9, "source": "measured: exitwake"}} if direct else {}
    _merge_busy_placement(placement, {"wake_prev_when_busy": traced, "fork_local_when_idle_busy": traced})
    got = placement["wake_prev_when_busy"]
    assert got["value"] == (0.9 if direct else 0.99)
    assert ("traced loads" in got["source"]) and (("exitwake" in got["source"]) == direct)
    assert placement["fork_local_when_idle_busy"] is traced
