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
        "--slo 'fork_latency_us.p99<=2000' --find machine.cpus --range 1..64. The range's ends are probed "
        "first: if only the high end passes, the answer is the smallest passing value, if only the low end, "
        "the largest. Integer keys: binary search; continuous keys (rates, sizes, times, what-if factors): "
        "bisection to --tolerance. Every probe runs all the config's replications.",
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
    p.add_argument("--json", action="store_true", help='print {"key", "answer", "tried": [...]} as JSON')
    p.set_defaults(func=main)


def _f(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return f"{int(v):,}"
    return f"{v:,.4g}" if isinstance(v, float) else str(v)


def main(args: argparse.Namespace) -> int:
    from ..plan import parse_slo, plan

    if args.workers < 0:
        raise ConfigError("must be 0 (one per CPU) or more", source="--workers")
    slo = parse_slo(args.slo)  # a bad SLO fails before any simulation
    exp = load_from_args(args)
    show = not args.json

    def on_probe(p) -> None:
        if show:
            ci = f" (95% CI {_f(p.ci95[0])} .. {_f(p.ci95[1])})" if p.ci95 else ""
            mark = "[green]ok[/green]" if p.ok else "[red]fails[/red]"
            shown = "unstable (queue grew without bound)" if p.unstable else _f(p.metric)
            console.print(f"  {args.find} = {_f(p.value)}: {slo.metric} = {shown}{ci} {mark}")

    if show:
        console.print(f"plan: {args.find} for {slo} ({exp.experiment.replications} replications per probe)")
    result = plan(exp, slo, args.find, args.range, tolerance=args.tolerance, strict=args.strict,
                  workers=args.workers or None, on_probe=on_probe)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    t = Table(title="evidence (sorted by value)", title_justify="left")
    for col in (args.find, slo.metric, "95% CI", "SLO"):
        t.add_column(col, justify="right")
    for p in result.probes:
        ci = f"{_f(p.ci95[0])} .. {_f(p.ci95[1])}" if p.ci95 else "-"
        t.add_row(_f(p.value), "unstable" if p.unstable else _f(p.metric), ci, "ok" if p.ok else "fails")
    console.print(t)
    console.print(f"answer: {args.find} = {_f(result.answer)} (the {result.direction} value meeting {slo})")
    if result.note:
        err_console.print(f"note: {result.note}")
    return 0
