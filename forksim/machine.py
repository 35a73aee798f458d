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
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Callable

import simpy
from simpy.events import NORMAL, PENDING

from .sched import eevdf
from .sched.balance import Balancer, BalanceParams, decay

__all__ = ["SchedulerParams", "Machine", "CPU", "Task"]



def _tolerance(now: float) -> float:
    """Work left below this is done: 1 ps, or the float resolution of the clock at `now`."""
    return max(1e-6, abs(now) * 4e-16)

_LOAD = attrgetter("load")

RUNNING, RUNNABLE, SLEEPING, DEAD = "running", "runnable", "sleeping", "dead"


@dataclass
class SchedulerParams:
    """Scheduling costs in microseconds; samplers draw one value per use (tails come from them)."""

    tick_us: float = 4000.0
    slice_us: float = 1500.0
    wakeup_granularity_us: float = 1500.0
    wakeup_preemption: bool = True
    context_switch: Callable[[], float] = field(default=lambda: 0.0)
    idle_wake: Callable[[], float] = field(default=lambda: 0.0)
    ipi_send: Callable[[], float] = field(default=lambda: 0.0)
    migration: Callable[[], float] = field(default=lambda: 0.0)
    # Interruptions of a running CPU (tick, device interrupts, host preemption of a vCPU): the gap
    # to the next one (None: none) and how long one lasts.
    interruption_gap: Callable[[], float] | None = None
    interruption: Callable[[], float] = field(default=lambda: 0.0)
    # EEVDF (Linux 6.6+, forksim.sched.eevdf): lag placement, deadlines and RUN_TO_PARITY slice
    # protection. False: the plain fair queue (wake-up preemption after wakeup_granularity_us).
    eevdf: bool = False
    # Load balancing (forksim.sched.balance): periodic, nohz and newidle passes with PELT load and
    # cache-hot tasks. None: an idealised balancer (an idle CPU pulls any waiting task at once).
    balance: BalanceParams | None = None


class Task:
    """A schedulable entity (a process or a thread) as the scheduler sees it."""

    __slots__ = (
        "machine", "name", "pid", "cpu", "prev_cpu", "state", "vruntime", "need_resched",
        "_left", "_total", "_done", "_preemptible", "_preempt_from", "_chunk_start", "_slice_start",
        "_wake_event", "deadline", "vlag", "_protect_end", "last_ran", "load_avg", "load_t", "_delayed",
    )

    def __init__(self, machine: "Machine", name: str, pid: int):
        self.machine = machine
        self.name = name
        self.pid = pid
        self.cpu: CPU | None = None
        self.prev_cpu: CPU | None = None
        self.state = SLEEPING
        self.vruntime = 0.0
        self.need_resched = False
        self._left = 0.0
        self._total = 0.0
        self._done: simpy.Event | None = None
        self._preemptible = False
        self._preempt_from = 0.0  # a preemptible chunk's first preemption point (after its head)
        self._chunk_start = 0.0
        self._slice_start = 0.0
        self._wake_event: simpy.Event | None = None
        self.deadline = 0.0      # EEVDF virtual deadline
        self.vlag = 0.0          # EEVDF lag kept while asleep
        self._protect_end = 0.0  # RUN_TO_PARITY: wall time its protected slice ends
        self.last_ran = -math.inf  # when it last left a CPU (task_hot)
        self.load_avg = 1024.0   # PELT runnable average (a new task starts full)
        self._delayed: tuple[CPU, int] | None = None  # DELAY_DEQUEUE: (its CPU, that CPU's picks then)
        self.load_t = machine.env._now

    def _pelt(self, runnable: bool) -> None:
        """Bring the PELT load up to now; `runnable`: whether it was runnable since the last update."""
        now = self.machine.env._now
        d = decay(now - self.load_t)
        self.load_avg = self.load_avg * d + (1024.0 * (1.0 - d) if runnable else 0.0)
        self.load_t = now

    def __repr__(self) -> str:
        return f"<Task {self.name} pid={self.pid} {self.state} cpu={self.cpu.id if self.cpu else None}>"

    # ---- what a task's process calls

    def run(self, us: float, preemptible: bool = False, head: float = 0.0) -> simpy.Event:
        """Do `us` of CPU work; the event fires when it is done. A preemptible chunk's first `head` us
        have no preemption point (a wake-up meanwhile is acted on once they are done)."""
        if self.state != RUNNING or self._done is not None:
            raise RuntimeError(f"{self} asked for CPU work while not running on a CPU")
        us = us if us > 0.0 else 0.0
        if self.machine.params.interruption_gap is not None:
            cpu = self.cpu
            nxt, now = cpu._next_interruption, self.machine.env._now
            if nxt < now + us or nxt < now:  # else none lands in this chunk: skip the call
                us += cpu._interruptions(us)
        self._left = self._total = us
        self._preemptible = preemptible
        if not preemptible:
            # Nothing cuts a non-preemptible chunk short: its end is a single timeout, whose first
            # callback charges the CPU time before the task's process resumes on the same event.
            env = self.machine.env
            self._chunk_start = env._now
            self.cpu._token += 1
            ev = env.timeout(self._left)
            ev.callbacks.append(self._chunk_end)
            self._done = ev
            return ev
        ev = simpy.Event(self.machine.env)
        self._done = ev
        self._preempt_from = self.machine.env._now + head
        self.cpu._start_chunk(self)
        return ev

    def _chunk_end(self, _ev: simpy.Event) -> None:
        self.cpu._account(self)
        self._done = None

    def ret_to_user(self) -> simpy.Event | None:
        """A preemption point (return from a syscall): an event if the task is switched away."""
        cpu = self.cpu
        if self.need_resched or (cpu.rq and cpu._slice_expired(self)):
            return cpu._preempt(self)
        return None

    def sleep(self) -> simpy.Event:
        """Leave the CPU until `Machine.wake(task)`; the event fires when running again."""
        if self.state != RUNNING:
            raise RuntimeError(f"{self} cannot sleep: not running")
        ev = simpy.Event(self.machine.env)
        self._wake_event = ev
        cpu = self.cpu
        cpu._account(self)
        m = self.machine
        if m._balancer is not None:
            self._pelt(True)
        if m.params.eevdf:
            self.vlag = eevdf.dequeue_lag(self, cpu, m.params.slice_us, m.params.tick_us)
            # DELAY_DEQUEUE: a sleeper with negative lag stays queued (its vruntime kept) until its
            # CPU next picks; woken before that, it is requeued as it was (see Machine.wake)
            # (the switch away from it below is the one pick it survives: the next task is chosen)
            # A lag of exactly 0 counts: the kernel's sleeper ran a few us past the placement of
            # what it woke (a vfork parent after wake_up_new_task), which the model folds into one chunk.
            self._delayed = (cpu, cpu._picks + 1) if cpu.rq and eevdf.raw_lag(self, cpu) <= 0.0 else None
        self.state = SLEEPING
        self.need_resched = False
        self.prev_cpu = cpu
        self.cpu = None
        cpu._switch_away()
        return ev

    def sleep_for(self, us: float) -> simpy.Event:
        """Sleep `us` (a timer wakes the task)."""
        ev = self.sleep()
        self.machine.env.timeout(us).callbacks.append(lambda _e: self.machine.wake(self, None))
        return ev

    def exit(self) -> None:
        """Leave the CPU for good (the final schedule of a dead task)."""
        cpu = self.cpu
        cpu._account(self)
        self.state = DEAD
        self.machine.tasks.pop(self, None)
        self.prev_cpu = cpu
        self.cpu = None
        cpu._switch_away()

    def progress(self) -> float:
        """Fraction of the current chunk done (how far has dup_mmap got, say)."""
        if self._done is None or self._total <= 0.0:
            return 1.0
        left = self._left
        cpu = self.cpu
        if self.state == RUNNING and cpu is not None and not cpu.in_transit:
            left -= self.machine.env._now - self._chunk_start
        return min(1.0, max(0.0, 1.0 - left / self._total))


class CPU:
    """One CPU: its runqueue (a heap on vruntime), the running task, busy-time accounting."""

    __slots__ = (
        "machine", "id", "rq", "current", "min_vruntime", "_token", "_busy_since", "busy_us",
        "waking", "in_transit", "_kick_pending", "_seq", "_next_interruption", "load", "_picks",
    )

    def __init__(self, machine: "Machine", cpu_id: int):
        self.machine = machine
        self.id = cpu_id
        self.rq: list[tuple[float, int, Task]] = []
        self.current: Task | None = None
        self.min_vruntime = 0.0
        self._token = 0
        self._busy_since: float | None = None
        self.busy_us = 0.0
        self.waking = False  # a halted CPU on its way to run a task
        # placement's load: nr_running, + 1 while waking from halt (kept up to date, so finding the
        # idlest of hundreds of CPUs is one C-level min())
        self.load = 0
        self.in_transit = False  # current task chosen but not yet running (switch, migration, halt exit)
        self._kick_pending = False
        self._next_interruption = 0.0
        self._seq = 0
        self._picks = 0  # tasks made current so far (DELAY_DEQUEUE: a delayed sleeper leaves at a pick)

    def __repr__(self) -> str:
        return f"<CPU {self.id} current={self.current.name if self.current else None} rq={len(self.rq)}>"

    @property
    def nr_running(self) -> int:
        return len(self.rq) + (1 if self.current is not None else 0)

    @property
    def idle(self) -> bool:
        return self.current is None and not self.rq

    # ---- runqueue

    def _enqueue(self, task: Task) -> None:
        self.machine._idle.discard(self.id)
        task.state = RUNNABLE
        task.cpu = self
        self._seq += 1
        heapq.heappush(self.rq, (task.vruntime, self._seq, task))
        self.load += 1

    def _pick(self) -> Task | None:
        if self.rq:
            self.load -= 1
            return heapq.heappop(self.rq)[2]
        return None

    # ---- running work

    def _account(self, task: Task) -> None:
        """Charge the running task for the CPU time of its current chunk so far."""
        if task._done is not None:
            now = self.machine.env._now
            ran = now - task._chunk_start
            task._left -= ran
            task._chunk_start = now
            task.vruntime += ran
            floor = min(task.vruntime, self.rq[0][0]) if self.rq else task.vruntime
            if floor > self.min_vruntime:
                self.min_vruntime = floor

    def _preempt_at(self, task: Task) -> float:
        """The first tick at or after the end of the task's slice (no hrtick: ticks notice it);
        under EEVDF the end of its protected slice (RUN_TO_PARITY: up to its deadline)."""
        p = self.machine.params
        end = task._protect_end if p.eevdf else task._slice_start + p.slice_us
        return math.ceil(end / p.tick_us) * p.tick_us

    def _interruptions(self, us: float) -> float:
        """Time taken by the interruptions that land in `us` of work starting now (a Poisson stream
        per CPU; memoryless, so a stream that fell behind while the CPU did not run restarts now)."""
        p = self.machine.params
        now = self.machine.env._now
        nxt = self._next_interruption
        if nxt < now:
            nxt = now + p.interruption_gap()
        extra = 0.0
        while nxt < now + us + extra:
            extra += p.interruption()
            nxt += p.interruption_gap()
        self._next_interruption = nxt
        return extra

    def _sync_min_vruntime(self) -> None:
        """Charge the running task up to now, so min_vruntime is current before a placement."""
        cur = self.current
        if cur is not None and not self.in_transit and cur._done is not None:
            self._account(cur)

    def _slice_expired(self, task: Task) -> bool:
        return self.machine.env._now >= self._preempt_at(task) - _tolerance(self.machine.env._now)

    def _start_chunk(self, task: Task) -> None:
        now = self.machine.env._now
        task._chunk_start = now
        if task._preemptible and now >= task._preempt_from and (
                task.need_resched or (self.rq and self._slice_expired(task))):
            self._preempt(task)
            return
        self._program(task)

    def _program(self, task: Task) -> None:
        """Set the timer for the running chunk: its end, or the next preemption check."""
        self._token += 1
        token = self._token
        env = self.machine.env
        now = env._now
        done = task._done
        if done._value is not PENDING:
            done = self._disarm(task)
        delay = task._left
        if task._preemptible and self.rq:
            check = max(self._preempt_at(task) - now, _tolerance(now))
            if task._preempt_from > now + _tolerance(now):  # in the head: no check before its end
                head_left = task._preempt_from - now
                check = head_left if task.need_resched else max(check, head_left)
            if check < delay:
                env.timeout(check).callbacks.append(lambda _e: self._timer(token))
                return
        # Nothing due before the chunk's end: schedule the event the task waits on itself, with the
        # CPU's accounting first among its callbacks (one event per chunk, not a timer and an event).
        done.callbacks.insert(0, self._chunk_done)
        done._ok = True
        done._value = None
        env.schedule(done, NORMAL, delay)

    def _chunk_done(self, _ev: simpy.Event) -> None:
        task = self.current
        self._account(task)
        task._done = None

    def _disarm(self, task: Task) -> simpy.Event:
        """The chunk's end, already scheduled, will not be its end (preempted, or a waiter came):
        the scheduled event goes off with no callbacks, and the task waits on a fresh one."""
        old = task._done
        fresh = simpy.Event(self.machine.env)
        fresh.callbacks = old.callbacks[1:]  # less _chunk_done
        old.callbacks = []
        task._done = fresh
        return fresh

    def _timer(self, token: int) -> None:
        if token != self._token:
            return  # reprogrammed since
        task = self.current
        self._account(task)
        if task._left <= _tolerance(self.machine.env._now):
            done = task._done
            task._done = None
            done.succeed()
            return
        if self.rq and (task.need_resched or self._slice_expired(task)):
            self._preempt(task)
        else:
            self._program(task)

    def _preempt(self, task: Task) -> simpy.Event | None:
        """Put the running task back on the runqueue and run the next one."""
        self._account(task)
        self._token += 1
        task.need_resched = False
        ev = None
        if task._done is not None and task._done._value is not PENDING:
            self._disarm(task)
        if task._done is None:  # at a preemption point between chunks: resume its process later
            ev = simpy.Event(self.machine.env)
            task._wake_event = ev
        task.prev_cpu = self
        self._enqueue(task)
        self._switch_away()
        return ev

    def _switch_away(self) -> None:
        """The current task left (slept, exited or was preempted): run the next one or go idle."""
        m = self.machine
        now = m.env._now
        if m.tracer is not None:
            m.tracer("leave", self, self.current, now)
        self.current.last_ran = now
        if self._busy_since is not None:
            self.busy_us += now - self._busy_since
            self._busy_since = None
        self.current = None
        self.load -= 1
        self._token += 1
        nxt = self._pick()
        cost = 0.0
        if nxt is None:
            nxt = m._steal_for(self)  # sched_balance_newidle
            if nxt is not None:
                cost += m.params.migration()
        if nxt is None:
            m._idle.add(self.id)
            return  # idle: the vCPU halts
        self._dispatch(nxt, cost + m.params.context_switch())

    def _dispatch(self, task: Task, delay: float) -> None:
        """Make `task` current; it starts running after `delay` (switch, migration or halt exit)."""
        m = self.machine
        now = m.env._now
        task.state = RUNNING
        task.cpu = self
        self.current = task
        self.load += 1
        self._picks += 1
        m._idle.discard(self.id)
        if task.vruntime < self.min_vruntime and not m.params.eevdf:
            task.vruntime = self.min_vruntime
        self._token += 1
        if self._busy_since is None and not self.waking:
            self._busy_since = now
        if m.tracer is not None:
            m.tracer("dispatch", self, task, now)
        if delay <= 0.0:
            self._begin(task)
            return
        self.in_transit = True
        ev = task._wake_event
        if task._done is None and ev is not None:
            # The task's process waits on its wake-up event: schedule that event itself after the
            # delay, with _begin first among its callbacks (one event, not a timeout and a wake-up).
            task._wake_event = None
            ev.callbacks.insert(0, self._begin_current)
            ev._ok = True
            ev._value = None
            m.env.schedule(ev, NORMAL, delay)
        else:
            m.env.timeout(delay).callbacks.append(lambda _e: self._begin(task))

    def _begin_current(self, _ev: simpy.Event) -> None:
        self._begin(self.current)

    def _begin(self, task: Task) -> None:
        now = self.machine.env._now
        self.in_transit = False
        if self.waking:
            self.waking = False
            self.load -= 1
            self._busy_since = now
        task._slice_start = now
        p = self.machine.params
        if p.eevdf:  # set_next_entity -> set_protect_slice: protected up to its deadline
            eevdf.renew_deadline(task, p.slice_us)
            task._protect_end = now + max(0.0, task.deadline - task.vruntime)
        if self.machine.tracer is not None:
            self.machine.tracer("begin", self, task, now)
        if task._done is not None:  # a preempted chunk resumes
            task._chunk_start = now
            self._program(task)
            return
        ev = task._wake_event
        if ev is not None:
            task._wake_event = None
            ev.succeed()


class Machine:
    """N CPUs and the scheduler's placement and balancing decisions."""

    def __init__(self, env: simpy.Environment, cpus: int, params: SchedulerParams):
        if cpus < 1:
            raise ValueError("a machine needs at least one CPU")
        self.env = env
        self.params = params
        self.cpus = [CPU(self, i) for i in range(cpus)]
        # ids of the idle CPUs (no current task, empty runqueue): placement and idle balance
        # look here instead of scanning every CPU
        self._idle: set[int] = set(range(cpus))
        self._next_pid = 1
        # Tracing hook (forksim.trace), None for no cost: tracer(event, cpu, task, now_us) with event
        # "dispatch" (task made current; the CPU counts busy from here unless it is waking from halt),
        # "begin" (task starts running: after the switch, migration or halt exit) and
        # "leave" (task leaves the CPU; task.state says why: sleeping, runnable or dead).
        self.tracer: Callable[[str, "CPU", Task, float], None] | None = None
        # live tasks, in creation order (PELT load per CPU sums over them; a dict, not a set, so the
        # float sums run in the same order in every process: reproducible)
        self.tasks: dict[Task, None] = {}
        self._balancer = Balancer(self, params.balance) if params.balance is not None else None
        if self._balancer is not None and params.balance.enabled:
            env.process(self._ticks())

    def _ticks(self):
        """The scheduler tick's balancing (trigger_load_balance), at every tick."""
        tick = self.params.tick_us
        while True:
            yield self.env.timeout(tick)
            self._balancer.tick()

    # ---- tasks

    def new_task(self, name: str) -> Task:
        task = Task(self, name, self._next_pid)
        self._next_pid += 1
        if self._balancer is not None:
            self.tasks[task] = None
        return task

    def start_task(self, name: str) -> tuple[Task, simpy.Event]:
        """A new task of the workload itself (no parent: the idlest CPU) and the event of its first run."""
        task = self.new_task(name)
        first_run, _ = self.spawn(task, None)
        return task, first_run

    def spawn(self, task: Task, parent: Task | None = None, pack: bool = False) -> tuple[simpy.Event, float]:
        """wake_up_new_task: place a new task (select_task_rq with SD_BALANCE_FORK): the idlest
        CPU, or with `pack` the parent's own CPU (a kernel that packs vCPUs to avoid waking one).

        Returns the event that fires when the task first runs, and the waker's extra cost
        (sending an IPI to a halted CPU) in microseconds.
        """
        ev = simpy.Event(self.env)
        task._wake_event = ev
        home = parent.cpu if parent is not None and parent.cpu is not None else None
        target = home if pack and home is not None else self._idlest(home)
        target._sync_min_vruntime()
        if self.params.eevdf:
            eevdf.place_new(task, target, self.params.slice_us)
        else:
            task.vruntime = target.min_vruntime
        task.load_t = self.env._now
        return ev, self._activate(task, target, home)

    def wake(self, task: Task, waker: Task | None, sync: bool = False) -> float:
        """try_to_wake_up: place a sleeping task; returns the waker's extra cost in us."""
        if task.state != SLEEPING:
            return 0.0
        waker_cpu = waker.cpu if waker is not None else None
        target = self._select_wake_cpu(task, waker_cpu, sync)
        if self._balancer is not None:
            task._pelt(False)
        target._sync_min_vruntime()
        if self.params.eevdf:
            d = task._delayed
            task._delayed = None
            if d is None or d[0] is not target or d[1] != target._picks:
                eevdf.place_woken(task, target, self.params.slice_us)
            # else still delayed on this CPU (no pick since it slept): requeued with its vruntime
            return self._activate(task, target, waker_cpu)
        # A sleeper keeps a little credit (half a slice) but never its whole sleep.
        credit = self.params.slice_us / 2.0
        if task.prev_cpu is not None and task.prev_cpu is not target:
            task.prev_cpu._sync_min_vruntime()
            task.vruntime -= task.prev_cpu.min_vruntime - target.min_vruntime
        task.vruntime = max(task.vruntime, target.min_vruntime - credit)
        return self._activate(task, target, waker_cpu)

    def _activate(self, task: Task, target: CPU, waker_cpu: CPU | None) -> float:
        p = self.params
        if target.idle:
            # An idle vCPU halts at once (haltpoll without polling): it must be woken.
            target.waking = True
            target.load += 1
            target._dispatch(task, p.idle_wake())
            return p.ipi_send() if waker_cpu is not None and waker_cpu is not target else 0.0
        target._enqueue(task)
        cur = target.current
        if cur is not None and not target.in_transit and p.wakeup_preemption:
            now = self.env._now
            preemptible = cur._done is not None and cur._preemptible
            in_head = preemptible and cur._preempt_from > now
            if self._wakeup_preempts(target, cur, task, now):
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
        self._kick_idle(target)
        return 0.0

    def _wakeup_preempts(self, cpu: CPU, cur: Task, task: Task, now: float) -> bool:
        """check_preempt_wakeup_fair: does the woken `task` take the CPU from `cur`?"""
        p = self.params
        if not p.eevdf:
            return now - cur._slice_start >= p.wakeup_granularity_us and task.vruntime <= cur.vruntime
        cpu._account(cur)  # update_curr
        return eevdf.wakeup_preempts(cpu, cur, task, now, p.slice_us, _tolerance(now))

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
                    task = busy._pick()
                    task.vruntime += cpu.min_vruntime - busy.min_vruntime
                    cpu.waking = True
                    cpu.load += 1
                    cpu._dispatch(task, self.params.idle_wake() + self.params.migration())

        self.env.timeout(delay).callbacks.append(balance)

    # ---- placement

    def _idlest(self, home: CPU | None) -> CPU:
        # an idle CPU has load 0 and comes first in CPU order among the least loaded
        if self._idle and (home is None or home.nr_running > 0):
            return self.cpus[min(self._idle)]
        if not self._idle and home is not None and home.load <= 1:
            return home  # no CPU is idle, so none has a load below 1: nothing beats the parent's
        best = min(self.cpus, key=_LOAD)  # the first of the least loaded, in CPU order
        if home is not None and home.load <= best.load:
            return home  # the parent's CPU unless another is strictly less loaded
        return best

    def _select_wake_cpu(self, task: Task, waker_cpu: CPU | None, sync: bool) -> CPU:
        prev = task.prev_cpu or self.cpus[0]
        if waker_cpu is not None and sync and waker_cpu.nr_running == 1:
            b = self.params.balance
            if (b is not None and b.wake_prev > 0.0 and prev is not waker_cpu and not prev.idle
                    and b.uniform() < b.wake_prev):
                return prev  # vCPU packing: the wakee stays on its busy vCPU (as measured)
            return waker_cpu  # wake_affine_idle: the waker is about to sleep
        if prev.idle and not prev.waking:
            return prev
        if waker_cpu is not None and waker_cpu.idle and not waker_cpu.waking:
            return waker_cpu
        if self._idle:  # the first idle CPU (an idle CPU is never waking)
            return self.cpus[min(self._idle)]
        if waker_cpu is not None and waker_cpu.nr_running < prev.nr_running:
            return waker_cpu
        return prev

    def _steal_for(self, idle_cpu: CPU) -> Task | None:
        """newidle balance: take the first waiting task of the busiest runqueue."""
        if self._balancer is not None:
            return self._balancer.idle_pull(idle_cpu, newidle=True)
        busiest = None
        for cpu in self.cpus:
            if cpu is not idle_cpu and cpu.rq and (busiest is None or len(cpu.rq) > len(busiest.rq)):
                busiest = cpu
        if busiest is None:
            return None
        task = busiest._pick()
        task.vruntime += idle_cpu.min_vruntime - busiest.min_vruntime
        return task

    # ---- measurement

    def busy_us(self) -> float:
        now = self.env._now
        return sum(c.busy_us + (now - c._busy_since if c._busy_since is not None else 0.0) for c in self.cpus)
