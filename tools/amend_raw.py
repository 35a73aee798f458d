"""Append to an older full calibration's raw file the runs the plan gained on 2026-12-05, measured now on the CPU
that calibration pinned to: the vfork and thread sparse room loops (room_loops.SPARSE_LOOP) and the families' traced
pairs (cold_families.family_traced_jobs, the full plan's rounds). The raw file's notes say when; `python -m
forksim.calibration --refit RAW` then fits them with the rest. For the same host and VM boot only (its uptime).

    python tools/amend_raw.py calibration/data/amd-epyc-zen4-haltpoll-full.raw.json.gz
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import sys

from forksim.calibration import bench, room_loops, tracefs
from forksim.calibration.cold_families import family_traced_jobs
from forksim.calibration.plan import PLANS, Store


def main(path: str) -> None:
    with gzip.open(path, "rt") as f:
        raw = json.load(f)
    cpu = raw["provenance"]["measured_cpu"]
    b = bench.build()
    store = Store()
    trace = room_loops._room_trace().open()
    try:
        for family in ("vfork", "thread"):
            rss, think_s, seconds = room_loops.SPARSE_LOOP[family]
            room_loops.measure_loop(trace, store, family, seconds, print, rss, think_s)
    finally:
        trace.close()
    trace = tracefs.TraceInstance().open()
    try:
        for what, job in family_traced_jobs(PLANS["full"], str(b.forkbench), ["-x", str(b.helper)], store, cpu, trace):
            job()
            print(what, flush=True)
    finally:
        trace.close()
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    raw["runs"] += store.runs
    raw["notes"].append(f"amended {when} (same host, same VM boot as the calibration): {len(store.runs)} runs of the "
                        f"plan's later steps (the vfork and thread sparse room loops; the families' traced pairs, "
                        f"before_wakeup), appended by tools/amend_raw.py")
    with gzip.open(path, "wt") as f:
        json.dump(raw, f)
    print(f"appended {len(store.runs)} runs to {path}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
