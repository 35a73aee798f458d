"""Trace who runs first after a pinned fork: the new child or the parent (issue 13: forks after other
work on the parent's CPU).

    sudo python tools/child_first_trace.py record OUT FORKBENCH -- cold -r 67108864 -c 1 -n 30 -W 67108864
    python tools/child_first_trace.py show OUT.trace [OUT.trace ...]

`record` runs forkbench (its cold mode: a sleep, a spin or a co-runner's sweep before each fork) with
sched_switch, sched_waking, sched_wakeup, sched_wakeup_new, sched_process_fork and sched_process_exit
on in a tracefs instance of its own, following forkbench and its children (set_event_pid,
event-fork; sched_switch is also kept when only the incoming task is followed).

`show` takes each fork of the parent (the task that forks most) and says, at the child's
wake_up_new_task: whether need_resched was set there (the N flag of sched_wakeup_new), whether another
task was runnable on the parent's CPU (a co-runner preempted by the parent's wake-up, still runnable
because it never reached its blocking read), how long the parent had run since it was last switched in
(against the slice: RUN_TO_PARITY protects the parent up to its deadline only), and whether the
parent's next switch-out was a preemption (R) rather than its sleep in waitpid.

Recorded 2026-12-02 02:06 UTC (AMD EPYC host, Linux 6.18, pinned to CPU 1, 64 MiB image unless said,
33 forks each, forkbench cold; base slice 1.4 ms):

| before each fork | other task runnable at the child's enqueue | resched at the enqueue | parent past its slice |
|---|---|---|---|
| co-runner swept 64 MiB (-W) | 26 of 33 | 26 of 26 (0 of the 7 alone) | 26 of 26 (3 of the 7 alone) |
| slept 1 ms (-s 1000) | 0 of 33 | 1 of 33 | 32 of 33 |
| -W, empty image (fork 271 us) | 33 of 33 | 0 of 33 | 0 of 33 |

The rule is update_curr's (kernel/sched/fair.c, called from enqueue_entity before the child is
counted): `if (cfs_rq->nr_queued == 1) return;` then `if (resched || !protect_slice(curr))
resched_curr_lazy(rq)`. With the co-runner queued and the parent past its protected slice the parent
is rescheduled at its return from fork() (23 of the 26: the co-runner, which blocks at once in its
read, then the child ran before fork() returned; forkbench's own figures: wall 4542 vs CPU 2670 us
p50, the child started before the return in 73%). Alone, the enqueue leaves the parent running; the
next update_curr with the child queued (forkbench's CLOCK_THREAD_CPUTIME_ID read, after its wall-clock
read) reschedules it: all 33 parents were preempted there, after fork() had returned (wall 2941 vs CPU
2887 us, the child first in 3%). Within its slice (the empty image) the parent keeps the CPU.
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

TRACEFS = Path("/sys/kernel/tracing")
INSTANCE = TRACEFS / "instances" / "forksim-first"
EVENTS = ("sched_switch", "sched_waking", "sched_wakeup", "sched_wakeup_new", "sched_process_fork",
          "sched_process_exit")
LINE = re.compile(r"^\s*(.+?)-(\d+)\s+\[(\d+)\]\s+(\S+)\s+([\d.]+): (\w+): (.*)$")
KV = re.compile(r"(\w+)=(\S+)")


def _events(on: bool) -> None:
    for e in EVENTS:
        (INSTANCE / "events" / "sched" / e / "enable").write_text("1" if on else "0")


def record(out: str, forkbench: str, args: list[str]) -> int:
    """Run forkbench with the tracepoints on: OUT.trace (the trace) and OUT.json (its samples)."""
    from forksim.calibration.tracefs import mount_tracefs

    mount_tracefs()  # a fresh VM boots without tracefs
    INSTANCE.mkdir(exist_ok=True)
    try:
        (INSTANCE / "tracing_on").write_text("0")
        (INSTANCE / "trace_clock").write_text("mono")
        (INSTANCE / "buffer_size_kb").write_text("16384")
        (INSTANCE / "trace").write_text("")
        (INSTANCE / "options" / "event-fork").write_text("1")
        _events(True)
        with open(f"{out}.json", "w") as fh:
            proc = subprocess.Popen([forkbench, *args, "-g"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    text=True)
            for line in proc.stdout:  # -g: it says {"ready": pid} once its image (and co-runner) is set up
                fh.write(line)
                if '"ready"' in line:
                    break
            # forkbench and the co-runner it forked before the image (cold -W), then their children
            kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            (INSTANCE / "set_event_pid").write_text(" ".join([str(proc.pid), *kids]))
            (INSTANCE / "tracing_on").write_text("1")
            proc.stdin.write("g")  # forkbench waits for a byte before its loop
            proc.stdin.close()
            fh.write(proc.stdout.read())
            rc = proc.wait()
        (INSTANCE / "tracing_on").write_text("0")
        Path(f"{out}.trace").write_text((INSTANCE / "trace").read_text())
        return rc
    finally:
        _events(False)
        (INSTANCE / "set_event_pid").write_text("")
        INSTANCE.rmdir()


def _parse(path: str):
    for line in Path(path).read_text().splitlines():
        m = LINE.match(line)
        if m:
            comm, pid, cpu, flags, ts, ev, rest = m.groups()
            yield float(ts) * 1e6, int(cpu), flags, ev, dict(KV.findall(rest))


def analyse(path: str, slice_us: float) -> dict:
    """Per fork of the parent (the task that forks most): whether need_resched was set at the child's
    wake_up_new_task (the trace's N flag on sched_wakeup_new), whether another task was runnable on the
    CPU then (switched out runnable, 'R', not run since), how long the parent had run since it was
    switched in, and whether the parent's next switch-out was a preemption (R) rather than its sleep in
    waitpid (S)."""
    evs = list(_parse(path))
    forks = collections.Counter(int(k["pid"]) for _, _, _, e, k in evs if e == "sched_process_fork")
    if not forks:
        return {"forks": 0}
    parent = forks.most_common(1)[0][0]
    runnable: set[int] = set()  # switched out while runnable, not run since
    since: dict[int, float] = {}
    rows, cur = [], None
    for ts, _cpu, flags, ev, k in evs:
        if ev == "sched_switch":
            prev, nxt = int(k["prev_pid"]), int(k["next_pid"])
            runnable.discard(nxt)
            if k["prev_state"].startswith("R"):
                runnable.add(prev)
            else:
                runnable.discard(prev)
            since[nxt] = ts
            if cur is not None and prev == parent and "preempted" not in cur:
                cur["preempted"] = k["prev_state"].startswith("R")
        elif ev == "sched_process_fork" and int(k["pid"]) == parent:
            cur = {"child": int(k["child_pid"])}
            rows.append(cur)
        elif ev == "sched_wakeup_new" and cur is not None and int(k["pid"]) == cur["child"]:
            cur["resched_at_enqueue"] = "N" in flags or "n" in flags
            cur["other_runnable"] = bool(runnable - {parent, cur["child"]})
            cur["ran_us"] = ts - since.get(parent, ts)
    rows = [r for r in rows if "preempted" in r and "ran_us" in r]
    out: dict = {"forks": len(rows)}
    for name, sel in (("other runnable", lambda r: r["other_runnable"]),
                      ("alone", lambda r: not r["other_runnable"])):
        rs = [r for r in rows if sel(r)]
        if rs:
            out[name] = {"n": len(rs),
                         "resched_at_enqueue": sum(r["resched_at_enqueue"] for r in rs),
                         "over_slice": sum(r["ran_us"] > slice_us for r in rs),
                         "resched_at_enqueue_and_over_slice": sum(r["resched_at_enqueue"] and r["ran_us"] > slice_us
                                                                  for r in rs),
                         "parent_preempted_next": sum(r["preempted"] for r in rs),
                         "parent_ran_p50_us": round(float(np.median([r["ran_us"] for r in rs])), 1)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("out")
    r.add_argument("forkbench")
    r.add_argument("args", nargs=argparse.REMAINDER)
    s = sub.add_parser("show")
    s.add_argument("traces", nargs="+")
    s.add_argument("--slice-us", type=float, default=1400.0, help="the base slice (/proc/self/sched se.slice)")
    a = ap.parse_args()
    if a.cmd == "record":
        args = a.args[1:] if a.args and a.args[0] == "--" else a.args
        return record(a.out, a.forkbench, args)
    for t in a.traces:
        print(t, analyse(t, a.slice_us))
    return 0


if __name__ == "__main__":
    sys.exit(main())
