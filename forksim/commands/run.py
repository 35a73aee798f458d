"""`forksim run CONFIG`: simulate one experiment and write its results."""

from __future__ import annotations

import argparse

import tomli_w
from rich.progress import Progress

from ..config import experiment_to_toml_dict
from ..io import write_json, write_table, write_text
from ..runner import run_experiment
from ..trace import write_trace
from ._common import add_config_arguments, console, fmt, latency_table, load_from_args, out_dir


def register(sub) -> None:
    p = sub.add_parser("run", help="simulate one experiment (all its replications)",
                       description="Simulate one experiment; print a summary; write summary.json, "
                       "forks.parquet and the resolved config to --out.")
    add_config_arguments(p)
    p.add_argument("--out", help="output folder (default: results/<name>/run)")
    p.add_argument("--workers", type=int, default=1, help="processes for replications (default 1; 0: one per CPU)")
    p.add_argument("--format", choices=("parquet", "csv"), default="parquet", help="per-fork records format")
    p.add_argument("--trace", metavar="FILE", help="also write the first replication's timeline (Chrome trace JSON)")
    p.add_argument("--quiet", action="store_true", help="no table, no progress")
    p.set_defaults(func=main)


def summary_table(summary: dict) -> None:
    console.print(latency_table(summary, f"{summary['experiment']}: {summary['forks']:,} creations measured, "
                                 f"{summary['replications']} replications, profile {summary['profile']}"))
    thr = summary["throughput_per_s"]
    ci = thr.get("ci95")
    rng = thr.get("range")
    spread = (f"; replications {fmt(rng[0])} .. {fmt(rng[1])}" if rng and summary["replications"] > 1 else "")
    console.print(f"throughput: {fmt(thr['mean'])} creations/s"
                  + (f" (95% CI {fmt(ci[0])} .. {fmt(ci[1])}{spread})" if ci else (f" ({spread[2:]})" if spread else "")))
    console.print(f"CPU utilisation: {100 * (summary['cpu_utilization'] or 0):.1f}%")
    waits = ", ".join(f"{k} mean {fmt(v['mean'], 2)} us / p99 {fmt(v['p99'], 2)} us" for k, v in summary["lock_wait_us"].items())
    console.print(f"lock waits: {waits}")
    stages = ", ".join(f"{k} {fmt(v)}" for k, v in summary["stage_us"].items())
    console.print(f"mean time per stage in the call (us): {stages}")


def main(args: argparse.Namespace) -> int:
    from ..errors import ConfigError

    if args.workers < 0:
        raise ConfigError(f"must be 0 (one per CPU) or more (got {args.workers})", source="--workers")
    exp = load_from_args(args)
    out = out_dir(args, exp, "run")
    n = exp.experiment.replications
    with Progress(console=console, transient=True, disable=args.quiet) as progress:
        task = progress.add_task(f"simulating {exp.experiment.name}", total=n)
        result = run_experiment(exp, workers=args.workers or None,
                                on_replication=lambda done, total: progress.update(task, completed=done))
    write_table(out / f"forks.{args.format}", result.records)
    write_text(out / "config.resolved.toml",
               "# The fully resolved experiment: times in microseconds, sizes in bytes, rates per second.\n"
               + tomli_w.dumps(experiment_to_toml_dict(exp)))
    write_json(out / "summary.json", result.summary)
    if args.trace:
        write_trace(exp, args.trace, profile=result.profile)
    if not args.quiet:
        summary_table(result.summary)
        console.print(f"results in {out}/")
    return 0
