"""Where a vfork child runs and how its parent is released (kernel/clone.py): vCPU packing's placement by
how long the idle CPU has slept (profile.placement_recent_idle), complete_vfork_done as an ordinary
wake-up that brings the parent back on its own CPU, and mm_release early in a cross-CPU child's exit
(profile.mm_release_share). Simulated milliseconds: quick."""

from __future__ import annotations

import pandas as pd
import pytest

from forksim import runner
from forksim.config import parse_config
from forksim.profile import Fraction, RecentIdle
from forksim.runner import run_experiment


def _vfork_loop(duration: str = "20ms"):
    return parse_config({
        "experiment": {"name": "t", "duration": duration, "warmup": "2ms", "replications": 1, "seed": 5},
        "machine": {"cpus": 2},
        "workload": {"kind": "closed", "parents": 1, "image": {"rss": "0"}, "child": {"clone": "vfork"}},
    }, source="test")


def _profile(local: float | None, below_us: float = 500.0, mm_release: float | None = 0.2, head: float = 0.5):
    exp = _vfork_loop()
    prof = runner.resolve_profile(exp).model_copy(update={"interruptions": None})
    recent = None if local is None else RecentIdle(below_us=below_us, vfork_local=local, source="test")
    share = None if mm_release is None else Fraction(value=mm_release, source="test")
    return prof.model_copy(update={"placement_recent_idle": recent, "mm_release_share": share,
                                   "exit_head_share": Fraction(value=head, source="test")})


def _records(prof) -> pd.DataFrame:
    r = run_experiment(_vfork_loop(), profile=prof)
    df = r.records[~r.records["warmup"]].dropna(subset=["reap_us"]).sort_values("seq")
    assert len(df) > 100
    return df


def test_a_cpu_that_went_idle_just_now_takes_the_vfork_child():
    """sched_vcpu_pack spreads a tight vfork loop over both vCPUs: the CPU the previous child left a few
    microseconds ago takes the next one; the same loop with `below_us` shorter than that idle time packs
    the children on the parent's CPU (placement.vfork_local_when_idle, 0.99 in the shipped profile)."""
    spread = _records(_profile(local=0.0))
    assert (spread["child_cpu"] != spread["parent_cpu"]).mean() > 0.95
    packed = _records(_profile(local=0.0, below_us=0.01))
    assert (packed["child_cpu"] != packed["parent_cpu"]).mean() < 0.05


def test_the_released_parent_comes_back_on_its_own_cpu_and_reaps_a_zombie():
    """complete() has no WF_SYNC: the parent, released by a child on the other CPU, is woken on its own
    (halted) CPU while the child goes on with its exit. With mm_release at the very end of the child's
    exit (share 1), the child is a zombie before the parent's halt exit is over: the parent's wait4 never
    sleeps, so nothing moves it and it keeps its CPU from one creation to the next (a sync wake-up at
    mm_release would have pulled it to the child's CPU every time); it returns later than mm_release by
    a halt exit. A parent that waited for a child on its own CPU preempts that child and sleeps in wait4."""
    cross = _records(_profile(local=0.0, mm_release=1.0))
    cross = cross[cross["child_cpu"] != cross["parent_cpu"]]
    assert len(cross) > 100
    assert (cross["child_exit_us"] <= cross["fork_ret_us"]).mean() > 0.9
    assert (cross["parent_cpu"].diff().dropna() == 0).mean() > 0.95
    assert ((cross["fork_ret_us"] - cross["mm_release_us"]) > 0.5).mean() > 0.95
    local = _records(_profile(local=1.0, below_us=1e6))
    local = local[local["child_cpu"] == local["parent_cpu"]]
    assert len(local) > 100
    assert (local["child_exit_us"] > local["fork_ret_us"]).all()
    after = lambda df: (df["reap_us"] - df["fork_ret_us"]).median()  # noqa: E731
    assert after(cross) < after(local)


@pytest.mark.parametrize("head", [0.2, 0.8])
def test_a_cross_cpu_parent_is_released_at_mm_release_not_at_the_preemption_point(head):
    """exit_mm comes early in do_exit: a parent on another CPU runs from there (mm_release_share),
    whatever the share before this CPU's first preemption point (exit_head_share) that a parent on the
    child's own CPU waits for."""
    def release_us(share: float) -> float:
        df = _records(_profile(local=0.0, mm_release=share, head=head))
        df = df[df["child_cpu"] != df["parent_cpu"]]
        return float((df["mm_release_us"] - df["child_start_us"]).median())

    early, late = release_us(0.1), release_us(0.6)
    assert early < late
    # without the field, mm_release is at the head's end, as in profiles measured before it
    assert release_us(head) == pytest.approx(float(_records(_profile(local=0.0, mm_release=None, head=head))
                                                    .pipe(lambda d: d[d["child_cpu"] != d["parent_cpu"]])
                                                    .pipe(lambda d: (d["mm_release_us"] - d["child_start_us"]).median())),
                                             rel=0.05)


def test_a_vfork_childs_reap_has_its_own_measured_cost_and_forks_keep_theirs():
    """profile.wait_reap_vfork (wait4 reaping a child that exited still sharing the parent's mm, measured
    on the vfork loop) replaces wait_reap for vfork children only: a shorter one shortens the vfork round
    trip after the call by about the difference, and a fork loop's records stay the same to the bit."""
    from forksim.profile import StageCost

    base = _profile(local=0.0)
    fixed = base.stages["wait_reap"].fixed_us
    cheap = base.model_copy(update={"wait_reap_vfork": StageCost(fixed_us=fixed / 4, source="test")})
    after = lambda df: float((df["reap_us"] - df["fork_ret_us"]).mean())  # noqa: E731
    assert after(_records(cheap)) < after(_records(base)) - fixed / 4
    fork = parse_config({
        "experiment": {"name": "t", "duration": "10ms", "warmup": "1ms", "replications": 1, "seed": 5},
        "machine": {"cpus": 2},
        "workload": {"kind": "closed", "parents": 1, "image": {"rss": "0"}, "child": {"clone": "fork"}},
    }, source="test")
    a, b = run_experiment(fork, profile=base).records, run_experiment(fork, profile=cheap).records
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize("kind, preempted", [("vfork", True), ("posix_spawn", True), ("thread", False)])
def test_a_pinned_waiter_takes_the_cpu_from_a_child_at_its_first_preemption_point_after_mm_release(kind, preempted):
    """One pinned parent, its children on its CPU. A vfork or posix_spawn parent woken at its child's mm_release
    (do_exit's exit_mm, execve's exec_mmap) takes the CPU at the child's next preemption point: it returns from the
    call and sleeps in wait4 before the child is dead (traced 2026-12-04, forkbench pinned: the child switched out
    runnable after waking its parent in 317 of 320 vforks and 218 of 220 posix_spawns). A thread shares its
    parent's fd table: no close_files, no preemption point before its last schedule, so the joiner woken at
    clear_child_tid returns after the thread is dead (320 of 320 traced)."""
    exp = parse_config({
        "experiment": {"name": "t", "duration": "20ms", "warmup": "2ms", "replications": 1, "seed": 5},
        "machine": {"cpus": 2},
        "workload": {"kind": "closed", "parents": 1, "pin": True, "image": {"rss": "0"}, "child": {"clone": kind}},
    }, source="test")
    df = run_experiment(exp).records
    df = df[~df["warmup"]].dropna(subset=["child_exit_us"])
    assert len(df) > 100
    back = df["reap_us" if kind == "thread" else "fork_ret_us"]  # pthread_join() returns; vfork(), posix_spawn()
    returned_first = (back < df["child_exit_us"]).mean()
    assert returned_first > 0.95 if preempted else returned_first < 0.05


def _spawn_loop(kind: str):
    return parse_config({
        "experiment": {"name": "t", "duration": "40ms", "warmup": "2ms", "replications": 1, "seed": 5},
        "machine": {"cpus": 2},
        "workload": {"kind": "closed", "parents": 1, "pin": True, "image": {"rss": "0"}, "child": {"clone": kind}},
    }, source="test")


def test_a_posix_spawn_parent_is_released_at_exec_mmap_before_the_exec_s_tail():
    """A profile with exec_tail splits the execve where exec_mmap releases a vfork parent: a pinned posix_spawn
    returns a tail sooner (the parent preempts the child there) while its round trip and fork+exec's, which run the
    whole execve either way, stay as they were; spawn_prep, glibc's work before the execve, lengthens the
    posix_spawn call by itself and leaves fork+exec alone."""
    from forksim.calibration.fit import stage_cost

    prof = runner.resolve_profile(_spawn_loop("posix_spawn")).model_copy(update={"interruptions": None})
    whole, tail = 60.0, 25.0
    stages = dict(prof.stages)
    stages["exec"] = stages["exec"].model_copy(update={"fixed_us": whole})
    one = prof.model_copy(update={"stages": stages, "exec_tail": None, "spawn_prep": None})
    stages = dict(stages)
    stages["exec"] = stages["exec"].model_copy(update={"fixed_us": whole - tail})
    split = one.model_copy(update={"stages": stages, "exec_tail": stage_cost(fixed_us=tail, source="test")})
    prep = split.model_copy(update={"spawn_prep": stage_cost(fixed_us=10.0, source="test")})

    def p50s(kind, profile):
        s = run_experiment(_spawn_loop(kind), profile=profile).summary
        return s["fork_latency_us"]["p50"], s["roundtrip_latency_us"]["p50"]

    call_one, rt_one = p50s("posix_spawn", one)
    call_split, rt_split = p50s("posix_spawn", split)
    assert call_one - call_split == pytest.approx(tail, rel=0.15)
    assert rt_split == pytest.approx(rt_one, rel=0.05)
    assert p50s("posix_spawn", prep)[0] - call_split == pytest.approx(10.0, rel=0.2)
    assert p50s("fork_exec", split)[1] == pytest.approx(p50s("fork_exec", one)[1], rel=0.05)
    assert p50s("fork_exec", prep)[1] == pytest.approx(p50s("fork_exec", split)[1], rel=0.02)
