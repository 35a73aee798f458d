"""An open workload (`workload.kind = "open"`): requests arrive on their own schedule
(`workload.arrivals`: poisson or deterministic at `workload.rate`, bursty, or a file), queue (one
shared queue, or one per parent with `workload.queue = "per_parent"`), and an idle parent takes the
next one and creates a child for it. A queue past `workload.max_queue` is an UnstableError."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING


from ..kernel.mm import Process
from .arrivals import arrival_times, feed_arrivals
from .base import ParentWorkload

if TYPE_CHECKING:
    from ..machine import Task

__all__ = ["OpenWorkload"]


class _Queue:
    """Requests waiting for a parent, and the parents sleeping until one comes."""

    __slots__ = ("requests", "idle")

    def __init__(self) -> None:
        self.requests: deque[float] = deque()
        self.idle: list["Task"] = []


class OpenWorkload(ParentWorkload):
    """Parents serving a stream of arrivals, one creation per request."""

    queues: list[_Queue]

    def _before_parents(self) -> None:
        wl = self.params.workload
        per_parent = wl.queue == "per_parent"
        self.queues = [_Queue() for _ in range(wl.parents)] if per_parent else [_Queue()]
        for q in self.queues:
            self.env.process(self._arrival_stream(q, len(self.queues)))

    def _parent(self, proc: Process, index: int):
        queue = self.queues[index % len(self.queues)]
        task = proc.task
        while True:
            while not queue.requests:  # another parent may take the request this one was woken for
                queue.idle.append(task)
                yield task.sleep()
            arrival = queue.requests.popleft()
            yield from self._create(proc, index, arrival)

    def _arrival_stream(self, queue: _Queue, streams: int):
        """Arrivals into `queue`; with one stream per parent each runs at rate/streams."""
        wl = self.params.workload
        env = self.env
        rate = wl.rate / streams if wl.rate else None

        slack = self.machine.params.timer_slack_us if wl.arrival_wakeup == "timer" else 0.0

        def wake_a_parent() -> None:
            if queue.idle:
                parent = queue.idle.pop()
                if slack > 0.0:  # its clock_nanosleep to the arrival's time ends the timer slack later
                    env.timeout(slack).callbacks.append(lambda _e: self.machine.wake(parent, None))
                else:
                    self.machine.wake(parent, None)

        def overflow(queued: int) -> str:
            return (f"the open workload is unstable: {queued} requests queued at t={env.now / 1e6:.3f}s "
                    f"(workload.max_queue = {wl.max_queue}); the offered rate exceeds what {wl.parents} "
                    f"parent(s) on {len(self.machine.cpus)} CPU(s) can serve")

        yield from feed_arrivals(env, arrival_times(wl, self.streams("arrivals"), self.params.arrivals, rate), queue.requests,
                                 wl.max_queue, wake_a_parent, overflow)
