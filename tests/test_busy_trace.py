"""forksim.calibration.busy's reductions of a traced busy load, on hand-made event lists."""

from __future__ import annotations

import pytest

from forksim.calibration.busy import fork_placement, fractions, idle_pulls, layout, parent_wakeups
from forksim.calibration.tracefs import Event


def sw(ts, cpu, prev, nxt, state="S"):
    return Event(ts, prev, cpu, "sched_switch", {"prev_pid": str(prev), "prev_state": state, "next_pid": str(nxt)})


def test_layout_shares_and_parent_beside_a_hog():
    # hog 10 on CPU 0 throughout; parent 20 on CPU 1 for [1, 5), then on CPU 0 (with the hog)
    ev = [sw(0, 0, 0, 10), sw(1, 1, 0, 20),
          Event(5, 20, 1, "sched_migrate_task", {"pid": "20", "dest_cpu": "0"})]
    out = layout(ev, [10], 0, 11, 2, [20])
    assert out["layout_share"] == {"1/0": 1.0}
    assert out["parent_on_hog_cpu"] == pytest.approx(6 / 11, abs=1e-4)


def test_idle_pulls_count_pulls_per_tick_of_chance():
    tick = 4e6
    # CPU 1 idle from 0; task 30 waits on CPU 0 (preempted) from 0 to 8 ms: two ticks of chance;
    # then it is pulled to CPU 1 while CPU 1 is idle
    ev = [sw(0, 1, 31, 0), sw(0, 0, 30, 32, "R"),
          Event(8e6, 30, 1, "sched_migrate_task", {"pid": "30", "dest_cpu": "1"})]
    out = idle_pulls(ev, {30, 31, 32}, 0, 10e6, 2, tick)
    assert out["idle_pulls"] == 1 and out["idle_pull_chances"] == pytest.approx(2.0)
    assert out["idle_pull"] == pytest.approx(0.5)


def test_fork_placement_and_wakeups_split_by_where_the_hog_is():
    ev = [sw(0, 0, 0, 10), sw(0, 1, 40, 0),  # hog 10 on CPU 0, CPU 1 idle
          Event(1, 20, 0, "sched_wakeup_new", {"pid": "50", "target_cpu": "001"}),
          Event(2, 20, 0, "sched_wakeup_new", {"pid": "51", "target_cpu": "000"}),
          sw(3, 0, 10, 20, "R"),
          Event(4, 50, 1, "sched_wakeup", {"pid": "20", "target_cpu": "000"})]
    fp = fork_placement(ev, [10], [20], 0, 10, 2)
    assert fp["fork_local_when_idle_with_hog"] == pytest.approx(0.5) and fp["fork_idle_chances_with_hog"] == 2
    pw = parent_wakeups(ev, [20], 0, 10)
    assert pw["parent_woken_from_other_cpu"] == 1 and pw["parent_wake_stays_on_prev"] == 1.0
    fr = fractions([fp | pw | {"idle_pull_chances": 0, "idle_pulls": 0}])
    assert fr["fork_local_when_idle_busy"]["value"] == pytest.approx(0.5)
    assert fr["wake_prev_when_busy"]["value"] == 1.0 and "idle_pull" not in fr


def test_fork_placement_with_no_idle_cpu_by_runnable_difference():
    """fork_placement_no_idle: forks while both CPUs run, split by the parent's CPU's runnable tasks of
    the load minus the other's; other sessions' tasks (99) are not counted."""
    from forksim.calibration.busy import NO_IDLE_KEYS, fork_placement_no_idle

    ours = {10, 11, 20, 50, 51, 52}
    ev = [sw(0, 0, 0, 10), sw(0, 1, 0, 11),  # hog 10 on CPU 0, hog 11 on CPU 1
          Event(1, 20, 0, "sched_wakeup", {"pid": "20", "target_cpu": "000"}),  # parent queued on CPU 0
          sw(2, 0, 10, 20, "R"),  # parent runs, hog 10 waits: CPU 0 holds 2, CPU 1 holds 1
          Event(3, 20, 0, "sched_wakeup_new", {"pid": "50", "target_cpu": "001"}),  # d = 1: left
          Event(3.5, 50, 1, "sched_process_exit", {}),
          sw(4, 1, 11, 99, "R"),  # another session's task on CPU 1 (not counted): CPU 1 holds 1 of ours
          Event(5, 20, 0, "sched_wakeup_new", {"pid": "51", "target_cpu": "000"}),  # d = 1 (2 vs 1): stayed
          Event(6, 51, 0, "sched_process_exit", {}),
          Event(7, 20, 0, "sched_wakeup_new", {"pid": "52", "target_cpu": "000"})]  # 51 gone: d = 1 again
    out = fork_placement_no_idle(ev, ours, [20], 0, 10, 2)
    assert out["fork_no_idle_one_more"] == [2, 3]
    assert out["fork_no_idle_not_more"] == [0, 0] and out["fork_no_idle_more"] == [0, 0]
    assert set(NO_IDLE_KEYS) == {"not_more", "one_more", "more"}


def test_parents_on_one_cpu_share():
    """parents_together: parents 20 and 21 on CPUs 0 and 1 until 4, then 21 moves to CPU 0: 6 of 10 together."""
    from forksim.calibration.busy import parents_together

    ev = [sw(0, 0, 0, 20), sw(0, 1, 0, 21),
          Event(4, 21, 0, "sched_migrate_task", {"pid": "21", "dest_cpu": "0"})]
    assert parents_together(ev, [20, 21], 0, 10)["parents_on_one_cpu"] == pytest.approx(0.6)
    assert parents_together(ev, [20], 0, 10)["parents_on_one_cpu"] is None


def test_fit_balancing_makes_a_profile_section_from_the_traced_runs():
    """calibrate's busy step: the pooled shares become the `balancing` section (the fair queue, the measured
    no-idle fork shares, idle_pull from 10+ ticks of chance only) and the busy placement shares."""
    from forksim.calibration.busy import KIND, fit_balancing
    from forksim.calibration.plan import Store
    from forksim.profile import Balancing

    run = {"parents": 2, "hogs": 2, "duration_s": 1.0, "fork_no_idle_not_more": [19, 20], "fork_no_idle_one_more": [10, 20],
           "fork_no_idle_more": [1, 20], "idle_pull_chances": 4.0, "idle_pulls": 0,
           "parent_woken_from_other_cpu": 50, "parent_wake_stays_on_prev": 0.98}
    assert fit_balancing(Store()) == (None, {})
    store = Store()
    store.add(KIND, {"rep": 0}, {}, [], [run])
    section, placement = fit_balancing(store)
    bal = Balancing(**section)
    assert bal.eevdf is False and "idle_pull" not in section  # 4 ticks of chance say nothing
    assert [bal.fork_local_no_idle[k].value for k in ("not_more", "one_more", "more")] == [0.95, 0.5, 0.05]
    assert placement["wake_prev_when_busy"]["value"] == 0.98 and "1 traced 1 s runs" in placement["wake_prev_when_busy"]["source"]
    store.add(KIND, {"rep": 1}, {}, [], [run | {"idle_pull_chances": 8.0, "idle_pulls": 3}])
    section, _ = fit_balancing(store)
    assert section["idle_pull"]["value"] == pytest.approx(3 / 12)
