"""What the slowest creations of the validation's closed loop hold: run the real load generator under
tracefs (interrupts, softirqs, the tick, IPIs, switches on every CPU) and, for the slowest 1% of calls
(or round trips) against the middle 200, the microseconds of each kind of event inside them; then the
RCU softirq per creation on each CPU (in tasks and in ksoftirqd) and its bursts. Needs root and tracefs.

    python tools/tail_trace.py [--kind fork|vfork|posix_spawn|thread] [--duration S] [--pin] [--json OUT]
    python tools/tail_trace.py --parse PREFIX      # analyse PREFIX.trace / PREFIX.rec written before

2026-12-02 (busy box, closed-fork-K1-rss0's loop, 1.5 s): the slowest 1% of fork() calls (mean 448 us)
held 191 us of softirq RCU and 18 us of tick each; the middle 200 held 0.1 us of RCU. The profile's
`rcu_callbacks` (forksim/calibration/rcu.py) models it.
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

T = Path("/sys/kernel/tracing/instances/forksim-tails")
EVENTS = ("irq/softirq_entry", "irq/softirq_exit", "irq/irq_handler_entry", "irq/irq_handler_exit",
          "irq_vectors/local_timer_entry", "irq_vectors/local_timer_exit", "irq_vectors/call_function_entry",
          "irq_vectors/call_function_exit", "irq_vectors/call_function_single_entry",
          "irq_vectors/call_function_single_exit", "irq_vectors/reschedule_entry", "irq_vectors/reschedule_exit",
          "sched/sched_switch")
ACTION = re.compile(r"action=(\w+)")
LINE = re.compile(r"^\s*(.+?)-(\d+)\s+\[(\d+)\]\s+\S+\s+([\d.]+):\s+(\w+):\s*(.*)$")


def record(kind: str, duration: float, pin: bool, prefix: str) -> None:
    """The load generator (one parent, RSS 0) under a tracefs instance of its own."""
    from forksim.calibration.tracefs import mount_tracefs
    from forksim.validation.measure import build_tools

    tools = build_tools()
    mount_tracefs()  # a fresh VM boots without tracefs
    T.mkdir(exist_ok=True)
    try:
        for f, v in (("tracing_on", "0"), ("buffer_size_kb", "65536"), ("trace_clock", "mono")):
            (T / f).write_text(v)
        for ev in EVENTS:
            (T / "events" / ev / "enable").write_text("1")
        (T / "trace").write_text("")
        (T / "tracing_on").write_text("1")
        subprocess.run([str(tools.loadgen), "--mode", "closed", "--kind", kind, "--parents", "1", "--duration",
                        f"{duration:g}", "--warmup", "0.2", "--hogs", "0", "--rss", "0", *(["--pin"] if pin else []),
                        "--helper", str(tools.helper), "--out", prefix], check=True, stdout=subprocess.DEVNULL)
        (T / "tracing_on").write_text("0")
        Path(prefix + ".trace").write_text((T / "trace").read_text())
    finally:
        (T / "tracing_on").write_text("0")
        for ev in EVENTS:
            (T / "events" / ev / "enable").write_text("0")
        T.rmdir()


def intervals(path: str) -> tuple[dict[int, list[tuple[float, float, str]]], dict[int, int]]:
    """Per CPU, (start us, end us, what) of every handler and softirq (a switch: zero length, 'switch');
    and the pids of ksoftirqd seen per CPU."""
    iv: dict[int, list[tuple[float, float, str]]] = collections.defaultdict(list)
    opened: dict[tuple[int, str], tuple[float, str]] = {}
    ksoft: dict[int, int] = {}
    for line in open(path):
        m = LINE.match(line)
        if not m:
            continue
        comm, pid, cpu, t, name, rest = m[1].strip(), int(m[2]), int(m[3]), float(m[4]) * 1e6, m[5], m[6]
        if name == "sched_switch":
            iv[cpu].append((t, t, "switch"))
            continue
        base, _, edge = name.rpartition("_")
        what = "softirq:" + ACTION.search(rest)[1] if base == "softirq" else base
        if base == "softirq" and comm.startswith("ksoftirqd"):
            what += " (ksoftirqd)"
            ksoft[cpu] = pid
        if edge == "entry":
            opened[(cpu, base)] = (t, what)
        elif edge == "exit" and (cpu, base) in opened:
            t0, what = opened.pop((cpu, base))
            iv[cpu].append((t0, t, what))
    for c in iv:
        iv[c].sort()
    return iv, ksoft


def analyse(prefix: str, field: str = "fork") -> dict:
    from forksim.validation.measure import REC_DTYPE

    iv, _ = intervals(prefix + ".trace")
    starts = {c: np.array([x[0] for x in v]) for c, v in iv.items()}
    rec = np.fromfile(prefix + ".rec", dtype=REC_DTYPE)
    rec = rec[rec["t0"] > 0]
    end = rec["t1"] if field == "fork" else rec["t2"]
    lat = (end - rec["t0"]) / 1e3
    order = np.argsort(lat)
    groups = {"slowest 1%": order[-max(10, len(rec) // 100):], "middle 200": order[len(rec) // 2 - 100:len(rec) // 2 + 100]}
    out: dict = {"n": int(len(rec)), "p50_us": float(np.median(lat)), "p99_us": float(np.quantile(lat, 0.99))}
    for name, sel in groups.items():
        tot: collections.Counter = collections.Counter()
        for i in sel:
            a, b = rec["t0"][i] / 1e3, end[i] / 1e3
            for c in {int(rec["pcpu0"][i]), int(rec["pcpu1"][i])} & set(iv):
                j = max(0, int(np.searchsorted(starts[c], a - 2000)))
                while j < len(iv[c]) and iv[c][j][0] <= b:
                    s, e, what = iv[c][j]
                    tot[what] += (1 if what == "switch" else max(0.0, min(e, b) - max(s, a))) if e >= a else 0
                    j += 1
        out[name] = {"mean_us": round(float(lat[sel].mean()), 1),
                     "inside_us_each": {k: round(v / len(sel), 1) for k, v in tot.most_common(8)}}
    span = (rec["t2"].max() - rec["t0"].min()) / 1e3
    for c, v in sorted(iv.items()):
        rcu = [(e - s, "ksoftirqd" in w) for s, e, w in v if w.startswith("softirq:RCU")]
        if rcu:
            out[f"cpu{c}_rcu"] = {"ms_per_s": round(sum(d for d, _ in rcu) / span * 1e3, 2),
                                  "us_per_creation": round(sum(d for d, _ in rcu) / len(rec), 2),
                                  "ksoftirqd_share": round(sum(d for d, k in rcu if k) / sum(d for d, _ in rcu), 2)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kind", default="fork", choices=("fork", "vfork", "posix_spawn", "thread"))
    ap.add_argument("--duration", type=float, default=1.5, help="seconds (default 1.5)")
    ap.add_argument("--pin", action="store_true", help="pin the parent (and its children) as the -pin rows do")
    ap.add_argument("--round-trip", action="store_true", help="the round trips instead of the calls")
    ap.add_argument("--parse", metavar="PREFIX", help="analyse PREFIX.trace and PREFIX.rec written before")
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args()
    prefix = args.parse or str(Path(tempfile.mkdtemp(prefix="forksim-tails-")) / "run")
    if not args.parse:
        record(args.kind, args.duration, args.pin, prefix)
        print(f"trace: {prefix}.trace", file=sys.stderr)
    res = analyse(prefix, "rt" if args.round_trip else "fork")
    import json

    text = json.dumps(res, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
