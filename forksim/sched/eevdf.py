"""EEVDF as Linux 6.6+ runs it (kernel/sched/fair.c), for tasks of equal weight (nice 0).

What the model keeps of it:

- avg_vruntime (V): the average virtual runtime of the runqueue's tasks, the running one included;
  a task is eligible when its vruntime is at most V (entity_eligible).
- place_entity: a task is placed at V minus its lag; a woken task's lag is the one it had when it
  went to sleep (update_entity_lag: V - vruntime, clamped to +-max(2 slices, one tick)), scaled by
  (n + 1) / n for the n tasks it joins (PLACE_LAG), so that the lag survives the task's own weight
  entering the average. A new task has no lag. Its deadline is vruntime + slice, half a slice for a
  new task (PLACE_DEADLINE_INITIAL).
- DELAY_DEQUEUE: a task that sleeps with negative lag stays queued (`CPU.delayed`), its vruntime
  counted in V, until pick_eevdf chooses it (eligible at last: pick_next_entity dequeues it with zero
  lag and picks again) or the CPU runs out of runnable tasks; woken before that it is requeued where it
  is (ttwu_runnable) with its vruntime unchanged while its lag is still negative (DELAY_ZERO: placed
  afresh at zero lag otherwise), both read against the running task's vruntime as last stored (no
  update_curr first), so that the running task, which has advanced meanwhile, becomes ineligible (a
  vfork parent woken at mm_release preempts its exiting or exec'ing child this way).
- update_deadline: once a task's vruntime reaches its deadline it gets a new one a slice later (checked
  where the kernel's update_curr runs: at a pick, a wake-up check, and as the task leaves the CPU,
  preempted or delayed, so that it never queues with a deadline it has run through).
- RUN_TO_PARITY (set_protect_slice at pick): the picked task is protected up to its deadline;
  wake-up preemption (check_preempt_wakeup_fair -> __pick_eevdf with protection) waits for it,
  and the tick (update_curr -> !protect_slice) reschedules once it is over and others wait. A new
  child never displaces its forking parent inside that slice (measured: `wakeup_preempts`).

- pick_eevdf (pick_index): the CPU runs the eligible task with the earliest deadline, not the lowest
  vruntime: a new child (half a slice to its deadline) and a hog part-way through its slice are both
  near V, and which goes first decides whether the child waits for the hog's protected slice to end
  at a tick (traced on 2 vCPUs, a child placed beside a hog: ~40% ran within ~250 us, ~50% at the
  next tick).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..machine import CPU, Task

__all__ = ["avg_vruntime", "raw_lag", "lag_limit", "dequeue_lag", "place_woken", "place_new", "renew_deadline",
           "others_queued", "slice_over", "wakeup_preempts", "new_task_resched", "pick_index", "requeue_delayed",
           "undelay", "flush_delayed", "pick_over_delayed"]


def avg_vruntime(cpu: "CPU", stored: float | None = None) -> tuple[float, int]:
    """avg_vruntime(): V of `cpu` and the number of tasks it averages, delayed sleepers included (0: V
    is min_vruntime). `stored`: the running task's vruntime as the kernel last stored it (CPU.stored_vruntime),
    where no update_curr precedes the read."""
    rq, delayed = cpu.rq, cpu.delayed
    n = 0
    total = 0.0
    if rq:  # (on a big machine most runqueues are empty: no len() calls for them)
        n = len(rq)
        for entry in rq:
            total += entry[0]
    if delayed:
        n += len(delayed)
        for t in delayed:
            total += t.vruntime
    cur = cpu.current
    if cur is not None:
        total += cur.vruntime if stored is None else stored
        n += 1
    if n == 0:
        return cpu.min_vruntime, 0
    return total / n, n


def lag_limit(slice_us: float, tick_us: float) -> float:
    """update_entity_lag's clamp: calc_delta_fair(max(2 * slice, TICK_NSEC)) for a nice-0 task."""
    return max(2.0 * slice_us, tick_us)


def raw_lag(task: "Task", cpu: "CPU") -> float:
    """V - vruntime on `cpu` (0 when the task is alone there)."""
    v, n = avg_vruntime(cpu)
    return v - task.vruntime if n > 1 else 0.0


def dequeue_lag(task: "Task", cpu: "CPU", slice_us: float, tick_us: float,
                vn: "tuple[float, int] | None" = None) -> float:
    """The lag a task keeps when it leaves `cpu` to sleep (update_entity_lag, with DELAY_DEQUEUE
    turning a negative lag into zero). `vn`: avg_vruntime(cpu) as the caller just read it."""
    v, n = avg_vruntime(cpu) if vn is None else vn
    if n <= 1:
        return 0.0  # alone: V is its own vruntime
    lim = 2.0 * slice_us  # lag_limit(slice_us, tick_us) and the clamp below, the max()es and min() written out
    if tick_us > lim:
        lim = tick_us
    lag = v - task.vruntime
    if -lim > lag:
        lag = -lim
    if lim < lag:
        lag = lim
    return lag if lag > 0.0 else 0.0


def place_woken(task: "Task", cpu: "CPU", slice_us: float) -> None:
    """place_entity() for a woken task joining `cpu` (PLACE_LAG), and its deadline."""
    v, n = avg_vruntime(cpu)
    lag = task.vlag * (n + 1) / n if n else 0.0
    task.vruntime = v - lag
    task.deadline = task.vruntime + slice_us


def place_new(task: "Task", cpu: "CPU", slice_us: float) -> None:
    """place_entity() with ENQUEUE_INITIAL: no lag, half a slice to its first deadline."""
    v, _ = avg_vruntime(cpu)
    task.vruntime = v
    task.vlag = 0.0
    task.deadline = v + slice_us / 2.0


def renew_deadline(task: "Task", slice_us: float) -> None:
    """update_deadline(): a new request once the old one is served."""
    if task.vruntime >= task.deadline:
        task.deadline = task.vruntime + slice_us


def others_queued(cpu: "CPU") -> bool:
    """Whether a task other than the one just enqueued waits on `cpu` (its runqueue holds the wakee):
    update_curr runs in enqueue_entity before the wakee is counted, so its `cfs_rq->nr_queued == 1`
    return means "the running task was alone"."""
    return len(cpu.rq) > 1


def slice_over(cur: "Task", now: float, protect_end: float, tol: float) -> bool:
    """update_curr's reschedule once others are queued: `resched || !protect_slice(curr)`, the running
    task past the end of the slice it was protected for when picked (set_protect_slice)."""
    return now >= protect_end - tol


def wakeup_preempts(cpu: "CPU", cur: "Task", task: "Task", now: float, slice_us: float, tol: float,
                    new: bool = False) -> bool:
    """The enqueue of `task`, just queued on `cpu` (V includes its lag), against the running `cur`
    (charged up to now): resched once cur's protected slice is over (update_curr: !protect_slice with
    others queued; for a woken task with a full slice to its deadline, __pick_eevdf's tie with cur's
    renewed deadline goes to the wakee too). A `new` task (wake_up_new_task) reschedules a parent past
    its slice only if another task besides the child was queued: update_curr returns while
    nr_queued == 1, and the child (half a slice to its deadline) did not displace a parent alone with
    it (traced: 1 of 33 after an idle sleep, 26 of 26 beside a runnable co-runner;
    tools/child_first_trace.py). Inside its protected slice the forking parent keeps the CPU, even
    when the model's lag bookkeeping finds it above V: the traced kernel let a child put on its parent's
    CPU run before the parent left it in 10 of 40,955 forks made inside the parent's slice (past it: 30
    of 116), beside hogs and other parents (forksim.calibration.busy.child_first, seven loads traced on
    2026-12-04), where the pick below would give the child 16-42% of them. A woken `cur`
    that is eligible keeps its protected slice (RUN_TO_PARITY); pick_eevdf drops an ineligible one,
    and the wakee runs if it is then the pick: eligible, with the earliest deadline of the queued tasks."""
    if cur.vruntime >= cur.deadline:  # renew_deadline(cur, slice_us), written out
        cur.deadline = cur.vruntime + slice_us
    # slice_over(cur, now, cur._protect_end, tol) and (not new or others_queued(cpu)), written out
    if now >= cur._protect_end - tol and (not new or len(cpu.rq) > 1):
        return True
    if new:
        return False
    v, _ = avg_vruntime(cpu)
    if cur.vruntime <= v + tol:
        return False
    return _earliest_eligible(cpu.rq, cpu.delayed, v, tol)[0] is task


def _earliest_eligible(rq: list, delayed: list, v: float, tol: float) -> "tuple[Task | None, int]":
    """__pick_eevdf's choice among the queued tasks and delayed sleepers (the running one left out): the
    eligible one (vruntime at most `v`) with the earliest deadline; ties to the lower vruntime, then the
    earlier enqueue. Returns it and its index in `rq` (-1: a delayed sleeper). A wakee preempts only if
    it is this task (check_preempt_wakeup_fair: `__pick_eevdf() == pse`): an earlier deadline queued
    before it (a child forked earlier by the CPU's other parent) leaves the running task to its next
    preemption point."""
    best, key, index = None, None, -1
    for i, entry in enumerate(rq):
        t = entry[2]
        if t.vruntime <= v + tol:
            k = (t.deadline, entry[0], entry[1])
            if key is None or k < key:
                best, key, index = t, k, i
    for t in delayed:
        if t.vruntime <= v + tol:
            k = (t.deadline, t.vruntime, -1)
            if key is None or k < key:
                best, key, index = t, k, -1
    return best, index


def requeue_delayed(task: "Task", slice_us: float, stored: float | None) -> None:
    """requeue_delayed_entity: a delayed sleeper woken on its CPU (ttwu_runnable). It keeps its vruntime and
    deadline while its lag is not positive; a positive lag (DELAY_ZERO) places it afresh at V, zero lag, a full
    slice to its deadline. Both read V with the running task's vruntime as last stored (`stored`): enqueue_task_fair
    goes straight to requeue_delayed_entity, no update_curr first. So a running task that has run on since its last
    update (its pick, an enqueue on its CPU, a tick) finds, at the wake-up check's update_curr, the woken task
    below its own vruntime and itself past V, ineligible: the woken task runs at its next preemption point. Traced
    (2026-12-04, forkbench spawn pinned, sched_switch/sched_waking): a posix_spawn parent woken at its child's
    exec_mmap (mm_release) took the CPU from the child, R+, 7 us later in 218 of 220 creations."""
    cpu = task._delayed
    v, _ = avg_vruntime(cpu, stored)  # update_entity_lag: the sleeper still counted
    undelay(task)
    if v - task.vruntime > 0.0:
        task.vlag = 0.0
        task.vruntime = avg_vruntime(cpu, stored)[0]  # place_entity, the sleeper out of the tree
        task.deadline = task.vruntime + slice_us


def undelay(task: "Task") -> None:
    """The task leaves its CPU's delayed sleepers (woken, moved or picked off)."""
    cpu = task._delayed
    if cpu is not None:
        cpu.delayed.remove(task)
        task._delayed = None


def flush_delayed(cpu: "CPU") -> None:
    """pick_next_entity with no runnable task left: every delayed sleeper is dequeued, with zero lag."""
    for t in cpu.delayed:
        t._delayed = None
        t.vlag = 0.0
    cpu.delayed.clear()


def pick_over_delayed(cpu: "CPU", cur: "Task", tol: float) -> None:
    """The pick a tick makes on `cpu` once the running `cur`'s protected slice is over while only delayed sleepers
    are queued beside it: update_curr counts them (cfs_rq->nr_queued > 1) and reschedules, and pick_next_entity
    dequeues a delayed sleeper that pick_eevdf chooses (eligible, the earliest deadline, `cur` among the
    candidates; a tie goes to the sleeper: entity_before is strict) with zero lag (DEQUEUE_DELAYED) and picks
    again, until `cur` is the pick and runs on (prev == next: no switch). A parent that slept in wait() with
    negative lag is then no longer queued here, and its child's exit wakes it through select_task_rq, not
    ttwu_runnable in place (Task.picked_off; where it goes: placement_room.wake_away's after_pick). Traced
    (2026-12-05, the load generator's unpinned fork loops at 64 MiB asleep 1 ms after each, 128 and 256 MiB;
    sched_switch, sched_waking, irq_vectors:local_timer_entry): the parent ran next on the idle CPU in 0-14% of
    the wake-ups where its CPU's last tick came under 0.6 ms after it left (the child's protected slice, half a
    slice as a new task, not over); of those after a later tick, in 0.98-0.99 where the waker's CPU had been
    awake over 3 ms, 0.03-0.23 where under (this kernel's vCPU packing keeps it then)."""
    delayed = cpu.delayed
    while delayed:
        v = cur.vruntime
        for t in delayed:
            v += t.vruntime
        v /= len(delayed) + 1
        best, key = None, None
        for t in delayed:
            if t.vruntime <= v + tol and (key is None or (t.deadline, t.vruntime) < key):
                best, key = t, (t.deadline, t.vruntime)
        if best is None or (cur.vruntime <= v + tol and cur.deadline < key[0]):
            return
        undelay(best)
        best.vlag = 0.0
        best.picked_off = True


def new_task_resched(cpu: "CPU", cur: "Task", now: float, slice_us: float, tol: float) -> bool:
    """wake_up_new_task on the running parent's CPU under the plain fair queue (no EEVDF state): the
    new child (no lag, half a slice to its deadline, WF_FORK: no next buddy) leaves the parent running,
    except update_curr's reschedule when another task besides the child waits and the parent has used
    its slice since it was picked (its protected slice: picked with a full slice to its deadline).
    After another task ran on the CPU and woke the parent (a co-runner preempted before its blocking
    read), a fork longer than the slice ends with the child running before fork() returns; after an
    idle sleep the parent is alone with its child and returns first (tools/child_first_trace.py)."""
    return others_queued(cpu) and slice_over(cur, now, cur._slice_start + slice_us, tol)


def pick_index(rq: list, tol: float, delayed: list | None = None) -> int:
    """pick_eevdf() at a pick (no task running): the index in the runqueue `rq` of (vruntime, seq, task)
    entries of the eligible task (vruntime at most V, the average of the queued tasks and the `delayed`
    sleepers) with the earliest deadline; ties go to the lower vruntime, then the earlier enqueue. A
    delayed sleeper chosen leaves (pick_next_entity: DEQUEUE_DELAYED, zero lag) and the pick is made
    again; `rq` must hold a task."""
    delayed = delayed if delayed is not None else []
    while True:
        n = len(rq) + len(delayed)
        if n == 1:
            return 0
        v = 0.0
        for entry in rq:
            v += entry[2].vruntime
        for t in delayed:
            v += t.vruntime
        task, index = _earliest_eligible(rq, delayed, v / n, tol)
        if index >= 0:
            return index
        undelay(task)
        task.vlag = 0.0
        task.picked_off = True
