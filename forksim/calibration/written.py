"""Forks of an image its parent wrote since its last fork: dup_mmap's `per_written_pte_us`.

The fork sweep forks an image nobody writes between forks, so from its second fork on every PTE is read-only
and copy_present_pte copies it as it is. A page the parent wrote since has a writable PTE again (its write fault
reused the page once the child was gone), and the next fork also write-protects it (ptep_set_wrprotect, an
atomic update of the parent's PTE). forkbench -D alternates forks after a pass that writes one byte of every page
with forks after the same pass reading it, in one pinned process, so both halves share the host's drift; the
term is the difference of their p50s of fork()'s CPU time, per page, over the plan's sizes (tools/dirty_ptes.py
is the same measurement as a standalone tool: calibration/data/dirty-ptes-20261206.json).

`python -m forksim.calibration.written measure --raw RAW [--merge PROFILE]` measures these runs alone (under the
measurement lock); `merge RAW PROFILE...` fits a raw file (this command's or calibrate --raw's) into profile
files: dup_mmap's per_written_pte_us and its source, every other number as it was (provenance.merged_written).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

from ..errors import ForksimError, MeasurementError
from ..kernel.stages import DUP_MMAP
from ..profile import StageCost
from .fit import median
from .merge import write_merged
from .plan import PLANS, WRITTEN, MiB, Store, read_raw, write_raw

__all__ = ["WRITTEN", "halves", "fit_written", "with_written", "measure_written", "merge_into"]

PAGE = 4096


def halves(run: dict[str, Any]) -> tuple[float, float] | None:
    """p50 of fork()'s CPU time (us) after a read pass and after a write pass; None without both halves."""
    half = {d: [s["fork_cpu_ns"] / 1e3 for s in run["samples"] if s.get("dirty") == d] for d in (0, 1)}
    if not (half[0] and half[1]):
        return None
    return median(half[0]), median(half[1])


def fit_written(store: Store) -> dict[str, Any] | None:
    """The per-written-page term and its evidence, from the runs of kind WRITTEN; None where there are none.
    Per size the p50s of its runs' halves; the term is the extra over all sizes per page over all sizes (a
    least-squares slope through zero weighted by pages would let the largest size alone decide it)."""
    sizes: dict[int, list[tuple[float, float]]] = {}
    for run in store.select(WRITTEN):
        pair = halves(run)
        if pair is not None:
            sizes.setdefault(run["key"]["rss"], []).append(pair)
    if not sizes:
        return None
    rows = {}
    for rss, pairs in sorted(sizes.items()):
        clean, dirty = median([c for c, _ in pairs]), median([d for _, d in pairs])
        rows[rss] = {"pages": rss // PAGE, "read_p50_us": round(clean, 1), "written_p50_us": round(dirty, 1),
                     "extra_us": round(dirty - clean, 1), "runs": len(pairs)}
    pages = sum(r["pages"] for r in rows.values())
    per_page = max(0.0, sum(r["extra_us"] for r in rows.values()) / pages)
    for r in rows.values():
        r["extra_per_page_ns"] = round(r["extra_us"] / r["pages"] * 1e3, 2)
        r["term_error"] = round(per_page * r["pages"] / r["extra_us"] - 1.0, 3) if r["extra_us"] > 0 else None
    forks = sum(len(run["samples"]) for run in store.select(WRITTEN))
    by_size = ", ".join(f"{rss // MiB} MiB {r['read_p50_us']:,.0f} -> {r['written_p50_us']:,.0f} us "
                        f"({r['extra_per_page_ns']:.1f} ns a page)" for rss, r in rows.items())
    return {"per_written_pte_us": round(per_page, 7), "rows": {f"{rss // MiB}MiB": r for rss, r in rows.items()},
            "source": (f"measured: forkbench -D, pinned: forks after a pass writing one byte of every page of the "
                       f"image against forks after the same pass reading it, alternating in one process ({forks} "
                       f"forks); fork()'s CPU time p50 read -> written: {by_size}; the term: the sizes' extra "
                       f"over their pages")}


_SOURCE = "; per_written_pte_us: "  # where dup_mmap's source gives the term's


def with_written(cost: StageCost, fit: dict[str, Any] | None) -> StageCost:
    """dup_mmap with its per-written-page term and that term's provenance appended to its source."""
    if fit is None:
        return cost
    return cost.model_copy(update={"per_written_pte_us": fit["per_written_pte_us"],
                                   "source": f"{cost.source}{_SOURCE}{fit['source']}"})


def measure_written(plan: str, cpu: int) -> dict[str, Any]:
    """calibrate's runs of kind WRITTEN alone (the plan's written_sizes), pinned to `cpu`: a raw file's dict."""
    from ..lab.facts import machine_facts
    from . import bench
    from .jobs import written_jobs

    store = Store()
    for what, job in written_jobs(PLANS[plan], bench.build(), store, cpu):
        print(what, flush=True)
        job()
    return {"plan": plan, "cpu": cpu, "facts": machine_facts(),
            "started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "runs": store.runs}


def merge_into(raw_path: str, profile: str, note: str = "") -> dict[str, Any]:
    """Fit the WRITTEN runs of a raw file into a profile file's dup_mmap (its other numbers as they were)."""
    raw = read_raw(raw_path)
    fit = fit_written(Store(runs=[r for r in raw["runs"] if r["kind"] == WRITTEN]))
    if fit is None:
        raise MeasurementError(f"{raw_path}: no runs of kind {WRITTEN!r} (forkbench -D)")
    fit["source"] += f"; raw samples: {Path(raw_path).name}" + (f"; {note}" if note else "")
    path = Path(profile)
    prof = json.loads(path.read_text())
    dup = prof["stages"][DUP_MMAP]  # edited in place: the file's other keys stay as they were written
    dup["per_written_pte_us"] = fit["per_written_pte_us"]
    dup["source"] = f"{dup['source'].split(_SOURCE)[0]}{_SOURCE}{fit['source']}"  # replaces an earlier merge's
    prof.setdefault("diagnostics", {})["written_ptes"] = fit["rows"]
    kernel = (raw.get("facts") or {}).get("kernel")
    write_merged(path, prof, "merged_written", {
        "sections": [f"stages.{DUP_MMAP}.per_written_pte_us"], "note": f"python -m forksim.calibration.written "
        f"(raw: {raw_path}), kernel {kernel}" + (f"; {note}" if note else "")})
    return fit


def main(argv: list[str] | None = None) -> int:
    """`python -m forksim.calibration.written`: forks of a written image against a read one, measured alone
    (`measure`, under the measurement lock) and fitted into profile files (`merge`, or `measure --merge`)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m forksim.calibration.written", description=main.__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure", help="measure (quick: about 1.5 s, full: about 13 s)")
    m.add_argument("--plan", choices=sorted(PLANS), default="full")
    m.add_argument("--cpu", type=int, default=(os.cpu_count() or 1) - 1, help="pin to this CPU (default: the last)")
    m.add_argument("--raw", required=True, help="write the raw samples here (.json or .json.gz)")
    m.add_argument("--merge", action="append", default=[], metavar="PROFILE", help="then merge the fit (repeatable)")
    m.add_argument("--note", default="", help="added to the merged source (when, how quiet)")
    g = sub.add_parser("merge", help="fit a raw file (this command's, or calibrate --raw) into profile files")
    g.add_argument("raw")
    g.add_argument("profiles", nargs="+")
    g.add_argument("--note", default="")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "measure":
            raw = measure_written(a.plan, a.cpu)
            write_raw(a.raw, raw)
            fit = fit_written(Store(runs=raw["runs"]))
            print(json.dumps(fit, indent=1))
        for prof in a.merge if a.cmd == "measure" else a.profiles:
            fit = merge_into(a.raw, prof, a.note)
            print(f"merged per_written_pte_us {fit['per_written_pte_us'] * 1e3:.2f} ns a page into {prof}")
    except (ForksimError, OSError, ValueError, KeyError) as exc:
        print(f"python -m forksim.calibration.written: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # python -m forksim.calibration.written measure|merge ...
    raise SystemExit(main())
