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
from .flags import COPIES_MM, EXECS, KINDS, NEW_PROCESS, POSIX_SPAWN, VFORK_WAIT
from .mm import MM, Process, wrote
from .stages import EXIT_MMAP
from .damon import Kdamond
from .netns import Netns
from .shared import SharedState
from .slab import SlabFreelists
from .stack import StackCache, StackVfree
from .warmth import WarmthTracker
from ..task import RUNNABLE, Coroutine

if TYPE_CHECKING:
    from ..config import ChildSection
    from ..cpu import CPU
    from ..machine import Machine, Task
    from ..metrics import Creation
    from .flags import Kind

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


class _Drawers:
    """`Costs.draw(stage)` for each shape-free stage the creation path draws, as attributes."""

    __slots__ = ("setup", "setup_thread", "stack_hit", "stack_vmalloc", "dup_mm", "tail", "pid_hold",
                 "link_hold", "wake_new", "ret_from_fork", "child_touch", "exec", "exit_notify_hold",
                 "release_hold", "do_exit", "wait_reap")

    def __init__(self, costs: Costs):
        d = costs.drawer
        self.setup, self.setup_thread = d("copy_process_setup"), d("copy_process_setup_thread")
        self.stack_hit, self.stack_vmalloc = d("stack_cache_hit"), d("stack_vmalloc")
        self.dup_mm, self.tail, self.wake_new = d("dup_mm"), d("copy_process_tail"), d("wake_up_new_task")
        self.pid_hold, self.link_hold = d("alloc_pid_hold"), d("tasklist_fork_hold")
        self.ret_from_fork, self.child_touch, self.exec = d("ret_from_fork"), d("fork_child_touch"), d("exec")
        self.exit_notify_hold, self.release_hold = d("exit_notify_hold"), d("release_task_hold")
        self.do_exit, self.wait_reap = d("do_exit"), d("wait_reap")


def _family(k) -> str:
    """The creation family placement_room keys on (profile.ROOM_FAMILIES): a thread, a CLONE_VFORK child that
    execs (posix_spawn), another CLONE_VFORK child, or a fork."""
    if k.clone_thread:
        return "thread"
    if k.vfork_wait:
        return "spawn" if k.execs else "vfork"
    return "fork"


class Kernel:
    """The shared kernel state of one simulated machine and the creation path over it."""

    def __init__(self, machine: "Machine", costs: Costs, stack_per_cpu: int, child: "ChildSection",
                 copies: Copies | None = None):
        self.machine = machine
        # fds, clone flags and live children beyond the profile's plain fork (None: none of them)
        self.copies = copies if copies is not None and not copies.zero else None
        self._deferred = 0.0  # queued deferred work (us): one kernel worker drains it (cleanup_net)
        # rtnl_mutex and cleanup_net's batches (kernel/netns.py), where the profile measured them
        x, spec = self.copies, costs.profile.netns_cleanup
        self.netns = Netns(machine, spec, lambda us: costs.term("+netns", us, x.sigma)) \
            if x is not None and spec is not None and (x.netns_clone or x.netns_unshare) else None
        self._clones_netns = self.netns is not None and x.netns_clone  # copy_net_ns in every copy_process
        # a DAMON monitor's rmap walks over the anon folios a parent shares with its live children (kernel/damon.py)
        damon = costs.profile.damon_rmap
        self.damon = Kdamond(machine, damon, x.live_children + 1, lambda us: costs.term("+damon", us, x.sigma),
                             costs.streams("kdamond").random) \
            if x is not None and damon is not None and x.live_children > 0 else None
        self._worker_busy = False
        self.env = machine.env
        self.costs = costs
        self.child_cfg = child
        self.stacks = StackCache(len(machine.cpus), stack_per_cpu)
        rcu = machine.params.rcu
        self.vfree = StackVfree(machine, self.stacks, rcu.vfree_per_stack_us) \
            if rcu is not None and rcu.vfree_per_stack_us > 0.0 else None
        self.slab = SlabFreelists(costs.profile.remote_free, len(machine.cpus))
        self.shared = SharedState(costs.profile.concurrent_creation)
        self.warmth = WarmthTracker(costs.profile.warmth, len(machine.cpus))
        # a child's exit_mmap priced cold where the profile measured it (absent: read no coldness at exits)
        w = costs.profile.warmth
        self._exit_cold = w is not None and (EXIT_MMAP in w.stages or EXIT_MMAP in w.remote)
        self._families_cold = w is not None and bool(w.families)
        # FamilyCold.residual: a draw per cooled creation of that kind, on a stream of its own
        families = w.families if w is not None else {}
        self._family_spread = {kind: costs.ratio_drawer(f"cold spread {kind}", fam.residual)
                               for kind, fam in families.items() if fam.residual is not None}
        self._placement_rules(costs)
        self._exit_head = costs.profile.exit_head_share.value
        reap = costs.profile.wait_reap_vfork
        self._reap_vfork = costs.sampler(reap, "wait_reap_vfork") if reap is not None else None
        ts, es = costs.profile.thread_start, costs.profile.exec_start  # optional: None, not modelled
        self._thread_start = costs.sampler(ts, "thread_start") if ts is not None else None
        self._exec_start = costs.sampler(es, "exec_start") if es is not None else None
        # execve split at exec_mmap's release of a vfork parent, and posix_spawn's glibc work before it (optional:
        # None, the whole exec before the release, no glibc work)
        et, sp = costs.profile.exec_tail, costs.profile.spawn_prep
        self._exec_tail = costs.sampler(et, "exec_tail") if et is not None else None
        self._spawn_prep = costs.sampler(sp, "spawn_prep") if sp is not None else None
        mm_release = costs.profile.mm_release_share
        self._mm_release = mm_release.value if mm_release is not None else self._exit_head
        # kinds whose child shares its parent's fd table at exit (CLONE_FILES, not unshared): exit_files only drops
        # a reference, so no close_files and its cond_resched, and the exit after mm_release has no preemption
        # point before the last schedule (traced 2026-12-04, pthread_create pinned: the joiner woken at
        # clear_child_tid ran after the thread was dead in 320 of 320; a vfork child, with its own table,
        # was preempted 2.7 us after mm_release in 317 of 320)
        self._files_shared = {k for k, kind in KINDS.items()
                              if ("CLONE_FILES" in kind.flags or "CLONE_FILES" in child.flags)
                              and "CLONE_FILES" not in child.unshare}
        self.lock_stats = {n: LockStats(n) for n in ("tasklist_lock", "pidmap_lock", "mmap_lock")}
        self.tasklist_lock = SpinRWLock(self.env, "tasklist_lock", self.lock_stats["tasklist_lock"])
        self.pidmap_lock = SpinRWLock(self.env, "pidmap_lock", self.lock_stats["pidmap_lock"])
        self.stalls = array("d")  # faults that waited for a dup_mmap to finish (us)
        self.record_from = 0.0
        self.on_stage = None  # tracing hook: (task, stage_name, start_us, end_us)
        # the hot path's cost draws, one function per stage (Costs.drawer: same draws as costs.draw)
        self._d = _Drawers(costs)
        self._per_written_pte = costs.profile.stages["dup_mmap"].per_written_pte_us  # (_walk_extra)
        # stages with nothing between them that another task could see run as one chunk (one event);
        # False: each its own chunk, as the kernel's stage boundaries (tests compare the two)
        self.merge_stages = True
        # whether the parent writes its share of the inherited pages after a fork (cow_by_parent): the
        # workloads skip the call, and its generator, when it would do nothing
        self.parent_writes = child.cow_writer == "parent" and child.cow_write_fraction > 0.0
        # the kinds whose child does nothing between ret_from_fork and do_exit's single chunk (no lifetime,
        # COW writes, unshare or exec; no vfork parent or joiner to wake at mm_release; no DAMON root to take):
        # child_life runs the two as one chunk (do_exit's `lead`)
        x = self.copies
        plain = child.lifetime <= 0.0 and (x is None or x.unshare_us <= 0.0) and self.damon is None and not (
            child.cow_writer == "child" and child.cow_write_fraction > 0.0)
        self._exits_at_once = frozenset(
            name for name, k in KINDS.items() if plain and not (k.execs or k.clone_thread or k.vfork_wait))

    def _placement_rules(self, costs: Costs) -> None:
        """Where a new task goes while a CPU is idle: the profile's placement shares, sched_exec's moves, the vfork
        rule for a CPU idle only just now and the room rule (read by _local_share and _sched_exec)."""
        placement = costs.profile.placement
        fork_local = placement["fork_local_when_idle"].value
        busy = placement.get("fork_local_when_idle_busy")
        self._pack = {  # P(child stays on the parent's CPU although one is idle), by (CLONE_VFORK,
            (False, False): fork_local,  # whether the parent's CPU has a task waiting besides it)
            (False, True): busy.value if busy is not None else fork_local,
            (True, False): placement["vfork_local_when_idle"].value,
            (True, True): placement["vfork_local_when_idle"].value,
        }
        # by family where the profile measured it: a thread (absent: as fork), a CLONE_VFORK child that
        # execs (posix_spawn; absent: as vfork)
        thread, spawn = placement.get("thread_local_when_idle"), placement.get("spawn_local_when_idle")
        self._thread_local = thread.value if thread is not None else None
        self._spawn_local = spawn.value if spawn is not None else None
        # sched_exec: P(an exec'ing child alone on its CPU moves to an idle one); absent: 0 (upstream)
        moves = placement.get("exec_moves_when_idle")
        self._exec_moves = moves.value if moves is not None else 0.0
        # sched_vcpu_pack keeps a vfork child on the parent's CPU when the idle CPU has slept a while, but
        # puts it on a CPU that went idle only just now (the previous child's): None, no such distinction
        recent = costs.profile.placement_recent_idle
        self._recent_idle = (recent.below_us, recent.vfork_local) if recent is not None else None
        # the room rule by the parent CPU's awake time and the idle CPU's idle time, for the families it lists
        # (profile.PlacementRoom); None: the rules above for every family
        self._room = costs.profile.placement_room

    def set_record_from(self, t: float) -> None:
        self.record_from = t
        self.tasklist_lock.record_from = t
        self.pidmap_lock.record_from = t

    def new_mm(self, shape) -> MM:
        mm = MM(self.env, shape, self.lock_stats["mmap_lock"])
        mm.mmap_lock.record_from = self.record_from
        return mm

    def _stage(self, task: "Task", name: str, start: float) -> None:
        """The tracing hook for a stage that ends now (nothing when no observer wants it)."""
        if self.on_stage is not None:
            self.on_stage(task, name, start, self.env._now)

    def sleep_until(self, task: "Task", event: simpy.Event) -> simpy.Event:
        woken = task.sleep()
        event.callbacks.append(lambda _e: self.machine.wake(task, None))
        return woken

    # ------------------------------------------------------------------ the parent's call

    def kernel_clone(self, parent: Process, kind: str, rec: "Creation", thread: "Task | None" = None) -> Proc:
        """kernel_clone(): copy_process, wake_up_new_task, and for CLONE_VFORK the wait for the child.

        Stages with no preemption point and no lock another task could see between them run as one
        chunk (one event): copy_process_setup and copy_process_tail of a creation that shares the mm;
        copy_process_setup and dup_mmap of a single-threaded parent, whose mmap_lock nobody else takes
        (its dup_mmap stays preemptible after the setup, as a chunk's head). A merged chunk's stage
        boundaries are its parts' lengths with the interruptions that land in each (Task.interrupted)."""
        env, k = self.env, KINDS[kind]
        P = thread or parent.task
        rec.start = t0 = env._now
        rec.parent_cpu = P.cpu.id
        setup, after_cold, rest_cold = self._left_behind(self._setup_cost(P, k, rec), parent, P, kind, k, t0)
        rcu = P.cpu.rcu
        if rcu is not None and rcu.pending > 0.0:  # RCU callbacks a softirq budget left here (forksim.rcu)
            setup += P.cpu.softirq_point()
        child_mm = (yield from self._copy_mm(parent, P, setup, rec, t0)) if k.copies_mm else parent.mm
        if not k.copies_mm and self.merge_stages and not self._clones_netns:
            # copy_process_setup and copy_process_tail as one chunk: the tail's locks at its own start
            head = P.interrupted(setup)
            t = t0 + head
            rec.setup_us = t - t0
            yield P.run(head + self._tail(t, rec), scaled=head)
            if self.on_stage is not None:
                self.on_stage(P, "copy_process_setup", t0, t)
        else:
            if not k.copies_mm:
                yield from self._copy_process_setup(P, setup, rec, t0)
            t = env._now
            if self._clones_netns:  # copy_namespaces -> copy_net_ns: rtnl_mutex, may sleep
                yield from self.netns.copy_net_ns(P)
            yield P.run(self._tail(env._now, rec))
        rec.tail_us = env._now - t
        if self.on_stage is not None:
            self.on_stage(P, "copy_process_tail", t, env._now)

        child_task = self.machine.new_task(f"{parent.task.name}.{kind}")
        child = Process(child_task, child_mm, parent)
        child.inherited = k.copies_mm
        child.cold_rest_us = rest_cold
        if k.vfork_wait:
            child.vfork_waiter = P
            # the parent sleeps from the placement until the release: the call's cooled rest is the child's run
            child.cold_start_us, after_cold = after_cold, 0.0
        pack = self.costs.uniform() < self._local_share(k, P)
        first_run, ipi = self.machine.spawn(child_task, P, pack=pack)
        Coroutine(self.child_life(child, kind, rec), first_run)
        after = ipi + after_cold  # the parent's work after the placement: an IPI to an idle CPU, a cooled return
        if after > 0.0:
            yield P.run(after)
        if child.vfork_waiter is not None:
            # wait_for_vfork_done(): sleep until the child execs or exits (mm_release)
            yield P.sleep()
        # the return to user space: a preemption point. The new child queued here counts only through
        # need_resched (wake_up_new_task's rule): no tick has seen it waiting yet
        cpu = P.cpu
        if P.need_resched or len(cpu.rq) > (child_task.cpu is cpu and child_task.state == RUNNABLE):
            ev = P.ret_to_user()
            if ev is not None:
                yield ev
        rec.fork_ret = env._now  # the caller's clock reads after it (a preemption there is in fork())
        return child

    def _copy_mm(self, parent: Process, P: "Task", setup: float, rec: "Creation", t0: float):
        """copy_process_setup, then copy_mm -> dup_mm -> dup_mmap (one chunk where nobody else can take the
        parent's mmap_lock: a single-threaded parent); returns the child's new mm."""
        mm = parent.mm
        if self.damon is not None:  # dup_mmap -> anon_vma_fork: the anon_vma root for write (kernel/damon.py)
            yield from self.damon.anon_vma_write(P)
        if self.slab.cost is not None:  # freelists emptied by remote frees (the call only where priced)
            setup += self.slab.extra_us(P.cpu.id, mm.shape, self.costs)
        if self.merge_stages and len(parent.threads) == 1 and mm.mmap_lock.holder is None:
            chunk, head, cold = self._setup_dup_mmap(P, mm, setup, rec)
            t1 = t0 + head
            yield chunk
            self._dup_mmap_done(P, mm, rec, t1, cold)
            if self.on_stage is not None:
                self.on_stage(P, "copy_process_setup", t0, t1)
                self.on_stage(P, "dup_mmap", t1, self.env._now)
        else:
            yield from self._copy_process_setup(P, setup, rec, t0)
            yield from self._dup_mmap(P, mm, rec)
        child_mm = self.new_mm(mm.shape)
        mm.users += 1
        return child_mm

    def _left_behind(self, setup: float, parent: Process, P: "Task", kind: str, k: "Kind",
                     t0: float) -> tuple[float, float, float]:
        """copy_process_setup's cost with what earlier creations and exits left it: the shared creation state last
        written on another CPU (kernel/shared.py), the task and pid freed on another CPU (a thread), and a
        creation path cooled since the parent's last creation (one that copies no image). Returns that, the cooled
        part of the call after wake_up_new_task (FamilyCold.before_wakeup) and the cooled rest of its round trip
        (FamilyCold.rest_full_us: the child's exit charges it). `k`: KINDS[kind]."""
        if self.shared.cost is not None:
            setup += self.shared.fork_us(P.cpu.id, parent, self.costs, t0, k.copies_mm)
        if k.clone_thread and self.slab.thread_cost is not None:
            setup += self.slab.thread_extra_us(P.cpu.id, self.costs)
        after_cold = rest_cold = 0.0
        if self._families_cold and not k.copies_mm:
            before_cold, after_cold, rest_cold = self.warmth.creation_extras_us(kind, parent.mm, P.cpu.id, t0,
                                                                                self._family_spread.get(kind))
            setup += before_cold
        return setup, after_cold, rest_cold

    def _copy_process_setup(self, P: "Task", setup: float, rec: "Creation", t0: float) -> Proc:
        """copy_process_setup as a chunk of its own (where it merges with nothing after it)."""
        yield P.run(setup)
        rec.setup_us = self.env._now - t0
        if self.on_stage is not None:
            self.on_stage(P, "copy_process_setup", t0, self.env._now)

    def _local_share(self, k, P: "Task") -> float:
        """P(the new child stays on the parent's CPU although another is idle): the profile's share for the
        family (a thread's and posix_spawn's own where measured), and for a vfork child the recent-idle
        share when the CPU it would go to (the first idle one, as Machine.spawn picks it) went idle less
        than `below_us` ago. Where the profile's placement_room lists the family: its room rule instead
        (profile.RoomCurve.share)."""
        vfork = k.vfork_wait
        busy = bool(P.cpu.rq)
        room = self._room
        # measured on the loop alone, its previous child perhaps still queued on the parent's CPU: where another
        # program's task waits there (a hog), the placement section's shares below apply
        if room is not None and (not busy or self._only_own_children(P)):
            curve = room.families.get(_family(k))
            idle = self.machine._idle  # read only: the ids of the idle CPUs
            if curve is not None and idle:
                now = self.env._now
                return curve.share(now - P.cpu.awake_since, room.room_us, now - self.machine.first_idle().idle_since)
        if k.clone_thread and self._thread_local is not None and not busy:
            return self._thread_local
        if vfork and k.execs and self._spawn_local is not None:
            return self._spawn_local
        share = self._pack[vfork, busy]
        if vfork and self._recent_idle is not None:
            idle = self.machine._idle  # read only: the ids of the idle CPUs
            if idle:
                below_us, local = self._recent_idle
                if self.env._now - self.machine.first_idle().idle_since < below_us:
                    return local
        return share

    @staticmethod
    def _only_own_children(P: "Task") -> bool:
        """Whether every task waiting on P's CPU is a child of P's (named f"{P.name}.{kind}", as kernel_clone
        names them)."""
        prefix = P.name + "."
        n = len(prefix)
        for _v, _s, t in P.cpu.rq:
            if t.name[:n] != prefix:  # not t.name.startswith(prefix), a cheaper test of the same
                return False
        return True

    def _wake_away(self, waiter: "Task", C: "Task", kind: str) -> "CPU | None":
        """Where a packing kernel's wake-up of the parent by its child alone on the parent's CPU (wait's
        exit_notify, pthread_join's clear_child_tid) puts the parent while another CPU is idle: that idle CPU or
        the parent's own, by the profile's measured curve (placement_room.wake_away; its after_pick curve, by the
        waker CPU's awake time, for a parent a pick took off its CPU's queue while it slept); None where the
        profile has none for the family (Machine._select_wake_cpu's rule)."""
        room, m = self._room, self.machine
        if room is None or waiter.affinity is not None or waiter.prev_cpu is not C.cpu or not m._idle or C.cpu.rq:
            return None
        curve = room.wake_away.get(_family(KINDS[kind]))
        if curve is None:
            return None
        cpu, now = m.first_idle(), self.env._now
        picked_awake = now - C.cpu.awake_since if waiter.picked_off else None
        return cpu if self.costs.uniform() < curve.at(now - cpu.idle_since, picked_awake) else C.cpu

    def _setup_cost(self, P: "Task", k, rec: "Creation") -> float:
        """copy_process_setup: dup_task_struct .. copy_signal, alloc_thread_stack_node, copy_mm -> dup_mm
        (mm_alloc, mm_init); copy_files -> dup_fd per fd, copy_fs / copy_sighand shared or copied."""
        d, x = self._d, self.copies
        hit = self.stacks.alloc(P.cpu.id)
        rec.stack_hit = hit
        cost = d.setup() if k.new_process else d.setup_thread()
        cost += d.stack_hit() if hit else d.stack_vmalloc()
        if k.copies_mm:
            cost += d.dup_mm()
        if x is not None:
            cost = max(0.0, cost + self.costs.term("+setup", x.setup_us, x.sigma) - x.saved_us)
        return cost

    def _tail(self, t: float, rec: "Creation") -> float:
        """copy_process_tail from `t`: copy_namespaces, copy_io, copy_thread, alloc_pid (pidmap_lock),
        cgroup_can_fork, the tasklist_lock write section, post-fork hooks; then wake_up_new_task. Takes
        the two spinlocks at their moments; returns the chunk's length (us), spin waits included."""
        c, d, x = self.costs, self._d, self.copies
        tail = d.tail()
        pid_hold = d.pid_hold()
        link_hold = d.link_hold()
        if x is not None:
            tail += c.term("+tail", x.tail_us, x.sigma)  # copy_namespaces
            link = c.term("+link", x.link_us, x.sigma)  # grows with the parent's live children
            link_hold += link
            tail += link
        free = tail - pid_hold - link_hold
        if not free > 0.0:  # max(0.0, free), written out (as below: a builtin's call costs more)
            free = 0.0
        pid_at = t + _ALLOC_PID_AT * free
        pid_wait = self.pidmap_lock.write(pid_at, pid_hold)
        link_at = pid_at + pid_wait + pid_hold + (_TASKLIST_AT - _ALLOC_PID_AT) * free
        link_wait = self.tasklist_lock.write(link_at, link_hold)
        rec.pidmap_wait, rec.tasklist_wait = pid_wait, link_wait
        held = pid_hold + link_hold
        return (held if held > tail else tail) + pid_wait + link_wait + d.wake_new()  # max(tail, held)

    def _setup_dup_mmap(self, P: "Task", mm: MM, setup: float, rec: "Creation") -> tuple[simpy.Event, float, float]:
        """copy_process_setup, then dup_mmap under the free mmap_lock of a single-threaded parent, as
        one chunk: the setup its non-preemptible head, the VMA walk preemptible (cond_resched). Starts
        the chunk and returns its event (the caller waits on it, then calls `_dup_mmap_done`), the head's length
        and the coldness the walk found.
        (Plain calls, not a generator of its own: two generator resumptions per fork fewer.)"""
        t0 = self.env._now
        mm.mmap_lock.try_write(P)  # free: held at once (its zero wait recorded)
        head = P.interrupted(setup)
        t1 = t0 + head
        rec.setup_us = t1 - t0
        extra, cold = self._walk_extra(mm, P.cpu.id, t1)
        walk = self.costs.draw_plus("dup_mmap", mm.shape, extra)
        return P.run(head + walk, preemptible=True, head=head, scaled=head), head, cold

    def _walk_extra(self, mm: MM, cpu: int, t: float) -> tuple[float, float]:
        """What dup_mmap's walk of `mm` on `cpu` at `t` costs beyond its warm, read-only median: the cold walk
        (and the coldness it found) and the write-protection of the PTEs written since the last fork, which
        this fork leaves read-only."""
        w = self.warmth
        extra, cold = w.cold_walk("dup_mmap", mm, cpu, t, mm.shape) if w.curve is not None else (0.0, 0.0)
        if mm.written:
            extra += self._per_written_pte * mm.written
            mm.written = 0
        return extra, cold

    def _dup_mmap_done(self, P: "Task", mm: MM, rec: "Creation", t1: float, cold: float) -> None:
        """The end of dup_mmap's walk (begun at coldness `cold`): the image is warm on this CPU, the mmap_lock released."""
        self.warmth.walked(mm, P.cpu.id, self.env._now, cold)  # its PTEs and struct pages are now in this CPU's caches
        mm.mmap_lock.release()
        rec.dup_mmap_us = self.env._now - t1

    def _dup_mmap(self, P: "Task", mm: MM, rec: "Creation") -> Proc:
        """dup_mmap(): the parent's mmap_lock for write across the whole VMA walk (cond_resched inside)."""
        env, c = self.env, self.costs
        t = env._now
        lock = mm.mmap_lock
        granted = lock.try_write(P)
        if granted is not None:
            yield self.sleep_until(P, granted)
        rec.mmap_wait = env._now - t
        t1 = env._now
        extra, cold = self._walk_extra(mm, P.cpu.id, t1)
        yield P.run(c.draw_plus("dup_mmap", mm.shape, extra), preemptible=True)
        self.warmth.walked(mm, P.cpu.id, env._now, cold)  # its PTEs and struct pages are now in this CPU's caches
        lock.release()
        rec.dup_mmap_us = env._now - t1
        if self.on_stage is not None:
            self.on_stage(P, "dup_mmap", t1, env._now)

    # ------------------------------------------------------------------ the child

    def _complete_vfork(self, child: Process, rec: "Creation") -> float:
        """mm_release -> complete_vfork_done: wake the parent sleeping in vfork; the waker's cost."""
        waiter = child.vfork_waiter
        if waiter is None:
            return 0.0
        rec.mm_release = self.env._now
        child.vfork_waiter = None
        # complete() -> try_to_wake_up without WF_SYNC. Traced on this kernel (tools/vfork_trace.py): the
        # parent always comes back on its own CPU. A child on that CPU: the parent waits there for the
        # exit's head, as a sync wake-up keeps it. A child on the other CPU: the parent's CPU, halted since
        # the parent slept, takes a wake-up IPI and a halt exit while the child goes on with its exit, so
        # the parent's wait4 mostly finds a zombie (95% of such iterations traced).
        sync = waiter.prev_cpu is child.task.cpu
        return self.machine.wake(waiter, child.task, sync=sync)

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
        return self.machine.wake(waiter, child.task, to=self._wake_away(waiter, child.task, "thread"))

    def child_life(self, child: Process, kind: str, rec: "Creation") -> Proc:
        """The child from its first run (a `Coroutine` started by it): ret_from_fork, COW writes, its
        lifetime, exec, do_exit."""
        env, c, cfg, d = self.env, self.costs, self.child_cfg, self._d
        C = child.task
        # ret_from_fork -> schedule_tail: the first return to user space; a fork child then takes
        # COW faults on the pages it writes first (stack, glibc's fork bookkeeping)
        cost = d.ret_from_fork() + child.cold_start_us
        if child.inherited:
            cost += d.child_touch()
        if kind in self._exits_at_once and self.merge_stages and not (C.need_resched or C.cpu.rq):
            # nothing between ret_from_fork and do_exit: one chunk (do_exit's `lead`); child_start the lead's
            # end, with the interruptions that land in it
            lead = C.interrupted(cost)
            rec.child_start = env._now + lead
            rec.child_cpu = C.cpu.id
            yield from self.do_exit(child, kind, rec, lead=lead)
            return
        x = self.copies
        # the parent still maps every inherited page: each write is a copy
        cow = child.inherited and cfg.cow_writer == "child" and cfg.cow_write_fraction > 0.0
        if (cow or cfg.lifetime > 0.0) and self.merge_stages and (x is None or x.unshare_us <= 0.0):
            # ret_from_fork, the COW writes and the lifetime as one chunk, ret_from_fork its non-preemptible head
            # (the return to user space after it is where the chunk's preemption points start): events fewer
            head = C.interrupted(cost)
            rec.child_start = env._now + head
            rec.child_cpu = C.cpu.id
            user = self._cow_cost(child.mm.shape, True, cfg.cow_write_fraction) if cow else 0.0
            yield C.run(head + user + cfg.lifetime, preemptible=True, head=head, scaled=head)
        else:
            yield C.run(cost)
            rec.child_start = env._now
            rec.child_cpu = C.cpu.id
            if C.need_resched or C.cpu.rq:  # a preemption point (_return_to_user, inline)
                ev = C.ret_to_user()
                if ev is not None:
                    yield ev
            if x is not None and x.unshare_us > 0.0:
                # ksys_unshare: unshare_fs, unshare_fd (dup_fd), unshare_nsproxy_namespaces
                t = env._now
                if self.netns is not None and x.netns_unshare:  # unshare_nsproxy_namespaces -> copy_net_ns (rtnl)
                    yield from self.netns.copy_net_ns(C)
                yield C.run(c.term("+unshare", x.unshare_us, x.sigma))
                self._stage(C, "unshare", t)
            if cow:
                yield C.run(self._cow_cost(child.mm.shape, True, cfg.cow_write_fraction), preemptible=True)
            if cfg.lifetime > 0.0:
                yield C.run(cfg.lifetime, preemptible=True)
        if self._thread_start is not None and KINDS[kind].clone_thread:
            yield C.run(self._thread_start())  # glibc's start_thread around the function, up to the exit

        if KINDS[kind].execs:
            yield from self._execve(child, kind, rec)
        yield from self.do_exit(child, kind, rec)

    def _execve(self, child: Process, kind: str, rec: "Creation") -> Proc:
        """glibc's posix_spawn work before its execve, sched_exec, then execve: begin_new_exec -> exec_mmap releases
        a vfork parent (exec_mm_release) and drops the old mm (exit_mmap if its last user). A profile with exec_tail
        releases the parent after `exec` and runs the tail after a preemption point; without it the release comes
        at the end of the whole exec. Then the new program's start and life."""
        env, C = self.env, child.task
        if kind == POSIX_SPAWN and self._spawn_prep is not None:
            yield C.run(self._spawn_prep(), preemptible=True)  # glibc's __spawni_child before its execve
        yield from self._sched_exec(C)
        t = env._now
        cost = self._d.exec()
        zapped = child.inherited
        zap, cold = self._exit_mmap(child) if zapped else (0.0, 0.0)
        if zapped:
            child.inherited = False
            child.parent.mm.users -= 1
        if self._exec_tail is not None:
            yield C.run(cost, preemptible=True)  # bprm_execve up to exec_mmap's exec_mm_release
            self._stage(C, "exec", t)
            yield from self._release_vfork(child, rec)  # the released parent takes the CPU here
            t, cost = env._now, self._exec_tail()  # exec_mmap's mmput of the old mm, the rest and the binary's load
        yield C.run(cost + zap, preemptible=True)
        if zapped:  # exec_mmap's mmput zapped the struct pages it shared, as an exit does
            self.warmth.exit_walked(child.parent.mm, C.cpu.id, env._now, cold)
        self._stage(C, "exec" if self._exec_tail is None else "exec_tail", t)
        child.mm = self.new_mm(EMPTY_IMAGE)
        yield from self._release_vfork(child, rec)  # into the new program (a parent released already: no wake-up)
        if self._exec_start is not None:
            yield C.run(self._exec_start())  # the new program's start, its image's teardown beyond empty
        if self.child_cfg.exec_lifetime > 0.0:
            yield C.run(self.child_cfg.exec_lifetime, preemptible=True)

    def _release_vfork(self, child: Process, rec: "Creation") -> Proc:
        """exec_mmap's mm_release: a vfork parent woken (the waker's cost), then a preemption point, where a parent
        released by the exec runs."""
        ipi = self._complete_vfork(child, rec)
        if ipi > 0.0:
            yield child.task.run(ipi)
        yield from self._return_to_user(child.task)

    def _sched_exec(self, C: "Task") -> Proc:
        """sched_exec (bprm_execve, before the new image is read): select_task_rq(WF_EXEC), and for
        another CPU stop_one_cpu: the stopper preempts the child on its CPU (a context switch),
        migration_cpu_stop moves it (the migration) and wakes the target, which leaves halt first."""
        m = self.machine
        target = m.exec_target(C, self._exec_moves, self.costs.uniform)
        if target is None:
            return
        p = m.params
        yield C.run(p.context_switch() + p.migration())
        woken = C.sleep()
        m.move_to(C, target)  # the IPI is the stopper's, on the CPU the child leaves (idle after)
        yield woken

    @staticmethod
    def _return_to_user(task: "Task") -> Proc:
        """A return to user space: a preemption point (need_resched, or a used-up slice; the hot
        paths call it only when the task has need_resched or its CPU has tasks waiting)."""
        ev = task.ret_to_user()
        if ev is not None:
            yield ev

    def write_faults(self, mm: MM, pages: int) -> float:
        """do_wp_page for `pages` write-protected 4 KiB pages of `mm` its process writes: a copy while another
        process still maps them, else a reuse; their CPU time. Their PTEs are writable again (the next fork
        write-protects them)."""
        wrote(mm, pages)
        return self._wp_faults(mm.users > 1, pages)

    def _wp_faults(self, shared: bool, pages: int) -> float:
        """do_wp_page for `pages` write-protected 4 KiB pages: a copy while another process maps them, else a reuse."""
        return self.costs.draw_many("cow_fault_copy" if shared else "cow_fault_reuse", pages)

    def _cow_cost(self, shape, shared: bool, fraction: float) -> float:
        """do_wp_page for `fraction` of the inherited 4 KiB pages (a write to a shared THP splits it
        and copies one 4 KiB page, since Linux 5.8): a copy while shared, else a reuse."""
        return self._wp_faults(shared, int(round(fraction * (shape.ptes + shape.pmds * 512))))

    def _exit_mmap(self, child: Process) -> tuple[float, float]:
        """exit_mmap of the child's own mm (do_exit's mmput, or exec_mmap): its draw and the coldness it finds the
        image at, where the image is the one a fork child shares with its parent (the parent's coldness: the
        struct pages are shared) and the profile prices a cold exit; else 0."""
        shape = child.mm.shape
        if not (child.inherited and self._exit_cold):
            return self.costs.draw(EXIT_MMAP, shape), 0.0
        extra, cold = self.warmth.cold_walk(EXIT_MMAP, child.parent.mm, child.task.cpu.id, self.env._now, shape)
        return self.costs.draw_plus(EXIT_MMAP, shape, extra), cold

    def _exit_costs(self, child: Process, thread: bool) -> tuple[float, float, float, float]:
        """do_exit's CPU time without exit_mmap (body), exit_notify's tasklist_lock hold, and a thread's
        release_task and pidmap_lock holds (0 for a process). The measured do_exit runs to the last schedule, so it
        holds the tasklist_lock sections of exit_notify (and a thread's own release_task): they are carved out of
        it, not added."""
        c, d = self.costs, self._d
        hold = d.exit_notify_hold()
        rel = pid_hold = 0.0
        if thread:
            rel, pid_hold = d.release_hold(), d.pid_hold()
        body = d.do_exit() - (hold + (rel + pid_hold))  # grouped as it always was: the same float
        if not body > 0.0:  # max(0.0, body), written out (a builtin's call costs more)
            body = 0.0
        if self.shared.cost is not None:  # exit_creds, cgroup_exit, free_pid after another CPU's (kernel/shared.py)
            body += self.shared.exit_us(child.task.cpu.id, child.parent, c, self.env._now, child.inherited)
        x = self.copies
        if x is not None:  # exit_files -> close_files per fd, exit_task_namespaces; exit_notify's share
            body = max(0.0, body + c.term("+exit", x.exit_us, x.sigma))
            hold += c.term("+exit_notify", x.exit_notify_us, x.sigma)
        return body, hold, rel, pid_hold

    def do_exit(self, child: Process, kind: str, rec: "Creation", lead: float | None = None) -> Proc:
        """do_exit(): exit_signals .. exit_mm (mm_release), exit_mmap of an mm it owns, exit_files ..,
        exit_notify, the last schedule.

        `lead`: the length of ret_from_fork (child_start set) of a child that exits at once
        (`_exits_at_once`), nothing waiting on its CPU: the head of do_exit's chunk, so a wake-up meanwhile
        preempts at the end of the exit's head, not at the return to user space between (an event fewer;
        tools/fingerprint.py: statistically invisible)."""
        env = self.env
        C = child.task
        t = env._now if lead is None else rec.child_start
        thread = KINDS[kind].clone_thread  # CLONE_THREAD: release_task by itself at exit_notify
        body, hold, rel, pid_hold = self._exit_costs(child, thread)
        # exit_signals .. exit_mm: no preemption point before close_files' cond_resched, so a parent
        # released at mm_release waits on this CPU for the end of this head; a vfork parent on another
        # CPU is woken at mm_release itself, early in it
        head = self._exit_head * body
        waiter = child.vfork_waiter
        if waiter is not None and waiter.prev_cpu is not C.cpu:
            head = self._mm_release * body
        rest = body - head
        if child.cold_rest_us > 0.0:  # the child's own path cooled with its creation's (FamilyCold.rest_full_us):
            if thread:  # before mm_release's futex wake of the joiner
                head += child.cold_rest_us
            else:  # before exit_notify's wake of the parent
                rest += child.cold_rest_us
        cold = 0.0
        if child.mm is not child.parent.mm:  # exit_mm -> mmput -> exit_mmap of an mm it owns
            zap, cold = self._exit_mmap(child)
            rest += zap
        if self.damon is not None and child.inherited:  # exit_mmap -> unlink_anon_vmas: the root for write
            yield from self.damon.anon_vma_write(C)  # (taken before the exit's chunk, not inside it)
        if child.vfork_waiter is not None:
            yield C.run(head)
            rest += self._complete_vfork(child, rec)
            yield C.run(rest, preemptible=True)
        elif thread:
            yield C.run(head)
            rest += self._clear_child_tid(child, rec)
            yield C.run(rest, preemptible=kind not in self._files_shared)
        elif lead is not None:  # ret_from_fork, then do_exit: one chunk (see above)
            yield C.run(lead + head + rest, preemptible=True, head=lead + head, scaled=lead)
        else:  # nothing happens at the head's end: one chunk whose preemption points start there
            yield C.run(head + rest, preemptible=True, head=head)
        if child.inherited:
            child.inherited = False
            child.parent.mm.users -= 1
            # zap_pte_range drops the mapcount of every folio it shares with the parent: the
            # parent's struct pages are warm again (but for what a walk begun cold leaves)
            self.warmth.exit_walked(child.parent.mm, C.cpu.id, env._now, cold)
        if self.on_stage is not None:
            self.on_stage(C, "do_exit", t, env._now)

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
                ipi = self.machine.wake(waiter, C, sync=True, to=self._wake_away(waiter, C, kind))
        if ipi > 0.0:
            yield C.run(ipi)
        self._task_dead(child, kind, rec)

    def _task_dead(self, child: Process, kind: str, rec: "Creation") -> None:
        """do_task_dead and what the exit leaves behind it: the stack, RCU callbacks, slab objects, deferred
        work and the network namespace."""
        C, x, c, k = child.task, self.copies, self.costs, KINDS[kind]
        cpu = C.cpu
        # do_task_dead -> __schedule -> finish_task_switch: the stack goes back to this CPU's cache, else after RCU
        if not self.stacks.free(cpu.id) and self.vfree is not None:
            self.vfree.queue(cpu)
        rcu = self.machine.params.rcu
        if rcu is not None:  # call_rcu here: exit_mmap's maple nodes and page tables; a thread's release_task
            cpu.queue_rcu((rcu.exit_mm_us if child.mm is not child.parent.mm else 0.0)
                          + (rcu.reap_us if k.clone_thread else 0.0))
        if k.copies_mm:  # its VMAs, anon_vma chains, page tables: freed here (kernel/slab.py)
            self.slab.freed(rec.parent_cpu, cpu.id)
        elif k.clone_thread:  # release_task at its own exit_notify: its task_struct and pid, here
            self.slab.thread_freed(rec.parent_cpu, cpu.id)
        C.exit()
        if x is not None and x.deferred_us > 0.0:
            self._defer(c.term("+deferred", x.deferred_us, x.sigma))
        if self.netns is not None:  # exit_task_namespaces -> put_net: the namespace joins cleanup_list
            self.netns.put_net()

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
            mm = parent.mm
            cost = self._cow_cost(mm.shape, mm.users > 1, cfg.cow_write_fraction)
            wrote(mm, round(cfg.cow_write_fraction * mm.shape.ptes))
            yield P.run(cost, preemptible=True)

    def do_wait(self, parent: Process, child: Process, kind: str, rec: "Creation", thread: "Task | None" = None) -> Proc:
        """wait4() -> do_wait -> wait_task_zombie -> release_task; pthread_join for a thread."""
        env, c, d = self.env, self.costs, self._d
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
        k = KINDS[kind]
        # a vfork child that exited without exec never had an mm of its own: its reap is measured apart
        reap = self._reap_vfork() if self._reap_vfork is not None and k.vfork_wait and not k.execs else d.wait_reap()
        rest = reap
        walk = 0.0  # do_wait's walk of the parent's other children, tasklist_lock read side
        if self.copies is not None and self.copies.wait_us > 0.0:
            walk = c.term("+wait", self.copies.wait_us, self.copies.sigma)
        if not child.exited:
            scan = _WAIT_SCAN_SHARE * reap
            rest = reap - scan
            C = child.task
            behind = C.state == RUNNABLE and C.cpu is P.cpu
            if behind and not walk and self.merge_stages:
                # the child waits on this CPU behind its parent, so it cannot exit during the scan: the scan
                # and the sleep as one step (the switch-in after it starts at the scan's end: an event fewer)
                parent.waiter = P
                yield P.sleep(after=scan)
                parent.waiter = None
            else:
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
        hold = d.release_hold()
        wait = self.tasklist_lock.write(now + 0.5 * rest, hold)
        pid_hold = d.pid_hold()
        wait2 = self.pidmap_lock.write(now + 0.5 * rest + wait + hold, pid_hold)
        yield P.run(rest + wait + wait2)
        parent.zombies.remove(child)
        rcu = self.machine.params.rcu
        if rcu is not None:  # release_task: delayed_put_task_struct, delayed_put_pid
            P.cpu.queue_rcu(rcu.reap_us)
        rec.reap = env._now
        if self.on_stage is not None:
            self.on_stage(P, "wait_reap", t, env._now)
        if P.need_resched or P.cpu.rq:  # the return to user space: a preemption point (inline)
            ev = P.ret_to_user()
            if ev is not None:
                yield ev
