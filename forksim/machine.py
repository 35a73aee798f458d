"""The machine: CPUs with per-CPU runqueues and a fair (EEVDF/CFS-like) scheduler.

Tasks ask for CPU work; the scheduler decides the interleaving. The model follows the kernel of
this machine kind (Linux 6.x, HZ=250, preempt=none):

- Work is done in chunks. A non-preemptible chunk (kernel code, a spinlock held with irqs off)
  runs to its end. A preemptible chunk (user code, or kernel loops with cond_resched such as
  copy_page_range) can be switched away from at a tick once the task's slice is used up while
  others wait, or at once by wake-up preemption.
- Wake-up preemption only sets need_resched for a task inside a non-preemptible chunk; the switch
  happens at its next preemption point (`Task.ret_to_user()` or a preemptible chunk).
- A woken or new task is placed like select_task_rq_fair: a new task on the idlest CPU, a woken
  one by wake_affine (a sync wake-up pulls it to the waker's CPU), preferring idle CPUs. Waking a
  halted idle CPU costs `idle_wake` before it runs anything; the waker pays `ipi_send`.
- A CPU that goes idle pulls a waiting task from the busiest runqueue (newidle balance).

Time is in microseconds. A task's process (a SimPy generator) interacts through `Task.run`,
`Task.ret_to_user`, `Task.sleep`, `Machine.wake`, `Machine.spawn` and `Task.exit`; a task that
waits on any other event without `sleep()` keeps its CPU busy (spinning). The hot paths read
SimPy's clock as `env._now` (the attribute behind `env.now`, without the property call: a creation
reads it about fifty times).

The nouns live in their own modules: `Task` (forksim.task), `CPU` (forksim.cpu), the scheduler's
parameters `SchedulerParams` (forksim.sched.params); this module is the machine that holds them,
places new and woken tasks and balances idle CPUs. All four names are importable from here.
"""

from __future__ import annotations

import math
from heapq import heappop
from operator import attrgetter
from typing import Callable

import simpy
from simpy.events import PENDING

from .cpu import CPU
from .rcu import GpKthread
from .sched import eevdf
from .sched.balance import _NEG_LN2, PELT_HALFLIFE_US, Balancer, _exp, cpu_stats, post_init_util
from .sched.idlest import find_dst_cpu
from .sched.params import SchedulerParams
from .task import _TOL_ABS, _TOL_REL, SLEEPING, Task, _new_event, _tolerance

__all__ = ["SchedulerParams", "Machine", "CPU", "Task"]

_LOAD = attrgetter("load")


class Machine:
    """N CPUs and the scheduler's placement and balancing decisions."""

    def __init__(self, env: simpy.Environment, cpus: int, params: SchedulerParams):
        if cpus < 1:
            raise ValueError("a machine needs at least one CPU")
        self.env = env
        self.params = params
        # whether interruptions come at all (Task.run asks only when a CPU's next one lands in its chunk)
        self.interruptions = params.interruption_gap is not None
        self.cpus = [CPU(self, i) for i in range(cpus)]
        # ids of the idle CPUs (no current task, empty runqueue): placement and idle balance
        # look here instead of scanning every CPU
        self._idle: set[int] = set(range(cpus))
        # min(self._idle) without a scan of the set (placement asks for the first idle CPU at most forks, and the
        # CPU it names goes busy at once: a scan of a hundred ids per fork on a big machine): a heap of ids holding
        # every idle CPU's, and some that went busy since (dropped when they come to the top); _in_heap[i]: CPU i's
        # id is in it (once at most). CPU._switch_away pushes an idle CPU's id.
        self._idle_heap: list[int] = list(range(cpus))  # ascending: a heap
        self._in_heap = [True] * cpus
        # ids of the CPUs with a task waiting on their runqueue (balancing looks for the busiest among
        # them, not among hundreds of CPUs): kept by CPU._enqueue, the picks and the balancer's detach
        self._queued: set[int] = set()
        self._next_pid = 1
        # Tracing hook (forksim.trace), None for no cost: tracer(event, cpu, task, now_us) with event
        # "dispatch" (task made current; the CPU counts busy from here unless it is waking from halt),
        # "begin" (task starts running: after the switch, migration or halt exit) and
        # "leave" (task leaves the CPU; task.state says why: sleeping, runnable or dead).
        self.tracer: Callable[[str, "CPU", Task, float], None] | None = None
        self._balancer = Balancer(self, params.balance) if params.balance is not None else None
        if params.rcu is not None and params.rcu.gp_kthread_us > 0.0:
            GpKthread(self, params.rcu)  # rcu_preempt: wakes while callbacks wait for a grace period
        if self._balancer is not None and params.balance.enabled:
            env.process(self._ticks())

    def _ticks(self):
        """The scheduler tick's balancing (trigger_load_balance), at every tick, after the tick's own work on every
        CPU: SCHED_SOFTIRQ's pass walks the domain (update_blocked_averages, find_busiest_group) before it
        detaches anything, by which time a CPU whose running task's slice expired at this tick has switched to
        the next one (a child that waited behind a hog runs, the hog waits and may be pulled). Without this
        order the pass saw the hog still running and the child waiting, moved the child, and never packed the
        hogs as the kernel does (traced: 69-235 ms after the start); closed-fork-K1-rss0-hogs2 was predicted at
        661 forks/s, now 2,438, against 4,054-4,682 measured (2026-12-04). The pass comes `tick_pass_delay_us`
        after the tick (the profile's, measured: the kernel's balancing pulls land 20-70 us after it), by which
        time a kernel thread the tick woke (rcu_preempt, a kworker: ~5 us) has run and left the CPU again; at the
        tick itself the pass would find it running and the task it displaced waiting, a task it may move. Not
        modelled: the tick's own switch waits for the softirqs at the tick's irq exit (traced beside two hogs and two
        fork loops: the hog switched out 20-60 us after the tick, p50 ~35 us), so at about half the ticks that switch a
        hog out the real pass comes first and finds the hog still running; here it always sees the switch done."""
        tick = self.params.tick_us
        timeout = self.env.timeout
        delay = self._balancer.p.tick_pass_delay_us
        if delay > 0.0:
            yield timeout(delay)
        while True:
            yield timeout(tick)
            yield timeout(0.0)  # behind every event already due at this tick (the CPUs' slice expiries)
            self._balancer.tick()

    # ---- tasks

    def new_task(self, name: str, pin: int | None = None) -> Task:
        """A task; `pin`: it may run on CPU pin % cpus only, for good (sched_setaffinity)."""
        task = Task(self, name, self._next_pid)
        self._next_pid += 1
        if pin is not None:
            task.affinity = self.cpus[pin % len(self.cpus)]
        return task

    def start_task(self, name: str, pin: int | None = None) -> tuple[Task, simpy.Event]:
        """A new task of the workload itself (no parent: the idlest CPU; `pin`: that CPU only, for good)
        and the event of its first run."""
        task = self.new_task(name, pin)
        first_run, _ = self.spawn(task, None)
        return task, first_run

    def spawn(self, task: Task, parent: Task | None = None, pack: bool = False) -> tuple[simpy.Event, float]:
        """wake_up_new_task: place a new task (select_task_rq with SD_BALANCE_FORK): the idlest
        CPU, or with `pack` the parent's own CPU (a kernel that packs vCPUs to avoid waking one).

        Returns the event that fires when the task first runs, and the waker's extra cost
        (sending an IPI to a halted CPU) in microseconds.
        """
        ev = _new_event(simpy.Event)  # pending, built in place as simpy.Event.__init__ builds it
        ev.env = self.env
        ev.callbacks = []
        ev._value = PENDING
        task._wake_event = ev
        seen: dict[int, tuple[float, float]] = {}  # CPUs' PELT (load, util) as placement read them, if it did
        home = parent.cpu if parent is not None and parent.cpu is not None else None
        if parent is not None and parent.affinity is not None:
            task.affinity = parent.affinity  # copy_process: the child inherits cpus_mask
        if task.affinity is not None:
            target = task.affinity
        else:
            # pack: local although a CPU is idle; with none idle the balancer's fork placement decides
            packed = pack and home is not None and (self._idle or self._balancer is None)
            target = home if packed else self._idlest(home, seen)
        cur = target.current  # target._sync_min_vruntime(), written out
        if cur is not None and not target.in_transit and cur._done is not None:
            target._account(cur)
        p = self.params
        if p.eevdf:
            eevdf.place_new(task, target, p.slice_us)
        else:
            task.vruntime = target.min_vruntime
        task.load_t = task.util_t = self.env._now
        if self._balancer is not None:
            # post_init_entity_util_avg on the target: its PELT sums as placement just read them, where it did
            # (nothing since changed them), else initial_util reads them
            pelt = seen.get(target.id)
            if pelt is None:  # initial_util(target, now), written out
                pelt = cpu_stats(target, self.env._now)
            task.util_avg = task.runnable_avg = post_init_util(pelt[0], pelt[1])
        return ev, self._activate(task, target, home, new=True)

    def wake(self, task: Task, waker: Task | None, sync: bool = False, to: CPU | None = None) -> float:
        """try_to_wake_up: place a sleeping task (on `to` where the caller's measured rule chose a CPU);
        returns the waker's extra cost in us."""
        if task.state != SLEEPING:
            return 0.0
        waker_cpu = waker.cpu if waker is not None else None
        delayed = task._delayed
        if delayed is not None:
            target = delayed  # ttwu_runnable: still queued (DELAY_DEQUEUE), so requeued where it is
        else:
            target = to if to is not None else self._select_wake_cpu(task, waker_cpu, sync)
        if self._balancer is not None:  # task._pelt(False), written out: asleep since its last update
            now = self.env._now
            dt = now - task.load_t
            d = _exp(_NEG_LN2 * dt / PELT_HALFLIFE_US) if dt > 0.0 else 1.0
            task.load_avg = task.load_avg * d + 0.0
            task.runnable_avg = task.runnable_avg * d + 0.0
            task.load_t = now
        cur = target.current  # target._sync_min_vruntime(), written out
        if cur is not None and not target.in_transit and cur._done is not None:
            target._account(cur)
        if self.params.eevdf:
            if delayed is not None:
                eevdf.requeue_delayed(task, self.params.slice_us, target.stored_vruntime())
            else:
                eevdf.place_woken(task, target, self.params.slice_us)
            return self._activate(task, target, waker_cpu)
        # A sleeper keeps a little credit (half a slice) but never its whole sleep.
        credit = self.params.slice_us / 2.0
        if task.prev_cpu is not None and task.prev_cpu is not target:
            task.prev_cpu._sync_min_vruntime()
            task.vruntime -= task.prev_cpu.min_vruntime - target.min_vruntime
        task.vruntime = max(task.vruntime, target.min_vruntime - credit)
        return self._activate(task, target, waker_cpu)

    def halt_exit(self, cpu: CPU) -> float:
        """How long a halted `cpu` takes to run what it was woken for: idle_wake, scaled by how long
        it has been idle where the profile measured that (the host's halt polling)."""
        return self._halt_exit_after(self.env._now - cpu.idle_since)

    def _halt_exit_after(self, idle_us: float) -> float:
        p = self.params
        if p.idle_wake_at is not None:
            return p.idle_wake_at(idle_us)
        wake = p.idle_wake()
        return wake if p.idle_wake_scale is None else wake * p.idle_wake_scale(idle_us)

    def _activate(self, task: Task, target: CPU, waker_cpu: CPU | None, new: bool = False) -> float:
        p = self.params
        if self._balancer is not None:
            task.listed_t = self.env._now  # account_entity_enqueue: at the head of rq->cfs_tasks
        if target.current is None and not target.rq:  # target.idle
            # An idle vCPU halts at once (haltpoll without polling): it must be woken.
            idle_us = self.env._now - target.idle_since
            target.waking = True
            target.load += 1
            if p.idle_wake_at is not None:
                target._dispatch(task, p.idle_wake_at(idle_us))
            else:  # self._halt_exit_after(idle_us), written out
                wake = p.idle_wake()
                target._dispatch(task, wake if p.idle_wake_scale is None else wake * p.idle_wake_scale(idle_us))
            if waker_cpu is None or waker_cpu is target:
                return 0.0
            return p.ipi_send() if p.ipi_send_by_idle is None else p.ipi_send_by_idle(idle_us)
        target._enqueue(task)
        cur = target.current
        if cur is not None and not target.in_transit and p.wakeup_preemption:
            now = self.env._now
            preemptible = cur._done is not None and cur._preemptible
            in_head = preemptible and cur._preempt_from > now
            if p.eevdf:  # self._wakeup_preempts(target, cur, task, now, new), its EEVDF case written out
                target._account(cur)  # update_curr
                target.updated = now
                tol = now * _TOL_REL  # _tolerance(now), inline (the clock is never negative)
                if not tol > _TOL_ABS:
                    tol = _TOL_ABS
                preempts = eevdf.wakeup_preempts(target, cur, task, now, p.slice_us, tol, new)
            else:
                preempts = self._wakeup_preempts(target, cur, task, now, new)
            if preempts:
                if preemptible and not in_head:
                    target._preempt(cur)
                else:
                    cur.need_resched = True  # acted on at the next preemption point
                    if in_head:  # the end of the chunk's head
                        target._account(cur)
                        target._program(cur)
            elif preemptible:
                target._account(cur)
                target._program(cur)  # a waiter now exists: arm the slice-expiry check
        if self._idle and self._balancer is None and not target._kick_pending:  # what _kick_idle acts on
            self._kick_idle(target)
        return 0.0

    def _wakeup_preempts(self, cpu: CPU, cur: Task, task: Task, now: float, new: bool = False) -> bool:
        """check_preempt_wakeup_fair: does the woken (or `new`: wake_up_new_task) `task` take the CPU from `cur`?"""
        p = self.params
        if not p.eevdf:
            if new:
                return eevdf.new_task_resched(cpu, cur, now, p.slice_us, _tolerance(now))
            return now - cur._slice_start >= p.wakeup_granularity_us and task.vruntime <= cur.vruntime
        cpu._account(cur)  # update_curr
        cpu.updated = now
        tol = now * _TOL_REL  # _tolerance(now), inline (the clock is never negative)
        return eevdf.wakeup_preempts(cpu, cur, task, now, p.slice_us, tol if tol > _TOL_ABS else _TOL_ABS, new)

    def _kick_idle(self, busy: CPU) -> None:
        """nohz idle balance: at the busy CPU's next tick, an idle CPU pulls a waiting task."""
        if self._balancer is not None:
            return  # the balancer's tick does it (forksim.sched.balance)
        if busy._kick_pending or not self._idle:
            return
        busy._kick_pending = True
        tick = self.params.tick_us
        delay = max(math.ceil(self.env._now / tick) * tick - self.env._now, _tolerance(self.env._now))

        def balance(_e) -> None:
            busy._kick_pending = False
            for i in sorted(self._idle):
                if not busy.rq:
                    return
                cpu = self.cpus[i]
                if cpu.idle:
                    task = busy._pick_for(cpu)
                    if task is None:
                        continue  # every waiting task is pinned to the busy CPU
                    task.vruntime += cpu.min_vruntime - busy.min_vruntime
                    cpu.waking = True
                    cpu.load += 1
                    cpu._dispatch(task, self.halt_exit(cpu) + self.params.migration())

        self.env.timeout(delay).callbacks.append(balance)

    # ---- placement

    def first_idle(self) -> CPU:
        """The idle CPU of the lowest id (some CPU must be idle): min(self._idle), the first live id of the heap."""
        heap, idle = self._idle_heap, self._idle
        while heap[0] not in idle:  # went busy since it was pushed
            self._in_heap[heappop(heap)] = False
        return self.cpus[heap[0]]

    def _idlest(self, home: CPU | None, seen: dict | None = None) -> CPU:
        # (`seen`: as find_dst_cpu's) an idle CPU has load 0 and comes first in CPU order among the least loaded
        if self._idle and (home is None or home.current is not None or home.rq):  # home.nr_running > 0
            return self.first_idle()
        if not self._idle and home is not None and self._balancer is not None:  # (h-hogs' hook)
            return find_dst_cpu(self, home, self._balancer.p, seen)  # sched_balance_find_dst_group
        if not self._idle and home is not None and home.load <= 1:
            return home  # no CPU is idle, so none has a load below 1: nothing beats the parent's
        best = min(self.cpus, key=_LOAD)  # the first of the least loaded, in CPU order
        if home is not None and home.load <= best.load:
            return home  # the parent's CPU unless another is strictly less loaded
        return best

    def exec_target(self, task: Task, alone_moves: float, uniform: Callable[[], float]) -> CPU | None:
        """sched_exec's select_task_rq(WF_EXEC) for the running `task`: the CPU it moves to, or None to
        stay. find_idlest_group (SD_BALANCE_EXEC) compares idle CPUs with the task's own taken out
        (idle_cpu_without): a task alone on its CPU sees it as idle as any other and stays, a task
        sharing its CPU goes to the first idle one. `alone_moves`: P(the lone task moves anyway), the
        profile's exec_moves_when_idle (a kernel that packs vCPUs; 0 upstream)."""
        if task.affinity is not None or not self._idle:
            return None
        cpu = task.cpu
        target = self.first_idle()
        if cpu.rq:  # others wait on its CPU: the idle one is idler
            return target
        return target if alone_moves > 0.0 and uniform() < alone_moves else None

    def move_to(self, task: Task, target: CPU) -> float:
        """migration_cpu_stop: put `task`, just switched away from its CPU by the stopper (Task.sleep),
        on `target` with its lag (move_queued_task); returns the stopper's IPI cost in us (the target
        was halted)."""
        target._sync_min_vruntime()
        if self.params.eevdf:
            eevdf.undelay(task)
            eevdf.place_woken(task, target, self.params.slice_us)
        else:
            task.prev_cpu._sync_min_vruntime()
            task.vruntime += target.min_vruntime - task.prev_cpu.min_vruntime
        return self._activate(task, target, task.prev_cpu)

    def _select_wake_cpu(self, task: Task, waker_cpu: CPU | None, sync: bool) -> CPU:
        if task.affinity is not None:
            return task.affinity  # select_task_rq: a task allowed on one CPU goes there
        prev = task.prev_cpu or self.cpus[0]
        if waker_cpu is not None and sync and len(waker_cpu.rq) + (waker_cpu.current is not None) == 1:  # nr_running
            b = self.params.balance
            if (b is not None and b.wake_prev > 0.0 and prev is not waker_cpu and not prev.idle
                    and b.uniform() < b.wake_prev):
                return prev  # vCPU packing: the wakee stays on its busy vCPU (as measured)
            if prev is not waker_cpu and prev.idle and not prev.waking:
                # select_idle_sibling: the waker's CPU (wake_affine_idle's target) is busy, and "if the
                # previous CPU is cache affine and idle, don't be stupid": the wakee stays there
                return prev
            return waker_cpu  # wake_affine_idle: the waker is about to sleep
        if prev.idle and not prev.waking:
            return prev
        if waker_cpu is not None and waker_cpu.idle and not waker_cpu.waking:
            return waker_cpu
        if self._idle:  # the first idle CPU (an idle CPU is never waking)
            return self.first_idle()
        if waker_cpu is not None and waker_cpu.nr_running < prev.nr_running:
            return waker_cpu
        return prev

    def _steal_for(self, idle_cpu: CPU) -> Task | None:
        """newidle balance: take the first waiting task of the busiest runqueue."""
        if self._balancer is not None:
            return self._balancer.idle_pull(idle_cpu, newidle=True)
        task = None
        for busiest in sorted((c for c in self.cpus if c is not idle_cpu and c.rq), key=lambda c: -len(c.rq)):
            task = busiest._pick_for(idle_cpu)  # the first of the busiest runqueue that may move here
            if task is not None:
                task.vruntime += idle_cpu.min_vruntime - busiest.min_vruntime
                return task
        return None

    # ---- measurement

    def busy_per_cpu(self) -> list[float]:
        """Each CPU's busy time so far (us), the running stretch included."""
        now = self.env._now
        return [c.busy_us + (now - c._busy_since if c._busy_since is not None else 0.0) for c in self.cpus]

    def busy_us(self) -> float:
        """All CPUs' busy time so far (us)."""
        return sum(self.busy_per_cpu())
