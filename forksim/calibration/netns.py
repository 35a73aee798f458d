"""A network namespace's teardown as the next clone(CLONE_NEWNET) meets it: traced, then fitted.

When a namespace's last reference goes (the child's exit: exit_task_namespaces -> put_net), __put_net
adds it to cleanup_list and queues net_cleanup_work on netns_wq; cleanup_net (net/core/net_namespace.c)
takes every namespace queued so far (llist_del_all) and tears them down as one batch: a grace period,
then under rtnl_lock each namespace's exit_rtnl methods and unregister_netdevice_many (the loopback's
NETDEV_UNREGISTER notifier chain, about 76 calls a namespace on this kernel) with a synchronize_net
inside, then the other exit methods, rcu_barrier and the frees. A clone(CLONE_NEWNET) meanwhile runs
setup_net -> loopback_net_init -> register_netdev, whose NETDEV_REGISTER chain needs rtnl_lock too:
one arriving while the batch holds it sleeps until the batch lets go.

`measure` runs a pinned clone(CLONE_NEWNET) loop (csrc/clonebench.c) for about a second under a private
tracefs instance recording workqueue_execute_start/end (the cleanup_net items), notifier_run (the
netdevice chains: under rtnl on both sides), sched_switch (the worker's sleeps: the grace periods and
rcu_barrier) and sched_process_exit (the namespaces' deaths, one a child); `fit` reads from that:

    rtnl_setup_us            the creator's NETDEV_REGISTER chain (median span of its notifier calls)
    rtnl_fixed_us, rtnl_per_netns_us   the batch's unregister chain: the worker's time on the CPU over its
                             first notifier cluster in an item, against the batch size (least squares)
    rtnl_grace_us            the worker's sleep right after that chain, rtnl still held (synchronize_net)
    pre_us                   the item's start to its first notifier (synchronize_rcu before the exits)
    cpu_fixed_us, cpu_per_netns_us     the worker's CPU time in an item against the batch size
    post_us                  the item's remaining sleep (rcu_barrier and the frees): median of the item's
                             time off the CPU in D state, less pre_us and the grace period
"""

from __future__ import annotations

import re
import subprocess
from typing import Any, Callable

import numpy as np

from ..kernel.flags import FLAG_BITS
from .segments import TRACE_LINE

__all__ = ["EVENTS", "measure", "fit", "analyse"]

EVENTS = ("workqueue/workqueue_execute_start", "workqueue/workqueue_execute_end", "notifier/notifier_run",
          "sched/sched_switch", "sched/sched_process_exit")
_SWITCH = re.compile(r"prev_pid=(\d+) .*prev_state=(\S+) ==> next_comm=.* next_pid=(\d+) ")
_GAP_US = 500.0  # the worker's notifier calls further apart than this belong to different chains
_GRACE_WITHIN_US = 300.0  # a sleep this soon after the unregister chain is its synchronize_net


def measure(exe: str, cpu: int, reps: int = 900, log: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """Trace a pinned clone(CLONE_NEWNET) loop of `reps` creations; the raw trace's summary (`analyse`)."""
    from .tracefs import TraceInstance

    argv = [exe, "-n", str(reps), "-w", "3", "-c", str(cpu), "-f", f"{FLAG_BITS['CLONE_NEWNET']:x}"]
    with TraceInstance(EVENTS, buffer_kb=65536, name=f"forksim-netns-{cpu}", optional=False) as ti:
        ti.start()
        r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        ti.stop()
        if r.returncode != 0:
            raise RuntimeError(f"clonebench {' '.join(argv[1:])}: {r.stderr.strip()[-200:] or r.returncode}")
        raw = analyse(ti.text(), ti.tsc_hz if ti.clock == "x86-tsc" else None, "clonebench")
        raw["lost_events"] = ti.overruns()
    log(f"netns teardown: {len(raw['items'])} cleanup_net batches over {raw['exits']} namespaces")
    return raw


def _events(text: str, tsc_hz: float | None) -> list[tuple[float, int, str, str, str]]:
    """(us, pid, event, rest, comm) for every line of a tracefs text (tsc ticks or seconds)."""
    scale = 1e6 / tsc_hz if tsc_hz else None
    out = []
    for line in text.splitlines():
        m = TRACE_LINE.match(line)
        if m is None:
            continue
        ts = m["ts"]
        us = float(ts) * 1e6 if "." in ts else int(ts) * (scale or 1e-3)
        out.append((us, int(m["pid"]), m["event"], m["rest"], m["comm"].strip()))
    return out


def _clusters(times: list[float]) -> list[tuple[float, float, int]]:
    """Runs of notifier calls no more than _GAP_US apart: (first, last, count)."""
    out: list[list[float]] = []
    for t in times:
        if out and t - out[-1][1] <= _GAP_US:
            out[-1][1] = t
            out[-1][2] += 1
        else:
            out.append([t, t, 1])
    return [(a, b, int(n)) for a, b, n in out]


def analyse(text: str, tsc_hz: float | None, creator: str) -> dict[str, Any]:
    """Per cleanup_net item: batch size, duration, the worker's CPU time, the rtnl chain and the sleep after
    it, the lead-in before it and the time asleep (all us); and the creator's NETDEV_REGISTER chains."""
    ev = _events(text, tsc_hz)
    spans, open_ = [], {}
    for us, pid, name, rest, _ in ev:
        if name == "workqueue_execute_start" and rest.endswith("cleanup_net"):
            open_[pid] = us
        elif name == "workqueue_execute_end" and rest.endswith("cleanup_net") and pid in open_:
            spans.append((pid, open_.pop(pid), us))
    workers = {p for p, _, _ in spans}
    # the creator's children die (one namespace each); the creator's own exit comes after the last item
    exits = np.array([us for us, _, name, _, comm in ev if name == "sched_process_exit" and comm.startswith(creator)])
    notif_w = {p: [] for p in workers}
    notif_c: dict[int, list[float]] = {}
    oncpu: dict[int, list[tuple[float, float]]] = {p: [] for p in workers}
    offcpu: dict[int, list[tuple[float, float, str]]] = {p: [] for p in workers}
    since: dict[int, tuple[float, str]] = {}
    for us, pid, name, rest, comm in ev:
        if name == "notifier_run":
            if pid in notif_w:
                notif_w[pid].append(us)
            elif comm.startswith(creator):
                notif_c.setdefault(pid, []).append(us)
        elif name == "sched_switch":
            m = _SWITCH.search(rest)
            if m is None:
                continue
            prev, state, nxt = int(m[1]), m[2], int(m[3])
            if prev in workers:
                if prev in since and since[prev][1] == "on":
                    oncpu[prev].append((since[prev][0], us))
                since[prev] = (us, state)
            if nxt in workers:
                if nxt in since and since[nxt][1] != "on":
                    offcpu[nxt].append((since[nxt][0], us, since[nxt][1]))
                since[nxt] = (us, "on")
    items = []
    for i, (pid, a, b) in enumerate(spans):
        # the namespaces that died before the item started and after the previous one did (the first item's:
        # every death since the trace began, which `measure` starts before the loop)
        n = int(np.searchsorted(exits, a) - (np.searchsorted(exits, spans[i - 1][1]) if i else 0))
        chains = _clusters([t for t in notif_w[pid] if a <= t <= b])
        if n <= 0 or not chains:
            continue
        first, last, _ = chains[0]
        cpu = sum(min(e, b) - max(s, a) for s, e in oncpu[pid] if e > a and s < b)
        asleep = [(s, e) for s, e, st in offcpu[pid] if st.startswith("D") and e > a and s < b]
        grace = next((e - s for s, e in asleep if 0.0 <= s - last <= _GRACE_WITHIN_US), 0.0)
        # the chain's CPU: its span less the worker's time off the CPU inside it (preempted on a busy machine;
        # the model preempts the worker itself)
        away = sum(min(e, last) - max(s, first) for s, e, _ in offcpu[pid] if e > first and s < last)
        items.append({"n": n, "dur_us": b - a, "cpu_us": cpu, "rtnl_us": last - first - away, "grace_us": grace,
                      "pre_us": first - a, "asleep_us": sum(min(e, b) - max(s, a) for s, e in asleep)})
    # the creator's register chain: its notifier calls between one child's exit and the next (one clone each)
    setup = []
    for ts in notif_c.values():
        t = np.array(ts)
        for cycle in np.split(t, np.searchsorted(t, exits)):
            if len(cycle) >= 20:  # a netdevice chain (a lone pvclock_gtod_notify is not one)
                setup.append(float(cycle[-1] - cycle[0]))
    return {"items": items, "setup_chain_us": setup, "exits": int(len(exits))}


def _line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least squares y = a + b x with a, b >= 0 (b through the origin where a would go negative)."""
    if len(x) >= 3 and np.ptp(x) > 0:
        b, a = np.polyfit(x, y, 1)
        if a >= 0.0 and b >= 0.0:
            return float(a), float(b)
    return 0.0, float(max(0.0, np.sum(x * y) / np.sum(x * x)))


def fit(raw: dict[str, Any], where: str) -> dict[str, Any] | None:
    """The profile's `netns_cleanup` section from `measure`'s summary (None: too few batches to fit)."""
    items = raw["items"]
    if len(items) < 3 or len(raw["setup_chain_us"]) < 20:
        return None
    n = np.array([i["n"] for i in items], float)
    rtnl = _line(n, np.array([i["rtnl_us"] for i in items]))
    cpu = _line(n, np.array([i["cpu_us"] for i in items]))
    grace = float(np.median([i["grace_us"] for i in items]))
    pre = float(np.median([i["pre_us"] for i in items]))
    post = float(max(0.0, np.median([i["asleep_us"] - i["grace_us"] - i["pre_us"] for i in items])))
    setup = float(np.median(raw["setup_chain_us"]))
    return {
        "rtnl_setup_us": round(setup, 3), "rtnl_fixed_us": round(rtnl[0], 3), "rtnl_per_netns_us": round(rtnl[1], 3),
        "rtnl_grace_us": round(grace, 3), "pre_us": round(pre, 3), "cpu_fixed_us": round(cpu[0], 3),
        "cpu_per_netns_us": round(cpu[1], 3), "post_us": round(post, 3),
        "source": (f"measured: a pinned clone(CLONE_NEWNET) loop traced (clonebench, {where}; {len(items)} cleanup_net "
                   f"batches of {int(n.min())}-{int(n.max())} namespaces, median {np.median(n):.0f}; "
                   f"{len(raw['setup_chain_us'])} NETDEV_REGISTER chains): tracefs workqueue_execute_start/end, "
                   f"notifier_run, sched_switch, sched_process_exit. rtnl sections from the notifier chains each side "
                   f"runs under rtnl_lock; the worker's sleeps from sched_switch (D); forksim.calibration.netns"),
    }
