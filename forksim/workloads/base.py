"""What every workload shares (Ciw's node, in a simpler form): the creation records, the `stop`
event a capped run (`experiment.max_creations`) fires, the background CPU hogs; and for the workloads
of parents that create (closed, open), the parents' start-up, their faulting threads and one
creation from entry to reap.

A workload's interface to `forksim.simulation.Simulation`: `start()`, `stop` (an event), `records`
(the creations), `request_frame(creations, end)` (a server's requests, else None), and for the
trace `kind` (the creation made), `parent_name` (the parents' task names) and `first_snapshot`.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Callable

import pandas as pd
import simpy

from ..draws import Draws
from ..kernel.flags import DEFAULT_KIND
from ..kernel.mm import Process, wrote
from ..metrics import Creation, Records
from ..task import Coroutine

if TYPE_CHECKING:
    from ..streams import Streams
    from ..kernel.clone import Kernel
    from ..machine import Machine, Task
    from ..model import ModelParams

__all__ = ["Workload", "ParentWorkload", "cpu_hog", "start_cpu_hogs"]


_SPIN_EPS_US = 1e-3


def cpu_hog(task: "Task", first_run: simpy.Event, duty: float = 1.0, period: float = 10_000.0):
    """A CPU-bound task: always runnable, or (duty < 1) spinning `duty` of each `period` by the
    clock and sleeping the rest, like the load generator's --hog-duty hogs."""
    yield first_run
    if duty >= 1.0:
        while True:
            yield task.run(1e6, preemptible=True)
    env = task.machine.env
    on = duty * period
    start = env.now
    while True:
        # Spin by the clock (time waiting for the CPU counts) until less than a nanosecond is left: a
        # remainder below the clock's resolution at `now` would run for no time, forever.
        while on - (env.now - start) > _SPIN_EPS_US:
            yield task.run(min(100.0, on - (env.now - start)), preemptible=True)
        start += period
        if start > env.now:
            yield task.nanosleep(start - env.now)
        else:  # fell behind: missed periods are skipped, not made up
            start += math.ceil((env.now - start) / period) * period
            yield task.nanosleep(start - env.now)


def start_cpu_hogs(machine: "Machine", count: int, duty: float = 1.0, period: float = 10_000.0) -> None:
    """The experiment's [background] CPU hogs, each on the idlest CPU."""
    for h in range(count):
        task, first_run = machine.start_task(f"hog{h}")
        machine.env.process(cpu_hog(task, first_run, duty, period))


class Workload:
    """The small base: records, the stop event, counting reaped creations against max_creations."""

    kind: str = DEFAULT_KIND  # the creation it makes (a clone kind)
    parent_name = "parent"  # the parents' tasks: parent0, parent1, ... (their threads parent0.t1, ...)
    first_snapshot: float | None = None  # a server's first snapshot (us), where the trace's window opens

    def __init__(self, params: "ModelParams", kernel: "Kernel", streams: "Streams"):
        self.params = params
        self.exp = params.experiment
        self.kernel = kernel
        self.machine = kernel.machine
        self.env = kernel.env
        self.streams = streams  # named random streams (forksim.streams)
        self.records = Records()
        self.completed = 0
        self._limit = params.max_creations  # experiment.max_creations (read once: a property)
        self.stop = simpy.Event(self.env)
        self.shape = params.shape

    def start(self) -> None:
        raise NotImplementedError

    def _pin(self, i: int) -> int | None:
        """workload.pin: the CPU of parent (or server) i, as the validation's loadgen --pin (i % cpus,
        Machine.new_task); None: unpinned."""
        return i if self.exp.workload.pin else None

    def _reaped(self, rec: Creation) -> None:
        """A creation's child is reaped: its record is done; a capped run stops at its cap."""
        self.records.done(rec)
        self.completed += 1
        limit = self._limit
        if limit and self.completed >= limit and not self.stop.triggered:
            self.stop.succeed()

    def request_frame(self, creations: pd.DataFrame, end: float) -> pd.DataFrame | None:
        """The replication's requests (forksim.requests), for a workload that serves them."""
        return None


# copy_process's stages for a process of no image, up to the placement in wake_up_new_task
_LAUNCHER_FORK = ("copy_process_setup", "stack_cache_hit", "dup_mm", "dup_mmap", "copy_process_tail")


class ParentWorkload(Workload):
    """Parents that create (closed.py, open.py): each a process with `workload.image` as its address
    space and `image.threads - 1` faulting threads; a subclass says what each parent does (`_parent`)."""

    def __init__(self, params: "ModelParams", kernel: "Kernel", streams: "Streams"):
        super().__init__(params, kernel, streams)
        self.kind = params.child.clone
        # the pages each parent writes between a reap and its next creation (image.write_fraction: _rewrite)
        self._rewrites = round(params.workload.image.write_fraction * self.shape.ptes)
        self._work = params.workload.parent_work  # CPU time each parent runs after a reap (workload.parent_work)

    def _before_parents(self) -> None:
        """Started before the parents (an open workload's arrival streams)."""

    def _parent(self, proc: Process, index: int):
        """Parent `index`'s life from its first run (a `task.Coroutine` started by that event)."""
        raise NotImplementedError

    def start(self) -> None:
        """Start the tasks as a load generator does: a launcher forks the CPU hogs, then the parents
        (their threads from each parent), each placed by fork placement from the launcher's CPU;
        then it exits. Where they land is the kernel's placement, not a fixed layout."""
        wl, bg = self.params.workload, self.params.background
        self._before_parents()
        if self.params.profile.balancing is None:
            # the validated model: each task starts on the idlest CPU, hogs after the parents
            for i in range(wl.parents):
                task, first = self.machine.start_task(f"{self.parent_name}{i}", pin=self._pin(i))
                self._start_parent(i, task, first)
            start_cpu_hogs(self.machine, bg.cpu_hogs, bg.hog_duty, bg.hog_period)
            return
        plan: list[tuple[str, Callable[["Task", simpy.Event], None], int | None]] = []
        for h in range(bg.cpu_hogs):
            plan.append((f"hog{h}", lambda task, first: self.env.process(
                cpu_hog(task, first, bg.hog_duty, bg.hog_period)), None))
        for i in range(wl.parents):
            plan.append((f"{self.parent_name}{i}", functools.partial(self._start_parent, i), self._pin(i)))
        launcher, first = self.machine.start_task("launcher")
        self.env.process(self._launch(launcher, first, plan))

    def _launch(self, launcher: "Task", first: simpy.Event, plan):
        """The launcher: fork each planned task (its copy_process, then SD_BALANCE_FORK placement from its
        CPU at wake_up_new_task), then exit."""
        yield first
        pack = self.kernel._pack  # P(local although a CPU is idle), by (CLONE_VFORK, parent's CPU busy)
        costs = self.kernel.costs
        for name, begin, pin in plan:
            # the launcher's fork of its small image (EMPTY_IMAGE): the tasks forked before it run meanwhile
            yield launcher.run(sum(costs.draw(stage) for stage in _LAUNCHER_FORK))
            task = self.machine.new_task(name, pin)
            local = pack[False, bool(launcher.cpu.rq)]
            first_run, ipi = self.machine.spawn(task, launcher, pack=self.kernel.costs.uniform() < local)
            begin(task, first_run)
            if ipi > 0.0:
                yield launcher.run(ipi)
        launcher.exit()

    def _start_parent(self, i: int, task: "Task", first: simpy.Event) -> None:
        proc = Process(task, self.kernel.new_mm(self.shape))
        # driven without simpy.Process's own events and bookkeeping (resumed about four times a creation)
        Coroutine(self._parent(proc, i), first)
        for j in range(1, self.params.workload.image.threads):
            thread, tfirst = self.machine.start_task(f"{self.parent_name}{i}.t{j}", pin=self._pin(i))
            proc.threads.append(thread)
            self.env.process(self._faulting_thread(proc, thread, tfirst))

    # ---- a creation, start to reap

    def _create(self, proc: Process, index: int, arrival: float):
        k = self.kernel
        rec = self.records.new(self.kind, index, arrival)
        child = yield from k.kernel_clone(proc, self.kind, rec)
        if k.parent_writes:
            yield from k.cow_by_parent(proc, self.kind, rec)
        yield from k.do_wait(proc, child, self.kind, rec)
        self._reaped(rec)
        if self._rewrites:
            yield from self._rewrite(proc)
        if self._work > 0.0:
            yield proc.task.run(self._work, preemptible=True)  # the parent's own work before its next creation

    def _rewrite(self, proc: Process):
        """The parent's own work after the reap writes `image.write_fraction` of its pages: a write fault on each
        PTE the last fork write-protected (do_wp_page: a reuse where no child maps the page any more, a copy
        where a live child still does), each PTE writable again for the next fork to write-protect."""
        yield proc.task.run(self.kernel.write_faults(proc.mm, self._rewrites), preemptible=True)

    # ---- the parent's other threads

    def _faulting_thread(self, proc: Process, task: "Task", first_run: simpy.Event):
        """Another thread of the parent: user work, then a page fault; a fault on a VMA that a
        running dup_mmap has already reached waits for the whole walk to end, which hands it the
        mmap_lock for read until its fault is done (a fork meanwhile waits: MmapLock)."""
        yield first_run
        img = self.params.workload.image
        gaps = self.streams(f"fault_gap {task.name}")
        gap = Draws(lambda n: gaps.exponential(1e6 / img.fault_rate, n))
        fixed = None if img.fault_position == "uniform" else float(img.fault_position)
        uniforms: list[float] = []
        costs, env, k = self.kernel.costs, self.env, self.kernel
        while True:
            yield task.run(gap(), preemptible=True)
            if not uniforms:
                uniforms = self.streams(f"fault_position {task.name}").random(2048).tolist()
            position = uniforms.pop() if fixed is None else fixed
            lock = proc.mm.mmap_lock
            handed = lock.walk_reached(position)
            if handed:
                t = env.now
                released = lock.wait_read()
                yield k.sleep_until(task, released)
                if t >= k.record_from:
                    stall = env.now - t
                    k.stalls.append(stall)
                    lock.stats.waits.append(stall)
            yield task.run(costs.draw("page_fault"))
            wrote(proc.mm, 1)  # the written page's PTE is writable: the next fork write-protects it
            if handed:  # the walk's end handed it the lock for read: held through the fault (mmap_read_unlock)
                lock.read_release()
