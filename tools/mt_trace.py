"""Where a multi-threaded parent's fork() goes: the mt-fork validation row traced (loadgen --mode mt).

    python tools/mt_trace.py record OUT [--writers 3] [--rss 1GiB] [--duration 1.5] [--no-ipis]   # root, tracefs
    python tools/mt_trace.py show OUT [--json FILE]

`record` runs the validation's load generator in mt mode (one parent, `--writers` threads writing one byte
per page across the image, the main thread forking in a closed loop) in a session of its own, with the
scheduler's events (sched_switch, sched_wakeup, sched_wakeup_new, sched_migrate_task,
sched_process_fork/exit), the mmap_lock events, clone/clone3/wait4/exit_group (raw_syscalls, filtered) and,
unless --no-ipis, the TLB-flush and function-call IPI events, in a tracefs instance of its own (clock mono:
the records' CLOCK_MONOTONIC); it writes OUT.trace and OUT.json (the load generator's summary). `show`
cuts each fork() call (clone entry to exit) at the mmap_lock of the parent's mm (dup_mmap's
mmap_write_lock_killable: the call's first write lock; dup_mmap's walk ends at that mm's release) and says:
the wait for the lock and, where the forker slept for it, how long until it was woken (the last reader's
mmap_read_unlock) and then until it ran; the walk (the lock's hold) by the time since the previous fork
returned; when each writer blocked (its first mmap_lock_start_locking after the walk took the lock); where
the writers the walk's end woke were placed (the forker's vCPU or the other); how many writers were on the
forker's vCPU when each walk took the lock and, where one waited there, whether the idle vCPU's own balance
pass (nohz idle balance) pulled it or the forker's slice ended first; the writers' moves by an idle vCPU's
pass and in a task's context; and the IPIs' handlers.

Recorded 2026-12-02 12:30-12:36 UTC (Intel Xeon host, 2 vCPUs, Linux 6.18.44, sched_vcpu_pack=15; 1.5 s
runs with 3 writers and 1 GiB, 95 and 101 forks, warm-up included; a closed single-threaded 1 GiB loop beside
them, 139 forks): the walk held the lock 6.6 / 6.7 ms (p50) against 5.5 ms single-threaded; by quartile of
the gap since the previous fork returned 6.3, 6.5, 6.9, 7.2 ms (gaps 7.5-33.7 ms) and 5.9, 6.5, 6.8, 7.6 ms
(7.2-33.5 ms), single-threaded 5.3, 5.4, 5.6, 6.0 ms (6.7-10.7 ms). The writers blocked 22-25 us (p50) after
the walk took the lock, and the other vCPU idled through it. The walk's end woke the three writers all onto
the other vCPU in 82-83% of forks. 29 of 95 and 32 of 101 forks slept 0.1-7.6 ms for the lock: a writer the
walk's end had handed it to for read was still queued behind the others; they were woken 0.05-3.6 ms after
asking, and 14 of 28 and 13 of 32 then waited 3.9-5.0 ms on the runqueue (the writer that let them in kept
the CPU to the next tick), the rest under 0.1 ms (the forker's vCPU had pulled that writer when it slept).
Function-call IPIs (TLB shootdowns among them): 9,959 in 1.8 s, 1 us each (p50), 7.7 ms in all.

Recorded again 2026-12-05 19:27 UTC (the same host kind, 3 s, 170 forks): the walk p50 6.4 ms, the three
writers woken onto the other vCPU in 130 forks. When the walk took the lock, 0 writers were on the forker's
vCPU in 114 forks, 1 in 35 and 2 in 21 (after the first 95 forks, 1 in 6 of 75). Of the 56 walks that found
one waiting there, the idle vCPU's own pass pulled it in 19 (0.1-4.1 ms into the walk) and the forker's slice
ended first, at a tick (mostly 4.0 ms in), in 37, the writer then blocking on the lock within 6 us. The idle
vCPU's passes moved writers 45 times (23 in walks, 22 between forks, towards the forker's vCPU); moves
in a task's context: 3. Of 228 switches of a vCPU to idle while a writer that had not run for 0.5 ms waited
on the other, none pulled it (newidle balancing does not pull here).
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Iterable

import numpy as np

EVENTS = ("sched/sched_switch", "sched/sched_wakeup", "sched/sched_wakeup_new", "sched/sched_migrate_task",
          "sched/sched_process_fork", "sched/sched_process_exit", "raw_syscalls/sys_enter", "raw_syscalls/sys_exit",
          "mmap_lock/mmap_lock_start_locking", "mmap_lock/mmap_lock_acquire_returned",
          "mmap_lock/mmap_lock_released")
IPI_EVENTS = ("tlb/tlb_flush", "ipi/ipi_send_cpu", "ipi/ipi_send_cpumask", "irq_vectors/call_function_entry",
              "irq_vectors/call_function_exit", "irq_vectors/call_function_single_entry",
              "irq_vectors/call_function_single_exit")
NR_CLONE, NR_CLONE3 = 56, 435  # x86_64 (the instance's raw_syscalls filter keeps these, wait4 and exit_group)
LINE = re.compile(r"^\s*(.+?)-(\d+)\s+\[(\d+)\]\s+\S+\s+([\d.]+): (\w+): (.*)$")
KV = re.compile(r"(\w+)=(\S+)")
SLEPT_US = 100.0  # a lock wait this long had the forker off its CPU (the spin before sleeping is ~15-60 us)


def record(out: str, writers: int, rss: int, duration: float, ipis: bool) -> int:
    """Run loadgen --mode mt with the events on; OUT.trace and OUT.json."""
    from forksim.calibration.tracefs import TraceInstance
    from forksim.validation.loadgen import build_tools

    tools = build_tools()
    argv = [str(tools.loadgen), "--mode", "mt", "--kind", "fork", "--parents", "1", "--duration", f"{duration:g}",
            "--warmup", "0.3", "--hogs", "0", "--rss", str(rss), "--writers", str(writers),
            "--helper", str(tools.helper), "--out", out]
    # its own instance (64 MiB per CPU, removed afterwards), the mono clock the parser reads as seconds
    with TraceInstance(EVENTS + (IPI_EVENTS if ipis else ()), buffer_kb=65536, name="forksim-mtfork",
                       optional=False, clock="mono") as ti:
        ti.start()
        proc = subprocess.run(argv, capture_output=True, text=True, start_new_session=True)
        ti.stop()
        Path(out + ".json").write_text(proc.stdout)
        Path(out + ".trace").write_text((ti.dir / "trace").read_text())
    if proc.returncode != 0:
        print(f"loadgen failed: {proc.stderr.strip()}", file=sys.stderr)
        return 2
    print(f"wrote {out}.trace, {out}.json")
    return 0


def parse(lines: Iterable[str]) -> list[tuple[float, int, int, str, str]]:
    """(time us, cpu, pid, event, fields) of each event line, in time order."""
    ev = []
    for line in lines:
        m = LINE.match(line)
        if m:
            ev.append((float(m.group(4)) * 1e6, int(m.group(3)), int(m.group(2)), m.group(5), m.group(6)))
    ev.sort(key=lambda e: e[0])
    return ev


def _nr(rest: str) -> int:
    return int(rest.split()[1])


def roles(ev: list) -> tuple[int, set[int]]:
    """The forker (the task with the most clone() calls) and its threads (created inside its clone3 calls)."""
    calls = collections.Counter(pid for _, _, pid, n, r in ev if n == "sys_enter" and _nr(r) == NR_CLONE)
    if not calls:
        raise ValueError("no clone() call in the trace")
    forker = calls.most_common(1)[0][0]
    threads, in_clone3 = set(), False
    for _, _, pid, n, r in ev:
        if pid != forker:
            continue
        if n in ("sys_enter", "sys_exit") and _nr(r) == NR_CLONE3:
            in_clone3 = n == "sys_enter"
        elif n == "sched_process_fork" and in_clone3:
            threads.add(int(dict(KV.findall(r))["child_pid"]))
    return forker, threads


def forks(ev: list, forker: int, threads: set[int]) -> list[dict]:
    """Each clone() call of the forker, cut at its parent mm's mmap_lock (see the module's docstring)."""
    out, cur = [], None
    for i, (t, cpu, pid, n, r) in enumerate(ev):
        if pid == forker and n == "sys_enter" and _nr(r) == NR_CLONE:
            cur = {"t0": t, "cpu": cpu, "i0": i}
        elif pid == forker and n == "sys_exit" and _nr(r) == NR_CLONE and cur is not None:
            cur.update(t1=t, i1=i)
            f = _cut(ev, cur, forker, threads)
            if f is not None:
                out.append(f)
            cur = None
    for prev, f in zip(out, out[1:]):
        f["gap_us"] = f["t0"] - prev["t1"]
    return out


def _cut(ev: list, call: dict, forker: int, threads: set[int]) -> dict | None:
    span = ev[call["i0"]:call["i1"] + 1]
    mine = [(t, n, dict(KV.findall(r))) for t, _, pid, n, r in span if pid == forker and n.startswith("mmap_lock")]
    start = next(((t, f["mm"]) for t, n, f in mine if n == "mmap_lock_start_locking" and f["write"] == "true"), None)
    if start is None:
        return None
    t_start, mm = start
    acq = next((t for t, n, f in mine if n == "mmap_lock_acquire_returned" and f["mm"] == mm and f["write"] == "true"
                and f.get("success") == "true"), None)
    rel = [t for t, n, f in mine if n == "mmap_lock_released" and f["mm"] == mm and f["write"] == "true"]
    if acq is None or not rel:
        return None
    f = {"t0": call["t0"], "t1": call["t1"], "cpu": call["cpu"], "fork_us": call["t1"] - call["t0"],
         "lock_wait_us": acq - t_start, "hold_us": rel[-1] - acq, "walk_end": rel[-1], "gap_us": None}
    if f["lock_wait_us"] >= SLEPT_US:  # woken by the last reader's unlock, then waited for its CPU
        woken = [t for t, _, pid, n, r in span if n == "sched_wakeup" and t < acq and f" pid={forker} " in r]
        ran = [t for t, _, pid, n, r in span if n == "sched_switch" and t <= acq and f"next_pid={forker} " in r]
        if woken and ran:
            f["until_granted_us"] = woken[-1] - t_start
            f["runq_us"] = ran[-1] - woken[-1]
    blocked = {}
    for t, _, pid, n, r in span:
        if pid in threads and n == "mmap_lock_start_locking" and t >= acq and pid not in blocked:
            blocked[pid] = t - acq
    f["writers_blocked_after_us"] = sorted(blocked.values())
    return f


def woken_placement(ev: list, fs: list[dict], threads: set[int], window_us: float = 100.0) -> collections.Counter:
    """Where the walk's end put the writers it woke: one key per fork, the sorted tuple of 'same' (the
    forker's vCPU) / 'other'."""
    out: collections.Counter = collections.Counter()
    times = np.array([e[0] for e in ev])
    for f in fs:
        keys = []
        for t, _, _, n, r in ev[int(np.searchsorted(times, f["walk_end"])):]:
            if t > f["walk_end"] + window_us:
                break
            if n == "sched_wakeup":
                kv = dict(KV.findall(r))
                if int(kv["pid"]) in threads:
                    keys.append("same" if int(kv["target_cpu"]) == f["cpu"] else "other")
        out[tuple(sorted(keys))] += 1
    return out


def _writer_states(ev: list, threads: set[int], at: list[float]) -> list[dict[int, tuple[int, str]]]:
    """Each writer's (vCPU, "running" / "runnable" / "sleeping") just before each time in `at` (ascending)."""
    where: dict[int, tuple[int, str]] = {}
    out, k = [], 0
    for t, cpu, _, n, r in ev:
        while k < len(at) and at[k] <= t:
            out.append(dict(where))
            k += 1
        if k == len(at):
            break
        if n == "sched_switch":
            kv = dict(KV.findall(r))
            prev, nxt = int(kv["prev_pid"]), int(kv["next_pid"])
            if prev in threads:
                where[prev] = (cpu, "runnable" if kv["prev_state"].startswith("R") else "sleeping")
            if nxt in threads:
                where[nxt] = (cpu, "running")
        elif n in ("sched_wakeup", "sched_wakeup_new", "sched_migrate_task"):
            kv = dict(KV.findall(r))
            pid = int(kv["pid"])
            if pid in threads:
                if n == "sched_migrate_task":
                    where[pid] = (int(kv["dest_cpu"]), where.get(pid, (0, "runnable"))[1])
                elif where.get(pid, (0, ""))[1] != "running":
                    where[pid] = (int(kv["target_cpu"]), "runnable")
    return out + [dict(where)] * (len(at) - len(out))


def walk_starts(ev: list, fs: list[dict], threads: set[int]) -> dict:
    """Where the writers were when each walk took the lock: how many on the forker's vCPU (running or
    waiting there), by fork; and, for the walks that found one waiting there, what came first: the idle
    vCPU's own balance pass pulled it (sched_migrate_task with the idle task current: nohz idle balance), or
    it ran on the forker's vCPU (the forker's slice ended at a tick), or neither before the walk's end, with
    the times (ms into the walk)."""
    starts = [f["walk_end"] - f["hold_us"] for f in fs]
    states = _writer_states(ev, threads, starts)
    times = np.array([e[0] for e in ev])
    on_forker: collections.Counter = collections.Counter()
    first = {"pulled": [], "ran_on_forker_cpu": [], "neither": 0}
    for f, a, st in zip(fs, starts, states):
        on_forker[sum(1 for c, _ in st.values() if c == f["cpu"])] += 1
        waiting = {p for p, (c, s) in st.items() if c == f["cpu"] and s == "runnable"}
        if not waiting:
            continue
        for t, cpu, pid, n, r in ev[int(np.searchsorted(times, a)):int(np.searchsorted(times, f["walk_end"]))]:
            kv = dict(KV.findall(r)) if n in ("sched_migrate_task", "sched_switch") else {}
            if n == "sched_migrate_task" and pid == 0 and int(kv["pid"]) in waiting:
                first["pulled"].append(round((t - a) / 1e3, 2))
                break
            if n == "sched_switch" and cpu == f["cpu"] and int(kv["next_pid"]) in waiting:
                first["ran_on_forker_cpu"].append(round((t - a) / 1e3, 2))
                break
        else:
            first["neither"] += 1
    return {"writers_on_forker_cpu": dict(sorted(on_forker.items())), "waiting_writer": first}


def writer_moves(ev: list, fs: list[dict], threads: set[int]) -> dict:
    """The writers' moves to an idle vCPU by its own balance pass (sched_migrate_task with the idle task
    current: nohz idle balance), inside a walk or between forks, and the moves made in a task's context
    (a vCPU going idle: newidle balance; a wake-up's placement)."""
    walks = [(f["walk_end"] - f["hold_us"], f["walk_end"]) for f in fs]
    out = {"idle_in_walk": 0, "idle_between": 0, "in_a_task": 0}
    for t, _, pid, n, r in ev:
        if n != "sched_migrate_task" or int(dict(KV.findall(r))["pid"]) not in threads:
            continue
        if pid != 0:
            out["in_a_task"] += 1
        else:
            out["idle_in_walk" if any(a <= t <= b for a, b in walks) else "idle_between"] += 1
    return out


def ipis(ev: list) -> dict:
    """The function-call IPI handlers (TLB shootdowns among them): count and time."""
    opened, durs = {}, []
    for t, cpu, _, n, _ in ev:
        if n in ("call_function_entry", "call_function_single_entry"):
            opened[cpu] = t
        elif n in ("call_function_exit", "call_function_single_exit") and cpu in opened:
            durs.append(t - opened.pop(cpu))
    d = np.array(durs)
    return {"count": int(d.size), "us_total": float(d.sum()), "us_p50": float(np.median(d)) if d.size else 0.0}


def _p(v: list[float], q: float) -> float:
    return float(np.percentile(v, q)) if v else float("nan")


def summarise(ev: list) -> dict:
    """The figures the module's docstring lists."""
    forker, threads = roles(ev)
    fs = forks(ev, forker, threads)
    slept = [f for f in fs if f["lock_wait_us"] >= SLEPT_US]
    gaps = [(f["gap_us"], f["hold_us"]) for f in fs if f["gap_us"] is not None]
    by_gap = {}
    if gaps:
        g = np.array(gaps)
        for lo, hi in zip(np.percentile(g[:, 0], [0, 25, 50, 75]), np.percentile(g[:, 0], [25, 50, 75, 100])):
            m = (g[:, 0] >= lo) & (g[:, 0] <= hi)
            by_gap[f"{lo:.0f}-{hi:.0f}"] = float(np.median(g[m, 1]))
    blocked = [x for f in fs for x in f["writers_blocked_after_us"]]
    return {
        "forks": len(fs), "writers": len(threads),
        "fork_us": {"p50": _p([f["fork_us"] for f in fs], 50), "p99": _p([f["fork_us"] for f in fs], 99)},
        "hold_us": {"p50": _p([f["hold_us"] for f in fs], 50), "by_gap_us": by_gap},
        "writers_blocked_after_us_p50": _p(blocked, 50),
        "lock_waits": {"slept": len(slept), "wait_us": [round(f["lock_wait_us"]) for f in slept],
                       "until_granted_us": [round(f["until_granted_us"]) for f in slept if "until_granted_us" in f],
                       "runq_us": [round(f["runq_us"]) for f in slept if "runq_us" in f]},
        "woken_writers_placed": {"+".join(k) or "none": v for k, v in woken_placement(ev, fs, threads).most_common()},
        **walk_starts(ev, fs, threads),
        "writer_moves": writer_moves(ev, fs, threads),
        "ipis": ipis(ev),
    }


def show(prefix: str, json_out: str | None) -> int:
    s = summarise(parse(Path(prefix + ".trace").read_text().splitlines()))
    lw = s["lock_waits"]
    print(f"{s['forks']} forks, {s['writers']} writers; fork() p50 {s['fork_us']['p50']:.0f} us, p99 "
          f"{s['fork_us']['p99']:.0f} us; the walk (mmap_lock hold) p50 {s['hold_us']['p50']:.0f} us")
    print("  walk p50 by the gap since the previous fork returned:",
          ", ".join(f"{k} us: {v:.0f}" for k, v in s["hold_us"]["by_gap_us"].items()))
    print(f"  writers blocked p50 {s['writers_blocked_after_us_p50']:.0f} us after the walk took the lock")
    print(f"  forks that slept for the lock: {lw['slept']} (waits {sorted(lw['wait_us'])} us); woken after "
          f"{sorted(lw['until_granted_us'])} us, then on the runqueue {sorted(lw['runq_us'])} us")
    print("  writers woken by the walk's end, placed:", s["woken_writers_placed"])
    ww, mv = s["waiting_writer"], s["writer_moves"]
    print("  writers on the forker's vCPU when the walk took the lock (count: forks):", s["writers_on_forker_cpu"])
    print(f"  a writer waiting there: pulled by the idle vCPU's own pass in {len(ww['pulled'])} walks (ms in: "
          f"{sorted(ww['pulled'])}), ran on the forker's vCPU first in {len(ww['ran_on_forker_cpu'])} (ms in: "
          f"{sorted(ww['ran_on_forker_cpu'])}), neither in {ww['neither']}")
    print(f"  writers moved by an idle vCPU's own pass: {mv['idle_in_walk']} in walks, {mv['idle_between']} between "
          f"forks; in a task's context (newidle, a wake-up): {mv['in_a_task']}")
    print(f"  function-call IPIs: {s['ipis']['count']}, {s['ipis']['us_total']:.0f} us in all, p50 "
          f"{s['ipis']['us_p50']:.1f} us")
    if json_out:
        Path(json_out).write_text(json.dumps(s, indent=1))
    return 0


def main() -> int:
    from forksim.units import parse_size

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("out")
    r.add_argument("--writers", type=int, default=3)
    r.add_argument("--rss", default="1GiB")
    r.add_argument("--duration", type=float, default=1.5)
    r.add_argument("--no-ipis", action="store_true")
    s = sub.add_parser("show")
    s.add_argument("out")
    s.add_argument("--json")
    a = ap.parse_args()
    if a.cmd == "record":
        return record(a.out, a.writers, int(parse_size(a.rss)), a.duration, not a.no_ipis)
    return show(a.out, a.json)


if __name__ == "__main__":
    sys.exit(main())
