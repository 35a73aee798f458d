"""Each round of validate's interleaved cold rows against a profile's cold terms: which layout terms explain them.

    python tools/cold_rounds.py VALIDATION_JSON PROFILE [VALIDATION_JSON PROFILE ...]

Each pair is one validate window (validation.json from `forksim validate`, full set) and the quick profile
calibrated just before it. Per round of the K1 think rows (each round a fresh load-generator process, its image's
scatter and spread read from /proc/PID/pagemap), the measured fork() p50 over the window's back-to-back reference
(the median of the think1ms rounds of that size) is compared with the profile's dup_mmap cold extra at the round's
own layout, times the profile's coldness at the gap, under five pricings of the layout: both terms as the
profile has them (with per_spread the breaks' term over the spread), both at full weight, the spread term alone,
the breaks' term alone (spread 1), neither. Prints the error of the
round's fork() p50 (extra over its p50), its median and largest, per gap. A reading aid for choosing how the layout
terms combine (README "spread"), not a validation: no simulation, the think time's other costs ignored.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Callable

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]  # the forksim of this tree

from forksim.profile import ColdTerms, load_profile  # noqa: E402 - after the path

SIZES = ((64, 16384), (256, 65536))  # MiB, 4 KiB pages
GAPS_MS = (100, 1000)


def pricings(t: ColdTerms) -> dict[str, Callable[[int, float, float], float]]:
    no_breaks = t.model_copy(update={"per_scattered_pte_us": 0.0})

    def breaks(p: int, sc: float) -> float:  # the breaks' term at full weight
        return t.extra_us(p, sc, 1.0) - no_breaks.extra_us(p, sc, 1.0)

    return {"as the profile has them": lambda p, sc, sp: t.extra_us(p, sc, sp),
            "both at full weight": lambda p, sc, sp: no_breaks.extra_us(p, sc, sp) + breaks(p, sc),
            "the spread alone": lambda p, sc, sp: no_breaks.extra_us(p, sc, sp),
            "the breaks alone": lambda p, sc, sp: t.extra_us(p, sc, 1.0),
            "neither": lambda p, sc, sp: no_breaks.extra_us(p, sc, 1.0)}


def round_errors(report: dict, profile_path: str) -> dict[str, list[tuple[int, float]]]:
    prof = load_profile(profile_path)
    if prof.warmth is None or "dup_mmap" not in prof.warmth.stages:
        raise SystemExit(f"{profile_path}: no warmth terms for dup_mmap")
    w, rows = prof.warmth, {r["scenario"]: r for r in report["rows"]}
    out: dict[str, list[tuple[int, float]]] = {k: [] for k in pricings(w.stages["dup_mmap"])}
    for gap in GAPS_MS:
        cold = 1.0 - math.exp(-((gap * 1000.0 / w.tau_us) ** w.beta))
        for mib, pages in SIZES:
            row, ref = rows.get(f"closed-fork-K1-rss{mib}MiB-think{gap}ms"), rows.get(f"closed-fork-K1-rss{mib}MiB-think1ms")
            if row is None or ref is None or "rounds" not in row["measured_full"]:
                continue
            warm = float(np.median([r["fork_p50_us"] for r in ref["measured_full"]["rounds"]]))
            lay = row["measured_full"].get("image_layout") or {}
            for rnd, spread, scatter in zip(row["measured_full"]["rounds"], lay.get("spread", []), lay.get("runs", [])):
                for name, extra in pricings(w.stages["dup_mmap"]).items():
                    out[name].append((gap, (warm + cold * extra(pages, scatter, spread)) / rnd["fork_p50_us"] - 1.0))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pairs", nargs="+", help="VALIDATION_JSON PROFILE, repeated")
    args = ap.parse_args(argv)
    if len(args.pairs) % 2:
        ap.error("give a profile after each validation.json")
    errs: dict[str, list[tuple[int, float]]] = {}
    for vj, prof in zip(args.pairs[::2], args.pairs[1::2]):
        for name, v in round_errors(json.loads(Path(vj).read_text()), prof).items():
            errs.setdefault(name, []).extend(v)
    for name, v in errs.items():
        for gap in GAPS_MS:
            e = np.array([x for g, x in v if g == gap])
            if e.size:
                print(f"{name:24s} {gap:5d} ms: {e.size} rounds, fork() p50 error median |{np.median(abs(e)):.0%}| "
                      f"(signed {np.median(e):+.0%}), largest |{np.max(abs(e)):.0%}|")
    return 0


if __name__ == "__main__":
    sys.exit(main())
