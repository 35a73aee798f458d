"""Calibration: measure this machine's kernel and write a forksim profile.

`calibrate(out, quick=False, progress=True)` builds the C microbenchmarks in `csrc/` with the system
compiler, measures (with tracepoints when root and tracefs allow), fits every stage cost and writes
the profile atomically; `refit(raw, out)` redoes the fits from its raw samples. `list_profiles()` lists
the shipped profiles. `build_published()` writes the profile built from published per-GB fork
figures. The simulator core never imports this package.

Measuring: `calibrate` (the entry point), `plan` (what each plan measures, the Store of raw samples),
`jobs` (the runs in order), `bench` (building and running the benchmarks), `tracefs` (the tracefs
instance) and `segments` (per-fork segments cut from its events), `warmth`, `copies`, `busy`,
`interruptions` (their own runs). Fitting: `derive.build_profile` assembles the per-family fitters,
each returning typed stage costs (`forksim.profile.StageCost`): `fork_path` (fork() against the image,
the split of its fixed part, threads, the stack cache), `lifetime` (child start, exec, exit and reap,
COW and page faults), `scheduling` (scheduler costs, placement, do_exit's head share), `warmth`
(cold forks), `copies` (fds, clone flags, live children); `samples` reads the raw samples, `fit` holds
the linear fits. The compiler, build cache, machine facts and process-group kill are `forksim.lab`'s,
shared with validation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .calibrate import PLANS, calibrate, machine_facts, refit
from .published import build_published

__all__ = ["calibrate", "refit", "list_profiles", "build_published", "machine_facts", "PLANS"]


def list_profiles() -> list[dict[str, Any]]:
    """The shipped profiles: name, path, description, kernel and date of each (unreadable ones say so)."""
    from ..profile import shipped_profiles

    out = []
    for name, path in shipped_profiles().items():
        row: dict[str, Any] = {"name": name, "path": str(path)}
        try:
            data = json.loads(Path(path).read_text())
            prov = data.get("provenance", {})
            row.update(description=data.get("description", ""), kernel=prov.get("kernel"), date=prov.get("date"),
                       tracefs=prov.get("tracefs"))
        except (OSError, ValueError) as exc:
            row["error"] = f"unreadable: {exc.__class__.__name__}"
        out.append(row)
    return out
