"""`forksim plan CONFIG --slo EXPR --find KEY`: capacity planning over one key."""

from __future__ import annotations

import argparse
import json

from rich.table import Table

from ..errors import ConfigError
from ._common import add_config_arguments, console, err_console, load_from_args


def register(sub) -> None:
    p = sub.add_parser(
        "plan", help="the smallest (or largest) value of a key that meets an SLO",
        description="Search one config key for the boundary of an SLO on any summary.json field, e.g. "
        "--slo 'fork_latency_us.p99<=2ms' --find machine.cpus --range 1..64. The key says which boundary: "
        "a resource (machine.cpus, think time) gives the smallest value meeting the SLO; a load "
        "(workload.rate, parents, sizes, what-if factors) the largest meeting an upper bound (latency <= X) "
        "and the smallest reaching a lower bound (throughput >= X); --smallest/--largest override it. Keys the "
        "config's [sweep] links to KEY follow it (cpu-scaling: one parent per CPU). Integer keys: binary "
        "search; continuous keys: bisection to --tolerance, geometric for sizes and rates. Every probe runs "
        "all the config's replications; an answer whose 95%% CI straddles the bound is reported undecided.",
    )
    add_config_arguments(p)
    p.add_argument("--slo", required=True, metavar="EXPR",
                   help="METRIC OP BOUND on a summary.json path: fork_latency_us.p99<=2000, "
                   "throughput_per_s.mean>=5000, request_latency_us.p999<10ms (OP: <=, >=, <, >)")
    p.add_argument("--find", required=True, metavar="KEY", help="the dotted config key to search, e.g. machine.cpus")
    p.add_argument("--range", dest="range", metavar="LO..HI",
                   help="search range, units allowed (1GiB..64GiB, 1000/s..20000/s); integer keys default "
                   "to 1..max(16, 8 x the config's value)")
    p.add_argument("--tolerance", metavar="STEP",
                   help="continuous keys: stop when the bracket is this narrow (default: range/64; units allowed)")
    p.add_argument("--strict", action="store_true",
                   help="a probe passes only if the metric's whole 95%% CI meets the SLO")
    p.add_argument("--workers", type=int, default=0, help="processes for each probe's replications (0: one per CPU)")
    way = p.add_mutually_exclusive_group()
    way.add_argument("--smallest", dest="direction", action="store_const", const="smallest",
                     help="answer the smallest value meeting the SLO (default: from the key and the SLO)")
    way.add_argument("--largest", dest="direction", action="store_const", const="largest",
                     help="answer the largest value meeting the SLO")
    p.add_argument("--json", action="store_true", help='print {"key", "answer", "tried": [...]} as JSON')
    p.set_defaults(func=main)


def _f(v, unit: str = "") -> str:
    """A metric value in full (1,002,345.6, never 1.002e+06) with the metric's unit."""
    if v is None:
        return "-"
    if isinstance(v, float) and not v.is_integer():
        text = f"{v:,.1f}" if abs(v) >= 10 else f"{v:,.3g}"
    else:
        text = f"{int(v):,}" if isinstance(v, (int, float)) else str(v)
    return f"{text} {unit}" if unit else text


def _unit(metric: str) -> str:
    top = metric.split(".")[0]
    return "us" if top.endswith("_us") else "/s" if top.endswith("_per_s") else ""


def main(args: argparse.Namespace) -> int:
    from ..config import format_config_value
    from ..plan import parse_slo, plan

    if args.workers < 0:
        raise ConfigError("must be 0 (one per CPU) or more", source="--workers")
    slo = parse_slo(args.slo)  # a bad SLO fails before any simulation
    exp = load_from_args(args)
    show = not args.json

    unit = _unit(slo.metric)

    def value(v) -> str:
        return format_config_value(args.find, v)

    def on_probe(p) -> None:
        if show:
            ci = f" (95% CI {_f(p.ci95[0])} .. {_f(p.ci95[1], unit)})" if p.ci95 else ""
            mark = "[green]ok[/green]" if p.ok else "[red]fails[/red]"
            shown = "unstable (queue grew without bound)" if p.unstable else _f(p.metric, unit)
            console.print(f"  {args.find} = {value(p.value)}: {slo.metric} = {shown}{ci} {mark}", highlight=False)

    if show:
        console.print(f"plan: {args.find} for {slo} ({exp.experiment.replications} replications per probe)")
    result = plan(exp, slo, args.find, args.range, tolerance=args.tolerance, strict=args.strict,
                  workers=args.workers or None, direction=args.direction, on_probe=on_probe)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    t = Table(title="evidence (sorted by value)", title_justify="left")
    for col in (args.find, f"{slo.metric} ({unit})" if unit else slo.metric, "95% CI", "SLO"):
        t.add_column(col, justify="right")
    for p in result.probes:
        ci = f"{_f(p.ci95[0])} .. {_f(p.ci95[1])}" if p.ci95 else "-"
        t.add_row(value(p.value), "unstable" if p.unstable else _f(p.metric), ci, "ok" if p.ok else "fails")
    console.print(t)
    verdict = "undecided: " if result.undecided else ""
    console.print(f"answer: {verdict}{args.find} = {value(result.answer)} (the {result.direction} value meeting "
                  f"{slo}; {result.why})", markup=False)
    if result.note:
        err_console.print(f"note: {result.note}", markup=False)
    return 0
