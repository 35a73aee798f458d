"""`forksim sweep CONFIG`: the grid of the config's [sweep] table on a local pool or dask."""

from __future__ import annotations

import argparse
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from ..config import CALLS, format_config_value
from ..errors import ConfigError
from ._common import add_config_arguments, console, err_console, fmt, load_from_args, out_dir


def register(sub) -> None:
    p = sub.add_parser(
        "sweep", help="a grid of runs from the config's [sweep] table",
        description="Run every point of the config's [sweep] grid (cartesian product of its dotted keys; "
        "linked keys 'a,b' = [[a1, b1], ...] move together), each replication a task on a local process "
        "pool or a dask.distributed cluster. Writes DIR/results.parquet (one row per point x replication), "
        "DIR/points/<id>/summary.json per point and DIR/sweep.json; --resume skips the points finished in DIR.",
    )
    add_config_arguments(p)
    p.add_argument("--out", help="output folder (default: results/<name>/sweep)")
    p.add_argument("--executor", choices=("local", "dask"), default="local",
                   help="local: a process pool (default); dask: dask.distributed")
    p.add_argument("--scheduler", metavar="ADDR",
                   help="a dask scheduler's address (tcp://host:8786); default: a LocalCluster of --workers processes")
    p.add_argument("--workers", type=int, help="worker processes (default: one per CPU)")
    p.add_argument("--resume", action="store_true", help="reuse the points already finished in --out")
    p.add_argument("--format", choices=("parquet", "csv"), default="parquet", help="results table format")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no table")
    p.set_defaults(func=main)


_REQUEST_COLUMNS = (("request_latency_us", "p99", "request p99 us"),
                    ("request_latency_in_snapshot_us", "p99", "request p99 in snapshot us"))


def _points_table(name: str, rows: list[tuple], call: str, server: bool = False) -> Table:
    t = Table(title=f"{name}: sweep points", title_justify="left")
    cols = ["point", "values", "throughput/s", f"{call} p50 us", f"{call} p99 us", "p99 95% CI", "CPU util", "note"]
    if server:  # the question of a server experiment: request latency, overall and during the snapshot
        cols[-1:-1] = [label for _, _, label in _REQUEST_COLUMNS]
    for col in cols:
        t.add_column(col, justify="left" if col in ("point", "values", "note") else "right")
    for r in rows:
        t.add_row(*r)
    return t


@contextmanager
def _progress_bar(title: str, quiet: bool) -> Iterator[Callable[[int, int, int, int], None] | None]:
    """A rich progress bar of the replications (the tasks) and, beside them, the finished points, fed
    by the sweep's on_progress callback (none when quiet)."""
    if quiet:
        yield None
        return
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("replications, points {task.fields[points]}"), TimeElapsedColumn(),
                   TimeRemainingColumn(), transient=False)
    task = None

    def update(done: int, total: int, points_done: int, points: int) -> None:
        nonlocal task
        if task is None:
            bar.start()
            task = bar.add_task(title, total=total, points=f"{points_done}/{points}")
        bar.update(task, completed=done, points=f"{points_done}/{points}")

    try:
        yield update
    finally:
        if task is not None:
            bar.stop()


def main(args: argparse.Namespace) -> int:
    from ..sweep import grid_points, sweep

    exp = load_from_args(args)
    if args.workers is not None and args.workers < 1:
        raise ConfigError("must be 1 or more", source="--workers")
    out = out_dir(args, exp, "sweep")
    rows: dict[int, tuple] = {}
    server = exp.workload.kind == "server"

    def on_point(point, summary, reused) -> None:
        values = ", ".join(f"{k.split('.')[-1]}={format_config_value(k, v)}" for k, v in point.values.items()) or "(base)"
        if summary.get("error"):
            rows[point.index] = (point.id, values, *["-"] * (5 + 2 * server), f"[red]{summary['error']}[/red]")
            return
        thr = (summary.get("throughput_per_s") or {}).get("mean")
        fl = summary.get("fork_latency_us") or {}
        ci = (fl.get("ci95") or {}).get("p99")
        util = summary.get("cpu_utilization")
        note = "reused" if reused else ""
        if summary.get("errors"):
            note = f"{len(summary['errors'])} replication(s) failed"
        rows[point.index] = (point.id, values, fmt(thr), fmt(fl.get("p50")), fmt(fl.get("p99")),
                             f"{fmt(ci[0])} .. {fmt(ci[1])}" if ci else "-",
                             f"{100 * util:.0f}%" if util is not None else "-",
                             *[fmt((summary.get(k) or {}).get(p)) for k, p, _ in _REQUEST_COLUMNS if server], note)

    try:
        with _progress_bar(f"sweep {exp.experiment.name} ({args.executor})", args.quiet) as on_progress:
            df = sweep(exp, out=out, executor=args.executor, scheduler=args.scheduler, workers=args.workers,
                       resume=args.resume, format=args.format, on_point=on_point, on_progress=on_progress)
    except KeyboardInterrupt:
        err_console.print(f"forksim: interrupted; the {len(rows)} finished points are kept in {out}/points/ "
                          "(the same command with --resume computes only the others)")
        return 130
    if not args.quiet:
        kinds = {p.exp.workload.child.clone for p in grid_points(exp)} if exp.sweep else {exp.workload.child.clone}
        call = CALLS[kinds.pop()] if len(kinds) == 1 else "call"
        console.print(_points_table(exp.experiment.name, [rows[i] for i in sorted(rows)], call, server))
        errors = int(df["error"].notna().sum())
        console.print(f"{len(df)} rows ({len(df.attrs['computed'])} points computed, {len(df.attrs['reused'])} reused"
                      + (f", {errors} failed replications" if errors else "") + f"); results in {out}/")
    return 0
