"""A cross-check of the load generator (and the model) against stress-ng, where it is installed.

stress-ng's vfork stressor, pinned to one CPU, is the same loop as the load generator's pinned
vfork+_exit+wait: the bogo-ops/s of the one should match the creations/s of the other. (Its fork
stressor does more per bogo-op, so it is not comparable.) Reported beside the model's prediction,
never asserted: it tells a user whether the harness measures what a tool they know measures.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any, Callable

from ..kernel.flags import VFORK
from .measure import LoadgenError, measure
from .scenarios import Scenario

__all__ = ["stress_ng_vfork"]

_BOGO = re.compile(r"vfork\s+(\d+)\s+([\d.]+)\s+[\d.]+\s+[\d.]+\s+([\d.]+)")


def stress_ng_vfork(seconds: float, simulate: Callable[[dict[str, Any], str | None], dict[str, Any]],
                    profile: str) -> dict[str, Any] | None:
    """stress-ng --vfork 1 pinned to CPU 0, the load generator's pinned K=1 vfork, and the model
    (one CPU). None when stress-ng is not installed."""
    exe = shutil.which("stress-ng")
    if exe is None:
        return None
    out: dict[str, Any] = {"seconds": seconds}
    try:
        proc = subprocess.run([exe, "--vfork", "1", "--taskset", "0", "--timeout", f"{seconds:g}s", "--metrics-brief"],
                              capture_output=True, text=True, timeout=seconds + 30)
        m = _BOGO.search(proc.stdout + proc.stderr)
        out["stress_ng_per_s"] = float(m.group(3)) if m else None
    except (OSError, subprocess.TimeoutExpired) as exc:
        out["error"] = f"stress-ng: {exc}"
        return out
    sc = Scenario(name="crosscheck-vfork-K1-pinned", mode="closed", kind=VFORK, parents=1, rss=0, pin=True)
    try:
        measured = measure(sc, quick=True)
        out["loadgen_per_s"] = measured["throughput_per_s"]
        config = sc.to_config(measured, cpus=1, quick=True, profile=profile)
        out["model_per_s"] = simulate(config, profile)["throughput_per_s"]["mean"]
    except (LoadgenError, ValueError, KeyError) as exc:
        out["error"] = str(exc)
    return out
