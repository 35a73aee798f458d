"""The SimPy environment a replication runs on: `simpy.Environment` whose `run` processes events in
one loop, `Environment.step` inlined (a Python call per event fewer: a creation takes about eight
events). Each event is processed as `step` processes it, in the same order (time, priority, then the
order of scheduling), with the same `until` handling, StopSimulation and crash on an undefused
failed event, so results are the same as on `simpy.Environment`. `env.step()` still works as SimPy's."""

from __future__ import annotations

from heapq import heappop
from typing import Any

import simpy
from simpy.core import StopSimulation
from simpy.events import URGENT, Event, EventPriority

__all__ = ["Environment"]


class Environment(simpy.Environment):
    """simpy.Environment with its event loop in one function."""

    def run(self, until: float | Event | None = None) -> Any:
        """As simpy.Environment.run: until no event is left, `until` (a time, us) or an event fires."""
        if until is not None:
            if not isinstance(until, Event):
                at = until if isinstance(until, int) else float(until)
                if at <= self._now:
                    raise ValueError(f"until ({at}) must be greater than the current simulation time")
                until = Event(self)  # before every regular event at that time, as SimPy schedules it
                until._ok = True
                until._value = None
                self.schedule(until, URGENT, at - self._now)
            elif until.callbacks is None:
                return until.value  # already processed
            until.callbacks.append(StopSimulation.callback)
        queue = self._queue
        while queue:
            self._now, _, _, event = heappop(queue)
            callbacks, event.callbacks = event.callbacks, None
            try:
                for callback in callbacks:
                    callback(event)
            except StopSimulation as stop:
                # the callbacks left run when the simulation resumes, first of all (as step does)
                event.callbacks = callbacks[callbacks.index(callback) + 1:]
                self.schedule(event, EventPriority(-1))
                return stop.args[0]
            if not event._ok and not hasattr(event, "_defused"):
                exc = type(event._value)(*event._value.args)  # a failed event nobody handled: crash
                exc.__cause__ = event._value
                raise exc
        if until is not None:
            raise RuntimeError(f'No scheduled events left but "until" event was not triggered: {until}')
        return None
