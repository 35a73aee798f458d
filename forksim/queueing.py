"""The engine under plain queueing load: Poisson arrivals of one-chunk jobs driven straight onto
`forksim.machine.Machine` (no kernel, no workload), for checks against queueing theory.

Every job is a new task placed with `Machine.spawn(task, None)`, does one `Task.run(service)` chunk
and calls `Task.exit()`. Scheduling costs are zero (the `SchedulerParams` defaults); times are
unitless (service mean 1). The jobs are driven by event callbacks rather than one SimPy process
each: the engine's events are the same, the driver's overhead is a third of a process per job,
which lets the high-load cases run enough jobs for a tight interval.

tests/test_engine.py and tests/test_sched.py assert its results against theory (M/M/1, M/M/c,
M/G/1 processor sharing); tools/fingerprint.py records them, so a change to the engine that moves
them shows there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import simpy

from .machine import Machine, SchedulerParams

__all__ = ["FCFS", "fair", "SERVICE", "H2_CV2", "exponential", "deterministic", "hyperexponential", "QueueRun",
           "simulate"]

# FCFS: chunks are non-preemptible and slices/ticks never expire.
FCFS = dict(tick_us=1e12, slice_us=1e12, wakeup_granularity_us=1e12)


def fair(q: float) -> SchedulerParams:
    """The fair scheduler with a short slice: processor sharing in the limit q -> 0."""
    return SchedulerParams(tick_us=q, slice_us=q, wakeup_granularity_us=q)


# ------------------------------------------------------------------------- service distributions


def exponential(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.exponential(1.0, n)


def deterministic(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.ones(n)


H2_CV2 = 4.0
_H2_P1 = 0.5 * (1.0 + math.sqrt((H2_CV2 - 1.0) / (H2_CV2 + 1.0)))


def hyperexponential(rng: np.random.Generator, n: int) -> np.ndarray:
    """Two-phase hyperexponential, mean 1, cv^2 = 4, balanced means (p_i / mu_i = 1/2)."""
    branch = rng.random(n) < _H2_P1
    return np.where(branch, rng.exponential(0.5 / _H2_P1, n), rng.exponential(0.5 / (1.0 - _H2_P1), n))


SERVICE = {"exponential": exponential, "deterministic": deterministic, "hyperexponential": hyperexponential}


# ------------------------------------------------------------------------- the driver


@dataclass
class QueueRun:
    arrivals: np.ndarray  # arrival times
    service: np.ndarray  # service demands
    response: np.ndarray  # departure - arrival, per job (arrival order)
    end: float  # the time the last job left
    busy: float  # Machine.busy_us() at the end
    area: float  # integral of the number of tasks on the machine over [t_from, last arrival]
    t_from: float
    violations: int  # monitor samples with an idle CPU while another CPU's runqueue had a waiter
    samples: int  # monitor samples taken


def simulate(
    seed,
    lam: float,
    cpus: int,
    n_jobs: int,
    service: str,
    params: dict | SchedulerParams,
    preemptible: bool,
    *,
    monitor_rate: float = 0.0,
    area_from: float | None = None,
) -> QueueRun:
    """Poisson arrivals at rate `lam` to a machine of `cpus` CPUs; runs until every job has left."""
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(1.0 / lam, n_jobs))
    demand = SERVICE[service](rng, n_jobs)
    env = simpy.Environment()
    params = params if isinstance(params, SchedulerParams) else SchedulerParams(**params)
    m = Machine(env, cpus, params)
    response = np.full(n_jobs, np.nan)
    arr_list, dem_list = arrivals.tolist(), demand.tolist()
    t_from = arr_list[0] if area_from is None else area_from
    t_to = arr_list[-1]
    state = {"area": 0.0, "last": t_from}

    def in_system() -> int:
        return sum(c.nr_running for c in m.cpus)

    def integrate(before: int) -> None:
        """Add the area under N(t) since the last change (N was `before` meanwhile)."""
        now = min(max(env.now, t_from), t_to)
        state["area"] += before * (now - state["last"])
        state["last"] = now

    def start(i: int) -> None:
        integrate(in_system())
        task = m.new_task(f"job{i}")
        first_run, _ = m.spawn(task, None)

        def running(_e) -> None:
            def done(_e2) -> None:
                integrate(in_system())
                task.exit()
                response[i] = env.now - arr_list[i]

            task.run(dem_list[i], preemptible=preemptible).callbacks.append(done)

        first_run.callbacks.append(running)

    def source():
        for i, t in enumerate(arr_list):
            yield env.timeout(t - env.now)
            start(i)

    mon = {"violations": 0, "samples": 0}

    def monitor(mrng: np.random.Generator):
        while env.now < t_to:
            yield env.timeout(float(mrng.exponential(1.0 / monitor_rate)))
            mon["samples"] += 1
            idle = [c for c in m.cpus if c.current is None and not c.waking]
            if idle and any(c.rq for c in m.cpus):
                mon["violations"] += 1

    env.process(source())
    if monitor_rate > 0.0:
        env.process(monitor(np.random.default_rng(rng.integers(2**63))))
    env.run()
    integrate(0)
    assert not np.isnan(response).any(), "a job never finished"
    assert all(c.idle for c in m.cpus)
    return QueueRun(arrivals, demand, response, env.now, m.busy_us(), state["area"], t_from,
                    mon["violations"], mon["samples"])
