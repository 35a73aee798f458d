"""How fast the engine simulates, beside a floor: a bare SimPy M/M/c model.

`run_bench(mode)` measures, on the shipped `default` profile:

- standard scenarios (2, 16, 64 and 256 CPUs; RSS 0 and 1 GiB; a closed workload with one parent
  per CPU, and an open one with Poisson arrivals at about half the closed workload's throughput):
  simulated creations per wall-clock second of simulation, and events per creation;
- the floor for each: a `simpy.Resource` with c servers, one process per job, exponential service,
  Poisson arrivals (load 0.9 beside closed rows, 0.5 beside open ones), pushed through the same
  number of jobs in the same process (best of 3); and the ratio forksim / floor;
- 1,000,000 creations on a 256-CPU machine (closed, RSS 0): wall time and peak memory, in a fresh
  process (`resource.getrusage` high-water RSS, and the growth over the process's RSS before the
  run). In `quick` mode 100,000 creations are run: the time is scaled linearly, the memory by its
  growth from a 50,000-creation run;
- the same experiment's replications on 2 local processes vs 1 (`run_experiment(workers=2)` vs
  `workers=1`), as a speed ratio: the median over alternating pairs (5, or 3 in `quick` mode);
- time to precision: the base points of experiments/fork-storm.toml and experiments/cpu-scaling.toml
  (`PRECISION_RUNS`, the bench's own copies) run with `experiment.precision = 5%` as `forksim run
  --precision 5%` runs them (forksim.precision: batches of `replications` until throughput's and fork()
  p99's 95% intervals are within 5%): wall time, the replications used and why it stopped.

Every forksim figure comes from `runner.run_experiment`, so each replication is built and run as
`forksim run` runs it (one `forksim.simulation.Simulation`); `events_per_creation` is SimPy's own
event counter over the replication.

The figures are measurements, never assertions; the targets are printed beside them.
"""

from __future__ import annotations

import multiprocessing
import os
import platform
import random
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

import simpy

__all__ = ["MODES", "BenchMode", "run_bench", "floor_rate", "TARGETS"]

GiB = 1024**3


@dataclass(frozen=True)
class BenchMode:
    name: str
    creations: int  # per scenario
    big_target: int  # creations the "1M" figure is about
    big_run: int  # creations actually run for it (extrapolated when smaller)
    par_replications: int
    par_creations: int  # per replication
    par_repeats: int = 3  # 1-worker / 2-worker pairs, alternating (the median ratio is the figure)
    precision: float = 0.05  # time to precision: the relative half-width asked for
    precision_cap: int = 200  # ... and the replication cap (experiment.max_replications' default)
    cpus: tuple[int, ...] = (2, 16, 64, 256)
    rss: tuple[int, ...] = (0, GiB)


MODES = {
    "full": BenchMode("full", creations=20_000, big_target=1_000_000, big_run=1_000_000,
                      par_replications=8, par_creations=10_000, par_repeats=5),
    "quick": BenchMode("quick", creations=4_000, big_target=1_000_000, big_run=100_000,
                       par_replications=8, par_creations=10_000),
    # for tests: every row and figure, in seconds (figures meaningless)
    "tiny": BenchMode("tiny", creations=300, big_target=1_000_000, big_run=2_000,
                      par_replications=2, par_creations=300, par_repeats=1, precision=0.5, precision_cap=4),
}

# Time to precision: the base point (no sweep) of each experiment file, as the bench's own copy (the
# bench runs from an installed package too, where experiments/ is absent); tests/test_bench.py checks
# that they match the files.
PRECISION_RUNS: dict[str, dict[str, Any]] = {
    "fork-storm": {
        "experiment": {"name": "fork-storm", "duration": "2s", "warmup": "0.2s", "replications": 5, "seed": 42},
        "machine": {"cpus": 2, "profile": "default"},
        "workload": {"kind": "closed", "parents": 4, "think_time": "0us", "image": {"rss": "64MiB", "vmas": 40},
                     "child": {"clone": "fork", "lifetime": "100us"}},
    },
    "cpu-scaling": {
        "experiment": {"name": "cpu-scaling", "duration": "20ms", "warmup": "5ms", "replications": 3, "seed": 42},
        "machine": {"cpus": 2, "profile": "default"},
        "workload": {"kind": "closed", "parents": 2, "image": {"rss": "4MiB", "vmas": 30},
                     "child": {"clone": "fork", "lifetime": "0us"}},
    },
}

TARGETS = {
    "floor_ratio_2cpu_storm": (">=", 0.5, "2-CPU fork storm (closed, RSS 0) / floor"),
    "million_wall_s": ("<", 60.0, "1M creations on 256 CPUs: wall s"),
    "million_peak_mb": ("<", 500.0, "1M creations on 256 CPUs: peak MB"),
    "parallel_speedup": (">=", 1.8, "2 workers / 1 worker"),
    "precision_fork_storm_s": ("<", 60.0, "fork-storm to 5% precision: wall s"),
}


def _met(key: str, value: float | None) -> bool | None:
    if value is None:
        return None
    op, target, _ = TARGETS[key]
    return value >= target if op == ">=" else value < target


# ------------------------------------------------------------------ the floor


def floor_rate(c: int, jobs: int, rho: float = 0.9, seed: int = 1, repeat: int = 3) -> dict[str, float]:
    """A bare SimPy M/M/c queue (Resource with c servers, a process per job, exponential service,
    Poisson arrivals at load `rho`) pushed through `jobs` jobs: jobs per wall second (the best of
    `repeat` runs: the floor is cheap, and a shared machine makes single runs noisy), events per job."""
    runs = [_floor_once(c, jobs, rho, seed) for _ in range(max(1, repeat))]
    return max(runs, key=lambda r: r["rate"])


def _floor_once(c: int, jobs: int, rho: float, seed: int) -> dict[str, float]:
    rnd = random.Random(seed)
    env = simpy.Environment()
    servers = simpy.Resource(env, capacity=c)
    mu = 1.0
    lam = rho * c * mu
    expo = rnd.expovariate

    def job(env):
        with servers.request() as req:
            yield req
            yield env.timeout(expo(mu))

    def source(env):
        for _ in range(jobs):
            yield env.timeout(expo(lam))
            env.process(job(env))

    env.process(source(env))
    t = time.perf_counter()
    env.run()
    wall = time.perf_counter() - t
    return {"jobs": jobs, "wall_s": wall, "rate": jobs / wall, "events_per_job": next(env._eid) / jobs}


# ------------------------------------------------------------------ forksim runs


def scenario_experiment(cpus: int, rss: int, kind: str, creations: int, *, rate: float | None = None,
                        replications: int = 1, seed: int = 42, parents: int | None = None):
    """The experiment of one bench row: fork, a child that exits at once, default profile."""
    from .config import parse_config
    from .kernel.flags import FORK

    workload: dict[str, Any] = {
        "kind": kind,
        "parents": parents or cpus,
        "image": {"rss": rss},
        "child": {"clone": FORK, "lifetime": "0us"},
    }
    duration = "1000000s"  # closed: max_creations ends the run
    if kind == "open":
        workload["rate"] = rate
        # the arrivals of `creations` requests and some slack (work.check_work counts arrivals)
        duration = f"{1.5 * creations / rate + 0.1:.6g}s"
    return parse_config({
        "experiment": {"name": f"bench-{cpus}cpu-{rss}-{kind}", "duration": duration, "warmup": "0s",
                       "replications": replications, "seed": seed, "max_creations": creations},
        "machine": {"cpus": cpus, "profile": "default"},
        "workload": workload,
    }, resolved=True)  # rss in bytes, the rate per second


def _reaped(rep) -> int:
    return int(rep.records["reap"].notna().sum())


def run_scenario(profile, cpus: int, rss: int, kind: str, creations: int, rate: float | None = None) -> dict[str, Any]:
    from .runner import run_experiment

    exp = scenario_experiment(cpus, rss, kind, creations, rate=rate)
    res = run_experiment(exp, profile=profile, workers=1)
    rep = res.replications[0]
    n = _reaped(rep)
    wall = rep.wall_s
    return {
        "cpus": cpus, "rss": rss, "workload": kind, "rate_per_s": rate,
        "creations": n, "wall_s": wall, "creations_per_s": n / wall if wall > 0 else None,
        "events_per_creation": res.summary["events_per_creation"],
        "sim_throughput_per_s": res.summary["throughput_per_s"]["mean"],
    }


def _million_child(conn, creations: int, cpus: int) -> None:
    """In a fresh process: run `creations` on `cpus` CPUs; send wall times and memory back."""
    try:
        from .runner import resolve_profile, run_experiment

        exp = scenario_experiment(cpus, 0, "closed", creations)
        profile = resolve_profile(exp)
        base_kb = _rss_now_kb()
        t = time.perf_counter()
        res = run_experiment(exp, profile=profile, workers=1)
        total = time.perf_counter() - t
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rep = res.replications[0]
        conn.send({"creations": _reaped(rep), "sim_wall_s": rep.wall_s, "total_wall_s": total,
                   "events_per_creation": res.summary["events_per_creation"],
                   "base_mb": base_kb / 1024, "peak_mb": peak_kb / 1024})
    except BaseException as exc:  # pragma: no cover - reported, not raised
        conn.send({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        conn.close()


def _rss_now_kb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024
    except (OSError, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _million_run(creations: int, cpus: int) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")  # a clean process: its peak RSS is this run's
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_million_child, args=(child, creations, cpus))
    proc.start()
    child.close()
    try:
        out = parent.recv()
    except EOFError:
        out = {"error": f"the measuring process died (exit code {proc.exitcode})"}
    proc.join()
    return out


def run_million(mode: BenchMode, cpus: int = 256) -> dict[str, Any]:
    """1M creations on `cpus` CPUs in a fresh process: wall time and peak RSS. When fewer are run
    (quick mode), time scales linearly and memory by its growth between a half-size and a full-size
    run (a fixed part, such as the first blocks of each table, must not be multiplied)."""
    out = _million_run(mode.big_run, cpus)
    out.update({"cpus": cpus, "target_creations": mode.big_target, "run_creations": mode.big_run,
                "extrapolated": mode.big_run < mode.big_target})
    if "error" in out:
        out.update({"wall_s": None, "peak_mb": None})
        return out
    k = mode.big_target / max(1, out["creations"])
    out["wall_s"] = out["total_wall_s"] * k
    out["sim_wall_s_scaled"] = out["sim_wall_s"] * k
    out["measured_peak_mb"] = out["peak_mb"]
    if out["extrapolated"]:
        half = _million_run(mode.big_run // 2, cpus)
        if "error" in half:
            out.update({"peak_mb": None, "error": half["error"]})
            return out
        per_creation = (out["peak_mb"] - half["peak_mb"]) / max(1, out["creations"] - half["creations"])
        out["peak_mb"] = out["peak_mb"] + max(0.0, per_creation) * (mode.big_target - out["creations"])
        out["half_run_peak_mb"] = half["peak_mb"]
    return out


def run_parallel(profile, mode: BenchMode, cpus: int = 16) -> dict[str, Any]:
    """The same replications with 1 worker and with 2, alternately `par_repeats` times: the speed-up is
    the median of the pairs' ratios (one pair on a shared 2-core machine can be off by 20%)."""
    from .runner import run_experiment

    exp = scenario_experiment(cpus, 0, "closed", mode.par_creations, replications=mode.par_replications)
    walls: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(mode.par_repeats):
        for workers in (1, 2):
            t = time.perf_counter()
            run_experiment(exp, profile=profile, workers=workers)
            walls[workers].append(time.perf_counter() - t)
    ratios = sorted(a / b for a, b in zip(walls[1], walls[2]) if b > 0)
    return {"cpus": cpus, "replications": mode.par_replications, "creations_per_replication": mode.par_creations,
            "local_cores": os.cpu_count(), "repeats": mode.par_repeats,
            "wall_1_s": statistics.median(walls[1]), "wall_2_s": statistics.median(walls[2]),
            "speedups": ratios, "speedup": statistics.median(ratios) if ratios else None}


def run_to_precision_timed(mode: BenchMode, name: str, workers: int | None = None) -> dict[str, Any]:
    """`forksim run` of PRECISION_RUNS[name] at `mode.precision`: wall time (building, every batch and
    the summaries), replications used, the precision reached per metric and why it stopped."""
    import copy

    from .config import parse_config
    from .runner import run_experiment

    cfg = copy.deepcopy(PRECISION_RUNS[name])
    cfg["experiment"].update({"precision": mode.precision, "max_replications": mode.precision_cap})
    exp = parse_config(cfg, source=f"bench:{name}")
    t = time.perf_counter()
    res = run_experiment(exp, workers=workers)
    wall = time.perf_counter() - t
    stop = res.summary["precision"]
    return {"experiment": name, "target": mode.precision, "workers": workers or os.cpu_count(), "wall_s": wall,
            "replications": stop["replications"], "reached": stop["reached"], "stopped": stop["stopped"],
            "creations": int(res.summary["forks"])}


# ------------------------------------------------------------------ the whole bench


def plan(mode: BenchMode) -> list[tuple[int, int, str]]:
    return [(c, r, k) for c in mode.cpus for r in mode.rss for k in ("closed", "open")]


def run_bench(mode: str | BenchMode = "full", progress: Callable[[str, float], None] | None = None) -> dict[str, Any]:
    """Run the benchmark; `progress(label, weight)` is called before each step (weights sum to 1)."""
    from .runner import resolve_profile

    m = MODES[mode] if isinstance(mode, str) else mode
    note = progress or (lambda label, weight: None)
    profile = resolve_profile(scenario_experiment(2, 0, "closed", 1))
    steps = plan(m)
    # rough shares of the wall time: scenarios, the big run, the parallel pair, time to precision
    w_rows, w_big, w_par, w_ttp = 0.4, 0.3, 0.1, 0.2
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    closed_thr: dict[tuple[int, int], float] = {}
    for cpus, rss, kind in steps:
        note(f"{cpus} CPUs, RSS {_size(rss)}, {kind}", w_rows / len(steps))
        rate = None
        if kind == "open":
            rate = max(1.0, 0.5 * (closed_thr.get((cpus, rss)) or 1000.0))
        row = run_scenario(profile, cpus, rss, kind, m.creations, rate)
        if kind == "closed":
            closed_thr[(cpus, rss)] = row["sim_throughput_per_s"]
        fl = floor_rate(cpus, row["creations"], rho=0.9 if kind == "closed" else 0.5)
        row["floor_per_s"] = fl["rate"]
        row["floor_events_per_job"] = fl["events_per_job"]
        row["ratio"] = row["creations_per_s"] / fl["rate"] if row["creations_per_s"] else None
        rows.append(row)
    note(f"{m.big_run:,} creations on 256 CPUs (fresh process)", w_big)
    million = run_million(m)
    note("replications: 2 workers vs 1", w_par)
    par = run_parallel(profile, m)
    ttp = []
    for name in PRECISION_RUNS:
        note(f"{name} to {m.precision:.0%} precision", w_ttp / len(PRECISION_RUNS))
        ttp.append(run_to_precision_timed(m, name))
    storm = next(r for r in rows if r["cpus"] == 2 and r["rss"] == 0 and r["workload"] == "closed")
    figures = {
        "floor_ratio_2cpu_storm": storm["ratio"],
        "million_wall_s": million.get("wall_s"),
        "million_peak_mb": million.get("peak_mb"),
        "parallel_speedup": par["speedup"],
        "precision_fork_storm_s": ttp[0]["wall_s"] if m.precision == 0.05 else None,
    }
    targets = {k: {"what": TARGETS[k][2], "value": v, "target": f"{TARGETS[k][0]} {TARGETS[k][1]:g}", "met": _met(k, v)}
               for k, v in figures.items()}
    return {
        "mode": m.name,
        "python": platform.python_version(),
        "simpy": simpy.__version__ if hasattr(simpy, "__version__") else None,
        "local_cores": os.cpu_count(),
        "scenarios": rows,
        "million": million,
        "parallel": par,
        "time_to_precision": ttp,
        "targets": targets,
        "bench_wall_s": time.perf_counter() - t0,
    }


def _size(rss: int) -> str:
    return "0" if rss == 0 else (f"{rss // GiB}GiB" if rss % GiB == 0 else f"{rss >> 20}MiB")


if __name__ == "__main__":  # pragma: no cover
    import json

    print(json.dumps(run_bench(sys.argv[1] if len(sys.argv) > 1 else "quick"), indent=1, default=str))
