"""Running experiments: one replication on its own random stream, all replications of an
experiment (in parallel across local cores), and the results they hand back."""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd
import simpy

from .config import Experiment
from .kernel.clone import Kernel
from .kernel.costs import Costs
from .machine import Machine, SchedulerParams
from .metrics import ReplicationResult, records_frame, summarize
from .profile import Profile, load_profile
from .workload import Workload, load_arrivals

__all__ = ["RunResult", "run_experiment", "run_replication", "replication_seeds", "scheduler_params", "resolve_profile"]


@dataclass
class RunResult:
    """Everything a run produced, including how it was made."""

    experiment: Experiment
    profile: Profile
    seed: int
    summary: dict[str, Any]
    records: pd.DataFrame
    replications: list[ReplicationResult] = field(repr=False)


def replication_seeds(seed: int, replications: int) -> list[np.random.SeedSequence]:
    """Independent streams per replication (numpy SeedSequence.spawn)."""
    return np.random.SeedSequence(seed).spawn(replications)


def resolve_profile(exp: Experiment, profile: str | Profile | None = None) -> Profile:
    if isinstance(profile, Profile):
        return profile.with_whatif(exp.whatif)
    return load_profile(profile or exp.machine.profile).with_whatif(exp.whatif)


def scheduler_params(exp: Experiment, profile: Profile, costs: Costs) -> SchedulerParams:
    """Scheduler costs from the profile, with the config's [machine] overrides on top."""
    sched = profile.scheduler
    m = exp.machine

    def sampler(override: float | None, cost) -> Callable[[], float]:
        if override is not None:
            return lambda: override
        return costs.sampler(cost)

    return SchedulerParams(
        tick_us=m.tick if m.tick is not None else sched.tick.fixed_us,
        slice_us=m.slice if m.slice is not None else sched.slice.fixed_us,
        wakeup_granularity_us=m.slice if m.slice is not None else sched.wakeup_granularity.fixed_us,
        wakeup_preemption=m.wakeup_preemption,
        context_switch=sampler(m.context_switch, sched.context_switch),
        idle_wake=sampler(m.idle_wake, sched.idle_wake),
        ipi_send=costs.sampler(profile.stages["ipi_send"]) if m.idle_wake is None else (lambda: 0.0),
        migration=sampler(m.migration, sched.migration),
    )


def run_replication(
    exp: Experiment, profile: Profile, replication: int, seed: np.random.SeedSequence
) -> ReplicationResult:
    """Simulate one replication: warm-up, then `duration` of measured time."""
    wall = time.perf_counter()
    rng = np.random.default_rng(seed)
    env = simpy.Environment()
    costs = Costs(profile, rng)
    machine = Machine(env, exp.machine.cpus, scheduler_params(exp, profile, costs))
    kernel = Kernel(machine, costs, profile.stack_cache_per_cpu, exp.workload.child)
    warmup = exp.experiment.warmup
    kernel.set_record_from(warmup)
    arrivals = None
    arr = exp.workload.arrivals
    if exp.workload.kind == "open" and arr not in ("poisson", "deterministic"):
        arrivals = load_arrivals(arr)
    workload = Workload(exp, kernel, rng, arrivals)
    workload.start()
    if warmup > 0.0:
        env.run(until=warmup)
    busy0 = machine.busy_us()
    end = warmup + exp.experiment.duration
    env.run(until=simpy.AnyOf(env, [workload.stop, env.timeout(end - warmup)]))
    end = env.now
    busy = machine.busy_us() - busy0
    records = workload.records
    in_flight = sum(1 for r in records if not (r.reap == r.reap))  # NaN: not reaped yet
    return ReplicationResult(
        replication=replication,
        records=records,
        window=(warmup, end),
        busy_us=busy,
        cpus=exp.machine.cpus,
        lock_waits={name: st.waits for name, st in kernel.lock_stats.items()},
        stalls=kernel.stalls,
        in_flight=in_flight,
        events=next(env._eid),  # events scheduled (SimPy's own counter)
        wall_s=time.perf_counter() - wall,
    )


def _one(args: tuple) -> ReplicationResult:
    return run_replication(*args)


def run_experiment(
    exp: Experiment,
    *,
    profile: str | Profile | None = None,
    seed: int | None = None,
    workers: int | None = 1,
    on_replication: Callable[[int, int], None] | None = None,
) -> RunResult:
    """Run every replication of `exp` and summarise. `workers` > 1 spreads replications over
    processes (None: one per CPU); results are identical whatever the worker count."""
    prof = resolve_profile(exp, profile)
    seed = exp.experiment.seed if seed is None else seed
    n = exp.experiment.replications
    jobs = [(exp, prof, i, s) for i, s in enumerate(replication_seeds(seed, n))]
    if workers is None:
        workers = os.cpu_count() or 1
    wall = time.perf_counter()
    results: list[ReplicationResult] = []
    if workers > 1 and n > 1:
        with ProcessPoolExecutor(max_workers=min(workers, n)) as pool:
            for i, res in enumerate(pool.map(_one, jobs)):
                results.append(res)
                if on_replication:
                    on_replication(i + 1, n)
    else:
        for i, job in enumerate(jobs):
            results.append(_one(job))
            if on_replication:
                on_replication(i + 1, n)
    df = records_frame(results)
    summary = summarize(results, df)
    summary["sim_wall_s"] = round(time.perf_counter() - wall, 3)
    summary = {"experiment": exp.experiment.name, "profile": prof.name, "seed": seed, **summary}
    return RunResult(exp, prof, seed, summary, df, results)
