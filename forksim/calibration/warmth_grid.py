"""The cold-fork grid alone (`python -m forksim.calibration.warmth_grid measure|merge`), outside a
whole calibration: measure forkbench's cold runs of a plan (warmth.GRIDS) pinned, keep their raw
samples, fit them (warmth.fit_warmth) and merge the `warmth` section into profile files additively,
with provenance.merged_warmth saying from what, when and how. `merge` also takes a raw file that
`forksim calibrate --raw` wrote (its cold runs, and its placement room loops: placement_room)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ForksimError, MeasurementError
from . import bench
from .plan import PLANS, MiB, Store, read_raw, write_raw
from .room_loops import KIND as ROOM_KIND, room_section
from .warmth import cold_jobs, cross_cpu_wake_us, fit_warmth

__all__ = ["measure_warmth", "merge_into", "main"]


def measure_warmth(plan: str = "full", cpu: int | None = None, progress=print) -> dict[str, Any]:
    """The cold-fork grid alone (forkbench cold, pinned to `cpu`, default the last CPU; the move to
    the CPU beside it): the raw file's content {"facts", "plan", "cpu", "date", "runs"}. Run it under
    the exclusive measurement lock: what else runs on the machine cools the image too."""
    import datetime as _dt
    import os

    from ..lab import machine_facts

    allowed = sorted(os.sched_getaffinity(0))
    cpu = allowed[-1] if cpu is None else cpu
    other = next((c for c in reversed(allowed) if c != cpu), cpu)
    fb = str(bench.build().forkbench)
    store = Store()
    start = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    for what, job in cold_jobs(PLANS[plan], fb, store, cpu, other):
        progress(what)
        job()
    return {"facts": machine_facts(), "plan": plan, "cpu": cpu, "other_cpu": other, "date": start,
            "refused": store.refused, "runs": store.runs}


def _speed(prof: dict[str, Any], diag: dict[str, Any]) -> tuple[str, float | None]:
    """The grid's back-to-back fork() p50 against the profile's own at the same sizes: a host that ran
    slower when the grid was measured than when the profile was (this VM's speed drifts by up to 2x
    between days) shows here. (text, median ratio grid/profile)."""
    mine = (prof.get("diagnostics") or {}).get("fork_p50_us") or {}
    parts, ratios = [], []
    for rss, warm in sorted(((int(k), v) for k, v in diag["warmth_fit"]["warm_p50_us"].items())):
        ref = mine.get(f"{rss // MiB}MiB")
        ref = ref.get("p50") if isinstance(ref, dict) else ref
        if ref:
            ratios.append(warm / ref)
            parts.append(f"{rss // MiB} MiB {warm:.0f} / {ref:.0f} us = {warm / ref:.2f}x")
    if not ratios:
        return "no size in common with the profile's back-to-back forks", None
    ratio = float(np.median(ratios))
    return "the grid's back-to-back fork() p50 / the profile's: " + ", ".join(parts), ratio


def merge_into(raw: str | Path, profile: str | Path, note: str = "", scale: bool = False) -> dict[str, Any]:
    """Fit the cold-fork runs of a raw file (calibrate --raw, or the cold grid alone) and add the
    `warmth` section to an existing profile file, and the `placement_room` section where the raw file holds the
    placement room loops, leaving everything else as it is (additive).
    scale: divide the cold extra (fixed_us, per_pte_us) by the grid's back-to-back speed relative to
    the profile's (an assumption: a host running slower slows the cold extra alike)."""
    import json

    from .merge import write_merged

    rp = Path(raw)
    r = read_raw(rp)
    store = Store(runs=[x for x in r["runs"] if x["kind"] == "cold"])
    path = Path(profile)
    prof = json.loads(path.read_text())
    warmth, diag = fit_warmth(store, cross_cpu_wake_us(prof["scheduler"], prof["stages"]["ipi_send"]["fixed_us"]))
    if warmth is None:
        raise MeasurementError(f"{rp}: {diag.get('warmth_note', 'no cold-fork runs')}")
    speed, ratio = _speed(prof, diag)
    warmth["source"] += f"; {speed}"
    if scale and ratio:
        d = warmth["stages"]["dup_mmap"]
        d["fixed_us"], d["per_pte_us"] = round(d["fixed_us"] / ratio, 2), round(d["per_pte_us"] / ratio, 6)
        warmth["source"] += (f"; the cold extra divided by {ratio:.2f} (assumption: the host's speed that day "
                             "scales the cold extra as it does the back-to-back fork)")
    warmth["source"] += f"; raw samples: {rp.name}" + (f"; {note}" if note else "")
    prof["warmth"] = warmth
    prof.setdefault("diagnostics", {})["warmth"] = diag
    sections = ["warmth"]
    # a calibrate --raw file also holds the placement room loops (the fork family's sparse loop finds the other CPU
    # long idle, as a cold fork does): their section goes with the warmth, from the same measurement
    room = room_section(Store(runs=[x for x in r["runs"] if x["kind"] == ROOM_KIND]))
    if room is not None:
        room["source"] += f"; raw samples: {rp.name}"
        prof["placement_room"] = room
        sections.append("placement_room")
    kernel = (r.get("facts") or r.get("provenance") or {}).get("kernel")
    write_merged(path, prof, "merged_warmth", {
        "sections": sections, "note": f"python -m forksim.calibration.warmth_grid (raw: {rp}), kernel {kernel}"
        + (f"; {note}" if note else "")})
    return warmth


def main(argv: list[str] | None = None) -> int:
    """`python -m forksim.calibration.warmth_grid`: the cold-fork grid alone, measured (`measure`, under the
    exclusive measurement lock), and its fit merged into profile files (`merge`, or `measure --merge`):
    the `warmth` section is replaced, every other number stays; provenance.merged_warmth says how."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m forksim.calibration.warmth_grid", description=main.__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure", help="measure the cold-fork grid (about 2 minutes for full, 40 s for quick)")
    m.add_argument("--plan", choices=("smoke", "quick", "full"), default="full")
    m.add_argument("--cpu", type=int, default=None, help="pin to this CPU (default: the last)")
    m.add_argument("--raw", required=True, help="write the raw samples here (.json or .json.gz)")
    m.add_argument("--merge", action="append", default=[], metavar="PROFILE",
                   help="then merge the fit into this profile file (repeatable)")
    m.add_argument("--note", default="", help="added to the merged provenance (when, how quiet)")
    m.add_argument("--scale", action="store_true", help="divide the cold extra by the grid's back-to-back speed "
                   "relative to each profile's (when the host ran at another speed than the profile's day)")
    g = sub.add_parser("merge", help="fit a raw file (this command's, or calibrate --raw) into profile files")
    g.add_argument("raw")
    g.add_argument("profiles", nargs="+")
    g.add_argument("--note", default="")
    g.add_argument("--scale", action="store_true", help="as measure --scale")
    a = ap.parse_args(argv)
    try:
        _run(a)
    except (ForksimError, OSError, ValueError) as exc:
        print(f"python -m forksim.calibration.warmth_grid: {exc}", file=sys.stderr)
        return 2
    return 0


def _run(a: Any) -> None:
    import json

    if a.cmd == "measure":
        raw = measure_warmth(a.plan, a.cpu, progress=lambda s: print(s, flush=True))
        write_raw(a.raw, raw)
        warmth, diag = fit_warmth(Store(runs=raw["runs"]))
        for row in diag.get("cold_forks", []):
            print(f"{row['rss_bytes'] // MiB:5d} MiB {row['cond']:8s} {row['x']:>12g}  n={row['n']:3d}  "
                  f"fork p50 {row['fork_p50_us']:9.1f} us  gap p50 {row['gap_p50_us']:11.1f} us")
        print(json.dumps(warmth or diag.get("warmth_note"), indent=1))
        targets, note = a.merge, a.note
    else:
        targets, note = a.profiles, a.note
    for prof in targets:
        w = merge_into(a.raw, prof, note, scale=a.scale)
        src = w["source"]
        print(f"merged the warmth fit into {prof} ({src[src.find('the grid'):].split(';')[0]})")


if __name__ == "__main__":  # python -m forksim.calibration.warmth_grid measure|merge ...
    raise SystemExit(main())
