"""Running experiments: one replication on its own random stream, all replications of an
experiment (in parallel across local cores), and the results they hand back.

An experiment is resolved once (`forksim.model.ModelParams`: the scheduler, what a creation copies,
the image, the arrivals) and each replication is a `forksim.simulation.Simulation` on its own
stream (`run_replication`); `build_simulation` builds one with observers, not started."""

from __future__ import annotations

import gc
import hashlib
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import numpy as np
import pandas as pd

from .config import Experiment
from .errors import ConfigError, ForksimError
from .kernel.costs import Costs
from .machine import SchedulerParams
from .metrics import ReplicationResult, records_frame, summarize
from .model import ModelParams, SchedulerSpec, scaled_slice_us
from .summary import Summary
from .profile import Profile, load_profile, profile_info
from .requests import requests_frame
from .store import warn_if_off_host
from .units import format_time_us
from .simulation import Observer, Simulation
from .work import MAX_EVENTS, WorkEstimate, check_work, estimate_work

if TYPE_CHECKING:
    from .executor import Executor

__all__ = [
    "RunResult",
    "Interrupted",
    "Simulation",
    "Observer",
    "ModelParams",
    "build_simulation",
    "run_experiment",
    "run_replication",
    "replication_seeds",
    "scheduler_params",
    "scaled_slice_us",
    "resolve_profile",
    "WorkEstimate",
    "estimate_work",
    "check_work",
    "nothing_measured",
    "MAX_EVENTS",
]


@dataclass
class RunResult:
    """Everything a run produced, including how it was made."""

    experiment: Experiment
    profile: Profile
    seed: int
    summary: dict[str, Any]
    records: pd.DataFrame
    replications: list[ReplicationResult] = field(repr=False)
    requests: pd.DataFrame | None = field(default=None, repr=False)  # server workloads (forksim.requests)

    def config_toml(self) -> str:
        """The fully resolved experiment as TOML (what `forksim run` writes to config.resolved.toml)."""
        from .layout import config_toml

        return config_toml(self.experiment)

    def write(self, directory: str | os.PathLike, format: str = "parquet") -> Path:
        """The run folder (forksim.layout): summary.json, the records (a server: its requests), the
        resolved config and the profile as used."""
        from .layout import write_run

        return write_run(directory, self, format)

    def metadata(self) -> dict[str, str]:
        """How the records were made, as the key-value metadata forks.parquet carries: the resolved
        config (TOML), the profile (name, host, sha256 of the profile as used, what-if applied) and
        the seed. `forksim.io.read_metadata` reads it back."""
        prov = self.profile.provenance
        profile = {"name": self.profile.name, "source": self.experiment.machine.profile,
                   "kernel": prov.get("kernel"), "cpu_model": prov.get("cpu_model"),
                   "sha256": hashlib.sha256(self.profile.model_dump_json().encode()).hexdigest()}
        return {"forksim.config": self.config_toml(), "forksim.profile": json.dumps(profile),
                "forksim.seed": str(self.seed)}

    def __repr__(self) -> str:  # the experiment, profile and records are a click away, not a dump
        s = self.summary
        return (f"RunResult(experiment={self.experiment.experiment.name!r}, seed={self.seed}, profile={self.profile.name!r}, "
                f"replications={s.get('replications')}, forks={s.get('forks')}, records={len(self.records)} rows)")

    def _repr_html_(self) -> str:
        from .display import run_html

        return run_html(self)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during `run_experiment`: `partial` holds the replications finished until then (their
    summary says `"partial": true`), or None when none had finished."""

    def __init__(self, partial: "RunResult | None"):
        super().__init__("interrupted")
        self.partial = partial


def replication_seeds(seed: int, replications: int) -> list[np.random.SeedSequence]:
    """Independent streams per replication (numpy SeedSequence.spawn)."""
    return np.random.SeedSequence(seed).spawn(replications)


def resolve_profile(exp: Experiment, profile: str | Profile | None = None) -> Profile:
    """The profile a run uses (`profile`, else the config's machine.profile) with its what-ifs; warns
    once (forksim.store.OffHostProfileWarning) when it was measured on another kind of host."""
    prof = profile if isinstance(profile, Profile) else load_profile(profile or exp.machine.profile)
    warn_if_off_host(prof)
    return prof.with_whatif(exp.whatif)


def scheduler_params(exp: Experiment, profile: Profile, costs: Costs) -> SchedulerParams:
    """Scheduler costs from the profile, with the config's [machine] overrides on top, on the stream of
    `costs` (forksim.model.SchedulerSpec: resolved once per experiment, bound per replication)."""
    return SchedulerSpec.of(exp, profile).bind(costs)


def build_simulation(exp: Experiment, profile: Profile, seed: np.random.SeedSequence,
                     observers: Iterable[Observer] = ()) -> Simulation:
    """The machine, kernel and workload of one replication, on the replication's own stream, with
    `observers` attached (forksim.simulation); not started."""
    return Simulation(ModelParams.of(exp, profile), seed, observers)


def run_replication(exp: Experiment, profile: Profile, replication: int, seed: np.random.SeedSequence,
                    params: ModelParams | None = None) -> ReplicationResult:
    """Simulate one replication: warm-up, then `duration` of measured time. `params`: the experiment
    resolved once for all its replications (`ModelParams.of(exp, profile)`, already checked by
    `check_work`); without them they are resolved (and the work checked) here."""
    if params is None:
        check_work(exp, profile)
        params = ModelParams.of(exp, profile)
    with _fewer_gc_passes():
        return Simulation(params, seed).run(replication)


@contextmanager
def _fewer_gc_passes() -> Iterator[None]:
    """A simulation allocates an event or two per step, nearly all short-lived and acyclic; at
    CPython's default threshold (700 allocations) the cyclic collector runs every few creations and
    walks every young object still in flight (hundreds of tasks on a big machine). 50,000 runs it
    ~70x less often: about 7% faster at 256 CPUs, a few MB more garbage between passes, same results."""
    old = gc.get_threshold()
    gc.set_threshold(50_000, 20, 100)
    try:
        yield
    finally:
        gc.set_threshold(*old)


def nothing_measured(exp: Experiment, summary: dict[str, Any]) -> str | None:
    """Why a summary answers nothing (no creation measured; a server: no request either), or None.
    A server that served requests but forked no snapshot in the window still answers (a baseline)."""
    if summary.get("forks"):
        return None
    if exp.workload.kind == "server" and (summary.get("request_latency_us") or {}).get("count"):
        return None
    what = "no creation and no request" if exp.workload.kind == "server" else "no creation"
    e = exp.experiment
    cap = (f", or raise experiment.max_creations ({e.max_creations}: it counts the warm-up's creations too)"
           if e.max_creations else "")
    return (f"{what} was measured in {format_time_us(e.duration)} after a warm-up of {format_time_us(e.warmup)} "
            f"({e.replications} replication(s)): lengthen experiment.duration so that it spans several creations{cap}")


def _one(args: tuple) -> ReplicationResult:
    return run_replication(*args)


def _call(args: tuple) -> ReplicationResult:
    """One job on an executor: `_one` looked up when it runs (a test may replace it)."""
    return _one(args)


def run_experiment(
    exp: Experiment,
    *,
    profile: str | Profile | None = None,
    seed: int | None = None,
    workers: int | None = 1,
    executor: "str | Executor" = "local",
    scheduler: str | None = None,
    on_replication: Callable[[int, int], None] | None = None,
    watch: tuple[str, ...] = (),
    decided: Callable[[dict[str, Any]], bool] | None = None,
) -> RunResult:
    """Run every replication of `exp` and summarise. `workers` > 1 spreads replications over
    processes (None: one per CPU) on `executor` ("local": a process pool; "dask": a LocalCluster of
    `workers` processes, or `scheduler`'s cluster; or an executor already made, which is left open:
    forksim.executor); results are identical whatever the executor and the worker count.
    `on_replication(done, total)` is called as each replication finishes. With `experiment.precision`:
    `watch` adds metrics (summary paths) the precision must reach, and `decided(summary)` may end the
    run sooner (forksim.precision)."""
    prof = resolve_profile(exp, profile)
    check_work(exp, prof)
    seed = exp.experiment.seed if seed is None else seed
    n = exp.experiment.replications
    params = ModelParams.of(exp, prof)  # resolved once (an arrivals file read once) for every replication
    if exp.experiment.precision is not None:
        return _run_to_precision(exp, prof, seed, params, workers, executor, scheduler, on_replication,
                                 watch, decided)
    jobs = [(exp, prof, i, s, params) for i, s in enumerate(replication_seeds(seed, n))]
    wall = time.perf_counter()
    results: list[ReplicationResult] = []
    try:
        _run_all(jobs, workers, results, on_replication, executor=executor, scheduler=scheduler)
    except KeyboardInterrupt:
        # Keep what finished: the replications are independent, so the finished ones are a valid
        # (smaller) experiment; the summary says it is partial.
        partial = _result(exp, prof, seed, results, wall, planned=n) if results else None
        raise Interrupted(partial) from None
    result = _result(exp, prof, seed, results, wall)
    empty = nothing_measured(exp, result.summary)
    if empty is not None:
        raise ConfigError(empty, source=exp.source, field="experiment.duration")
    return result


def _run_to_precision(exp: Experiment, prof: Profile, seed: int, params: ModelParams, workers: int | None,
                      executor: "str | Executor", scheduler: str | None,
                      on_replication: Callable[[int, int], None] | None, watch: tuple[str, ...] = (),
                      decided: Callable[[dict[str, Any]], bool] | None = None) -> RunResult:
    """`experiment.precision`: batches of `experiment.replications` until throughput's and fork() p99's
    95% intervals are narrow enough, or `experiment.max_replications` (forksim.precision)."""
    from .executor import make_executor
    from .precision import DEFAULT_METRICS, Precision, run_to_precision, warmup_check

    e = exp.experiment
    metrics = DEFAULT_METRICS + tuple(m for m in watch if m not in DEFAULT_METRICS)
    want = Precision(e.precision, metrics, e.max_replications, batch=e.replications, decided=decided)
    seeds = replication_seeds(seed, e.max_replications)  # replication i's stream whatever the cap
    ex = make_executor(executor, workers or None, scheduler, jobs=e.replications) if isinstance(executor, str) else executor
    wall = time.perf_counter()
    done: list[ReplicationResult] = []

    def batch(start: int, stop: int) -> list[ReplicationResult]:
        got: list[ReplicationResult] = []
        _run_all([(exp, prof, i, seeds[i], params) for i in range(start, stop)], workers, got, None, executor=ex)
        done.extend(got)
        if on_replication:
            on_replication(len(done), e.max_replications)
        return got

    try:
        results, _, stop = run_to_precision(want, batch, lambda res: _result(exp, prof, seed, res, wall).summary)
    except KeyboardInterrupt:
        raise Interrupted(_result(exp, prof, seed, done, wall, planned=len(done)) if done else None) from None
    finally:
        if isinstance(executor, str):
            ex.close()
    extra = {"precision": stop.as_dict(), "warmup_check": warmup_check(records_frame(results), e.warmup)}
    return _result(exp, prof, seed, results, wall, extra=extra)


def _run_all(jobs: list[tuple], workers: int | None, results: list[ReplicationResult],
             on_replication: Callable[[int, int], None] | None, *, executor: "str | Executor" = "local",
             scheduler: str | None = None) -> None:
    """Run the jobs on the executor (forksim.executor; in this process with one worker), keeping
    `results` in replication order as they finish (so an interrupted run keeps every finished one)."""
    from .executor import WorkersLost, make_executor

    n = len(jobs)
    ex = make_executor(executor, workers or None, scheduler, jobs=n) if isinstance(executor, str) else executor
    ok = False
    try:
        for i, (_, res) in enumerate(ex.run(_call, [(job[2], (job,)) for job in jobs])):
            results.append(res)
            results.sort(key=lambda r: r.replication)
            if on_replication:
                on_replication(i + 1, n)
        ok = True
    except WorkersLost as exc:  # a worker killed (out of memory, a signal)
        raise ForksimError(f"a worker process died ({exc}) after {len(results)} of {n} replications; "
                           "rerun, or with --workers 1 to run them in this process") from None
    finally:
        if isinstance(executor, str):  # made here: closed here
            ex.close(cancel=not ok)


def _scatter_used(exp: Experiment, prof: Profile) -> dict[str, Any]:
    """The image's scatter, where it came from, and whether the profile prices it at all (a stage with a
    scatter term: StageCost.per_pte_scatter_us and its curve) (summary.json `image_scatter`)."""
    value, origin = exp.workload.image.scatter_used(prof)
    return {"value": value, "from": origin, "priced": any(st.prices_scatter for st in prof.stages.values())}


def _spread_used(exp: Experiment, prof: Profile) -> dict[str, Any]:
    """The image's spread, where it came from, and whether the profile's cold terms grow with it (summary.json
    `image_spread`)."""
    value, origin = exp.workload.image.spread_used(prof)
    priced = prof.warmth is not None and any(t.per_spread for t in prof.warmth.stages.values())
    return {"value": value, "from": origin, "priced": priced}


def _result(exp: Experiment, prof: Profile, seed: int, results: list[ReplicationResult], wall: float,
            planned: int | None = None, extra: dict[str, Any] | None = None) -> RunResult:
    df = records_frame(results)
    fields = {**summarize(results, df), "experiment": exp.experiment.name, "profile": prof.name,
              "profile_used": profile_info(prof), "image_scatter": _scatter_used(exp, prof),
              "image_spread": _spread_used(exp, prof), "seed": seed, "sim_wall_s": round(time.perf_counter() - wall, 3)}
    if planned is not None:
        fields["partial"] = True  # interrupted: `replications` of `replications_planned` finished
        fields["replications_planned"] = planned
    fields.update(extra or {})
    summary = Summary.model_validate(fields).to_dict()  # the schema's order: identity fields first
    return RunResult(exp, prof, seed, summary, df, results, requests_frame(results))
