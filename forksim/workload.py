"""Workload drivers: closed loops of parents, open arrival streams, a multi-threaded parent's
faulting threads, and always-runnable CPU hogs."""

from __future__ import annotations

import functools
import math
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import simpy

from .errors import ConfigError, ForksimError
from .kernel.mm import Process
from .metrics import Records
from .profile import ImageShape
from .units import UnitError, parse_time_us

if TYPE_CHECKING:
    from .config import Experiment, WorkloadSection
    from .kernel.clone import Kernel
    from .machine import Machine, Task

__all__ = ["Workload", "UnstableError", "load_arrivals", "image_shape", "burst_times", "arrival_times", "Draws",
           "cpu_hog", "start_cpu_hogs", "feed_arrivals"]


class UnstableError(ForksimError):
    """An open workload's queue grew past its bound: the offered rate exceeds capacity."""


def image_shape(exp: "Experiment") -> ImageShape:
    img = exp.workload.image
    return ImageShape.from_rss(img.rss, img.vmas, img.anon_vma_count, img.thp, img.threads)


def load_arrivals(path: str) -> np.ndarray:
    """A file of arrival times, one per line: seconds from the start, or with a unit (1.5ms).
    Lines starting with '#' are comments."""
    p = Path(path)
    try:
        lines = p.read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read arrivals file: {exc.strerror or exc}", source=path, field="workload.arrivals") from None
    except UnicodeDecodeError:
        raise ConfigError("cannot read arrivals file: not a text file of times", source=path,
                          field="workload.arrivals") from None
    times = []
    for n, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            try:
                times.append(float(text) * 1e6)  # a bare number: seconds
            except ValueError:
                times.append(parse_time_us(text))
        except UnitError as exc:
            raise ConfigError(f"line {n}: {exc}", source=path, field="workload.arrivals") from None
    if not times:
        raise ConfigError("the arrivals file holds no arrival time", source=path, field="workload.arrivals")
    arr = np.asarray(times)
    bad = ~np.isfinite(arr) | (arr < 0)
    if bad.any():
        raise ConfigError(f"arrival times must be finite and non-negative (got {float(arr[bad][0]) / 1e6!r} s)",
                          source=path, field="workload.arrivals")
    if np.any(np.diff(arr) < 0):
        raise ConfigError("arrival times must be non-decreasing", source=path, field="workload.arrivals")
    return arr


def burst_times(bursts):
    """`arrivals = "bursty"`: absolute arrival times (us) of [workload.bursts]: `size` requests per
    burst, evenly over `spread`, a burst every `interval` from `offset` (deterministic, endless)."""
    step = bursts.spread / bursts.size
    k = 0
    while True:
        t0 = bursts.offset + k * bursts.interval
        for j in range(bursts.size):
            yield t0 + j * step
        k += 1


class Draws:
    """Blocks of numpy draws handed out one at a time (a scalar numpy call per draw is slow)."""

    __slots__ = ("make", "size", "block")

    def __init__(self, make: Callable[[int], np.ndarray], size: int = 2048):
        self.make = make
        self.size = size
        self.block: list[float] = []

    def __call__(self) -> float:
        if not self.block:
            self.block = self.make(self.size).tolist()
        return self.block.pop()


def arrival_times(wl: "WorkloadSection", rng: np.random.Generator, arrivals: np.ndarray | None,
                  rate: float | None) -> Iterator[float]:
    """Absolute arrival times (us): a file's, bursts, or a deterministic or Poisson stream at `rate`."""
    if arrivals is not None:
        yield from arrivals.tolist()
        return
    if wl.arrivals == "bursty":
        yield from burst_times(wl.bursts)
        return
    gap = (lambda: 1e6 / rate) if wl.arrivals == "deterministic" else Draws(lambda n: rng.exponential(1e6 / rate, n))
    t = 0.0
    while True:
        t += gap()
        yield t


def feed_arrivals(env: simpy.Environment, times: Iterator[float], requests: deque, max_queue: int,
                  on_arrival: Callable[[], None], overflow: Callable[[int], str]):
    """Queue each arrival at its time and call `on_arrival`; a queue beyond `max_queue` means the
    offered load exceeds capacity: UnstableError(overflow(queued)) rather than an endless climb."""
    for t in times:
        if t > env.now:
            yield env.timeout(t - env.now)
        requests.append(env.now)
        if len(requests) > max_queue:
            raise UnstableError(overflow(len(requests)))
        on_arrival()


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
        while env.now - start < on:  # spin by the clock: time waiting for the CPU counts
            yield task.run(min(100.0, on - (env.now - start)), preemptible=True)
        start += period
        if start > env.now:
            yield task.sleep_for(start - env.now)
        else:  # fell behind: missed periods are skipped, not made up
            start += math.ceil((env.now - start) / period) * period
            yield task.sleep_for(start - env.now)


def start_cpu_hogs(machine: "Machine", count: int, duty: float = 1.0, period: float = 10_000.0) -> None:
    """The experiment's [background] CPU hogs, each on the idlest CPU."""
    for h in range(count):
        task, first_run = machine.start_task(f"hog{h}")
        machine.env.process(cpu_hog(task, first_run, duty, period))


class _Queue:
    """Requests waiting for a parent, and the parents sleeping until one comes."""

    __slots__ = ("requests", "idle")

    def __init__(self) -> None:
        self.requests: deque[float] = deque()
        self.idle: list["Task"] = []


class Workload:
    """Starts the experiment's tasks on a kernel and collects one record per creation."""

    parent_name = "parent"  # the parents' tasks: parent0, parent1, ... (their threads parent0.t1, ...)

    def __init__(self, exp: "Experiment", kernel: "Kernel", rng: np.random.Generator, arrivals: np.ndarray | None = None):
        self.exp = exp
        self.kernel = kernel
        self.machine = kernel.machine
        self.env = kernel.env
        self.rng = rng
        self.kind = exp.workload.child.clone
        self.records = Records()
        self.completed = 0
        self.stop = simpy.Event(self.env)
        self._arrivals = arrivals
        self.shape = image_shape(exp)

    def start(self) -> None:
        """Start the tasks as a load generator does: a launcher forks the CPU hogs, then the parents
        (their threads from each parent), each placed by fork placement from the launcher's CPU;
        then it exits. Where they land is the kernel's placement, not a fixed layout."""
        wl = self.exp.workload
        queues: list[_Queue] = []
        if wl.kind == "open":
            per_parent = wl.queue == "per_parent"
            queues = [_Queue() for _ in range(wl.parents)] if per_parent else [_Queue()]
            for q in queues:
                self.env.process(self._arrival_stream(q, len(queues)))
        if self.kernel.costs.profile.balancing is None:
            # the validated model: each task starts on the idlest CPU, hogs after the parents
            for i in range(wl.parents):
                task, first = self.machine.start_task(f"parent{i}")
                self._start_parent(i, queues, task, first)
            bg = self.exp.background
            start_cpu_hogs(self.machine, bg.cpu_hogs, bg.hog_duty, bg.hog_period)
            return
        plan: list[tuple[str, Callable[["Task", simpy.Event], None]]] = []
        for h in range(self.exp.background.cpu_hogs):
            plan.append((f"hog{h}", lambda task, first: self.env.process(
                cpu_hog(task, first, self.exp.background.hog_duty, self.exp.background.hog_period))))
        for i in range(wl.parents):
            plan.append((f"parent{i}", functools.partial(self._start_parent, i, queues)))
        launcher, first = self.machine.start_task("launcher")
        self.env.process(self._launch(launcher, first, plan))

    def _launch(self, launcher: "Task", first: simpy.Event, plan):
        """The launcher: fork each planned task (SD_BALANCE_FORK placement from its CPU), then exit."""
        yield first
        pack = self.kernel._pack  # P(local although a CPU is idle), by (CLONE_VFORK, parent's CPU busy)
        for name, begin in plan:
            task = self.machine.new_task(name)
            local = pack[False, bool(launcher.cpu.rq)]
            first_run, ipi = self.machine.spawn(task, launcher, pack=self.kernel.costs.uniform() < local)
            begin(task, first_run)
            if ipi > 0.0:
                yield launcher.run(ipi)
        launcher.exit()

    def _start_parent(self, i: int, queues: list["_Queue"], task: "Task", first: simpy.Event) -> None:
        wl = self.exp.workload
        proc = Process(task, self.kernel.new_mm(self.shape))
        if wl.kind == "closed":
            self.env.process(self._closed_parent(proc, i, first))
        else:
            self.env.process(self._open_parent(proc, i, first, queues[i % len(queues)]))
        for j in range(1, wl.image.threads):
            thread, tfirst = self.machine.start_task(f"parent{i}.t{j}")
            proc.threads.append(thread)
            self.env.process(self._faulting_thread(proc, thread, tfirst))

    # ---- a creation, start to reap

    def _create(self, proc: Process, index: int, arrival: float):
        k = self.kernel
        rec = self.records.new(self.kind, index, arrival)
        child = yield from k.kernel_clone(proc, self.kind, rec)
        yield from k.cow_by_parent(proc, self.kind, rec)
        yield from k.do_wait(proc, child, self.kind, rec)
        self.records.done(rec)
        self.completed += 1
        limit = self.exp.experiment.max_creations
        if limit and self.completed >= limit and not self.stop.triggered:
            self.stop.succeed()

    def _closed_parent(self, proc: Process, index: int, first_run: simpy.Event):
        yield first_run
        think = self.exp.workload.think_time
        task = proc.task
        while True:
            yield from self._create(proc, index, self.env.now)
            if think > 0.0:
                yield task.sleep_for(think)

    def _open_parent(self, proc: Process, index: int, first_run: simpy.Event, queue: "_Queue"):
        yield first_run
        task = proc.task
        while True:
            while not queue.requests:  # another parent may take the request this one was woken for
                queue.idle.append(task)
                yield task.sleep()
            arrival = queue.requests.popleft()
            yield from self._create(proc, index, arrival)

    def _arrival_stream(self, queue: "_Queue", streams: int):
        """Arrivals into `queue`; with one stream per parent each runs at rate/streams."""
        wl = self.exp.workload
        env = self.env
        rate = wl.rate / streams if wl.rate else None

        def wake_a_parent() -> None:
            if queue.idle:
                self.machine.wake(queue.idle.pop(), None)

        def overflow(queued: int) -> str:
            return (f"the open workload is unstable: {queued} requests queued at t={env.now / 1e6:.3f}s "
                    f"(workload.max_queue = {wl.max_queue}); the offered rate exceeds what {wl.parents} "
                    f"parent(s) on {len(self.machine.cpus)} CPU(s) can serve")

        yield from feed_arrivals(env, arrival_times(wl, self.rng, self._arrivals, rate), queue.requests,
                                 wl.max_queue, wake_a_parent, overflow)

    # ---- background

    def _faulting_thread(self, proc: Process, task: "Task", first_run: simpy.Event):
        """Another thread of the parent: user work, then a page fault; a fault on a VMA that a
        running dup_mmap has already reached waits for the whole walk to end."""
        yield first_run
        img = self.exp.workload.image
        gap = Draws(lambda n: self.rng.exponential(1e6 / img.fault_rate, n))
        fixed = None if img.fault_position == "uniform" else float(img.fault_position)
        uniforms: list[float] = []
        costs, env, k = self.kernel.costs, self.env, self.kernel
        while True:
            yield task.run(gap(), preemptible=True)
            if not uniforms:
                uniforms = self.rng.random(2048).tolist()
            position = uniforms.pop() if fixed is None else fixed
            lock = proc.mm.mmap_lock
            if lock.walk_reached(position):
                t = env.now
                released = lock.released_event()
                yield k.sleep_until(task, released)
                if t >= k.record_from:
                    stall = env.now - t
                    k.stalls.append(stall)
                    lock.stats.waits.append(stall)
            yield task.run(costs.draw("page_fault"))
