"""What the slowest fork() calls of the closed loop with K unpinned parents hold (issues 14/15: K > CPUs).

    python tools/ktail_trace.py record OUT --parents 4 [--duration 1.5] [--no-irqs]   # root, tracefs
    python tools/ktail_trace.py show OUT [--json FILE]

`record` runs the validation's load generator (closed fork loop, RSS 0, K unpinned parents, no hogs) in a
session of its own, as `forksim validate` runs it, with the scheduler's events (sched_switch, sched_waking,
sched_wakeup_new, sched_migrate_task, sched_process_fork/exit) and the interrupt events (handlers,
softirqs, the tick, IPIs) on in a tracefs instance of its own (clock mono: the records' CLOCK_MONOTONIC);
it writes OUT.trace, OUT.rec and OUT.json. `show` matches every call (rec t0..t1) to its parent's
sched_process_fork and says, per group of calls by latency: the parent's time on and off its CPU inside
the call, what ran on its CPU while it was off (its own new child, another parent, another parent's child,
a kernel thread, another program), how it left (R: preempted), who had woken the task that took its CPU and
from which CPU, and the interrupts while it ran; then the placement and preemption rules behind it: where new
children go, how often a wake-up of a kernel thread, of another parent from the other CPU, or the parent's
own new child (wake_up_new_task) takes the CPU from a parent inside fork(), by how long that parent had
run since it was switched in (EEVDF: a running task keeps the CPU while it is eligible and protected).

Recorded 2026-12-02 12:15-12:25 UTC (Intel Xeon host, 2 vCPUs, Linux 6.18.44, sched_vcpu_pack=15;
1.5 s each, 26,000-32,000 calls; tracing costs ~4% of the throughput; CPU shares from the trace):

| K | fork p50 / p99 (us) | calls preempted inside fork() | children on the other vCPU | CPU per creation: child / parent (us) | idle |
|---|---|---|---|---|---|
| 2 | 29.0 / 82.9 | 0.5% (kthreads) | 0.3% | 53.6 / 35.1 | 1.9% |
| 4 | 34.0 / 226 (34.8 / 229 again) | 4.9%: other parent 2.6, own new child 1.5, kthreads 0.8 | 43% | 62.0 / 41.3 | 5.4% |
| 8 | 33.3 / 656 | 4.3%: own new child 1.7, other parent's new child 1.3, other parent 0.7 | 44% | 63.6 / 43.3 | 2.2% |

At K4, 93-97% of the calls slower than the p95 were preempted at the return from fork() (PREEMPT_NONE:
the reschedule set while the parent was in the kernel is acted on at its syscall exit, inside the measured
call), ~55-65 us into the call, and got the CPU back 75 us (the slowest 2-5%), 143 us (1-2%) and 285 us (1%)
later; meanwhile the other parent, its children and the own new child ran. In the slowest 2-5% the task that
took the CPU was another parent woken by its child's exit on the other vCPU (545 of 795) or the parent's own
new child (164); in the slowest 1-2% the own new child (163 of 265) or another parent (76); in the slowest
1% also ksoftirqd's RCU callbacks (dominant in 103 of 265, ~266 us each) and kworkers. A wake-up of a
parent from the other CPU onto a CPU where another parent was inside fork() took the CPU from it at its next
switch in 18% of 3,669 (2.7% of 4,397 at K8); the new child took the CPU at wake_up_new_task in 0% of the
forks of a parent that had run under 40 us since it was switched in, 27% at 50-60 us, 58% at 60-80 us (2.8%
of 17,695 local children; at K2, alone with its child, 0 of 38,314). A kernel thread woken onto a CPU running
the load ran after p50 7-24 us (the load's autogroup entity, always busy, is past its protected slice at the
root). Children left the parent's vCPU with no CPU idle: 36% / 47% / 69% of them by the parent's CPU
having <= 0 / 1 / >= 2 more runnable tasks than the other at K4, but 0.1% at K2 (both CPUs one parent each).
Interrupts and IPIs cost 4 us a creation at every K (softirq RCU 3.1-3.6 us; IPIs under 0.1 us).
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import numpy as np

SCHED = ("sched_switch", "sched_waking", "sched_wakeup_new", "sched_migrate_task", "sched_process_fork",
         "sched_process_exit")
IRQ = ("irq/softirq_entry", "irq/softirq_exit", "irq/irq_handler_entry", "irq/irq_handler_exit",
       "irq_vectors/local_timer_entry", "irq_vectors/local_timer_exit", "irq_vectors/call_function_entry",
       "irq_vectors/call_function_exit", "irq_vectors/call_function_single_entry",
       "irq_vectors/call_function_single_exit", "irq_vectors/reschedule_entry", "irq_vectors/reschedule_exit")
LINE = re.compile(r"^\s*(.+?)-(\d+)\s+\[(\d+)\]\s+(\S+)\s+([\d.]+):\s+(\w+):\s*(.*)$")
KV = re.compile(r"(\w+)=(\S+)")
ACTION = re.compile(r"action=(\w+)")
KTHREADS = ("ksoftirqd", "rcu_preempt", "kworker")
RUN_BINS = (0, 10, 20, 30, 40, 50, 60, 80, 100, 150, 1e9)  # us the running parent had run since switched in


def record(out: str, parents: int, duration: float, irqs: bool) -> int:
    """The load generator's closed fork loop traced; OUT.trace, OUT.rec, OUT.json."""
    from forksim.calibration.tracefs import TraceInstance
    from forksim.validation.measure import build_tools

    tools = build_tools()
    argv = [str(tools.loadgen), "--mode", "closed", "--kind", "fork", "--parents", str(parents), "--duration",
            f"{duration:g}", "--warmup", "0.3", "--hogs", "0", "--rss", "0", "--helper", str(tools.helper),
            "--out", out]
    # its own instance (96 MiB per CPU, removed afterwards), the mono clock the parser reads as seconds
    with TraceInstance([f"sched/{e}" for e in SCHED] + (list(IRQ) if irqs else []), buffer_kb=98304,
                       name="forksim-ktails", optional=False, clock="mono") as ti:
        ti.start()
        proc = subprocess.run(argv, capture_output=True, text=True, start_new_session=True)
        ti.stop()
        Path(out + ".json").write_text(proc.stdout)
        Path(out + ".trace").write_text((ti.dir / "trace").read_text())
        lost = ti.overruns()
    if proc.returncode != 0:
        print(f"loadgen failed: {proc.stderr.strip()}", file=sys.stderr)
        return 2
    print(f"wrote {out}.trace, {out}.rec, {out}.json (overrun: {lost} events)")
    return 0


class Trace:
    """The trace read once (times in us): per CPU the stretches each task ran (start, end, pid, how it left:
    'R' preempted, else slept or died) and the interrupt intervals (start, end, what); the wake-ups (time,
    waker's CPU, waker pid, wakee pid, target CPU, new task?) and the forks (time, parent pid, child pid)."""

    def __init__(self, lines: Iterator[str]):
        self.runs: dict[int, list[tuple[float, float, int, str]]] = collections.defaultdict(list)
        self.irqs: dict[int, list[tuple[float, float, str]]] = collections.defaultdict(list)
        self.wakes: list[tuple[float, int, int, int, int, bool]] = []
        self.forks: list[tuple[float, int, int]] = []
        self.comm: dict[int, str] = {}
        cur: dict[int, tuple[float, int]] = {}
        opened: dict[tuple[int, str], tuple[float, str]] = {}
        for ln in lines:
            m = LINE.match(ln)
            if not m:
                continue
            pid, cpu, t, name, rest = int(m[2]), int(m[3]), float(m[5]) * 1e6, m[6], m[7]
            if name == "sched_switch":
                d = dict(KV.findall(rest.replace(" ==> ", " ")))
                self.comm[int(d["next_pid"])] = d["next_comm"]
                if cpu in cur:
                    self.runs[cpu].append((cur[cpu][0], t, cur[cpu][1], d["prev_state"][:1]))
                cur[cpu] = (t, int(d["next_pid"]))
            elif name in ("sched_waking", "sched_wakeup_new"):
                d = dict(KV.findall(rest))
                self.wakes.append((t, cpu, pid, int(d["pid"]), int(d["target_cpu"]), name == "sched_wakeup_new"))
            elif name == "sched_process_fork":
                d = dict(KV.findall(rest))
                self.forks.append((t, int(d["pid"]), int(d["child_pid"])))
            elif name.endswith(("_entry", "_exit")) and not name.startswith("sched"):
                self._irq(cpu, t, name, rest, opened)
        for c in self.irqs:
            self.irqs[c].sort()
        self.run_start = {c: np.array([r[0] for r in v]) for c, v in self.runs.items()}
        self.irq_start = {c: np.array([r[0] for r in v]) for c, v in self.irqs.items()}

    def _irq(self, cpu: int, t: float, name: str, rest: str, opened: dict) -> None:
        base, _, edge = name.rpartition("_")
        what = "softirq:" + ACTION.search(rest)[1] if base == "softirq" else base
        if base == "irq_handler":
            what = "irq:" + (re.search(r"name=(\S+)", rest) or re.search(r"irq=(\d+)", rest))[1]
        key = (cpu, "softirq" if base == "softirq" else "hardirq")
        if edge == "entry":
            opened[key] = (t, what)
        elif key in opened:
            t0, w = opened.pop(key)
            self.irqs[cpu].append((t0, t, w))

    def stretches(self, cpu: int, a: float, b: float) -> Iterator[tuple[float, float, int, str]]:
        """The stretches on `cpu` overlapping [a, b]."""
        v = self.runs.get(cpu, [])
        j = max(0, int(np.searchsorted(self.run_start[cpu], a)) - 1) if v else 0
        while j < len(v) and v[j][0] <= b:
            if v[j][1] >= a:
                yield v[j]
            j += 1

    def running(self, cpu: int, t: float) -> tuple[int, tuple[float, float, int, str]] | None:
        """(index, stretch) of what ran on `cpu` at `t`."""
        v = self.runs.get(cpu, [])
        i = int(np.searchsorted(self.run_start[cpu], t)) - 1 if v else -1
        return (i, v[i]) if i >= 0 and v[i][1] >= t else None

    def irq_time(self, cpu: int, a: float, b: float) -> collections.Counter:
        """Microseconds of each kind of interrupt on `cpu` inside [a, b]."""
        out: collections.Counter = collections.Counter()
        v = self.irqs.get(cpu, [])
        j = max(0, int(np.searchsorted(self.irq_start[cpu], a)) - 2) if v else 0
        while j < len(v) and v[j][0] <= b:
            s, e, w = v[j]
            if e > a:
                out[w] += min(e, b) - max(s, a)
            j += 1
        return out

    def tick_near(self, cpu: int, t: float) -> bool:
        """Whether a tick ended on `cpu` in the 30 us before `t` (a switch at a tick, not at a wake-up)."""
        v = self.irqs.get(cpu, [])
        i = int(np.searchsorted(self.irq_start[cpu], t)) if v else 0
        return any(w == "local_timer" and t - 30.0 <= e <= t + 1.0 for _s, e, w in v[max(0, i - 3):i + 1])


def roles(tr: Trace) -> tuple[set[int], dict[int, int]]:
    """The parents (tasks that fork more than 20 children) and each child's parent."""
    n = collections.Counter(p for _t, p, _c in tr.forks)
    parents = {p for p, k in n.items() if k > 20}
    return parents, {c: p for _t, p, c in tr.forks if p in parents}


def who(pid: int, parent: int, child: int, parents: set[int], owner: dict[int, int], comm: dict[int, str]) -> str:
    """What `pid` is to the call of `parent` that created `child`."""
    if pid == 0:
        return "idle"
    if pid == child:
        return "own new child"
    if pid == parent:
        return "itself"
    if pid in parents:
        return "other parent"
    if pid in owner:
        return "own older child" if owner[pid] == parent else "other parent's child"
    name = re.sub(r"[/:]\d+.*$", "", comm.get(pid, "?"))
    return ("kthread:" if name.startswith(KTHREADS) else "other:") + name


def match_calls(tr: Trace, rec: np.ndarray, parents: set[int]) -> list[tuple[np.void, int, int]]:
    """(record, parent pid, child pid) per call: the one fork of the record's parent inside t0..t1 (the load
    generator's parent index -> pid by majority over the calls holding a single fork)."""
    forks = sorted((t, p, c) for t, p, c in tr.forks if p in parents)
    at = np.array([f[0] for f in forks])

    def inside(r: np.void) -> list[tuple[float, int, int]]:
        j = int(np.searchsorted(at, r["t0"] / 1e3))
        k = int(np.searchsorted(at, r["t1"] / 1e3, side="right"))
        return forks[j:k]

    votes: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
    for r in rec[::7]:
        got = inside(r)
        if len(got) == 1:
            votes[int(r["parent"])][got[0][1]] += 1
    pid_of = {i: v.most_common(1)[0][0] for i, v in votes.items()}
    out = []
    for r in rec:
        mine = [f for f in inside(r) if f[1] == pid_of.get(int(r["parent"]))]
        if len(mine) == 1:
            out.append((r, mine[0][1], mine[0][2]))
    return out


def calls(tr: Trace, rec: np.ndarray) -> list[dict]:
    """Per fork() call: its latency and what happened on its parent's CPU inside it."""
    parents, owner = roles(tr)
    wakes_of: dict[int, list] = collections.defaultdict(list)
    for w in tr.wakes:
        wakes_of[w[3]].append(w)
    new_cpu = {w[3]: w[4] for w in tr.wakes if w[5]}
    out = []
    for r, P, C in match_calls(tr, rec, parents):
        a, b = r["t0"] / 1e3, r["t1"] / 1e3
        d = {"lat": b - a, "t0": a, "P": P, "C": C, "on": 0.0, "off": collections.Counter(), "preempted": 0,
             "irq": collections.Counter(), "child_local": int(new_cpu.get(C, -1) == r["pcpu0"]), "outs": []}
        mine = sorted(s + (c,) for c in tr.runs for s in tr.stretches(c, a, b) if s[2] == P)
        for k, (s, e, _p, how, cpu) in enumerate(mine):
            d["on"] += min(e, b) - max(s, a)
            d["irq"].update(tr.irq_time(cpu, max(s, a), min(e, b)))
            if e >= b:
                break
            back = min(mine[k + 1][0] if k + 1 < len(mine) else b, b)
            d["preempted"] += how == "R"
            first = None
            for s3, e3, q, _h in tr.stretches(cpu, e, back):
                if q != P:
                    d["off"][who(q, P, C, parents, owner, tr.comm)] += min(e3, back) - max(s3, e)
                    first = first if first is not None else q
            if first is not None:
                w = ([x for x in wakes_of.get(first, []) if x[0] <= e] or [None])[-1]
                d["outs"].append({"how": how, "role": who(first, P, C, parents, owner, tr.comm), "at_us": e - a,
                                  "back_us": back - e, "woken_by": who(w[2], P, C, parents, owner, tr.comm) if w else None,
                                  "new": bool(w[5]) if w else None, "remote": (w[1] != cpu) if w else None,
                                  "tick": tr.tick_near(cpu, e)})
        out.append(d)
    return out


def summarise(g: list[dict]) -> dict:
    """One group of calls: means per call, the first switch-out inside it and who had woken what took the CPU."""
    n = len(g)
    off, irq, first, woke = collections.Counter(), collections.Counter(), collections.Counter(), collections.Counter()
    for d in g:
        off.update(d["off"])
        irq.update(d["irq"])
        for o in d["outs"][:1]:
            first[f"{o['how']}:{o['role']}"] += 1
            woke[f"{o['role']} woken by {o['woken_by']} ({'new' if o['new'] else 'wake'}, "
                 f"{'other' if o['remote'] else 'same'} cpu{', tick' if o['tick'] else ''})"] += 1
    outs = [d["outs"][0] for d in g if d["outs"]]
    return {
        "n": n, "lat_mean_us": round(float(np.mean([d["lat"] for d in g])), 1),
        "lat_range_us": [round(min(d["lat"] for d in g), 1), round(max(d["lat"] for d in g), 1)],
        "on_cpu_mean_us": round(float(np.mean([d["on"] for d in g])), 1),
        "off_cpu_mean_us": {k: round(v / n, 1) for k, v in off.most_common(8)},
        "irq_while_on_mean_us": {k: round(v / n, 1) for k, v in irq.most_common(5)},
        "share_preempted": round(sum(d["preempted"] > 0 for d in g) / n, 3),
        "share_child_local": round(sum(d["child_local"] for d in g) / n, 3),
        "first_switch_out": dict(first.most_common(8)),
        "its_taker_woken": dict(woke.most_common(8)),
        "switch_out_at_us_p50": round(float(np.median([o["at_us"] for o in outs])), 1) if outs else None,
        "back_after_us_p50": round(float(np.median([o["back_us"] for o in outs])), 1) if outs else None,
    }


def in_fork(cs: list[dict]) -> dict[int, tuple[np.ndarray, list[dict]]]:
    """Per parent pid: its calls' start times (sorted) and the calls."""
    by: dict[int, list[dict]] = collections.defaultdict(list)
    for d in cs:
        by[d["P"]].append(d)
    return {p: (np.array([d["t0"] for d in v]), v) for p, v in ((p, sorted(v, key=lambda d: d["t0"])) for p, v in by.items())}


def takeovers(tr: Trace, cs: list[dict]) -> dict:
    """The rules that preempt a parent: per kind of wake-up onto a CPU where a parent runs, how often the
    running parent was switched out runnable (R) for the wakee at its next switch, by how long it had run."""
    parents, owner = roles(tr)
    calls_of = in_fork(cs)
    got: dict[str, list[tuple[float, bool]]] = collections.defaultdict(list)
    kthread_wait: dict[str, list[float]] = collections.defaultdict(list)
    for t, cpu, waker, wakee, target, new in tr.wakes:
        run = tr.running(target, t)
        if run is None:
            continue
        i, (s, e, p, how) = run
        nxt = tr.runs[target][i + 1][2] if i + 1 < len(tr.runs[target]) else None
        took = how == "R" and nxt == wakee
        kind = None
        if new and wakee in owner and waker == p and target == cpu and p in parents:
            kind = "own new child, local (wake_up_new_task)"
        elif not new and wakee in parents and target != cpu and p in parents:
            starts, v = calls_of.get(p, (np.zeros(0), []))
            j = int(np.searchsorted(starts, t)) - 1
            if j >= 0 and v[j]["t0"] + v[j]["lat"] >= t:
                kind = "another parent woken from the other CPU, the running parent inside fork()"
        elif not new and tr.comm.get(wakee, "").startswith(KTHREADS) and (p in parents or p in owner):
            k = next(x for x in KTHREADS if tr.comm[wakee].startswith(x))
            kind = f"{k} woken onto a CPU running the load"
            later = [x for x in tr.runs[target][i + 1:i + 6] if x[2] == wakee]
            if later:
                kthread_wait[k].append(later[0][0] - t)
        if kind is not None:
            got[kind].append((t - s, took))
    out = {}
    for kind, v in got.items():
        ran = np.array([x[0] for x in v])
        took = np.array([x[1] for x in v])
        bins = {f"{lo:g}-{hi:g}": [int(m.sum()), round(float(took[m].mean()), 3)]
                for lo, hi in zip(RUN_BINS, RUN_BINS[1:]) if (m := (ran >= lo) & (ran < hi)).sum()}
        out[kind] = {"n": len(v), "took_the_cpu": round(float(took.mean()), 3), "by_us_run_since_switch_in": bins}
    for k, w in kthread_wait.items():
        out[f"{k} woken onto a CPU running the load"]["ran_after_us_p50_p90_p99"] = \
            [round(float(x), 1) for x in np.percentile(w, [50, 90, 99])]
    return out


def placement(tr: Trace) -> dict:
    """Where new children went, and each CPU's time by role (percent of the trace)."""
    parents, owner = roles(tr)
    new = [(cpu, target) for _t, cpu, waker, wakee, target, is_new in tr.wakes if is_new and waker in parents]
    span = max(v[-1][1] for v in tr.runs.values()) - min(v[0][0] for v in tr.runs.values())
    shares = {}
    for c, v in sorted(tr.runs.items()):
        t: collections.Counter = collections.Counter()
        for s, e, p, _h in v:
            t["idle" if p == 0 else "parent" if p in parents else "child" if p in owner else
              "other:" + tr.comm.get(p, "?")] += e - s
        shares[f"cpu{c}"] = {k: round(100 * x / span, 1) for k, x in t.most_common(6)}
    return {"children_on_the_other_cpu": round(sum(c != t for c, t in new) / max(1, len(new)), 3),
            "cpu_shares_pct": shares}


def show(prefix: str, json_out: str | None) -> int:
    from forksim.validation.measure import REC_DTYPE

    with open(prefix + ".trace") as f:
        tr = Trace(f)
    rec = np.fromfile(prefix + ".rec", dtype=REC_DTYPE)
    end = max(v[-1][1] for v in tr.runs.values())
    rec = rec[(rec["t0"] > 0) & (rec["t2"] / 1e3 < end)]
    cs = calls(tr, rec)
    order = np.argsort([d["lat"] for d in cs])
    n = len(cs)
    groups = {"slowest 1%": order[-n // 100:], "slowest 1-2%": order[-n // 50:-n // 100],
              "slowest 2-5%": order[-n // 20:-n // 50], "p50-p95": order[n // 2:-n // 20], "fastest 50%": order[:n // 2]}
    lat = np.array([d["lat"] for d in cs])
    first = collections.Counter(f"{d['outs'][0]['how']}:{d['outs'][0]['role']}" if d["outs"] else "not switched out"
                                for d in cs)
    res = {"calls": n, "records": int(len(rec)), "fork_p50_us": round(float(np.median(lat)), 1),
           "fork_p99_us": round(float(np.quantile(lat, 0.99)), 1),
           "throughput_per_s": round(len(rec) / ((rec["t2"].max() - rec["t0"].min()) / 1e9)),
           "first_switch_out_share": {k: round(v / n, 4) for k, v in first.most_common(8)},
           **placement(tr), "takeovers": takeovers(tr, cs),
           "groups": {k: summarise([cs[i] for i in v]) for k, v in groups.items() if len(v)}}
    text = json.dumps(res, indent=1)
    print(text)
    if json_out:
        Path(json_out).write_text(text + "\n")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record", help="trace one load generator run (root; tracefs)")
    r.add_argument("out")
    r.add_argument("--parents", type=int, default=4)
    r.add_argument("--duration", type=float, default=1.5, help="seconds after the 0.3 s warm-up (default 1.5)")
    r.add_argument("--no-irqs", action="store_true", help="the scheduler's events only")
    s = sub.add_parser("show", help="analyse a recorded run")
    s.add_argument("prefix")
    s.add_argument("--json")
    a = ap.parse_args()
    if a.cmd == "record":
        return record(a.out, a.parents, a.duration, not a.no_irqs)
    return show(a.prefix, a.json)


if __name__ == "__main__":
    sys.exit(main())
