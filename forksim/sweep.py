"""Sweeps: a grid of experiments from a config's `[sweep]` table, run as point x replication tasks on
a local process pool or a dask.distributed cluster, recorded point by point so a killed sweep resumes.

The grid is the cartesian product of the `[sweep]` axes, in the table's order (the last axis varies
fastest). An axis is one dotted key with a list of values, or linked keys that move together:
`"machine.cpus,workload.parents" = [[2, 2], [4, 4]]`.

Every (point, replication) is one task: `runner.run_replication` with the replication's stream from
`runner.replication_seeds(point seed, replications)`, so a result depends only on the point's
config and the replication index, never on the executor, the worker count or the order tasks finish.

Output folder:

- `points/<point-id>/summary.json`: `metrics.summarize` over the point's replications (the
  summary.json contract, plus the point's overrides), and `points/<point-id>/result.json`: the
  point's table rows. Both are written atomically when the point's last replication is in;
  `result.json` marks the point finished. The point id holds a digest of the resolved experiment and
  profile, so `--resume` reuses a point only if nothing that made it has changed.
- `results.parquet` (or `.csv`): one tidy row per point x replication: `point`, the swept keys
  (resolved: bytes, microseconds, per second), `replication`, `seed`, `error`, then the metrics as
  summary paths (`throughput_per_s.mean`, `fork_latency_us.p99`, `lock_wait_us.tasklist_lock.mean`,
  `cpu_utilization`, ...), each from that replication alone. Wall-clock times are left out, so the
  table of a resumed sweep equals an uninterrupted one.
- `sweep.json`: the grid (point ids and overrides) and how the sweep was run.

A failing point (an unstable open workload, a bad what-if, a crash) is recorded: its rows carry the
error and no metrics, and the sweep goes on. The sweep itself fails (`SweepError`: the CLI exits
non-zero) when its worker processes die (killed, out of memory) or when every point failed: the
points finished until then stay in the folder for `--resume`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd

from .config import Experiment, config_value, experiment_to_toml_dict, load_experiment, sweep_overrides
from .display import SweepTable
from .errors import ConfigError, ForksimError, SweepError
from .io import write_json, write_table
from .metrics import ReplicationResult, summarize
from .profile import Profile, profile_info
from .summary import FLAT_SKIP
from .runner import nothing_measured, replication_seeds, resolve_profile, run_replication

__all__ = ["sweep", "SweepPoint", "grid_points", "EXECUTORS", "flatten_summary"]

EXECUTORS = ("local", "dask")
# The summary fields a flat row leaves out (who and how, wall-clock times, CIs): from summary.json's schema.
_SKIP = FLAT_SKIP


# ------------------------------------------------------------------ the grid


@dataclass
class SweepPoint:
    """One point of the grid: its overrides, the resolved experiment and profile, its id."""

    index: int
    overrides: dict[str, Any]
    values: dict[str, Any]  # the swept keys' resolved values (model units), the table's columns
    exp: Experiment | None
    profile: Profile | None
    id: str
    error: str | None = None
    seeds: list[np.random.SeedSequence] = field(default_factory=list, repr=False)

    @property
    def replications(self) -> int:
        return self.exp.experiment.replications if self.exp is not None else 0


def _axes(exp: Experiment) -> list[tuple[str, list[Any]]]:
    return list(exp.sweep.items())


def swept_keys(exp: Experiment) -> list[str]:
    """The dotted keys the grid sets, linked keys expanded."""
    return [k.strip() for axis, _ in _axes(exp) for k in axis.split(",")]


def _digest(exp: Experiment, profile: Profile | None, overrides: dict[str, Any]) -> str:
    data = experiment_to_toml_dict(exp)
    data.pop("sweep", None)
    blob = json.dumps(
        {"experiment": data, "profile": profile.model_dump(mode="json") if profile is not None else None,
         "overrides": overrides},
        sort_keys=True, default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def grid_points(exp: Experiment, profile: str | Profile | None = None) -> list[SweepPoint]:
    """The sweep's points in grid order (an experiment without `[sweep]` is one point)."""
    axes = _axes(exp)
    combos = itertools.product(*[values for _, values in axes]) if axes else [()]
    base = exp.model_copy(update={"sweep": {}})
    points = []
    for index, combo in enumerate(combos):
        overrides: dict[str, Any] = {}
        for (axis, _), value in zip(axes, combo):
            overrides.update(sweep_overrides(axis, value, source=exp.source))
        pexp = base.with_overrides(overrides) if overrides else base
        pexp = pexp.model_copy(update={"sweep": {}})
        prof: Profile | None = None
        error = None
        try:
            prof = resolve_profile(pexp, profile)
        except ForksimError as exc:
            error = f"{exc.__class__.__name__}: {exc}"
        values = {k: config_value(pexp, k, v) for k, v in overrides.items()}
        pid = f"{index:04d}-{_digest(pexp, prof, overrides)}"
        seeds = replication_seeds(pexp.experiment.seed, pexp.experiment.replications)
        points.append(SweepPoint(index, overrides, values, pexp, prof, pid, error, seeds))
    return points


# ------------------------------------------------------------------ one task


@dataclass
class _Failure:
    replication: int
    error: str


def _run_task(exp: Experiment, profile: Profile, replication: int, seed: np.random.SeedSequence):
    """One replication of one point, on any worker; a failure comes back as a value."""
    try:
        return run_replication(exp, profile, replication, seed)
    except Exception as exc:  # recorded in the table, not fatal to the sweep
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        where = ""
        if not isinstance(exc, ForksimError):
            tb = traceback.extract_tb(exc.__traceback__)
            if tb:
                where = f" at {Path(tb[-1].filename).name}:{tb[-1].lineno}"
        return _Failure(replication, f"{exc.__class__.__name__}: {text}{where}")


# ------------------------------------------------------------------ rows and summaries


def _finite(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (np.floating, np.integer)):
        return _finite(v.item())
    return v


def flatten_summary(summary: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A summary as flat columns named by their paths ('fork_latency_us.p99'); CIs and wall-clock
    times are left out."""
    out: dict[str, Any] = {}
    for key, value in summary.items():
        if key in _SKIP:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten_summary(value, f"{name}."))
        elif isinstance(value, bool):
            out[name] = int(value)
        elif isinstance(value, (int, float, np.integer, np.floating)) or value is None:
            out[name] = _finite(value)
    return out


def _clean_json(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean_json(v) for v in obj]
    return _finite(obj)


def _point_rows(point: SweepPoint, results: list[Any]) -> list[dict[str, Any]]:
    seed = point.exp.experiment.seed if point.exp is not None else None
    rows = []
    for i, res in enumerate(results):
        row: dict[str, Any] = {"point": point.id, **point.values, "replication": i, "seed": seed, "error": None}
        if isinstance(res, ReplicationResult):
            row.update(flatten_summary(summarize([res])))
        else:
            row["error"] = res.error if isinstance(res, _Failure) else str(res)
        rows.append(row)
    return rows


def _point_summary(point: SweepPoint, results: list[Any]) -> dict[str, Any]:
    ok = [r for r in results if isinstance(r, ReplicationResult)]
    errors = [r.error if isinstance(r, _Failure) else str(r) for r in results if not isinstance(r, ReplicationResult)]
    head = {
        "experiment": point.exp.experiment.name if point.exp else None,
        "point": point.id,
        "overrides": point.overrides,
        "profile": point.profile.name if point.profile else None,
        "profile_used": profile_info(point.profile) if point.profile else None,
        "seed": point.exp.experiment.seed if point.exp else None,
    }
    if not ok:
        return {**head, "error": errors[0] if errors else "no replication ran", "errors": errors}
    summary = {**head, **summarize(ok)}
    empty = nothing_measured(point.exp, summary)
    if empty is not None:
        return {**head, "error": f"experiment.duration: {empty}", "errors": errors}
    if errors:
        summary["errors"] = errors
    return summary


def _columns(points: list[SweepPoint], rows: list[dict[str, Any]]) -> list[str]:
    keys: list[str] = []
    for p in points:
        for k in p.overrides:
            if k not in keys:
                keys.append(k)
    head = ["point", *keys, "replication", "seed", "error"]
    cols = list(head)
    seen = set(cols)
    for row in rows:
        for k in row:
            if k not in seen:
                seen.add(k)
                cols.append(k)
    return cols


def _table(points: list[SweepPoint], rows_by_point: dict[str, list[dict[str, Any]]]) -> pd.DataFrame:
    rows = [r for p in points for r in rows_by_point.get(p.id, [])]
    cols = _columns(points, rows)
    df = pd.DataFrame.from_records(rows, columns=cols)
    for col in ("error", "point"):
        df[col] = df[col].astype(object)
    for col in cols[1:cols.index("replication")]:
        kinds = {type(v) for v in df[col] if v is not None and not (isinstance(v, float) and math.isnan(v))}
        if len(kinds) > 1 and not kinds <= {int, float}:  # e.g. 0.5 and "uniform": one text column
            df[col] = [None if v is None else str(v) for v in df[col]]
    return df


# ------------------------------------------------------------------ executors


class _WorkersLost(Exception):
    """The executor lost its workers: no result can come back for the tasks still out."""


class _Local:
    """A local process pool (or in-process with one worker)."""

    def __init__(self, workers: int):
        self.workers = workers
        self.pool = None
        if workers > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["forksim.sweep"])
            self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)

    def run(self, jobs: list[tuple[Any, tuple]]) -> Iterator[tuple[Any, Any]]:
        """Yield (tag, result) as tasks finish."""
        if self.pool is None:
            for tag, args in jobs:
                yield tag, _run_task(*args)
            return
        from concurrent.futures import as_completed

        futures = {self.pool.submit(_run_task, *args): tag for tag, args in jobs}
        for fut in as_completed(futures):
            try:
                res = fut.result()
            except Exception as exc:  # a worker died (BrokenProcessPool): _run_task itself never raises
                raise _WorkersLost(f"{exc.__class__.__name__}: {exc}") from None
            yield futures[fut], res

    def close(self, cancel: bool = False) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=not cancel, cancel_futures=cancel)


class _Dask:
    """dask.distributed: a LocalCluster of worker processes, or the scheduler at an address."""

    def __init__(self, workers: int, scheduler: str | None):
        try:
            import logging

            from distributed import Client, LocalCluster
        except ImportError:  # pragma: no cover - a dependency
            raise ConfigError("needs dask.distributed (pip install 'dask[distributed]')", source="--executor dask") from None
        self.cluster = None
        if scheduler:
            try:
                self.client = Client(scheduler, timeout="20s")
            except (OSError, TimeoutError, ValueError) as exc:
                raise ConfigError(f"cannot reach the dask scheduler: {exc}", source="--scheduler") from None
        else:
            self.cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                        dashboard_address=None, silence_logs=logging.ERROR)
            self.client = Client(self.cluster)

    def run(self, jobs: list[tuple[Any, tuple]]) -> Iterator[tuple[Any, Any]]:
        from distributed import as_completed

        futures = {}
        for tag, args in jobs:
            fut = self.client.submit(_run_task, *args, key=f"forksim-{tag[0]}-r{tag[1]}-{os.urandom(4).hex()}",
                                     pure=False)
            futures[fut] = tag
        for fut in as_completed(list(futures)):
            try:
                res = fut.result()
            except Exception as exc:  # a worker lost (KilledWorker), a lost scheduler: _run_task never raises
                raise _WorkersLost(f"{exc.__class__.__name__}: {exc}") from None
            yield futures[fut], res
            fut.release()

    def close(self, cancel: bool = False) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


# ------------------------------------------------------------------ the sweep


def _load(exp_or_path: Experiment | str | Path, overrides: dict[str, Any] | None) -> Experiment:
    if isinstance(exp_or_path, Experiment):
        return exp_or_path.with_overrides(overrides) if overrides else exp_or_path
    return load_experiment(exp_or_path, overrides)


def _finished(out: Path, point: SweepPoint) -> list[dict[str, Any]] | None:
    path = out / "points" / point.id / "result.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if data.get("id") != point.id or not isinstance(data.get("rows"), list):
        return None
    return data["rows"]


def _check_args(executor: str, format: str, workers: int | None, scheduler: str | None, resume: bool,
                out: str | Path | None) -> None:
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r} (one of: {', '.join(EXECUTORS)})", source="--executor")
    if format not in ("parquet", "csv"):
        raise ConfigError(f"unknown format {format!r} (parquet or csv)", source="--format")
    if workers is not None and workers < 1:
        raise ConfigError("must be 1 or more", source="--workers")
    if scheduler and executor != "dask":
        raise ConfigError("--scheduler needs --executor dask", source="--scheduler")
    if resume and out is None:
        raise ConfigError("--resume needs the output folder of the sweep to resume (--out)", source="--resume")


def _reuse(out: Path, points: list[SweepPoint], rows_by_point: dict[str, list[dict[str, Any]]],
           summaries: dict[str, dict[str, Any]],
           on_point: Callable[[SweepPoint, dict[str, Any], bool], None] | None) -> list[str]:
    """Take the rows and summaries of the points finished in `out` into `rows_by_point` and
    `summaries`; returns their ids."""
    reused = []
    for p in points:
        rows = _finished(out, p)
        if rows is None:
            continue
        rows_by_point[p.id] = rows
        reused.append(p.id)
        try:
            summaries[p.id] = json.loads((out / "points" / p.id / "summary.json").read_text())
        except (OSError, ValueError):
            summaries[p.id] = {}
        if on_point is not None:
            on_point(p, summaries[p.id], True)
    return reused


def _check_resumable(out: Path, points: list[SweepPoint]) -> None:
    """Refuse to resume into a folder that holds another grid's points (a changed config, --set or
    --profile): the folder would end up with two sweeps' points side by side."""
    try:
        manifest = json.loads((out / "sweep.json").read_text())
        before = [p["id"] for p in manifest["points"]]
    except (OSError, ValueError, KeyError, TypeError):
        return  # nothing to resume (or not a sweep folder): every point is computed
    now = {p.id for p in points}
    foreign = [pid for pid in before if pid not in now]
    if foreign:
        raise ConfigError(
            f"{out} holds a sweep whose points differ from this one ({len(foreign)} of its {len(before)} points, "
            f"e.g. {foreign[0]}, are not in this grid: the config, a --set, --seed or --profile changed since); "
            "resume with the same config and flags, or write this sweep to a new --out", source="--resume")


def _progress_bar(name: str, executor: str, replications: int, points: str):
    """A rich progress bar that counts replications (the tasks) and, beside them, finished points."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("replications, {task.fields[points]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                   transient=False)
    bar.start()
    return bar, bar.add_task(f"sweep {name} ({executor})", total=replications, points=points)


def _run_points(ex, runnable: list[SweepPoint], npoints: int, finish: Callable[[SweepPoint, list[Any]], None],
                bar) -> int:
    """Run every replication of `runnable` on `ex`, finishing each point as its last one comes in;
    returns how many points finished. Raises `_WorkersLost` when the executor loses its workers."""
    jobs = [((p.index, i), (p.exp, p.profile, i, p.seeds[i])) for p in runnable for i in range(p.replications)]
    pending = {p.index: [None] * p.replications for p in runnable}
    left = {p.index: p.replications for p in runnable}
    by_index = {p.index: p for p in runnable}
    finished = 0
    for (index, rep), res in ex.run(jobs):
        pending[index][rep] = res
        left[index] -= 1
        if left[index] == 0:
            finish(by_index[index], pending.pop(index))
            finished += 1
        if bar is not None:
            bar[0].update(bar[1], advance=1, points=f"points {npoints - len(runnable) + finished}/{npoints}")
    return finished


def _all_failed(rows_by_point: dict[str, list[dict[str, Any]]]) -> str | None:
    """The first error when no replication of any point produced a result (None otherwise)."""
    rows = [r for rs in rows_by_point.values() for r in rs]
    if not rows or any(r.get("error") is None for r in rows):
        return None
    return str(rows[0]["error"])


def sweep(
    exp_or_path: Experiment | str | Path,
    *,
    out: str | Path | None = None,
    executor: str = "local",
    scheduler: str | None = None,
    workers: int | None = None,
    resume: bool = False,
    overrides: dict[str, Any] | None = None,
    profile: str | Profile | None = None,
    format: str = "parquet",
    progress: bool = False,
    on_point: Callable[[SweepPoint, dict[str, Any], bool], None] | None = None,
) -> pd.DataFrame:
    """Run the grid of a config's `[sweep]` table; return the tidy table (one row per point x
    replication). With `out`, write the folder described in this module's docstring; `resume`
    reuses the points finished there (and refuses a folder holding another grid's points).
    `executor`: "local" (a process pool of `workers`, default one per CPU) or "dask" (a LocalCluster
    of `workers` processes, or `scheduler`'s cluster). `on_point(point, summary, reused)` is called
    as each point is finished. Raises `SweepError` when the workers die or every point fails.

    The returned frame's `attrs` say which point ids were computed and which reused."""
    _check_args(executor, format, workers, scheduler, resume, out)
    exp = _load(exp_or_path, overrides)
    points = grid_points(exp, profile)
    outp = Path(out) if out is not None else None
    if resume and outp is not None:
        _check_resumable(outp, points)

    rows_by_point: dict[str, list[dict[str, Any]]] = {}
    summaries: dict[str, dict[str, Any]] = {}  # each point's summary.json (the notebook view shows them)
    reused = _reuse(outp, points, rows_by_point, summaries, on_point) if (resume and outp is not None) else []
    todo = [p for p in points if p.id not in rows_by_point]
    if outp is not None:
        write_json(outp / "sweep.json", _clean_json({
            "experiment": exp.experiment.name,
            "config": exp.source,
            "keys": swept_keys(exp),
            "replications": exp.experiment.replications,
            "points": [{"id": p.id, "overrides": p.overrides} for p in points],
            "executor": executor,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }))

    def finish(p: SweepPoint, results: list[Any]) -> None:
        rows = _clean_json(_point_rows(p, results))
        summary = _clean_json(_point_summary(p, results))
        for row in rows if summary.get("error") else []:  # e.g. a point that measured no creation
            row["error"] = row["error"] or summary["error"]
        if outp is not None:
            pdir = outp / "points" / p.id
            write_json(pdir / "summary.json", summary)
            write_json(pdir / "result.json", {"id": p.id, "index": p.index, "overrides": _clean_json(p.overrides),
                                              "rows": rows})
        rows_by_point[p.id] = rows
        summaries[p.id] = summary
        if on_point is not None:
            on_point(p, summary, False)

    # Points that cannot run at all (a bad what-if or profile) are recorded at once.
    runnable = []
    for p in todo:
        if p.error is not None or p.profile is None:
            finish(p, [_Failure(i, p.error or "no profile") for i in range(p.replications)])
        else:
            runnable.append(p)
    if runnable:
        _execute(exp, runnable, len(points), finish, executor, scheduler, workers, progress, outp)

    df = SweepTable(_table(points, rows_by_point), summaries=summaries)
    df.attrs["computed"] = [p.id for p in todo]
    df.attrs["reused"] = reused
    if outp is not None:
        write_table(outp / f"results.{format}", df)
    first = _all_failed(rows_by_point)
    if first is not None:
        where = f" (recorded in {outp}/)" if outp is not None else ""
        raise SweepError(f"every point of the sweep failed{where}; the first: {first}")
    return df


def _execute(exp: Experiment, runnable: list[SweepPoint], npoints: int, finish, executor: str,
             scheduler: str | None, workers: int | None, progress: bool, outp: Path | None) -> None:
    """Run the runnable points' replications on the executor; a lost worker pool is a `SweepError`
    that says what was kept."""
    njobs = sum(p.replications for p in runnable)
    nworkers = workers or (os.cpu_count() or 1)
    nworkers = max(1, min(nworkers, njobs)) if executor == "local" else nworkers
    bar = _progress_bar(exp.experiment.name, executor, njobs, f"points {npoints - len(runnable)}/{npoints}") \
        if progress else None
    ex = None
    ok = False
    finished = 0

    def counted(p: SweepPoint, results: list[Any]) -> None:
        nonlocal finished
        finish(p, results)
        finished += 1

    try:
        ex = _Local(nworkers) if executor == "local" else _Dask(nworkers, scheduler)
        _run_points(ex, runnable, npoints, counted, bar)
        ok = True
    except _WorkersLost as exc:
        kept = (f"the {npoints - len(runnable) + finished} finished points are kept in {outp}/ (rerun with --resume)"
                if outp is not None else "nothing was written (no output folder)")
        raise SweepError(f"the sweep's worker processes died ({exc}); {finished} of {len(runnable)} points to "
                         f"compute finished; {kept}") from None
    finally:
        if bar is not None:
            bar[0].stop()
        if ex is not None:
            ex.close(cancel=not ok)
