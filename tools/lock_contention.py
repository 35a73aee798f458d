#!/usr/bin/env python3
"""Which kernel locks concurrent forkers wait on, and how long, as the number of parents grows.

    python tools/lock_contention.py OUT.json [--parents 1,2,4,8,16] [--rss 0] [--seconds 1] [--unpinned]

For each K, the validation's load generator runs K closed-loop fork parents (each pinned to its own CPU
unless --unpinned, children with it, RSS as given) while a private tracefs instance records the load's
lock:contention_begin / contention_end events (kernel/locking: every spinlock, rwlock and mutex wait that
did not get the lock at once; the waiting task is the event's pid). Each begin/end pair on one task is a
wait. Waits are summed per lock: the event's lock_addr (hashed by the kernel's %p, stable within a boot;
this kernel's kallsyms has no data symbols to name it) and its flags (SPIN, READ, WRITE, MUTEX: a fork
and exit loop's READ/WRITE rwlock is tasklist_lock, the only rwlock on that path).

Prints, per K, the forks per second, fork() p50, and each lock's waits per fork and wait time per fork
(us); OUT.json keeps everything. Root and tracefs with the lock events are needed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from forksim.calibration.busy import load_pids, traced_loadgen
from forksim.validation.measure import build_tools

EVENTS = ("lock/contention_begin", "lock/contention_end", "sched/sched_process_fork")


def run(parents: int, rss: int, seconds: float, pin: bool) -> dict:
    tools = build_tools()
    args = ["--mode", "closed", "--kind", "fork", "--parents", str(parents), "--rss", str(rss),
            "--duration", f"{seconds:g}", "--warmup", "0.3", "--helper", str(tools.helper)] + (["--pin"] if pin else [])
    summary, events, recs, master, lost = traced_loadgen(tools.loadgen, args, EVENTS, 131072)
    ours = load_pids(events, master)
    t0, t1 = float(summary["t_warm_ns"]), float(summary["t_end_ns"])
    open_wait: dict[int, tuple[float, str, str]] = {}
    waits: dict[str, list[float]] = defaultdict(list)
    for e in events:
        if e.pid not in ours:
            continue
        if e.name == "contention_begin":
            open_wait[e.pid] = (e.ts, e.f.get("lock_addr", "?"), e.f.get("flags", "?"))
        elif e.name == "contention_end" and e.pid in open_wait:
            ts, addr, flags = open_wait.pop(e.pid)
            if t0 <= ts <= t1:
                waits[f"{addr} {flags}"].append((e.ts - ts) / 1e3)
    forks = len(recs)
    fork_us = (recs["t1"] - recs["t0"]) / 1e3
    locks = {k: {"waits": len(v), "waits_per_fork": len(v) / max(forks, 1), "us_per_fork": sum(v) / max(forks, 1),
                 "wait_p50_us": float(np.median(v)), "wait_p99_us": float(np.percentile(v, 99))}
             for k, v in sorted(waits.items(), key=lambda kv: -sum(kv[1]))}
    return {"parents": parents, "rss": rss, "pinned": pin, "seconds": seconds, "forks": forks,
            "forks_per_s": forks / seconds, "fork_p50_us": float(np.median(fork_us)) if forks else None,
            "lost_events": lost, "locks": locks}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--parents", default="1,2,4,8,16")
    ap.add_argument("--rss", type=int, default=0, help="bytes")
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--unpinned", action="store_true")
    args = ap.parse_args(argv)
    res = []
    for k in (int(x) for x in args.parents.split(",")):
        r = run(k, args.rss, args.seconds, not args.unpinned)
        res.append(r)
        args.out.write_text(json.dumps(res, indent=1))
        print(f"K{k:<3d} {r['forks_per_s']:9,.0f} forks/s  fork p50 {r['fork_p50_us'] or 0:7.1f} us  "
              f"lost {r['lost_events']}", flush=True)
        for name, lk in list(r["locks"].items())[:5]:
            print(f"      {name:40s} {lk['waits_per_fork']:6.3f} waits/fork  {lk['us_per_fork']:7.2f} us/fork  "
                  f"wait p50 {lk['wait_p50_us']:6.2f} p99 {lk['wait_p99_us']:7.2f} us", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
