"""The host's slow episodes: the fit from the pace probe's units (forksim.calibration.host_speed), the profile
section, the engine's per-CPU speed (forksim.host_speed, CPU.speed_at, Task.run) and what it does to a run."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import simpy
from pydantic import ValidationError

from forksim.calibration.host_speed import KIND, WINDOW_US, fit_host_speed, fit_store, windows
from forksim.calibration.plan import Store
from forksim.config import parse_config
from forksim.host_speed import SpeedEpisodes
from forksim.machine import Machine, SchedulerParams
from forksim.profile import HostSpeed, load_profile
from forksim.runner import run_experiment


def _units(windows: int, slow: dict[int, float], unit_us: float = 10.0) -> np.ndarray:
    """Rows (start, length) of back-to-back units over `windows` windows, window i's units `slow[i]` times as long."""
    rows, t = [], 0.0
    for w in range(windows):
        f = slow.get(w, 1.0)
        while t < (w + 1) * WINDOW_US:
            rows.append((t, unit_us * f))
            t += unit_us * f
    return np.array(rows)


def test_fit_finds_the_episodes_their_lengths_and_factors():
    # run 1: one episode of 5 windows at 1.4x among 100; run 2: two of 1 and 2 windows at 1.6x
    r1 = _units(100, {w: 1.4 for w in range(40, 45)})
    r2 = _units(100, {10: 1.6, 70: 1.6, 71: 1.6})
    s = fit_host_speed([(0, windows(r1)), (1, windows(r2))])
    HostSpeed.model_validate(s)
    assert s["slow_share"] == pytest.approx(8 / 200, abs=0.006)  # a window edge may fall inside an episode
    assert s["slow_us"][-1] == pytest.approx(5 * WINDOW_US, rel=0.25)
    assert s["slow_us"][0] == WINDOW_US
    assert s["slow_factor"][0] >= 1.3 and s["slow_factor"][-1] == pytest.approx(1.6, rel=0.02)
    assert sum(s["normal_us"]) > 0


def test_a_run_slow_throughout_counts_as_slow():
    """A phase longer than a run (seconds to minutes) is slow against the usual speed of the other runs."""
    s = fit_host_speed([(0, windows(_units(100, {}))), (1, windows(_units(100, {w: 1.3 for w in range(100)})))])
    assert s["slow_share"] == pytest.approx(0.5, abs=0.01)
    assert s["slow_factor"][0] == pytest.approx(1.3, rel=0.02) and "10.00 us at the usual speed" in s["source"]


def test_a_steady_host_has_no_episodes():
    s = fit_host_speed([(0, windows(_units(50, {}))), (1, windows(_units(50, {})))])
    assert s["slow_share"] == 0.0 and "no slow window" in s["source"]
    HostSpeed.model_validate(s)


def test_too_short_a_probe_is_an_error():
    from forksim.errors import MeasurementError

    with pytest.raises(MeasurementError, match="windows"):
        fit_host_speed([(0, windows(_units(3, {})))])


def test_a_calibrations_parts_are_pooled_from_its_store():
    """calibrate keeps each part's windows in the Store (so refit redoes the fit); the parts pool."""
    store = Store()
    assert fit_store(store) is None  # no probe ran (a raw file from before it)
    for part, slow in enumerate(({20: 1.5}, {}, {5: 1.5, 6: 1.5})):
        store.add(KIND, {"cpu": part % 2, "part": part}, {}, [{"window_us": w} for w in windows(_units(60, slow))])
    s = fit_store(store)
    assert s["slow_share"] == pytest.approx(3 / 180, abs=0.006) and "3 parts" in s["source"]


@pytest.mark.parametrize("args", [["--rounds", "0"], ["--seconds", "0"], ["--every", "-1"]])
def test_the_command_refuses_a_meaningless_probe(args, capsys):
    from forksim.calibration.host_speed import main

    with pytest.raises(SystemExit) as e:
        main(["measure", *args])
    assert e.value.code == 2 and "--rounds must be at least 1" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [
    {"probabilities": [0.1, 1.0]},
    {"slow_factor": [0.9, 1.2]},
    {"slow_us": [1.0, 2.0, 3.0]},
    {"normal_us": [5.0, 1.0]},
])
def test_a_malformed_section_is_refused(bad):
    good = {"probabilities": [0.0, 1.0], "slow_factor": [1.2, 1.5], "slow_us": [2000.0, 8000.0],
            "normal_us": [2000.0, 40000.0], "slow_share": 0.1, "source": "test"}
    with pytest.raises(ValidationError):
        HostSpeed(**{**good, **bad})


class _Costs:
    def __init__(self, seed: int = 1):
        self.rng = np.random.default_rng(seed)

    def stream(self, _name: str) -> np.random.Generator:
        return self.rng


def _spec(slow_us: float, normal_us: float, factor: float) -> HostSpeed:
    return HostSpeed(probabilities=[0.0, 1.0], slow_factor=[factor, factor], slow_us=[slow_us, slow_us],
                     normal_us=[normal_us, normal_us], slow_share=slow_us / (slow_us + normal_us), source="test")


def _busy_cpu(episodes: SpeedEpisodes | None, until: float) -> float:
    """One task doing 50 us chunks of work back to back on one CPU until `until`: the work done (us)."""
    env = simpy.Environment()
    m = Machine(env, 1, SchedulerParams(host_speed=episodes))
    task = m.new_task("work")
    first, _ = m.spawn(task, None)
    done = [0.0]

    def body():
        yield first
        while True:
            yield task.run(50.0)
            done[0] += 50.0

    env.process(body())
    env.run(until=until)
    return done[0]


def test_work_runs_slower_by_the_time_weighted_factor():
    """Slow 10 ms of every 40 at 1.5x: a quarter of the time does two thirds of the work (conservation)."""
    horizon = 2e6
    plain = _busy_cpu(None, horizon)
    slowed = _busy_cpu(SpeedEpisodes(_spec(10_000.0, 30_000.0, 1.5), _Costs()), horizon)
    assert plain == pytest.approx(horizon, rel=1e-3)
    assert slowed / plain == pytest.approx(0.75 + 0.25 / 1.5, rel=0.005)


def test_episodes_alternate_with_the_drawn_lengths_and_factors():
    env = simpy.Environment()
    m = Machine(env, 2, SchedulerParams(host_speed=SpeedEpisodes(_spec(4000.0, 6000.0, 1.3), _Costs(3))))
    for cpu in m.cpus:
        seen = {round(cpu.speed_at(t), 6) for t in np.arange(0.0, 100_000.0, 100.0)}
        assert seen == {1.0, 1.3}
        slow = np.mean([cpu.speed_at(t) > 1.0 for t in np.arange(100_000.0, 1_100_000.0, 100.0)])
        assert slow == pytest.approx(0.4, abs=0.01)


# the validation's closed fork loop at RSS 0, pinned, on the shipped AMD profile
LOOP = {"experiment": {"name": "host-speed", "duration": 1e6, "warmup": 1e5, "replications": 1, "seed": 7},
        "machine": {"cpus": 2, "profile": "amd-epyc-zen4-2cpu-linux6.18-kvm-haltpoll"},
        "workload": {"kind": "closed", "parents": 1, "image": {"rss": 0, "vmas": 31},
                     "child": {"clone": "fork", "lifetime": 0.0}, "pin": True}}


def _fork_latency(profile, host_speed: bool = True) -> np.ndarray:
    cfg = copy.deepcopy(LOOP)
    cfg["machine"]["host_speed"] = host_speed
    exp = parse_config(cfg, resolved=True)
    rec = run_experiment(exp, profile=profile, workers=1).replications[0].records
    rec = rec[rec["fork_ret"].notna()]
    return (rec["fork_ret"] - rec["start"]).to_numpy()


def test_episodes_widen_the_forks_tail_and_can_be_turned_off():
    base = load_profile("amd-epyc-zen4-2cpu-linux6.18-kvm-haltpoll")
    none = base.model_copy(update={"host_speed": None})
    slow = base.model_copy(update={"host_speed": _spec(20_000.0, 80_000.0, 1.4)})
    a, b, off = _fork_latency(none), _fork_latency(slow), _fork_latency(slow, host_speed=False)
    assert np.array_equal(a, off)  # machine.host_speed = false: as without the section, draw for draw
    assert np.percentile(b, 90) > 1.15 * np.percentile(a, 90)  # a fifth of the time 1.4x as long
    assert np.median(b) == pytest.approx(np.median(a), rel=0.1)
    assert np.array_equal(b, _fork_latency(slow))  # the same seed, the same episodes
