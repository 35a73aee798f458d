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
  pushes it; of the same type (fully busy or overloaded) the task leaves only when the local load
  exceeds the idlest's by imbalance_pct and by NICE_0_LOAD * (imbalance_pct - 100) / 100.

Traced on this kernel (2 vCPUs, 2 fork parents beside 2 hogs, 2026-12-02, /tmp traces of
forksim.calibration.busy's events): with the parent's CPU holding hog + parent + its previous child
and the other only a hog, 98% of the children went to the other CPU; with a hog and a parent on each
(the other parent sleeping delayed), 92% stayed; about half of all children left, each then waiting
for the other CPU's hog to end its protected slice at a tick (p50 1.8-2.3 ms).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .balance import cpu_stats, group_type

if TYPE_CHECKING:
    from ..machine import CPU, Machine
    from .balance import BalanceParams

__all__ = ["NO_IDLE_KEYS", "nr_queued", "find_dst_cpu"]

NICE_0_LOAD = 1024.0
# The measured alternative (BalanceParams.fork_local_no_idle), by the parent's CPU's runnable tasks minus
# the idlest other CPU's: <= 0, 1, >= 2 (forksim.calibration.busy.fork_placement_no_idle)
NO_IDLE_KEYS = ("not_more", "one_more", "more")


def nr_queued(machine: "Machine", cpu: "CPU") -> int:
    """rq->nr_running: running, waiting, waking from halt, and DELAY_DEQUEUE sleepers not yet picked off."""
    return cpu.nr_running + (1 if cpu.waking and cpu.current is None else 0) + len(cpu.delayed)


def find_dst_cpu(machine: "Machine", home: "CPU", params: "BalanceParams") -> "CPU":
    """sched_balance_find_dst_group from the parent's CPU `home`, no CPU idle: the CPU for the new task.
    With `params.fork_local_no_idle` (measured shares) the child stays on `home` with the share for
    the difference in runnable tasks, else goes to the idlest other CPU."""
    now = machine.env._now
    stats = {}
    for c in machine.cpus:
        load, util, runnable = cpu_stats(c, now)
        stats[c.id] = (group_type(nr_queued(machine, c), util, runnable, params.imbalance_pct), load)
    idlest = None
    for c in machine.cpus:  # update_pick_idlest: lowest type, then lowest load; the first on ties
        if c is home:
            continue
        if idlest is None or stats[c.id] < stats[idlest.id]:
            idlest = c
    if idlest is None:
        return home
    shares = params.fork_local_no_idle
    if shares is not None:
        d = _runnable(home) - _runnable(idlest)
        share = shares[0] if d <= 0 else shares[1] if d == 1 else shares[2]
        return home if params.uniform() < share else idlest
    (l_type, l_load), (i_type, i_load) = stats[home.id], stats[idlest.id]
    if l_type != i_type:
        return home if l_type < i_type else idlest
    imbalance = NICE_0_LOAD * (params.imbalance_pct - 100) / 100.0
    if i_load >= l_load + imbalance or 100.0 * l_load <= params.imbalance_pct * i_load:
        return home  # the local group is not loaded enough more to push the task
    return idlest


def _runnable(cpu: "CPU") -> int:
    """Runnable tasks as the tracepoints see them (running, waiting, or waking from halt to run one)."""
    return cpu.nr_running + (1 if cpu.waking and cpu.current is None else 0)
