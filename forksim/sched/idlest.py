"""Where a new task goes when no CPU is idle: sched_balance_find_dst_group (kernel/sched/fair.c,
find_idlest_group before 6.10), for a domain whose groups are single CPUs (the MC domain of a small
VM), as wake_up_new_task -> select_task_rq_fair(SD_BALANCE_FORK) reaches it.

- update_sg_wakeup_stats: each CPU's nr_running is rq->nr_running, which counts the queued entities,
  DELAY_DEQUEUE sleepers included (sub_nr_running(rq, h_nr_queued) happens only when a delayed task
  finally leaves); its load is the CPU's PELT load (cpu_load_without: the new task has none yet).
- group_classify (forksim.sched.balance.group_type): overloaded with more than one queued task and
  its PELT utilisation or runnable average past capacity by imbalance_pct, spare capacity when
  neither is (or nothing is queued), else fully busy.
- sched_balance_find_dst_group: the idlest other group is the lowest type, then the lowest avg_load
  (update_pick_idlest); the local group keeps the task when it is of a lower type; a higher type
  pushes it; both with spare capacity, it stays (neither has an idle CPU: local_sgs.idle_cpus >=
  idlest_sgs.idle_cpus); of the same busy type (fully busy or overloaded) it leaves only when the local
  load exceeds the idlest's by imbalance_pct and by NICE_0_LOAD * (imbalance_pct - 100) / 100.

This kernel does not always follow that rule (it boots with the non-upstream sched_vcpu_pack). Traced
(forksim.calibration.busy, 2026-12-04, 1-2 fork parents beside 1-4 hogs, each fork put in its case by PELT
replayed over the trace): a parent's CPU of a lower type kept 99.6% of its children, but with both CPUs
of spare capacity the child was pushed when the parent's CPU held one more runnable task (0.04 kept,
against 1.0 with no more), and of a higher type 44% / 34% / 5% stayed with no more / one more / two more
runnable tasks there. So the profile's `fork_local_no_idle` holds a measured share per case and
difference in runnable tasks (NO_IDLE_KEYS); where the calibration met a cell fewer than 20 times, the rule weighs
as 20 forks, held within the same case's measured shares (a CPU with more runnable tasks keeps no more:
forksim.calibration.busy._prior).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .balance import HAS_SPARE, cpu_stats, group_type

if TYPE_CHECKING:
    from ..machine import CPU, Machine
    from .balance import BalanceParams

__all__ = ["VERDICTS", "KEEPS", "DIFFERENCES", "NO_IDLE_KEYS", "no_idle_key", "nr_queued", "verdict", "find_dst_cpu"]

NICE_0_LOAD = 1024.0
# What decided sched_balance_find_dst_group's choice: the local group's type lower than the idlest's
# (keep), higher (push), both with spare capacity (kept: neither has an idle CPU), or both fully busy or
# overloaded, then kept or pushed by load.
VERDICTS = ("lower_type", "both_spare", "load_keep", "load_push", "higher_type")
KEEPS = frozenset({"lower_type", "both_spare", "load_keep"})
# The parent's CPU's runnable tasks minus the idlest other's: <= 0, 1, >= 2. BalanceParams.fork_local_no_idle
# holds the measured share of children that stayed on the parent's CPU for each case and difference, in
# NO_IDLE_KEYS order (forksim.calibration.busy.fork_placement_no_idle).
DIFFERENCES = ("not_more", "one_more", "more")
NO_IDLE_KEYS = tuple(f"{v}/{d}" for v in VERDICTS for d in DIFFERENCES)
# where a case's entries start in NO_IDLE_KEYS (find_dst_cpu indexes the shares without building the key)
_CASE_AT = {v: i * len(DIFFERENCES) for i, v in enumerate(VERDICTS)}


def no_idle_key(case: str, difference: int) -> str:
    """The NO_IDLE_KEYS entry of a case of VERDICTS and a difference in runnable tasks."""
    return f"{case}/{DIFFERENCES[min(max(difference, 0), 2)]}"


def nr_queued(machine: "Machine", cpu: "CPU") -> int:
    """rq->nr_running: running, waiting, waking from halt, and DELAY_DEQUEUE sleepers not yet picked off."""
    return cpu.nr_running + (1 if cpu.waking and cpu.current is None else 0) + len(cpu.delayed)


def find_dst_cpu(machine: "Machine", home: "CPU", params: "BalanceParams", seen: dict | None = None) -> "CPU":
    """sched_balance_find_dst_group from the parent's CPU `home`, no CPU idle: the CPU for the new task.
    With `params.fork_local_no_idle` (measured shares) the child stays on `home` with the share for the
    kernel's case and the difference in runnable tasks, else goes to the idlest other CPU; without, the
    kernel's case decides. `seen`: where to leave each CPU's PELT (load, util) as read here, by CPU id."""
    now = machine.env._now
    pct = params.imbalance_pct
    home_stat = idlest = idlest_stat = None
    for c in machine.cpus:  # each CPU's (group type, PELT load), and the idlest other one (one pass)
        load, util, runnable = cpu_stats(c, now)
        # nr_queued(machine, c), written out (a call per CPU at every such fork)
        queued = len(c.rq) + (1 if c.current is not None else (1 if c.waking else 0)) + len(c.delayed)
        stat = (group_type(queued, util, runnable, pct), load)
        if seen is not None:
            seen[c.id] = (load, util)
        if c is home:
            home_stat = stat
        elif idlest is None or stat < idlest_stat:  # update_pick_idlest: lowest type, then lowest load; first on ties
            idlest, idlest_stat = c, stat
    if idlest is None:
        return home
    v = verdict(home_stat, idlest_stat, pct)
    shares = params.fork_local_no_idle
    if shares is not None:
        # NO_IDLE_KEYS.index(no_idle_key(v, _runnable(home) - _runnable(idlest))), written out
        difference = len(home.rq) + (1 if home.current is not None else (1 if home.waking else 0)) - (
            len(idlest.rq) + (1 if idlest.current is not None else (1 if idlest.waking else 0)))
        # min(max(difference, 0), 2), written out (two builtins' calls cost more)
        share = shares[_CASE_AT[v] + (0 if difference < 0 else (difference if difference < 2 else 2))]
        return home if params.uniform() < share else idlest
    return home if v in KEEPS else idlest


def verdict(local: tuple[int, float], idlest: tuple[int, float], imbalance_pct: int) -> str:
    """sched_balance_find_dst_group's case (one of VERDICTS) for the local and the idlest group, each
    (group type, PELT load), when neither has an idle CPU."""
    (l_type, l_load), (i_type, i_load) = local, idlest
    if l_type != i_type:
        return "lower_type" if l_type < i_type else "higher_type"
    if l_type == HAS_SPARE:
        return "both_spare"  # local_sgs.idle_cpus >= idlest_sgs.idle_cpus: 0 >= 0
    imbalance = NICE_0_LOAD * (imbalance_pct - 100) / 100.0
    if i_load >= l_load + imbalance or 100.0 * l_load <= imbalance_pct * i_load:
        return "load_keep"  # the local group is not loaded enough more to push the task
    return "load_push"


def _runnable(cpu: "CPU") -> int:
    """Runnable tasks as the tracepoints see them (running, waiting, or waking from halt to run one)."""
    return cpu.nr_running + (1 if cpu.waking and cpu.current is None else 0)
