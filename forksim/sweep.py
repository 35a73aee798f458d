"""Sweeps: a grid of experiments from a config's `[sweep]` table (forksim.grid), run as point x
replication tasks on an executor (forksim.executor: a local process pool or a dask.distributed
cluster), recorded point by point so a killed sweep resumes.

Every (point, replication) is one task: `runner.run_replication` with the replication's stream from
`runner.replication_seeds(point seed, replications)`, so a result depends only on the point's
config and the replication index, never on the executor, the worker count or the order tasks finish.

Output folder (forksim.layout writes and reads it):

- `points/<point-id>/summary.json`: `metrics.summarize` over the point's replications (the
  summary.json schema, forksim.summary, plus the point's overrides), beside the point's
  `config.resolved.toml` and `profile.json`, and `points/<point-id>/result.json`: the point's table
  rows, written last: it marks the point finished.
- `results.parquet` (or `.csv`): one tidy row per point x replication: `point`, the swept keys
  (resolved: bytes, microseconds, per second), `replication`, `seed`, `error`, then the metrics as
  summary paths (`throughput_per_s.mean`, `fork_latency_us.p99`, `lock_wait_us.tasklist_lock.mean`,
  `cpu_utilization`, ...), each from that replication alone. Wall-clock times are left out, so the
  table of a resumed sweep equals an uninterrupted one.
- `sweep.json`: the grid (point ids and overrides) and how the sweep was run, beside the experiment
  before the grid (`config.resolved.toml`).

A failing point (an unstable open workload, a bad what-if, a crash) is recorded: its rows carry the
error and no metrics, and the sweep goes on. The sweep itself fails (`SweepError`: the CLI exits
non-zero) when its worker processes die (killed, out of memory) or when every point failed: the
points finished until then stay in the folder for `--resume`. Progress is reported through the
`on_progress` and `on_point` callbacks (the CLI draws them).
"""

from __future__ import annotations

import math
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from . import layout
from .config import Experiment, load_experiment
from .display import SweepTable
from .errors import ConfigError, ForksimError, SweepError
from .executor import EXECUTORS, WorkersLost, make_executor
from .grid import SweepPoint, grid_points, swept_keys
from .layout import FORMATS
from .metrics import ReplicationResult, summarize
from .profile import Profile, profile_info
from .runner import nothing_measured, run_replication
from .summary import FLAT_SKIP, Summary

__all__ = ["sweep", "SweepPoint", "grid_points", "EXECUTORS", "flatten_summary", "Progress"]

# The summary fields a flat row leaves out (who and how, wall-clock times, CIs): from summary.json's schema.
_SKIP = FLAT_SKIP
# on_progress(replications done, replications to compute, points finished, points in the grid)
Progress = Callable[[int, int, int, int], None]


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
        return _typed({**head, "error": errors[0] if errors else "no replication ran", "errors": errors})
    summary = {**head, **summarize(ok)}
    empty = nothing_measured(point.exp, summary)
    if empty is not None:
        return _typed({**head, "error": f"experiment.duration: {empty}", "errors": errors})
    if errors:
        summary["errors"] = errors
    return _typed(summary)


def _typed(summary: dict[str, Any]) -> dict[str, Any]:
    """A point's summary.json through its schema (forksim.summary): checked, in the schema's order."""
    return Summary.model_validate(summary).to_dict()


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


# ------------------------------------------------------------------ the sweep


def _load(exp_or_path: Experiment | str | Path, overrides: dict[str, Any] | None) -> Experiment:
    if isinstance(exp_or_path, Experiment):
        return exp_or_path.with_overrides(overrides) if overrides else exp_or_path
    return load_experiment(exp_or_path, overrides)


def _check_args(executor: str, format: str, workers: int | None, scheduler: str | None, resume: bool,
                out: str | Path | None) -> None:
    """The arguments' errors name the argument (the CLI shows its flag: commands/_common.FLAGS)."""
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r} (one of: {', '.join(EXECUTORS)})", source="executor")
    if format not in FORMATS:
        raise ConfigError(f"unknown format {format!r} (parquet or csv)", source="format")
    if workers is not None and workers < 1:
        raise ConfigError("must be 1 or more", source="workers")
    if scheduler and executor != "dask":
        raise ConfigError("a scheduler address needs the dask executor (--executor dask)", source="scheduler")
    if resume and out is None:
        raise ConfigError("resuming needs the output folder of the sweep to resume (--out)", source="resume")


def _reuse(out: Path, points: list[SweepPoint], rows_by_point: dict[str, list[dict[str, Any]]],
           summaries: dict[str, dict[str, Any]],
           on_point: Callable[[SweepPoint, dict[str, Any], bool], None] | None) -> list[str]:
    """Take the rows and summaries of the points finished in `out` into `rows_by_point` and
    `summaries`; returns their ids."""
    reused = []
    for p in points:
        rows = layout.read_point_rows(out, p.id)
        if rows is None:
            continue
        rows_by_point[p.id] = rows
        reused.append(p.id)
        summaries[p.id] = layout.read_point_summary(out, p.id)
        if on_point is not None:
            on_point(p, summaries[p.id], True)
    return reused


def _check_resumable(out: Path, points: list[SweepPoint]) -> None:
    """Refuse to resume into a folder that holds another grid's points (a changed config, --set or
    --profile): the folder would end up with two sweeps' points side by side."""
    manifest = layout.read_manifest(out)
    try:
        before = [p["id"] for p in manifest["points"]] if manifest is not None else []
    except (KeyError, TypeError):
        return  # not a sweep folder: every point is computed
    now = {p.id for p in points}
    foreign = [pid for pid in before if pid not in now]
    if foreign:
        raise ConfigError(
            f"{out} holds a sweep whose points differ from this one ({len(foreign)} of its {len(before)} points, "
            f"e.g. {foreign[0]}, are not in this grid: the config, a --set, --seed or --profile changed since); "
            "resume with the same config and flags, or write this sweep to a new --out", source="resume")


def _run_points(ex, runnable: list[SweepPoint], npoints: int, finish: Callable[[SweepPoint, list[Any]], None],
                on_progress: Progress | None) -> int:
    """Run every replication of `runnable` on `ex`, finishing each point as its last one comes in;
    returns how many points finished. Raises `WorkersLost` when the executor loses its workers."""
    jobs = [((p.index, i), (p.exp, p.profile, i, p.seeds[i])) for p in runnable for i in range(p.replications)]
    pending = {p.index: [None] * p.replications for p in runnable}
    left = {p.index: p.replications for p in runnable}
    by_index = {p.index: p for p in runnable}
    finished = done = 0
    before = npoints - len(runnable)
    if on_progress is not None:
        on_progress(0, len(jobs), before, npoints)
    for (index, rep), res in ex.run(_run_task, jobs):
        pending[index][rep] = res
        left[index] -= 1
        done += 1
        if left[index] == 0:
            finish(by_index[index], pending.pop(index))
            finished += 1
        if on_progress is not None:
            on_progress(done, len(jobs), before + finished, npoints)
    return finished


def _all_failed(rows_by_point: dict[str, list[dict[str, Any]]]) -> str | None:
    """The first error when no replication of any point produced a result (None otherwise)."""
    rows = [r for rs in rows_by_point.values() for r in rs]
    if not rows or any(r.get("error") is None for r in rows):
        return None
    return str(rows[0]["error"])


def _manifest(exp: Experiment, points: list[SweepPoint], executor: str) -> dict[str, Any]:
    return _clean_json({
        "experiment": exp.experiment.name,
        "config": exp.source,
        "keys": swept_keys(exp),
        "replications": exp.experiment.replications,
        "points": [{"id": p.id, "overrides": p.overrides} for p in points],
        "executor": executor,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })


class _Recorder:
    """Finishes points: their rows and summary into memory and (with an output folder) onto disk."""

    def __init__(self, outp: Path | None, on_point: Callable[[SweepPoint, dict[str, Any], bool], None] | None):
        self.outp, self.on_point = outp, on_point
        self.rows_by_point: dict[str, list[dict[str, Any]]] = {}
        self.summaries: dict[str, dict[str, Any]] = {}  # each point's summary.json (the notebook view shows them)

    def __call__(self, p: SweepPoint, results: list[Any]) -> None:
        rows = _clean_json(_point_rows(p, results))
        summary = _clean_json(_point_summary(p, results))
        for row in rows if summary.get("error") else []:  # e.g. a point that measured no creation
            row["error"] = row["error"] or summary["error"]
        if self.outp is not None:
            layout.write_point(self.outp, p.id, p.index, _clean_json(p.overrides), rows, summary, p.exp, p.profile)
        self.rows_by_point[p.id] = rows
        self.summaries[p.id] = summary
        if self.on_point is not None:
            self.on_point(p, summary, False)


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
    on_point: Callable[[SweepPoint, dict[str, Any], bool], None] | None = None,
    on_progress: Progress | None = None,
) -> pd.DataFrame:
    """Run the grid of a config's `[sweep]` table; return the tidy table (one row per point x
    replication). With `out`, write the folder described in this module's docstring; `resume`
    reuses the points finished there (and refuses a folder holding another grid's points).
    `executor`: "local" (a process pool of `workers`, default one per CPU) or "dask" (a LocalCluster
    of `workers` processes, or `scheduler`'s cluster). `on_point(point, summary, reused)` is called
    as each point is finished, `on_progress(done, total, points done, points)` as each replication
    is. Raises `SweepError` when the workers die or every point fails.

    The returned frame's `attrs` say which point ids were computed and which reused."""
    _check_args(executor, format, workers, scheduler, resume, out)
    exp = _load(exp_or_path, overrides)
    if exp.experiment.precision is not None:  # a grid runs a fixed count per point (common random numbers)
        raise ConfigError("a sweep runs experiment.replications at every point; precision applies to "
                          "`forksim run` and `forksim plan`", source=exp.source, field="experiment.precision")
    points = grid_points(exp, profile)
    outp = Path(out) if out is not None else None
    if resume and outp is not None:
        _check_resumable(outp, points)
    rec = _Recorder(outp, on_point)
    reused = _reuse(outp, points, rec.rows_by_point, rec.summaries, on_point) if (resume and outp is not None) else []
    todo = [p for p in points if p.id not in rec.rows_by_point]
    if outp is not None:
        layout.write_manifest(outp, _manifest(exp, points, executor), exp)
    # Points that cannot run at all (a bad what-if or profile) are recorded at once.
    runnable = []
    for p in todo:
        if p.error is not None or p.profile is None:
            rec(p, [_Failure(i, p.error or "no profile") for i in range(p.replications)])
        else:
            runnable.append(p)
    if runnable:
        _execute(runnable, len(points), rec, executor, scheduler, workers, on_progress, outp)

    df = SweepTable(_table(points, rec.rows_by_point), summaries=rec.summaries)
    df.attrs["computed"] = [p.id for p in todo]
    df.attrs["reused"] = reused
    if outp is not None:
        layout.write_sweep_table(outp, df, format)
    first = _all_failed(rec.rows_by_point)
    if first is not None:
        where = f" (recorded in {outp}/)" if outp is not None else ""
        raise SweepError(f"every point of the sweep failed{where}; the first: {first}")
    return df


def _execute(runnable: list[SweepPoint], npoints: int, finish, executor: str, scheduler: str | None,
             workers: int | None, on_progress: Progress | None, outp: Path | None) -> None:
    """Run the runnable points' replications on the executor; a lost worker pool is a `SweepError`
    that says what was kept."""
    njobs = sum(p.replications for p in runnable)
    ex = None
    ok = False
    finished = 0

    def counted(p: SweepPoint, results: list[Any]) -> None:
        nonlocal finished
        finish(p, results)
        finished += 1

    try:
        ex = make_executor(executor, workers, scheduler, jobs=njobs)
        _run_points(ex, runnable, npoints, counted, on_progress)
        ok = True
    except WorkersLost as exc:
        kept = (f"the {npoints - len(runnable) + finished} finished points are kept in {outp}/ (rerun with --resume)"
                if outp is not None else "nothing was written (no output folder)")
        raise SweepError(f"the sweep's worker processes died ({exc}); {finished} of {len(runnable)} points to "
                         f"compute finished; {kept}") from None
    finally:
        if ex is not None:
            ex.close(cancel=not ok)
