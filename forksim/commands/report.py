"""`forksim report DIR`: figures and a markdown summary of a run or sweep directory."""

from __future__ import annotations

import argparse

from ._common import console


def register(sub) -> None:
    p = sub.add_parser("report", help="figures (PNG) and summary.md for a run or sweep directory",
                       description="Write PNG figures and summary.md for a run directory (summary.json, "
                       "forks.parquet/.csv, config.resolved.toml) or a sweep directory (results.parquet/.csv, "
                       "points/*/summary.json). summary.md's numbers are summary.json's, rounded to 2 decimals.")
    p.add_argument("dir", metavar="DIR", help="a directory written by `forksim run` or `forksim sweep`")
    p.add_argument("--out", help="where to write the figures and summary.md (default: DIR)")
    p.add_argument("--quiet", action="store_true", help="print nothing")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from ..report import report  # matplotlib is only imported when a report is made

    rep = report(args.dir, args.out)
    if not args.quiet:
        console.print(f"{rep.kind} report: {rep.markdown}")
        for f in rep.figures:
            console.print(f"  {f}")
    return 0
