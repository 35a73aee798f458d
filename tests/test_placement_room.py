"""The placement room rule of a packing kernel (profile.placement_room; kernel/clone.py Kernel._local_share and
Kernel._wake_away): a new task stays on the parent's CPU while that CPU has been awake under room_us, else by the
idle CPU's idle time; the wait wake-up's move to the idle CPU by its idle time. Simulated milliseconds: quick."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from forksim import runner
from forksim.config import parse_config
from forksim.kernel import clone as kclone
from forksim.machine import Machine
from forksim.profile import FamilyCold, PlacementRoom, RoomCurve, WakeAway
from forksim.runner import run_experiment

EDGES = [25.0, 50.0, 1e9]


def _loop(clone: str, ms: int = 20):
    return parse_config({
        "experiment": {"name": "t", "duration": f"{ms}ms", "warmup": "2ms", "replications": 1, "seed": 7},
        "machine": {"cpus": 2},
        "workload": {"kind": "closed", "parents": 1, "image": {"rss": "0"}, "child": {"clone": clone}},
    }, source="test")


def _room(families: dict[str, RoomCurve], wake: dict[str, list[float]] | None = None) -> PlacementRoom:
    away = {f: WakeAway(idle_us=EDGES, share=s, source="assumption: test") for f, s in (wake or {}).items()}
    return PlacementRoom(room_us=15.0, families=families, source="assumption: test", wake_away=away)


def _profile(exp, room: PlacementRoom | None):
    prof = runner.resolve_profile(exp)
    return prof.model_copy(update={"interruptions": None, "placement_room": room})


def test_the_curve_checks_its_shape_and_reads_by_state():
    with pytest.raises(ValidationError):
        RoomCurve(room_local=1.0, idle_us=[25.0, 50.0], local=[0.5])
    with pytest.raises(ValidationError):
        RoomCurve(room_local=1.0, idle_us=[50.0, 25.0], local=[0.5, 0.5])
    c = RoomCurve(room_local=0.9, idle_us=[25.0, 50.0], local=[0.1, 0.6])
    assert c.share(10.0, 15.0, 1e6) == 0.9  # awake under the room: room_local, whatever the idle time
    assert c.share(20.0, 15.0, 25.0) == 0.1  # an edge belongs to its bin (upper edge, inclusive)
    assert c.share(20.0, 15.0, 30.0) == 0.6
    assert c.share(20.0, 15.0, 1e6) == 0.6  # beyond the last edge: the last share


def test_a_simulated_loop_keeps_the_measured_share_in_each_state(monkeypatch):
    """Every creation of a closed vfork loop is placed by its state: all local while the parent's CPU has been
    awake under 15 us, and beyond it each idle-time bin's share, within 4 binomial sigmas."""
    curve = RoomCurve(room_local=1.0, idle_us=EDGES, local=[0.2, 0.6, 0.95])
    exp = _loop("vfork", ms=200)
    seen: list[tuple[float, float]] = []
    outcome: list[bool] = []
    share, spawn = kclone.Kernel._local_share, Machine.spawn

    def spy_share(self, k, P):
        now, idle = self.env._now, self.machine._idle
        seen.append((now - P.cpu.awake_since, now - self.machine.cpus[min(idle)].idle_since if idle else np.nan))
        return share(self, k, P)

    def spy_spawn(self, task, parent, pack=False):
        outcome.append(bool(pack))
        return spawn(self, task, parent, pack=pack)

    monkeypatch.setattr(kclone.Kernel, "_local_share", spy_share)
    monkeypatch.setattr(Machine, "spawn", spy_spawn)
    run_experiment(exp, profile=_profile(exp, _room({"vfork": curve})))
    d = pd.DataFrame(seen, columns=["awake", "idle"]).assign(local=outcome[-len(seen):])
    d = d[d.idle.notna()]
    inside = d[d.awake < 15.0]
    assert len(inside) > 100 and inside.local.all()
    beyond = d[d.awake >= 15.0]
    checked = 0
    for (lo, hi), p in zip(zip([0.0] + EDGES, EDGES), curve.local):
        part = beyond[(beyond.idle > lo) & (beyond.idle <= hi)]
        if len(part) >= 100:
            checked += 1
            assert part.local.mean() == pytest.approx(p, abs=4 * np.sqrt(p * (1 - p) / len(part)) + 0.01)
    assert checked >= 2  # the loop visits more than one regime: it alternates, as the real one


@pytest.mark.parametrize("share, moves", [(0.0, False), (1.0, True)])
def test_the_wait_wake_up_moves_the_parent_to_the_idle_cpu_by_the_curve(share, moves):
    """Every child local (room_local 1, local 1 beyond): with wake_away 0 the parent never leaves its CPU; with
    wake_away 1 every wait wake-up by the child's exit on the parent's CPU puts it on the idle CPU."""
    all_local = RoomCurve(room_local=1.0, idle_us=EDGES, local=[1.0, 1.0, 1.0])
    exp = _loop("fork")
    r = run_experiment(exp, profile=_profile(exp, _room({"fork": all_local}, {"fork": [share] * 3})))
    df = r.records[~r.records["warmup"]]
    assert len(df) > 50
    assert (df.child_cpu == df.parent_cpu).mean() > 0.95
    changed = (df.parent_cpu.diff().fillna(0) != 0).mean()
    assert (changed > 0.9) if moves else (changed == 0.0)


def test_families_not_listed_keep_the_old_rules():
    """A section for threads only leaves a vfork loop exactly as without the section (same seed, same records)."""
    exp = _loop("vfork")
    thread = RoomCurve(room_local=0.0, idle_us=EDGES, local=[0.0, 0.0, 0.0])
    a = run_experiment(exp, profile=_profile(exp, None)).records
    b = run_experiment(exp, profile=_profile(exp, _room({"thread": thread}, {"thread": [1.0] * 3}))).records
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))



def _think_loop(clone: str, cpus: int):
    return parse_config({
        "experiment": {"name": "t", "duration": "1s", "warmup": "50ms", "replications": 1, "seed": 7},
        "machine": {"cpus": cpus},
        "workload": {"kind": "closed", "parents": 1, "think_time": "10ms", "image": {"rss": "0"},
                     "child": {"clone": clone}},
    }, source="test")


def _cold(exp, before: float, room: PlacementRoom | None) -> "pd.DataFrame":
    prof = _profile(exp, room)
    cold = FamilyCold(full_us=60.0, tau_us=5000.0, before_wakeup=before)  # ~52 us after 10 ms asleep
    prof = prof.model_copy(update={"warmth": prof.warmth.model_copy(update={"families": {"vfork": cold}})})
    r = run_experiment(exp, profile=prof)
    return r.records[~r.records["warmup"]]


def test_the_part_of_a_cold_call_after_the_placement_does_not_count_in_the_room():
    """A vfork after 10 ms asleep: its ~52 us cold extra all before wake_up_new_task puts the parent's CPU past a
    40 us room, and the child goes to the idle CPU (local 0 beyond the room); with 0.3 of it before, the child stays
    (the zen4 host's think loops: 30 of 30 local, 27 us awake at the placement). One CPU: the call is as long either
    way (the extra moves, it does not grow)."""
    room = PlacementRoom(room_us=40.0, source="assumption: test",
                         families={"vfork": RoomCurve(room_local=1.0, idle_us=EDGES, local=[0.0, 0.0, 0.0])})
    exp = _think_loop("vfork", 2)
    before_all, split = _cold(exp, 1.0, room), _cold(exp, 0.3, room)
    assert len(before_all) > 50 and len(split) > 50
    assert (before_all.child_cpu == before_all.parent_cpu).mean() < 0.05
    assert (split.child_cpu == split.parent_cpu).mean() > 0.95
    one = _think_loop("vfork", 1)
    calls = [_cold(one, b, None).fork_latency_us.median() for b in (1.0, 0.3)]
    assert calls[1] == pytest.approx(calls[0], abs=0.5)
