"""What interrupts a running CPU: the tick, device and IPI interrupts, the host taking the vCPU.

A pinned spin loop (csrc/hiccup.c) records every gap in its clock longer than a threshold. Their
rate and length distribution become the profile's `interruptions`: the model stretches each chunk of
work by the interruptions that land in it, which is where much of a short creation's p99 comes
from (a 45 us fork is hit by a ~24 us interruption about 2% of the time here).
"""

from __future__ import annotations

import subprocess
from typing import Any

import numpy as np

from ..errors import MeasurementError
from .bench import Benchmarks

__all__ = ["measure_interruptions", "THRESHOLD_US"]

# Gaps shorter than this are clock-read jitter and cache misses, already inside every measured
# stage's own median; longer ones are interruptions.
THRESHOLD_US = 5.0


def measure_interruptions(b: Benchmarks, cpu: int, seconds: float = 2.0) -> dict[str, Any]:
    """Spin `seconds` on `cpu`; the profile's `interruptions` section (rate and duration)."""
    try:
        proc = subprocess.run([str(b.hiccup), str(cpu), f"{seconds:g}", f"{THRESHOLD_US:g}"],
                              capture_output=True, text=True, timeout=seconds + 30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MeasurementError(f"the interruption probe failed: {exc}") from None
    if proc.returncode != 0:
        raise MeasurementError(f"the interruption probe failed: {proc.stderr.strip()[-200:]}")
    gaps = np.array([float(line.split()[1]) for line in proc.stdout.splitlines() if line.strip()])
    if len(gaps) < 5:
        return {"rate_per_s": 0.0, "duration": {"fixed_us": 0.0, "residual": {"family": "none"},
                                                "source": f"measured: fewer than 5 gaps over {THRESHOLD_US:g} us"},
                "source": f"measured: {len(gaps)} gaps over {THRESHOLD_US:g} us in {seconds:g} s of a pinned spin"}
    med = float(np.median(gaps))
    ratios = np.quantile(gaps / med, np.linspace(0.0, 1.0, 21))
    return {
        "rate_per_s": round(len(gaps) / seconds, 3),
        "duration": {
            "fixed_us": round(med, 4),
            "residual": {"family": "empirical", "quantiles": [round(float(q), 5) for q in ratios]},
            "source": f"measured: {len(gaps)} gaps over {THRESHOLD_US:g} us in a {seconds:g} s clock-reading spin "
                      f"pinned to CPU {cpu} (p50 {med:.1f} us, p99 {np.percentile(gaps, 99):.1f} us, "
                      f"max {gaps.max():.0f} us)",
        },
        "source": f"measured: interruptions of a pinned spin loop (csrc/hiccup.c) on CPU {cpu}: the 4 ms tick, "
                  f"device and IPI interrupts and host preemption of the vCPU, as seen by a running task",
    }
