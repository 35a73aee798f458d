"""A single-threaded server that snapshots by fork (Redis BGSAVE), as a workload (Ciw's server).

`[workload] kind = "server"` starts `workload.parents` independent server processes (one is the
usual case), each with its own request stream (`workload.rate` with `workload.arrivals`: poisson,
deterministic, bursty or a file) and the dataset `workload.image` as its address space. A server's
event loop, like Redis's:

- serves queued requests in arrival order, each `[workload.server] service` of CPU time on the
  server's own task (user code, preemptible), and logs each request that arrives after the warm-up
  (arrival, end of service: `forksim.requests`, requests.parquet; `request_latency_us` and its
  fork and snapshot windows in summary.json);
- every `cron` (serverCron, hz=10) checks, between requests, whether a snapshot child has exited
  (reaps it with a non-blocking wait: `Kernel.do_wait` on a zombie never sleeps) and whether a
  snapshot is due: one every `interval`, the first at `first_snapshot`, never two at once (a due
  snapshot waits until the previous child is reaped);
- a snapshot is `Kernel.kernel_clone(fork)`: the server is inside fork() for the whole
  copy_process/dup_mmap, so the requests arriving meanwhile queue behind it (the fork stall). The
  child runs `workload.child.lifetime` (the snapshot's write time, as CPU time on another CPU when
  one is free) and exits;
- after a fork every page of the dataset is write-protected in the server (so at the start too: a run begins as
  just after a snapshot, the state of a server that snapshots regularly): each request writes
  `writes_per_request` random 4 KiB pages, and a write to a page still write-protected faults once:
  a copy (`cow_fault_copy`) while the child still maps the pages, a reuse (`cow_fault_reuse`) after
  it exited. `[workload.child] cow_write_fraction` with `cow_writer = "parent"` adds a one-off burst
  of writes right after the fork (Kernel.cow_by_parent), as for the other workloads.

Creations (one per snapshot) are recorded as for the other workloads, so `fork_latency_us` is the
stall of each fork; `throughput_per_s` counts reaped snapshots.
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING

import pandas as pd
import simpy

from ..draws import Draws
from ..kernel.flags import FORK
from ..kernel.mm import Process
from ..metrics import Creation
from ..requests import RequestLog, mark_windows
from .arrivals import arrival_times, feed_arrivals
from .base import Workload, start_cpu_hogs

if TYPE_CHECKING:
    from ..streams import Streams
    from ..kernel.clone import Kernel
    from ..model import ModelParams

__all__ = ["Server"]

_BLOCK = 4096


class _Instance:
    """One server process: its queue, its snapshot child, its write-protected pages."""

    __slots__ = ("index", "proc", "queue", "idle", "cron_due", "child", "child_rec", "next_snapshot",
                 "wp_pages", "serving")

    def __init__(self, index: int, proc: Process, first_snapshot: float, pages: int):
        self.index = index
        self.proc = proc
        self.queue: deque[float] = deque()
        self.idle = False
        self.cron_due = False
        self.child: Process | None = None
        self.child_rec: Creation | None = None
        self.next_snapshot = first_snapshot
        # pages write-protected in the server since the last fork: all of them at the start, which is the state of a
        # server that snapshots regularly just after a snapshot (as MM.written, none written since)
        self.wp_pages = pages
        self.serving: float | None = None  # arrival time of the request in service


class Server(Workload):
    """Drives `workload.parents` server processes on a kernel (the workload interface of
    forksim.workloads.base, with `requests` (a RequestLog) and `request_frame()` besides)."""

    kind = FORK  # a snapshot is a fork (BGSAVE)
    parent_name = "server"  # the servers' tasks: server0, server1, ...

    def __init__(self, params: "ModelParams", kernel: "Kernel", streams: "Streams"):
        super().__init__(params, kernel, streams)
        self.cfg = params.workload.server
        self.requests = RequestLog()
        self.pages = self.shape.ptes + self.shape.pmds * 512  # 4 KiB pages of the dataset
        mean = self.cfg.service
        if self.cfg.service_distribution == "exponential":
            service = streams("service")
            self._service = Draws(lambda n: service.exponential(mean, n), _BLOCK)
        else:
            self._service = lambda: mean
        self._uniform = Draws(streams("request_uniform").random, _BLOCK)
        self.instances: list[_Instance] = []
        self.first_snapshot: float | None = None  # us, set by start()

    def start(self) -> None:
        wl = self.exp.workload
        first = self.cfg.first_snapshot
        if first is None:
            first = self.exp.experiment.warmup + self.cfg.interval / 2.0
        self.first_snapshot = first
        for i in range(wl.parents):
            task, first_run = self.machine.start_task(f"server{i}", pin=self._pin(i))
            inst = _Instance(i, Process(task, self.kernel.new_mm(self.shape)), first, self.pages)
            self.instances.append(inst)
            self.env.process(self._serve(inst, first_run))
            self.env.process(self._requests(inst))
            self.env.process(self._cron(inst))
        start_cpu_hogs(self.machine, self.exp.background.cpu_hogs)

    # ---- the event loop

    def _wake(self, inst: _Instance) -> None:
        if inst.idle:
            inst.idle = False
            self.machine.wake(inst.proc.task, None)

    def _serve(self, inst: _Instance, first_run: simpy.Event):
        yield first_run
        env, task = self.env, inst.proc.task
        record_from = self.kernel.record_from
        log = self.requests
        log_arrival, log_done, log_server = log.arrival.append, log.done.append, log.server.append
        index = inst.index
        while True:
            if inst.cron_due:
                inst.cron_due = False
                yield from self._cron_work(inst)
                continue
            if not inst.queue:
                inst.idle = True
                yield task.sleep()
                continue
            arrival = inst.serving = inst.queue.popleft()
            yield task.run(self._service() + self._writes(inst), preemptible=True)
            inst.serving = None
            if arrival >= record_from:
                log_arrival(arrival)
                log_done(env.now)
                log_server(index)

    def _writes(self, inst: _Instance) -> float:
        """COW faults of one request's writes to random pages of the dataset."""
        n = self.cfg.writes_per_request
        if inst.wp_pages <= 0 or n <= 0.0:
            return 0.0
        whole = int(n)
        if n > whole and self._uniform() < n - whole:
            whole += 1
        faults = 0
        for _ in range(whole):
            if self._uniform() * self.pages < inst.wp_pages:
                inst.wp_pages -= 1
                faults += 1
        if not faults:
            return 0.0
        return self.kernel.write_faults(inst.proc.mm, faults)  # a copy while the snapshot child still maps them

    def _cron_work(self, inst: _Instance):
        """serverCron: reap an exited snapshot child (WNOHANG), start a due snapshot."""
        k, env, proc = self.kernel, self.env, inst.proc
        child = inst.child
        if child is not None and child.exited:
            yield from k.do_wait(proc, child, self.kind, inst.child_rec)
            rec, inst.child, inst.child_rec = inst.child_rec, None, None
            self._reaped(rec)
        if inst.child is None and env.now >= inst.next_snapshot:
            while inst.next_snapshot <= env.now:
                inst.next_snapshot += self.cfg.interval
            rec = self.records.new(self.kind, inst.index, env.now)
            inst.child = yield from k.kernel_clone(proc, self.kind, rec)
            inst.child_rec = rec
            inst.wp_pages = self.pages
            yield from k.cow_by_parent(proc, self.kind, rec)

    def _cron(self, inst: _Instance):
        period = self.cfg.cron
        while True:
            yield self.env.timeout(period)
            inst.cron_due = True
            self._wake(inst)

    def request_frame(self, creations: pd.DataFrame, end: float) -> pd.DataFrame:
        """The replication's requests (forksim.requests' columns), those still queued or in service at
        `end` with a NaN end of service, each placed against its server's snapshots (`creations`:
        this replication's creation records)."""
        log = self.requests
        record_from = self.kernel.record_from
        for inst in self.instances:
            waiting = [inst.serving] if inst.serving is not None else []
            for arrival in [*waiting, *inst.queue]:
                if arrival >= record_from:
                    log.arrival.append(arrival)
                    log.done.append(math.nan)
                    log.server.append(inst.index)
        return mark_windows(log.frame(), creations, end)

    # ---- requests and background

    def _requests(self, inst: _Instance):
        wl = self.exp.workload
        env = self.env

        def overflow(queued: int) -> str:
            return (f"workload.rate: the server is unstable: {queued} requests queued at t={env.now / 1e6:.3f}s "
                    f"(workload.max_queue = {wl.max_queue}); the request rate exceeds what one server "
                    f"thread serves at workload.server.service = {self.cfg.service:g} us per request")

        yield from feed_arrivals(env, arrival_times(wl, self.streams("arrivals"), self.params.arrivals, wl.rate), inst.queue,
                                 wl.max_queue, lambda: self._wake(inst), overflow)

