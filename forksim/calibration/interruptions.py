"""What interrupts a running CPU: the tick, device and IPI interrupts, the host taking the vCPU.

A pinned spin loop (csrc/hiccup.c) records every gap in its clock longer than a threshold, and
whether the spin was context-switched during it. Their rate and length distribution become the
profile's `interruptions`: the model stretches each chunk of work by the interruptions that land in
it, which is where much of a short creation's p99 comes from (a 45 us fork is hit by a ~24 us
interruption about 2% of the time here).

What makes it robust to a shared or briefly noisy machine:
- a gap with a context switch is another task of this guest running on the CPU (milliseconds when
  other work shares it): the guest's own scheduling, which the model simulates, not an interruption;
  such gaps are counted in the provenance and left out;
- the probe runs in several windows, alternating over the CPUs; the rate is the median window's, so
  one window of host noise (another tenant's burst) does not set it;
- the duration quantiles are kept densely in the tail (up to p99.9 and the maximum), so that a single
  long gap is drawn about as often as it was seen, not for the whole top 5%.

Under fork load (2026-12-02, this machine kind, a spin after each reap of a pinned fork loop, gaps
split by the thread's CPU clock into steal and guest time and traced for guest events): the forking CPU
saw gaps with no guest event at about 1,200/s (p50 26 us, not steal: the host took the vCPU without
descheduling it), about this idle probe's own rate (1,258/s in that day's profile), so the probe stands
for them; host preemption (steal) stayed rare (a few per second) and gaps over 50 us hit both vCPUs
at once in under half the cases. What the load adds is its own work: the RCU callbacks of the exited
children, in softirq (rcu.py, the profile's `rcu_callbacks`), which an idle CPU never runs.
"""

from __future__ import annotations

import subprocess
from typing import Any, Sequence

import numpy as np

from ..errors import MeasurementError
from .bench import Benchmarks
from .samples import PROBABILITIES, tail_residual

__all__ = ["measure_interruptions", "fit_interruptions", "THRESHOLD_US", "PROBABILITIES"]

# Gaps shorter than this are clock-read jitter and cache misses, already inside every measured
# stage's own median; longer ones are interruptions.
THRESHOLD_US = 5.0
WINDOWS = 4


def _probe(b: Benchmarks, cpu: int, seconds: float) -> np.ndarray:
    """One window: rows of (start us, gap us, context switches during it)."""
    try:
        proc = subprocess.run([str(b.hiccup), str(cpu), f"{seconds:g}", f"{THRESHOLD_US:g}"],
                              capture_output=True, text=True, timeout=seconds + 30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MeasurementError(f"the interruption probe failed: {exc}") from None
    if proc.returncode != 0:
        raise MeasurementError(f"the interruption probe failed: {proc.stderr.strip()[-200:]}")
    return np.array([[float(x) for x in line.split()] for line in proc.stdout.splitlines() if line.strip()]).reshape(-1, 3)


def measure_interruptions(b: Benchmarks, cpus: Sequence[int], seconds: float = 2.0) -> dict[str, Any]:
    """Spin `seconds` in all, in WINDOWS windows alternating over `cpus`; the profile's
    `interruptions` section (rate and duration)."""
    windows = [(cpus[i % len(cpus)], _probe(b, cpus[i % len(cpus)], seconds / WINDOWS)) for i in range(WINDOWS)]
    return fit_interruptions(windows, seconds / WINDOWS)


def fit_interruptions(windows: list[tuple[int, np.ndarray]], window_s: float) -> dict[str, Any]:
    """The `interruptions` section from probe windows, each (cpu, rows of start, gap, switches)."""
    own = [rows[rows[:, 2] == 0, 1] for _, rows in windows]
    switched = np.concatenate([rows[rows[:, 2] > 0, 1] for _, rows in windows])
    rates = [len(g) / window_s for g in own]
    gaps = np.concatenate(own)
    cpus = sorted({c for c, _ in windows})
    where = (f"{len(windows)} windows of {window_s:g} s of a clock-reading spin (csrc/hiccup.c) alternating over "
             f"CPUs {', '.join(map(str, cpus))}")
    left_out = (f"; left out: {len(switched)} gaps with a context switch (another task of this guest ran: "
                f"{switched.sum() / 1e3:.1f} ms in all, max {switched.max():.0f} us)" if len(switched) else "")
    if len(gaps) < 5:
        return {"rate_per_s": 0.0, "duration": {"fixed_us": 0.0, "residual": {"family": "none"},
                                                "source": f"measured: fewer than 5 gaps over {THRESHOLD_US:g} us"},
                "source": f"measured: {len(gaps)} gaps over {THRESHOLD_US:g} us in {where}{left_out}"}
    med = float(np.median(gaps))
    return {
        "rate_per_s": round(float(np.median(rates)), 3),
        "duration": {
            "fixed_us": round(med, 4),
            "residual": tail_residual(gaps / med),
            "source": f"measured: {len(gaps)} gaps over {THRESHOLD_US:g} us without a context switch in {where} "
                      f"(p50 {med:.1f} us, p99 {np.percentile(gaps, 99):.1f} us, max {gaps.max():.0f} us)",
        },
        "source": f"measured: interruptions of a running task (the 4 ms tick, device and IPI interrupts, the host "
                  f"taking the vCPU) in {where}; rate: the median window's (windows: "
                  f"{', '.join(f'{r:.0f}' for r in rates)} /s){left_out}",
    }
