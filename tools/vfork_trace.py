"""Trace the validation's closed vfork loop (the real load generator, unpinned) with tracefs and say where
each step runs: the child's CPU against how long the other CPU had been idle (placement), the parent's
wake-up at mm_release (complete_vfork_done: its CPU, halted or not, the latency), whether wait4 found a
zombie or slept, and the share of the child's exit before mm_release. Needs root and tracefs.

    python tools/vfork_trace.py [--duration S] [--think S] [--kind vfork|posix_spawn] [--json OUT]
    python tools/vfork_trace.py --parse TRACE.txt     # analyse a trace text written before

The figures back the profile's placement_recent_idle and mm_release_share (forksim/profiles/default.json
says which run). The tracepoints: sched_switch, sched_wakeup_new, sched_waking, cpu_idle, raw_syscalls
(vfork 58, wait4 61, exit_group 231; clone 56 and clone3 435 for posix_spawn). Trace timestamps are 1 us;
tracing slows the loop (about 15k/s traced against 20k/s untraced), which stretches every idle time a little.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

import loadgen_trace  # tools/loadgen_trace.py beside this script
from loadgen_trace import KV

T = Path("/sys/kernel/tracing/instances/forksim-vfork")
EVENTS = ("sched/sched_switch", "sched/sched_wakeup_new", "sched/sched_waking", "sched/sched_process_fork",
          "power/cpu_idle", "raw_syscalls/sys_enter", "raw_syscalls/sys_exit")
CREATE = {"58", "56", "435"}  # vfork, clone, clone3: the creating call of vfork() and posix_spawn()
NR = re.compile(r"NR (\d+)")
IDLE_BINS = [0, 25, 50, 100, 200, 500, 1000, 1e9]


def record(loadgen_args: list[str], out: Path) -> Path:
    """Run the load generator under a tracefs instance of its own; returns the trace text's path."""
    flt = "id == 58 || id == 56 || id == 435 || id == 61 || id == 231"
    return loadgen_trace.record(T, EVENTS, loadgen_args, out, buffer_kb=65536,
                                filters={ev: flt for ev in EVENTS if ev.startswith("raw_syscalls")})


def events(path: Path):
    """(time us, cpu, pid, event, the rest of the line) per trace line."""
    return loadgen_trace.lines(path)


def iterations(path: Path) -> pd.DataFrame:
    """One row per creation of the busiest creating pid (the loop's parent)."""
    evs = list(events(path))
    nr = lambda r: (m.group(1) if (m := NR.match(r)) else None)  # noqa: E731
    P = collections.Counter(p for _t, _c, p, e, r in evs if e == "sys_enter" and nr(r) in CREATE).most_common(1)[0][0]
    cur: dict[int, int] = {}
    since: dict[int, float] = {}
    halted: dict[int, bool] = {}
    rows: list[dict] = []
    it: dict | None = None
    for t, c, p, e, r in evs:
        if e == "sched_switch":
            d = dict(KV.findall(r))
            cur[c], since[c] = int(d["next_pid"]), t
            if it is not None:
                _switch(it, P, d, t, c)
        elif e == "cpu_idle":
            halted[c] = "state=1 " in r + " "
        elif p == P and e == "sys_enter" and nr(r) in CREATE:
            it = {"t0": t, "pcpu": c}
            rows.append(it)
        elif it is not None:
            _event(it, P, t, c, p, e, r, nr(r), cur, since, halted)
    return _frame(rows)


def _switch(it: dict, P: int, d: dict, t: float, c: int) -> None:
    prev, state = int(d["prev_pid"]), d["prev_state"]
    if prev == P and "tw" in it and "t2" not in it and state.startswith("S"):
        it["wait_slept"] = True
    if prev == it.get("C") and state[:1] in "XZ":
        it["c_dead"] = t
    if prev == it.get("C") and state.startswith("R"):
        it["c_preempted"] = True
    if int(d["next_pid"]) == P and "w" in it and "p_in" not in it:
        it["p_in"] = t


def _event(it: dict, P: int, t: float, c: int, p: int, e: str, r: str, nr: str | None,
           cur: dict, since: dict, halted: dict) -> None:
    if e == "sched_process_fork" and p == P and "C" not in it:
        it["C"] = int(dict(KV.findall(r))["child_pid"])
    elif e == "sched_wakeup_new" and p == P and "ccpu" not in it:
        it["ccpu"] = int(dict(KV.findall(r))["target_cpu"])
        other = [o for o in cur if o != c]
        it["other_idle_us"] = t - since[other[0]] if other and cur.get(other[0]) == 0 else np.nan
    elif e == "sched_waking" and int(dict(KV.findall(r))["pid"]) == P and "w" not in it and p == it.get("C"):
        it["w"], it["w_cpu"] = t, c
        it["p_halted"] = halted.get(it["pcpu"], False) and cur.get(it["pcpu"]) == 0
    elif p == it.get("C") and e == "sys_enter" and nr == "231":
        it["c_exit"] = t
    elif p == P and e == "sys_exit" and nr in CREATE and "t1" not in it:
        it["t1"], it["pcpu1"] = t, c
    elif p == P and e == "sys_enter" and nr == "61":
        it["tw"] = t
    elif p == P and e == "sys_exit" and nr == "61":
        it["t2"] = t


def _frame(rows: list[dict]) -> pd.DataFrame:
    d = pd.DataFrame([x for x in rows if "t2" in x and "ccpu" in x])
    for col in ("wait_slept", "c_preempted", "p_halted"):
        d[col] = d[col].fillna(False).astype(bool) if col in d else False
    d["cross"] = d.ccpu != d.pcpu
    d["vfork_us"], d["after_us"] = d.t1 - d.t0, d.t2 - d.t1
    d["parent_wake_us"] = d.p_in - d.w if "p_in" in d else np.nan
    if "c_exit" in d and "c_dead" in d:
        d["mm_release_share"] = (d.w - d.c_exit) / (d.c_dead - d.c_exit)
    return d


def summary(d: pd.DataFrame) -> dict:
    """The figures: placement by the other CPU's idle time, and each placement's outcome."""
    idle = d[d.other_idle_us.notna()]
    by = idle.groupby(pd.cut(idle.other_idle_us, IDLE_BINS), observed=True)["cross"]
    out = {"creations": int(len(d)), "cross_cpu_share": round(float(d.cross.mean()), 4),
           "local_share_by_other_cpu_idle_us": {str(k): {"local": round(1 - float(v.mean()), 4), "n": int(v.size)}
                                                for k, v in by},
           "parent_back_on_its_cpu": round(float((d.pcpu1 == d.pcpu).mean()), 4)}
    for name, part in (("cross", d[d.cross]), ("local", d[~d.cross])):
        if len(part):
            out[name] = {"n": int(len(part)), "vfork_p50_us": float(part.vfork_us.median()),
                         "after_vfork_p50_us": float(part.after_us.median()),
                         "wait4_slept_share": round(float(part.wait_slept.mean()), 4),
                         "child_preempted_share": round(float(part.c_preempted.mean()), 4),
                         "parent_cpu_halted_share": round(float(part.p_halted.mean()), 4),
                         "parent_wake_p50_us": float(part.parent_wake_us.median())}
    free = d[d.cross & ~d.c_preempted]
    if "mm_release_share" in d and len(free):
        out["mm_release_share_p50"] = round(float(free.mm_release_share.median()), 4)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=0.3, help="seconds measured (default 0.3)")
    ap.add_argument("--think", type=float, default=0.0, help="the parent's sleep after each creation (s)")
    ap.add_argument("--kind", default="vfork", choices=("vfork", "posix_spawn"))
    ap.add_argument("--out", type=Path, default=Path("/tmp/forksim-vfork-trace"))
    ap.add_argument("--parse", type=Path, help="analyse this trace text instead of recording one")
    ap.add_argument("--json", type=Path, help="also write the summary here")
    a = ap.parse_args()
    path = a.parse or record(loadgen_trace.closed_loop(a.kind, a.duration, "0", "--think", f"{a.think:g}"), a.out)
    return loadgen_trace.emit(summary(iterations(path)), path, a.json)


if __name__ == "__main__":
    sys.exit(main())
