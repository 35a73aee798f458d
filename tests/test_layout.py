"""The image's physical layout in calibration (forksim/calibration/layout.py): the scatter curve and the
per-page scatter cost fitted from random-order vs in-order forks, the fork sweep corrected for its own
images' scatter, fresh_image_scatter, and the step skipped cleanly where pagemap cannot be read."""

from __future__ import annotations

import json
import os
import shutil
import sys

import numpy as np
import pytest

from forksim.calibration import bench, layout
from forksim.calibration.caches import LINES_KIND
from forksim.calibration.fork_path import fork_totals
from forksim.calibration.lifetime import fit_exit
from forksim.calibration.layout import RANDOM, SCATTERED, fit_layout, layout_reader, with_scatter
from forksim.calibration.plan import FORK_MODE, MiB, PLANS, Store
from forksim.calibration.samples import Evidence
from forksim.lab import PagemapUnreadable
from forksim.profile import CacheCurve, ImageShape, Profile, StageCost, load_profile

HAVE_CC = any(shutil.which(c) for c in (os.environ.get("CC") or "cc", "gcc", "clang"))
LINUX = sys.platform == "linux"

# the known answer: an in-order fork costs 60 + 0.09/page; a page out of order adds 0.17 us times the random
# walk's miss fraction (lines: 0 up to 2 MiB, 1 from 16 MiB) at 256 B per page: 64 MiB images miss 36%, 128 MiB
# 69%, 256 MiB all of it
FIXED, PER_PTE, SLOPE, BYTES = 60.0, 0.09, 0.17, 256.0
KNEE = {"bytes": [262144.0, 2 * MiB, 16 * MiB, 32 * MiB], "miss": [0.0, 0.0, 1.0, 1.0]}


def _lines(store: Store) -> None:
    """forkbench lines -L random samples whose miss fraction is KNEE (2 ns cached, 20 ns from memory)."""
    sizes = np.geomspace(256 * 1024, 32 * MiB, 22)
    curve = CacheCurve(**KNEE, source="t")
    samples = [{"b": "lines", "i": i, "bytes": int(b), "line_ns": 2.0 + 18.0 * curve.miss_at(b), "layout": RANDOM}
               for i, b in enumerate(sizes)]
    store.add(LINES_KIND, {"cpu": 1, "max_bytes": 32 * MiB, "layout": RANDOM}, {}, samples)


def _run(store: Store, kind: str, rss: int, rnd: int, scatter: float | None, rng, n: int = 41) -> None:
    ptes = rss // 4096 + 20
    curve = CacheCurve(**KNEE, walk_bytes_per_pte=BYTES, source="t")
    fork = FIXED + PER_PTE * ptes + SLOPE * ptes * (scatter or 0.0) * curve.walk_miss(ptes)
    exit_ = 40.0 + 0.1 * ptes + 0.5 * SLOPE * ptes * (scatter or 0.0) * curve.walk_miss(ptes)
    samples = [{"b": "fork", "i": i, "fork_ns": f * 1e3, "fork_cpu_ns": f * 1e3, "exit_ns": e * 1e3}
               for i, (f, e) in enumerate(zip(fork * rng.uniform(0.99, 1.01, n), exit_ * rng.uniform(0.99, 1.01, n)))]
    key = {"rss": rss, "anon_vmas": 0, "file_vmas": 0, "thp": False, "pinned": True, "traced": False,
           "mode": FORK_MODE, "round": rnd}
    shape = {"vmas": 26, "anon_vmas": 12, "ptes": ptes, "pmds": 0, "rss_bytes": rss}
    store.add(kind, key, shape, samples)
    if scatter is not None:
        # the frames of a random image spread over 4x a dense range (recorded beside the fit, not priced)
        spread = 4 if kind == SCATTERED else 1
        store.runs[-1]["layout"] = {"pages": ptes, "pairs": ptes - 1, "scatter": scatter,
                                    "struct_page_pages": ptes * spread // 64}


def _store(sweep_scatter: float = 0.3) -> Store:
    rng = np.random.default_rng(11)
    store = Store()
    _lines(store)
    for rnd in range(2):
        _run(store, FORK_MODE, 0, rnd, None, rng)
        for rss in (16 * MiB, 64 * MiB, 128 * MiB, 256 * MiB, 1024 * MiB):
            _run(store, FORK_MODE, rss, rnd, sweep_scatter, rng)
        for rss in (64 * MiB, 128 * MiB, 256 * MiB):
            _run(store, SCATTERED, rss, rnd, 1.0, rng)
    return store


def test_the_fit_recovers_the_scatter_slope_and_predicts_the_held_out_size():
    fit = fit_layout(_store(), held_out=(64 * MiB,))
    assert fit is not None and fit.curve is not None and fit.curve["walk_bytes_per_pte"] == 64.0  # the lines run's
    assert fit.footprint == {"dup_mmap": BYTES, "exit_mmap": BYTES}  # the forks' knee: fitted on 128 and 256 MiB
    assert fit.slope["dup_mmap"] == pytest.approx(SLOPE, rel=0.05)
    assert fit.slope["exit_mmap"] == pytest.approx(0.5 * SLOPE, rel=0.05)
    assert fit.fresh == [0.3] * 10  # the sweep's images of 16 MiB and more
    rows = {r["rss_bytes"]: r for r in fit.rows}
    assert rows[64 * MiB]["held_out"] and not rows[128 * MiB]["held_out"] and not rows[256 * MiB]["held_out"]
    assert 0.2 < rows[64 * MiB]["walk_miss"]["dup_mmap"] < 0.5  # the held-out size sits in the knee
    for r in rows.values():  # the held-out size too: its difference is predicted within the noise
        assert r["predicted_diff_us"]["dup_mmap"] == pytest.approx(r["diff_us"]["dup_mmap"], abs=0.03 * r["p50_order_us"]["dup_mmap"])
    assert "measured:" in fit.source["dup_mmap"] and "pagemap" in fit.source["dup_mmap"]
    assert rows[256 * MiB]["spread_random"] == pytest.approx(4.0, abs=0.01) and "= 256 B" in fit.source["dup_mmap"]


def test_the_sweep_fit_is_corrected_for_its_own_images_scatter():
    """The sweep's in-order images at scatter 0.45: without the correction the per-page cost would absorb
    0.45 x the scatter term at 256 MiB and 1 GiB; with it the fit finds the in-order per-page cost."""
    ev = Evidence(_store(sweep_scatter=0.45), cpu=1, traced=False)
    totals = fork_totals(ev, PLANS["quick"])
    assert totals.fit.coef["per_pte_us"] == pytest.approx(PER_PTE, rel=0.05)
    assert totals.fit.coef.get("per_pte_miss_us", 0.0) < 0.01
    assert ev.diag["image_layout"]["dup_mmap_scatter_term_taken_out_us"]["1GiB"] > 0
    held = dict((c.label, c) for c, _ in totals.held)["64MiB"]  # the quick plan's held-out sweep size
    assert held.scatter == 0.45  # measured; kept as measured (its prediction carries the term)
    # the child's exit alike (untraced: exit_ns against the image; truth 0.1 us per page in order)
    exit_mmap = fit_exit(ev)["exit_mmap"]
    assert exit_mmap.per_pte_us == pytest.approx(0.1, rel=0.05)
    assert ev.diag["image_layout"]["exit_mmap_scatter_term_taken_out_us"]["1GiB"] > 0


def test_a_pair_whose_in_order_image_is_nearly_random_prices_no_scatter():
    """A fresh VM's scattered free lists: the sweep's "in-order" images at scatter 0.9, and the random ones 5%
    slower than the model says (the host's drift between two runs). The pairs' contrast (1.0 vs 0.9) would
    multiply that drift by 9 into a slope whose term takes the sweep's whole per-page cost out; they are
    reported, not fitted, and the per-page cost stays."""
    store = _store(sweep_scatter=0.9)
    for r in store.runs:
        if r["kind"] == SCATTERED:
            r["samples"] = [{**x, "fork_ns": 1.05 * x["fork_ns"], "fork_cpu_ns": 1.05 * x["fork_cpu_ns"]}
                            for x in r["samples"]]
    fit = fit_layout(store, held_out=(64 * MiB,))
    assert fit.rows and "dup_mmap" not in fit.slope
    totals = fork_totals(Evidence(store, cpu=1, traced=False), PLANS["quick"])
    assert totals.fit.coef["per_pte_us"] >= PER_PTE


def test_the_terms_land_in_a_profile_that_loads_and_prices_the_scatter():
    fit = fit_layout(_store(), held_out=(64 * MiB,))
    base = load_profile("default")
    d = json.loads(base.model_dump_json(exclude_unset=True))
    for name in ("dup_mmap", "exit_mmap"):
        cost = with_scatter(base.stages[name], fit, name)
        assert cost.per_pte_scatter_us > 0 and cost.scatter_curve is not None
        assert "per_pte_scatter_us" in cost.source
        d["stages"][name] = cost.model_dump(mode="json", exclude_unset=True)
    d["fresh_image_scatter"] = {"value": 0.3, "source": "measured: test"}
    prof = Profile.model_validate(json.loads(json.dumps(d)))
    dm = prof.stages["dup_mmap"]
    shape = ImageShape(26, 12, 65556)
    assert dm.median_us(ImageShape(26, 12, 65556, scatter=1.0)) - dm.median_us(shape) == pytest.approx(
        dm.per_pte_scatter_us * 65556, rel=1e-6)
    assert prof.fresh_image_scatter is not None and prof.fresh_image_scatter.value == 0.3
    # no fit, or no slope: the stage is unchanged
    assert with_scatter(base.stages["dup_mmap"], None, "dup_mmap") is base.stages["dup_mmap"]


def _cold_b2b(store: Store, windows: dict[str, float], contrast: float = 0.5) -> None:
    """The cold grid's back-to-back forks of 256 MiB images in order, in runs of 16 and 8 pages and in a random
    order, their fork() and exit priced with a known scatter window each, the random order `contrast` over the
    in-order image."""
    from forksim.profile_terms import scatter_ramp

    for cond, sc in (("sleep", 0.01), ("runs:16", 1 / 16), ("runs:8", 1 / 8), ("random", 1.0)):
        fork = 1200.0 + 1200.0 * contrast * scatter_ramp(sc, windows["dup_mmap"])
        exit_ = 900.0 + 900.0 * contrast * scatter_ramp(sc, windows["exit_mmap"])
        samples = [{"fork_ns": fork * 1e3, "fork_cpu_ns": fork * 1e3, "exit_ns": exit_ * 1e3, "gap_ns": 0.0}] * 9
        store.add("cold", {"rss": 256 * MiB, "cond": cond, "x": 0, "llc_bytes": 32 * MiB}, {"ptes": 65556}, samples)
        store.runs[-1]["layout"] = {"pages": 65556, "pairs": 65555, "scatter": sc}


def test_images_touched_in_runs_give_the_warm_scatter_window():
    """A break every K pages costs the pages after it too: the window found from the cold grid's back-to-back
    runs of K pages lands in the stage's term, which then prices scatter_ramp(scatter, window)."""
    from forksim.profile_terms import scatter_ramp

    store = _store(sweep_scatter=0.1)  # within 4-6 pages after a break: 34-47% of the in-order images' pages
    _cold_b2b(store, {"dup_mmap": 4.0, "exit_mmap": 6.0})
    assert layout.fit_window(store, "dup_mmap") == pytest.approx(4.0, rel=0.02)
    assert layout.fit_window(store, "exit_mmap") == pytest.approx(6.0, rel=0.02)
    fit = fit_layout(store, held_out=(64 * MiB,))
    assert fit.window == pytest.approx({"dup_mmap": 4.0, "exit_mmap": 6.0}, rel=0.02)
    assert "scatter_window" in fit.source["dup_mmap"]
    cost = with_scatter(load_profile("default").stages["dup_mmap"], fit, "dup_mmap")
    assert cost.scatter_window == pytest.approx(4.0, rel=0.02)
    full, some, none = (cost.scatter_us(ImageShape(26, 12, 65556, scatter=s)) for s in (1.0, 0.1, 0.0))
    assert none == 0.0 and some == pytest.approx(full * scatter_ramp(0.1, cost.scatter_window), rel=1e-9)
    # without runs of K pages: window 1, the pages out of order alone (as before)
    assert layout.fit_window(_store(), "dup_mmap") == 1.0 and fit_layout(_store(), held_out=(64 * MiB,)).window == {}
    # a random order within this host's drift of the in-order image (+10%): no window is read from it
    weak = _store()
    _cold_b2b(weak, {"dup_mmap": 64.0, "exit_mmap": 64.0}, contrast=0.1)
    assert layout.fit_window(weak, "dup_mmap") == 1.0 and layout.fit_window(weak, "exit_mmap") == 1.0


def test_no_layout_measured_means_no_terms():
    store = Store()
    _run(store, FORK_MODE, 64 * MiB, 0, None, np.random.default_rng(1))
    assert fit_layout(store, held_out=()) is None
    # layouts but no random lines: the fresh scatter is kept, no slope is fitted
    store = _store()
    store.runs = [r for r in store.runs if r["kind"] != LINES_KIND]
    fit = fit_layout(store, held_out=(64 * MiB,))
    assert fit is not None and fit.curve is None and not fit.slope and fit.fresh
    assert with_scatter(StageCost(source="t"), fit, "dup_mmap") == StageCost(source="t")


def test_unreadable_pagemap_skips_the_step_with_one_note(monkeypatch):
    def refuse(pid):
        raise PagemapUnreadable(f"/proc/{pid}/pagemap: frame numbers read as 0 (needs CAP_SYS_ADMIN)")

    monkeypatch.setattr(layout, "image_layout", refuse)
    store, got = Store(), {}
    read = layout_reader(store, got)
    assert read is not None
    read(123)
    assert got == {} and len(store.notes) == 1 and "CAP_SYS_ADMIN" in store.notes[0]
    assert layout_reader(store, {}) is None  # not tried again
    assert fit_layout(store, held_out=()) is None


@pytest.mark.skipif(not (LINUX and HAVE_CC), reason="needs Linux and a C compiler")
def test_forkbench_random_touch_and_random_lines():
    """forkbench -L random builds a scattered image (read at the gate where pagemap allows) and lines -L
    random tags its samples; -L runs:8 breaks the frame order about every 8 pages, -L spread:16 spreads the struct pages
    16-fold; a bad -L value is refused."""
    b = bench.build()
    store, got = Store(), {}
    shape, samples, _, _ = bench.run_bench([str(b.forkbench), "fork", "-r", str(4 * MiB), "-n", "2", "-w", "0",
                                            "-L", RANDOM], on_ready=layout_reader(store, got))
    assert shape["rss_bytes"] == 4 * MiB and len(samples) == 2
    if got:  # root: frame numbers readable; a random touch leaves almost no page beside its neighbour
        lay = got["layout"]
        assert lay["pages"] >= 1024 and lay["scatter"] > 0.5
        assert lay["pages"] / 64 <= lay["struct_page_pages"] <= lay["pages"]  # dense .. one per frame
    else:
        assert "image layout not measured" in store.notes[0]
    _, lines, _, _ = bench.run_bench([str(b.forkbench), "lines", "-r", str(1 * MiB), "-n", "1", "-L", RANDOM])
    assert lines and all(s["layout"] == RANDOM and s["line_ns"] > 0 for s in lines)
    # runs of 8 pages in a random order of runs: a break in the frame order about every 8 pages, where the free
    # lists hand out frames in order (an in-order image comes out in order; a box whose free lists are already
    # scattered gives every layout its own scatter: 4-32 MiB in-order images at 0.8-0.95 seen on 2026-12-02)
    # spread:16, runs of 4 pages interleaved with another buffer's 60: 16 vmemmap pages where a dense image has one
    # (where the free lists hand out frames in order)
    scatter, spread = {}, {}
    for layout in ("order", "runs:8", "spread:16"):
        got = {}
        bench.run_bench([str(b.forkbench), "fork", "-r", str(4 * MiB), "-n", "1", "-w", "0", "-L", layout],
                        on_ready=layout_reader(store, got))
        scatter[layout] = got["layout"]["scatter"] if got else None
        spread[layout] = got["layout"]["struct_page_pages"] * 64 / got["layout"]["pages"] if got else None
    if scatter["order"] is not None and scatter["order"] < 0.05:
        assert 0.08 < scatter["runs:8"] < 0.25
        assert 12 < spread["spread:16"] <= 17 and spread["order"] < 2
    for bad in ("sideways", "runs:0", "spread:0"):
        with pytest.raises(Exception, match="-L takes order, random, runs:K or spread:K"):
            bench.run_bench([str(b.forkbench), "fork", "-L", bad])


def test_the_first_images_touched_are_reported_in_the_order_run():
    """The first three plain pinned fork images of 16 MiB and more, as run (a process started on its own meets the
    free lists as they did), whatever the sweep's median; the empty image and the scattered A/B images are not
    among them."""
    store = _store()
    # the first 16 MiB image (after the lines runs and the empty image) took a fragmented free list's frames
    store.runs[2]["layout"]["scatter"] = 0.45
    assert layout.first_images(store) == [(16 * MiB, 0.45), (64 * MiB, 0.3), (128 * MiB, 0.3)]
    assert layout.first_images(Store()) == []
