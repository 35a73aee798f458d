"""Measure a DAMON monitor's rmap walks over a parent's shared anonymous folios (kernel/damon.py's `damon_rmap`).

    python tools/damon_trace.py [--live N] [--seconds S] [--cpu C] [--json]

Runs the validation's load generator (one pinned parent forking back to back, reaping with waitpid(pid))
twice, with no live children and with N (default 10,000) blocked in read(), each under a private tracefs
instance (clock `mono`, the generator's CLOCK_MONOTONIC) recording sched_switch and lock:contention_*.
Over each timed loop it reports kdamond's CPU per second and the waits for a sleeping lock taken for
write (flags=WRITE: the anon_vma root rwsem of anon_vma_clone at fork and unlink_anon_vmas at a child's
exit) by the parent and its children, and derives the section: a walk's length as the median such wait
(a closed loop meets a walk just after it starts and waits it out), per_mapping_us = walk / (N + 1), and
walks_per_s = kdamond's extra CPU per second over the walk's length. Needs root and tracefs; the host's
memory activity moves how often DAMON samples the parent's folios, so take it in the same window as the
rows it is for. Without a kdamond thread it says so and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from forksim.calibration.segments import TRACE_LINE  # noqa: E402
from forksim.calibration.tracefs import TraceInstance  # noqa: E402
from forksim.validation.measure import build_tools  # noqa: E402

_REC = np.dtype([("arr", "<i8"), ("t0", "<i8"), ("t1", "<i8"), ("t2", "<i8"), ("p0", "<i4"), ("p1", "<i4"),
                 ("cc", "<i4"), ("par", "<i4")])
_SWITCH = re.compile(r"prev_comm=(.*?) prev_pid=\d+ .*==> next_comm=(.*?) next_pid=\d+")


def run(live: int, seconds: float, cpu: int) -> dict[str, float]:
    """One traced loop: kdamond's CPU (ms a second) and the loop's write waits over the timed part."""
    with tempfile.TemporaryDirectory() as tmp, \
            TraceInstance(("sched/sched_switch", "lock/contention_begin", "lock/contention_end"),
                          buffer_kb=65536, name="forksim-damon", optional=False, clock="mono") as ti:
        ti.start()
        out = Path(tmp) / "lg"
        subprocess.run([str(build_tools().loadgen), "--out", str(out), "--mode", "closed", "--kind", "fork",
                        "--duration", str(seconds), "--warmup", "0.2", "--pin", "--live-children", str(live)],
                       check=True, capture_output=True, timeout=600)
        ti.stop()
        rec = np.fromfile(f"{out}.rec", dtype=_REC)
        text = (ti.dir / "trace").read_text()
    a, b = rec["t0"].min() / 1e3, rec["t2"].max() / 1e3
    kd, on, waits, open_ = 0.0, {}, [], {}
    for line in text.splitlines():
        m = TRACE_LINE.match(line)
        if m is None:
            continue
        us = float(m["ts"]) * 1e6
        if not a <= us <= b:
            continue
        name, rest, c, pid = m["event"], m["rest"], int(m["cpu"]), int(m["pid"])
        if name == "sched_switch" and (s := _SWITCH.search(rest)):
            if s[1].startswith("kdamond") and c in on:
                kd += us - on.pop(c)
            if s[2].startswith("kdamond"):
                on[c] = us
        elif name == "contention_begin" and rest.endswith("(flags=WRITE)") and m["comm"].strip() in ("loadgen", "<...>"):
            open_[pid] = us
        elif name == "contention_end" and pid in open_:
            waits.append(us - open_.pop(pid))
    span_s = (b - a) / 1e6
    return {"live": live, "creations_per_s": len(rec) / span_s, "kdamond_ms_per_s": kd / 1e3 / span_s,
            "write_waits_per_s": len(waits) / span_s, "wait_p50_us": float(np.median(waits)) if waits else 0.0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--live", type=int, default=10000)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--cpu", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not any(p.read_text().startswith("kdamond") for p in Path("/proc").glob("[0-9]*/comm") if p.exists()):
        print("no kdamond thread on this host: no DAMON monitor to measure")
        return 0
    base, loaded = run(0, args.seconds, args.cpu), run(args.live, args.seconds, args.cpu)
    walk = loaded["wait_p50_us"]
    extra = max(0.0, loaded["kdamond_ms_per_s"] - base["kdamond_ms_per_s"]) * 1e3  # us a second
    section = None
    if walk > 0.0 and extra > 0.0:
        section = {"per_mapping_us": round(walk / (args.live + 1), 4), "walks_per_s": round(extra / walk, 3),
                   "source": (f"measured: tools/damon_trace.py, a pinned fork loop with {args.live} live children against "
                              f"none ({args.seconds:g} s each): kdamond {loaded['kdamond_ms_per_s']:.0f} vs "
                              f"{base['kdamond_ms_per_s']:.0f} ms CPU a second, anon_vma write waits "
                              f"{loaded['write_waits_per_s']:.1f}/s with median {walk / 1e3:.1f} ms (a walk's length)")}
    if args.json:
        print(json.dumps({"runs": [base, loaded], "damon_rmap": section}, indent=1))
    else:
        for r in (base, loaded):
            print(f"live {r['live']:>6}: {r['creations_per_s']:7.0f} creations/s, kdamond {r['kdamond_ms_per_s']:6.1f} ms/s, "
                  f"write waits {r['write_waits_per_s']:5.1f}/s, median {r['wait_p50_us'] / 1e3:6.1f} ms")
        print("damon_rmap:", json.dumps(section))
    return 0


if __name__ == "__main__":
    sys.exit(main())
