"""`forksim run CONFIG`: simulate one experiment and write its results."""

from __future__ import annotations

import argparse

from rich.progress import Progress

from ..kernel.flags import DEFAULT_KIND
from ..runner import Interrupted, run_experiment
from ..trace import write_trace
from ._common import add_config_arguments, console, err_console, fmt, latency_table, load_from_args, out_dir


def register(sub) -> None:
    p = sub.add_parser("run", help="simulate one experiment (all its replications)",
                       description="Simulate one experiment; print a summary; write summary.json, "
                       "forks.parquet, the resolved config and the profile as used to --out.")
    add_config_arguments(p)
    p.add_argument("--out", help="output folder (default: results/<name>/run)")
    p.add_argument("--workers", type=int, default=1, help="processes for replications (default 1; 0: one per CPU)")
    p.add_argument("--format", choices=("parquet", "csv"), default="parquet", help="per-fork records format")
    p.add_argument("--trace", metavar="FILE", help="also write the first replication's timeline (Chrome trace JSON)")
    p.add_argument("--precision", metavar="FRACTION",
                   help="add replications (experiment.replications at a time) until throughput's and fork() p99's "
                   "95%% CI half-widths are within this fraction of each estimate, e.g. 5%% "
                   "(sets experiment.precision; the cap: experiment.max_replications, default 200)")
    p.add_argument("--quiet", action="store_true", help="no table, no progress")
    p.set_defaults(func=main)


def summary_table(summary: dict, clone: str = DEFAULT_KIND) -> None:
    console.print(latency_table(summary, f"{summary['experiment']}: {summary['forks']:,} creations measured, "
                                 f"{summary['replications']} replications, profile {summary['profile']}", clone))
    thr = summary["throughput_per_s"]
    ci = thr.get("ci95")
    rng = thr.get("range")
    spread = (f"; replications {fmt(rng[0])} .. {fmt(rng[1])}" if rng and summary["replications"] > 1 else "")
    console.print(f"throughput: {fmt(thr['mean'])} creations/s"
                  + (f" (95% CI {fmt(ci[0])} .. {fmt(ci[1])}{spread})" if ci else (f" ({spread[2:]})" if spread else "")))
    req = summary.get("request_throughput_per_s")
    if req:  # server workloads
        console.print(f"requests: {fmt(req['mean'])} served/s, {summary.get('requests_unfinished', 0):,} unfinished at "
                      "the end; in fork(): arrived between fork()'s entry and return; in snapshot: arrived between "
                      "fork()'s entry and the snapshot child's exit")
    console.print(f"CPU utilisation: {100 * (summary['cpu_utilization'] or 0):.1f}%")
    if summary.get("precision"):
        p = summary["precision"]
        reached = ", ".join(f"{k} ±{v:.1%}" if v is not None else f"{k} no interval" for k, v in p["reached"].items())
        console.print(f"precision: {p['stopped']} ({reached})")
        w = summary.get("warmup_check") or {}
        if w.get("enough") is False:
            console.print(f"[yellow]warm-up: MSER-5 puts the end of the transient at {fmt(w['mser5_us_median'])} us "
                          f"(median over replications), past experiment.warmup = {fmt(w['configured_us'])} us: "
                          "lengthen the warm-up[/yellow]")
    if not summary["forks"]:  # a server that served requests but forked no snapshot in the window
        console.print("[yellow]note: no snapshot fork in the measured window: lengthen experiment.duration "
                      "or move workload.server.first_snapshot into it[/yellow]")
    scatter = summary.get("image_scatter") or {}
    if scatter.get("value") and scatter.get("priced") is False:
        console.print(f"[yellow]note: the image's scatter ({scatter['value']:g}, {scatter['from']}) is not priced: profile "
                      f"{summary['profile']} has no scatter terms (per_pte_scatter_us); `forksim calibrate` measures "
                      "them on this host[/yellow]")
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
    n = exp.experiment.replications if exp.experiment.precision is None else exp.experiment.max_replications
    try:
        with Progress(console=console, transient=True, disable=args.quiet) as progress:
            what = f"{n} replications" if exp.experiment.precision is None else (
                f"to {exp.experiment.precision:.1%} precision, at most {n} replications")
            task = progress.add_task(f"simulating {exp.experiment.name} ({what})", total=n)
            result = run_experiment(exp, workers=args.workers or None,
                                    on_replication=lambda done, total: progress.update(task, completed=done))
    except Interrupted as stop:
        if stop.partial is None:
            err_console.print("forksim: interrupted before any replication finished; nothing written")
        else:
            stop.partial.write(out, args.format)
            s = stop.partial.summary
            err_console.print(f"forksim: interrupted; the {s['replications']} finished of {n} replications are kept "
                              f"in {out}/ (summary.json says \"partial\": true)")
        return 130
    result.write(out, args.format)
    if args.trace:
        write_trace(exp, args.trace, profile=result.profile)
    if not args.quiet:
        summary_table(result.summary, exp.workload.child.clone)
        console.print(f"results in {out}/")
    return 0
