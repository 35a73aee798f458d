"""`forksim validate`: real load on this machine beside the model's prediction."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import err_console


def register(sub) -> None:
    p = sub.add_parser("validate", help="measure real load on this machine and compare with the model",
                       description="Run real load scenarios (a C load generator built with the system compiler), "
                       "simulate the same scenarios with the profile, and write validation.json, validation.md and "
                       "validation.png (measured vs predicted, relative errors).")
    p.add_argument("--profile", default="auto", help="profile name or file (default: auto, the profile "
                   "`forksim calibrate` stored for this host, else the shipped default)")
    p.add_argument("--quick", action="store_true", help="a subset of scenarios with short runs (under 3 minutes)")
    p.add_argument("--out", default="validation", help="output folder (default: ./validation)")
    p.add_argument("--only", action="append", metavar="SCENARIO", help="run only this scenario (repeatable)")
    p.add_argument("--doc", metavar="FILE", help="also write the validation document (e.g. VALIDATION.md): "
                   "provenance, the table, and the mechanism believed responsible for each row above target")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from ..profile import load_profile
    from ..validation import validate
    from ..validation.compare import render_markdown

    from ..store import warn_if_off_host

    profile = str(load_profile(args.profile)._origin["path"]) if args.profile == "auto" else args.profile
    warn_if_off_host(load_profile(profile))  # a bad profile fails here, before minutes of measurement
    report = validate(profile=profile, quick=args.quick, out=Path(args.out),
                      progress=lambda line: err_console.print(line, markup=False, highlight=False), only=args.only,
                      doc=Path(args.doc) if args.doc else None)
    print(render_markdown(report))
    return 0
