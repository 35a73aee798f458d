"""`forksim profiles`: the shipped profiles and where their numbers come from."""

from __future__ import annotations

import argparse
import json

from rich.table import Table

from ..profile import load_profile, shipped_profiles
from ._common import console


def register(sub) -> None:
    p = sub.add_parser("profiles", help="list the shipped profiles with their provenance")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    rows = []
    for name, path in shipped_profiles().items():
        prof = load_profile(str(path))
        rows.append({"name": name, "path": str(path), "description": prof.description, "provenance": prof.provenance})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    t = Table(title="shipped profiles (forksim profiles --json for everything)", title_justify="left")
    for c in ("name", "kernel", "CPU", "cpus", "measured on", "tracepoints"):
        t.add_column(c, no_wrap=True)
    for r in rows:
        p = r["provenance"]
        t.add_row(r["name"], str(p.get("kernel", "-")), str(p.get("cpu_model", "-")), str(p.get("cpus", "-")),
                  str(p.get("date", "-"))[:10], "yes" if p.get("tracefs") else "no")
    console.print(t)
    for r in rows:
        console.print(f"[bold]{r['name']}[/bold]: {r['description']}")
    return 0
