"""Trace the scheduler under a validation load: where the hogs, parents and children run, how long a
woken parent or a new child waits, and whom it waited behind (issue 14, the busy machine).

    sudo python tools/sched_trace.py record OUT [--nice N] -- LOADGEN_ARGS...
    python tools/sched_trace.py show OUT.trace [OUT.trace ...]

`record` runs the validation's load generator (built as forksim.validation.measure builds it) in a
session of its own, as `measure` does (start_new_session: its own autogroup), with the sched_switch,
sched_wakeup, sched_wakeup_new, sched_migrate_task and sched_process_fork tracepoints on in a
tracefs instance of its own; it writes OUT.trace, OUT.json (the load generator's summary) and
OUT.rec. `--nice N` sets the session's autogroup nice value first: on a box others are using,
-20 keeps their tasks off our CPUs' time (the weight of the whole group against theirs; the tasks
inside it stay nice 0), but it also scales the root runqueue loads that fork and wake placement
compare, so only a quiet run (nice 0) says where the kernel places children.

`show` classifies the tasks (hogs: forked by the loadgen, never sleep; parents: fork more than 20
children; children) and prints each CPU's time by role, the children's placement, and the
wake-to-run waits of parents and children by the task they switched in after: a wake-up that
preempts a running hog at once (under 50 us) is EEVDF's wake-up preemption (the wakee's positive
lag drags V below the hog's vruntime: pick_eevdf drops the ineligible hog); the rest waited for the
hog's protected slice to end at a tick (RUN_TO_PARITY). Per fork by a parent it also says where the child
was placed and what the parent's next switch-out was: its sleep in wait, or a preemption (at fork()'s
return when the child or another task displaced it). From the load generator's own records (OUT.rec: each
call's start and end, on the trace's clock) it says in how many fork() calls the parent was switched out
runnable, who took the CPU (a parent, a child, or a kernel thread by name) and how long the parent stayed off it:
on 2026-12-06 (AMD zen4 host, 1 s, RSS 0) 0.6% of K1's calls (ksoftirqd 0.31%, rcu_preempt 0.17%, a kworker
0.06%; off p50 91 us), 4.7% of K4's (a parent 2.60%, a child 0.88%, rcu_preempt 0.78%; 221 us) and 2.8% of K8's
(a parent 1.07%, a child 0.82%, a kworker 0.36%, rcu_preempt 0.32%, ksoftirqd 0.23%; 345 us), where the model
then had neither kernel thread.

2026-12-03 01:19 UTC (Intel Xeon host, quiet, nice 0, 1.5 s, RSS 0): four parents (closed-fork-K4-rss0's
loop), 31,823 forks: the child on the parent's CPU 58%; the parent's next switch-out its sleep in wait
97.2% (then its own child 38.5%, another parent's child 30.9%, another parent 24.7%), a preemption 2.8%.
Two parents: 99% local, asleep 99.8%. One parent (1 s runs, 01:53), by where this child and the previous one
ran (L: the parent's CPU): fork R after L 43% (call p50 39.2 us), L after R 43% (39.6), L after L 13% (21.8);
vfork 44% (52.7), 44% (9.7), 11% (8.2); pthread_create 45% (15.6), 45% (7.5), 9% (3.5). The model with EEVDF on (a profile with a `balancing` section) keeps
97% of K4's children local and 89% of them start before fork() returns: both parents of a CPU runnable at
nearly every fork, the forking one a few us past V, so pick_eevdf drops it for its child (a regime the
kernel does not enter), which is why calibrate emits no `balancing` section yet (issue 14).

With one parent, `show` also says how the hogs sat beside it (`hog_layout`). 2026-12-06 09:35 UTC (AMD EPYC
family 25 model 17 host, quiet, 3 s, RSS 256 MiB, one parent beside 4 hogs, validate's
closed-fork-K1-rss256MiB-hogs4): 0 hogs on the parent's CPU 32% of the time, 1 13%, 2 37%, 3 19%; 4.1 hog
migrations/s; 3 moves in 57 busy-balance intervals in which the kernel's rule moves a task; fork() preempted in 28%
of the forks (p50 3.4 ms). The model with the shipped profile keeps 1 or 2 hogs there (45% / 55%), moves hogs
10 times a second and preempts most forks (p50 12 ms). A per-pass probability of 0.05 that a busy pass moves
the task it found (tried that day, not kept) made the model's layouts stick rather than wander as these do:
two parents beside 2 hogs went from +45% to +173% in throughput.
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
INSTANCE = TRACEFS / "instances" / "forksim-sched"
EVENTS = ("sched_switch", "sched_wakeup", "sched_wakeup_new", "sched_migrate_task", "sched_process_fork")
LINE = re.compile(r"^\s*(.+?)-(\d+)\s+\[(\d+)\]\s+\S+\s+([\d.]+): (\w+): (.*)$")
KV = re.compile(r"(\w+)=(\S+)")
IMMEDIATE_US = 50.0  # a wake-up that switched in within this preempted at once (wake-up preemption)


def _events(on: bool) -> None:
    for e in EVENTS:
        (INSTANCE / "events" / "sched" / e / "enable").write_text("1" if on else "0")


def record(out: str, nice: int, loadgen_args: list[str]) -> int:
    """Run the load generator with the tracepoints on; OUT.trace/.json/.rec."""
    from forksim.calibration.tracefs import mount_tracefs
    from forksim.validation.measure import build_tools

    tools = build_tools()
    mount_tracefs()  # a fresh VM boots without tracefs
    INSTANCE.mkdir(exist_ok=True)
    (INSTANCE / "tracing_on").write_text("0")
    (INSTANCE / "trace_clock").write_text("mono")
    (INSTANCE / "buffer_size_kb").write_text("16384")
    (INSTANCE / "trace").write_text("")
    _events(True)
    cmd = f"echo {nice} > /proc/self/autogroup; exec \"$@\""
    argv = [str(tools.loadgen), *loadgen_args, "--helper", str(tools.helper), "--out", out]
    try:
        (INSTANCE / "tracing_on").write_text("1")
        proc = subprocess.run(["bash", "-c", cmd, "loadgen", *argv], capture_output=True, text=True,
                              start_new_session=True)
        (INSTANCE / "tracing_on").write_text("0")
        Path(out + ".json").write_text(proc.stdout)
        Path(out + ".trace").write_text((INSTANCE / "trace").read_text())
    finally:
        _events(False)
        (INSTANCE / "trace").write_text("")
    if proc.returncode != 0:
        print(f"loadgen failed: {proc.stderr.strip()}", file=sys.stderr)
        return 2
    print(f"wrote {out}.trace, {out}.json, {out}.rec")
    return 0


def parse(path: str) -> list[tuple[float, int, str, dict[str, str]]]:
    """(time us, cpu, event, fields) of each event line, in time order."""
    ev = []
    for ln in open(path):
        m = LINE.match(ln)
        if m:
            _comm, _pid, cpu, ts, name, rest = m.groups()
            ev.append((float(ts) * 1e6, int(cpu), name, dict(KV.findall(rest.replace(" ==> ", " ")))))
    ev.sort(key=lambda e: e[0])
    return ev


def roles(ev: list) -> dict[int, str]:
    """pid -> hog, parent, child or master (the loadgen's own process)."""
    kids = collections.defaultdict(list)
    loadgen, sleeps = set(), collections.Counter()
    for _t, _c, name, d in ev:
        if name == "sched_process_fork":
            kids[int(d["pid"])].append(int(d["child_pid"]))
        elif name == "sched_switch":
            for k in ("prev", "next"):
                if d[k + "_comm"] == "loadgen":
                    loadgen.add(int(d[k + "_pid"]))
            if not d["prev_state"].startswith("R"):
                sleeps[int(d["prev_pid"])] += 1
    role = {}
    for p, cs in kids.items():
        if len(cs) > 20:
            role[p] = "parent"
            role.update((c, "child") for c in cs)
    for p in loadgen - set(role):
        role[p] = "hog" if sleeps[p] <= 2 else "master"
    return role


def timeline(ev: list, role: dict[int, str]) -> tuple[dict, dict, collections.Counter]:
    """Each CPU's time by role, the wake-to-run waits keyed by (wakee role, role and state of the task
    it switched in after), and the hogs' CPUs per run."""
    name = lambda pid: role.get(pid, "idle" if pid == 0 else "other")  # noqa: E731
    share, waits, hogs = collections.defaultdict(float), collections.defaultdict(list), collections.Counter()
    cur, pending = {}, {}
    for t, cpu, ev_name, d in ev:
        if ev_name in ("sched_wakeup", "sched_wakeup_new"):
            pending[int(d["pid"])] = t
        elif ev_name == "sched_switch":
            prev, nxt = int(d["prev_pid"]), int(d["next_pid"])
            if cpu in cur:
                share[(cpu, name(cur[cpu][0]))] += t - cur[cpu][1]
            cur[cpu] = (nxt, t)
            if name(nxt) == "hog":
                hogs[(nxt, cpu)] += 1
            if nxt in pending:
                waits[(name(nxt), name(prev), d["prev_state"][:1])].append(t - pending.pop(nxt))
    return share, waits, hogs


def fork_outcomes(ev: list, role: dict[int, str]) -> tuple[int, int, collections.Counter]:
    """Per fork by a parent: whether the new child was placed on the parent's CPU, and the parent's next
    switch-out after it: its sleep in wait (S) or a preemption (R, at fork()'s return or later), with the
    role of the task that ran next ("own child" for its child). (forks, children local, outcomes)."""
    forks, local, outcome = 0, 0, collections.Counter()
    child_of, fork_cpu = {}, {}  # parent pid -> its newest child, the CPU it forked on
    for _t, cpu, name, d in ev:
        if name == "sched_process_fork":
            parent = int(d["pid"])
            if role.get(parent) == "parent":
                child_of[parent], fork_cpu[parent] = int(d["child_pid"]), cpu
                forks += 1
        elif name == "sched_wakeup_new":
            pid = int(d["pid"])
            for parent, child in child_of.items():
                if child == pid and fork_cpu.get(parent) == int(d["target_cpu"]):
                    local += 1
        elif name == "sched_switch":
            prev, nxt = int(d["prev_pid"]), int(d["next_pid"])
            if fork_cpu.pop(prev, None) is not None:
                who = "own child" if nxt == child_of.get(prev) else role.get(nxt, "idle" if nxt == 0 else "other")
                outcome[("preempted" if d["prev_state"].startswith("R") else "slept", who)] += 1
    return forks, local, outcome


def placement_sequence(rec_path: Path) -> list[str]:
    """From the load generator's own records (OUT.rec, one parent): each creation by where its child ran
    (L: the parent's CPU, R: another) and where the previous one's did, with its share and call p50. A
    single parent's loop alternates L and R on this kernel, and the call after an R pays its CPU's halt."""
    from forksim.validation.loadgen import REC_DTYPE

    r = np.fromfile(rec_path, dtype=REC_DTYPE)
    if len(r) < 3 or len(set(r["parent"].tolist())) != 1:
        return []
    call = (r["t1"] - r["t0"])[1:] / 1e3
    local = r["ccpu"] == r["pcpu0"]
    prev, this = local[:-1], local[1:]
    out = []
    for p, t in ((True, True), (False, True), (True, False), (False, False)):
        m = (prev == p) & (this == t)
        if m.any():
            out.append(f"{'L' if t else 'R'} after {'L' if p else 'R'} {100 * m.mean():.1f}% (call p50 "
                       f"{np.median(call[m]):.1f} us)")
    return out


def switched_in_fork(ev: list, role: dict[int, str], rec_path: Path) -> tuple[int, collections.Counter, list[float]]:
    """The fork() calls (the load generator's own t0..t1, CLOCK_MONOTONIC as the trace's mono clock) inside which
    the parent was switched out runnable: (calls in the trace, who took the CPU at the first such switch: the role
    of a task of the load, else its comm without the CPU suffix, the time the parent spent off the CPU in each)."""
    from forksim.validation.loadgen import REC_DTYPE

    r = np.fromfile(rec_path, dtype=REC_DTYPE)
    forks = collections.defaultdict(list)  # parent pid -> its sched_process_fork times
    out = collections.defaultdict(list)  # pid -> (time, "out"/"in", state, next pid, next comm)
    for t, _cpu, name, d in ev:
        if name == "sched_process_fork" and role.get(int(d["pid"])) == "parent":
            forks[int(d["pid"])].append(t)
        elif name == "sched_switch":
            out[int(d["prev_pid"])].append((t, "out", d["prev_state"], int(d["next_pid"]), d["next_comm"]))
            out[int(d["next_pid"])].append((t, "in", "", 0, ""))
    if not len(r) or not forks:
        return 0, collections.Counter(), []
    fk = {p: np.array(v) for p, v in forks.items()}
    pid_of = {}  # the load generator's parent index -> pid: whose forks fall inside that index's calls
    for i in np.unique(r["parent"]):
        rr = r[r["parent"] == i][:200]
        pid_of[int(i)] = max(fk, key=lambda p: sum(bool(((fk[p] >= a / 1e3) & (fk[p] <= b / 1e3)).any())
                                                   for a, b in zip(rr["t0"], rr["t1"])))
    times = {p: np.array([e[0] for e in v]) for p, v in out.items()}
    lo_t, hi_t = ev[0][0], ev[-1][0]
    calls, who, off = 0, collections.Counter(), []
    for rec in r:
        a, b = rec["t0"] / 1e3, rec["t1"] / 1e3
        pid = pid_of[int(rec["parent"])]
        if not (lo_t < a and b < hi_t) or pid not in times:
            continue
        calls += 1
        evs = out[pid][np.searchsorted(times[pid], a):np.searchsorted(times[pid], b)]
        first = next((e for e in evs if e[1] == "out" and e[2].startswith("R")), None)
        if first is None:
            continue
        who[role.get(first[3]) or first[4].split("/")[0].rstrip("0123456789.:-") or "idle"] += 1
        away, since = 0.0, None
        for t, kind, *_ in evs:
            if kind == "out":
                since = t
            elif since is not None:
                away, since = away + t - since, None
        off.append(away + (b - since if since is not None else 0.0))
    return calls, who, off


def hog_layout(ev: list, role: dict[int, str]) -> tuple[collections.Counter, int, float, int]:
    """How the hogs sat beside one parent over the trace: seconds by the number of hogs on the CPU the parent last
    ran on, and the hogs' migrations; and the busy CPUs' periodic balancing as the kernel's rule has it: intervals
    of 32 ms (a 2-CPU domain's balance_interval 2 ms x busy_factor 16) during which a CPU running something held two
    or more fewer of the load's runnable tasks than one where a task waited (both of calculate_imbalance's cases
    move a task then), and the moves of a waiting task onto such a CPU (sched_migrate_task) in them."""
    hogs = {p for p, r in role.items() if r == "hog"}
    ours = set(role)
    where: dict[int, int] = {}
    running: dict[int, int] = {}
    waiting: dict[int, int] = {}
    by_count: collections.Counter = collections.Counter()
    parent_cpu, last, chance_us, pulls, migrations = None, None, 0.0, 0, 0

    def ours_on(c: int) -> int:
        return (running.get(c) in ours) + sum(1 for w in waiting.values() if w == c)

    def short(dst: int, src: int) -> bool:
        return running.get(dst, 0) > 0 and ours_on(src) - ours_on(dst) >= 2

    for t, cpu, name, d in ev:
        if last is not None:
            if parent_cpu is not None and len(where) == len(hogs):
                by_count[sum(1 for c in where.values() if c == parent_cpu)] += (t - last) / 1e6
            if any(short(c, w) for c in running for w in set(waiting.values()) if w != c):
                chance_us += t - last
        last = t
        if name == "sched_switch":
            nxt, prev = int(d["next_pid"]), int(d["prev_pid"])
            running[cpu] = nxt
            waiting.pop(nxt, None)
            if prev in ours and d["prev_state"].startswith("R"):
                waiting[prev] = cpu
            if nxt in hogs:
                where[nxt] = cpu
            elif role.get(nxt) == "parent":
                parent_cpu = cpu
        elif name in ("sched_wakeup", "sched_wakeup_new") and int(d["pid"]) in ours:
            waiting[int(d["pid"])] = int(d.get("target_cpu", cpu))
        elif name == "sched_migrate_task":
            pid, dest = int(d["pid"]), int(d["dest_cpu"])
            if pid in hogs:
                migrations += 1
                where[pid] = dest
            if pid in waiting:
                pulls += short(dest, waiting[pid])
                waiting[pid] = dest
    return by_count, migrations, chance_us / 32e3, pulls


def show(path: str) -> None:
    ev = parse(path)
    role = roles(ev)
    forks, local, outcome = fork_outcomes(ev, role)
    share, waits, hogs = timeline(ev, role)
    span = ev[-1][0] - ev[0][0]
    print(f"{path}: {span / 1e3:.0f} ms, tasks: {dict(collections.Counter(role.values()))}")
    for cpu in sorted({c for c, _ in share}):
        print(f"  cpu{cpu}: " + ", ".join(f"{r} {100 * v / span:.0f}%" for (c, r), v in sorted(share.items()) if c == cpu))
    print("  hog runs by (pid, cpu):", dict(hogs))
    if sum(r == "parent" for r in role.values()) == 1 and hogs:
        by_count, migrations, chances, pulls = hog_layout(ev, role)
        total = sum(by_count.values()) or 1.0
        print("  hogs on the parent's CPU, share of time: "
              + ", ".join(f"{k}: {100 * v / total:.0f}%" for k, v in sorted(by_count.items()))
              + f"; hog migrations {migrations / (span / 1e6):.1f}/s; busy balancing: {pulls} moves in "
              f"{chances:.0f} intervals of 32 ms that the kernel's rule would move a task in")
    if forks:
        print(f"  {forks} forks: the child on the parent's CPU {100 * local / forks:.0f}%; the parent's next switch-out: "
              + ", ".join(f"{st} then {who} {100 * n / forks:.1f}%" for (st, who), n in outcome.most_common()))
    rec = Path(path).with_suffix(".rec")
    calls, who, off = switched_in_fork(ev, role, rec) if rec.exists() else (0, None, [])
    if off:
        print(f"  the parent switched out (runnable) inside {100 * len(off) / calls:.1f}% of {calls} fork() calls, the "
              "CPU taken by " + ", ".join(f"{k} {100 * n / calls:.2f}%" for k, n in who.most_common())
              + f"; off the CPU p50 {np.median(off):.0f} us, p90 {np.percentile(off, 90):.0f} us")
    seq = placement_sequence(rec) if rec.exists() else []
    if seq:
        print("  by where this child and the previous one ran: " + ", ".join(seq))
    for key in sorted(waits, key=lambda k: -len(waits[k])):
        w = np.array(waits[key])
        if key[0] in ("parent", "child") and len(w) >= 20:
            print(f"  {key[0]:6s} switched in after {key[1]:6s}({key[2]}): n={len(w):5d}  wait p10 "
                  f"{np.percentile(w, 10):5.0f}  p50 {np.median(w):5.0f}  p90 {np.percentile(w, 90):5.0f} us")
    for who in ("parent", "child"):
        w = np.array(waits.get((who, "hog", "R"), []))
        if w.size:
            late = w[w >= IMMEDIATE_US]
            print(f"  {who} woken beside a running hog: {100 * np.mean(w < IMMEDIATE_US):.0f}% preempted it at once; "
                  f"the rest waited p50 {np.median(late) if late.size else 0:.0f} us (to a tick)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record", help="trace one load generator run (root; tracefs)")
    r.add_argument("out")
    r.add_argument("--nice", type=int, default=0, help="the run's autogroup nice value (default 0)")
    s = sub.add_parser("show", help="analyse recorded traces")
    s.add_argument("traces", nargs="+")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)  # the load generator's own flags follow --
    args = ap.parse_args(argv[:cut])
    if args.cmd == "record":
        return record(args.out, args.nice, argv[cut + 1:])
    for t in args.traces:
        show(t)
    return 0


if __name__ == "__main__":
    sys.exit(main())
