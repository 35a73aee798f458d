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
"""

from __future__ import annotations

import statistics
from typing import Any, Callable

from ..kernel.flags import FORK
from .measure import LoadgenError, measure
from .scenarios import MiB, Scenario

__all__ = ["CANARIES", "CANARY", "COLD_CANARY", "Canary", "canary_summary"]

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
CANARIES = (("canary", "canary"), ("cold_canary", "cold canary"))


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


def canary_summary(rows: list[dict[str, Any]], key: str = "canary") -> dict[str, Any] | None:
    """A canary's error over the run (rows[][`key`]): median, min, max, its measured range and how many rows
    had one."""
    seen = [r[key] for r in rows if (r.get(key) or {}).get("rel_error") is not None]
    if not seen:
        return None
    errs = [c["rel_error"] for c in seen]
    meas = [c["measured_fork_p50_us"] for c in seen]
    return {"n": len(seen), "rel_error_median": statistics.median(errs), "rel_error_min": min(errs),
            "rel_error_max": max(errs), "measured_fork_p50_us_min": min(meas), "measured_fork_p50_us_max": max(meas),
            "predicted_fork_p50_us": seen[0]["predicted_fork_p50_us"]}
