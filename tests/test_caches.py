"""The cache curve (forksim/calibration/caches.py, profile_terms.CacheCurve) and dup_mmap's miss term: a
back-to-back fork of an image whose walk outgrows the caches pays a per-page miss cost."""

from __future__ import annotations

import json

import numpy as np
import pytest

from forksim.calibration.caches import FALLBACK_CURVE, LINES_KIND, fit_cache_curve
from forksim.calibration.fit import WALK_TERMS, Config, fit_linear_through, stage_cost
from forksim.calibration.plan import MiB, Store
from forksim.errors import ProfileError
from forksim.profile import CacheCurve, ImageShape, StageCost, load_profile

CURVE = CacheCurve(bytes=[1 * MiB, 4 * MiB, 16 * MiB, 64 * MiB], miss=[0.0, 0.0, 1.0, 1.0], source="test")


def test_the_miss_fraction_rises_with_the_footprint_and_holds_at_the_ends():
    xs = np.geomspace(64 * 1024, 1024 * MiB, 40)
    m = [CURVE.miss_at(x) for x in xs]
    assert all(b >= a for a, b in zip(m, m[1:]))
    assert m[0] == 0.0 and m[-1] == 1.0
    assert CURVE.miss_at(8 * MiB) == pytest.approx(0.5)  # halfway in log(bytes) between 4 and 16 MiB
    # a 64 MiB image walks 80 B per page: 1.25 MiB, cached; 1 GiB walks 20 MiB, past the knee
    assert CURVE.walk_miss(16384) == 0.0
    assert CURVE.walk_miss(262144) == 1.0


def test_the_miss_term_adds_per_page_only_past_the_knee():
    cost = StageCost(per_pte_us=0.08, per_pte_miss_us=0.03, cache_curve=CURVE, source="test")
    small, big = ImageShape(26, 12, 16384), ImageShape(26, 12, 262144)
    assert cost.median_us(small) == pytest.approx(0.08 * 16384)
    assert cost.median_us(big) == pytest.approx((0.08 + 0.03) * 262144)
    # without a curve, or without the term, the cost stays linear in the pages
    assert StageCost(per_pte_us=0.08, per_pte_miss_us=0.03, source="t").median_us(big) == pytest.approx(0.08 * 262144)
    # a what-if on the per-page copy scales its miss part alike
    assert cost.scaled("per_pte_us", 0.5).median_us(big) == pytest.approx(cost.median_us(big) / 2)


def test_a_bad_curve_names_its_field(tmp_path):
    with pytest.raises(ValueError, match="cache_curve.miss"):
        CacheCurve(bytes=[1.0, 2.0], miss=[0.5, 0.2], source="t")
    with pytest.raises(ValueError, match="cache_curve.bytes"):
        CacheCurve(bytes=[2.0, 1.0], miss=[0.0, 1.0], source="t")
    prof = json.loads(json.dumps(load_profile("default").model_dump(mode="json", exclude_unset=True)))
    prof["stages"]["dup_mmap"]["per_pte_miss_us"] = 0.03
    prof["stages"]["dup_mmap"]["cache_curve"] = {"bytes": [1, 2], "miss": [0.0, 2.0], "source": "t"}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(prof))
    with pytest.raises(ProfileError, match="cache_curve"):
        load_profile(str(path))


def test_shipped_profiles_without_the_term_load_and_price_as_before():
    prof = load_profile("default")
    dm = prof.stages["dup_mmap"]
    assert dm.per_pte_miss_us == 0.0 and dm.cache_curve is None
    shape = ImageShape(26, 12, 262144)
    assert dm.median_us(shape) == pytest.approx(dm.fixed_us + dm.per_vma_us * 26 + dm.per_anon_vma_us * 12
                                                + dm.per_pte_us * 262144 + dm.per_vma_log_us * 26 * np.log2(26))


def _lines_store(hit: float, mem: float, knee: float) -> Store:
    store = Store()
    sizes = np.geomspace(256 * 1024, 64 * MiB, 17)
    samples = [{"b": "lines", "i": i, "bytes": int(b), "line_ns": hit if b < knee else mem}
               for i, b in enumerate(sizes)]
    store.add(LINES_KIND, {"cpu": 1}, {}, samples)
    return store


def test_fit_cache_curve_known_answer_and_fallback():
    curve = CacheCurve.model_validate(fit_cache_curve(_lines_store(1.2, 7.0, 12 * MiB)))
    assert curve.miss_at(4 * MiB) == 0.0 and curve.miss_at(32 * MiB) == 1.0
    assert curve.source.startswith("measured:")
    flat = CacheCurve.model_validate(fit_cache_curve(_lines_store(1.2, 1.25, 12 * MiB)))
    assert max(flat.miss) == 0.0  # no knee within the footprints: nothing misses
    fb = fit_cache_curve(Store())
    assert fb == FALLBACK_CURVE and fb["source"].startswith("assumption:")


def test_the_fit_recovers_a_per_page_cost_that_bends_at_the_knee():
    """Known answer: fork() = 50 + 0.5/VMA + 0.07/page + 0.03/page * miss, sizes 0..1 GiB and VMA counts;
    the linear fit misses it (16 MiB over, 1 GiB under), the walk terms find it."""
    rng = np.random.default_rng(7)
    truth = {"fixed_us": 50.0, "per_vma_us": 0.5, "per_pte_us": 0.07, "per_pte_miss_us": 0.03}
    cfgs = []
    for vmas, ptes in ((25, 25), (26, 4121), (26, 65561), (26, 262170), (1025, 25), (10025, 25)):
        miss = CURVE.walk_miss(ptes)
        med = (truth["fixed_us"] + truth["per_vma_us"] * vmas + truth["per_pte_us"] * ptes
               + truth["per_pte_miss_us"] * ptes * miss)
        cfgs.append(Config(vmas, 0, ptes, 0, samples=list(med * rng.uniform(0.99, 1.01, 201)), miss=miss,
                           label=str(ptes)))
    fit = fit_linear_through(cfgs, cfgs[0], WALK_TERMS)
    for term, v in truth.items():
        assert fit.coef[term] == pytest.approx(v, rel=0.05), term
    linear = fit_linear_through(cfgs, cfgs[0])
    assert linear.rel_errors["262170"] < -0.05 < 0.05 < linear.rel_errors["4121"]
    assert max(abs(e) for e in fit.rel_errors.values()) < 0.02
    cost = stage_cost(fit.coef, source="test", cache_curve=CURVE.model_dump())
    assert cost.cache_curve is not None and cost.per_pte_miss_us > 0
    # no miss term fitted: the stage is written as before, without the field
    plain = stage_cost(linear.coef, source="test", cache_curve=CURVE.model_dump())
    assert "per_pte_miss_us" not in plain.model_dump(exclude_unset=True)
