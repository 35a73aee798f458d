"""A task started on a bare Machine for the engine tests: placed by wake_up_new_task, runs `body`, exits."""

from __future__ import annotations

from collections.abc import Callable, Generator

import simpy

from forksim.machine import Machine, Task


def start_task(env: simpy.Environment, machine: Machine, name: str,
               body: Callable[[Task], Generator], cpu: int | None = None) -> None:
    """Spawn task `name` (pinned to `cpu` if given); once it first runs it runs `body(task)` and exits."""
    def proc():
        task = machine.new_task(name, pin=cpu)
        ev, _ = machine.spawn(task, None)
        yield ev
        yield from body(task)
        task.exit()
    env.process(proc())
