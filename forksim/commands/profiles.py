"""`forksim profiles`: the shipped and stored profiles, the host each was measured on, which one this
host uses by default; `--compare A B` puts two side by side."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from rich.table import Table

from ..errors import ConfigError
from ..host import MATCHING_RULE, HostFingerprint, differences, this_host
from ..profile import load_profile, shipped_profiles, stored_profiles
from ..store import auto_profile, store_dir
from ._common import console, fmt


def register(sub) -> None:
    p = sub.add_parser(
        "profiles", help="the shipped and stored profiles, the host each describes, and which one is used here",
        description=(
            "List the shipped profiles and those `forksim calibrate` stored for this account "
            f"($XDG_DATA_HOME/forksim/profiles, now {store_dir()}), with the host each was measured on (CPU "
            "vendor and model, kernel, CPUs, hypervisor, THP, HZ, preemption) and which one commands use here. "
            "A config whose machine.profile is 'auto' (the default) and a command without --profile use the "
            f"stored profile whose host matches this one: {MATCHING_RULE}. "
            "A command that uses a profile of another kind of host says so once on stderr."))
    p.add_argument("--json", action="store_true", help="print JSON (every profile's provenance and host)")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"),
                   help="two profiles side by side (shipped or stored name, or file): each stage's cost terms, "
                   "its median at RSS 0, 256 MiB and 1 GiB, and B/A; also writes a figure")
    p.add_argument("--figure", metavar="FILE.png",
                   help="with --compare: where the figure goes (default: profiles-A-vs-B.png in the current folder; "
                   "'none' for no figure)")
    p.set_defaults(func=main)


def _rows() -> list[dict]:
    auto = auto_profile()  # a shipped profile's name, or a stored profile's path
    here = this_host()
    rows = []
    for where, table in (("shipped", shipped_profiles()), ("stored", stored_profiles())):
        for name, path in table.items():
            prof = load_profile(str(path))
            host = prof.fingerprint()
            if host is None:
                status = "no host"
            elif name == auto if where == "shipped" else str(path) == auto:
                status = "used here (auto)" + ("" if host.matches(here) else ", other host")
            else:
                status = "matches this host" if host.matches(here) else "other host"
            rows.append({"name": name, "where": where, "path": str(path), "status": status,
                         "host": host.model_dump(mode="json", exclude_none=True) if host else None,
                         "description": prof.description, "provenance": prof.provenance,
                         "scaling": {k: v.model_dump() for k, v in prof.scaling.items()}})
    return rows


def _list(args: argparse.Namespace) -> int:
    rows = _rows()
    if args.json:
        print(json.dumps({"this_host": this_host().model_dump(mode="json", exclude_none=True),
                          "store": str(store_dir()), "matching_rule": MATCHING_RULE, "profiles": rows}, indent=2))
        return 0
    t = Table(title="profiles (forksim profiles --json for everything)", title_justify="left")
    for c in ("name", "where", "CPU", "cpus", "kernel", "hypervisor", "THP", "HZ/preempt", "measured", "on this host"):
        t.add_column(c, no_wrap=c in ("kernel", "measured", "cpus"), overflow="fold")
    for r in rows:
        h, p = r["host"] or {}, r["provenance"]
        t.add_row(r["name"], r["where"], h.get("cpu_model", "-"), str(h.get("cpus", "-")),
                  h.get("kernel", "-"), h.get("hypervisor", "-"), h.get("thp_mode", "-"),
                  f"{h.get('hz', '-')}/{h.get('preempt', '-')}", str(p.get("date", "-"))[:10], r["status"])
    console.print(t)
    console.print(f"this host: {this_host().describe()}; store: {store_dir()}")
    used = next((r for r in rows if r["status"].startswith("used here")), None)
    if used and used["host"]:
        diff = differences(HostFingerprint(**used["host"]), this_host())
        console.print(f"'{used['name']}' vs this host: " + ("; ".join(diff) if diff else "no recorded fact differs"))
    console.print(f"matching: {MATCHING_RULE}")
    for r in rows:
        console.print(f"[bold]{r['name']}[/bold]: {r['description']}")
    return 0


def _cell(a: float | None, digits: int = 3) -> str:
    if a is None:
        return "-"
    return f"{a:,.{digits}g}" if abs(a) < 1 else fmt(float(a), 1 if abs(a) < 1000 else 0)


def _ratio(r: float | None) -> str:
    return "-" if r is None else f"x{r:.2f}"


def _compare(args: argparse.Namespace) -> int:
    from ..profile_compare import REFERENCE_SHAPES, compare_profiles, plot_comparison

    a, b = (load_profile(x) for x in args.compare)
    cmp = compare_profiles(a, b)
    fig = None
    if args.figure != "none":
        safe = "-vs-".join(re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(x).stem) for x in args.compare)
        fig = Path(args.figure or f"profiles-{safe}.png")
        if fig.suffix.lower() != ".png":
            raise ConfigError("the figure is a PNG file: give a name ending in .png", source="--figure")
    if args.json:
        print(json.dumps(cmp, indent=2))
    else:
        console.print(f"A = {cmp['a']}: {cmp['a_host']}\nB = {cmp['b']}: {cmp['b_host']}")
        t = Table(title="cost terms (us): A, B, B/A", title_justify="left")
        for c in ("stage", "term", "A", "B", "B/A"):
            t.add_column(c, justify="left" if c in ("stage", "term") else "right")
        for r in cmp["terms"]:
            t.add_row(r["stage"], r["term"], _cell(r["a"]), _cell(r["b"]), _ratio(r["ratio"]))
        for r in cmp["machine"]:
            t.add_row(r["what"], "", _cell(r["a"]), _cell(r["b"]), _ratio(r["ratio"]))
        console.print(t)
        t = Table(title="median cost (us) at reference images (40 VMAs, 20 anonymous, 4 KiB pages): A, B, B/A",
                  title_justify="left")
        t.add_column("stage")
        for label in REFERENCE_SHAPES:
            for c in ("A", "B", "B/A"):
                t.add_column(f"{label} {c}", justify="right")
        for r in cmp["medians"]:
            t.add_row(r["stage"], *(x for label in REFERENCE_SHAPES
                                   for x in (_cell(r[label]["a"]), _cell(r[label]["b"]), _ratio(r[label]["ratio"]))))
        console.print(t)
    if fig is not None:
        plot_comparison(cmp, fig)
        (console.print if not args.json else lambda *_: None)(f"figure: {fig}")
    return 0


def main(args: argparse.Namespace) -> int:
    if args.figure and not args.compare:
        raise ConfigError("--figure goes with --compare A B", source="--figure")
    return _compare(args) if args.compare else _list(args)
