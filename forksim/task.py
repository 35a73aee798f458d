"""A task (a process or a thread) as the scheduler sees it, and the calls its SimPy process makes:
`Task.run` (a chunk of CPU work, preemptible or not), `Task.ret_to_user` (a preemption point),
`Task.sleep` / `Task.sleep_for` and `Task.exit`. The CPU that runs it is forksim.cpu; placement and
wake-ups are forksim.machine's."""

from __future__ import annotations

import math
from heapq import heappush
from typing import TYPE_CHECKING

import simpy
from simpy.events import NORMAL, PENDING, Event, Timeout

from .sched import eevdf
from .sched.balance import _NEG_LN2, PELT_HALFLIFE_US, _exp

if TYPE_CHECKING:
    from .cpu import CPU
    from .machine import Machine

__all__ = ["Task", "RUNNING", "RUNNABLE", "SLEEPING", "DEAD"]


_TOL_ABS = 1e-6  # us: 1 ps
_TOL_REL = 4e-16  # the float resolution of the clock, relative to its value


def _tolerance(now: float) -> float:
    """Work left below this is done: 1 ps, or the float resolution of the clock at `now`."""
    tol = abs(now) * _TOL_REL
    return tol if tol > _TOL_ABS else _TOL_ABS  # max(_TOL_ABS, tol), written out (a builtin's call costs more)


RUNNING, RUNNABLE, SLEEPING, DEAD = "running", "runnable", "sleeping", "dead"

_new_event = object.__new__  # an event's attributes are set in place on the hot path (Task.run)


def _timeout(env: simpy.Environment, delay: float, callback) -> Timeout:
    """`env.timeout(delay)` with `callback` its first callback, built in place as Timeout.__init__ and env.schedule
    build it (one call, not three: the CPUs' timers and switches)."""
    ev = _new_event(Timeout)
    ev.env = env
    ev.callbacks = [callback]
    ev._value = None
    ev._delay = delay
    ev._ok = True
    heappush(env._queue, (env._now + delay, NORMAL, next(env._eid), ev))
    return ev


class Task:
    """A schedulable entity (a process or a thread) as the scheduler sees it."""

    __slots__ = (
        "machine", "name", "pid", "cpu", "prev_cpu", "state", "vruntime", "need_resched",
        "_left", "_total", "_done", "_preemptible", "_preempt_from", "_chunk_start", "_slice_start",
        "_wake_event", "deadline", "vlag", "_protect_end", "last_ran", "load_avg", "load_t", "_delayed", "picked_off",
        "util_avg", "util_t", "runnable_avg", "listed_t",
        "affinity", "_end_cb", "home", "env",
    )

    def __init__(self, machine: "Machine", name: str, pid: int):
        self.machine = machine
        self.env = machine.env  # (machine.env, read at every chunk)
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
        self.runnable_avg = 0.0  # the same average from post_init_entity_util_avg's start (forksim.sched.balance)
        self.util_avg = 0.0      # PELT running average (util_avg), brought up to util_t
        now = machine.env._now
        self.util_t = now
        self.listed_t = now  # when it last went to the head of its CPU's task list (balancing's order)
        self._delayed: CPU | None = None  # DELAY_DEQUEUE: the CPU it still sits queued on, asleep
        # a pick dequeued it while it slept as a delayed sleeper (eevdf.pick_index, pick_over_delayed): its wake-up
        # then goes through select_task_rq (placement_room.wake_away.after_pick), not ttwu_runnable in place
        self.picked_off = False
        self.load_t = now
        self.affinity: CPU | None = None  # the one CPU it may run on (sched_setaffinity), None: any
        self._end_cb = self._chunk_end  # bound once: the first callback of every non-preemptible chunk
        # the CPU whose PELT sums it counts in (its CPU, or the last one it ran on), where a balancer keeps them
        self.home: CPU | None = None

    def _pelt(self, runnable: bool) -> None:
        """Bring the PELT load up to now; `runnable`: whether it was runnable since the last update."""
        now = self.env._now
        dt = now - self.load_t
        d = _exp(_NEG_LN2 * dt / PELT_HALFLIFE_US) if dt > 0.0 else 1.0  # decay(dt), written out
        self.load_avg = self.load_avg * d + (1024.0 * (1.0 - d) if runnable else 0.0)
        self.runnable_avg = self.runnable_avg * d + (1024.0 * (1.0 - d) if runnable else 0.0)
        self.load_t = now

    def __repr__(self) -> str:
        return f"<Task {self.name} pid={self.pid} {self.state} cpu={self.cpu.id if self.cpu else None}>"

    # ---- what a task's process calls

    def run(self, us: float, preemptible: bool = False, head: float = 0.0, scaled: float = 0.0) -> simpy.Event:
        """Do `us` of CPU work; the event fires when it is done. A preemptible chunk's first `head` us
        have no preemption point (a wake-up meanwhile is acted on once they are done). `scaled`: the first us
        of `us` (and of `head`) that came from `interrupted` now, at the host's speed and interrupted already."""
        if self.state != RUNNING or self._done is not None:
            raise RuntimeError(f"{self} asked for CPU work while not running on a CPU")
        if not us > 0.0:
            us = 0.0
        env = self.env
        now = env._now
        cpu = self.cpu
        # the host's speed at the chunk's start (episodes last milliseconds: one factor a chunk)
        f = cpu.speed if now < cpu._speed_until else cpu.speed_at(now)
        if f != 1.0:
            us = scaled + (us - scaled) * f
            if head > scaled:
                head = scaled + (head - scaled) * f
        # else none lands in this chunk (`us` is not negative: a next one before now is before now + us too;
        # inf where none ever comes, CPU.__init__)
        if cpu._next_interruption < now + us and self.machine.interruptions:
            us += cpu._interruptions(us)
        self._left = self._total = us
        self._preemptible = preemptible
        # (the events below are built in place, as simpy.Event / Timeout.__init__ and env.schedule
        # build them: Python calls fewer on the path every chunk of every creation takes)
        if not preemptible:
            # Nothing cuts a non-preemptible chunk short: its end is a single timeout, whose first
            # callback charges the CPU time before the task's process resumes on the same event.
            self._chunk_start = now
            cpu._token += 1
            ev = _new_event(Timeout)
            ev.env = env
            ev.callbacks = [self._end_cb]
            ev._value = None
            ev._delay = us
            ev._ok = True
            heappush(env._queue, (now + us, NORMAL, next(env._eid), ev))
            self._done = ev
            return ev
        ev = _new_event(Event)  # pending: the CPU schedules it (cpu._program)
        ev.env = env
        ev.callbacks = []
        ev._value = PENDING
        self._done = ev
        self._preempt_from = now + head
        # the chunk starts: preempted at once at a preemption point already due, else its timer set
        self._chunk_start = now
        if now >= self._preempt_from and (self.need_resched or (cpu.rq and cpu._slice_expired(self))):
            cpu._preempt(self)
        else:
            cpu._program(self)
        return ev

    def interrupted(self, us: float) -> float:
        """`us` of work from now, lengthened by the interruptions that land in it (consumed: a chunk
        that then runs this span and more counts only those after it). A head whose end is no event
        (forksim.kernel.clone merges stages) knows its own length this way."""
        if not us > 0.0:
            us = 0.0
        cpu = self.cpu
        now = self.env._now
        us *= cpu.speed if now < cpu._speed_until else cpu.speed_at(now)  # (as in run)
        if cpu._next_interruption < now + us and self.machine.interruptions:  # (as in run)
            us += cpu._interruptions(us)
        return us

    def _chunk_end(self, _ev: simpy.Event) -> None:
        # CPU._account for the chunk just ended, inlined (one call per chunk fewer); its _left and
        # _chunk_start are not read once the chunk is over (run sets them afresh), so they are left
        cpu = self.cpu
        vr = self.vruntime = self.vruntime + (self.env._now - self._chunk_start)
        rq = cpu.rq
        if rq:  # min(vr, the queue's lowest), written out
            low = rq[0][0]
            if low < vr:
                vr = low
        if vr > cpu.min_vruntime:
            cpu.min_vruntime = vr
        self._done = None

    def ret_to_user(self) -> simpy.Event | None:
        """A preemption point (return from a syscall): an event if the task is switched away."""
        cpu = self.cpu
        if self.need_resched or (cpu.rq and cpu._slice_expired(self)):
            return cpu._preempt(self)
        if cpu.delayed and cpu._slice_expired(self):  # the tick's pick with only delayed sleepers queued
            cpu.repick(self)
        return None

    def sleep(self, after: float = 0.0) -> simpy.Event:
        """Leave the CPU until `Machine.wake(task)`; the event fires when running again.

        `after`: the task first runs that many us more of work nothing can cut short (a wait's scan
        before its schedule()), charged to it now; the next task's switch-in starts when that work
        would have ended (Task.interrupted lengthens it). The caller's promise: nothing else on this
        CPU could run or be placed differently meanwhile (a merged stretch: one event fewer)."""
        if self.state != RUNNING:
            raise RuntimeError(f"{self} cannot sleep: not running")
        ev = _new_event(Event)  # pending, built in place as simpy.Event.__init__ builds it
        ev.env = self.env
        ev.callbacks = []
        ev._value = PENDING
        self._wake_event = ev
        cpu = self.cpu
        if self._done is not None:  # (between chunks, as a process sleeps: nothing to charge)
            cpu._account(self)
        if after > 0.0:  # the work before the switch, as _chunk_end charges a chunk
            after = self.interrupted(after)
            vr = self.vruntime = self.vruntime + after
            rq = cpu.rq
            if rq:  # min(vr, the queue's lowest), written out
                low = rq[0][0]
                if low < vr:
                    vr = low
            if vr > cpu.min_vruntime:
                cpu.min_vruntime = vr
        m = self.machine
        if m._balancer is not None:  # self._pelt(True), written out: runnable since its last update
            now = self.env._now
            dt = now - self.load_t
            d = _exp(_NEG_LN2 * dt / PELT_HALFLIFE_US) if dt > 0.0 else 1.0
            self.load_avg = self.load_avg * d + 1024.0 * (1.0 - d)
            self.runnable_avg = self.runnable_avg * d + 1024.0 * (1.0 - d)
            self.load_t = now
        if m.params.eevdf:
            vn = eevdf.avg_vruntime(cpu)  # V, read once for the lag kept and the delay below
            self.vlag = eevdf.dequeue_lag(self, cpu, m.params.slice_us, m.params.tick_us, vn)
            # DELAY_DEQUEUE: a sleeper with negative lag stays queued (its vruntime kept, counted in V)
            # until pick_eevdf chooses it, eligible at last; woken before that, it is requeued where it
            # is (see Machine.wake). A lag of exactly 0 counts: the kernel's sleeper ran a few us past
            # the placement of what it woke (a vfork parent after wake_up_new_task), which the model
            # folds into one chunk.
            if cpu.rq and (vn[0] - self.vruntime if vn[1] > 1 else 0.0) <= 0.0:  # eevdf.raw_lag(self, cpu)
                if self.vruntime >= self.deadline:  # dequeue_entity -> update_curr -> update_deadline (renew_deadline)
                    self.deadline = self.vruntime + m.params.slice_us
                self._delayed = cpu
                cpu.delayed.append(self)
        self.state = SLEEPING
        self.need_resched = False
        self.picked_off = False
        self.prev_cpu = cpu
        self.cpu = None
        cpu._switch_away(after)
        return ev

    def sleep_for(self, us: float) -> simpy.Event:
        """Sleep `us` (a timer wakes the task)."""
        ev = self.sleep()
        self.machine.env.timeout(us).callbacks.append(lambda _e: self.machine.wake(self, None))
        return ev

    def nanosleep(self, us: float) -> simpy.Event:
        """A user task's timer sleep (nanosleep, clock_nanosleep): `us` and its timer slack (hrtimer_nanosleep arms a
        range ending timer_slack_ns later, and a CPU with no other timer due in it wakes at the range's end).
        Measured 2026-12-04 on the AMD EPYC haltpoll host, pinned, 200 sleeps each: woken 71 / 81 / 129 us (p50)
        after the asked time for 0.1 / 1 / 10 ms sleeps at the default 50 us slack, 17 / 33 / 75 us with 1 ns of
        slack (PR_SET_TIMERSLACK): the slack, then the halted vCPU's wake-up."""
        return self.sleep_for(us + self.machine.params.timer_slack_us)

    def exit(self) -> None:
        """Leave the CPU for good (the final schedule of a dead task)."""
        cpu = self.cpu
        if self._done is not None:  # (between chunks, as a process exits: nothing to charge)
            cpu._account(self)
        self.state = DEAD
        self._end_cb = None  # no reference cycle left: a dead task is freed at once, not by the cyclic collector
        if self.home is not None:
            del self.home.members[self]  # its PELT averages leave with it
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



class Coroutine:
    """A task's generator of events, driven as `simpy.Process` drives one but without its two events
    of its own (`Initialize` at the start, the process's own event at the end): it starts when
    `first` fires and ends silently, so nothing may wait on it. A creation's child is one (two
    events fewer per creation, and no other event moves: SimPy orders events by time, priority and
    then the order they were scheduled in, which the events left out do not change). An exception
    in the generator propagates out of the event loop at once."""

    __slots__ = ("_send", "_callback")

    def __init__(self, generator, first: simpy.Event):
        self._send = generator.send
        self._callback = self._resume  # the bound method made once, not at every wait
        first.callbacks.append(self._callback)

    def _resume(self, event: simpy.Event) -> None:
        send = self._send
        while True:
            try:
                event = send(event._value)
            except StopIteration:
                self._callback = None  # no reference cycle left: freed at once, not by the cyclic collector
                return
            callbacks = event.callbacks
            if callbacks is not None:  # not yet processed: resume when it is
                callbacks.append(self._callback)
                return
