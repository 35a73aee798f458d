"""The host's drift during a validation run, measured by a canary before each row.

The host under this VM changes speed by tens of percent over minutes (the same pinned 64 MiB fork took
1,361 us in one calibration's held-out run and 1,777 us in the same calibration's cold grid; a full
validation 20 minutes after a calibration found the think rows 30-50% slower than that calibration had
measured them). A row's error then mixes the model's error with the host's drift since the profile was
measured. The canary separates them: before each row the same small, simple load is measured (one pinned
parent forking a 64 MiB image back to back: mostly the page-table copy, the stage the profile fits most
tightly) and compared with the model's prediction of it, simulated once. A row whose error follows its
canary's is the host's drift, not the model's. The canary never corrects a prediction; it is reported
beside it (validation.json rows[].canary, the summary's `canary`, a line in the document).

How cold a gap leaves the image moves with the host on its own: the same full validation's fork think rows
ran 12-21% slower than predicted at 20:26 on 2026-12-04 and 16-60% faster at 23:05 (64 MiB after 10 ms asleep:
1,921 then 981 us, against 870 back to back), while the back-to-back canary stayed within 10%. So the rows
with a gap (think time, a child's life, a co-runner's sweep) get a second canary before them, the same
parent sleeping 10 ms before each fork (COLD_CANARY: rows[].cold_canary, the summary's `cold_canary`).

And how fast a vCPU halted for a think time wakes is the host's too: after 10 ms idle the wake-up falls in one of two
modes (~10-50 us, ~130-220 us), which changes within seconds and now and then holds for minutes. In five full
validations on 2026-12-05 (Intel model 207 host, 17:52-22:43) vfork() after 10 ms think took 63-80 us p50 in three
and 197-212 us in two, the thread's round trip after 10 ms think 78-85 us in two and 213-237 us in three, the two
rows of one run not always in the same mode. So the rows with a think time get a third canary, the wake canary:
cross-CPU futex wake-ups of a vCPU halted WAKE_IDLE_US (calibration's schedbench wake, WAKE_ROUND_TRIPS round trips)
before and after the row, pooled, against the profile's idle wake-up after that idle time (rows[].wake_canary, the
summary's `wake_canary`). Before only, it missed the row's mode: the slow one just before a vfork row that then met
the fast one (2026-12-05 23:16: 154 us, then the row's vfork() 71.9 us p50).
"""

from __future__ import annotations

import statistics
from typing import Any, Callable

from ..errors import MeasurementError
from ..kernel.flags import FORK
from .measure import LoadgenError, measure
from .scenarios import MiB, Scenario

__all__ = ["CANARIES", "CANARY", "COLD_CANARY", "Canary", "WakeCanary", "canary_summary", "WAKE_IDLE_US"]

CANARY = Scenario(name="canary-fork-K1-rss64MiB-pin", mode="closed", kind=FORK, parents=1, rss=64 * MiB, pin=True,
                  duration_s=0.3, quick_duration_s=0.3, warmup_s=0.05, quick_warmup_s=0.05,
                  notes="one pinned parent forking a 64 MiB image back to back: the host's drift")
# 0.5 s at a fork per ~11 ms: about 40 forks, each after 10 ms asleep (the shipped zen4 profile's curve: about three
# quarters of the fully cold extra)
COLD_CANARY = Scenario(name="canary-fork-K1-rss64MiB-think10ms-pin", mode="closed", kind=FORK, parents=1,
                       rss=64 * MiB, pin=True, think_s=0.01, duration_s=0.5, quick_duration_s=0.5, warmup_s=0.05,
                       quick_warmup_s=0.05, notes="the same parent asleep 10 ms before each fork: the host's "
                       "drift in how cold a gap leaves an image")


# each canary's key in a validation row and its name in the progress line and the document
CANARIES = (("canary", "canary"), ("cold_canary", "cold canary"), ("wake_canary", "wake canary"))
# the figure each canary measures: its dict's "measured_<value>" and "predicted_<value>" keys
CANARY_VALUES = {"canary": "fork_p50_us", "cold_canary": "fork_p50_us", "wake_canary": "wake_p50_us"}
WAKE_IDLE_US = 10_000  # the wake canary's idle time (the calibration's longest: jobs.LONG_IDLE_US)
WAKE_ROUND_TRIPS = 8  # two wake-ups each: 16 wake-ups, about 0.2 s at 10 ms


class Canary:
    """Measures a canary scenario (CANARY or COLD_CANARY) on demand; simulates it once (from its first
    measurement's shape)."""

    def __init__(self, simulate: Callable[[dict[str, Any], str | None], dict[str, Any]], profile: str, cpus: int,
                 scenario: Scenario = CANARY):
        self._simulate, self._profile, self._cpus, self.scenario = simulate, profile, cpus, scenario
        self._predicted: float | None = None

    def measure(self) -> dict[str, Any] | None:
        """{"measured_fork_p50_us", "predicted_fork_p50_us", "rel_error"}; None when it cannot run."""
        try:
            measured = measure(self.scenario, quick=True)
        except LoadgenError:
            return None
        meas = float(measured["fork_latency_us"]["p50"])
        if self._predicted is None:
            config = self.scenario.to_config(measured, cpus=self._cpus, quick=True, profile=self._profile,
                                             replications=1)
            self._predicted = float(self._simulate(config, self._profile)["fork_latency_us"]["p50"])
        return {"measured_fork_p50_us": meas, "predicted_fork_p50_us": self._predicted,
                "rel_error": (self._predicted - meas) / meas if meas > 0 else None}


class WakeCanary:
    """Measures the wake canary on demand: the median latency of WAKE_ROUND_TRIPS round trips of cross-CPU futex
    wake-ups after WAKE_IDLE_US of idle (the calibration's schedbench wake), against the profile's idle_wake
    median scaled by its idle_wake_curve there."""

    def __init__(self, profile: str, cpus: int):
        self._profile, self._cpus = profile, cpus
        self._predicted: float | None = None

    def measure(self) -> dict[str, Any] | None:
        """{"measured_wake_p50_us", "predicted_wake_p50_us", "rel_error", "latencies_us"}; None on one CPU or when
        it cannot run."""
        if self._cpus < 2:
            return None
        from ..calibration.bench import build, run_bench

        try:
            argv = [str(build().schedbench), "wake", "-a", "0", "-b", "1", "-n", str(WAKE_ROUND_TRIPS), "-w", "2",
                    "-s", str(WAKE_IDLE_US)]
            _shape, samples, _, _ = run_bench(argv, timeout=30.0)
        except (MeasurementError, OSError):
            return None
        lat = [round(s[k] / 1e3, 3) for s in samples for k in ("lat_ns", "lat_back_ns") if k in s]
        return self._result(lat) if lat else None

    def after(self, before: dict[str, Any] | None) -> dict[str, Any] | None:
        """The canary measured again after the row and pooled with `before` (the mode can change within a row that
        runs for seconds): the median over both runs' wake-ups, each run's own median beside it."""
        if before is None:
            return None
        again = self.measure()
        if again is None:
            return before
        return {**self._result(before["latencies_us"] + again["latencies_us"]),
                "before_p50_us": before["measured_wake_p50_us"], "after_p50_us": again["measured_wake_p50_us"]}

    def _result(self, lat: list[float]) -> dict[str, Any]:
        meas = statistics.median(lat)
        if self._predicted is None:
            self._predicted = predicted_wake_us(self._profile, WAKE_IDLE_US)
        return {"measured_wake_p50_us": meas, "predicted_wake_p50_us": self._predicted,
                "rel_error": (self._predicted - meas) / meas if meas > 0 else None, "latencies_us": lat}


def predicted_wake_us(profile: str, idle_us: float) -> float:
    """The model's median wake-up latency of a CPU halted `idle_us` (IdleWakeCurve.median_us)."""
    from ..profile import load_profile

    sched = load_profile(profile).scheduler
    curve = sched.idle_wake_curve
    return sched.idle_wake.fixed_us if curve is None else curve.median_us(idle_us, sched.idle_wake.fixed_us)


def canary_summary(rows: list[dict[str, Any]], key: str = "canary") -> dict[str, Any] | None:
    """A canary's error over the run (rows[][`key`]): median, min, max, its measured range and how many rows
    had one (the range's keys named by its figure: CANARY_VALUES)."""
    seen = [r[key] for r in rows if (r.get(key) or {}).get("rel_error") is not None]
    if not seen:
        return None
    value = CANARY_VALUES.get(key, "fork_p50_us")
    errs = [c["rel_error"] for c in seen]
    meas = [c[f"measured_{value}"] for c in seen]
    return {"n": len(seen), "rel_error_median": statistics.median(errs), "rel_error_min": min(errs),
            "rel_error_max": max(errs), f"measured_{value}_min": min(meas), f"measured_{value}_max": max(meas),
            f"predicted_{value}": seen[0][f"predicted_{value}"]}
