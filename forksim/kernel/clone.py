"""The creation path: kernel_clone() -> copy_process() stage by stage, and the child's life.

Each stage below is a chunk of CPU work on the task that runs it, in kernel order. Stages that touch
no shared resource are merged into one chunk (one simulation event); the shared locks are taken
inside the chunks (see locks.py), and dup_mmap is its own chunk because the parent's mmap_lock is
held across it and other threads can see how far it has got.
"""

from __future__ import annotations

from array import array
from typing import TYPE_CHECKING, Generator

import simpy

from ..locks import LockStats, SpinRWLock
from .copies import Copies
from .costs import EMPTY_IMAGE, Costs
from .flags import COPIES_MM, EXECS, KINDS, NEW_PROCESS, VFORK_WAIT
from .mm import MM, Process
from .stack import StackCache
from .warmth import WarmthTracker

if TYPE_CHECKING:
    from ..config import ChildSection
    from ..machine import Machine, Task
    from ..metrics import Creation

__all__ = ["Kernel", "NEW_PROCESS", "COPIES_MM", "VFORK_WAIT", "EXECS"]  # the sets: kernel/flags.py

# Where in copy_process_tail the two spinlocks are taken, as fractions of the tail's unlocked
# time. Assumption from the order of kernel/fork.c (6.x): copy_namespaces, copy_io and
# copy_thread precede alloc_pid; cgroup_can_fork and sched_cgroup_fork sit between alloc_pid and
# the tasklist_lock section; the post-fork hooks follow it.
_ALLOC_PID_AT = 0.5
_TASKLIST_AT = 0.8
# Share of wait_reap spent before a parent with no zombie child goes to sleep (do_wait's scan).
_WAIT_SCAN_SHARE = 0.3

Proc = Generator[simpy.Event, object, object]


class Kernel:
    """The shared kernel state of one simulated machine and the creation path over it."""

    def __init__(self, machine: "Machine", costs: Costs, stack_per_cpu: int, child: "ChildSection",
                 copies: Copies | None = None):
        self.machine = machine
        # fds, clone flags and live children beyond the profile's plain fork (None: none of them)
        self.copies = copies if copies is not None and not copies.zero else None
        self._deferred = 0.0  # queued deferred work (us): one kernel worker drains it (cleanup_net)
        self._worker_busy = False
        self.env = machine.env
        self.costs = costs
        self.child_cfg = child
        self.stacks = StackCache(len(machine.cpus), stack_per_cpu)
        self.warmth = WarmthTracker(costs.profile.warmth, len(machine.cpus))
        placement = costs.profile.placement
        fork_local = placement["fork_local_when_idle"].value
        busy = placement.get("fork_local_when_idle_busy")
        self._pack = {  # P(child stays on the parent's CPU although one is idle), by (CLONE_VFORK,
            (False, False): fork_local,  # whether the parent's CPU has a task waiting besides it)
            (False, True): busy.value if busy is not None else fork_local,
            (True, False): placement["vfork_local_when_idle"].value,
            (True, True): placement["vfork_local_when_idle"].value,
        }
        self._exit_head = costs.profile.exit_head_share.value
        self.lock_stats = {n: LockStats(n) for n in ("tasklist_lock", "pidmap_lock", "mmap_lock")}
        self.tasklist_lock = SpinRWLock(self.env, "tasklist_lock", self.lock_stats["tasklist_lock"])
        self.pidmap_lock = SpinRWLock(self.env, "pidmap_lock", self.lock_stats["pidmap_lock"])
        self.stalls = array("d")  # faults that waited for a dup_mmap to finish (us)
        self.record_from = 0.0
        self.on_stage = None  # tracing hook: (task, stage_name, start_us, end_us)

    def set_record_from(self, t: float) -> None:
        self.record_from = t
        self.tasklist_lock.record_from = t
        self.pidmap_lock.record_from = t

    def new_mm(self, shape) -> MM:
        mm = MM(self.env, shape, self.lock_stats["mmap_lock"])
        mm.mmap_lock.record_from = self.record_from
        return mm

    def _stage(self, task: "Task", name: str, start: float) -> None:
        if self.on_stage is not None:
            self.on_stage(task, name, start, self.env._now)

    def sleep_until(self, task: "Task", event: simpy.Event) -> simpy.Event:
        woken = task.sleep()
        event.callbacks.append(lambda _e: self.machine.wake(task, None))
        return woken

    # ------------------------------------------------------------------ the parent's call

    def kernel_clone(self, parent: Process, kind: str, rec: "Creation", thread: "Task | None" = None) -> Proc:
        """kernel_clone(): copy_process, wake_up_new_task, and for CLONE_VFORK the wait for the child."""
        env, c, k = self.env, self.costs, KINDS[kind]
        P = thread or parent.task
        rec.start = env._now
        rec.parent_cpu = P.cpu.id

        # dup_task_struct .. copy_signal, alloc_thread_stack_node, copy_mm -> dup_mm (mm_alloc, mm_init)
        hit = self.stacks.alloc(P.cpu.id)
        rec.stack_hit = hit
        cost = c.draw("copy_process_setup" if k.new_process else "copy_process_setup_thread")
        cost += c.draw("stack_cache_hit" if hit else "stack_vmalloc")
        if k.copies_mm:
            cost += c.draw("dup_mm")
        x = self.copies
        if x is not None:  # copy_files -> dup_fd per fd; copy_fs / copy_sighand .. shared or copied
            cost = max(0.0, cost + c.term("+setup", x.setup_us, x.sigma) - x.saved_us)
        yield P.run(cost)
        rec.setup_us = env._now - rec.start
        self._stage(P, "copy_process_setup", rec.start)

        child_mm = parent.mm
        if k.copies_mm:
            # dup_mmap(): the parent's mmap_lock for write across the whole VMA walk (cond_resched inside)
            t = env._now
            lock = parent.mm.mmap_lock
            granted = lock.try_write(P)
            if granted is not None:
                yield self.sleep_until(P, granted)
            rec.mmap_wait = env._now - t
            t1 = env._now
            mm, cpu = parent.mm, P.cpu.id
            cold = self.warmth.coldness(mm, cpu, t1)
            yield P.run(c.draw_plus("dup_mmap", mm.shape, self.warmth.extra_us("dup_mmap", cold, mm.shape)),
                        preemptible=True)
            self.warmth.walked(mm, P.cpu.id, env._now)  # its PTEs and struct pages are now in this CPU's caches
            lock.release()
            rec.dup_mmap_us = env._now - t1
            self._stage(P, "dup_mmap", t1)
            child_mm = self.new_mm(parent.mm.shape)
            parent.mm.users += 1

        # copy_namespaces, copy_io, copy_thread, alloc_pid (pidmap_lock), cgroup_can_fork,
        # the tasklist_lock write section, post-fork hooks; then wake_up_new_task
        t = env._now
        tail = c.draw("copy_process_tail")
        pid_hold = c.draw("alloc_pid_hold")
        link_hold = c.draw("tasklist_fork_hold")
        if x is not None:
            tail += c.term("+tail", x.tail_us, x.sigma)  # copy_namespaces
            link = c.term("+link", x.link_us, x.sigma)  # grows with the parent's live children
            link_hold += link
            tail += link
        free = max(0.0, tail - pid_hold - link_hold)
        pid_at = t + _ALLOC_PID_AT * free
        pid_wait = self.pidmap_lock.write(pid_at, pid_hold)
        link_at = pid_at + pid_wait + pid_hold + (_TASKLIST_AT - _ALLOC_PID_AT) * free
        link_wait = self.tasklist_lock.write(link_at, link_hold)
        rec.pidmap_wait, rec.tasklist_wait = pid_wait, link_wait
        yield P.run(max(tail, pid_hold + link_hold) + pid_wait + link_wait + c.draw("wake_up_new_task"))
        rec.tail_us = env._now - t
        self._stage(P, "copy_process_tail", t)

        child_task = self.machine.new_task(f"{parent.task.name}.{kind}")
        child = Process(child_task, child_mm, parent)
        child.inherited = k.copies_mm
        if k.vfork_wait:
            child.vfork_waiter = P
        pack = self.costs.uniform() < self._pack[k.vfork_wait, bool(P.cpu.rq)]
        first_run, ipi = self.machine.spawn(child_task, P, pack=pack)
        env.process(self.child_life(child, kind, first_run, rec))
        if ipi > 0.0:
            yield P.run(ipi)
        if child.vfork_waiter is not None:
            # wait_for_vfork_done(): sleep until the child execs or exits (mm_release)
            yield P.sleep()
        rec.fork_ret = env._now
        yield from self._return_to_user(P)
        return child

    # ------------------------------------------------------------------ the child

    def _complete_vfork(self, child: Process, rec: "Creation") -> float:
        """mm_release -> complete_vfork_done: wake the parent sleeping in vfork; the waker's cost."""
        waiter = child.vfork_waiter
        if waiter is None:
            return 0.0
        rec.mm_release = self.env._now
        child.vfork_waiter = None
        # The child is about to exec or exit and leave its CPU: a wake-up in the manner of a sync
        # one, which keeps the parent on this CPU (this kernel keeps ~100% of vfork children and
        # their parents on one vCPU; an IPI and halt exit per vfork would not fit its 15 us).
        return self.machine.wake(waiter, child.task, sync=True)

    def _clear_child_tid(self, child: Process, rec: "Creation") -> float:
        """mm_release -> clear_child_tid: a thread's tid is zeroed and the futex woken, which is what
        pthread_join sleeps on (CLONE_CHILD_CLEARTID): the joiner runs on before the thread's exit_files
        and exit_notify are done. The waker's cost: futex_wake is an ordinary wake-up (no WF_SYNC), so
        the joiner goes back to its own CPU when that one is idle."""
        child.tid_cleared = True
        rec.mm_release = self.env._now
        waiter = child.parent.waiter
        if waiter is None or waiter.state != "sleeping":
            return 0.0
        return self.machine.wake(waiter, child.task)

    def child_life(self, child: Process, kind: str, first_run: simpy.Event, rec: "Creation") -> Proc:
        """The child: ret_from_fork, COW writes, its lifetime, exec, do_exit."""
        env, c, cfg = self.env, self.costs, self.child_cfg
        C = child.task
        yield first_run
        # ret_from_fork -> schedule_tail: the first return to user space; a fork child then takes
        # COW faults on the pages it writes first (stack, glibc's fork bookkeeping)
        cost = c.draw("ret_from_fork")
        if child.inherited:
            cost += c.draw("fork_child_touch")
        yield C.run(cost)
        rec.child_start = env._now
        rec.child_cpu = C.cpu.id
        yield from self._return_to_user(C)
        x = self.copies
        if x is not None and x.unshare_us > 0.0:
            # ksys_unshare: unshare_fs, unshare_fd (dup_fd), unshare_nsproxy_namespaces
            t = env._now
            yield C.run(c.term("+unshare", x.unshare_us, x.sigma))
            self._stage(C, "unshare", t)

        if child.inherited and cfg.cow_writer == "child" and cfg.cow_write_fraction > 0.0:
            # the parent still maps every inherited page: each write is a copy
            yield C.run(self._cow_cost(child.mm.shape, True, cfg.cow_write_fraction), preemptible=True)
        if cfg.lifetime > 0.0:
            yield C.run(cfg.lifetime, preemptible=True)

        if KINDS[kind].execs:
            # execve: begin_new_exec -> exec_mmap drops the old mm (exit_mmap if its last user)
            t = env._now
            cost = c.draw("exec")
            if child.inherited:
                cost += c.draw("exit_mmap", child.mm.shape)
                child.inherited = False
                child.parent.mm.users -= 1
            yield C.run(cost, preemptible=True)
            self._stage(C, "exec", t)
            child.mm = self.new_mm(EMPTY_IMAGE)
            ipi = self._complete_vfork(child, rec)
            if ipi > 0.0:
                yield C.run(ipi)
            yield from self._return_to_user(C)  # into the new program: a parent released by exec runs here
            if cfg.exec_lifetime > 0.0:
                yield C.run(cfg.exec_lifetime, preemptible=True)
        yield from self.do_exit(child, kind, rec)

    @staticmethod
    def _return_to_user(task: "Task") -> Proc:
        """A return to user space: a preemption point (need_resched, or a used-up slice)."""
        ev = task.ret_to_user()
        if ev is not None:
            yield ev

    def _cow_cost(self, shape, shared: bool, fraction: float) -> float:
        """do_wp_page for `fraction` of the inherited 4 KiB pages (a write to a shared THP splits it
        and copies one 4 KiB page, since Linux 5.8): a copy while shared, else a reuse."""
        pages = int(round(fraction * (shape.ptes + shape.pmds * 512)))
        return self.costs.draw_many("cow_fault_copy" if shared else "cow_fault_reuse", pages)

    def do_exit(self, child: Process, kind: str, rec: "Creation") -> Proc:
        """do_exit(): exit_signals .. exit_mm (mm_release), exit_mmap of an mm it owns, exit_files ..,
        exit_notify, the last schedule."""
        env, c = self.env, self.costs
        C = child.task
        t = env._now
        # The measured do_exit runs to the last schedule, so it holds the tasklist_lock sections of
        # exit_notify (and a thread's own release_task): they are carved out of it, not added.
        hold = c.draw("exit_notify_hold")
        locked = hold
        thread = KINDS[kind].clone_thread  # CLONE_THREAD: release_task by itself at exit_notify
        if thread:
            rel, pid_hold = c.draw("release_task_hold"), c.draw("alloc_pid_hold")
            locked += rel + pid_hold
        body = max(0.0, c.draw("do_exit") - locked)
        x = self.copies
        if x is not None:  # exit_files -> close_files per fd, exit_task_namespaces; exit_notify's share
            body = max(0.0, body + c.term("+exit", x.exit_us, x.sigma))
            hold += c.term("+exit_notify", x.exit_notify_us, x.sigma)
        # exit_signals .. exit_mm: no preemption point before close_files' cond_resched, so a parent
        # released at mm_release (the end of this head) waits for it on this CPU
        head = self._exit_head * body
        rest = body - head
        if child.mm is not child.parent.mm:  # exit_mm -> mmput -> exit_mmap of an mm it owns
            rest += c.draw("exit_mmap", child.mm.shape)
        if child.vfork_waiter is not None:
            yield C.run(head)
            rest += self._complete_vfork(child, rec)
            yield C.run(rest, preemptible=True)
        elif thread:
            yield C.run(head)
            rest += self._clear_child_tid(child, rec)
            yield C.run(rest, preemptible=True)
        else:  # nothing happens at the head's end: one chunk whose preemption points start there
            yield C.run(head + rest, preemptible=True, head=head)
        if child.inherited:
            child.inherited = False
            child.parent.mm.users -= 1
            # zap_pte_range drops the mapcount of every folio it shares with the parent: the
            # parent's struct pages are warm on this CPU again
            self.warmth.walked(child.parent.mm, C.cpu.id, env._now)
        self._stage(C, "do_exit", t)

        # exit_notify(): tasklist_lock for write, do_notify_parent -> __wake_up_parent (a sync wake-up);
        # a thread is reaped at once by itself (release_task)
        t = env._now
        wait = self.tasklist_lock.write(t, hold)
        work = wait + hold
        if thread:
            wait2 = self.tasklist_lock.write(t + work, rel)
            wait3 = self.pidmap_lock.write(t + work + wait2 + rel, pid_hold)
            work += wait2 + rel + wait3 + pid_hold
        yield C.run(work)
        rec.child_exit = env._now
        child.exited = True
        ipi = 0.0
        if not thread:  # a process: a zombie until reaped, and SIGCHLD wakes a parent in wait()
            parent = child.parent
            parent.zombies.append(child)
            waiter = parent.waiter
            if waiter is not None and waiter.state == "sleeping":
                ipi = self.machine.wake(waiter, C, sync=True)
        if ipi > 0.0:
            yield C.run(ipi)
        # do_task_dead -> __schedule -> finish_task_switch: the stack goes back to this CPU's cache
        self.stacks.free(C.cpu.id)
        C.exit()
        if x is not None and x.deferred_us > 0.0:
            self._defer(c.term("+deferred", x.deferred_us, x.sigma))

    def _defer(self, cost: float) -> None:
        """Work the exit queues for a kernel worker (put_net -> cleanup_net on the netns workqueue:
        one work item drains every dying namespace in turn)."""
        self._deferred += cost
        if not self._worker_busy:
            self._worker_busy = True
            self.env.process(self._kworker())

    def _kworker(self) -> Proc:
        task, first_run = self.machine.start_task("kworker.cleanup")
        yield first_run
        while self._deferred > 0.0:
            work, self._deferred = self._deferred, 0.0
            yield task.run(work, preemptible=True)
        self._worker_busy = False
        task.exit()

    # ------------------------------------------------------------------ the parent's wait

    def cow_by_parent(self, parent: Process, kind: str, rec: "Creation", thread: "Task | None" = None) -> Proc:
        """The parent writes its share of the inherited pages after the fork returns."""
        cfg = self.child_cfg
        if KINDS[kind].copies_mm and cfg.cow_writer == "parent" and cfg.cow_write_fraction > 0.0:
            P = thread or parent.task
            shape = parent.mm.shape
            yield P.run(self._cow_cost(shape, parent.mm.users > 1, cfg.cow_write_fraction), preemptible=True)

    def do_wait(self, parent: Process, child: Process, kind: str, rec: "Creation", thread: "Task | None" = None) -> Proc:
        """wait4() -> do_wait -> wait_task_zombie -> release_task; pthread_join for a thread."""
        env, c = self.env, self.costs
        P = thread or parent.task
        t = env._now
        if KINDS[kind].clone_thread:
            # pthread_join: a futex wait on the thread's tid, woken at its mm_release (_clear_child_tid);
            # the thread reaps itself
            if not child.tid_cleared:
                parent.waiter = P
                yield P.sleep()
                parent.waiter = None
            rec.reap = env._now
            return
        reap = c.draw("wait_reap")
        rest = reap
        walk = 0.0  # do_wait's walk of the parent's other children, tasklist_lock read side
        if self.copies is not None and self.copies.wait_us > 0.0:
            walk = c.term("+wait", self.copies.wait_us, self.copies.sigma)
        if not child.exited:
            scan = _WAIT_SCAN_SHARE * reap
            rest = reap - scan
            if walk:
                scan += walk + self.tasklist_lock.read(env._now, walk)
            yield P.run(scan)
            if not child.exited:
                parent.waiter = P
                yield P.sleep()
                parent.waiter = None
        # release_task(): tasklist_lock for write, free_pid under pidmap_lock
        now = env._now
        if walk:  # the walk again once woken (wait_task_zombie is reached through it)
            rest += walk + self.tasklist_lock.read(now, walk)
        hold = c.draw("release_task_hold")
        wait = self.tasklist_lock.write(now + 0.5 * rest, hold)
        pid_hold = c.draw("alloc_pid_hold")
        wait2 = self.pidmap_lock.write(now + 0.5 * rest + wait + hold, pid_hold)
        yield P.run(rest + wait + wait2)
        parent.zombies.remove(child)
        rec.reap = env._now
        self._stage(P, "wait_reap", t)
        yield from self._return_to_user(P)
