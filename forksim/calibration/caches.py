"""The caches as a back-to-back fork's walk sees them: the miss fraction of a repeated walk by footprint.

copy_page_range (mm/memory.c: copy_pte_range -> copy_present_ptes) reads each parent PTE, write-protects
it, bumps the page's mapcount and refcount in its struct page (folio_try_dup_anon_rmap_ptes) and writes
the child's PTE; the child's exit (zap_pte_range) walks the same struct pages again before the next
fork. A back-to-back fork loop is so a cyclic, in-order walk over about 80 bytes per 4 KiB page
(CacheCurve.walk_bytes_per_pte). While that footprint fits in what the caches hold for this CPU, each
fork finds the lines the previous one left; past it, every fork fetches them from memory, and the
per-page cost rises (on the AMD EPYC VM the fork-size sweep's per-page cost rose from ~0.07-0.09 us at
16-64 MiB to ~0.10-0.12 us at 1 GiB, whose walk, 20 MiB, is past the knee).

forkbench `lines` measures exactly that walk's pattern without the kernel: passes over a private buffer
of each footprint, one write per 64-byte line in address order, CPU time per line. The miss fraction is
the per-line time between its small-footprint floor (cached) and its large-footprint ceiling (memory),
never falling with the footprint. Its knee sits where the caches this vCPU really gets end, which on a
VM can be far below the last-level cache sysfs reports (the host's other tenants share it).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np


from ..errors import MeasurementError
from . import bench
from .plan import MiB, Store

__all__ = ["LINES_KIND", "lines_job", "fit_cache_curve", "line_samples", "miss_curve", "miss_fraction", "FALLBACK_CURVE"]

LINES_KIND = "lines"
WALK_BYTES_PER_PTE = 80.0  # the parent's and the child's PTE (8 + 8 B) and the page's struct page (64 B)

# for a raw file measured before calibrate had the lines run: the curve k-fit measured on the AMD EPYC
# 2-vCPU Firecracker VM (Linux 6.18), 2026-12-02 04:32 UTC, three runs of
# `forkbench lines -c 1 -r 67108864 -n 1` (pinned, under the measurement lock), medians per footprint
FALLBACK_CURVE: dict[str, Any] = {
    "bytes": [262144.0, 2965504.0, 4190208.0, 5931008.0, 8384512.0, 11862016.0, 16773120.0, 23724032.0, 67104768.0],
    "miss": [0.0, 0.045, 0.105, 0.115, 0.158, 0.289, 0.739, 1.0, 1.0],
    "walk_bytes_per_pte": WALK_BYTES_PER_PTE,
    "source": ("assumption: no forkbench lines run in this calibration; the curve measured on the AMD EPYC 2-vCPU "
               "VM (Linux 6.18) on 2026-12-02 by three runs of `forkbench lines -c 1 -r 64MiB -n 1`, pinned: "
               "per-line time 1.24 ns cached, 7.0 ns from memory, knee 8-24 MiB; walk_bytes_per_pte 80: the "
               "parent's and the child's PTE, 8 + 8 B, and the struct page, 64 B"),
}


def lines_job(fb: str, store: Store, cpu: int, max_bytes: int, layout: str = "order") -> Callable[[], None]:
    """The lines run (about 1 s): footprints 256 KiB .. max_bytes on `cpu`; layout "random": each pass in
    one fixed random order (forkbench lines -L random: the scatter curve, layout.py)."""
    def run() -> None:
        argv = [fb, "lines", "-r", str(int(max_bytes)), "-n", "1", "-c", str(cpu)]
        try:
            _, samples, _, _ = bench.run_bench(argv + (["-L", layout] if layout != "order" else []))
        except MeasurementError as exc:
            store.notes.append(f"{'scatter' if layout != 'order' else 'cache'} curve not measured: {exc}")
            return
        key = {"cpu": cpu, "max_bytes": int(max_bytes)}
        store.add(LINES_KIND, key if layout == "order" else {**key, "layout": layout}, {}, samples)

    return run


def miss_curve(by: dict[int, list[float]], walk_bytes_per_pte: float,
               describe: Callable[[list[int], float, float], str]) -> dict[str, Any]:
    """A CacheCurve (profile_terms) from per-footprint line times: footprints, miss fractions, the walk's
    bytes per page, and the source `describe(footprints, cached ns, memory ns)` writes."""
    sizes, frac, hit, miss = miss_fraction(by)
    return {"bytes": [float(b) for b in sizes], "miss": [round(float(m), 4) for m in frac],
            "walk_bytes_per_pte": walk_bytes_per_pte, "source": describe(sizes, hit, miss)}


def miss_fraction(by: dict[int, list[float]]) -> tuple[list[int], np.ndarray, float, float]:
    """Footprints, their miss fractions, the cached and the memory per-line times (ns) of per-footprint
    line times: (t - cached) / (memory - cached), never falling (0 where no knee: t never rose 20%)."""
    sizes = sorted(by)
    t = np.array([np.median(by[b]) for b in sizes])
    hit, miss = float(np.median(t[:3])), float(np.median(t[-3:]))
    if miss <= 1.2 * hit:  # no knee within the footprints measured: the caches held them all
        frac = np.zeros_like(t)
    else:
        frac = np.maximum.accumulate(np.clip((t - hit) / (miss - hit), 0.0, 1.0))
    return sizes, frac, hit, miss


def line_samples(store: Store, layout: str | None = None) -> dict[int, list[float]]:
    """The lines runs' per-line times (ns) by footprint (bytes): in address order, or the `layout` given
    (forkbench lines -L: calibration/layout.py's random order)."""
    by: dict[int, list[float]] = {}
    for r in store.runs:
        if r["kind"] == LINES_KIND:
            for s in r["samples"]:
                if s.get("line_ns", 0) > 0 and s.get("layout") == layout:
                    by.setdefault(int(s["bytes"]), []).append(float(s["line_ns"]))
    return by


def fit_cache_curve(store: Store) -> dict[str, Any]:
    """The profile's cache_curve (profile_terms.CacheCurve) from the lines runs, else FALLBACK_CURVE."""
    by = line_samples(store)
    if len(by) < 6:
        return dict(FALLBACK_CURVE)
    return miss_curve(by, WALK_BYTES_PER_PTE, lambda sizes, hit, miss: (
        f"measured: forkbench lines, pinned: per-line CPU time of repeated in-order passes over "
        f"{sizes[0] // 1024} KiB .. {sizes[-1] // MiB} MiB ({len(sizes)} footprints), {hit:.2f} ns "
        f"cached (median of the 3 smallest), {miss:.2f} ns from memory (the 3 largest); miss fraction "
        f"= (t - cached) / (memory - cached), never falling; walk_bytes_per_pte 80: the parent's "
        f"and the child's PTE, 8 + 8 B, and the struct page, 64 B"))
