"""`forksim bench [--quick] [--json]`: how fast the engine simulates, beside a bare SimPy floor."""

from __future__ import annotations

import argparse
import json

from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..bench import MODES, _size, run_bench
from ._common import console, err_console

COLUMNS = ("CPUs", "RSS", "workload", "offered/s", "creations", "creations/s", "events/creation", "floor jobs/s", "forksim/floor")


def register(sub) -> None:
    p = sub.add_parser("bench", help="simulation speed: creations per second beside a bare SimPy floor",
                       description="Simulated creations per wall-clock second and events per creation on "
                       "standard scenarios, beside a bare SimPy M/M/c floor; 1M creations on 256 CPUs "
                       "(time, memory); replications on 2 processes vs 1; wall time of the fork-storm and cpu-scaling "
                       "experiments run to 5% precision. Figures, with targets beside them.")
    p.add_argument("--quick", action="store_true", help="smaller runs (about a minute); the 1M figure is extrapolated from 100k")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # tests: every row in seconds
    p.set_defaults(func=main)


def _f(v, digits: int = 0) -> str:
    if v is None:
        return "-"
    return f"{v:,.{digits}f}"


def scenario_table(result: dict) -> Table:
    t = Table(title=f"forksim bench ({result['mode']}): simulation speed beside a bare SimPy M/M/c floor",
              title_justify="left")
    for i, c in enumerate(COLUMNS):
        t.add_column(c, justify="left" if i in (1, 2) else "right", overflow="fold")
    for r in result["scenarios"]:
        t.add_row(str(r["cpus"]), _size(r["rss"]), r["workload"], _f(r["rate_per_s"]), _f(r["creations"]), _f(r["creations_per_s"]),
                  _f(r["events_per_creation"], 1), _f(r["floor_per_s"]), _f(r["ratio"], 2))
    return t


def figures_table(result: dict) -> Table:
    t = Table(title="figures and targets", title_justify="left")
    for c in ("figure", "value", "target", "met"):
        t.add_column(c, justify="left" if c == "figure" else "right")
    digits = {"floor_ratio_2cpu_storm": 2, "million_wall_s": 1, "million_peak_mb": 0, "parallel_speedup": 2,
              "precision_fork_storm_s": 1}
    for key, f in result["targets"].items():
        met = {True: "[green]yes[/]", False: "[red]no[/]", None: "-"}[f["met"]]
        t.add_row(f["what"], _f(f["value"], digits[key]), f["target"], met)
    return t


def notes(result: dict) -> list[str]:
    m, p = result["million"], result["parallel"]
    out = []
    if "error" in m:
        out.append(f"1M run failed: {m['error']}")
    else:
        how = (f"extrapolated from {m['creations']:,} creations run ({m['total_wall_s']:.1f} s, peak "
               f"{m['measured_peak_mb']:.0f} MB; time x{m['target_creations'] / max(1, m['creations']):g}, memory by "
               f"its growth from a half-size run's {m['half_run_peak_mb']:.0f} MB)") if m["extrapolated"] else "measured"
        out.append(f"{m['target_creations']:,} creations on {m['cpus']} CPUs (closed, RSS 0): {m['wall_s']:.1f} s wall "
                   f"(simulation {m['sim_wall_s_scaled']:.1f} s, rest: records table and summary), peak RSS "
                   f"{m['peak_mb']:.0f} MB of which {m['base_mb']:.0f} MB before the run; {how}; "
                   f"{m['events_per_creation']:.1f} events/creation")
    out.append(f"replications: {p['replications']} x {p['creations_per_replication']:,} creations on {p['cpus']} CPUs: "
               f"{p['wall_1_s']:.1f} s with 1 worker, {p['wall_2_s']:.1f} s with 2 (medians of {p['repeats']}); "
               f"speed-up {p['speedup']:.2f} (median of {', '.join(f'{x:.2f}' for x in p['speedups'])}); "
               f"{p['local_cores']} local cores")
    for t in result.get("time_to_precision", []):
        reached = ", ".join(f"{k} {'-' if v is None else f'{v:.1%}'}" for k, v in t["reached"].items())
        out.append(f"time to precision: {t['experiment']} (base point, default profile) to {t['target']:.0%}: "
                   f"{t['wall_s']:.1f} s wall on {t['workers']} workers, {t['replications']} replications, "
                   f"{t['creations']:,} creations measured; reached {reached}; {t['stopped']}")
    storm = next(r for r in result["scenarios"] if r["cpus"] == 2 and r["rss"] == 0 and r["workload"] == "closed")
    out.append(f"a floor job is {storm['floor_events_per_job']:.0f} events, "
               f"a creation {storm['events_per_creation']:.0f} "
               "(a stage that takes a shared lock or can be preempted ends in one): README.md, Speed")
    out.append("creations/s: creations reaped per wall second of simulation; floor: simpy.Resource with c servers, "
               "a process per job, exponential service, Poisson arrivals (load 0.9 beside closed rows, 0.5 beside "
               "open ones), as many jobs; open rows arrive at half the closed row's throughput")
    out.append(f"bench wall time {result['bench_wall_s']:.0f} s")
    return out


def main(args: argparse.Namespace) -> int:
    mode = "tiny" if args.tiny else ("quick" if args.quick else "full")
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True, disable=args.json) as progress:
        bar = progress.add_task("benchmark", total=1.0)
        state = {"done": 0.0, "last": 0.0}

        def step(label: str, weight: float) -> None:
            state["done"] += state["last"]
            state["last"] = weight
            progress.update(bar, completed=state["done"], description=f"bench ({mode}): {label}")

        result = run_bench(MODES[mode], progress=step)
        progress.update(bar, completed=1.0)
    if args.json:
        print(json.dumps(result, indent=1, default=str))
        return 0
    console.print(scenario_table(result))
    console.print(figures_table(result))
    for line in notes(result):
        console.print(line)
    return 0
