"""The engine's own share of a creation: the 2-CPU storm's events driven alone, beside the bench's floor.

    python tools/event_bound.py [CREATIONS]

Two parents (one a CPU, as the bench's 2-CPU storm row) loop: a creation is 7 events, as the storm
takes them (5 of the parent's and the child's chunks, the child's first run, the parent's wake-up), each
a timeout built in place as `Task.run` builds it with a no-op first callback (the CPU's accounting), the
child driven by its own `task.Coroutine` as `Kernel.kernel_clone` starts it. No model logic: what is left
of a creation's cost once every line of the model is gone. Prints us a creation, events a creation and
the ratio to the floor (`bench.floor_rate` in the same process).
"""

from __future__ import annotations

import random
import sys
import time
from heapq import heappush
from pathlib import Path

from simpy.events import NORMAL, Timeout

sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]  # the forksim of this tree

from forksim.bench import floor_rate  # noqa: E402 - after the path
from forksim.environment import Environment  # noqa: E402
from forksim.task import Coroutine  # noqa: E402


def bound(creations: int) -> dict[str, float]:
    env = Environment()
    draw = random.Random(1).random
    new = object.__new__
    done = [0]

    def account(_ev) -> None:
        pass

    def run(us: float) -> Timeout:
        ev = new(Timeout)
        ev.env, ev.callbacks, ev._value, ev._delay, ev._ok = env, [account], None, us, True
        heappush(env._queue, (env._now + us, NORMAL, next(env._eid), ev))
        return ev

    def child(wake):
        yield run(draw())  # ret_from_fork + do_exit
        yield run(draw())  # exit_notify
        wake()

    def parent():
        while done[0] < creations:
            yield run(draw())  # setup + dup_mmap
            yield run(draw())  # tail
            reaped = env.event()
            Coroutine(child(reaped.succeed), run(draw()))  # the child's first run (the switch to it)
            yield reaped  # the parent's wake-up
            yield run(draw())  # release
            done[0] += 1

    for _ in range(2):
        Coroutine(parent(), env.timeout(0))
    t = time.perf_counter()
    env.run()
    wall = time.perf_counter() - t
    floor = floor_rate(2, done[0])
    us = wall / done[0] * 1e6
    return {"us_per_creation": us, "events_per_creation": next(env._eid) / done[0],
            "floor_us_per_job": 1e6 / floor["rate"], "ratio_to_floor": (1e6 / floor["rate"]) / us}


if __name__ == "__main__":
    out = bound(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
    print(", ".join(f"{k} {v:.2f}" for k, v in out.items()))
