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


def _no_idle_trace(settled: bool) -> list:
    """Hogs 10 and 11 run 200 ms alone, one per CPU (fully busy); parent 20 preempts hog 11 on CPU 1
    (overloaded: two runnable, utilisation past capacity / imbalance_pct; one more than CPU 0) and its child
    goes to CPU 0 (pushed); the child exits, the parent sleeps, and parent 21, alone on CPU 1 after the hog
    moved away (spare capacity; one task against two), keeps its child: with `settled`, after CPU 1 switched
    once more (another session's task 99 ran a moment), else right after parent 20 went to sleep there."""
    ms = 1e6
    ev = [sw(0, 0, 0, 10), sw(0, 1, 0, 11),
          Event(200 * ms, 20, 1, "sched_wakeup", {"pid": "20", "target_cpu": "001"}),
          sw(200 * ms, 1, 11, 20, "R"),
          Event(200 * ms + 1e3, 20, 1, "sched_wakeup_new", {"pid": "50", "target_cpu": "000"}),  # pushed
          Event(201 * ms, 50, 0, "sched_process_exit", {}), sw(201 * ms, 0, 50, 10, "Z"),
          sw(202 * ms, 1, 20, 21),  # parent 20 sleeps; 21 runs
          Event(202 * ms, 11, 1, "sched_migrate_task", {"pid": "11", "dest_cpu": "0"})]  # hog 11 moves to CPU 0
    if settled:
        ev += [sw(202 * ms + 100, 1, 21, 99, "R"), sw(202 * ms + 200, 1, 99, 21, "R")]
    return ev + [Event(202 * ms + 1e3, 21, 1, "sched_wakeup_new", {"pid": "51", "target_cpu": "001"})]  # stayed


def test_fork_placement_with_no_idle_cpu_by_the_kernels_case():
    """fork_placement_no_idle: forks while both CPUs run, counted by the case of the kernel's rule reached on
    the PELT state replayed from the trace, and by the difference in runnable tasks (_no_idle_trace)."""
    from forksim.calibration.busy import fork_placement_no_idle

    out = fork_placement_no_idle(_no_idle_trace(settled=True), {10, 11, 20, 21, 50, 51}, [20, 21], 0, 300e6, 2)
    assert out.pop("fork_no_idle_higher_type/one_more") == [0, 1]
    assert out.pop("fork_no_idle_lower_type/not_more") == [1, 1]
    assert out.pop("fork_no_idle_unclear") == 0
    assert all(v == [0, 0] for v in out.values()) and len(out) == 13


def test_a_fork_right_after_a_parent_slept_on_a_cpu_is_left_out_of_the_cases():
    """DELAY_DEQUEUE may keep the parent that just went to sleep on CPU 1 queued (ineligible, until picked):
    the kernel would count it on CPU 1, the trace does not show it, so parent 21's fork is counted as unclear,
    in no case; the pooled shares say how many were left out."""
    from forksim.calibration.busy import fork_placement_no_idle, fractions

    out = fork_placement_no_idle(_no_idle_trace(settled=False), {10, 11, 20, 21, 50, 51}, [20, 21], 0, 300e6, 2)
    assert out.pop("fork_no_idle_unclear") == 1
    assert out.pop("fork_no_idle_higher_type/one_more") == [0, 1]
    assert all(v == [0, 0] for v in out.values())
    run = {f"fork_no_idle_{k}": [0, 0] for k in ("lower_type/not_more",)} | {
        "fork_no_idle_higher_type/one_more": [3, 30], "fork_no_idle_unclear": 7}
    share = fractions([run])["fork_local_no_idle"]["higher_type/one_more"]
    assert share["value"] == pytest.approx(0.1) and "7 more forks of these runs left out" in share["source"]


def test_pelt_replay_averages_follow_the_traced_states():
    """PeltReplay: a task running one PELT half-life from nothing reaches half the capacity in utilisation;
    asleep as long, its load halves and stays on its CPU; a dead task's averages leave; a new task starts at
    post_init_entity_util_avg's share of its CPU; another session's task (99) counts nowhere."""
    from forksim.calibration.pelt_replay import PeltReplay
    from forksim.sched.balance import PELT_HALFLIFE_US, post_init_util

    h = PELT_HALFLIFE_US * 1e3  # ns
    pr = PeltReplay({10, 20, 30})
    pr.feed(sw(0, 0, 0, 10))  # first seen running: load 1024, utilisation 0
    pr.feed(sw(0, 1, 0, 99))
    nr, load, util, runnable = pr.stats(0, h)
    assert nr == 1 and load == pytest.approx(1024.0) and util == pytest.approx(512.0) and runnable == pytest.approx(512.0)
    assert pr.stats(1, h) == (0, 0.0, 0.0, 0.0)
    pr.feed(sw(h, 0, 10, 0, "S"))
    nr, load, util, _ = pr.stats(0, 2 * h)
    assert nr == 0 and load == pytest.approx(512.0) and util == pytest.approx(256.0)
    pr.feed(Event(2 * h, 10, 0, "sched_wakeup_new", {"pid": "30", "target_cpu": "000"}))
    new = pr.tasks[30]
    assert new.load == 1024.0 and new.util == new.runnable == pytest.approx(post_init_util(512.0, 256.0))
    pr.feed(sw(2 * h, 0, 0, 30))
    pr.feed(sw(2 * h + 1, 0, 30, 0, "Z"))
    assert 30 not in pr.tasks and pr.stats(0, 2 * h + 1)[1] == pytest.approx(512.0, rel=1e-6)


def test_parents_on_one_cpu_share():
    """parents_together: parents 20 and 21 on CPUs 0 and 1 until 4, then 21 moves to CPU 0: 6 of 10 together."""
    from forksim.calibration.busy import parents_together

    ev = [sw(0, 0, 0, 20), sw(0, 1, 0, 21),
          Event(4, 21, 0, "sched_migrate_task", {"pid": "21", "dest_cpu": "0"})]
    assert parents_together(ev, [20, 21], 0, 10)["parents_on_one_cpu"] == pytest.approx(0.6)
    assert parents_together(ev, [20], 0, 10)["parents_on_one_cpu"] is None


def test_fit_balancing_makes_a_profile_section_from_the_traced_runs():
    """calibrate's busy step: the pooled shares become the `balancing` section (EEVDF with the traced
    children-first counts as its provenance, the measured no-idle fork shares, idle_pull from 10+ ticks of chance only) and the busy placement shares."""
    from forksim.calibration.busy import KIND, fit_balancing
    from forksim.calibration.plan import Store
    from forksim.profile import Balancing

    run = {"parents": 2, "hogs": 2, "duration_s": 1.0, "fork_no_idle_lower_type/not_more": [19, 20],
           "fork_no_idle_both_spare/one_more": [1, 20], "fork_no_idle_both_spare/not_more": [3, 3],
           "fork_no_idle_higher_type/more": [1, 20], "fork_no_idle_load_push/one_more": [0, 1],
           "idle_pull_chances": 4.0, "idle_pulls": 0, "forks_child_first_in_slice": [1, 40],
           "forks_child_first_past_slice": [3, 5], "parent_woken_from_other_cpu": 50, "parent_wake_stays_on_prev": 0.98}
    assert fit_balancing(Store(), 4000.0) == (None, {})
    store = Store()
    store.add(KIND, {"rep": 0}, {}, [], [run])
    section, placement = fit_balancing(store, 4000.0)
    bal = Balancing(**section)
    assert bal.eevdf is True and "idle_pull" not in section  # 4 ticks of chance say nothing
    assert "of 40 children put on their parent's CPU while the parent was inside its slice, 1 ran" in bal.eevdf_source
    shares = {k: v.value for k, v in bal.fork_local_no_idle.items()}
    assert (shares["lower_type/not_more"], shares["both_spare/one_more"], shares["higher_type/more"]) == (0.95, 0.05, 0.05)
    # met fewer than 20 times: the kernel's own answer counted as 20 forks beside the few measured, held within what
    # the same case's measured cells allow (a CPU with more runnable tasks keeps no more of its children)
    assert shares["both_spare/not_more"] == 1.0 and shares["load_push/one_more"] == 0.0
    assert shares["load_keep/more"] == 1.0  # never met, nothing of its case measured: the rule
    assert shares["both_spare/more"] == pytest.approx(0.05)  # the rule (keep), held to one_more's 1 of 20
    assert shares["higher_type/not_more"] == pytest.approx(0.05)  # the rule (push), held up to more's 1 of 20
    assert bal.fork_local_no_idle["both_spare/not_more"].source.startswith("assumption")
    assert placement["wake_prev_when_busy"]["value"] == 0.98 and "1 traced 1 s runs" in placement["wake_prev_when_busy"]["source"]
    # one fork against the rule in a thin cell leaves it near the rule (0 kept of 1: 20 / 21)
    one = Store()
    one.add(KIND, {"rep": 0}, {}, [], [run | {"fork_no_idle_both_spare/not_more": [0, 1]}])
    thin, _ = fit_balancing(one, 4000.0)
    assert Balancing(**thin).fork_local_no_idle["both_spare/not_more"].value == pytest.approx(20 / 21, abs=1e-4)
    store.add(KIND, {"rep": 1}, {}, [], [run | {"idle_pull_chances": 8.0, "idle_pulls": 3}])
    section, _ = fit_balancing(store, 4000.0)
    assert section["idle_pull"]["value"] == pytest.approx(3 / 12)


def test_fit_balancing_leaves_out_runs_that_shared_the_cpus_with_other_processes():
    """A traced run during which other processes used the CPUs (busy.measure marks it noisy) measured their
    contention: left out while a quiet run remains; with none, kept and its sources say so."""
    from forksim.calibration.busy import KIND, fit_balancing
    from forksim.calibration.plan import Store

    def run(stays: float, noisy: bool) -> dict:
        return {"parents": 1, "hogs": 2, "duration_s": 1.0, "parent_woken_from_other_cpu": 100,
                "parent_wake_stays_on_prev": stays, "noisy": noisy, "foreign_cpu_frac": 0.4 if noisy else 0.01}

    store = Store()
    store.add(KIND, {"rep": 0}, {}, [], [run(0.9, False)])
    store.add(KIND, {"rep": 1}, {}, [], [run(0.1, True)])
    _, placement = fit_balancing(store, 4000.0)
    assert placement["wake_prev_when_busy"]["value"] == 0.9 and "other processes" not in placement["wake_prev_when_busy"]["source"]
    noisy_only = Store()
    noisy_only.add(KIND, {"rep": 0}, {}, [], [run(0.1, True)])
    _, placement = fit_balancing(noisy_only, 4000.0)
    assert placement["wake_prev_when_busy"]["value"] == 0.1
    assert "1 of them while other processes used over 10% of the CPUs" in placement["wake_prev_when_busy"]["source"]


def test_child_first_counts_children_that_ran_before_their_parent_left_the_cpu():
    """child_first: parent 20, switched in at 0, forks child 50 at 100 us (inside a 1.4 ms slice) and leaves
    asleep; then forks 51 at 3 ms (past the slice) and is preempted by it (R); a child put on another CPU
    (52) is not counted."""
    from forksim.calibration.busy import child_first

    us = 1e3
    ev = [sw(0, 0, 0, 20),
          Event(100 * us, 20, 0, "sched_wakeup_new", {"pid": "50", "target_cpu": "000"}),
          sw(150 * us, 0, 20, 50, "S"), sw(300 * us, 0, 50, 20, "X"),
          Event(400 * us, 20, 0, "sched_wakeup_new", {"pid": "52", "target_cpu": "001"}),
          Event(3000 * us, 20, 0, "sched_wakeup_new", {"pid": "51", "target_cpu": "000"}),
          sw(3010 * us, 0, 20, 51, "R")]
    out = child_first(ev, [20], 0, 10e6, 1400 * us)
    assert out == {"forks_child_first_in_slice": [0, 1], "forks_child_first_past_slice": [1, 1]}


def test_measure_runs_a_noisy_load_again_and_reads_every_run_after_the_last(monkeypatch):
    """busy.measure records every load in turn (a run that other processes shared the CPUs with is run again, up to
    NOISY_ATTEMPTS in all, and the last kept and marked), then reads the kept runs (read_run, in forked workers)
    into the store in the loads' order."""
    import contextlib

    from forksim.calibration import busy
    from forksim.calibration.plan import Store
    from forksim.validation import measure as vmeasure

    foreign = {(1, 1): [0.5, 0.02], (2, 2): [0.5] * busy.NOISY_ATTEMPTS, (2, 4): [0.01]}
    recorded = []

    def record_run(tr, loadgen, helper, *, parents, hogs, rss, duration, warmup):
        recorded.append((parents, hogs))
        return busy.Recorded({"foreign": foreign[parents, hogs].pop(0)}, "x" * hogs, None, 0, 0,
                             {"parents": parents, "hogs": hogs, "rss": rss, "duration_s": duration})

    monkeypatch.setattr(busy, "_instance", lambda events, kb: contextlib.nullcontext())
    monkeypatch.setattr(vmeasure, "build_tools", lambda: type("Tools", (), {"loadgen": None, "helper": None}))
    monkeypatch.setattr(busy, "record_run", record_run)
    monkeypatch.setattr(busy, "foreign_cpu_frac", lambda run: run.summary["foreign"])
    monkeypatch.setattr(busy, "read_run", lambda run: {**run.load, "foreign_cpu_frac": run.summary["foreign"]})
    said = []
    store = Store()
    busy.measure(store, ((1, 1, 0), (2, 2, 0), (2, 4, 0)), 0.8, 0.3, 1, said.append)
    assert recorded == [(1, 1)] * 2 + [(2, 2)] * busy.NOISY_ATTEMPTS + [(2, 4)]
    got = [(r["key"]["parents"], r["key"]["hogs"], r["segments"][0]["foreign_cpu_frac"], r["segments"][0]["noisy"])
           for r in store.select(busy.KIND)]
    assert got == [(1, 1, 0.02, False), (2, 2, 0.5, True), (2, 4, 0.01, False)]
    assert "(1 shared the CPUs with other processes" in said[-1]


def test_the_balancers_moves_and_the_delay_of_the_ticks_pass():
    """balance_pulls keeps the migrations no wake-up follows (the balancer's, not a waking task's placement);
    tick_pass_delay is the median phase after the tick of those in the tick's first eighth (the tick's own
    pass), none with fewer than ten."""
    from forksim.calibration.busy import TICK_PASS_MIN_PULLS, balance_pulls, tick_pass_delay

    tick_ns = 4e6

    def pulled(ts):
        return Event(ts, 0, 1, "sched_migrate_task", {"pid": "30", "orig_cpu": "0", "dest_cpu": "1"})

    ev = []
    for k in range(1, 13):  # the tick's pass, 30 + k us after tick k; a wake-up's migration 100 us later
        ev.append(pulled(k * tick_ns + (30 + k) * 1e3))
        ev.append(Event(k * tick_ns + 100e3, 30, 0, "sched_migrate_task",
                        {"pid": "30", "orig_cpu": "1", "dest_cpu": "0"}))
        ev.append(Event(k * tick_ns + 100e3 + 500, 31, 0, "sched_wakeup", {"pid": "30", "target_cpu": "000"}))
    ev.append(pulled(13 * tick_ns + 2e6))  # a newly idle CPU's pull, mid-tick
    ev.append(pulled(14 * tick_ns + 30e3))  # not one of the load's tasks
    ev[-1].f["pid"] = "99"
    got = balance_pulls(ev, {30, 31}, 0, 20 * tick_ns)["balance_pulls_ns"]
    assert len(got) == 13 and all(ts % tick_ns != 100e3 for ts in got)
    delay, source = tick_pass_delay([{"balance_pulls_ns": got}], 4000.0)
    assert delay == pytest.approx(36.5) and source.startswith("measured: 12 of the load balancer's 13 moves")
    assert tick_pass_delay([{"balance_pulls_ns": got[:TICK_PASS_MIN_PULLS - 1]}], 4000.0) is None
    assert tick_pass_delay([{}], 4000.0) is None


def test_the_tick_pass_delay_merges_into_a_profile_file_and_nothing_else_moves(tmp_path):
    import json
    import shutil

    from forksim.calibration.busy import KIND, merge_tick_pass_delay
    from forksim.calibration.plan import write_raw
    from forksim.profile import load_profile, profile_path

    prof = tmp_path / "p.json"
    shutil.copy(profile_path("amd-epyc-zen4-2cpu-linux6.18-kvm-haltpoll"), prof)
    before = json.loads(prof.read_text())
    pulls = [k * 4_000_000 + 30_000 + 1000 * (k % 5) for k in range(1, 21)]
    raw = tmp_path / "busy.json.gz"
    write_raw(raw, {"facts": {"kernel": "6.18"}, "runs": [
        {"kind": KIND, "key": {}, "shape": {}, "samples": [], "segments": [{"balance_pulls_ns": pulls}]}]})
    delay, source = merge_tick_pass_delay(str(raw), str(prof), "a note")
    after = json.loads(prof.read_text())
    assert delay == 32.0 and after["balancing"]["tick_pass_delay_us"] == 32.0
    assert after["balancing"]["tick_pass_delay_source"].endswith("raw: busy.json.gz; a note")
    assert "merged_tick_pass_delay" in after["provenance"]
    for doc in (before, after):
        doc["balancing"].pop("tick_pass_delay_us", None), doc["balancing"].pop("tick_pass_delay_source", None)
        doc["provenance"].pop("merged_tick_pass_delay", None)
    assert after == before
    assert load_profile(str(prof)).balancing.tick_pass_delay_us == 32.0
    with pytest.raises(ValueError, match="under 10 balancing moves"):
        write_raw(raw, {"runs": []})
        merge_tick_pass_delay(str(raw), str(prof))
