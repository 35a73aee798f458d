"""Trace Redis BGSAVE forks (the validation's way: forksim.validation.apps) against forkbench's cold unpinned fork.

    python tools/redis_trace.py --sizes 64,256 --blocks 4 --per 6 --out DIR     (needs root, tracefs)
    python tools/redis_trace.py --parse DIR

At each dataset size, blocks alternate: `per` BGSAVEs of a private redis-server 1 s apart (latest_fork_usec
each), then forkbench `cold -s 1000000 -c -1` with `per` forks at the same RSS. Each block runs under a tracefs
instance of its own (sched_switch, sched_wakeup_new, sched_migrate_task on all CPUs; clone/clone3 enter/exit
and ipi_send_cpu/ipi_send_cpumask of the forking pid only) and /proc/stat's steal ticks around it, and the
forking process's image layout (scatter, forksim.lab.pagemap.image_layout: Redis's after the block, forkbench's
once its image is touched): the two differ in how far their pages are from physical order, which fork's
per-page walk pays for.
Per fork: the child's CPU (sched_wakeup_new target_cpu) against the other CPU's state (idle, and for how long
since it switched to the idle task; or running a foreign task), the time in clone (enter -> exit), the IPIs the
parent sent inside clone, and the parent's wait after clone: preempted (prev_state R) within 300 us of leaving clone, until
it ran again (and what ran meanwhile on its CPU); the user-space figure (latest_fork_usec or fork_ns) beside them.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

T = Path("/sys/kernel/tracing/instances/forksim-redis")
ALL = ("sched/sched_switch", "sched/sched_wakeup_new", "sched/sched_migrate_task")
MINE = ("syscalls/sys_enter_clone", "syscalls/sys_exit_clone", "syscalls/sys_enter_clone3",
        "syscalls/sys_exit_clone3", "ipi/ipi_send_cpu", "ipi/ipi_send_cpumask")
LINE = re.compile(r"^\s*(.+?)-(\d+)\s+\[(\d+)\]\s+\S+\s+([\d.]+):\s+(\w+)(:|\(| ->)\s*(.*)$")
KV = re.compile(r"(\w+)=(\S+)")
MiB = 1 << 20


def steal() -> int:
    return int(open("/proc/stat").readline().split()[8])


def trace_on(pid: int) -> None:
    from forksim.calibration.tracefs import mount_tracefs

    mount_tracefs()  # a fresh VM boots without tracefs
    T.mkdir(exist_ok=True)
    (T / "tracing_on").write_text("0")
    (T / "buffer_size_kb").write_text("32768")
    (T / "trace_clock").write_text("mono")
    for ev in ALL:
        (T / "events" / ev / "enable").write_text("1")
    for ev in MINE:
        (T / "events" / ev / "filter").write_text(f"common_pid == {pid}")
        (T / "events" / ev / "enable").write_text("1")
    (T / "trace").write_text("")
    (T / "tracing_on").write_text("1")


def trace_off(path: Path) -> None:
    (T / "tracing_on").write_text("0")
    path.write_text((T / "trace").read_text())
    (T / "events" / "enable").write_text("0")
    (T / "trace").write_text("")


def redis_block(r, n: int, out: Path, tag: str) -> dict:
    s0, forks = steal(), []
    trace_on(r.proc.pid)
    try:
        for _ in range(n):
            time.sleep(1.0)
            r.cmd("BGSAVE")
            while r.info("persistence").get("rdb_bgsave_in_progress", "0").strip() != "0":
                time.sleep(0.01)
            forks.append(float(r.info("stats")["latest_fork_usec"]))
    finally:
        trace_off(out / f"{tag}.txt")
    return {"tag": tag, "app": "redis", "pid": r.proc.pid, "user_us": forks, "steal_ticks": steal() - s0,
            "scatter": _scatter(r.proc.pid)}


def bench_block(exe: str, rss: int, n: int, out: Path, tag: str) -> dict:
    p = subprocess.Popen([exe, "cold", "-r", str(rss), "-n", str(n), "-w", "0", "-c", "-1", "-s", "1000000",
                          "-g"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    while "ready" not in (line := json.loads(p.stdout.readline())):
        pass
    pid = line["ready"]
    scatter = _scatter(pid)  # forkbench's freshly touched image, beside Redis's long-lived one
    s0 = steal()
    trace_on(pid)
    try:
        p.stdin.write("x")
        p.stdin.flush()
        rows = [r for r in map(json.loads, p.stdout) if r.get("b") == "cold"]
        p.wait()
    finally:
        trace_off(out / f"{tag}.txt")
    return {"tag": tag, "app": "forkbench", "pid": pid, "user_us": [r["fork_ns"] / 1e3 for r in rows],
            "steal_ticks": steal() - s0, "scatter": scatter}


def _scatter(pid: int) -> float | None:
    """The physical layout of `pid`'s anonymous pages (forksim.lab.pagemap.image_layout), None if unreadable."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from forksim.lab.pagemap import PagemapUnreadable, image_layout

    try:
        return image_layout(pid).scatter
    except (PagemapUnreadable, OSError):
        return None


def record(sizes: list[int], blocks: int, per: int, out: Path, bench: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from forksim.validation.apps import _VALUE, _Redis, image_from_proc
    import shutil

    out.mkdir(parents=True, exist_ok=True)
    meta = []
    r = _Redis(shutil.which("redis-server"))
    try:
        keys = 0
        for mib in sizes:
            used = int(r.info("memory")["used_memory"])
            keys += max(0, int((mib * MiB - used) / (_VALUE + 90)))
            r.cmd("DEBUG", "POPULATE", str(keys), "key", str(_VALUE))
            image = image_from_proc(r.proc.pid)
            for b in range(blocks):
                for run in (lambda t: redis_block(r, per, out, t),
                            lambda t: bench_block(bench, image["rss_bytes"], per, out, t)):
                    m = run(f"{mib}-{b}-{len(meta)}")
                    m.update(size_mib=mib, rss=image["rss_bytes"], vmas=image["vmas"], anon_vmas=image["anon_vmas"])
                    meta.append(m)
                    (out / "meta.json").write_text(json.dumps(meta, indent=1))
                    print(m["tag"], m["app"], m["user_us"], "steal", m["steal_ticks"], flush=True)
    finally:
        r.close()


def events(path: Path) -> list:
    out = []
    for ln in open(path):
        m = LINE.match(ln)
        if m:
            _c, pid, cpu, ts, ev, sep, rest = m.groups()
            if ev.startswith("sys_"):  # syscall events print "sys_clone(args)" and "sys_clone -> ret"
                ev = ("sys_exit_" if sep == " ->" else "sys_enter_") + ev[4:]
            out.append((float(ts) * 1e6, int(cpu), int(pid), ev, rest, dict(KV.findall(rest.replace(" ==> ", " ")))))
    out.sort(key=lambda e: e[0])
    return out


def forks(evs: list, P: int) -> list[dict]:
    """One row per fork of P: placement, the other CPU's state, clone time, IPIs, the parent's wait after clone."""
    cur: dict[int, int] = {}
    since: dict[int, float] = {}
    comm: dict[int, str] = {}
    rows: list[dict] = []
    it: dict | None = None
    for t, c, p, e, raw, d in evs:
        if e == "sched_switch":
            prev, nxt = int(d["prev_pid"]), int(d["next_pid"])
            if it is not None:
                if prev == P and "exit" in it and "out" not in it and t - it["exit"] < 300 and d.get("prev_state", "").startswith("R"):
                    it["out"], it["out_state"] = t, d.get("prev_state")
                    it["ran_instead"] = d.get("next_comm")
                    it["ran_instead_child"] = nxt == it.get("C")
                elif nxt == P and "out" in it and "back" not in it:
                    it["back"], it["back_cpu"] = t, c
                if nxt == it.get("C") and "c_in" not in it:
                    it["c_in"], it["c_cpu"] = t, c
            cur[c], since[c] = nxt, t
            comm[c] = d.get("next_comm", "?")
        elif e.startswith("sys_enter_clone") and p == P:
            it = {"enter": t, "pcpu": c, "ipis": 0, "ipi_sites": []}
            rows.append(it)
        elif e == "sched_wakeup_new" and p == P and it is not None and "C" not in it:
            C = int(d["pid"])
            other = [o for o in cur if o != c] or [1 - c]
            o = cur.get(other[0])
            it.update(C=C, wake=t, ccpu=int(d["target_cpu"]), wake_cpu=c,
                      other=("unknown" if o is None else "idle" if o == 0 else "foreign"),
                      other_idle_us=(t - since[other[0]]) if o == 0 else np.nan,
                      other_comm=comm.get(other[0]), other_running_us=(t - since[other[0]]) if o else np.nan)
        elif e.startswith("ipi_send") and p == P and it is not None and "exit" not in it:
            it["ipis"] += 1
            it["ipi_sites"].append(d.get("callsite", "?"))
            site = d.get("callsite", "?").split("+")[0]
            it.setdefault(f"ipi_{site}", t - it["enter"])  # the first IPI of each call site, us after clone entry
        elif e.startswith("sys_exit_clone") and p == P and it is not None and "exit" not in it:
            it["exit"] = t
    return [r for r in rows if "C" in r and "exit" in r]


def parse(out: Path) -> pd.DataFrame:
    meta = json.loads((out / "meta.json").read_text())
    rows = []
    for m in meta:
        fs = forks(events(out / f"{m['tag']}.txt"), m["pid"])
        for i, f in enumerate(fs):
            f.update(app=m["app"], size=m["size_mib"], block=m["tag"], steal_ticks=m["steal_ticks"],
                     scatter=m.get("scatter", np.nan) if m.get("scatter") is not None else np.nan,
                     user_us=m["user_us"][i] if i < len(m["user_us"]) and len(fs) == len(m["user_us"]) else np.nan)
            rows.append(f)
    d = pd.DataFrame(rows)
    d["local"] = d.ccpu == d.pcpu
    d["clone_us"] = d["exit"] - d.enter
    d["wait_us"] = (d["back"] - d["out"]).fillna(0.0) if "back" in d else 0.0
    d["user_minus_clone_us"] = d.user_us - d.clone_us
    return d


def summary(d: pd.DataFrame) -> dict:
    out = {}
    for (app, size), g in d.groupby(["app", "size"]):
        s = {"n": int(len(g)), "other_idle": int((g.other == "idle").sum()),
             "other_idle_us_p50": round(float(g.other_idle_us.median()), 0),
             "local_share_when_idle": round(float(g[g.other == "idle"].local.mean()), 3),
             "user_us_p50": round(float(g.user_us.median()), 0), "clone_us_p50": round(float(g.clone_us.median()), 0),
             "user_minus_clone_us_p50": round(float(g.user_minus_clone_us.median()), 0),
             "tlb_ipi_share": round(float(g.get("ipi_on_each_cpu_cond_mask", pd.Series(np.nan, g.index)).notna().mean()), 3),
             "tlb_ipi_to_wake_us_p50": round(float((g.wake - g.enter - g.get("ipi_on_each_cpu_cond_mask",
                                                                               pd.Series(np.nan, g.index))).median()), 0),
             "steal_ticks_per_block_p50": float(g.groupby("block").steal_ticks.first().median()),
             # the image's physical layout per block (/proc/PID/pagemap): a long-lived Redis against a fresh image
             "scatter_p50": (None if g.scatter.isna().all()
                             else round(float(g.groupby("block").scatter.first().median()), 3))}
        for name, part in (("local", g[g.local]), ("cross", g[~g.local])):
            if len(part):
                s[name] = {"n": int(len(part)), "clone_us_p50": round(float(part.clone_us.median()), 0),
                           "user_us_p50": round(float(part.user_us.median()), 0),
                           "switched_out_after_clone": round(float(part["out"].notna().mean()), 3) if "out" in part else 0,
                           "wait_us_p50": round(float(part.wait_us.median()), 0),
                           "wait_us_max": round(float(part.wait_us.max()), 0),
                           "user_minus_clone_us_p50": round(float(part.user_minus_clone_us.median()), 0),
                           # the caller waited: its clock read after clone ran over 500 us late
                           "late_over_500us": round(float((part.user_minus_clone_us > 500).mean()), 3),
                           "preempted_by_child": int(part.get("ran_instead_child", pd.Series(dtype=object)).eq(True).sum()),
                           "preempted_by_other": int(part.get("ran_instead_child", pd.Series(dtype=object)).eq(False).sum())}
        out[f"{app}-{size}MiB"] = s
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="64,256")
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--per", type=int, default=6)
    ap.add_argument("--out", type=Path, default=Path("/tmp/forksim-redis-trace"))
    ap.add_argument("--bench", default="")
    ap.add_argument("--parse", action="store_true")
    a = ap.parse_args()
    if not a.parse:
        record([int(s) for s in a.sizes.split(",")], a.blocks, a.per, a.out, a.bench)
    d = parse(a.out)
    d.drop(columns=["ipi_sites"]).to_csv(a.out / "forks.csv", index=False)
    print(json.dumps(summary(d), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
