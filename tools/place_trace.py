"""Trace where wake_up_new_task puts a new child or thread, unpinned, and what the hand-offs around it cost:
the validation's closed loop (the real load generator, one parent) under a tracefs instance of its own.

    python tools/place_trace.py --kind thread [--rss BYTES] [--duration S] [--json OUT]
    python tools/place_trace.py --parse TRACE.txt

Per creation (a sched_wakeup_new emitted by the parent; the line's CPU is the parent's): the child's CPU
(target_cpu) against the other CPU's state at that moment (idle and for how long since its last switch to
the idle task, or running a task: the parent's own earlier child, or a foreign one); the child's first run
after the wake-up (wake -> sched_switch in, on which CPU); the parent's next wake-up (sched_waking of the
parent: the vfork child's exec or exit, the child's exit for wait4, the thread's exit for pthread_join):
from which CPU, whether the parent's CPU was idle, and how long until the parent ran. The tracepoints:
sched_switch, sched_waking, sched_wakeup_new, sched_process_exit, sched_process_exec and sched_migrate_task
(an exec'ing child migrated before sched_process_exec: sched_exec moved it); no syscalls: they slow short loops.
The figures back the shipped profile's placement.thread_local_when_idle, spawn_local_when_idle and
exec_moves_when_idle (calibration/data/place-trace-20261202.json); `forksim calibrate` measures the same shares
on forkbench's loops (forksim.calibration.scheduling.fit_placement).
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import numpy as np
import pandas as pd

import loadgen_trace  # tools/loadgen_trace.py beside this script
from loadgen_trace import KV

T = Path("/sys/kernel/tracing/instances/forksim-place")
EVENTS = ("sched/sched_switch", "sched/sched_waking", "sched/sched_wakeup_new", "sched/sched_process_exit",
          "sched/sched_process_exec", "sched/sched_migrate_task")
IDLE_BINS = [0, 25, 100, 500, 1e9]


def record(loadgen_args: list[str], out: Path) -> Path:
    """Run the load generator with the tracepoints on; returns the trace text's path."""
    return loadgen_trace.record(T, EVENTS, loadgen_args, out)


def events(path: Path) -> list[tuple[float, int, int, str, dict[str, str]]]:
    out = [(ts, cpu, pid, ev, dict(KV.findall(rest.replace(" ==> ", " "))))
           for ts, cpu, pid, ev, rest in loadgen_trace.lines(path)]
    out.sort(key=lambda e: e[0])
    return out


def creations(evs: list) -> pd.DataFrame:
    """One row per creation of the loop's parent (the pid that emits the most sched_wakeup_new)."""
    P = collections.Counter(p for _t, _c, p, e, _d in evs if e == "sched_wakeup_new").most_common(1)[0][0]
    cur: dict[int, int] = {}
    since: dict[int, float] = {}
    kids: set[int] = set()
    rows: list[dict] = []
    it: dict | None = None
    p_last = -1
    for t, c, p, e, d in evs:
        if e == "sched_switch":
            nxt = int(d["next_pid"])
            if it is not None:
                if nxt == it["C"] and "c_in" not in it:
                    it["c_in"], it["c_cpu"] = t, c
                if nxt == P and "w" in it and "p_in" not in it:
                    it["p_in"], it["p_cpu"] = t, c
            if int(d["prev_pid"]) == P:
                p_last = c
            cur[c], since[c] = nxt, t
        elif e == "sched_wakeup_new" and p == P:
            C = int(d["pid"])
            kids.add(C)
            other = [o for o in cur if o != c]
            o = cur.get(other[0]) if other else None
            state = "unknown" if o is None else "idle" if o == 0 else "own" if o in kids or o == P else "foreign"
            it = {"t": t, "C": C, "pcpu": c, "ccpu": int(d["target_cpu"]), "other": state,
                  "other_idle_us": t - since[other[0]] if state == "idle" else np.nan}
            rows.append(it)
        elif e == "sched_process_exec" and it is not None and p == it["C"]:
            it["exec"], it["exec_cpu"] = t, c
            o = [x for x in cur if x != it.get("c_cpu")]
            it["exec_other_idle"] = bool(o) and cur.get(o[0]) == 0 and "mig" not in it
        elif e == "sched_migrate_task" and it is not None and int(d["pid"]) == it["C"] and "mig" not in it:
            it["mig"] = t
            o = int(d["dest_cpu"])
            it["mig_dest_was_idle"] = cur.get(o) == 0
            it["mig_src_only_child"] = cur.get(int(d["orig_cpu"])) == it["C"]
        elif e == "sched_waking" and it is not None and int(d["pid"]) == P and "w" not in it and t > it["t"]:
            it["w"], it["w_cpu"] = t, c
            it["p_cpu_idle"] = cur.get(p_last) == 0  # the CPU the parent slept on runs the idle task
    d = pd.DataFrame(rows)
    d["local"] = d.ccpu == d.pcpu
    d["first_run_us"] = d.c_in - d.t
    d["parent_wake_us"] = d.p_in - d.w
    d["cycle_us"] = d.t.diff().shift(-1)
    if "exec" in d:
        d["to_exec_us"] = d["exec"] - d.c_in
        d["exec_moved"] = d.exec_cpu != d.c_cpu
    return d


def _p(x: pd.Series) -> dict:
    x = x.dropna()
    return {"n": int(x.size), "p50": round(float(x.median()), 1), "p90": round(float(x.quantile(0.9)), 1)} if x.size else {"n": 0}


def summary(d: pd.DataFrame) -> dict:
    """Placement by the other CPU's state, and the hand-off latencies by placement."""
    out: dict = {"creations": int(len(d)), "local_share": round(float(d.local.mean()), 4),
                 "cycle_us": _p(d.cycle_us)}
    out["local_by_other_cpu"] = {s: {"local": round(float(g.local.mean()), 4), "n": int(len(g))}
                                 for s, g in d.groupby("other")}
    idle = d[d.other == "idle"]
    if len(idle):
        out["local_by_other_idle_us"] = {str(k): {"local": round(float(g.local.mean()), 4), "n": int(len(g))}
                                         for k, g in idle.groupby(pd.cut(idle.other_idle_us, IDLE_BINS), observed=True)}
    for name, part in (("cross", d[~d.local]), ("local", d[d.local])):
        if len(part):
            w = part[part.w.notna()] if "w" in part else part.iloc[:0]
            out[name] = {"first_run_us": _p(part.first_run_us),
                         "parent_wake_us": _p(part.parent_wake_us),
                         "parent_woken_from_other_cpu": round(float((w.w_cpu != w.pcpu).mean()), 4) if len(w) else None,
                         "parent_cpu_idle_at_wake": round(float(w.p_cpu_idle.astype(bool).mean()), 4) if len(w) else None,
                         "parent_wake_us_idle_cpu": _p(w[w.p_cpu_idle.astype(bool)].parent_wake_us) if len(w) else None,
                         "cycle_us": _p(part.cycle_us)}
            if "exec" in part:
                out[name].update(to_exec_us=_p(part.to_exec_us), exec_moved=round(float(part.exec_moved.mean()), 4),
                                 migrated=round(float(part.mig.notna().mean()), 4) if "mig" in part else 0.0)
                ex = part[part.exec_other_idle.fillna(False).astype(bool) | part.mig.notna()] if "mig" in part else part
                if len(ex):  # sched_exec's moves by how long the child ran before its exec
                    out[name]["exec_moved_by_to_exec_us"] = {
                        str(k): {"moved": round(float(g.exec_moved.mean()), 4), "n": int(len(g))}
                        for k, g in ex.groupby(pd.cut(ex.to_exec_us, [0, 100, 150, 200, 300, 1e9]), observed=True)}
                if "mig" in part:
                    m = part[part.mig.notna()]
                    out[name].update(moved_to_idle=round(float(m.mig_dest_was_idle.astype(bool).mean()), 4) if len(m) else None,
                                     moved_from_alone=round(float(m.mig_src_only_child.astype(bool).mean()), 4) if len(m) else None,
                                     stayed_with_other_idle=int(part.exec_other_idle.fillna(False).astype(bool).sum()))
    return out


def _steal() -> tuple[int, int]:
    """(steal, total) jiffies of all CPUs from /proc/stat's cpu line."""
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return f[7], sum(f[:8])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kind", default="thread", choices=("fork", "vfork", "posix_spawn", "thread"))
    ap.add_argument("--rss", default="0", help="the parent's resident memory (bytes)")
    ap.add_argument("--duration", type=float, default=0.5, help="seconds measured (default 0.5)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/forksim-place-trace"))
    ap.add_argument("--parse", type=Path, help="analyse this trace text instead of recording one")
    ap.add_argument("--json", type=Path, help="also write the summary here")
    a = ap.parse_args()
    st0 = _steal()
    path = a.parse or record(loadgen_trace.closed_loop(a.kind, a.duration, a.rss), a.out)
    st1 = _steal()
    s = summary(creations(events(path)))
    if not a.parse:  # the host's steal over the run (/proc/stat): placement under steal is not a quiet machine's
        s["steal_frac"] = round((st1[0] - st0[0]) / max(1, st1[1] - st0[1]), 4)
    s["rss"] = a.rss
    return loadgen_trace.emit(s, path, a.json)


if __name__ == "__main__":
    sys.exit(main())
