"""Load balancing between CPUs as kernel/sched/fair.c does it from the tick, with PELT load.

- PELT (kernel/sched/pelt.c): a task's load is the geometric average of the time it was runnable
  (running or waiting), 1024 when always runnable, halving every 32 ms (y^32 = 1/2). A CPU's load
  is the sum over the tasks that belong to it, running, waiting or blocked (a sleeping task's load
  stays on the CPU it last ran on and decays there, as cfs_rq->avg.load_avg keeps blocked load).
  A new task starts at 1024 (init_entity_runnable_average).
- PELT utilisation (util_avg): the geometric average of the time a task ran; a new task starts at
  its CPU's util_avg x its weight / (the CPU's load_avg + 1), at most half the CPU's spare capacity
  (post_init_entity_util_avg), and its runnable average starts there too. A dead task's averages
  leave its CPU with it, so a CPU kept busy by short-lived children shows a utilisation well below
  its busy time.
- sched_balance_rq (periodic, from the tick of a busy CPU every balance_interval x busy_factor),
  with the groups of one CPU each classified as update_sg_lb_stats/group_classify do: "overloaded"
  (2+ runnable and utilisation above capacity / imbalance_pct or runnable average above capacity x
  imbalance_pct), "has spare" (nothing runnable, or one task with both below those bounds), else
  "fully busy". find_busiest_group: nothing moves to a CPU of a higher type, nor from a busiest CPU
  that is not overloaded (this CPU being busy); two overloaded CPUs must differ by more than
  imbalance_pct in load. calculate_imbalance: a CPU with spare capacity evens the number of tasks
  (migrate_task: (busiest's runnable - this one's) / 2 tasks, none for a difference of one); a fully
  busy or overloaded one takes load (migrate_load: the smaller distance of the two to their
  average), a waiting task moving if its load, halved for each failed attempt (shr_bound(load,
  nr_balance_failed)), fits the imbalance.
- Idle balancing (sched_balance_newidle when a CPU goes idle; nohz idle balance, kicked from a busy
  CPU's tick while it has 2+ runnable, every balance_interval for each idle CPU): pull one waiting
  task from the busiest overloaded CPU (migrate_task).
- can_migrate_task: a task that ran less than migration_cost ago is cache hot and stays, unless
  this domain's balancing has failed more than cache_nice_tries times in a row (periodic and nohz
  passes count failures; newidle passes do not; a pass that finds nothing to balance starts the
  count over, as sched_balance_rq's out_balanced does).
- vCPU packing (this kernel's non-upstream sched_vcpu_pack, as measured): an idle vCPU's balance
  pass pulls with probability `idle_pull` (1 upstream); the rest leave the waiting task packed on
  its busy vCPU, so that the halted vCPU stays halted. A sync wake-up (a child's exit waking its
  parent) leaves the wakee on its own busy vCPU with probability `wake_prev` (0 upstream, where
  wake_affine_idle moves it to the waker's vCPU).
"""

from __future__ import annotations

import heapq
import math
from operator import attrgetter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from ..machine import CPU, Machine, Task

__all__ = ["BalanceParams", "PELT_HALFLIFE_US", "decay", "task_load", "task_util", "initial_util", "post_init_util",
           "cpu_stats", "group_type", "HAS_SPARE", "FULLY_BUSY", "OVERLOADED", "Balancer"]

PELT_HALFLIFE_US = 32 * 1024.0  # 32 periods of 1024 us (LOAD_AVG_PERIOD)
_LISTED = attrgetter("listed_t")
_PID = attrgetter("pid")
_LN2 = math.log(2.0)


@dataclass
class BalanceParams:
    """Load-balancing settings (microseconds); the defaults are the kernel's for one MC domain."""

    enabled: bool = True
    interval_us: float = 2000.0      # sd->balance_interval: the domain's weight in ms (2 CPUs: 2 ms)
    busy_factor: int = 16            # sd->busy_factor: a busy CPU balances 16x less often
    imbalance_pct: int = 117         # sd->imbalance_pct of an MC domain
    migration_cost_us: float = 500.0  # sysctl_sched_migration_cost: cache-hot window
    cache_nice_tries: int = 1        # sd->cache_nice_tries of an MC domain
    idle_pull: float = 1.0           # P(an idle vCPU's balance pass pulls): < 1 with vCPU packing
    wake_prev: float = 0.0           # P(a sync wakee stays on its busy previous vCPU): > 0 with packing
    # P(a new child stays on its parent's CPU when no CPU is idle), by the kernel's case and the difference in
    # runnable tasks (forksim.sched.idlest.NO_IDLE_KEYS order), as measured; None: the kernel's case decides
    fork_local_no_idle: tuple[float, ...] | None = None
    uniform: Callable[[], float] = lambda: 0.0  # a U(0,1) draw for `idle_pull` and `fork_local_no_idle`
    # the tick's pass runs this long after the tick (SCHED_SOFTIRQ: what the tick woke has run by then)
    tick_pass_delay_us: float = 0.0


_NEG_LN2 = -_LN2
_exp = math.exp


def decay(dt_us: float) -> float:
    """PELT's y^(dt/1024us), y^32 = 1/2. (The hot paths write it out in place, as
    `_exp(_NEG_LN2 * dt / PELT_HALFLIFE_US) if dt > 0.0 else 1.0`: the same float, a call fewer.)"""
    return _exp(_NEG_LN2 * dt_us / PELT_HALFLIFE_US) if dt_us > 0.0 else 1.0


def _load_and_runnable(task: "Task", now: float) -> tuple[float, float]:
    """The task's PELT load_avg and runnable_avg now (both averages of the time it was runnable)."""
    d = decay(now - task.load_t)
    if task.state in ("running", "runnable"):
        return task.load_avg * d + 1024.0 * (1.0 - d), task.runnable_avg * d + 1024.0 * (1.0 - d)
    return task.load_avg * d, task.runnable_avg * d


def task_load(task: "Task", now: float) -> float:
    """The task's PELT load_avg now (its runnable average x 1024)."""
    return _load_and_runnable(task, now)[0]


def _members(cpu: "CPU") -> list["Task"]:
    """The live tasks that belong to `cpu` (running, waiting or blocked there), in creation order, so that
    the float sums run in the same order in every process: reproducible."""
    return sorted(cpu.members, key=_PID)


def task_util(task: "Task", now: float) -> float:
    """The task's util_avg now (its running average x 1024)."""
    d = decay(now - task.util_t)
    running = task.cpu is not None and task.cpu.current is task and not task.cpu.in_transit
    return task.util_avg * d + (1024.0 * (1.0 - d) if running else 0.0)


def cpu_stats(cpu: "CPU", now: float) -> tuple[float, float, float]:
    """cfs_rq->avg's load_avg, util_avg and runnable_avg of `cpu` (blocked tasks included).
    (_load_and_runnable, task_util and decay written out in place, the same floats in the same order:
    placement reads every CPU's at a fork when none is idle.)"""
    load = util = runnable = 0.0
    members = cpu.members
    if not cpu.members_sorted:  # a task joined out of pid order: the dict rebuilt in _members(cpu)'s order, once
        members = cpu.members = dict.fromkeys(sorted(members, key=_PID))
        cpu.members_sorted = True
    for t in members:  # in pid order (_members(cpu))
        dt = now - t.load_t
        d = _exp(_NEG_LN2 * dt / PELT_HALFLIFE_US) if dt > 0.0 else 1.0
        if t.state in ("running", "runnable"):
            gain = 1024.0 * (1.0 - d)
            load += t.load_avg * d + gain
            runnable += t.runnable_avg * d + gain
        else:
            load += t.load_avg * d
            runnable += t.runnable_avg * d
        if t.util_t != t.load_t:  # else the same decay as the load's (a new task that has not run yet)
            dt = now - t.util_t
            d = _exp(_NEG_LN2 * dt / PELT_HALFLIFE_US) if dt > 0.0 else 1.0
        c = t.cpu
        running = c is not None and c.current is t and not c.in_transit
        util += t.util_avg * d + (1024.0 * (1.0 - d) if running else 0.0)
    return load, util, runnable


def initial_util(cpu: "CPU", now: float) -> float:
    """post_init_entity_util_avg: a new nice-0 task's util_avg on `cpu` (its runnable_avg starts there)."""
    load, util, _ = cpu_stats(cpu, now)
    return post_init_util(load, util)


def post_init_util(load: float, util: float) -> float:
    """post_init_entity_util_avg on a CPU of PELT `load` and `util`: the CPU's utilisation per unit of
    load for a nice-0 task, at most half the CPU's spare capacity."""
    cap = (CAPACITY - util) / 2.0
    if cap <= 0.0:
        return 0.0
    if not util > 0.0:
        return cap
    share = util * 1024.0 / (load + 1.0)
    return cap if cap < share else share  # min(share, cap), written out (a builtin's call costs more)


CAPACITY = 1024.0  # SCHED_CAPACITY_SCALE: every vCPU's capacity
HAS_SPARE, FULLY_BUSY, OVERLOADED = 0, 1, 6  # enum group_type's order (misfit .. imbalanced between)


def group_type(nr: int, util: float, runnable: float, imbalance_pct: int) -> int:
    """group_classify for a group of one CPU with `nr` runnable tasks (running included)."""
    over_util = CAPACITY * 100.0 < util * imbalance_pct
    over_runnable = CAPACITY * imbalance_pct < runnable * 100.0
    if nr > 1 and (over_util or over_runnable):
        return OVERLOADED  # group_is_overloaded
    if nr < 1 or not (over_util or over_runnable):
        return HAS_SPARE  # group_has_capacity
    return FULLY_BUSY


def _renormalise(task: "Task", src: "CPU", dst: "CPU") -> None:
    """A moved task keeps its place relative to its queue: vruntime and deadline shift by the
    difference of the two queues' min_vruntime."""
    shift = dst.min_vruntime - src.min_vruntime
    task.vruntime += shift
    task.deadline += shift


class Balancer:
    """The periodic, nohz and newidle balancing of one machine."""

    def __init__(self, machine: "Machine", params: BalanceParams):
        self.m = machine
        self.p = params
        n = len(machine.cpus)
        self.failed = [0] * n  # sd->nr_balance_failed of each CPU's domain
        self.next_balance = [0.0] * n
        self.migrations = 0

    # ---- which task may move

    def _hot(self, task: "Task", now: float) -> bool:
        """task_hot(): ran within migration_cost (a task that never ran is not hot)."""
        return now - task.last_ran < self.p.migration_cost_us

    def _movable(self, local: "CPU", src: "CPU", now: float, max_load: float | None = None) -> "Task | None":
        """detach_tasks(): the first waiting task of `src` that may move, from the tail of rq->cfs_tasks (the
        task enqueued or picked longest ago first: a hog waiting behind a new child goes before the child)."""
        failed = self.failed[local.id]
        force = failed > self.p.cache_nice_tries
        for task in sorted((e[2] for e in src.rq), key=_LISTED):
            if task.affinity is not None and task.affinity is not local:
                continue  # can_migrate_task: not in its cpus_mask
            if self._hot(task, now) and not force:
                continue
            # detach_tasks (migrate_load): not more load than the imbalance, a bound halved at each
            # failed attempt (shr_bound(load, nr_balance_failed))
            if max_load is not None and task_load(task, now) / 2.0 ** failed > max_load:
                continue
            return task
        return None

    def _waiting(self) -> "list[CPU]":
        """The CPUs with a task waiting, in CPU order."""
        cpus = self.m.cpus
        return [cpus[i] for i in sorted(self.m._queued)]

    def _busiest(self, local: "CPU", waiting: "list[CPU] | None" = None) -> "CPU | None":
        """The CPU with the most runnable tasks among those with a task waiting (the first on ties).
        `waiting`: CPUs in CPU order that hold every CPU with a task waiting (a tick's passes look among
        those that had one when the tick began); None: those that have one now (Machine._queued)."""
        best, most = None, 0
        if waiting is None:  # Machine._queued, in no order: a tie goes to the lower CPU id, as in CPU order
            cpus = self.m.cpus
            for i in self.m._queued:
                c = cpus[i]
                if c is not local:
                    n = len(c.rq) + (c.current is not None)  # c.nr_running
                    if n > most or (n == most and i < best.id):
                        best, most = c, n
            return best
        for c in waiting:
            rq = c.rq
            if rq and c is not local:
                n = len(rq) + (c.current is not None)  # c.nr_running
                if n > most:  # strictly more: the first on ties, as max() picks
                    best, most = c, n
        return best

    # ---- passes

    def idle_pull(self, local: "CPU", newidle: bool, waiting: "list[CPU] | None" = None) -> "Task | None":
        """An idle CPU's pass (newidle, or nohz on its behalf): a waiting task to run here, detached
        from its runqueue, or None. `waiting`: as for `_busiest`."""
        p = self.p
        if not p.enabled:
            return None
        if p.idle_pull < 1.0:
            # whether another CPU has a task waiting decides whether the pass draws (Machine._queued: exactly
            # those CPUs); which one is the busiest matters only to a pass that pulls
            queued = self.m._queued
            if not queued or (len(queued) == 1 and local.id in queued):
                self.failed[local.id] = 0  # self._balanced(local), written out (at most times a CPU goes idle)
                return None
            if p.uniform() >= p.idle_pull:
                return None  # vCPU packing: the halted vCPU stays halted
        src = self._busiest(local, waiting)
        if src is None:
            self._balanced(local)
            return None
        now = self.m.env._now
        task = self._movable(local, src, now)
        if task is None:
            if not newidle:
                self.failed[local.id] += 1
            return None
        self.failed[local.id] = 0
        self._detach(src, task)
        _renormalise(task, src, local)
        return task

    def busy_pass(self, local: "CPU", waiting: "list[CPU] | None" = None) -> bool:
        """sched_balance_rq() from a busy CPU's tick: find_busiest_group and calculate_imbalance for two
        groups of one CPU, then detach_tasks. `waiting`: as for `_busiest`. Returns whether a task moved
        (queued on `local`)."""
        now = self.m.env._now
        src = self._busiest(local, waiting)
        if src is None or src.nr_running < 2:
            return self._balanced(local)
        pct = self.p.imbalance_pct
        l_load, l_util, l_run = cpu_stats(local, now)
        b_load, b_util, b_run = cpu_stats(src, now)
        l_type = group_type(local.nr_running, l_util, l_run, pct)
        b_type = group_type(src.nr_running, b_util, b_run, pct)
        avg = (l_load + b_load) / 2.0
        if l_type > b_type or b_type != OVERLOADED:
            return self._balanced(local)  # a busy CPU pulls only from an overloaded one, never from a lesser type
        if l_type == OVERLOADED and (l_load >= avg or 100.0 * b_load <= pct * l_load):
            return self._balanced(local)
        if l_type == HAS_SPARE:
            if (src.nr_running - local.nr_running) >> 1 < 1:
                return self._balanced(local)  # migrate_task: the number of tasks is as even as it gets
            imbalance = None
        elif l_load >= avg:
            return self._balanced(local)
        else:
            imbalance = min(b_load - avg, avg - l_load)  # migrate_load
        task = self._movable(local, src, now, imbalance)
        if task is None:
            self.failed[local.id] += 1
            return False
        self.failed[local.id] = 0
        src._sync_min_vruntime()
        local._sync_min_vruntime()
        self._detach(src, task)
        _renormalise(task, src, local)
        self._attach(task, local)
        return True

    def _balanced(self, local: "CPU") -> bool:
        """sched_balance_rq's out_balanced: no imbalance to act on, so the domain's failed attempts start over
        (sd->nr_balance_failed = 0): only passes in a row that found an imbalance and moved nothing count.
        Returns False (nothing moved)."""
        self.failed[local.id] = 0
        return False

    def _detach(self, src: "CPU", task: "Task") -> None:
        """detach_task: off the source runqueue."""
        src.rq = [e for e in src.rq if e[2] is not task]
        heapq.heapify(src.rq)
        if not src.rq:
            self.m._queued.discard(src.id)
        src.load -= 1
        self.migrations += 1

    def _attach(self, task: "Task", dst: "CPU") -> None:
        """attach_task after a periodic balance: queued on `dst`; a running preemptible chunk there
        re-arms its slice-expiry check (a waiter now exists)."""
        dst._enqueue(task)
        cur = dst.current
        if cur is not None and not dst.in_transit and cur._done is not None and cur._preemptible:
            dst._account(cur)
            dst._program(cur)

    def _run_pulled(self, cpu: "CPU", task: "Task") -> None:
        """A nohz idle pass's pull: the halted CPU wakes to run it (halt exit and migration)."""
        params = self.m.params
        cpu.waking = True
        cpu.load += 1
        cpu._dispatch(task, self.m.halt_exit(cpu) + params.migration())

    # ---- the tick

    def tick(self) -> None:
        """At a tick: each busy CPU due for balancing balances; while a CPU has 2+ runnable, the
        idle CPUs due for balancing get a nohz idle pass."""
        now = self.m.env._now
        p = self.p
        cpus = self.m.cpus
        # the CPUs with a task waiting: the passes below look for the busiest among them. A pass can only
        # take tasks off them, but for a busy pass's move, which queues one on its own CPU: then looked up again
        waiting = self._waiting()
        overloaded = any(len(c.rq) >= 2 or c.current is not None for c in waiting)  # any c.nr_running >= 2
        next_balance = self.next_balance
        for cpu in cpus:
            if now < next_balance[cpu.id]:
                continue
            if cpu.current is None and not cpu.rq and not cpu.waking:  # cpu.idle, not waking
                if not overloaded:
                    continue
                next_balance[cpu.id] = now + p.interval_us
                task = self.idle_pull(cpu, False, waiting)
                if task is not None:
                    self._run_pulled(cpu, task)
            elif cpu.current is not None:
                next_balance[cpu.id] = now + p.interval_us * p.busy_factor
                if self.busy_pass(cpu, waiting):
                    waiting = self._waiting()
