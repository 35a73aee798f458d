"""One CPU: its runqueue (a heap on vruntime), the running task's chunks of work (their timers,
preemption at a tick or by a wake-up), the switch to the next task and busy-time accounting.
Observers see each task made current ("dispatch"), starting to run ("begin") and leaving ("leave")
through `Machine.tracer`."""

from __future__ import annotations

import heapq
import math
from typing import TYPE_CHECKING

import simpy
from simpy.events import NORMAL, PENDING

from .rcu import RcuBacklog, ksoftirqd
from .sched import eevdf
from .sched.balance import _NEG_LN2, PELT_HALFLIFE_US, _exp
from .task import _TOL_ABS, _TOL_REL, RUNNABLE, RUNNING, Task, _new_event, _tolerance

if TYPE_CHECKING:
    from .machine import Machine

__all__ = ["CPU"]


class CPU:
    """One CPU: its runqueue (a heap on vruntime), the running task, busy-time accounting."""

    __slots__ = (
        "machine", "id", "rq", "current", "min_vruntime", "_token", "_busy_since", "busy_us",
        "waking", "in_transit", "_kick_pending", "_seq", "_next_interruption", "load", "delayed", "idle_since",
        "awake_since", "_halted",
        "_next_irq", "rcu", "members", "updated",
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
        self._next_interruption = 0.0  # the next interruption or RCU batch (Task.run skips the call before it)
        self._next_irq = 0.0  # the next of the interruption stream
        rcu = machine.params.rcu
        self.rcu = RcuBacklog(rcu.grace_us, machine.params.tick_us) if rcu is not None else None
        self.idle_since = 0.0  # when it last went idle (a halted vCPU wakes slower the longer it slept)
        # when its first task began after its last idle spell (the placement room rule of a packing kernel,
        # profile.placement_room, keys on how long the parent's CPU has been awake); _halted: idle since then
        self.awake_since = 0.0
        self._halted = True
        self._seq = 0
        self.delayed: list[Task] = []  # DELAY_DEQUEUE sleepers still queued here (EEVDF)
        # the live tasks whose PELT averages count in this CPU's (Task.home), where a balancer keeps them
        self.members: dict[Task, None] = {}
        # when the kernel last stored the running task's vruntime (update_curr) other than at a tick: its pick,
        # an enqueue here, a wake-up check (stored_vruntime)
        self.updated = 0.0

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
        m = self.machine
        m._idle.discard(self.id)
        if m._idle_min == self.id:
            m._idle_min = None  # (Machine.first_idle)
        self.updated = m.env._now  # enqueue_entity -> update_curr
        task.state = RUNNABLE
        task.cpu = self
        if task.home is not self and m._balancer is not None:
            self._adopt(task)
        self._seq += 1
        heapq.heappush(self.rq, (task.vruntime, self._seq, task))
        m._queued.add(self.id)
        self.load += 1

    def _adopt(self, task: Task) -> None:
        """The task's PELT averages move here with it (cfs_rq attach/detach on migration)."""
        if task.home is not None:
            del task.home.members[task]
        task.home = self
        self.members[task] = None

    def _pick(self) -> Task | None:
        rq = self.rq
        if rq:
            self.load -= 1
            if self.machine.params.eevdf:
                task = self._take(eevdf.pick_index(rq, _tolerance(self.machine.env._now), self.delayed))
            else:
                task = heapq.heappop(rq)[2]
            if not rq:
                self.machine._queued.discard(self.id)
            return task
        return None

    def _take(self, i: int) -> Task:
        """Entry `i` off the runqueue heap (pick_eevdf's choice need not be the lowest vruntime)."""
        rq = self.rq
        if i == 0:
            return heapq.heappop(rq)[2]
        entry = rq.pop(i)
        heapq.heapify(rq)
        return entry[2]

    def _pick_for(self, dst: "CPU") -> Task | None:
        """The next waiting task that may move to `dst` (its affinity allows it), taken off this runqueue."""
        if self.rq and self.rq[0][2].affinity in (None, dst):
            return self._pick()
        for entry in sorted(self.rq):
            task = entry[2]
            if task.affinity is None or task.affinity is dst:
                self.rq.remove(entry)
                heapq.heapify(self.rq)
                if not self.rq:
                    self.machine._queued.discard(self.id)
                self.load -= 1
                return task
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

    def stored_vruntime(self) -> float | None:
        """The running task's vruntime as the kernel last stored it (None: no task running), which avg_vruntime
        reads until the next update_curr: at its pick, an enqueue on this CPU, a wake-up check or the last tick
        (entity_tick), whichever came last; the time it ran since is not in it yet."""
        task = self.current
        if task is None:
            return None
        if self.in_transit:  # chosen, not yet running: its vruntime is the one it was queued with
            return task.vruntime
        now = self.machine.env._now
        live = task.vruntime + (now - task._chunk_start if task._done is not None else 0.0)
        tick = self.machine.params.tick_us
        return live - max(0.0, now - max(self.updated, math.floor(now / tick) * tick))

    def _preempt_at(self, task: Task) -> float:
        """The first tick at or after the end of the task's slice (no hrtick: ticks notice it);
        under EEVDF the end of its protected slice (RUN_TO_PARITY: up to its deadline)."""
        p = self.machine.params
        end = task._protect_end if p.eevdf else task._slice_start + p.slice_us
        return math.ceil(end / p.tick_us) * p.tick_us

    def _interruptions(self, us: float) -> float:
        """Time taken by the interruptions and RCU batches that land in `us` of work starting now (the
        interruptions a Poisson stream per CPU; memoryless, so a stream that fell behind while the CPU
        did not run restarts now; a batch due while the CPU did not run ran then, and what is left of it
        comes first)."""
        p = self.machine.params
        now = self.machine.env._now
        nxt = self._next_irq
        if nxt < now:
            nxt = now + p.interruption_gap()
        extra = 0.0
        rcu = self.rcu
        if rcu is not None and rcu.next_due < now:
            # batches that came due while the CPU idled ran there then; what is left of them is ahead of this task
            soft, rest = rcu.run_idle(now, p.rcu.softirq_cap_us)
            extra += soft
            if rest > 0.0:
                self.machine.env.process(ksoftirqd(self.machine, self.id, now + soft, rest))
        while True:
            due = rcu.next_due if rcu is not None else math.inf
            if nxt <= due:
                if nxt >= now + us + extra:
                    break
                extra += p.interruption()
                nxt += p.interruption_gap()
            elif due < now + us + extra:
                batch = rcu.pop()
                cap = p.rcu.softirq_cap_us
                if batch > cap:  # the rest goes to ksoftirqd, a task on this CPU from then on
                    self.machine.env.process(ksoftirqd(self.machine, self.id, due + cap, batch - cap))
                    batch = cap
                extra += batch
            else:
                break
        self._next_irq = nxt
        self._next_interruption = min(nxt, rcu.next_due) if rcu is not None else nxt
        return extra

    def queue_rcu(self, us: float) -> None:
        """call_rcu(): `us` of callbacks this CPU runs in softirq after the next grace period."""
        if self.rcu is not None and us > 0.0:
            due = self.rcu.queue(self.machine.env._now, us)
            if due < self._next_interruption:
                self._next_interruption = due

    def _sync_min_vruntime(self) -> None:
        """Charge the running task up to now, so min_vruntime is current before a placement."""
        cur = self.current
        if cur is not None and not self.in_transit and cur._done is not None:
            self._account(cur)

    def _slice_expired(self, task: Task) -> bool:
        now = self.machine.env._now
        tol = now * _TOL_REL  # _tolerance(now), inline (the clock is never negative)
        return now >= self._preempt_at(task) - (tol if tol > _TOL_ABS else _TOL_ABS)

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
            tol = _tolerance(now)
            check = max(self._preempt_at(task) - now, tol)
            if task._preempt_from > now + tol:  # in the head: no check before its end
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
        heapq.heappush(env._queue, (now + delay, NORMAL, next(env._eid), done))  # env.schedule, inline

    def _chunk_done(self, _ev: simpy.Event) -> None:
        task = self.current
        # _account, inlined (a call per preemptible chunk fewer); the chunk is over, so its _left and
        # _chunk_start are not read again (Task.run sets them afresh)
        vr = task.vruntime = task.vruntime + (self.machine.env._now - task._chunk_start)
        floor = min(vr, self.rq[0][0]) if self.rq else vr
        if floor > self.min_vruntime:
            self.min_vruntime = floor
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
        if self.machine.params.eevdf:  # put_prev_entity -> update_curr -> update_deadline
            eevdf.renew_deadline(task, self.machine.params.slice_us)
        self._token += 1
        task.need_resched = False
        ev = None
        if task._done is not None and task._done._value is not PENDING:
            self._disarm(task)
        if task._done is None:  # at a preemption point between chunks: resume its process later
            ev = _new_event(simpy.Event)  # pending, built in place as simpy.Event.__init__ builds it
            ev.env = self.machine.env
            ev.callbacks = []
            ev._value = PENDING
            task._wake_event = ev
        task.prev_cpu = self
        self._enqueue(task)
        self._switch_away()
        return ev

    def _switch_away(self, after: float = 0.0) -> None:
        """The current task left (slept, exited or was preempted): run the next one or go idle.
        `after`: it leaves that many us from now, its last work already charged (Task.sleep's `after`;
        the CPU then switches to a waiting task, never idles: the caller's condition); observers see the
        leave and the next dispatch then."""
        m = self.machine
        now = m.env._now
        cur = self.current
        if m.tracer is not None:
            m.tracer("leave", self, cur, now + after)
        left = cur.last_ran = now + after
        if m._balancer is not None:  # util_avg brought up to `left`, running since its last update
            dt = left - cur.util_t
            d = _exp(_NEG_LN2 * dt / PELT_HALFLIFE_US) if dt > 0.0 else 1.0
            cur.util_avg = cur.util_avg * d + 1024.0 * (1.0 - d)
            cur.util_t = left
        if self._busy_since is not None:
            self.busy_us += now - self._busy_since
            self._busy_since = None
        self.current = None
        self.load -= 1
        self._token += 1
        rq = self.rq
        if rq:  # _pick, inline
            self.load -= 1
            if not m.params.eevdf or (len(rq) == 1 and not self.delayed):
                nxt = heapq.heappop(rq)[2]  # (pick_eevdf of a lone task: it, eligible or not)
            else:
                tol = now * _TOL_REL  # _tolerance(now), inline (the clock is never negative)
                nxt = self._take(eevdf.pick_index(rq, tol if tol > _TOL_ABS else _TOL_ABS, self.delayed))
            if not rq:
                m._queued.discard(self.id)
        else:
            nxt = None
        cost = 0.0
        if nxt is None:
            nxt = m._steal_for(self)  # sched_balance_newidle
            if nxt is not None:
                cost += m.params.migration()
        if nxt is None:
            if self.delayed:
                eevdf.flush_delayed(self)  # pick_next_entity dequeues each delayed sleeper, then idles
            m._idle.add(self.id)
            if m._idle_min is not None and self.id < m._idle_min:
                m._idle_min = self.id  # (Machine.first_idle)
            self.idle_since = m.env._now
            self._halted = True
            return  # idle: the vCPU halts
        self._dispatch(nxt, cost + m.params.context_switch() + after, after)

    def _dispatch(self, task: Task, delay: float, after: float = 0.0) -> None:
        """Make `task` current; it starts running after `delay` (switch, migration or halt exit). `after`:
        the part of `delay` the task before it still ran (_switch_away's), for observers."""
        m = self.machine
        now = m.env._now
        task.state = RUNNING
        task.cpu = self
        if task.home is not self and m._balancer is not None:
            self._adopt(task)
        self.current = task
        self.load += 1
        m._idle.discard(self.id)
        if m._idle_min == self.id:
            m._idle_min = None  # (Machine.first_idle)
        if task.vruntime < self.min_vruntime and not m.params.eevdf:
            task.vruntime = self.min_vruntime
        self._token += 1
        if self._busy_since is None and not self.waking:
            self._busy_since = now
        if m.tracer is not None:
            m.tracer("dispatch", self, task, now + after)
        if delay <= 0.0:
            self._begin()
            return
        self.in_transit = True
        ev = task._wake_event
        if task._done is None and ev is not None:
            # The task's process waits on its wake-up event: schedule that event itself after the
            # delay, with _begin first among its callbacks (one event, not a timeout and a wake-up).
            task._wake_event = None
            ev.callbacks.insert(0, self._begin)
            ev._ok = True
            ev._value = None
            env = m.env
            heapq.heappush(env._queue, (now + delay, NORMAL, next(env._eid), ev))  # env.schedule, inline
        else:
            m.env.timeout(delay).callbacks.append(self._begin)

    def _begin(self, _ev: simpy.Event | None = None) -> None:
        """The current task starts running (after the switch, migration or halt exit: the current task
        cannot change while the CPU is in transit)."""
        task = self.current
        now = self.machine.env._now
        self.in_transit = False
        if self.waking:
            self.waking = False
            self.load -= 1
            self._busy_since = now
        if self._halted:
            self._halted = False
            self.awake_since = now
        task._slice_start = now
        self.updated = now  # set_next_entity: picked with the vruntime it was queued with
        m = self.machine
        if m._balancer is not None:
            task.listed_t = now  # set_next_entity: moved to the head of rq->cfs_tasks
            # util_avg brought up to now: it did not run since its last update, so it only decays
            dt = now - task.util_t
            task.util_avg = task.util_avg * (_exp(_NEG_LN2 * dt / PELT_HALFLIFE_US) if dt > 0.0 else 1.0) + 0.0
            task.util_t = now
        p = m.params
        if p.eevdf:  # set_next_entity -> set_protect_slice: protected up to its deadline
            vr = task.vruntime
            if vr >= task.deadline:  # eevdf.renew_deadline, inline
                task.deadline = vr + p.slice_us
            ahead = task.deadline - vr
            task._protect_end = now + (ahead if ahead > 0.0 else 0.0)  # max(0.0, ahead)
        if m.tracer is not None:
            m.tracer("begin", self, task, now)
        if task._done is not None:  # a preempted chunk resumes
            task._chunk_start = now
            self._program(task)
            return
        ev = task._wake_event
        if ev is not None:
            task._wake_event = None
            ev.succeed()

