"""Fit the placement room rule (profile.placement_room) from tracefs texts of tight unpinned creation loops:
tools/vfork_trace.py's or tools/place_trace.py's trace.txt (every CPU's sched_switch, sched_waking and
sched_wakeup_new), or record them here with the validation's load generator as `forksim calibrate` does
(forksim.calibration.room_loops).

    python tools/place_rule.py vfork=/tmp/forksim-vfork-trace/trace.txt thread=PATH ... [--json OUT]
    python tools/place_rule.py --record [--duration S] [--json OUT]     # needs root and tracefs

Prints the section, and per family the local share by the parent CPU's awake time and the idle CPU's idle time.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

import loadgen_trace  # tools/loadgen_trace.py beside this script
from loadgen_trace import KV

from forksim.calibration.room import fit_room, fit_wake_away, trace_points

AWAKE_BINS = [0, 10, 15, 20, 25, 30, 60, 500, 1e9]
IDLE_BINS = [0, 25, 50, 100, 200, 500, 1000, 1e9]


def events(path: Path) -> list:
    out = [(ts, cpu, pid, ev, dict(KV.findall(rest.replace(" ==> ", " "))))
           for ts, cpu, pid, ev, rest in loadgen_trace.lines(path)]
    out.sort(key=lambda e: e[0])
    return out


def table(place: list) -> dict:
    """Local share (and count) by awake-time bin x idle-time bin."""
    d = pd.DataFrame(place, columns=["family", "awake_us", "idle_us", "local"])
    g = d.groupby([pd.cut(d.awake_us, AWAKE_BINS), pd.cut(d.idle_us, IDLE_BINS)], observed=True).local
    return {f"awake {a} idle {i}": {"local": round(float(v.mean()), 3), "n": int(v.size)} for (a, i), v in g}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("traces", nargs="*", help="FAMILY=PATH (family: fork, vfork, spawn, thread)")
    ap.add_argument("--record", action="store_true", help="record the four loops now (root, tracefs)")
    ap.add_argument("--duration", type=float, default=0.3)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    place, wakes, out = [], {}, {}
    if a.record:
        from forksim.calibration.plan import Store
        from forksim.calibration.room_loops import measure_room, room_section

        store = Store()
        measure_room(store, a.duration, print)
        out["section"] = room_section(store)
        for r in store.runs:
            p = [(r["key"]["family"], x["awake_us"], x["idle_us"], x["local"]) for x in r["samples"]]
            out.setdefault("by_family", {})[r["key"]["family"]] = {"placements": len(p), "table": table(p)} if p else {}
        out["runs"] = store.runs
    else:
        for spec in a.traces:
            fam, _, path = spec.partition("=")
            p, w = trace_points(events(Path(path)), fam)
            out.setdefault("by_family", {})[fam] = {"placements": len(p), "wait_wakeups": len(w), "table": table(p)}
            place += p
            wakes[fam] = w
        what = "tools/place_rule.py over " + ", ".join(a.traces)
        sec = fit_room(place, what)
        away = {f: c for f, w in wakes.items() if (c := fit_wake_away(w, what)) is not None}
        if sec is not None and away:
            sec["wake_away"] = away
        out["section"] = sec
    text = json.dumps(out, indent=1, default=lambda x: x.item() if isinstance(x, np.generic) else str(x))
    print(text)
    if a.json:
        a.json.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
