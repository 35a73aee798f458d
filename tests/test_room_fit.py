"""Calibration of the placement room rule (forksim.calibration.room): the per-creation state read from a
tracefs event stream (trace_points), and the fit of room_us and the curves on synthetic points (fit_room,
fit_wake_away): the values a known rule generated come back."""

from __future__ import annotations

import numpy as np
import pytest

from forksim.calibration.room import fit_room, fit_wake_away, trace_points
from forksim.profile import PlacementRoom, WakeAway

P, C1, C2 = 100, 101, 102


def _sw(t, cpu, prev, nxt, state="S"):
    return (t, cpu, prev, "sched_switch", {"prev_pid": str(prev), "prev_state": state, "next_pid": str(nxt)})


def _new(t, cpu, child, target):
    return (t, cpu, P, "sched_wakeup_new", {"pid": str(child), "target_cpu": f"{target:03d}"})


def _waking(t, cpu, waker, wakee=P):
    return (t, cpu, waker, "sched_waking", {"pid": str(wakee)})


def test_trace_points_read_the_state_at_each_creation_and_wake_up():
    """CPU 0 leaves idle at 100 (the parent), CPU 1 goes idle at 90: the creation at 110 has the parent's CPU
    awake 10 us and CPU 1 idle 20 us, child local; the child's exit wakes the parent sleeping in wait on CPU 0
    and it runs next on CPU 1 (moved). A CPU whose switch away from idle the trace missed gives no point."""
    evs = [
        _sw(90.0, 1, 55, 0), _sw(95.0, 0, 55, 0), _sw(100.0, 0, 0, P),
        _new(110.0, 0, C1, 0),
        _sw(111.0, 0, P, C1, "S"),  # the parent sleeps in wait, the child runs
        _waking(120.0, 0, C1), _sw(121.0, 0, C1, 0, "Z"), _sw(140.0, 1, 0, P, "R"),
        # CPU 1 runs the parent now; its idle exit was traced (prev 0). The parent's next creation: CPU 0 idle 19 us
        _new(150.0, 1, C2, 0),
        # CPU 0's switch away from idle missed: a task switch with CPU 0 still marked idle makes its state unknown
        _sw(160.0, 0, 77, 78, "S"), _sw(161.0, 1, P, 0, "S"), _new(170.0, 0, 103, 1),
    ]
    place, wakes = trace_points(evs, "fork")
    assert place[0] == ("fork", 10.0, 20.0, True)
    assert place[1] == ("fork", 10.0, 29.0, False)
    assert len(place) == 2  # the creation at 170 (CPU 0's awake time unknown) is left out
    assert wakes == [(30.0, True, None, 20.0)]  # no tick traced; CPU 0 awake since 100


def _synthetic(rng, n: int, room: float, room_local: float, edges, shares):
    awake = rng.uniform(0.0, 60.0, n)
    idle = rng.choice([10.0, 40.0, 300.0, 5000.0], n)
    p = np.where(awake < room, room_local, np.asarray(shares)[np.searchsorted(edges, idle)])
    return awake, idle, rng.random(n) < p


def test_fit_room_recovers_the_threshold_and_the_curves():
    rng = np.random.default_rng(3)
    edges = [25.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 1e9]
    pts = []
    for fam, shares in (("vfork", [0.05, 0.3, 0.5, 0.5, 0.7, 0.9, 0.99]), ("thread", [0.0, 0.1, 0.5, 0.5, 0.8, 0.9, 1.0])):
        a, i, loc = _synthetic(rng, 6000, 15.0, 0.98, edges, shares)
        pts += [(fam, float(x), float(y), bool(z)) for x, y, z in zip(a, i, loc)]
    sec = fit_room(pts, "synthetic")
    PlacementRoom.model_validate(sec)
    assert sec["room_us"] == pytest.approx(15.0, abs=1.0)
    v = sec["families"]["vfork"]
    assert v["room_local"] == pytest.approx(0.98, abs=0.02)
    got = dict(zip(v["idle_us"], v["local"]))
    assert got[25.0] == pytest.approx(0.05, abs=0.03) and got[50.0] == pytest.approx(0.3, abs=0.05)
    assert got[1e9] == pytest.approx(0.99, abs=0.02)
    assert 100.0 not in got  # no point there: merged into the next bin, not a share made up
    assert sec["families"]["thread"]["local"][0] == pytest.approx(0.0, abs=0.02)


def test_fit_room_gives_nothing_without_enough_points_or_a_rule():
    assert fit_room([("vfork", 5.0, 20.0, True)] * 20, "few") is None
    # every creation late (awake 40-60 us): nothing shows a room, so no section (the placement shares stand)
    rng = np.random.default_rng(1)
    pts = [("fork", float(a), 30.0, bool(rng.random() < 0.5)) for a in rng.uniform(40, 60, 500)]
    assert fit_room(pts, "late") is None


def test_fit_wake_away_bins_the_moves_by_idle_time():
    rng = np.random.default_rng(2)
    idle = rng.choice([10.0, 5000.0], 2000)
    moved = rng.random(2000) < np.where(idle < 25.0, 0.7, 0.0)
    w = fit_wake_away(list(zip(idle.tolist(), moved.tolist())), "synthetic")
    assert w["idle_us"] == [25.0, 1e9]
    assert w["share"][0] == pytest.approx(0.7, abs=0.05) and w["share"][1] == 0.0
    assert fit_wake_away([(10.0, True)] * 5, "few") is None


def _tick(t, cpu):
    return (t, cpu, 0, "local_timer_entry", {})


def test_trace_points_time_the_last_tick_after_the_parent_left():
    """The parent leaves CPU 0 at 111 for its child; CPU 0 ticks at 500 and 1,000: the wake-up at 1,200 carries
    the last tick's 889 us after the parent left, and CPU 0 awake 1,100 us. A tick before the parent left gives
    None (no pick could dequeue it since)."""
    evs = [
        _sw(90.0, 1, 55, 0), _sw(95.0, 0, 55, 0), _tick(96.0, 0), _sw(100.0, 0, 0, P),
        _new(110.0, 0, C1, 0), _sw(111.0, 0, P, C1, "S"),
        _tick(500.0, 0), _tick(1000.0, 0),
        _waking(1200.0, 0, C1), _sw(1201.0, 0, C1, 0, "Z"), _sw(1220.0, 1, 0, P, "R"),
        _new(1300.0, 1, C2, 1), _sw(1301.0, 1, P, C2, "S"),
        _waking(1400.0, 1, C2), _sw(1401.0, 1, C2, 0, "Z"), _sw(1405.0, 1, 0, P, "R"),
    ]
    _place, wakes = trace_points(evs, "fork")
    assert wakes == [(1110.0, True, 889.0, 1100.0), (199.0, False, None, 180.0)]


def test_fit_wake_away_splits_the_wake_ups_after_a_pick():
    """Wake-ups after a tick past the child's protected slice (750 us) move by the waker CPU's awake time (0.03
    under 2 ms, 0.98 past 3 ms), the others by the idle CPU's idle time (0.01): after_pick and the curve come back
    apart; without the protected slice (no ticks traced) every wake-up makes the curve, as before."""
    rng = np.random.default_rng(6)
    pts = []
    for _ in range(3000):
        tick = float(rng.choice([200.0, 900.0]))
        awake = float(rng.choice([1500.0, 4000.0]))
        p = (0.03 if awake < 2000 else 0.98) if tick >= 750 else 0.01
        pts.append((5000.0, bool(rng.random() < p), tick, awake))
    w = fit_wake_away(pts, "synthetic", protect_us=750.0)
    got = dict(zip(w["after_pick_awake_us"], w["after_pick"]))
    assert got[2000.0] == pytest.approx(0.03, abs=0.02) and got[5000.0] == pytest.approx(0.98, abs=0.02)
    assert w["share"] == [pytest.approx(0.01, abs=0.01)]
    PlacementRoom.model_validate({"room_us": 30.0, "families": {"fork": {"room_local": 1.0, "idle_us": [1e9],
                                  "local": [1.0]}}, "wake_away": {"fork": w}, "source": "synthetic"})
    model = WakeAway.model_validate(w)  # what the model reads: after_pick for a parent a pick took off, by awake time
    assert model.at(5000.0, 4000.0) == got[5000.0] and model.at(5000.0, 1500.0) == got[2000.0]
    assert model.at(5000.0) == model.at(5000.0, None) == w["share"][0]
    mixed = fit_wake_away(pts, "synthetic")
    assert "after_pick" not in mixed and mixed["share"][0] > 0.2


def test_a_family_the_room_does_not_explain_is_left_out():
    """Creations of one family all come late after a halt (a fork's long copy): the room says nothing about them,
    so the family keeps its placement share (left out of the section, said in the source)."""
    rng = np.random.default_rng(4)
    edges = [25.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 1e9]
    a, i, loc = _synthetic(rng, 4000, 15.0, 1.0, edges, [0.05, 0.3, 0.5, 0.5, 0.7, 0.9, 0.99])
    pts = [("vfork", float(x), float(y), bool(z)) for x, y, z in zip(a, i, loc)]
    pts += [("fork", float(x), 60.0, bool(rng.random() < 0.5)) for x in rng.uniform(30.0, 200.0, 1000)]
    sec = fit_room(pts, "synthetic")
    assert "vfork" in sec["families"] and "fork" not in sec["families"]
    assert "fork: left out" in sec["source"]


def test_a_wake_up_whose_switch_in_the_trace_missed_is_read_from_the_parents_next_event():
    """tracefs on the Intel host records no switch away from CPU 1's idle task: the woken parent's first event
    there (its next creation's sched_wakeup_new) says where it ran. Without this every move to CPU 1 was lost."""
    evs = [
        _sw(90.0, 1, 55, 0), _sw(95.0, 0, 55, 0), _sw(100.0, 0, 0, P),
        _new(110.0, 0, C1, 0), _sw(111.0, 0, P, C1, "S"),
        _waking(120.0, 0, C1), _sw(121.0, 0, C1, 0, "Z"),
        _new(150.0, 1, C2, 1),  # the parent on CPU 1: its switch in (prev 0) was not recorded
    ]
    _place, wakes = trace_points(evs, "vfork")
    assert wakes == [(30.0, True, None, 20.0)]


def test_a_family_the_room_rule_leaves_out_gets_its_share_from_the_same_loops():
    """forkbench's short loop from a long-idle start gave fork 0.50 and 0.98 local in two quick calibrations; the
    tight loop a running program settles in is measured anyway for the room rule, so a family the rule does not
    take (fork, posix_spawn) gets that loop's share; a family the rule lists, or one with few creations, does not."""
    from forksim.calibration.plan import Store
    from forksim.calibration.room_loops import KIND, MIN_PLACEMENTS, loop_shares

    store = Store()
    rng = np.random.default_rng(5)
    for family, n, p in (("fork", 3 * MIN_PLACEMENTS, 0.6), ("spawn", MIN_PLACEMENTS // 2, 1.0), ("vfork", 900, 0.9)):
        store.add(KIND, {"family": family, "seconds": 0.3, "lost_events": 0, "attempt": 0}, {},
                  [{"awake_us": 50.0, "idle_us": 30.0, "local": bool(x)} for x in rng.random(n) < p], [])
    # the sparse loop (a 64 MiB parent asleep 1 ms after each fork) feeds the room rule, not the tight loop's share
    store.add(KIND, {"family": "fork", "seconds": 0.4, "lost_events": 0, "attempt": 0, "rss": 64 << 20,
                     "think_s": 0.001}, {}, [{"awake_us": 400.0, "idle_us": 3000.0, "local": True}] * 500, [])
    out = loop_shares(store, {"families": {"vfork": {}}})
    assert set(out) == {"fork_local_when_idle"}  # spawn: too few; vfork: the room rule has it
    assert out["fork_local_when_idle"]["value"] == pytest.approx(0.6, abs=0.06)
    assert out["fork_local_when_idle"]["source"].startswith("measured:")
    assert loop_shares(Store(), None) == {}


def test_the_sparse_loops_run_once_and_their_long_idle_points_reach_the_curves(monkeypatch):
    """measure_room runs each family's tight loop until it has MIN_PLACEMENTS placements, then the family's sparse
    loop once where it has one (fork: an image and a think time; vfork and thread: a think time); room_section pools
    them: the tight loop's short idle times say spread, the sparse loop's long ones say local (a placement) and
    stay (a wait wake-up), each in its own idle bin."""
    from forksim.calibration import room_loops
    from forksim.calibration.plan import Store

    calls = []

    class NoTrace:  # the loops' tracefs instance, never opened here
        def open(self):
            return self

        def close(self):
            return None

    family_of = {kind: family for family, kind in room_loops.LOADGEN_KINDS.items()}

    def record(trace, kind, seconds, rss=0, think_s=0.0):
        calls.append((family_of[kind], rss, think_s))
        return {"creations": 1}, 0, "(the trace)", None

    def read(loop):  # forked_map runs this in workers forked from the test: the patch holds there too
        family, rss, think_s = loop.family, loop.rss, loop.think_s
        if think_s:  # other CPU idle 3 ms, the parent's awake 400 us (a 64 MiB copy, or a cold path): kept local
            place, wakes = [(family, 400.0, 3000.0, True)] * 150, [(3000.0, False, None, 1500.0)] * 100
        elif rss:  # the wait loop (128 MiB, no think): after a tick past the child's protected slice, moved
            place = [(family, 200.0, 3000.0, True)] * 60
            wakes = [(3500.0, True, 900.0, 4000.0)] * 40 + [(3500.0, False, 300.0, 4000.0)] * 40
        else:  # the tight loop: awake under the room keeps it local, beyond it the recently idle CPU takes it
            place = [(family, 20.0, 30.0, True)] * 150 + [(family, 200.0, 150.0, False)] * 150
            # a few long-idle ones, moved
            wakes = [(40.0, True, None, 50.0), (40.0, False, None, 50.0)] * 50 + [(3000.0, True, None, 50.0)] * 12
        return place, wakes, []

    monkeypatch.setattr(room_loops, "_traced_loop", record)
    monkeypatch.setattr(room_loops, "_points", read)
    monkeypatch.setattr(room_loops, "_room_trace", NoTrace)
    store = Store()
    room_loops.measure_room(store, 0.3, lambda msg: None)
    assert [c for c in calls if c[0] == "fork"] == [("fork", 0, 0.0), ("fork", 64 << 20, 0.001),
                                                     ("fork", 128 << 20, 0.0)]
    assert [c for c in calls if c[0] == "vfork"] == [("vfork", 0, 0.0), ("vfork", 0, 0.005)]
    assert [c for c in calls if c[0] == "spawn"] == [("spawn", 0, 0.0)]  # no sparse loop of its own
    sec = room_loops.room_section(store, protect_us=750.0)
    for family in ("fork", "vfork", "thread"):
        curve = sec["families"][family]
        assert curve["local"][0] < 0.05 and curve["local"][-1] > 0.95 and curve["idle_us"][-1] > 1000.0
        away = sec["wake_away"][family]
        assert away["share"][0] == pytest.approx(0.5) and away["share"][-1] < 0.15  # 12 moved of 112
    # fork's wait loop: 40 wake-ups after a pick, all moved, out of the curve; the other families have none
    assert sec["wake_away"]["fork"]["after_pick"] == [1.0] and "after_pick" not in sec["wake_away"]["vfork"]
    assert "fork 0.3 s, 128 MiB" in sec["source"]
    assert "fork 0.3 s, fork 0.4 s, 64 MiB, 1 ms asleep after each" in sec["source"]
    assert "vfork 0.3 s, 0 MiB, 5 ms asleep after each" in sec["source"]
    # the tight loop's share of a family the rule leaves out is the tight loop's alone
    assert room_loops.loop_shares(store, None)["fork_local_when_idle"]["value"] == 0.5


def test_the_start_of_a_loop_is_left_out_when_asked():
    """settle_us drops the placements and wake-ups in the first part after the parent's first creation (a loop's
    start from a long-idle other CPU, room_loops.SETTLE_S): the creation at 110 goes, the one at 150 stays."""
    evs = [
        _sw(90.0, 1, 55, 0), _sw(95.0, 0, 55, 0), _sw(100.0, 0, 0, P),
        _new(110.0, 0, C1, 0), _sw(111.0, 0, P, C1, "S"),
        _waking(120.0, 0, C1), _sw(121.0, 0, C1, 0, "Z"), _sw(140.0, 1, 0, P, "R"),
        _new(150.0, 1, C2, 0),
    ]
    assert len(trace_points(evs, "fork")[0]) == 2
    place, wakes = trace_points(evs, "fork", settle_us=30.0)
    assert place == [("fork", 10.0, 29.0, False)] and wakes == []  # the wake-up at 120 went too


def test_a_family_whose_own_threshold_explains_it_better_keeps_it():
    """vfork's room ends at 15 us, fork's at 110 us (a fork's copy runs before wake_up_new_task): the section's
    room_us is the shared fit, fork's curve carries its own, and each family's shares come back."""
    rng = np.random.default_rng(6)
    edges = [25.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 1e9]
    a, i, loc = _synthetic(rng, 6000, 15.0, 0.99, edges, [0.05, 0.3, 0.5, 0.5, 0.7, 0.9, 0.99])
    pts = [("vfork", float(x), float(y), bool(z)) for x, y, z in zip(a, i, loc)]
    awake = rng.choice([50.0, 140.0], 3000) + rng.uniform(-10.0, 10.0, 3000)  # after a remote child / a local one
    local = rng.random(3000) < np.where(awake < 110.0, 0.99, 0.02)
    pts += [("fork", float(x), 150.0, bool(z)) for x, z in zip(awake, local)]
    sec = fit_room(pts, "synthetic")
    PlacementRoom.model_validate(sec)
    fork = sec["families"]["fork"]
    assert 60.0 <= fork["room_us"] <= 130.0 and fork["room_local"] == pytest.approx(0.99, abs=0.02)
    assert fork["local"] == [pytest.approx(0.02, abs=0.02)]
    assert sec["room_us"] != fork["room_us"] and "fork: " in sec["source"] and "its own threshold" in sec["source"]
    room = PlacementRoom.model_validate(sec)
    assert room.families["fork"].share(70.0, room.room_us, 150.0) == pytest.approx(0.99, abs=0.02)  # its own room
    assert room.families["vfork"].share(70.0, room.room_us, 5000.0) == pytest.approx(0.99, abs=0.02)


def _mig(t, cpu, child, orig, dest):
    return (t, cpu, child, "sched_migrate_task", {"pid": str(child), "orig_cpu": str(orig), "dest_cpu": str(dest)})


def _exec(t, cpu, child):
    return (t, cpu, child, "sched_process_exec", {"pid": str(child)})


def test_exec_points_count_the_execs_that_began_with_another_cpu_idle():
    """C1 first runs on CPU 0 and sched_exec moves it to idle CPU 1 (moved); C2 execs on CPU 0 while CPU 1 idles
    (stayed); C3 execs on CPU 0 while CPU 1 runs a task (not counted); C4, made in the settling time, not counted."""
    C3, C4 = 103, 104
    evs = [
        _sw(1.0, 1, 55, 0), _sw(2.0, 0, 55, P),
        _new(5.0, 0, C4, 0), _sw(6.0, 0, P, C4, "D"), _exec(8.0, 0, C4), _sw(9.0, 0, C4, P, "Z"),
        _new(110.0, 0, C1, 0), _sw(111.0, 0, P, C1, "D"), _mig(120.0, 0, C1, 0, 1), _sw(121.0, 1, 0, C1),
        _exec(130.0, 1, C1), _sw(131.0, 1, C1, 0, "Z"), _sw(132.0, 0, 0, P),
        _new(140.0, 0, C2, 0), _sw(141.0, 0, P, C2, "D"), _exec(150.0, 0, C2), _sw(151.0, 0, C2, P, "Z"),
        _new(160.0, 0, C3, 0), _sw(161.0, 1, 0, 77), _sw(162.0, 0, P, C3, "D"), _exec(170.0, 0, C3),
    ]
    from forksim.calibration.room import exec_points
    assert exec_points(evs, settle_us=50.0) == [True, False]
    assert exec_points(evs) == [False, True, False]  # C4 counts without the settling time


def test_the_spawn_loop_s_exec_moves_replace_forkbench_s():
    from forksim.calibration.plan import Store
    from forksim.calibration.room_loops import KIND, loop_shares
    from forksim.calibration.scheduling import MIN_IDLE_EXECS

    store = Store()
    store.add(KIND, {"family": "spawn", "seconds": 0.3, "settle_s": 0.15}, {}, [], [])
    store.runs[-1]["exec_moved"] = [True] * 3 + [False] * (MIN_IDLE_EXECS - 3)
    got = loop_shares(store, None)["exec_moves_when_idle"]
    assert got["value"] == round(3 / MIN_IDLE_EXECS, 3) and got["source"].startswith("measured:")
    store.runs[-1]["exec_moved"] = [True] * (MIN_IDLE_EXECS - 1)  # too few: forkbench's share stands
    assert "exec_moves_when_idle" not in loop_shares(store, None)


def test_a_tight_loop_short_of_placements_runs_again_after_every_loop_is_read(monkeypatch):
    """A family whose tight loop gives under MIN_PLACEMENTS placements runs it again (up to ATTEMPTS loops in all)
    once every first loop has been read; the store keeps each family's tight loops first, in their order, then its
    other loops, as the fit's sources list them."""
    from forksim.calibration import room_loops
    from forksim.calibration.plan import Store

    monkeypatch.setattr(room_loops, "ROOM_FAMILIES", ("fork", "spawn"))
    monkeypatch.setattr(room_loops, "_room_trace", lambda: type("NoTrace", (), {"open": lambda self: self,
                                                                               "close": lambda self: None})())
    monkeypatch.setattr(room_loops, "_traced_loop", lambda trace, kind, seconds, rss=0, think_s=0.0:
                        ({"creations": 1}, 0, kind, None))
    per_loop = {"fork": 70, "spawn": 20}  # fork: 3 loops reach 200; spawn: never, stops at ATTEMPTS
    monkeypatch.setattr(room_loops, "_points", lambda loop: (
        [(loop.family, 20.0, 30.0, True)] * (0 if loop.rss else per_loop[loop.family]), [], []))
    store = Store()
    room_loops.measure_room(store, 0.3, lambda msg: None)
    keys = [(r["key"]["family"], r["key"]["attempt"], r["key"].get("rss", 0)) for r in store.runs]
    assert keys == [("fork", 0, 0), ("fork", 1, 0), ("fork", 2, 0), ("fork", 0, 64 << 20), ("fork", 0, 128 << 20),
                    *[("spawn", a, 0) for a in range(room_loops.ATTEMPTS)]]
