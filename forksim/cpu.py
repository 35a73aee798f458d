"""One CPU: its runqueue (a heap on vruntime), the running task's chunks of work (their timers,
preemption at a tick or by a wake-up), the switch to the next task and busy-time accounting.
Observers see each task made current ("dispatch"), starting to run ("begin") and leaving ("leave")
through `Machine.tracer`."""

from __future__ import annotations

import heapq
import math
from heapq import heappush
from typing import TYPE_CHECKING

import simpy
from simpy.events import NORMAL, PENDING

from .rcu import RcuBacklog, ksoftirqd
from .sched import eevdf
from .sched.balance import _NEG_LN2, PELT_HALFLIFE_US, _exp
from .task import _TOL_ABS, _TOL_REL, RUNNABLE, RUNNING, Task, _new_event, _timeout, _tolerance

if TYPE_CHECKING:
    from .machine import Machine

__all__ = ["CPU"]


class CPU:
    """One CPU: its runqueue (a heap on vruntime), the running task, busy-time accounting."""

    __slots__ = (
        "machine", "id", "rq", "current", "min_vruntime", "_token", "_busy_since", "busy_us",
        "waking", "in_transit", "_kick_pending", "_seq", "_next_interruption", "load", "delayed", "idle_since",
        "awake_since", "_halted",
        "_next_irq", "rcu", "ksoftirqd", "members", "members_top", "members_sorted", "updated", "env", "params",
        "_begin_cb", "_chunk_done_cb", "speed", "_speed_until", "_speed_slow",
    )

    def __init__(self, machine: "Machine", cpu_id: int):
        self.machine = machine
        self.env = machine.env  # (machine.env and machine.params, read on every switch and chunk)
        self.params = machine.params
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
        # the next interruption or RCU batch (Task.run skips the call before it; inf: no interruptions come)
        self._next_interruption = 0.0 if machine.params.interruption_gap is not None else math.inf
        self._next_irq = 0.0  # the next of the interruption stream
        rcu = machine.params.rcu
        self.rcu = RcuBacklog(rcu.grace_us, machine.params.tick_us) if rcu is not None else None
        self.ksoftirqd = ksoftirqd(machine, cpu_id, self.rcu) if self.rcu is not None else None
        # the host's speed here (forksim.host_speed): the factor on work until _speed_until (inf: 1 throughout)
        self.speed = 1.0
        self._speed_slow = False
        self._speed_until = math.inf
        episodes = machine.params.host_speed
        if episodes is not None:
            self._speed_slow, self._speed_until = episodes.first()
            if self._speed_slow:
                self.speed = episodes.factor()
        self.idle_since = 0.0  # when it last went idle (a halted vCPU wakes slower the longer it slept)
        # when its first task began after its last idle spell (the placement room rule of a packing kernel,
        # profile.placement_room, keys on how long the parent's CPU has been awake); _halted: idle since then
        self.awake_since = 0.0
        self._halted = True
        self._seq = 0
        self.delayed: list[Task] = []  # DELAY_DEQUEUE sleepers still queued here (EEVDF)
        # the live tasks whose PELT averages count in this CPU's (Task.home), where a balancer keeps them
        self.members: dict[Task, None] = {}
        # whether `members` is in pid order (the order cpu_stats sums in: new tasks join last with the highest pid,
        # so it mostly is, and no sort is needed per read), and the highest pid that joined since it was last sorted
        self.members_sorted = True
        self.members_top = -1
        # when the kernel last stored the running task's vruntime (update_curr) other than at a tick: its pick,
        # an enqueue here, a wake-up check (stored_vruntime)
        self.updated = 0.0
        self._begin_cb = self._begin  # the bound methods made once (an event's callbacks, at every switch and chunk)
        self._chunk_done_cb = self._chunk_done

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
        m._idle.discard(self.id)  # (its id stays in Machine._idle_heap until first_idle drops it)
        self.updated = self.env._now  # enqueue_entity -> update_curr
        task.state = RUNNABLE
        task.cpu = self
        if task.home is not self and m._balancer is not None:  # its PELT averages move here (cfs_rq attach/detach)
            home = task.home
            if home is not None:
                del home.members[task]
            task.home = self
            self.members[task] = None
            if task.pid > self.members_top:  # still in pid order (see __init__)
                self.members_top = task.pid
            else:
                self.members_sorted = False
        seq = self._seq = self._seq + 1
        heappush(self.rq, (task.vruntime, seq, task))
        m._queued.add(self.id)
        self.load += 1

    def _pick(self) -> Task | None:
        rq = self.rq
        if rq:
            self.load -= 1
            if self.params.eevdf:
                task = self._take(eevdf.pick_index(rq, _tolerance(self.env._now), self.delayed))
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
            now = self.env._now
            ran = now - task._chunk_start
            task._left -= ran
            task._chunk_start = now
            vr = task.vruntime = task.vruntime + ran
            rq = self.rq
            if rq:  # min(vr, the queue's lowest), written out
                low = rq[0][0]
                if low < vr:
                    vr = low
            if vr > self.min_vruntime:
                self.min_vruntime = vr

    def stored_vruntime(self) -> float | None:
        """The running task's vruntime as the kernel last stored it (None: no task running), which avg_vruntime
        reads until the next update_curr: at its pick, an enqueue on this CPU, a wake-up check or the last tick
        (entity_tick), whichever came last; the time it ran since is not in it yet."""
        task = self.current
        if task is None:
            return None
        if self.in_transit:  # chosen, not yet running: its vruntime is the one it was queued with
            return task.vruntime
        now = self.env._now
        live = task.vruntime + (now - task._chunk_start if task._done is not None else 0.0)
        tick = self.params.tick_us
        last = math.floor(now / tick) * tick  # the last tick; the max()es below written out
        if not last > self.updated:
            last = self.updated
        since = now - last
        return live - (since if since > 0.0 else 0.0)

    def _preempt_at(self, task: Task) -> float:
        """The first tick at or after the end of the task's slice (no hrtick: ticks notice it);
        under EEVDF the end of its protected slice (RUN_TO_PARITY: up to its deadline)."""
        p = self.params
        end = task._protect_end if p.eevdf else task._slice_start + p.slice_us
        return math.ceil(end / p.tick_us) * p.tick_us

    def speed_at(self, now: float) -> float:
        """The host's factor on this CPU's work at `now`: its stretches at the usual speed and slow episodes
        drawn in turn up to now (Task.run asks only once the current one has ended)."""
        episodes = self.params.host_speed
        while self._speed_until <= now:
            slow = self._speed_slow = not self._speed_slow
            self.speed = episodes.factor() if slow else 1.0
            self._speed_until += episodes.dwell(slow)
        return self.speed

    def _interruptions(self, us: float) -> float:
        """Time taken by the interruptions and RCU batches that land in `us` of work starting now (the
        interruptions a Poisson stream per CPU; memoryless, so a stream that fell behind while the CPU
        did not run restarts now; a batch due while the CPU did not run ran then, and what is left of it
        comes first)."""
        m = self.machine
        p = m.params
        now = m.env._now
        nxt = self._next_irq
        if nxt < now:
            nxt = now + p.interruption_gap()
        extra = 0.0
        rcu = self.rcu
        batches = rcu.batches if rcu is not None else ()  # rcu.next_due: batches[0][0], or none due (inf)
        inf = math.inf
        if batches and batches[0][0] < now:
            # batches that came due while the CPU idled ran there then; what is left of them is ahead of this task
            soft, rest = rcu.run_idle(now, p.rcu.softirq_cap_us)
            extra += soft
            if rest > 0.0:
                self._softirq_left(rest, soft)
        while True:
            due = batches[0][0] if batches else inf
            if nxt <= due:
                if nxt >= now + us + extra:
                    break
                extra += p.interruption()
                nxt += p.interruption_gap()
            elif due < now + us + extra:
                batch = rcu.pop()
                cap = p.rcu.softirq_cap_us
                if batch > cap:  # one budget in this irq_exit; the rest pending, ksoftirqd woken at its end
                    self._softirq_left(batch - cap, due + cap - now)
                    batch = cap
                extra += batch
            else:
                break
        self._next_irq = nxt
        due = batches[0][0] if batches else inf
        self._next_interruption = (due if due < nxt else nxt) if rcu is not None else nxt  # min(nxt, due)
        return extra

    def _softirq_left(self, us: float, after: float) -> None:
        """`us` of ready callbacks a softirq budget left: pending here, and ksoftirqd woken `after` us from now
        (wakeup_softirqd as that budget ends; an event, not a call, as this runs inside Task.run)."""
        self.rcu.pending += us
        self.env.timeout(max(0.0, after)).callbacks.append(self.ksoftirqd.wake)

    def softirq_point(self) -> float:
        """A softirq point of the task running here (the creating call's entry): the microseconds of pending RCU
        callbacks it runs there, one __do_softirq budget at most (0 where none are pending)."""
        rcu = self.rcu
        if rcu is None or not rcu.pending > 0.0:
            return 0.0
        return rcu.take(self.params.rcu.softirq_cap_us)

    def queue_rcu(self, us: float) -> None:
        """call_rcu(): `us` of callbacks this CPU runs in softirq after the next grace period."""
        rcu = self.rcu
        if rcu is not None and us > 0.0:
            # rcu.queue(now, us), written out: the callbacks join the batch that runs at the first tick after the
            # end of the next grace period
            now, grace, tick = self.env._now, rcu.grace, rcu.tick
            due = math.ceil((math.floor(now / grace) + 2) * grace / tick) * tick
            b = rcu.batches
            if b and b[-1][0] == due:
                b[-1][1] += us
            else:
                b.append([due, us])
            rcu.last_due = due
            if due < self._next_interruption:
                self._next_interruption = due

    def _sync_min_vruntime(self) -> None:
        """Charge the running task up to now, so min_vruntime is current before a placement."""
        cur = self.current
        if cur is not None and not self.in_transit and cur._done is not None:
            self._account(cur)

    def _slice_expired(self, task: Task) -> bool:
        now = self.env._now
        tol = now * _TOL_REL  # _tolerance(now), inline (the clock is never negative)
        return now >= self._preempt_at(task) - (tol if tol > _TOL_ABS else _TOL_ABS)

    def _program(self, task: Task) -> None:
        """Set the timer for the running chunk: its end, or the next preemption check."""
        self._token += 1
        token = self._token
        env = self.env
        now = env._now
        done = task._done
        if done._value is not PENDING:
            done = self._disarm(task)
        delay = task._left
        if task._preemptible and (self.rq or self.delayed):  # (delayed sleepers: the tick's pick, repick)
            tol = _tolerance(now)
            check = self._preempt_at(task) - now
            if tol > check:  # max(check, tol), written out
                check = tol
            if task._preempt_from > now + tol:  # in the head: no check before its end
                head_left = task._preempt_from - now
                if task.need_resched or head_left > check:  # max(check, head_left)
                    check = head_left
            if check < delay:
                _timeout(env, check, lambda _e: self._timer(token))
                return
        # Nothing due before the chunk's end: schedule the event the task waits on itself, with the
        # CPU's accounting first among its callbacks (one event per chunk, not a timer and an event).
        done.callbacks.insert(0, self._chunk_done_cb)
        done._ok = True
        done._value = None
        heappush(env._queue, (now + delay, NORMAL, next(env._eid), done))  # env.schedule, inline

    def _chunk_done(self, _ev: simpy.Event) -> None:
        task = self.current
        # _account, inlined (a call per preemptible chunk fewer); the chunk is over, so its _left and
        # _chunk_start are not read again (Task.run sets them afresh)
        vr = task.vruntime = task.vruntime + (self.env._now - task._chunk_start)
        rq = self.rq
        if rq:  # min(vr, the queue's lowest), written out
            low = rq[0][0]
            if low < vr:
                vr = low
        if vr > self.min_vruntime:
            self.min_vruntime = vr
        task._done = None

    def _disarm(self, task: Task) -> simpy.Event:
        """The chunk's end, already scheduled, will not be its end (preempted, or a waiter came):
        the scheduled event goes off with no callbacks, and the task waits on a fresh one."""
        old = task._done
        fresh = _new_event(simpy.Event)  # pending, built in place as simpy.Event.__init__ builds it
        fresh.env = self.env
        fresh._value = PENDING
        fresh.callbacks = old.callbacks[1:]  # less _chunk_done
        old.callbacks = []
        task._done = fresh
        return fresh

    def _timer(self, token: int) -> None:
        if token != self._token:
            return  # reprogrammed since
        task = self.current
        self._account(task)
        if task._left <= _tolerance(self.env._now):
            done = task._done
            task._done = None
            done.succeed()
            return
        if self.rq and (task.need_resched or self._slice_expired(task)):
            self._preempt(task)
            return
        if self.delayed and not self.rq and self._slice_expired(task):
            self.repick(task)
        self._program(task)

    def repick(self, task: Task) -> None:
        """The tick's reschedule of the running `task` past its protected slice with only delayed sleepers queued
        beside it (eevdf.pick_over_delayed): those the pick chooses leave; `task` runs on, picked again
        (set_next_entity: its vruntime stored, a fresh protected slice from its deadline)."""
        self._account(task)
        p = self.params
        if task.vruntime >= task.deadline:  # update_curr -> update_deadline (eevdf.renew_deadline, inline)
            task.deadline = task.vruntime + p.slice_us
        now = self.env._now
        eevdf.pick_over_delayed(self, task, _tolerance(now))
        self.updated = task._slice_start = now
        ahead = task.deadline - task.vruntime
        task._protect_end = now + (ahead if ahead > 0.0 else 0.0)

    def _preempt(self, task: Task) -> simpy.Event | None:
        """Put the running task back on the runqueue and run the next one."""
        self._account(task)
        if self.params.eevdf:  # put_prev_entity -> update_curr -> update_deadline (eevdf.renew_deadline, inline)
            if task.vruntime >= task.deadline:
                task.deadline = task.vruntime + self.params.slice_us
        self._token += 1
        task.need_resched = False
        ev = None
        if task._done is not None and task._done._value is not PENDING:
            self._disarm(task)
        if task._done is None:  # at a preemption point between chunks: resume its process later
            ev = _new_event(simpy.Event)  # pending, built in place as simpy.Event.__init__ builds it
            ev.env = self.env
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
        now = self.env._now
        cur = self.current
        if m.tracer is not None:
            m.tracer("leave", self, cur, now + after)
        left = cur.last_ran = now + after
        if m._balancer is not None:  # util_avg brought up to `left`, running since its last update
            dt = left - cur.util_t
            d = _exp(_NEG_LN2 * dt / PELT_HALFLIFE_US) if dt > 0.0 else 1.0
            cur.util_avg = cur.util_avg * d + 1024.0 * (1.0 - d)
            cur.util_t = left
        busy = self._busy_since
        if busy is not None:
            self.busy_us += now - busy
            self._busy_since = None
        self.current = None
        self._token += 1
        rq = self.rq
        p = self.params
        if rq:  # _pick, inline
            self.load -= 2  # the task that left, and the one picked
            if not p.eevdf or (len(rq) == 1 and not self.delayed):
                nxt = heapq.heappop(rq)[2]  # (pick_eevdf of a lone task: it, eligible or not)
            else:
                tol = now * _TOL_REL  # _tolerance(now), inline (the clock is never negative)
                i = eevdf.pick_index(rq, tol if tol > _TOL_ABS else _TOL_ABS, self.delayed)
                if i == 0:  # self._take(i), written out
                    nxt = heapq.heappop(rq)[2]
                else:
                    nxt = rq.pop(i)[2]
                    heapq.heapify(rq)
            if not rq:
                m._queued.discard(self.id)
        else:
            self.load -= 1
            nxt = None
        cost = 0.0
        if nxt is None:
            b = m._balancer  # sched_balance_newidle (Machine._steal_for, its balancer's case written out)
            nxt = b.idle_pull(self, True) if b is not None else m._steal_for(self)
            if nxt is not None:
                cost += p.migration()
        if nxt is None:
            if self.delayed:
                eevdf.flush_delayed(self)  # pick_next_entity dequeues each delayed sleeper, then idles
            i = self.id
            m._idle.add(i)
            in_heap = m._in_heap
            if not in_heap[i]:  # (Machine.first_idle)
                in_heap[i] = True
                heappush(m._idle_heap, i)
            self.idle_since = now
            self._halted = True
            return  # idle: the vCPU halts
        self._dispatch(nxt, cost + p.context_switch() + after, after)

    def _dispatch(self, task: Task, delay: float, after: float = 0.0) -> None:
        """Make `task` current; it starts running after `delay` (switch, migration or halt exit). `after`:
        the part of `delay` the task before it still ran (_switch_away's), for observers."""
        m = self.machine
        now = self.env._now
        task.state = RUNNING
        task.cpu = self
        if task.home is not self and m._balancer is not None:  # its PELT averages move here (cfs_rq attach/detach)
            home = task.home
            if home is not None:
                del home.members[task]
            task.home = self
            self.members[task] = None
            if task.pid > self.members_top:  # still in pid order (see __init__)
                self.members_top = task.pid
            else:
                self.members_sorted = False
        self.current = task
        self.load += 1
        m._idle.discard(self.id)  # (its id stays in Machine._idle_heap until first_idle drops it)
        if task.vruntime < self.min_vruntime and not self.params.eevdf:
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
            ev.callbacks.insert(0, self._begin_cb)
            ev._ok = True
            ev._value = None
            env = self.env
            heappush(env._queue, (now + delay, NORMAL, next(env._eid), ev))  # env.schedule, inline
        else:
            _timeout(self.env, delay, self._begin_cb)

    def _begin(self, _ev: simpy.Event | None = None) -> None:
        """The current task starts running (after the switch, migration or halt exit: the current task
        cannot change while the CPU is in transit)."""
        task = self.current
        now = self.env._now
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
        p = self.params
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
            # ev.succeed(), written out: the pending wake-up scheduled now
            ev._ok = True
            ev._value = None
            env = self.env
            heappush(env._queue, (now, NORMAL, next(env._eid), ev))

