"""Cold forks: the warmth state (forksim/kernel/warmth.py), the profile's `warmth` section and its fit."""

from __future__ import annotations

import json
import math
import os
import shutil
import sys

import numpy as np
import pytest
import simpy

from forksim.calibration.plan import MiB, Store
from forksim.calibration.warmth import fit_warmth
from forksim.config import parse_config
from forksim.errors import ProfileError
from forksim.kernel.mm import MM
from forksim.kernel.warmth import WarmthTracker

from conftest import REFERENCE_PROFILE
from forksim.locks import LockStats
from forksim.profile import FamilyCold, Fraction, ImageShape, Warmth, load_profile
from forksim.runner import run_experiment

CURVE = Warmth(tau_us=2000.0, beta=1.0, footprint_bytes=8 * MiB, migration=0.4,
               stages={"dup_mmap": {"fixed_us": 20.0, "per_pte_us": 0.04, "pte_cap": 20000}},
               source="assumption: test curve")
SHAPE = ImageShape(vmas=26, anon_vmas=12, ptes=16384)


def _mm(shape: ImageShape = SHAPE) -> MM:
    return MM(simpy.Environment(), shape, LockStats("mmap_lock"))


def test_coldness_grows_with_the_gap_and_saturates():
    w = WarmthTracker(CURVE, 2)
    mm = _mm()
    assert w.coldness(mm, 0, 0.0) == 1.0  # never walked
    w.walked(mm, 0, 0.0)
    c = [w.coldness(mm, 0, t) for t in (0.0, 500.0, 2000.0, 10000.0, 1e6)]
    assert c[0] == 0.0
    assert all(b > a for a, b in zip(c, c[1:-1]))
    assert c[2] == pytest.approx(1 - math.exp(-1))
    assert c[-1] == pytest.approx(1.0)


def test_other_walks_on_the_cpu_and_a_move_cool_the_image():
    w = WarmthTracker(CURVE, 2)
    mm, other = _mm(), _mm(ImageShape(ptes=100_000))
    w.walked(mm, 0, 0.0)
    w.walked(other, 0, 0.0)  # 8 MB of another image's metadata on CPU 0
    expect = 1 - math.exp(-80 * 100_000 / (8 * MiB))
    assert w.coldness(mm, 0, 0.0) == pytest.approx(expect)
    w.walked(other, 1, 0.0)  # walks on the other CPU do not evict CPU 0's caches
    assert w.coldness(mm, 0, 0.0) == pytest.approx(expect)
    w.walked(mm, 0, 0.0)
    assert w.coldness(mm, 1, 0.0) == pytest.approx(0.4)  # moved: the migration coldness


def test_extra_is_capped_and_absent_without_a_curve():
    w = WarmthTracker(CURVE, 1)
    assert w.extra_us("dup_mmap", 1.0, ImageShape(ptes=10_000)) == pytest.approx(20 + 400)
    assert w.extra_us("dup_mmap", 0.5, ImageShape(ptes=10**6)) == pytest.approx(0.5 * (20 + 800))
    assert w.extra_us("do_exit", 1.0, SHAPE) == 0.0
    none = WarmthTracker(None, 1)
    mm = _mm()
    assert none.coldness(mm, 0, 0.0) == 0.0 and none.extra_us("dup_mmap", 1.0, SHAPE) == 0.0


def test_a_cold_walk_prices_its_pages_out_of_physical_order_without_a_cap():
    terms = CURVE.stages["dup_mmap"].model_copy(update={"per_scattered_pte_us": 0.025})
    curve = CURVE.model_copy(update={"stages": {"dup_mmap": terms}})
    w = WarmthTracker(curve, 1)
    in_order = w.extra_us("dup_mmap", 1.0, ImageShape(ptes=10**6))
    assert in_order == pytest.approx(20 + 800)  # capped, as before
    scattered = w.extra_us("dup_mmap", 0.5, ImageShape(ptes=10**6, scatter=0.4))
    assert scattered == pytest.approx(0.5 * (20 + 800 + 0.025 * 10**6 * 0.4))
    # a what-if on the per-page copy scales both per-page cold terms; without the field: no layout term
    scaled = curve.scaled("dup_mmap", "per_pte_us", 0.5).stages["dup_mmap"]
    assert scaled.per_scattered_pte_us == pytest.approx(0.0125) and scaled.per_pte_us == pytest.approx(0.02)
    assert WarmthTracker(CURVE, 1).extra_us("dup_mmap", 1.0, ImageShape(ptes=10**6, scatter=1.0)) == in_order


def test_profiles_without_warmth_still_load():
    for name in ("default",):
        assert load_profile(name) is not None
    p = load_profile(REFERENCE_PROFILE).model_dump()
    p.pop("warmth", None)
    from forksim.profile import Profile

    assert Profile.model_validate(p).warmth is None


def test_a_bad_warmth_section_names_its_field(tmp_path):
    p = json.loads(json.dumps(load_profile(REFERENCE_PROFILE).model_dump()))
    p["warmth"] = {**CURVE.model_dump(), "tau_us": -1}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(p))
    with pytest.raises(ProfileError) as exc:
        load_profile(str(path))
    assert "warmth.tau_us" in str(exc.value)


def _loop(think_us: float, warmth: Warmth | None, other_work: int = 0) -> float:
    exp = parse_config({
        "experiment": {"name": "t", "duration": 600_000.0, "warmup": 50_000.0, "replications": 1, "seed": 3},
        "machine": {"cpus": 2, "profile": REFERENCE_PROFILE},
        "workload": {"kind": "closed", "parents": 1, "think_time": think_us, "other_work": other_work,
                     "image": {"rss": 64 * MiB, "vmas": 26}, "child": {"clone": "fork", "lifetime": 0.0}},
    }, resolved=True)  # us, bytes
    prof = load_profile(REFERENCE_PROFILE).model_copy(update={"warmth": warmth})
    return run_experiment(exp, profile=prof).summary["fork_latency_us"]["p50"]


def test_think_time_slows_the_fork_back_to_back_barely():
    warm0, cold0 = _loop(0.0, None), _loop(0.0, CURVE)
    warm, cold = _loop(20_000.0, None), _loop(20_000.0, CURVE)
    assert cold0 < warm0 * 1.05  # back to back: as calibrated
    extra = CURVE.stages["dup_mmap"].extra_us(SHAPE.ptes)
    assert cold - warm == pytest.approx(extra, rel=0.25)  # 20 ms = 10 tau: fully cold


def _run(rss: int, cond: str, x: float, p50_us: float, ptes: int, gap_us: float, exit_us: float = 1.0) -> dict:
    rng = np.random.default_rng(int(p50_us))
    samples = [{"fork_ns": v, "fork_cpu_ns": v, "exit_ns": exit_us * 1e3, "gap_ns": gap_us * 1e3}
               for v in p50_us * 1e3 * rng.uniform(0.99, 1.01, 21)]
    return {"kind": "cold", "key": {"rss": rss, "cond": cond, "x": x, "llc_bytes": 32 * MiB},
            "shape": {"ptes": ptes}, "samples": samples, "segments": []}


def test_fit_recovers_a_known_curve():
    tau, beta = 3000.0, 1.0
    fixed, per_pte = 50.0, 0.03
    store = Store()
    for rss, ptes, warm in ((64 * MiB, 16384, 1500.0), (256 * MiB, 65536, 6000.0)):
        e = fixed + per_pte * ptes
        for gap in (0, 1000, 10000, 100000, 1000000):
            c = 1 - math.exp(-((gap / tau) ** beta))
            store.runs.append(_run(rss, "sleep", gap, warm + c * e, ptes, gap))
        store.runs.append(_run(rss, "migrate", 0.0, warm + 0.3 * e, ptes, 0.0))
        store.runs.append(_run(rss, "work", 64 * MiB, warm + (1 - math.exp(-0.5)) * e, ptes, 0.0))
        # unpinned forks are compared with the model, never fitted: an absurd one changes nothing
        store.runs.append(_run(rss, "unpinned", 100000, 5 * warm, ptes, 100000))
    w, diag = fit_warmth(store)
    assert w is not None and diag["cold_forks"]
    assert w["tau_us"] == pytest.approx(tau, rel=0.1)
    d = w["stages"]["dup_mmap"]
    assert d["fixed_us"] + d["per_pte_us"] * 65536 == pytest.approx(fixed + per_pte * 65536, rel=0.05)
    assert w["migration"] == pytest.approx(0.3, abs=0.03)
    assert w["footprint_bytes"] == pytest.approx(128 * MiB, rel=0.1)
    Warmth.model_validate(w)


def test_a_curve_still_rising_at_100_ms_is_fitted_to_the_longest_sleep():
    """The 2026-12-03 Intel host: an image half as cold after 100 ms asleep as after 1 s (tau ~130 ms). The quick
    plan's shape: the first size at every gap up to 1 s, the others back to back and at 1 s, a third only at 100 ms
    (as older grids measured every size). Every size's fully cold extra comes back (a size measured at 100 ms only
    is scaled up by the curve there), and the layout term measured at 100 ms is the fully cold one too."""
    from forksim.calibration.cold_scatter import SCATTER_GAP

    tau, fixed, per_pte, per_sc = 130_000.0, 150.0, 0.005, 0.03
    store = Store()
    sizes = ((64 * MiB, 16384, 290.0, (0, 1000, 10_000, 100_000, 1_000_000)), (256 * MiB, 65536, 1150.0, (0, 1_000_000)),
             (0, 0, 23.0, (0, 1_000_000)), (1024 * MiB, 262144, 4600.0, (0, 100_000)))
    for rss, ptes, warm, gaps in sizes:
        for layout, sc in (("sleep", 0.0), ("random", 1.0)) if rss == 64 * MiB else (("sleep", 0.0),):
            for gap in gaps if layout == "sleep" else (0, SCATTER_GAP):
                c = 1 - math.exp(-gap / tau)
                p50 = warm + c * (fixed + per_pte * ptes + per_sc * ptes * sc)
                store.runs.append({**_run(rss, layout, gap, p50, ptes, gap), "layout": {"scatter": sc}})
    w, diag = fit_warmth(store)
    assert w["tau_us"] == pytest.approx(tau, rel=0.1)
    terms = Warmth.model_validate(w).stages["dup_mmap"]
    for ptes in (0, 16384, 65536, 262144):
        assert terms.extra_us(ptes) == pytest.approx(fixed + per_pte * ptes, rel=0.05)
    assert terms.per_scattered_pte_us == pytest.approx(per_sc, rel=0.05)
    # what was measured at each size's longest sleep is kept beside the fully cold extra it gave
    assert diag["warmth_fit"]["longest_sleep_extra_us"][str(1024 * MiB)][0] == 100_000
    assert diag["warmth_fit"]["cold_extra_us"][str(1024 * MiB)] == pytest.approx(fixed + per_pte * 262144, rel=0.05)

def test_fit_recovers_the_cold_extra_of_pages_out_of_order_and_corrects_the_in_order_one():
    """Images touched in a random order beside in-order ones, back to back and after 100 ms asleep: the
    slope through D = (random cold extra - in-order cold extra) on the pages out of order beyond the
    in-order image's; the in-order terms keep the in-order images' own (reference_scatter)."""
    from forksim.calibration.cold_scatter import SCATTER_GAP, fit_cold_scatter

    tau, fixed, per_pte, per_sc, warm_sc = 3000.0, 50.0, 0.03, 0.025, 0.004
    store = Store()
    for rss, ptes, warm in ((64 * MiB, 16384, 1500.0), (256 * MiB, 65536, 6000.0)):
        for layout, sc in (("sleep", 0.05), ("random", 0.999)):
            for gap in ((0, 1000, 10000, SCATTER_GAP, 1_000_000) if layout == "sleep" else (0, SCATTER_GAP)):
                c = 1 - math.exp(-gap / tau)
                p50 = warm + warm_sc * ptes * sc + c * (fixed + per_pte * ptes + per_sc * ptes * sc)
                store.runs.append({**_run(rss, layout, gap, p50, ptes, gap), "layout": {"scatter": sc}})
    w, diag = fit_warmth(store)
    d = w["stages"]["dup_mmap"]
    assert d["per_scattered_pte_us"] == pytest.approx(per_sc, rel=0.05)
    assert d["reference_scatter"] == pytest.approx(0.05)  # the in-order images' own: their terms include it
    terms = Warmth.model_validate(w).stages["dup_mmap"]
    for sc in (0.05, 0.5, 0.999):  # the extra the profile prices is the known one, in order and out of it
        assert terms.extra_us(65536, sc) == pytest.approx(fixed + per_pte * 65536 + per_sc * 65536 * sc, rel=0.05)
    assert [p["rss_bytes"] for p in diag["cold_scatter_pairs"]] == [64 * MiB, 256 * MiB]
    assert "per_scattered_pte_us" in w["source"] and w["tau_us"] == pytest.approx(tau, rel=0.1)
    Warmth.model_validate(w)
    # without random-order runs (or their layouts) there is no term, and the rest fits as before
    plain = Store()
    plain.runs = [r for r in store.runs if r["key"]["cond"] == "sleep"]
    w2, diag2 = fit_warmth(plain)
    assert "per_scattered_pte_us" not in w2["stages"]["dup_mmap"] and "cold_scatter_pairs" not in diag2
    assert fit_cold_scatter(diag2["cold_forks"]) == (None, 1.0, [])


def test_a_layout_a_b_without_contrast_prices_no_scatter_term_and_says_so():
    """On a guest whose free lists have fragmented, the in-order image comes out nearly as scattered as the random
    one: their difference in cold extra is noise over a few pages, and the slope through it is absurd (4.6 us a
    page, 2026-12-04). The fit leaves the term out and says why; the warmth section stays valid."""
    from forksim.calibration.cold_scatter import SCATTER_GAP

    tau, fixed, per_pte = 3000.0, 50.0, 0.03
    store = Store()
    for rss, ptes, warm in ((64 * MiB, 16384, 1500.0), (256 * MiB, 65536, 6000.0)):
        for layout, sc, noise in (("sleep", 0.99, 0.0), ("random", 0.999, 600.0)):
            for gap in ((0, 1000, 10000, SCATTER_GAP, 1_000_000) if layout == "sleep" else (0, SCATTER_GAP)):
                c = 1 - math.exp(-gap / tau)
                p50 = warm + c * (fixed + per_pte * ptes) + (noise if gap == SCATTER_GAP else 0.0)
                store.runs.append({**_run(rss, layout, gap, p50, ptes, gap), "layout": {"scatter": sc}})
    w, diag = fit_warmth(store)
    assert "per_scattered_pte_us" not in w["stages"]["dup_mmap"]
    assert "not priced" in diag["cold_scatter_note"] and "64 MiB 0.99" in diag["cold_scatter_note"]
    Warmth.model_validate(w)


def test_the_scatter_ramp_is_the_share_out_of_order_at_window_1_and_grows_with_the_window():
    from forksim.profile_terms import scatter_ramp

    for s in (0.0, 0.01, 0.3, 1.0):
        assert scatter_ramp(s, 1.0) == s
    assert scatter_ramp(0.0, 10.0) == 0.0 and scatter_ramp(1.0, 10.0) == 1.0
    assert scatter_ramp(0.1, 10.0) == pytest.approx(1 - 0.9 ** 10)
    values = [scatter_ramp(s, w) for w in (1.0, 4.0, 16.0) for s in (0.02, 0.1, 0.5)]
    assert values[0] < values[1] < values[2] and values[0] < values[3] < values[6]
    # a profile without the window prices the cold walk as before: per page out of order
    from forksim.profile import ColdTerms

    old = ColdTerms(fixed_us=5.0, per_pte_us=0.01, pte_cap=1e9, per_scattered_pte_us=0.02)
    assert old.extra_us(1000, 0.25) == pytest.approx(5.0 + 10.0 + 0.02 * 1000 * 0.25)
    windowed = old.model_copy(update={"scatter_window": 10.0})
    assert windowed.extra_us(1000, 0.25) == pytest.approx(15.0 + 0.02 * 1000 * (1 - 0.75 ** 10))
    # the in-order terms were measured at reference_scatter: only the share beyond it is priced again
    ref = windowed.model_copy(update={"reference_scatter": 0.05})
    assert ref.extra_us(1000, 0.02) == pytest.approx(15.0) and ref.extra_us(1000, 0.05) == pytest.approx(15.0)
    assert ref.extra_us(1000, 0.25) == pytest.approx(15.0 + 0.02 * 1000 * (0.95 ** 10 - 0.75 ** 10))


def test_fit_recovers_the_scatter_window_from_images_touched_in_runs():
    """Images touched in runs of 16 and 8 pages beside in-order and random ones (the quick plan's layouts),
    their cold extra made with a known window: the fit finds the window and the slope, and the profile prices
    every layout's extra as made."""
    from forksim.calibration.cold_scatter import SCATTER_GAP, fit_cold_scatter, runs_cond
    from forksim.profile_terms import scatter_ramp

    tau, fixed, per_pte, per_sc, window = 3000.0, 50.0, 0.005, 0.03, 9.0
    store = Store()
    layouts = {64 * MiB: (("sleep", 0.01), ("random", 0.999)),
               256 * MiB: (("sleep", 0.01), ("random", 0.999), (runs_cond(16), 1 / 16), (runs_cond(8), 1 / 8))}
    for rss, ptes, warm in ((64 * MiB, 16384, 300.0), (256 * MiB, 65536, 1200.0)):
        for cond, sc in layouts[rss]:
            for gap in ((0, 1000, 10000, SCATTER_GAP, 1_000_000) if cond == "sleep" else (0, SCATTER_GAP)):
                c = 1 - math.exp(-gap / tau)
                p50 = warm + 0.002 * ptes * sc + c * (fixed + per_pte * ptes + per_sc * ptes * scatter_ramp(sc, window))
                store.runs.append({**_run(rss, cond, gap, p50, ptes, gap), "layout": {"scatter": sc}})
    w, diag = fit_warmth(store)
    d = w["stages"]["dup_mmap"]
    assert d["scatter_window"] == pytest.approx(window, rel=0.1)
    assert d["per_scattered_pte_us"] == pytest.approx(per_sc, rel=0.05)
    terms = Warmth.model_validate(w).stages["dup_mmap"]
    for sc in (0.01, 1 / 8, 0.999):
        truth = fixed + per_pte * 65536 + per_sc * 65536 * scatter_ramp(sc, window)
        assert terms.extra_us(65536, sc) == pytest.approx(truth, rel=0.05)
    assert {p["layout"] for p in diag["cold_scatter_pairs"]} == {"random", "runs:16", "runs:8"}
    assert "scatter_window" in w["source"]
    Warmth.model_validate(w)
    # random order alone does not identify the window: it stays 1
    only_random = Store()
    only_random.runs = [r for r in store.runs if not r["key"]["cond"].startswith("runs:")]
    assert fit_cold_scatter(fit_warmth(only_random)[1]["cold_forks"])[1] == 1.0


def test_the_window_fit_uses_each_images_measured_breaks_where_read():
    """Runs of K pages break every K pages, not at random: with each image's after_break read (runs of K: a share
    min(1, m / K) within m pages), the fit finds the window that made the extras from those shares, where the
    independent-breaks ramp at the same scatter would not."""
    from forksim.calibration.cold_scatter import SCATTER_GAP, fit_cold_scatter, runs_cond
    from forksim.lab.pagemap import AFTER_BREAK_PAGES, within_window

    def curve(k: float) -> list[float]:
        return [min(1.0, m / k) for m in AFTER_BREAK_PAGES]

    per_sc, window, ptes = 0.03, 8.0, 65536
    table = []
    for cond, k in (("sleep", 200.0), ("random", 1.0), (runs_cond(32), 32.0), (runs_cond(16), 16.0)):
        ab = curve(k)
        for gap in (0, SCATTER_GAP):
            extra = per_sc * ptes * within_window(ab, window) if gap else 0.0
            table.append({"rss_bytes": 256 * MiB, "cond": cond, "x": gap, "scatter": 1.0 / k, "after_break": ab,
                          "fork_p50_us": 1200.0 + extra, "ptes": ptes})
    slope, w, pairs = fit_cold_scatter(table)
    assert w == pytest.approx(window, rel=0.05) and slope == pytest.approx(per_sc, rel=0.05)
    # without the curves the same extras read as independent breaks give another window
    plain = [{**t, "after_break": None} for t in table]
    assert abs(fit_cold_scatter(plain)[1] - window) > 0.1 * window


def test_the_quick_plan_forks_images_touched_in_runs_after_every_in_order_image():
    from forksim.calibration.cold_scatter import layout_jobs

    made = []
    grid = {(rss, gap) for rss in (64 * MiB, 256 * MiB, 0) for gap in (0, 100_000)}
    jobs = layout_jobs("quick", grid, lambda *a: made.append(a) or (lambda: None))
    assert len(jobs) == len(made) == 8  # random at 64 and 256 MiB, runs of 16 and 6 pages: each b2b and cold
    assert [a[4][-1] for a in made].count("runs:16") == 2 and all(a[4][-2] == "-L" for a in made)
    assert layout_jobs("smoke", {(16 * MiB, 0)}, lambda *a: None) == []


def test_every_layout_run_has_its_in_order_pair_in_the_plan():
    """The layout terms compare each image touched out of order with an in-order one of its size at the same two
    gaps: where the grid sleeps another longest gap at that size (the quick plan's 256 MiB: back to back and 1 s),
    the pair at SCATTER_GAP is added (without it the 2026-12-03 quick fit lost every 256 MiB pair)."""
    from forksim.calibration.cold_scatter import SCATTER_GAP, SCATTERED
    from forksim.calibration.plan import PLANS
    from forksim.calibration.warmth import cold_jobs

    for plan in ("quick", "full"):
        names = [d for d, _ in cold_jobs(PLANS[plan], "forkbench", Store(), 0, 1)]
        for rss in SCATTERED[plan][0]:
            for gap in (0, SCATTER_GAP):
                said = f"{gap / 1000:g} ms asleep"
                assert any(d.startswith(f"cold fork {rss // MiB}MiB after {said}")  # the pair's own run
                           or d.startswith(f"cold forks {rss // MiB}MiB after") and said in d for d in names)


def test_a_larger_image_whose_extra_falls_caps_the_fit_and_leaves_the_curve_alone():
    """The 2026-12-02 quick grid: cold extras 147, 1212 and 168 us at 0, 64 and 256 MiB (the 256 MiB
    back-to-back fork was itself cold). The fit goes through the rising sizes and caps at 64 MiB, and
    the coldness curve comes from the warm references only: 0.55 cold after 1 ms is no tau at the
    bound (before, 256 MiB pulled the 64 MiB extra down to 188 us and every point to fully cold)."""
    tau = 1300.0
    store = Store()
    for rss, ptes, warm, e in ((0, 0, 80.0, 147.0), (64 * MiB, 16409, 1253.0, 1212.0),
                               (256 * MiB, 65561, 8000.0, 168.0)):
        gaps = (0, 1000, 10000, 100000) if rss == 64 * MiB else (0, 100000)
        for gap in gaps:
            c = 1 - math.exp(-gap / tau)
            store.runs.append(_run(rss, "sleep", gap, warm + c * e, ptes, gap))
    w, _ = fit_warmth(store)
    d = w["stages"]["dup_mmap"]
    assert d["pte_cap"] == 16409
    extra = {p: d["fixed_us"] + d["per_pte_us"] * min(p, d["pte_cap"]) for p in (0, 16409, 65561)}
    assert extra[0] == pytest.approx(147.0, rel=0.05) and extra[16409] == pytest.approx(1212.0, rel=0.05)
    assert extra[65561] == extra[16409]
    assert w["tau_us"] == pytest.approx(tau, rel=0.15)


def test_a_host_cold_after_the_shortest_gap_keeps_the_back_to_back_fork_warm():
    """The 2026-12-02 05:40 quick grid: fully cold already 1 ms after the last walk. The fit once pushed tau
    to its 1 us bound, and the model then priced every back-to-back fork cold (+127% at 64 MiB). The warm
    reference, 90 us after the last walk (the empty image's exit and reap), stays warm."""
    store = Store()
    for rss, ptes, warm, e in ((0, 0, 83.0, 201.0), (64 * MiB, 16409, 1653.0, 2096.0)):
        for gap in ((0, 1000, 10000, 100000) if rss else (0, 100000)):
            store.runs.append(_run(rss, "sleep", gap, warm + (e if gap else 0.0), ptes, gap, exit_us=90.0))
    w, _ = fit_warmth(store)
    curve = Warmth.model_validate(w)
    def cold(gap_us: float) -> float:
        return 1.0 - math.exp(-((gap_us / curve.tau_us) ** curve.beta))
    assert cold(90.0) < 0.05 and cold(1000.0) > 0.9
    assert "coldness 0 at 90 us" in w["source"]


def test_fit_finds_no_terms_without_an_effect():
    store = Store()
    for gap in (0, 10000, 100000):
        store.runs.append(_run(64 * MiB, "sleep", gap, 1500.0, 16384, gap))
    w, diag = fit_warmth(store)
    assert w is None and "no cold extra" in diag["warmth_note"]


def test_calibrate_cold_check_and_warm_predict():
    from forksim.commands.calibrate import cold_check
    from forksim.predict import predict

    rows = cold_check(REFERENCE_PROFILE, [{"cond": "sleep", "x": x, "rss_bytes": 64 * MiB, "fork_p50_us": 1000.0,
                                   "vmas": 26, "anon_vmas": 12} for x in (0, 100_000)]
                      + [{"cond": "migrate", "x": 0, "rss_bytes": 64 * MiB, "fork_p50_us": 1.0},
                         {"cond": "unpinned", "x": 100_000, "rss_bytes": 64 * MiB, "fork_p50_us": 1000.0, "vmas": 26}])
    assert [(r["cond"], r["x"]) for r in rows] == [("sleep", 0), ("sleep", 100_000), ("unpinned", 100_000)]
    assert rows[2]["forksim_p50_us"] > rows[0]["forksim_p50_us"]  # after a sleep on either CPU: cold too
    rows = rows[:2]
    work = cold_check(REFERENCE_PROFILE, [{"cond": "work", "x": 64 * MiB, "rss_bytes": rss, "fork_p50_us": 1000.0,
                                           "fork_wall_p50_us": 2000.0, "gap_p50_us": 6000.0, "vmas": 26,
                                           "anon_vmas": 12} for rss in (32 * MiB, 64 * MiB)])
    # after the co-runner's sweep the child runs inside fork() once the fork (1.8 ms at 64 MiB in this profile)
    # outlasts the parent's slice (1.5 ms, measured on the profile's 2-CPU host): compared by wall time. A 32 MiB fork
    # (0.9 ms) returns first: a parent pinned on this machine (2 CPUs, as CI's) keeps that slice, where a one-CPU
    # machine's kernel would scale it to 0.75 ms
    assert work[1]["measured_p50_us"] == 2000.0 and work[1]["forksim_p50_us"] > 1.5 * rows[1]["forksim_p50_us"]
    alone = cold_check(REFERENCE_PROFILE, [{"cond": "sleep", "x": 100_000, "rss_bytes": 32 * MiB, "fork_p50_us": 1000.0,
                                            "vmas": 26, "anon_vmas": 12}])
    assert work[0]["forksim_p50_us"] == pytest.approx(alone[0]["forksim_p50_us"], rel=0.1)
    prof = load_profile(REFERENCE_PROFILE)
    extra = prof.warmth.stages["dup_mmap"].extra_us(16410)
    assert rows[1]["forksim_p50_us"] - rows[0]["forksim_p50_us"] == pytest.approx(extra, rel=0.3)
    # predict(warm=True): the back-to-back figure the held-out sizes are measured at
    cold = predict(64 * MiB, vmas=26, cpus=1, samples=60)["fork_latency_us"]["p50"]
    warm = predict(64 * MiB, vmas=26, cpus=1, samples=60, warm=True)["fork_latency_us"]["p50"]
    assert warm < cold < warm + extra


def test_a_whatif_on_the_pte_copy_scales_its_cold_extra():
    prof = load_profile(REFERENCE_PROFILE)
    w = prof.with_whatif({"dup_mmap.per_pte_us": 0.0, "dup_mmap.per_vma_us": 2.0}).warmth
    assert w.stages["dup_mmap"].per_pte_us == 0.0
    assert w.stages["dup_mmap"].pte_cap == prof.warmth.stages["dup_mmap"].pte_cap
    assert prof.with_whatif({"dup_mmap.per_vma_us": 2.0}).warmth == prof.warmth


def test_other_work_in_the_think_time_cools_the_image_by_its_bytes():
    curve = CURVE.model_copy(update={"tau_us": 1e7})  # time alone barely cools: the bytes decide
    extra = CURVE.stages["dup_mmap"].extra_us(SHAPE.ptes)
    still = _loop(200.0, curve)
    swept = _loop(200.0, curve, other_work=8 * MiB)  # one footprint: 1 - e^-1 of the extra
    flooded = _loop(200.0, curve, other_work=1024 * MiB)
    assert swept - still == pytest.approx((1 - math.exp(-1)) * extra, rel=0.3)
    assert flooded - still == pytest.approx(extra, rel=0.2)
    assert _loop(200.0, None, other_work=1024 * MiB) == pytest.approx(_loop(200.0, None), rel=0.02)  # no curve


def test_touched_bytes_count_only_on_their_cpu():
    w = WarmthTracker(CURVE, 2)
    mm = _mm()
    w.walked(mm, 0, 0.0)
    w.touched(1, 64 * MiB)
    assert w.coldness(mm, 0, 0.0) == 0.0
    w.touched(0, 8 * MiB)
    assert w.coldness(mm, 0, 0.0) == pytest.approx(1 - math.exp(-1))


@pytest.mark.parametrize("workload", [
    {"kind": "closed", "other_work": "16MiB"},  # no think time to run in
    {"kind": "open", "rate": "100/s", "think_time": "1ms", "other_work": "16MiB"},
])
def test_other_work_needs_a_closed_loop_with_think_time(workload):
    from forksim.errors import ConfigError

    with pytest.raises(ConfigError) as exc:
        parse_config({"workload": workload})
    assert "workload.other_work" in str(exc.value)
    with pytest.raises(ConfigError, match="other_work"):
        parse_config({"workload": {"kind": "closed", "think_time": "1ms", "other_work": 16}})  # no unit


def test_merge_a_calibration_raw_file_into_a_profile(tmp_path):
    """The cold runs a calibrate --raw kept are fitted and merged additively, with provenance."""
    from pathlib import Path

    from forksim.calibration.warmth_grid import main

    raw = Path(__file__).parents[1] / "calibration/data/firecracker-6.18-quick-20261201.raw.json.gz"
    prof = tmp_path / "p.json"
    before = json.loads((Path(__file__).parents[1] / "forksim/profiles/default.json").read_text())
    prof.write_text(json.dumps(before))
    assert main(["merge", str(raw), str(prof), "--note", "test"]) == 0
    after = json.loads(prof.read_text())
    assert after["warmth"] != before["warmth"] and "raw samples: " + raw.name in after["warmth"]["source"]
    assert after["provenance"]["merged_warmth"]["sections"] == ["warmth"]
    assert "test" in after["provenance"]["merged_warmth"]["note"]
    assert {k: v for k, v in after.items() if k not in ("warmth", "diagnostics", "provenance")} == \
        {k: v for k, v in before.items() if k not in ("warmth", "diagnostics", "provenance")}
    Warmth.model_validate(after["warmth"])
    assert "the grid's back-to-back fork() p50 / the profile's: 64 MiB" in after["warmth"]["source"]
    prof.write_text(json.dumps(before))
    assert main(["merge", str(raw), str(prof), "--scale"]) == 0  # the host ran ~2x slower that day
    scaled = json.loads(prof.read_text())["warmth"]
    ratio = after["warmth"]["stages"]["dup_mmap"]["per_pte_us"] / scaled["stages"]["dup_mmap"]["per_pte_us"]
    import re

    said = float(re.search(r"divided by ([\d.]+)", scaled["source"]).group(1))
    assert 1.5 < ratio < 3 and said == pytest.approx(ratio, rel=0.01)
    assert main(["merge", str(tmp_path / "missing.json.gz"), str(prof)]) == 2  # one line, exit 2


def test_merge_takes_the_placement_room_loops_where_the_raw_file_has_them(tmp_path):
    """A calibrate --raw file's room loops (the fork family's sparse loop among them) go into placement_room with
    the warmth, from the same measurement; the remote pairs give warmth.remote."""
    from pathlib import Path

    from forksim.calibration.warmth_grid import main
    from forksim.profile import Profile

    raw = Path(__file__).parents[1] / "calibration/data/intel-xeon-warmth-room-20261203.raw.json.gz"
    prof = tmp_path / "p.json"
    prof.write_text((Path(__file__).parents[1] / "forksim/profiles/default.json").read_text())
    assert main(["merge", str(raw), str(prof)]) == 0
    after = json.loads(prof.read_text())
    assert after["provenance"]["merged_warmth"]["sections"] == ["warmth", "placement_room"]
    fork = after["placement_room"]["families"]["fork"]
    assert fork["idle_us"][-1] >= 1000.0 and fork["local"][-1] > 0.9  # the sparse loop: the other CPU idle long
    assert "64 MiB, 1 ms asleep after each" in after["placement_room"]["source"]
    assert set(after["warmth"]["remote"]) == {"dup_mmap", "exit_mmap"}
    Profile.model_validate(after)


@pytest.mark.kernel
@pytest.mark.skipif(__import__("forksim.lab", fromlist=["compiler"]).compiler() is None, reason="no C compiler")
def test_the_cold_grid_alone_keeps_its_raw_samples(tmp_path):
    import gzip

    from forksim.calibration.warmth_grid import main

    raw = tmp_path / "w.raw.json.gz"
    rc = main(["measure", "--plan", "smoke", "--raw", str(raw)])
    data = json.loads(gzip.decompress(raw.read_bytes()))
    assert rc == 0 and data["plan"] == "smoke" and data["facts"]["kernel"]
    conds = {r["key"]["cond"] for r in data["runs"]}
    assert {"sleep", "work"} <= conds and all(r["kind"] == "cold" for r in data["runs"])
    assert all(s["gap_ns"] >= 0 and s["fork_cpu_ns"] > 0 for r in data["runs"] for s in r["samples"])


def test_the_cold_grid_records_each_images_spread_and_calibrate_notes_a_fragmented_one(capsys):
    """The in-order images' struct-page spread (vmemmap pages x 64 / pages) is kept in the cold grid's rows and
    shown after calibrate's cold table, with a note where it says the free lists were fragmented."""
    from forksim.commands import calibrate as cmd

    store = Store()
    for rss, ptes, sp_pages in ((64 * MiB, 16384, 853), (256 * MiB, 65536, 1024)):
        for gap in (0, 100_000):
            lay = {"scatter": 0.07, "pages": ptes, "struct_page_pages": sp_pages}
            store.runs.append({**_run(rss, "sleep", gap, 300.0 + gap / 500, ptes, gap), "layout": lay})
    store.runs.append(_run(0, "sleep", 0, 25.0, 0, 0))
    rows = fit_warmth(store)[1]["cold_forks"]
    assert {(r["rss_bytes"], r["spread"]) for r in rows if r["rss_bytes"]} == {(64 * MiB, 3.33), (256 * MiB, 1.0)}
    assert next(r for r in rows if r["rss_bytes"] == 0)["spread"] is None  # no layout read
    cmd._spread_line(rows)
    out = capsys.readouterr().out
    assert "64 MiB scatter 0.070 spread 3.33" in out and "256 MiB scatter 0.070 spread 1.00" in out
    assert "note: the free lists handed the 64 MiB image(s)" in out
    cmd._spread_line([{**r, "spread": 1.1} for r in rows if r["rss_bytes"]])
    assert "note:" not in capsys.readouterr().out


def test_a_cold_walk_grows_with_the_images_spread_where_the_terms_say_so():
    """per_spread: the per-page cold extra is per page at spread 1 and grows with how many vmemmap pages the image's
    struct pages sit on; older terms (no per_spread) price every image as measured, whatever its spread."""
    from forksim.profile import ColdTerms

    old = ColdTerms(fixed_us=150.0, per_pte_us=0.005, pte_cap=1e9)
    new = old.model_copy(update={"per_spread": True})
    assert old.extra_us(65536, 0.0, 3.0) == old.extra_us(65536) == pytest.approx(150.0 + 327.68)
    assert new.extra_us(65536, 0.0, 1.0) == old.extra_us(65536)
    assert new.extra_us(65536, 0.0, 3.0) == pytest.approx(150.0 + 3 * 327.68)
    curve = CURVE.model_copy(update={"stages": {"dup_mmap": new}})
    w = WarmthTracker(curve, 1)
    assert w.extra_us("dup_mmap", 0.5, ImageShape(ptes=65536, spread=3.0)) == pytest.approx(0.5 * (150 + 3 * 327.68))
    # the breaks' term, measured on dense images, overlaps the spread's on a spread image: it shrinks as 1 / spread
    breaks = new.model_copy(update={"per_scattered_pte_us": 0.02})
    dense, spread4 = breaks.extra_us(65536, 1.0, 1.0), breaks.extra_us(65536, 1.0, 4.0)
    assert dense == pytest.approx(150.0 + 327.68 + 0.02 * 65536)
    assert spread4 == pytest.approx(150.0 + 4 * 327.68 + 0.02 * 65536 / 4)
    old_breaks = old.model_copy(update={"per_scattered_pte_us": 0.02})
    assert old_breaks.extra_us(65536, 1.0, 4.0) == old_breaks.extra_us(65536, 1.0, 1.0) == pytest.approx(dense)


def test_a_cold_walk_stops_growing_once_every_struct_page_misses():
    """saturated_per_pte_us: the spread and breaks' terms grow until each page pays one demand miss (the
    2026-12-06 Intel host: 64 MiB after 100 ms asleep, 9 / 16 / 20 ns a page at spread 1 / 2 / 4, 37-47 from 8 to 32),
    then stay there; never below the dense image's own per-page term; without the bound, as before."""
    from forksim.profile import ColdTerms

    terms = ColdTerms(fixed_us=100.0, per_pte_us=0.005, pte_cap=1e9, per_spread=True, per_scattered_pte_us=0.02,
                      scatter_window=6.0)
    bounded = terms.model_copy(update={"saturated_per_pte_us": 0.03})
    got = [bounded.extra_us(16384, min(1.0, 0.02 * s), s) for s in (1, 2, 4, 8, 16, 32, 64)]
    assert got == sorted(got)  # never falls as the spread grows
    assert got[-1] == pytest.approx(100.0 + 0.03 * 16384) and got[-2] == got[-1]
    assert got[0] == terms.extra_us(16384, 0.02, 1.0)  # below the bound: unchanged
    assert bounded.extra_us(16384, 1.0, 1.0) == terms.extra_us(16384, 1.0, 1.0)  # a dense random order: below it
    assert terms.extra_us(16384, 0.5, 32) > 100.0 + 0.03 * 16384 * 5  # unbounded, the spread term runs on
    # a bound under the dense image's own per-page term leaves that term alone
    tight = terms.model_copy(update={"saturated_per_pte_us": 0.001})
    assert tight.extra_us(16384, 0.5, 16) == pytest.approx(100.0 + 0.005 * 16384)


def test_fit_bounds_the_layout_terms_at_the_random_orders_median_extra_a_page():
    """Images touched in a random order at two sizes beside in-order ones whose spread was read: the bound is the
    median over sizes of the random order's fully cold extra a page beyond fixed_us (measured at 100 ms, scaled by the
    curve's coldness there); none where the spread is not priced or no random order was measured."""
    from forksim.calibration.cold_scatter import SCATTER_GAP, saturated_per_pte

    tau, fixed, per_pte = 30_000.0, 60.0, 0.004
    random_per_page = {64 * MiB: 0.040, 256 * MiB: 0.030}
    store = Store()
    for rss, ptes, warm in ((0, 0, 23.0), (64 * MiB, 16384, 300.0), (256 * MiB, 65536, 1200.0)):
        for cond in ("sleep", "random") if rss else ("sleep",):
            for gap in (0, 1000, 10_000, SCATTER_GAP, 1_000_000) if cond == "sleep" else (0, SCATTER_GAP):
                c = 1 - math.exp(-gap / tau)
                full = fixed + (per_pte if cond == "sleep" else random_per_page[rss]) * ptes
                run = _run(rss, cond, gap, warm + c * full, ptes, gap)
                if rss:
                    run["layout"] = {"scatter": 0.01 if cond == "sleep" else 0.999, "pages": ptes,
                                     "struct_page_pages": ptes // 64}
                store.runs.append(run)
    w, diag = fit_warmth(store)
    d = w["stages"]["dup_mmap"]
    assert d["per_spread"] is True
    assert d["saturated_per_pte_us"] == pytest.approx(0.035, rel=0.05)
    assert "saturated_per_pte_us" in w["source"]
    terms = Warmth.model_validate(w).stages["dup_mmap"]
    assert terms.extra_us(65536, 0.5, 32.0) == pytest.approx(d["fixed_us"] + d["saturated_per_pte_us"] * 65536)
    pairs = diag["cold_scatter_pairs"]
    assert saturated_per_pte([p for p in pairs if p["layout"] != "random"], 1.0, fixed) is None
    for r in store.runs:  # no spread read: the spread is not priced, nor bounded
        r.get("layout", {}).pop("struct_page_pages", None)
    assert "saturated_per_pte_us" not in fit_warmth(store)[0]["stages"]["dup_mmap"]


def test_fit_prices_the_cold_extra_per_page_at_spread_one():
    """The 2026-12-03 quick grid: 64 MiB in-order images at spread 6.3 (the free lists handed out frames among
    others'), 256 MiB at 1.35. Fitted per page as measured, the 64 MiB extra set a per-page slope five times the
    256 MiB one and a cap at 64 MiB; per unit of spread both sizes give the same slope."""
    fixed, per_pte = 160.0, 0.0045
    store = Store()
    for rss, ptes, warm, spread in ((0, 0, 23.0, None), (64 * MiB, 16384, 300.0, 6.3), (256 * MiB, 65536, 1200.0, 1.35)):
        for gap in (0, 1000, 100_000, 1_000_000) if rss == 64 * MiB else (0, 1_000_000):
            c = 1 - math.exp(-gap / 130_000.0)
            run = _run(rss, "sleep", gap, warm + c * (fixed + per_pte * ptes * (spread or 1.0)), ptes, gap)
            if spread:
                run["layout"] = {"scatter": 0.01, "pages": ptes, "struct_page_pages": round(ptes * spread / 64)}
            store.runs.append(run)
    w, diag = fit_warmth(store)
    d = w["stages"]["dup_mmap"]
    assert d["per_spread"] is True and d["pte_cap"] >= 65536
    assert d["per_pte_us"] == pytest.approx(per_pte, rel=0.05) and d["fixed_us"] == pytest.approx(fixed, rel=0.05)
    assert diag["warmth_fit"]["spread"] == {str(64 * MiB): 6.3, str(256 * MiB): 1.35}
    assert "per_spread" in w["source"]
    # without the images' struct pages counted, the terms are per page as measured (no per_spread)
    for r in store.runs:
        r.pop("layout", None)
    assert "per_spread" not in fit_warmth(store)[0]["stages"]["dup_mmap"]


def test_the_image_spread_comes_from_the_config_else_the_profile(tmp_path):
    from forksim.config import parse_config
    from forksim.errors import ConfigError
    from forksim.profile import Spread, load_profile

    base = {"experiment": {"name": "s", "duration": "10ms", "replications": 1},
            "workload": {"kind": "closed", "parents": 1, "image": {"rss": "64MiB"}}}
    prof = load_profile(REFERENCE_PROFILE)
    exp = parse_config(base)
    assert exp.workload.image.spread_used(prof) == (1.0, "default (neither the config nor the profile states it)")
    fresh = prof.model_copy(update={"fresh_image_spread": Spread(value=2.5, source="assumption: test")})
    assert exp.workload.image.spread_used(fresh) == (2.5, "profile fresh_image_spread")
    stated = parse_config({**base, "workload": {**base["workload"], "image": {"rss": "64MiB", "spread": 4}}})
    assert stated.workload.image.spread_used(fresh) == (4.0, "config")
    with pytest.raises(ConfigError, match="spread"):
        parse_config({**base, "workload": {**base["workload"], "image": {"rss": "64MiB", "spread": 0.5}}})


def test_the_spread_is_fitted_at_every_rounds_image_not_the_first_rounds():
    """Rounds of the grid are separate processes whose images sit at different spreads; the pooled extra is theirs
    together, so the per-page term divides it by the median of all of them (the first round's alone put the
    2026-12-03 AMD full grid's 64 MiB slope at 0.6 of this), and fresh_image_spread's fragments say the same."""
    from forksim.calibration.warmth import grid_spreads

    fixed, per_pte, ptes = 160.0, 0.0045, 16384
    store = Store()
    for rnd, spread in enumerate((6.0, 3.0, 3.2)):
        for gap in (0, 1000, 100_000, 1_000_000):
            c = 1 - math.exp(-gap / 130_000.0)
            run = _run(64 * MiB, "sleep", gap, 300.0 + c * (fixed + per_pte * ptes * 3.2), ptes, gap)
            run["layout"] = {"scatter": 0.01, "pages": ptes, "struct_page_pages": round(ptes * spread / 64)}
            store.runs.append(run)
    store.runs.append(_run(0, "sleep", 0, 23.0, 0, 0))
    store.runs.append(_run(0, "sleep", 1_000_000, 23.0 + fixed, 0, 1_000_000))
    assert grid_spreads(store) == {64 * MiB: 3.2}
    w, diag = fit_warmth(store)
    assert diag["warmth_fit"]["spread"] == {str(64 * MiB): 3.2}
    assert w["stages"]["dup_mmap"]["per_pte_us"] == pytest.approx(per_pte, rel=0.05)


def test_a_fresh_images_spread_follows_its_size_from_the_fragments_the_grid_found():
    """With fragments (the vmemmap pages beyond a dense range's, by size) an image of P pages sits at 1 + 64 F / P:
    F / P interpolated in log2(P) between the measured sizes, F held beyond the largest, F / P below the smallest,
    the spread within 1..64; a config that states its own spread keeps it; without fragments every size gets the
    value."""
    from forksim.config import parse_config
    from forksim.profile import Spread, load_profile

    sp = Spread(value=1.1, fragments=[(16384, 600.0), (65536, 1200.0)], source="assumption: test")
    assert sp.at(16384) == pytest.approx(1 + 64 * 600 / 16384)
    assert sp.at(32768) == pytest.approx(1 + 64 * (600 / 16384 + 1200 / 65536) / 2)  # the share, halfway in log2
    assert sp.at(262144) == pytest.approx(1 + 64 * 1200 / 262144)  # held beyond the largest
    assert sp.at(4096) == sp.at(256) == sp.at(16384)  # below the smallest size: its share; the empty image: the value
    assert sp.at(0) == 1.1 and Spread(value=1.1, fragments=[(16384, 1e6)], source="test").at(65536) == 64.0
    assert Spread(value=1.1, source="assumption: test").at(16384) == 1.1
    assert sp.at(1 << 20) < sp.at(65536) < sp.at(16384)  # the same fragments are a smaller share of a larger image
    prof = load_profile(REFERENCE_PROFILE).model_copy(update={"fresh_image_spread": sp})
    base = {"experiment": {"name": "s", "duration": "10ms", "replications": 1},
            "workload": {"kind": "closed", "parents": 1, "image": {"rss": "128MiB"}}}
    assert parse_config(base).workload.image.spread_used(prof) == (
        round(1 + 64 * (600 / 16384 + 1200 / 65536) / 2, 4), "profile fresh_image_spread at this image's size")
    stated = parse_config({**base, "workload": {**base["workload"], "image": {"rss": "128MiB", "spread": 2}}})
    assert stated.workload.image.spread_used(prof) == (2.0, "config")


def test_a_fresh_images_scatter_follows_its_size_from_the_breaks_the_grid_found():
    """With breaks (pages out of frame order, by size) an image of P pages sits at B / P: the share interpolated in
    log2(P) between the measured sizes, B held beyond the largest (a larger image dilutes them), the share held below
    the smallest; the model prices a config without a scatter there and says so; a stated scatter is kept."""
    from forksim.config import parse_config
    from forksim.profile import Scatter, load_profile

    sc = Scatter(value=0.02, breaks=[(16384, 1300.0), (65536, 9600.0)], source="assumption: test")
    assert sc.at(16384) == pytest.approx(1300 / 16384)
    assert sc.at(32768) == pytest.approx((1300 / 16384 + 9600 / 65536) / 2)  # the share, halfway in log2
    assert 1300 / 16384 < sc.at(32768) < 9600 / 65536  # never beyond its neighbours' shares
    assert sc.at(1 << 20) == pytest.approx(9600 / (1 << 20))  # held beyond the largest: a smaller share
    assert sc.at(1024) == sc.at(16384) and sc.at(0) == 0.02  # below the smallest: its share; empty: the value
    assert Scatter(value=0.02, source="assumption: test").at(65536) == 0.02
    prof = load_profile(REFERENCE_PROFILE).model_copy(update={"fresh_image_scatter": sc})
    base = {"experiment": {"name": "s", "duration": "10ms", "replications": 1},
            "workload": {"kind": "closed", "parents": 1, "image": {"rss": "256MiB"}}}
    assert parse_config(base).workload.image.scatter_used(prof) == (
        round(9600 / 65536, 4), "profile fresh_image_scatter at this image's size")
    stated = parse_config({**base, "workload": {**base["workload"], "image": {"rss": "256MiB", "scatter": 0.5}}})
    assert stated.workload.image.scatter_used(prof) == (0.5, "config")


def test_the_fresh_scatter_by_size_is_the_cold_grids_slept_in_order_images():
    """grid_scatters: per size but the empty image, the median over the rounds of the grid's slept in-order images;
    the images touched out of order (random, runs of K pages) are not a fresh process's layout."""
    from forksim.calibration.warmth import grid_scatters

    store = Store()
    for rnd, scatter in enumerate((0.30, 0.10, 0.12)):
        for cond in ("sleep", "random"):
            run = _run(64 * MiB, cond, 1000, 900.0, 16384, 1000)
            run["layout"] = {"scatter": scatter if cond == "sleep" else 0.999, "pages": 16384}
            store.runs.append(run)
    store.runs.append(_run(0, "sleep", 0, 23.0, 0, 0))
    assert grid_scatters(store) == {64 * MiB: 0.12}
    assert grid_scatters(Store()) is None


def test_a_more_spread_image_forks_slower_cold_and_the_summary_says_so():
    from forksim.predict import predict

    prof = load_profile(REFERENCE_PROFILE)
    terms = prof.warmth.stages["dup_mmap"].model_copy(update={"per_spread": True})
    prof = prof.model_copy(update={"warmth": prof.warmth.model_copy(update={"stages": {"dup_mmap": terms}})})
    got = {s: predict(64 * MiB, profile=prof, samples=200, spread=s, seed=3) for s in (1.0, 4.0)}
    assert got[4.0]["fork_latency_us"]["p50"] > got[1.0]["fork_latency_us"]["p50"]
    assert got[4.0]["spread"] == {"value": 4.0, "from": "config", "priced": True}
    # back to back the image is warm: the spread changes nothing
    warm = {s: predict(64 * MiB, profile=prof, samples=200, spread=s, seed=3, warm=True) for s in (1.0, 4.0)}
    assert warm[4.0]["fork_latency_us"]["p50"] == warm[1.0]["fork_latency_us"]["p50"]


def test_a_cold_fork_stops_slowing_once_the_spread_saturates():
    """With the bound, a cold fork slows as its image's struct pages spread, up to where every one is a demand miss,
    then no further (64 MiB after 100 ms asleep, pinned: 1,032 us at spread 32 measured, calibration/data)."""
    from forksim.predict import predict

    prof = load_profile(REFERENCE_PROFILE)
    dup = prof.warmth.stages["dup_mmap"]  # bounded where the dense image's per-page term has grown 8-fold
    terms = dup.model_copy(update={"per_spread": True, "saturated_per_pte_us": 8 * dup.per_pte_us})
    prof = prof.model_copy(update={"warmth": prof.warmth.model_copy(update={"stages": {"dup_mmap": terms}})})
    p50 = {s: predict(64 * MiB, profile=prof, samples=200, spread=s, scatter=0.5 * s / 32, seed=3,
                      gap_us=1e6)["fork_latency_us"]["p50"] for s in (1.0, 4.0, 16.0, 32.0)}
    assert p50[1.0] < p50[4.0] < p50[16.0]
    assert p50[32.0] == pytest.approx(p50[16.0], rel=0.02)


RESIDUAL = CURVE.model_copy(update={"residual": [(0.0, 0.5), (20_000.0, 0.25)],
                                    "stages": {**CURVE.stages, "exit_mmap": CURVE.stages["dup_mmap"]}})


def test_a_walk_begun_cold_leaves_its_share_of_that_coldness():
    w = WarmthTracker(RESIDUAL, 2)
    mm = _mm()  # 16,384 pages: 0.5 + (0.25 - 0.5) * 16384 / 20000 of its coldness stays
    share = 0.5 - 0.25 * 16384 / 20000
    w.walked(mm, 0, 0.0, coldness=0.8)
    assert w.coldness(mm, 0, 0.0) == pytest.approx(share * 0.8)
    # the next walk right after leaves its share of that, and time cools the image from there
    w.walked(mm, 0, 0.0, coldness=w.coldness(mm, 0, 0.0))
    assert w.coldness(mm, 0, 0.0) == pytest.approx(share * share * 0.8)
    assert w.coldness(mm, 0, 2000.0) == pytest.approx(1 - (1 - share * share * 0.8) * math.exp(-1))
    w.walked(mm, 0, 0.0)  # a warm walk leaves it warm
    assert w.coldness(mm, 0, 0.0) == 0.0
    # beyond the last point the share is flat; without points nothing stays
    assert RESIDUAL.residual_at(10**7) == 0.25 and CURVE.residual_at(0.0) == 0.0


@pytest.mark.parametrize("points", [[(10.0, 0.2), (5.0, 0.3)], [(0.0, 1.5)], [(5.0, 0.1), (5.0, 0.2)]])
def test_residual_points_are_checked(points):
    with pytest.raises(ValueError, match="residual points"):
        Warmth.model_validate({**CURVE.model_dump(), "residual": points})


def _rt(warmth: Warmth | None, think_us: float = 0.0, lifetime_us: float = 0.0) -> tuple[float, float]:
    """fork() p50 and round-trip p50 of a 64 MiB closed loop on one CPU (us)."""
    exp = parse_config({
        "experiment": {"name": "t", "duration": 4_000_000.0, "warmup": 200_000.0, "replications": 1, "seed": 5},
        "machine": {"cpus": 1, "profile": REFERENCE_PROFILE},
        "workload": {"kind": "closed", "parents": 1, "think_time": think_us,
                     "image": {"rss": 64 * MiB, "vmas": 26}, "child": {"clone": "fork", "lifetime": lifetime_us}},
    }, resolved=True)  # us, bytes
    prof = load_profile(REFERENCE_PROFILE).model_copy(update={"warmth": warmth})
    res = run_experiment(exp, profile=prof)
    return res.summary["fork_latency_us"]["p50"], res.summary["roundtrip_latency_us"]["p50"]


def test_a_childs_exit_pays_the_cold_image_it_finds():
    """After a sleep the fork finds the image fully cold; its child, exiting at once, pays the residual share of
    exit_mmap's cold extra (the fork's walk left that much cold); a child that lived 20 ms (10 tau) pays it all,
    and the next fork right after its exit pays the residual share of its own. Back to back: as calibrated."""
    full = RESIDUAL.stages["exit_mmap"].extra_us(SHAPE.ptes + 26)  # the loop's image: 64 MiB and its base pages
    share = RESIDUAL.residual_at(16384 + 26)
    f0, rt0 = _rt(None, think_us=20_000.0)
    f1, rt1 = _rt(RESIDUAL, think_us=20_000.0)
    fork_full = RESIDUAL.stages["dup_mmap"].extra_us(16384 + 26)
    assert f1 - f0 == pytest.approx(fork_full, rel=0.1)
    assert (rt1 - rt0) - (f1 - f0) == pytest.approx(share * full, rel=0.15)
    f2, rt2 = _rt(None, lifetime_us=20_000.0)
    f3, rt3 = _rt(RESIDUAL, lifetime_us=20_000.0)
    assert f3 - f2 == pytest.approx(share * fork_full, rel=0.15)  # after a cold exit
    assert (rt3 - rt2) - (f3 - f2) == pytest.approx(full, rel=0.15)
    # without the exit terms and the residual the same loops cost what they did
    assert _rt(CURVE, think_us=20_000.0)[1] - rt0 == pytest.approx(f1 - f0, rel=0.1)
    back, back_cold = _rt(None), _rt(RESIDUAL)
    assert back_cold[1] == pytest.approx(back[1], rel=0.02)


def test_fit_recovers_the_exits_cold_terms_and_the_residual():
    """Per size: back to back, after 1 s asleep (the fork fully cold, its child's exit right after at the residual
    share), and the child asleep 1 s before its exit (the exit fully cold, the next fork at the residual share; the
    run's first fork follows a warm-up's exit and is left out)."""
    tau, fork_fixed, fork_pte, exit_fixed, exit_pte = 30_000.0, 150.0, 0.02, 200.0, 0.025
    share = {26: 0.3, 16410: 0.25, 65561: 0.6}
    store = Store()
    for rss, ptes in ((0, 26), (64 * MiB, 16410), (256 * MiB, 65561)):
        warm_fork, warm_exit = 25.0 + 0.02 * ptes, 27.0 + 0.026 * ptes
        fork_full, exit_full, r = fork_fixed + fork_pte * ptes, exit_fixed + exit_pte * ptes, share[ptes]
        for gap in (0, 10_000, 100_000, 1_000_000):
            c = 1 - math.exp(-gap / tau)
            store.runs.append(_run(rss, "sleep", gap, warm_fork + c * fork_full, ptes, gap,
                                   exit_us=warm_exit + r * c * exit_full))
        exit_run = _run(rss, "exit", 1_000_000, warm_fork + r * fork_full, ptes, 0.0, exit_us=warm_exit + exit_full)
        for i, x in enumerate(exit_run["samples"]):
            x["i"] = i
        exit_run["samples"][0]["fork_cpu_ns"] = warm_fork * 1e3  # after a warm-up's exit: warm
        store.runs.append(exit_run)
    w, diag = fit_warmth(store)
    e = w["stages"]["exit_mmap"]
    for ptes in (26, 65561):
        assert e["fixed_us"] + e["per_pte_us"] * ptes == pytest.approx(exit_fixed + exit_pte * ptes, rel=0.05)
    assert {p: s for p, s in w["residual"]} == pytest.approx(share, abs=0.03)
    assert "exit_mmap" in w["source"] and "residual" in w["source"]
    Warmth.model_validate(w)


def test_a_sizes_gaps_run_interleaved_with_each_gaps_reps():
    """The sleeps, spins and co-runner sweeps of a size are one forkbench cold -G run: passes enough for the rarest gap,
    each gap repeated in a pass as often as its reps ask (so the back-to-back reference is measured beside the cold
    forks)."""
    from forksim.calibration.warmth import SLEEP, SPIN, WORK, _interleaved

    passes, items = _interleaved([(0, 20, SLEEP), (1000, 12, SLEEP), (1_000_000, 4, SLEEP), (10_000, 8, SPIN),
                                  (16 * MiB, 6, WORK)], 1)
    assert passes == 4 and items == ["0"] * 5 + ["1000"] * 3 + ["1000000"] + ["S10000"] * 2 + [f"W{16 * MiB}"] * 2
    passes, items = _interleaved([(0, 60, SLEEP), (1_000_000, 4, SLEEP)], 3)
    assert passes == 2 and items == ["0"] * 10 + ["1000000"]  # 2 passes a round, 3 rounds: 60 and 6 forks


def test_the_quick_plan_cools_an_exit_at_every_size():
    from forksim.calibration.plan import PLANS
    from forksim.calibration.warmth import GRIDS, cold_jobs

    names = [what for what, _ in cold_jobs(PLANS["quick"], "forkbench", Store(), 0, 1)]
    for rss in GRIDS["quick"][0]:
        assert any(n.startswith(f"cold exit {rss // MiB}MiB after the child slept 300 ms") for n in names)


def test_the_quick_plan_reaches_1_s_asleep_at_its_first_size_and_300_ms_at_the_others():
    """The coldness curve's shape comes from the first size, up to 1 s; the others' longest sleep is 300 ms (the fit
    divides their extra by the curve there)."""
    from forksim.calibration.plan import PLANS
    from forksim.calibration.warmth import GRIDS, cold_jobs

    names = [what for what, _ in cold_jobs(PLANS["quick"], "forkbench", Store(), 0, 1)]
    first, *others = GRIDS["quick"][0]
    assert any(n.startswith(f"cold forks {first // MiB}MiB after ") and "1000 ms asleep" in n for n in names)
    for rss in others:
        grid = next(n for n in names if n.startswith(f"cold forks {rss // MiB}MiB after "))
        assert "300 ms asleep" in grid and "1000 ms" not in grid


def test_an_exit_on_another_cpu_refreshes_the_time_and_leaves_its_residual():
    """A child that exits on the other CPU: the image stays on its own CPU (walked_cpu), its time is refreshed, and
    the residual is what that exit's walk left."""
    w = WarmthTracker(RESIDUAL, 2)
    mm = _mm()
    w.walked(mm, 0, 0.0, coldness=1.0)
    share = RESIDUAL.residual_at(SHAPE.ptes)
    w.exit_walked(mm, 1, 5000.0, coldness=0.5)
    assert mm.walked_cpu == 0 and mm.walked_at == 5000.0
    assert w.coldness(mm, 0, 5000.0) == pytest.approx(share * 0.5, rel=0.01)


def test_a_fork_exec_child_zaps_the_image_as_an_exit_does():
    """exec_mmap drops the inherited image: with exit terms, the parent's image was last walked by the exec's zap
    (on the child's CPU, after the fork's own walk), so a fork_exec loop's images are walked once more a creation."""
    exp = parse_config({
        "experiment": {"name": "t", "duration": 200_000.0, "warmup": 0.0, "replications": 1, "seed": 5},
        "machine": {"cpus": 1, "profile": REFERENCE_PROFILE},
        "workload": {"kind": "closed", "parents": 1, "think_time": 20_000.0,
                     "image": {"rss": 64 * MiB, "vmas": 26}, "child": {"clone": "fork_exec"}},
    }, resolved=True)  # us, bytes
    cold = run_experiment(exp, profile=load_profile(REFERENCE_PROFILE).model_copy(update={"warmth": RESIDUAL}))
    warm = run_experiment(exp, profile=load_profile(REFERENCE_PROFILE).model_copy(update={"warmth": CURVE}))
    # the exec's zap after a cold fork pays the residual share of exit_mmap's cold extra: the round trip grows by it
    extra = RESIDUAL.residual_at(16384 + 26) * RESIDUAL.stages["exit_mmap"].extra_us(16384 + 26)
    got = cold.summary["roundtrip_latency_us"]["p50"] - warm.summary["roundtrip_latency_us"]["p50"]
    assert got == pytest.approx(extra, rel=0.2)


def test_predict_states_the_gap_and_the_childs_life():
    """`forksim predict --gap 1s`: the fork finds the image fully cold, and its child's exit right after pays the residual
    share of exit_mmap's cold extra; `--child-life 1s --gap 0us`: the exit is fully cold and the fork after it pays
    the residual share of its own. Each against the same loop without warmth terms (which the gap does not move)."""
    from forksim.predict import predict

    pages = 16384 + 26  # 64 MiB and the base image
    share, fork_full = RESIDUAL.residual_at(pages), RESIDUAL.stages["dup_mmap"].extra_us(pages)
    exit_full = RESIDUAL.stages["exit_mmap"].extra_us(pages)

    def extras(**kw) -> tuple[float, float]:
        """(fork p50, round trip p50 - fork p50) with the terms, less the same without any."""
        got = []
        for w in (RESIDUAL, None):
            r = predict(64 * MiB, vmas=26, profile=load_profile(REFERENCE_PROFILE).model_copy(update={"warmth": w}), cpus=1,
                        samples=200, seed=3, **kw)
            f = r["fork_latency_us"]["p50"]
            got.append((f, r["roundtrip_latency_us"]["p50"] - f))
        return got[0][0] - got[1][0], got[0][1] - got[1][1]

    fork, child = extras(gap_us=1e6)
    assert fork == pytest.approx(fork_full, rel=0.1) and child == pytest.approx(share * exit_full, rel=0.15)
    fork, child = extras(gap_us=0.0, child_life_us=1e6)
    assert fork == pytest.approx(share * fork_full, rel=0.15) and child == pytest.approx(exit_full, rel=0.15)
    fork, child = extras(gap_us=0.0)
    assert abs(fork) < 0.02 * fork_full and abs(child) < 0.02 * exit_full  # back to back: as calibrated


@pytest.mark.skipif(not (sys.platform == "linux" and shutil.which("gcc") and len(os.sched_getaffinity(0)) >= 2),
                    reason="needs Linux, gcc and two CPUs")
@pytest.mark.parametrize("warm", [2, 3])
def test_forkbench_moves_the_parent_at_every_fork(warm):
    """forkbench cold -M alternates the parent between its CPU and the next one whatever the warm-up count (an odd
    count once left it on its own CPU: the move computed from the parity of a negative index pinned to CPU -1,
    which means no pin), so the warmth grid's `migrate` runs measure a fork after a move."""
    from forksim.calibration import bench

    cpu = min(os.sched_getaffinity(0))
    if cpu + 1 not in os.sched_getaffinity(0):
        pytest.skip("needs two neighbouring CPUs")
    fb = str(bench.build().forkbench)
    _, samples, _, _ = bench.run_bench([fb, "cold", "-r", str(1 * MiB), "-n", "6", "-w", str(warm), "-c", str(cpu),
                                        "-M"])
    ran = [s["cpu"] for s in samples]
    assert set(ran) == {cpu, cpu + 1} and all(a != b for a, b in zip(ran, ran[1:]))


@pytest.mark.skipif(not (sys.platform == "linux" and shutil.which("gcc")), reason="needs Linux and gcc")
def test_forkbench_alternates_written_and_read_images():
    """forkbench fork -D (tools/dirty_ptes.py): the forks alternate between an image written since the last fork
    (odd samples) and one only read, and each sample says which (its halves are compared within one process)."""
    from forksim.calibration import bench

    fb = str(bench.build().forkbench)
    _, samples, _, _ = bench.run_bench([fb, "fork", "-r", str(1 * MiB), "-n", "6", "-w", "3",
                                        "-c", str(min(os.sched_getaffinity(0))), "-D"])
    assert [s["dirty"] for s in samples] == [0, 1, 0, 1, 0, 1]


@pytest.mark.skipif(not (sys.platform == "linux" and shutil.which("gcc")), reason="needs Linux and gcc")
def test_forkbench_interleaves_the_gaps_each_pass_in_its_own_order():
    """forkbench cold -G: every pass runs each listed gap once (a sleep, or a spin with an S prefix), in a shuffled
    order, and each sample says which gap it followed (the interleaved cold grid splits them by it)."""
    from forksim.calibration import bench

    fb = str(bench.build().forkbench)
    _, samples, _, _ = bench.run_bench([fb, "cold", "-r", str(1 * MiB), "-n", "6", "-w", "1",
                                        "-c", str(min(os.sched_getaffinity(0))), "-G", "0,0,2000,S3000"])
    got = [(s["x_us"], s["spin"]) for s in samples]
    passes = [sorted(got[i:i + 4]) for i in range(0, 24, 4)]
    assert len(got) == 24 and all(p == [(0, 0), (0, 0), (2000, 0), (3000, 1)] for p in passes)
    assert len({tuple(got[i:i + 4]) for i in range(0, 24, 4)}) > 1  # not the same order every pass
    for s in samples:  # the gap measured is the one asked for (a sleep overshoots by its wake-up, long on a busy box)
        assert s["x_us"] * 1000 <= s["gap_ns"] < s["x_us"] * 1000 + 50_000_000


REMOTE = Warmth.model_validate({**CURVE.model_dump(), "remote": {"dup_mmap": {"per_pte_us": 0.03, "pte_cap": 16384},
                                                                  "exit_mmap": {"per_pte_us": 0.012, "pte_cap": 16384}}})


def test_an_exit_on_another_cpu_moves_the_lines_there_where_the_profile_prices_them():
    """With Warmth.remote a child's exit on the other CPU moves the image there: the parent's next fork on its own CPU
    pays the remote terms on the part still cached (1 - coldness) and the cold terms on the rest; no `migration`."""
    w = WarmthTracker(REMOTE, 2)
    mm = _mm()
    w.walked(mm, 0, 0.0)
    extra, cold = w.cold_walk("exit_mmap", mm, 1, 100.0, mm.shape)  # the child's exit, on the other CPU
    assert cold == pytest.approx(1 - math.exp(-100.0 / CURVE.tau_us))  # time alone: no migration share
    assert extra == pytest.approx((1 - cold) * 0.012 * 16384)  # no cold exit terms in this curve
    w.exit_walked(mm, 1, 200.0, cold)
    assert mm.walked_cpu == 1
    extra, cold = w.cold_walk("dup_mmap", mm, 0, 200.0, mm.shape)  # the parent's next fork, right after
    full = CURVE.stages["dup_mmap"].extra_us(SHAPE.ptes)
    assert cold == 0.0 and extra == pytest.approx(0.03 * 16384)
    extra, cold = w.cold_walk("dup_mmap", mm, 0, 200.0 + CURVE.tau_us, mm.shape)  # a tau later: partly evicted
    assert extra == pytest.approx(cold * full + (1 - cold) * 0.03 * 16384)
    assert w.cold_walk("dup_mmap", mm, 1, 200.0, mm.shape) == (0.0, 0.0)  # where the lines are: warm
    # without remote terms: the exit leaves the image on the parent's CPU, a fork there is warm
    old = WarmthTracker(CURVE, 2)
    mm2 = _mm()
    old.walked(mm2, 0, 0.0)
    old.exit_walked(mm2, 1, 200.0)
    assert mm2.walked_cpu == 0 and old.cold_walk("dup_mmap", mm2, 0, 200.0, mm2.shape) == (0.0, 0.0)


def _unpinned(warmth: Warmth | None, pin: bool, rss: int = 64 * MiB, local: float | None = None) -> tuple[float, float]:
    """fork() p50 and round-trip p50 of a closed loop (a 64 MiB image unless `rss`) on two CPUs, pinned or not (us);
    `local`: the placement's share of children kept on the parent's CPU while the other idles (else the profile's)."""
    exp = parse_config({
        "experiment": {"name": "t", "duration": 1_000_000.0, "warmup": 50_000.0, "replications": 1, "seed": 7},
        "machine": {"cpus": 2, "profile": REFERENCE_PROFILE},
        "workload": {"kind": "closed", "parents": 1, "pin": pin, "image": {"rss": rss, "vmas": 26},
                     "child": {"clone": "fork", "lifetime": 0.0}},
    }, resolved=True)  # us, bytes
    prof = load_profile(REFERENCE_PROFILE)
    placement = prof.placement if local is None else {
        **prof.placement, "fork_local_when_idle": Fraction(value=local, source="assumption: test")}
    res = run_experiment(exp, profile=prof.model_copy(update={"warmth": warmth, "placement": placement}))
    return res.summary["fork_latency_us"]["p50"], res.summary["roundtrip_latency_us"]["p50"]


def test_children_exiting_on_the_other_cpu_slow_the_next_fork_and_their_exit():
    """Unpinned, the default profile's placement puts children on the idle CPU: with remote terms forks and round
    trips cost more; pinned (children exit where they were made) the loop costs what it did."""
    fork0, rt0 = _unpinned(CURVE, pin=False)
    fork1, rt1 = _unpinned(REMOTE, pin=False)
    assert fork1 > fork0 + 50.0 and rt1 - fork1 > rt0 - fork0 + 20.0
    assert _unpinned(REMOTE, pin=True) == _unpinned(CURVE, pin=True)


def test_fit_recovers_the_remote_terms_less_the_empty_images():
    """Per size a run whose children exit on the other CPU beside one whose children pin themselves to the parent's
    CPU: the extras over the empty image's are per_pte * min(ptes, cap), the cap one of the sizes."""
    store = Store()
    per_fork, per_exit, cap = 0.03, 0.012, 16410
    for rss, ptes in ((0, 26), (16 * MiB, 4122), (64 * MiB, 16410), (256 * MiB, 65561)):
        warm_fork, warm_exit = 25.0 + 0.02 * ptes, 27.0 + 0.026 * ptes
        for gap in (0, 1_000_000):
            c = 0.0 if gap == 0 else 1.0
            store.runs.append(_run(rss, "sleep", gap, warm_fork + c * (150 + 0.02 * ptes), ptes, gap, exit_us=warm_exit))
        # the pair, run side by side, on a host 10% slower than at the back-to-back run: the extra is over the pair
        drift = 1.1
        store.runs.append(_run(rss, "remote_local", 0.0, drift * warm_fork, ptes, 0.0, exit_us=drift * warm_exit))
        store.runs.append(_run(rss, "remote", 0.0, drift * warm_fork + 17.0 + per_fork * min(ptes, cap), ptes, 0.0,
                               exit_us=drift * warm_exit + 59.0 + per_exit * min(ptes, cap)))
    w, diag = fit_warmth(store)
    r = w["remote"]
    assert r["dup_mmap"]["pte_cap"] == cap and r["exit_mmap"]["pte_cap"] == cap
    assert r["dup_mmap"]["per_pte_us"] == pytest.approx(per_fork, rel=0.03)
    assert r["exit_mmap"]["per_pte_us"] == pytest.approx(per_exit, rel=0.03)
    assert diag["warmth_fit"]["remote"][str(64 * MiB)]["fork_extra_us"] == pytest.approx(17 + per_fork * cap, rel=0.02)
    assert "remote: forkbench cold -R" in w["source"]
    Warmth.model_validate(w)


def _remote_store(exit0_extra: float) -> Store:
    """The remote pairs of four sizes whose exits pay `exit0_extra` at the empty image and 0.012 us a page more."""
    store = Store()
    for rss, ptes in ((0, 26), (16 * MiB, 4122), (64 * MiB, 16410), (256 * MiB, 65561)):
        warm_fork, warm_exit = 25.0 + 0.02 * ptes, 27.0 + 0.026 * ptes
        for gap in (0, 1_000_000):
            cold = 0.0 if gap == 0 else 150 + 0.02 * ptes
            store.runs.append(_run(rss, "sleep", gap, warm_fork + cold, ptes, gap, exit_us=warm_exit))
        store.runs.append(_run(rss, "remote_local", 0.0, warm_fork, ptes, 0.0, exit_us=warm_exit))
        store.runs.append(_run(rss, "remote", 0.0, warm_fork + 17.0 + 0.03 * min(ptes, 16410), ptes, 0.0,
                               exit_us=warm_exit + exit0_extra + 0.012 * min(ptes, 16410)))
    return store


def test_the_empty_images_remote_exit_beyond_the_wake_up_is_exit_mmaps_fixed_remote_term():
    """The empty image's remote exit extra is the parent's cross-CPU wake-up (which the model charges on its own) and
    the lines the exit fetches from the parent's CPU: the latter is exit_mmap's fixed remote term, the wake-up priced
    after the remote exit's own p50 of idle; a wake-up that costs the whole extra leaves no term, and without the
    wake-up's price the fit adds none (as before)."""
    idles: list[float] = []

    def wake(idle_us: float) -> float:
        idles.append(idle_us)
        return 6.0

    w, diag = fit_warmth(_remote_store(28.0), wake)
    extra0 = diag["warmth_fit"]["remote"]["0"]["exit_extra_us"]
    assert extra0 == pytest.approx(28.0 + 0.012 * 26, abs=0.2)
    assert w["remote"]["exit_mmap"]["fixed_us"] == pytest.approx(extra0 - 6.0, abs=0.01)
    assert w["remote"]["exit_mmap"]["per_pte_us"] == pytest.approx(0.012, rel=0.03)  # beyond the empty image's
    assert idles == [pytest.approx(27.0 + 0.026 * 26 + 28.0 + 0.012 * 26, rel=0.02)]  # the remote exit's p50
    assert "exit_mmap's fixed_us" in w["source"] and diag["warmth_fit"]["remote"]["0"]["exit_wake_us"] == 6.0
    Warmth.model_validate(w)
    w, _ = fit_warmth(_remote_store(5.0), wake)
    assert "fixed_us" not in w["remote"]["exit_mmap"] and "none left" in w["source"]
    w, _ = fit_warmth(_remote_store(28.0))
    assert "fixed_us" not in w["remote"]["exit_mmap"] and "exit_mmap's fixed_us" not in w["source"]


def test_the_cross_cpu_wake_up_price_is_the_models_by_idle_time():
    """ipi_send at the measured idle time nearest in log, plus idle_wake's median times the curve's scale (log-linear
    between its points) where the curve has no shapes by idle time, the median of the model's draws where it has;
    without curves the flat figures."""
    from forksim.calibration.warmth import cross_cpu_wake_us

    sched = {"idle_wake": {"fixed_us": 10.0},
             "idle_wake_curve": {"idle_us": [10.0, 1000.0], "scale": [0.5, 2.0], "source": "t"},
             "ipi_send_curve": {"idle_us": [10.0, 1000.0], "source": "t",
                                "costs": [{"fixed_us": 1.0, "source": "t"}, {"fixed_us": 3.0, "source": "t"}]}}
    price = cross_cpu_wake_us(sched, ipi_send_us=99.0)
    assert price(10.0) == pytest.approx(5.0 + 1.0) and price(1000.0) == pytest.approx(20.0 + 3.0)
    assert price(50.0) == pytest.approx(10.0 * (0.5 + 1.5 * math.log(5) / math.log(100)) + 1.0)
    assert price(200.0) == pytest.approx(10.0 * (0.5 + 1.5 * math.log(20) / math.log(100)) + 3.0)
    assert cross_cpu_wake_us({"idle_wake": {"fixed_us": 10.0}}, ipi_send_us=2.0)(500.0) == pytest.approx(12.0)
    # with shapes by idle time the model draws from one of the two measured idle times around it: the median of that
    # mixture (here two exact latencies, 5 and 20 us, the upper's share 0.3 and 0.7 in log(idle))
    sched["idle_wake_curve"]["residuals"] = [{"family": "none"}, {"family": "none"}]
    price = cross_cpu_wake_us(sched, ipi_send_us=99.0)
    assert price(10 ** 1.6) == pytest.approx(5.0 + 1.0, rel=1e-6)
    assert price(10 ** 2.4) == pytest.approx(20.0 + 3.0, rel=1e-6)


def test_a_fixed_remote_exit_term_prices_an_unpinned_loops_round_trip_not_a_pinned_one():
    """An empty image forked in a closed loop: unpinned, every child placed on the idle CPU (as on the Intel model 207
    host), the children's exits pay the fixed remote term on the part still cached; pinned they exit where they
    were made and pay nothing."""
    fixed = Warmth.model_validate({**REMOTE.model_dump(), "remote": {
        **REMOTE.model_dump()["remote"], "exit_mmap": {"per_pte_us": 0.012, "pte_cap": 16384, "fixed_us": 20.0}}})
    _, rt0 = _unpinned(REMOTE, pin=False, rss=0, local=0.0)
    _, rt1 = _unpinned(fixed, pin=False, rss=0, local=0.0)
    # (1 - coldness) x 20 us (the loop's gap cools a few percent of it), and a few us more: the parent's CPU idles
    # longer, and the profile's idle wake-up curve wakes it slower
    assert 15.0 < rt1 - rt0 < 30.0
    assert _unpinned(fixed, pin=True, rss=0) == _unpinned(REMOTE, pin=True, rss=0)


def test_calibrate_reports_the_remote_extras_and_their_terms(capsys):
    from forksim.commands import calibrate as cmd

    points = {str(64 * MiB): {"ptes": 16410, "fork_extra_us": 500.2, "exit_extra_us": 260.0}}
    cmd._remote_line({"remote": {"dup_mmap": {"per_pte_us": 0.0295, "pte_cap": 16410.0}}}, points)
    out = " ".join(capsys.readouterr().out.split())
    assert "64 MiB fork +500, exit +260" in out and "dup_mmap 29.5 ns up to 16,410 pages" in out
    cmd._remote_line({}, points)
    assert "no per-page remote terms" in capsys.readouterr().out
    points["0"] = {"ptes": 25, "fork_extra_us": 14.8, "exit_extra_us": 27.3, "exit_wake_us": 5.7}
    cmd._remote_line({"remote": {"exit_mmap": {"fixed_us": 21.6}}}, points)
    out = " ".join(capsys.readouterr().out.split())
    assert "no per-page remote terms" in out and "cross-CPU wake-up (5.7 us): exit_mmap 21.6 us" in out


def test_calibrate_warns_when_the_host_moved_between_its_two_back_to_back_forks(capsys):
    """The fork sweep and the cold grid both fork each size back to back: 2026-12-05 a quick calibration found
    256 MiB at 3,321 then 4,172 us (+26%) while a neighbour's load inflated its cold, exit and remote runs
    several-fold."""
    from forksim.commands import calibrate as cmd

    cmd._drift_warning([(64 * MiB, 847.5, 876.2), (256 * MiB, 3321.4, 4172.5)])
    out = " ".join(capsys.readouterr().out.split())
    assert "the host moved" in out and "256 MiB +26%" in out and "64 MiB" not in out
    assert "forksim calibrate --quick" in out
    cmd._drift_warning([(64 * MiB, 847.5, 876.2)])  # +3%: the host's usual drift, nothing said
    assert capsys.readouterr().out == ""


def test_the_quick_plan_has_children_exit_on_the_other_cpu_at_every_size():
    from forksim.calibration.plan import PLANS
    from forksim.calibration.warmth import GRIDS, cold_jobs

    names = [what for what, _ in cold_jobs(PLANS["quick"], "forkbench", Store(), 0, 1)]
    for rss in GRIDS["quick"][0]:
        for where in ("the other CPU", "its parent's CPU"):
            assert any(n.startswith(f"fork {rss // MiB}MiB, the children exiting on {where}") for n in names)
    assert not [n for n in cold_jobs(PLANS["quick"], "forkbench", Store(), 0, 0) if "other CPU" in n[0]]  # one CPU


def test_the_empty_images_remote_pair_runs_enough_reps_for_its_fixed_term(monkeypatch):
    """The empty image's pair sets exit_mmap's fixed remote term: EMPTY_REMOTE_REPS a side in each plan, in
    EMPTY_REMOTE_CHUNKS pairs whose order alternates (the host's phase flips within seconds); the larger images'
    pairs their plan's reps."""
    from forksim.calibration import warmth as cal
    from forksim.calibration.plan import PLANS

    argvs: list[list[str]] = []
    monkeypatch.setattr(cal, "_run_or_refused", lambda argv, read, store: argvs.append(argv))
    for plan in ("quick", "full"):
        argvs.clear()
        for what, job in cal.cold_jobs(PLANS[plan], "forkbench", Store(), 0, 1):
            if "the children exiting" in what:
                job()
        reps = {(argv[argv.index("-r") + 1], argv[argv.index("-R") + 1]): 0 for argv in argvs}
        for argv in argvs:
            reps[argv[argv.index("-r") + 1], argv[argv.index("-R") + 1]] += int(argv[argv.index("-n") + 1])
        assert reps[("0", "1")] >= cal.EMPTY_REMOTE_REPS and reps[("0", "0")] >= cal.EMPTY_REMOTE_REPS
        assert reps[(str(256 * MiB), "1")] == cal.GRIDS[plan][-1]
        empty = [argv[argv.index("-R") + 1] for argv in argvs if argv[argv.index("-r") + 1] == "0"]
        firsts = empty[::2]  # each chunk's first side
        assert len(empty) >= 2 * cal.EMPTY_REMOTE_CHUNKS and "0" in firsts and "1" in firsts


def _thread_loop(think_us: float, warmth: Warmth | None, clone: str = "thread",
                 metric: str = "fork_latency_us") -> float:
    exp = parse_config({
        "experiment": {"name": "t", "duration": 600_000.0, "warmup": 50_000.0, "replications": 1, "seed": 3},
        "machine": {"cpus": 1, "profile": REFERENCE_PROFILE},
        "workload": {"kind": "closed", "parents": 1, "think_time": think_us,
                     "image": {"rss": 0, "vmas": 26}, "child": {"clone": clone, "lifetime": 0.0}},
    }, resolved=True)
    prof = load_profile(REFERENCE_PROFILE).model_copy(update={"warmth": warmth})
    return run_experiment(exp, profile=prof).summary[metric]["p50"]


@pytest.mark.parametrize("clone", ["thread", "vfork"])
def test_a_creation_that_copies_no_image_cools_with_the_time_since_the_parents_last(clone):
    cold = FamilyCold(full_us=40.0, tau_us=10_000.0)
    curve = CURVE.model_copy(update={"families": {clone: cold}})
    warm0, cold0 = _thread_loop(0.0, None, clone), _thread_loop(0.0, curve, clone)
    assert cold0 - warm0 < 0.5  # back to back: a cycle of tens of us, a few thousandths of tau
    gaps = (1000.0, 5000.0, 50_000.0)
    extras = [_thread_loop(g, curve, clone) - _thread_loop(g, None, clone) for g in gaps]
    assert extras[0] < extras[1] < extras[2]  # the longer the gap, the colder
    assert extras[2] == pytest.approx(40.0, rel=0.05)  # 50 ms = 5 tau: about fully cold
    # 1 ms (and the cycle, the timer slack): about a tenth
    assert extras[0] == pytest.approx(cold.extra_us(1000.0), abs=1.0)
    # a fork's cold extra is its image's (dup_mmap): the families' term leaves it alone
    assert _thread_loop(20_000.0, curve, "fork") == _thread_loop(20_000.0, CURVE, "fork")


def test_a_family_term_cools_on_another_cpu_and_with_other_work_there():
    cold = FamilyCold(full_us=50.0, tau_us=10_000.0, rest_full_us=20.0)
    w = WarmthTracker(CURVE.model_copy(update={"families": {"thread": cold}}), 2)
    mm = _mm()
    assert w.creation_extras_us("thread", mm, 0, 0.0) == (50.0, 0.0, 20.0)  # the run's first: nothing cached
    call, after, rest = w.creation_extras_us("thread", mm, 0, 10.0)
    assert call == pytest.approx(cold.extra_us(10.0)) and rest == pytest.approx(20.0 * cold.coldness(10.0))
    assert after == 0.0  # all of the call's extra before the placement (before_wakeup's default)
    assert w.creation_extras_us("vfork", mm, 0, 20.0) == (0.0, 0.0, 0.0)  # a kind the profile does not price
    moved, _, _ = w.creation_extras_us("thread", mm, 1, 30.0)  # on the other CPU: the image curve's migration share too
    assert moved == pytest.approx(cold.extra_us(20.0, CURVE.migration))
    w.touched(1, 8 * MiB)  # other work on that CPU: one footprint scale
    swept, _, swept_rest = w.creation_extras_us("thread", mm, 1, 40.0)
    assert swept == pytest.approx(cold.extra_us(10.0, 1 - math.exp(-1.0)))
    assert swept_rest == pytest.approx(swept * 20.0 / 50.0)  # the rest cools as the call does


def test_the_spread_of_a_cooled_call_scales_call_and_rest_by_one_draw():
    cold = FamilyCold(full_us=50.0, tau_us=10_000.0, rest_full_us=20.0, before_wakeup=0.5)
    w = WarmthTracker(CURVE.model_copy(update={"families": {"vfork": cold}}), 1)
    mm = _mm()
    draws = iter([3.0, 0.5])
    assert w.creation_extras_us("vfork", mm, 0, 0.0, lambda: next(draws)) == (75.0, 75.0, 60.0)
    before, after, rest = w.creation_extras_us("vfork", mm, 0, 10_000.0, lambda: next(draws))
    assert before + after == pytest.approx(0.5 * cold.extra_us(10_000.0)) and rest == pytest.approx(
        0.5 * 20.0 * cold.coldness(10_000.0))
    # nothing cooled (the same instant): nothing drawn
    assert w.creation_extras_us("vfork", mm, 0, 10_000.0, lambda: pytest.fail("drawn")) == (0.0, 0.0, 0.0)


def test_a_cooled_calls_spread_widens_the_tail_not_the_median():
    """FamilyCold.residual: with a spread of median 1 the think loop's p50 stays within a few us, its p99 grows;
    without one the run is as before, draw for draw."""
    from forksim.profile import Residual

    spread = Residual(family="empirical", quantiles=[0.3, 0.7, 1.0, 1.6, 3.0])
    plain = CURVE.model_copy(update={"families": {"vfork": FamilyCold(full_us=60.0, tau_us=10_000.0)}})
    wide = CURVE.model_copy(update={"families": {"vfork": FamilyCold(full_us=60.0, tau_us=10_000.0,
                                                                       residual=spread)}})

    def p(w, q):
        exp = parse_config({
            "experiment": {"name": "t", "duration": 2_000_000.0, "warmup": 50_000.0, "replications": 1, "seed": 3},
            "machine": {"cpus": 1, "profile": REFERENCE_PROFILE},
            "workload": {"kind": "closed", "parents": 1, "think_time": 10_000.0,
                         "image": {"rss": 0, "vmas": 26}, "child": {"clone": "vfork", "lifetime": 0.0}},
        }, resolved=True)
        prof = load_profile(REFERENCE_PROFILE).model_copy(update={"warmth": w})
        return run_experiment(exp, profile=prof).records.fork_latency_us.quantile(q)

    assert p(wide, 0.5) == pytest.approx(p(plain, 0.5), abs=3.0)
    assert p(wide, 0.99) > p(plain, 0.99) + 30.0  # the fully cold extra 60 us x 0.63, times up to 3


def test_a_family_rise_that_never_bends_is_not_extrapolated_past_ten_times_the_longest_gap():
    """Two points on a straight line (the smoke plan's 1 and 10 ms): the time scale stops at 100 ms, so the fully
    cold extra stays about ten times the longest gap's, not a second's worth of the slope."""
    from forksim.calibration.cold_families import _fit_kind

    terms, fitted = _fit_kind([(1_000.0, 15.0), (10_000.0, 150.0)], math.nan)
    assert fitted and terms["tau_us"] <= 100_000.0
    assert terms["full_us"] < 12 * 150.0
    assert FamilyCold.model_validate(terms)  # within the profile's bounds


def test_the_family_fit_measures_the_spread_of_the_cooled_calls():
    """Each call's extra over its run's median extra, pooled over the kinds and gaps, kept up to its p99; runs whose
    median extra is small are left out (their spread is the warm call's), and too few calls give no spread."""
    from forksim.calibration.cold_families import COLD_FAMILY, fit_families

    def store_of(extras: list[float], gaps=(10_000, 30_000)) -> Store:
        store = Store()
        for kind in ("vfork", "thread"):
            store.add(COLD_FAMILY, {"kind": kind, "x": 0, "round": 0, "pinned": True}, {},
                      [{"fork_ns": 10_000}] * 9)
            for gap in gaps:
                store.add(COLD_FAMILY, {"kind": kind, "x": gap, "round": 0, "pinned": True}, {},
                          [{"fork_ns": int((10.0 + e * gap / 1000) * 1e3)} for e in extras])
        return store

    got, src, _ = fit_families(store_of([2.0, 3.0, 4.0, 4.0, 4.0, 5.0, 12.0]), 8000.0)
    q = got["vfork"]["residual"]["quantiles"]
    assert got["thread"]["residual"] == got["vfork"]["residual"]  # one spread for the kinds
    assert q[0] == pytest.approx(0.5, abs=0.01)
    assert q[5] < 1.0 < q[-1] <= 3.0  # p25 below the median, the top clipped at the ratios' p99
    assert "FamilyCold.residual" in src
    got, _, _ = fit_families(store_of([2.0, 4.0]), 8000.0)  # 8 calls: 12 would be needed
    assert "residual" not in got["vfork"]
    got, _, _ = fit_families(store_of([0.1, 0.2, 0.3, 0.3, 0.4, 0.5, 1.0], gaps=(10_000, 30_000)), 8000.0)
    assert "residual" not in got["vfork"]  # median extras of 3 and 9 us: under the floor


@pytest.mark.parametrize("clone", ["thread", "vfork", "posix_spawn"])
def test_the_rest_of_a_cold_round_trip_is_charged_after_the_call(clone):
    call_only = CURVE.model_copy(update={"families": {clone: FamilyCold(full_us=40.0, tau_us=10_000.0)}})
    both = CURVE.model_copy(update={"families": {clone: FamilyCold(full_us=40.0, tau_us=10_000.0,
                                                                     rest_full_us=30.0)}})
    gap = 50_000.0  # 5 tau: about fully cold
    # the call's p50 is the call's alone
    assert _thread_loop(gap, both, clone) == pytest.approx(_thread_loop(gap, call_only, clone), abs=0.5)
    rt = [_thread_loop(gap, w, clone, "roundtrip_latency_us") for w in (call_only, both)]
    assert rt[1] - rt[0] == pytest.approx(30.0, rel=0.05)  # the round trip gains the rest's extra
    # back to back it is about nothing
    b2b = [_thread_loop(0.0, w, clone, "roundtrip_latency_us") for w in (call_only, both)]
    assert b2b[1] - b2b[0] < 0.5


def test_the_family_fit_finds_where_the_call_cooled_from_the_traced_pairs():
    """before_wakeup: each round's to_newtask extra over its call extra after 10 ms asleep, the median over rounds;
    a pair whose call did not cool says nothing; without traced pairs (older raw files) the field is left out."""
    from forksim.calibration.cold_families import COLD_FAMILY, COLD_FAMILY_TRACED, TRACED_GAP_US, fit_families

    def store_of(shares: dict[str, list[float]], call_extra: float = 30.0) -> Store:
        store = Store()
        for kind in shares:
            for gap in (0, TRACED_GAP_US, 30_000):
                store.add(COLD_FAMILY, {"kind": kind, "x": gap, "round": 0, "pinned": True}, {},
                          [{"fork_ns": int((10.0 + FamilyCold(full_us=60.0, tau_us=8000.0).extra_us(gap)) * 1e3)}] * 5)
            for rnd, share in enumerate(shares[kind]):
                for gap, extra in ((0, 0.0), (TRACED_GAP_US, call_extra)):
                    store.add(COLD_FAMILY_TRACED, {"kind": kind, "x": gap, "round": rnd, "pinned": True,
                                                   "traced": True}, {},
                              [{"fork_ns": int((14.0 + extra) * 1e3)}] * 5,
                              [{"to_newtask": 6.0 + share * extra, "E": 5.0}] * 5)
        return store

    got, src, diag = fit_families(store_of({"vfork": [0.45, 0.5, 0.9], "thread": [0.6], "posix_spawn": [1.4]}), 7000.0)
    assert got["vfork"]["before_wakeup"] == pytest.approx(0.5, abs=0.005)  # the median of the rounds
    assert got["thread"]["before_wakeup"] == pytest.approx(0.6, abs=0.005)
    assert got["posix_spawn"]["before_wakeup"] == 1.0  # clipped: a share, never more than the whole
    assert "before task_newtask" in src and diag["families_before_wakeup_us"]["vfork"][0] == [30.0, 13.5]
    got, _, diag = fit_families(store_of({"vfork": [0.5]}, call_extra=1.0), 7000.0)  # the call did not cool
    assert "before_wakeup" not in got["vfork"] and "families_before_wakeup_us" not in diag
    assert FamilyCold.model_validate(got["vfork"]).before_wakeup == 1.0


def test_the_family_fit_recovers_each_curve():
    from forksim.calibration.cold_families import COLD_FAMILY, GAPS, fit_families

    truth = {"vfork": (80.0, 30_000.0), "posix_spawn": (160.0, 12_000.0), "thread": (55.0, 10_000.0)}
    rests = {"vfork": 20.0, "posix_spawn": 60.0, "thread": 0.0}  # the rest of the round trip, fully cold

    def store_of(plan: str, rounds: int) -> Store:
        store = Store()
        for rnd, drift in ((r, 3.0 * r) for r in range(rounds)):  # a round's drift moves all its runs alike
            for kind, (full, tau) in truth.items():
                for gap in [0] + [g for g, _ in GAPS[plan][2]]:
                    cold = FamilyCold(full_us=full, tau_us=tau, rest_full_us=rests[kind])
                    p50 = 10.0 + drift + cold.extra_us(gap)
                    rt = p50 + 12.0 + drift + rests[kind] * cold.coldness(gap)
                    store.add(COLD_FAMILY, {"kind": kind, "x": gap, "round": rnd, "pinned": True}, {},
                              [{"fork_ns": int(p50 * 1e3), "rt_ns": int(rt * 1e3)}] * 5)
        return store

    got, src, diag = fit_families(store_of("full", 2), 7000.0)
    for kind, (full, tau) in truth.items():
        g = FamilyCold.model_validate(got[kind])
        assert (g.full_us, g.tau_us) == (pytest.approx(full, rel=0.02), pytest.approx(tau, rel=0.05))
        assert g.rest_full_us == pytest.approx(rests[kind], rel=0.03, abs=0.1)
    assert "families" in src and "fitted" in src and set(diag["families_extra_us"]) == set(truth)
    assert set(diag["families_rest_extra_us"]) == set(truth) and "the rest of the round trip" in src
    assert fit_families(Store(), 7000.0) == ({}, "", {})  # a raw file older than the family runs
    got, _, _ = fit_families(store_of("quick", 1), 7000.0)  # two gaps still fit a time scale
    assert got["thread"]["full_us"] == pytest.approx(55.0, rel=0.05)
    one = Store()  # one gap: the image curve's time scale, and the source says so
    for gap, ms in ((0, 0.0), (10_000, 10.0)):
        one.add(COLD_FAMILY, {"kind": "thread", "x": gap, "round": 0, "pinned": True}, {},
                [{"fork_ns": int((10.0 + FamilyCold(full_us=55.0, tau_us=7000.0).extra_us(gap)) * 1e3)}])
    got, src, _ = fit_families(one, 7000.0)
    assert got["thread"] == {"full_us": pytest.approx(55.0, rel=0.01), "tau_us": 7000.0} and "an assumption" in src


def test_a_noisy_pair_of_gaps_does_not_put_the_family_cold_at_back_to_back_gaps():
    """The quick plan's first two gaps (10, 30 ms) alone, with the extra falling between them (noise, the curve saturated:
    posix_spawn +108 then +73 us on 2026-12-05) leave the time scale unresolved below the first gap: it is not
    sought under a third of it, so a closed loop's ~100 us gaps stay warm."""
    from forksim.calibration.cold_families import COLD_FAMILY, GAPS, fit_families

    store = Store()
    (g1, _), (g2, _) = GAPS["quick"][2][:2]
    for gap, extra in ((0, 0.0), (g1, 108.0), (g2, 73.0)):
        store.add(COLD_FAMILY, {"kind": "posix_spawn", "x": gap, "round": 0, "pinned": True}, {},
                  [{"fork_ns": int((65.0 + extra) * 1e3)}] * 5)
    cold = FamilyCold.model_validate(fit_families(store, 7000.0)[0]["posix_spawn"])
    assert cold.tau_us >= g1 / 3.0 - 1.0
    assert cold.extra_us(100.0) < 0.05 * cold.full_us  # back to back: about warm
    assert 73.0 < cold.extra_us(g1) < 108.0  # the two points still set its height


def test_one_stalled_exit_does_not_make_a_walk_leave_the_image_cold():
    """The residual share is the weighted median of the pairs' ratios: one exit that stalled (+1,541 us where the
    image's fully cold exit costs +351, 256 MiB on 2026-12-05) among pairs at ~0.1 leaves it there, where least
    squares through the origin put it at 1.25 (clipped to 1: a walk that leaves the image as cold as it found it)."""
    from forksim.calibration.warmth import _fit_exit, _fit_residual

    fork_full, exit_full, tau = 420.0, 351.0, 30_000.0
    table = []
    for gap, exit_extra in ((0, 0.0), (100_000, 1541.0), (300_000, 0.15 * exit_full), (1_000_000, 0.1 * exit_full)):
        table.append({"rss_bytes": 256 * MiB, "cond": "sleep", "x": gap, "gap_p50_us": gap, "ptes": 65561,
                      "exit_p50_us": 3500.0 + exit_extra})
    table.append({"rss_bytes": 256 * MiB, "cond": "exit", "x": 1_000_000, "gap_p50_us": 0.0, "ptes": 65561,
                  "exit_p50_us": 3500.0 + exit_full, "fork_after_exit_p50_us": 3300.0 + 0.12 * fork_full})
    warm = {256 * MiB: 3300.0}
    _, pairs, points = _fit_exit(table, warm, {256 * MiB: fork_full}, lambda gap: 1 - math.exp(-gap / tau))
    assert _fit_residual(table, warm, pairs, points) == [[65561.0, pytest.approx(0.12, abs=0.04)]]


def test_the_fork_after_each_cold_fork_sets_the_residual_where_the_exits_cooling_is_noise():
    """An exit whose whole cold extra is within its noise (+66 us on 745, 64 MiB, the 2026-12-05 Intel host) gives
    exit pairs whose ratios say a walk leaves the image as cold as it found it (median 1.36, clipped to 1: every
    back-to-back fork fully cold). The grid's fork right after each cold fork, whose walk and child's exit each
    left r, pays r^2 of the cold fork's extra: those pairs, with 2-3x the signal, set r."""
    r, tau, warm, fork_full = 0.3, 12_000.0, 550.0, 170.0
    store = Store()
    for gap in (0, 10_000, 100_000, 1_000_000):
        c = 1 - math.exp(-gap / tau)
        run = _run(64 * MiB, "sleep", gap, warm + c * fork_full, 16410, gap,
                   exit_us=745.0 + (0.0 if gap == 0 else 100.0))  # the exits after cold forks: +100 us of noise
        for x in run["samples"]:
            x["next_cpu_ns"] = (warm + r * r * c * fork_full) * 1e3
        store.runs.append(run)
    exit_run = _run(64 * MiB, "exit", 1_000_000, warm + r * fork_full, 16410, 0.0, exit_us=745.0 + 66.0)
    for i, x in enumerate(exit_run["samples"]):
        x["i"] = i
    store.runs.append(exit_run)
    w, diag = fit_warmth(store)
    assert w["residual"] == [[16410.0, pytest.approx(r, abs=0.03)]]
    pairs = diag["warmth_fit"]["exit"][str(64 * MiB)]
    assert max(y / x for x, y in pairs["residual_pairs_us"]) > 1.0  # the exit pairs alone said: never warms
    assert len(pairs["next_fork_pairs_us"]) == 3


def test_the_families_are_kept_where_the_images_show_no_cold_extra():
    """A host whose images do not cool (no cold runs here) may still cool the kinds that copy none: fit_warmth
    writes a warmth section with the families alone, no image terms, and the model prices the families by it."""
    from forksim.calibration.cold_families import COLD_FAMILY, GAPS
    from forksim.calibration.warmth import fit_warmth

    cold = FamilyCold(full_us=50.0, tau_us=9000.0)
    store = Store()
    for gap in [0] + [g for g, _ in GAPS["quick"][2]]:
        store.add(COLD_FAMILY, {"kind": "thread", "x": gap, "round": 0, "pinned": True}, {},
                  [{"fork_ns": int((8.0 + cold.extra_us(gap)) * 1e3)}] * 5)
    warmth, diag = fit_warmth(store)
    w = Warmth.model_validate(warmth)
    assert w.stages == {} and w.families["thread"].full_us == pytest.approx(50.0, rel=0.05)
    assert "no image terms" in w.source and diag["warmth_fit"]["families_extra_us"]["thread"]
    tracker = WarmthTracker(w, 1)
    mm = _mm()
    assert tracker.creation_extras_us("thread", mm, 0, 0.0)[0] == pytest.approx(w.families["thread"].full_us)
    assert tracker.cold_walk("dup_mmap", mm, 0, 1e6, mm.shape)[0] == 0.0  # images as warm as back to back
    one = Store()  # one gap and no image curve: no time scale to take, so no family either
    for gap in (0, 10_000):
        one.add(COLD_FAMILY, {"kind": "thread", "x": gap, "round": 0, "pinned": True}, {},
                [{"fork_ns": int((8.0 + cold.extra_us(gap)) * 1e3)}] * 5)
    assert fit_warmth(one)[0] is None


def test_calibrate_reports_the_family_extras_and_their_curves(capsys):
    from forksim.commands import calibrate as cmd

    points = {"thread": [[10.0, 40.1], [30.0, 54.3]], "vfork": [[10.0, 61.2]]}
    cmd._families_line({"families": {"thread": {"full_us": 59.1, "tau_us": 11038.0}}}, points)
    out = " ".join(capsys.readouterr().out.split())
    assert "thread +40.1 after 10 ms, +54.3 after 30 ms -> fully cold +59.1 over 11.0 ms" in out
    assert "vfork +61.2 after 10 ms;" not in out and out.endswith("vfork +61.2 after 10 ms")  # measured, not fitted
    cmd._families_line(None, None)
    assert capsys.readouterr().out == ""
