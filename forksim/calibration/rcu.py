"""Deferred frees of exited tasks: the RCU callbacks a creation's end queues, run a grace period later
in softirq on the CPU that queued them, stretching whatever runs there (the tails under fork load).

Traced on this machine kind (2026-12-02, tools in the t14-tails report): in the slowest 1% of a tight
fork loop's fork() calls (the validation's closed-fork-K1-rss0 loop and forkbench pinned), the call held
190-210 us of RCU softirq (rcu_core -> rcu_do_batch) and little else (the tick, 18 us); the median call
held none. An idle CPU's spin probe (interruptions.py) never sees them: they are the work of the loop's
own exits. The callbacks of one creation (kernel/exit.c, kernel/fork.c, mm/mmap.c):
- release_task -> put_task_struct_rcu_user -> call_rcu(delayed_put_task_struct) and free_pid ->
  call_rcu(delayed_put_pid): queued on the reaper's CPU (the parent in wait4, or a thread itself);
- exit_mmap: the maple tree's nodes (mt_free_rcu) and the page tables (tlb_remove_table_rcu) of the
  dying mm: queued on the exiting child's CPU, only where the mm dies with it.

Measured by `measure_rcu`: forkbench's pinned fork loop at RSS 0 under tracefs (irq:softirq_entry/exit
and sched:sched_process_free for every pid, sched:sched_process_exit for the benchmark's), twice: the
child exiting on the parent's CPU (forkbench -R CPU: everything lands on one CPU) and on the other one
(-R OTHER: only the reaper's callbacks land on the parent's). Per creation, the RCU softirq time the
parent's CPU spent outside idle (in the loop's tasks, or in ksoftirqd when softirq processing ran long:
forksim.rcu runs a batch one __do_softirq budget at a time) gives `reap_us` (the second run) and `exit_mm_us`
(the first less the second); the exit -> free delay of each child gives the grace period, and ten times the median
softirq run (one rcu_do_batch pass) the budget, `softirq_cap_us`. The same traces (sched_switch, every pid) hold
the grace-period kthread's runs (rcu_preempt): their median is `gp_kthread_us`, and rcutree's
jiffies_till_next_fqs (/sys/module) its `fqs_jiffies`. About 2 s.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from .bench import Benchmarks, run_bench
from .plan import Store

__all__ = ["EVENTS", "measure_rcu", "rcu_run", "softirq_bursts", "fit_rcu"]

# every pid (aux instance)
EVENTS = ("irq/softirq_entry", "irq/softirq_exit", "sched/sched_process_free", "sched/sched_switch",
          "workqueue/workqueue_execute_start", "workqueue/workqueue_execute_end")
VFREE_WORK = "delayed_vfree_work"  # mm/vmalloc.c: the work vfree_atomic (vfree in softirq) hands its frees to
FOLLOWED = ("sched/sched_process_exit",)  # the benchmark's pids
RCU_VEC = "9"  # RCU_SOFTIRQ (include/linux/interrupt.h)
KIND = "rcu"
MAX_SOFTIRQ_RESTART = 10  # kernel/softirq.c: __do_softirq's passes before it leaves the rest to ksoftirqd
GP_KTHREAD = "rcu_preempt"  # rcu_gp_kthread of the flavour a CONFIG_PREEMPT_RCU or not kernel runs (rcu_sched without)
FQS_JIFFIES = Path("/sys/module/rcutree/parameters/jiffies_till_next_fqs")


def _kthread(comm: str) -> int:
    """The pid of the kernel thread named `comm` (-1 if not found)."""
    for path in Path("/proc").glob("[0-9]*/comm"):
        try:
            if path.read_text().strip() == comm:
                return int(path.parent.name)
        except OSError:
            continue
    return -1


def _fqs_jiffies() -> int | None:
    try:
        return int(FQS_JIFFIES.read_text())
    except (OSError, ValueError):
        return None


def kthread_runs(every: list[Any], pid: int) -> list[float]:
    """How long (us) each run of the task `pid` lasted, switch-in to switch-out, on any CPU."""
    runs, start = [], {}
    for e in every:
        if e.name != "sched_switch" or pid < 0:
            continue
        if e.f.get("prev_pid") == str(pid) and e.cpu in start:
            runs.append(round((e.ts - start.pop(e.cpu)) / 1e3, 3))
        if e.f.get("next_pid") == str(pid):
            start[e.cpu] = e.ts
    return runs


def work_runs(every: list[Any], function: str) -> list[float]:
    """How long (us) each execution of the work item `function` lasted (workqueue_execute_start to _end)."""
    runs, start = [], {}
    for e in every:
        if e.name == "workqueue_execute_start" and e.f.get("function") == function:
            start[e.pid] = e.ts
        elif e.name == "workqueue_execute_end" and e.pid in start:
            runs.append(round((e.ts - start.pop(e.pid)) / 1e3, 3))
    return runs


def rcu_run(followed: list[Any], every: list[Any], cpu: int, ksoftirqd: int, gp_kthread: int = -1) -> dict[str, Any]:
    """One traced loop's figures: RCU softirq runs on `cpu` outside idle, (us, 1 if in ksoftirqd, start us),
    the children's exits, each child's exit -> free delay (us), the grace-period kthread's runs (us), the
    deferred vfree worker's runs (us) and the loop's span (us, first exit to last free)."""
    runs, start = [], None
    for e in every:
        if e.cpu != cpu or e.f.get("vec") != RCU_VEC or e.pid == 0:
            continue
        if e.name == "softirq_entry":
            start = e.ts
        elif e.name == "softirq_exit" and start is not None:
            runs.append([round((e.ts - start) / 1e3, 3), int(e.pid == ksoftirqd), round(start / 1e3, 1)])
            start = None
    exits = {e.f.get("pid", ""): e.ts for e in followed if e.name == "sched_process_exit"}
    frees = [(e.ts, exits[e.f["pid"]]) for e in every if e.name == "sched_process_free" and e.f.get("pid", "") in exits]
    delays = [round((freed - exited) / 1e3, 1) for freed, exited in frees]
    span = (max(f for f, _ in frees) - min(exits.values())) / 1e3 if frees else 0.0
    return {"rcu_runs_us": runs, "exits": len(exits), "free_delay_us": delays,
            "gp_kthread_runs_us": kthread_runs(every, gp_kthread), "vfree_work_runs_us": work_runs(every, VFREE_WORK),
            "span_us": round(span, 1)}


def measure_rcu(b: Benchmarks, store: Store, cpu: int, other: int, reps: int = 1500) -> None:
    """The two traced loops into `store` (kind "rcu", key exit_cpu "same" / "other"); needs tracefs."""
    from .tracefs import TraceInstance

    ksoft, gp = _kthread(f"ksoftirqd/{cpu}"), _kthread(GP_KTHREAD)
    with TraceInstance(FOLLOWED, buffer_kb=4096, optional=False) as trace, \
            TraceInstance(EVENTS, buffer_kb=16384, name=f"forksim-rcu-{os.getpid()}", optional=False) as every:
        for where, exit_cpu in (("same", cpu), ("other", other)):
            argv = [str(b.forkbench), "fork", "-r", "0", "-n", str(reps), "-w", "20", "-c", str(cpu),
                    "-R", str(exit_cpu)]
            got: list[Any] = []
            shape, _, events, _ = run_bench(argv, trace=trace, timeout=120, aux=every, aux_out=got)
            store.add(KIND, {"exit_cpu": where, "cpu": cpu}, shape, [],
                      [rcu_run(events or [], got, cpu, ksoft, gp) | {"fqs_jiffies": _fqs_jiffies()}])


def softirq_bursts(runs: list[list[float]]) -> list[float]:
    """Lengths (us) of the bursts of RCU softirq outside ksoftirqd: runs under 5 us apart (a restart of
    __do_softirq, another rcu_do_batch) are one burst."""
    out: list[float] = []
    end = -np.inf
    for us, in_ksoftirqd, start in sorted((r for r in runs if not r[1]), key=lambda r: r[2]):
        if start - end < 5.0:
            out[-1] += start - end + us
        else:
            out.append(us)
        end = start + us
    return out


def _cap_source(bursts: list[float]) -> str:
    """The provenance of softirq_cap_us, with the traced bursts beside it."""
    seen = (f"{len(bursts)} bursts of RCU softirq outside ksoftirqd (runs under 5 us apart): p50 "
            f"{np.median(bursts):.0f} us, p90 {np.quantile(bursts, 0.9):.0f} us" if bursts
            else "no burst outside ksoftirqd")
    return (f"; softirq_cap_us: {MAX_SOFTIRQ_RESTART} passes (MAX_SOFTIRQ_RESTART, kernel/softirq.c) of the median run "
            f"({seen})")


def fit_rcu(store: Store, tick_us: float) -> dict[str, Any] | None:
    """The profile's `rcu_callbacks` section from the two loops (None when they were not measured)."""
    got = {r["key"]["exit_cpu"]: r["segments"][0] for r in store.select(KIND) if r["segments"]}
    if set(got) != {"same", "other"} or not all(g["exits"] for g in got.values()):
        return None

    def per_exit(g: dict[str, Any]) -> float:
        return float(sum(r[0] for r in g["rcu_runs_us"])) / g["exits"]

    same, other = per_exit(got["same"]), per_exit(got["other"])
    reap = min(same, other)
    delays = np.asarray(got["same"]["free_delay_us"] + got["other"]["free_delay_us"], dtype=float)
    # forksim.rcu: callbacks queued during one grace period run after the next one ends, at a tick: a
    # delay of 1.5 grace periods and half a tick on average
    grace = max(tick_us, (float(np.median(delays)) - tick_us / 2) / 1.5) if delays.size else 2 * tick_us
    runs = np.asarray([r[0] for r in got["same"]["rcu_runs_us"]], dtype=float)
    in_ksoftirqd = sum(r[0] for r in got["same"]["rcu_runs_us"] if r[1]) / max(1e-9, float(runs.sum()))
    bursts = softirq_bursts(got["same"]["rcu_runs_us"])
    # one __do_softirq budget: MAX_SOFTIRQ_RESTART passes of rcu_do_batch (blimit callbacks each); the median
    # run is one pass (many of them in any loop, unlike the bursts, which the ksoftirqd share thins out)
    cap = MAX_SOFTIRQ_RESTART * float(np.median(runs)) if runs.size >= 20 else None
    gp, gp_source = _gp_kthread(got, grace, tick_us)
    vfree, vfree_source = _vfree(got)
    how = (f"{got['same']['exits']} + {got['other']['exits']} children of forkbench's pinned fork loop at RSS 0 "
           f"(CPU {store.select(KIND)[0]['key']['cpu']}), traced (irq:softirq_entry/exit of RCU on that CPU outside "
           f"idle, sched:sched_process_exit/free)")
    return {
        "reap_us": round(reap, 3),
        "exit_mm_us": round(max(0.0, same - reap), 3),
        "grace_us": round(grace, 1),
        **({"softirq_cap_us": round(cap, 1)} if cap else {}),
        **gp,
        **vfree,
        "source": (f"measured: {how}: RCU softirq per creation {same:.1f} us with the child exiting on the "
                   f"parent's CPU, {other:.1f} us with it exiting on the other CPU (the reaper's callbacks: "
                   f"reap_us; the rest, exit_mmap's: exit_mm_us); softirq runs p50 {np.median(runs) if runs.size else 0:.0f} "
                   f"us, p99 {np.quantile(runs, 0.99) if runs.size else 0:.0f} us ({in_ksoftirqd:.0%} of the time in ksoftirqd)"
                   f"{_cap_source(bursts) if cap else ''}; grace_us: the exit -> "
                   f"sched_process_free delay's median ({np.median(delays) if delays.size else float('nan'):.0f} us) "
                   f"less half a {tick_us:g} us tick, over 1.5 (queued during one grace period, run after the next)"
                   f"{gp_source}{vfree_source}"),
    }


def _vfree(got: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], str]:
    """vfree_per_stack_us from the loop whose children exit on the other CPU (there every stack meets that CPU's
    full cache, the parent's CPU takes none back, goes through RCU and is vfree'd by its worker), and its
    provenance; nothing where the trace holds under 10 runs of the worker (raw files from before 2026-12-06)."""
    runs = got["other"].get("vfree_work_runs_us", [])
    stacks = got["other"]["exits"]
    if len(runs) < 10 or not stacks:
        return {}, ""
    per_stack = float(sum(runs)) / stacks
    return {"vfree_per_stack_us": round(per_stack, 3)}, (
        f"; vfree_per_stack_us: the {len(runs)} runs of {VFREE_WORK} (workqueue_execute_start/end, p50 "
        f"{np.median(runs):.1f} us, p90 {np.quantile(runs, 0.9):.1f} us) in the loop whose children exit on the other "
        f"CPU, {sum(runs):.0f} us in all over its {stacks} stacks (each met that CPU's full cache and was freed after "
        f"RCU)")


def _gp_kthread(got: dict[str, dict[str, Any]], grace_us: float, tick_us: float) -> tuple[dict[str, Any], str]:
    """gp_kthread_us and fqs_jiffies from the loops' traces, and their provenance (nothing where the traces hold
    under 20 runs of the kthread, or rcutree's parameter was not read: raw files from before 2026-12-06)."""
    runs = [r for g in got.values() for r in g.get("gp_kthread_runs_us", [])]
    fqs = got["same"].get("fqs_jiffies")
    if len(runs) < 20 or not fqs:
        return {}, ""
    span_s = sum(g.get("span_us", 0.0) for g in got.values()) / 1e6
    per_grace = math.ceil(grace_us / (fqs * tick_us))  # its start, then a pass every fqs ticks inside it
    return {"gp_kthread_us": round(float(np.median(runs)), 2), "fqs_jiffies": int(fqs)}, (
        f"; gp_kthread_us: the median of {len(runs)} runs of {GP_KTHREAD} (sched_switch) in the same loops, p90 "
        f"{np.quantile(runs, 0.9):.1f} us, {len(runs) / span_s:.0f} a second over their {span_s:.2f} s (the model "
        f"wakes it at each grace period's start and every fqs_jiffies ticks in it while callbacks wait: {per_grace} a "
        f"period, {per_grace * 1e6 / grace_us:.0f} a second); fqs_jiffies: {FQS_JIFFIES} ({fqs})" if span_s > 0 else "")
