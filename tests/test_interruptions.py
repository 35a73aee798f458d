"""The interruption probe's fit (calibration/interruptions.py) and the tail-dense empirical residual."""

import numpy as np
import pytest
from pydantic import ValidationError

from forksim.calibration.interruptions import PROBABILITIES, fit_interruptions
from forksim.profile import Profile, Residual, load_profile


def _window(gaps_us, switched_us=(), cpu=0):
    rows = [(i * 100.0, g, 0) for i, g in enumerate(gaps_us)] + [(1e5 + i, g, 1) for i, g in enumerate(switched_us)]
    return cpu, np.array(rows, dtype=float).reshape(-1, 3)


def test_gaps_with_a_context_switch_are_left_out():
    quiet = [20.0] * 100
    sec = fit_interruptions([_window(quiet, switched_us=[4000.0] * 5)], 1.0)
    assert sec["rate_per_s"] == 100.0
    assert sec["duration"]["fixed_us"] == 20.0
    assert max(sec["duration"]["residual"]["quantiles"]) == 1.0  # the 4 ms gaps are not in the shape
    assert "left out: 5 gaps with a context switch" in sec["source"]


def test_rate_is_the_median_window_so_one_noisy_window_does_not_set_it():
    rng = np.random.default_rng(1)
    windows = [_window(rng.uniform(10, 40, n), cpu=i % 2) for i, n in enumerate((300, 320, 310, 3000))]
    sec = fit_interruptions(windows, 1.0)
    assert 300 <= sec["rate_per_s"] <= 320  # the 3000/s window does not move it beyond its neighbours
    assert "CPUs 0, 1" in sec["source"]


def test_single_extreme_gap_is_drawn_about_as_often_as_measured():
    gaps = [20.0] * 999 + [4000.0]
    res = Residual(**fit_interruptions([_window(gaps)], 1.0)["duration"]["residual"])
    draws = res.draw(np.random.default_rng(2), 200_000) * 20.0
    assert (draws > 1000).mean() < 0.002  # measured 0.1%; the old 21-point grid drew it 2.5% of the time
    assert res.mean() == pytest.approx(np.mean(res.draw(np.random.default_rng(3), 400_000)), rel=0.02)


def test_too_few_gaps_gives_no_interruptions():
    sec = fit_interruptions([_window([30.0, 40.0])], 0.5)
    assert sec["rate_per_s"] == 0.0 and sec["duration"]["residual"]["family"] == "none"


def test_uniform_grid_mean_and_bad_probabilities_refused():
    q = [0.5, 0.8, 1.0, 1.5, 3.0]
    assert Residual(family="empirical", quantiles=q).mean() == pytest.approx(np.mean([(a + b) / 2 for a, b in zip(q, q[1:])]))
    for bad in ([0.0, 0.5, 1.0], [0.0, 0.3, 0.3, 0.9, 1.0], [0.1, 0.2, 0.5, 0.9, 1.0]):
        with pytest.raises(ValidationError, match="probabilities"):
            Residual(family="empirical", quantiles=q, probabilities=bad)
    with pytest.raises(ValidationError, match="empirical"):
        Residual(family="lognormal", sigma=0.1, probabilities=[0.0, 1.0])


def test_probe_section_loads_into_a_profile():
    sec = fit_interruptions([_window(np.linspace(10, 80, 400))], 1.0)
    raw = load_profile("default").model_dump(mode="json")
    raw["interruptions"] = sec
    assert raw["interruptions"]["duration"]["residual"]["probabilities"] == list(PROBABILITIES)
    assert Profile.model_validate(raw).interruptions.rate_per_s == 400.0


# ------------------------------------------------------------------ a halted vCPU's wake-up by idle time


def test_idle_wake_curve_interpolates_in_log_idle_and_holds_its_ends():
    from forksim.profile import IdleWakeCurve

    c = IdleWakeCurve(idle_us=[10.0, 1000.0], scale=[0.4, 1.2], source="test")
    assert c.at(1.0) == pytest.approx(0.4) and c.at(1e6) == pytest.approx(1.2)
    assert c.at(100.0) == pytest.approx(0.8)  # halfway in log(idle)
    for bad in ({"idle_us": [10.0], "scale": [1.0]}, {"idle_us": [10.0, 5.0], "scale": [1.0, 1.0]},
                {"idle_us": [10.0, 50.0], "scale": [1.0, 0.0]}, {"idle_us": [10.0, 50.0], "scale": [1.0]}):
        with pytest.raises(ValidationError):
            IdleWakeCurve(source="test", **bad)


def test_idle_wake_curve_fitted_from_the_spin_runs():
    from forksim.calibration.scheduling import _idle_wake_curve

    def run(spin, lat_us):
        key = {"mode": "wake", "a": 0, "b": 1, **({"spin": spin} if spin != 200 else {})}
        return {"key": key, "samples": [{"lat_ns": lat_us * 1e3, "lat_back_ns": lat_us * 1e3}] * 10}

    c = _idle_wake_curve([run(10, 9.0), run(200, 18.0), run(1000, 27.0)], 18.0)
    assert c["idle_us"] == [10.0, 200.0, 1000.0] and c["scale"] == [0.5, 1.0, 1.5]
    assert _idle_wake_curve([run(200, 18.0)], 18.0) is None  # the reference alone: no curve


def test_the_same_cpu_wake_reference_leaves_out_the_calls_that_switched_to_the_wakee():
    """The same-CPU wake's call is bimodal: under a microsecond, or ~22 us where the wakee preempted the waker before
    the call returned (3 of 7 quick calibrations on 2026-12-03 had that as their p50, and the IPI cost came out 0).
    The reference is the p50 of the calls that did not switch; too few of them: none."""
    from forksim.calibration.scheduling import _local_wake_call

    assert _local_wake_call([0.2] * 40 + [22.0] * 60) == pytest.approx(0.2)  # p50 over all would be 22
    assert _local_wake_call([0.15, 0.25] * 20) == pytest.approx(0.2)
    assert _local_wake_call([22.0] * 100 + [0.2] * 5) is None


def test_idle_wake_curve_keeps_each_idle_times_shape():
    """The wake-up latency after each idle time: its median over the 200 us run's (scale) and its own shape, so a
    stall the host adds after long idle times stays there."""
    from forksim.calibration.scheduling import _idle_wake_curve
    from forksim.profile import IdleWakeCurve

    def run(spin, lat_us):
        key = {"mode": "wake", "a": 0, "b": 1, **({"spin": spin} if spin != 200 else {})}
        return {"key": key, "samples": [{"lat_ns": v * 1e3, "lat_back_ns": v * 1e3} for v in lat_us]}

    stalled = [140.0] * 60 + [20.0] * 38 + [600.0] * 2 + [5000.0] * 5  # over 1 ms: the other CPU was busy, dropped
    c = IdleWakeCurve.model_validate(_idle_wake_curve([run(10, [4.5] * 50), run(200, [10.0] * 50), run(1000, stalled)],
                                                      10.0))
    assert c.idle_us == [10.0, 200.0, 1000.0] and c.scale == pytest.approx([0.45, 1.0, 14.0])
    assert c.residuals[0].quantiles[-1] == pytest.approx(1.0)
    assert c.residuals[2].quantiles[0] == pytest.approx(20.0 / 140.0, abs=1e-5)
    assert c.residuals[2].quantiles[-1] == pytest.approx(600.0 / 140.0, abs=1e-5)


def test_ipi_send_curve_keeps_each_idle_times_distribution_and_picks_the_nearest_in_log():
    from forksim.calibration.scheduling import _ipi_send_curve
    from forksim.profile import IpiSendCurve

    def run(spin, calls_us):
        key = {"mode": "wake", "a": 0, "b": 1, **({"spin": spin} if spin != 200 else {})}
        return {"key": key, "samples": [{"call_ns": c * 1e3, "call_back_ns": c * 1e3} for c in calls_us]}

    stalled = [6.0] * 97 + [250.0] * 3  # the host's stall after 200 us idle: 3% of the calls
    c = _ipi_send_curve([run(10, [3.0] * 50), run(200, stalled), run(1000, [8.0] * 50)], 1.0)
    curve = IpiSendCurve.model_validate(c)
    assert curve.idle_us == [10.0, 200.0, 1000.0]
    assert [x.fixed_us for x in curve.costs] == [2.0, 5.0, 7.0]  # minus the same-CPU wake (1 us)
    tail = curve.costs[1].residual
    assert tail.quantiles[-1] == pytest.approx(249.0 / 5.0)
    stalls = (tail.draw(np.random.default_rng(1), 100_000) > 10.0).mean()
    assert 0.01 < stalls < 0.03  # about as often as measured (tail-dense probabilities)
    assert curve.costs[0].residual.quantiles[-1] == pytest.approx(1.0)
    pick = curve.nearest()
    assert [pick(x) for x in (1.0, 44.0, 45.0, 400.0, 500.0, 1e6)] == [0, 0, 1, 1, 2, 2]  # cuts at sqrt(a*b)
    assert _ipi_send_curve([run(200, stalled)], 1.0) is None
    with pytest.raises(ValidationError):
        IpiSendCurve(idle_us=[200.0, 10.0], costs=curve.costs[:2], source="test")


def test_the_quick_plan_wakes_a_vcpu_idle_10_ms_in_about_half_a_second():
    """The idle wake-up runs reach 10 ms of idle (a think time's or a gap's), with as few round trips there as
    still give the curve its point (10 wake-ups, two a round trip) and keep the quick plan's step near 0.5 s,
    warm-ups included; the shorter idle times keep a quarter of the scheduler repetitions."""
    from forksim.calibration.jobs import IDLE_SPINS_US, IDLE_WAKE_PARTS, LONG_IDLE_US, LONG_IDLE_WARM, _idle_reps
    from forksim.calibration.plan import PLANS

    assert max(IDLE_SPINS_US) == LONG_IDLE_US >= 10_000
    for name in ("quick", "full", "smoke"):
        r = PLANS[name].sched_reps
        part = -(-_idle_reps(r, LONG_IDLE_US) // IDLE_WAKE_PARTS)
        assert 2 * part * IDLE_WAKE_PARTS >= 10
        long_s = IDLE_WAKE_PARTS * 2 * (part + LONG_IDLE_WARM) * LONG_IDLE_US / 1e6
        assert long_s <= (0.7 if name != "full" else 1.5), (name, long_s)
    assert _idle_reps(PLANS["quick"].sched_reps, 1000) == PLANS["quick"].sched_reps // 4


def test_the_1_and_10_ms_idle_wake_ups_are_measured_in_parts_apart_in_the_calibration():
    """The host's wake-up mode after 1 and 10 ms of idle changes within seconds: the calibration measures each in
    IDLE_WAKE_PARTS runs, the first before the untraced runs (here, without tracefs, the first of all), one just
    before the cold grid, the last with the scheduler's costs."""
    from pathlib import Path

    from forksim.calibration.bench import Benchmarks
    from forksim.calibration.jobs import IDLE_SPINS_US, IDLE_WAKE_PARTS, PARTED_IDLE_US, calibration_jobs
    from forksim.calibration.plan import PLANS, Store

    b = Benchmarks(*(Path("/nonexistent"),) * 3, False, "cc", Path("/nonexistent"), Path("/nonexistent"))
    names = [name for name, _ in calibration_jobs(PLANS["quick"], b, Store(), None, 0, 1)]
    cold = next(i for i, n in enumerate(names) if n.startswith("cold forks"))  # the cold grid's first run
    last = names.index("idle wake-up after 150 us idle") + 1  # the shorter idle times' runs come first
    for k, spin in enumerate(PARTED_IDLE_US):  # 1 ms and 10 ms: their slow mode's share flips too
        parts = [i for i, n in enumerate(names) if n.startswith(f"idle wake-up after {spin} us")]
        assert [names[i].endswith(f"(part {p + 1} of {IDLE_WAKE_PARTS})") for p, i in enumerate(parts)] == [True] * 3
        n = len(PARTED_IDLE_US)
        assert parts == [k, *range(cold - n * (IDLE_WAKE_PARTS - 2) + k, cold, n), last + k]
    # every idle time is measured, the parted ones in parts only
    once = [s for s in IDLE_SPINS_US if s not in PARTED_IDLE_US]
    assert all(names.count(f"idle wake-up after {s} us idle") == 1 for s in once)
