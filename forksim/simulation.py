"""One replication's lifecycle, in one place: build the model, attach observers, run, collect.

`Simulation(params, seed, observers)` builds one replication of an experiment (`forksim.model.
ModelParams`, resolved once per experiment) on the replication's own random stream: the SimPy
environment, the machine (`forksim.machine`), the kernel (`forksim.kernel.clone`) and the workload
(`forksim.workloads`). `run()` is the standard lifecycle that `forksim run`, `sweep`, `plan`, `bench`
and `predict` go through (`runner.run_replication`): start the tasks, run the warm-up, open the
measured window, run to its end (or to the workload's stop at `experiment.max_creations`), and hand
back a `ReplicationResult`. `forksim trace` (forksim.trace) drives the same steps itself
(`start`, `run_to`, `open_window`, `advance`, `finish`) to bound its window. (desmod's `simulate()`
elaborates a model, runs it and calls its components' hooks in the same way.)

Observers see the model as it runs, through the hooks the model calls (desmod's `Component` hooks):

- `on_cpu(event, cpu, task, now)`: a task is made current on a CPU ("dispatch"; the CPU counts busy
  from here unless it is waking from halt), starts running after the switch, migration or halt exit
  ("begin"), leaves it ("leave"; `task.state` says why: sleeping, runnable, or dead when it exited);
- `on_stage(task, stage, start, end)`: a creation stage ends (forksim.kernel.stages names them);
- `on_window(sim, now)` and `on_end(sim, now)`: the measured window opens; the run ends.

A creation's call entry and return, its lock waits and its child's life are in its record
(`workload.records`, the records table), which the kernel fills as it goes. A hook no observer
overrides is not wired at all: the model's hot paths test one attribute for None and call nothing.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import numpy as np
import simpy

from .environment import Environment
from .errors import UnstableError
from .kernel.clone import Kernel
from .kernel.costs import Costs
from .machine import Machine
from .metrics import ReplicationResult
from .model import ModelParams
from .streams import Streams
from .workloads import Workload, make_workload

if TYPE_CHECKING:
    from .cpu import CPU
    from .task import Task

__all__ = ["Observer", "Simulation"]


class Observer:
    """Hooks a replication calls; override those you need (the others cost nothing)."""

    def on_cpu(self, event: str, cpu: "CPU", task: "Task", now: float) -> None:
        """A task is made current ("dispatch"), starts running ("begin") or leaves its CPU ("leave")."""

    def on_stage(self, task: "Task", stage: str, start: float, end: float) -> None:
        """A creation stage ran on `task` from `start` to `end` (us)."""

    def on_window(self, sim: "Simulation", now: float) -> None:
        """The measured window opens (after the warm-up)."""

    def on_end(self, sim: "Simulation", now: float) -> None:
        """The run ends (the end of the window, the workload's stop or an event budget)."""


def _overrides(observers: list[Observer], hook: str) -> list[Any]:
    """The bound `hook` of each observer that overrides it."""
    base = getattr(Observer, hook)
    return [getattr(o, hook) for o in observers if getattr(type(o), hook, base) is not base]


def _fan_out(hooks: list[Any]) -> Any:
    """One callable for the model's hook attribute: None, the one hook, or all of them in order."""
    if not hooks:
        return None
    if len(hooks) == 1:
        return hooks[0]

    def call_all(*args: Any) -> None:
        for h in hooks:
            h(*args)

    return call_all


class Simulation:
    """One replication's model, built but not started (`run()` runs it through)."""

    def __init__(self, params: ModelParams, seed: np.random.SeedSequence, observers: Iterable[Observer] = ()):
        self._wall0 = time.perf_counter()  # the replication's wall time counts its building too
        self.params = params
        self.seed = seed
        exp, profile = params.experiment, params.profile
        self.streams = Streams(seed)  # one stream per purpose: common random numbers across sweep points
        self.env = Environment()  # simpy.Environment with a leaner event loop (forksim.environment)
        self.costs = Costs(profile, self.streams)
        self.machine = Machine(self.env, params.cpus, params.scheduler.bind(self.costs))
        self.kernel = Kernel(self.machine, self.costs, profile.stack_cache_per_cpu, params.child, params.copies)
        self.warmup = exp.experiment.warmup
        self.end = params.end
        self.kernel.set_record_from(self.warmup)
        self.workload: Workload = make_workload(params, self.kernel, self.streams)
        self.observers: list[Observer] = []
        self._busy0: list[float] = []
        for obs in observers:
            self.attach(obs)

    def attach(self, observer: Observer) -> None:
        """Add an observer (before `start()` to see the tasks' first dispatches)."""
        self.observers.append(observer)
        self.machine.tracer = _fan_out(_overrides(self.observers, "on_cpu"))
        self.kernel.on_stage = _fan_out(_overrides(self.observers, "on_stage"))

    # ---- the lifecycle's steps

    def start(self) -> None:
        """Start the workload's tasks (parents, threads, hogs, arrival streams)."""
        self.workload.start()

    def run_to(self, t: float) -> None:
        """Run up to `t` (us), whatever the workload does (the warm-up)."""
        if t > self.env.now:
            with self._unstable_named():
                self.env.run(until=t)

    def open_window(self) -> None:
        """The measured window opens now: the CPUs' busy time counts from here."""
        self._busy0 = self.machine.busy_per_cpu()
        for hook in _overrides(self.observers, "on_window"):
            hook(self, self.env.now)

    def advance(self, until: float) -> bool:
        """Run to `until` (us) or to the workload's stop, whichever comes first; True once stopped."""
        env, stop = self.env, self.workload.stop
        with self._unstable_named():
            env.run(until=simpy.AnyOf(env, [stop, env.timeout(until - env.now)]))
        return stop.triggered

    def finish(self) -> None:
        """The run ends now: observers close what they have open."""
        for hook in _overrides(self.observers, "on_end"):
            hook(self, self.env.now)

    def window_busy(self) -> list[float]:
        """Each CPU's busy time (us) since the window opened."""
        return [b - a for a, b in zip(self._busy0, self.machine.busy_per_cpu())]

    @contextmanager
    def _unstable_named(self) -> Iterator[None]:
        """An unstable queue names the config key to change (workload.rate) and what else helps."""
        try:
            yield
        except UnstableError as exc:
            if "workload.rate" in str(exc):
                raise
            src = self.params.experiment.source
            raise UnstableError(f"{src + ': ' if src else ''}workload.rate: {exc}; lower "
                                f"workload.rate, or add workload.parents or machine.cpus") from None

    # ---- the standard lifecycle

    def run(self, replication: int = 0) -> ReplicationResult:
        """Warm-up, then `duration` of measured time (or up to the stop); the replication's result."""
        self.start()
        self.run_to(self.warmup)
        self.open_window()
        self.advance(self.end)
        self.finish()
        return self.result(replication)

    def result(self, replication: int) -> ReplicationResult:
        """What the replication measured, from its window's opening to now."""
        env, kernel, workload = self.env, self.kernel, self.workload
        end = env.now
        busy = sum(self.machine.busy_per_cpu()) - sum(self._busy0)
        in_flight = workload.records.in_flight
        records = workload.records.frame()
        seed = self.seed
        return ReplicationResult(
            replication=replication,
            records=records,
            window=(self.warmup, end),
            busy_us=busy,
            cpus=self.params.cpus,
            lock_waits={name: st.waits for name, st in kernel.lock_stats.items()},
            stalls=kernel.stalls,
            in_flight=in_flight,
            events=next(env._eid),  # events scheduled (SimPy's own counter)
            wall_s=time.perf_counter() - self._wall0,
            requests=workload.request_frame(records, end),
            seed=seed.entropy if isinstance(seed.entropy, int) else None,
        )
