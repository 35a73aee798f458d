"""The stopping rule and the warm-up rule of --precision (forksim/precision.py)."""

import numpy as np
import pytest

from forksim.precision import Precision, mser5, parse_precision, relative_half_width, run_to_precision
from forksim.stats import t_ci95


def _summary(values):
    mean = float(np.mean(values))
    return {"throughput_per_s": {"mean": mean, "ci95": t_ci95(values)}}


def _draws(seed, sigma):
    rng = np.random.default_rng(seed)
    return lambda start, stop: [float(rng.normal(100.0, sigma)) for _ in range(start, stop)]


def test_parse_precision():
    assert parse_precision("5%") == pytest.approx(0.05)
    assert parse_precision(0.02) == pytest.approx(0.02)
    for bad in ("0%", "100%", "abc", -0.1, 1.5, [1, 2], True, None):
        with pytest.raises(ValueError):
            parse_precision(bad)


def test_stops_when_every_interval_is_narrow_enough():
    p = Precision(0.01, metrics=("throughput_per_s.mean",), max_replications=500)
    results, summary, stop = run_to_precision(p, _draws(1, 5.0), _summary)
    assert stop.reason.startswith("reached")
    assert relative_half_width(summary, "throughput_per_s.mean") <= 0.01
    # One batch fewer would not have been enough (the rule stops at the first batch that satisfies it).
    fewer = _summary(results[: len(results) - p.batch])
    assert relative_half_width(fewer, "throughput_per_s.mean") > 0.01
    # Noise 4x larger needs about 16x more replications: more, at least.
    more, _, _ = run_to_precision(p, _draws(1, 20.0), _summary)
    assert len(more) > len(results)


def test_cap_is_reported_with_the_metric_missing():
    p = Precision(0.0001, metrics=("throughput_per_s.mean",), max_replications=10)
    results, _, stop = run_to_precision(p, _draws(2, 50.0), _summary)
    assert len(results) == 10
    assert stop.reason.startswith("cap") and "throughput_per_s.mean" in stop.reason
    d = stop.as_dict()
    assert d["replications"] == 10 and d["done"] == {"throughput_per_s.mean": False}


def test_missing_interval_is_never_done():
    # A refused tail percentile (null) must not count as reached.
    s = {"fork_latency_us": {"p99": None, "ci95": {"p99": None}}}
    assert relative_half_width(s, "fork_latency_us.p99") is None
    s = {"fork_latency_us": {"p99": 200.0, "ci95": {"p99": [190.0, 214.0]}}}
    assert relative_half_width(s, "fork_latency_us.p99") == pytest.approx(0.06)


def test_mser5_finds_a_transient_and_leaves_a_stationary_series():
    rng = np.random.default_rng(3)
    noise = rng.normal(0.0, 1.0, 4000)
    transient = noise + np.where(np.arange(4000) < 500, 8.0 * np.exp(-np.arange(4000) / 200.0), 0.0)
    cut = mser5(transient)
    assert 300 <= cut <= 900 and cut % 5 == 0
    assert mser5(noise) < 400  # nothing to cut but noise: a short prefix at most
    assert mser5([1.0, 2.0, 3.0]) == 0


def _exp(**experiment):
    from forksim.config import parse_config

    base = {"name": "prec", "duration": "100ms", "warmup": "20ms", "replications": 2, "precision": "5%",
            "max_replications": 8}
    base.update(experiment)
    return parse_config({"experiment": base, "machine": {"cpus": 2, "profile": "default"},
                         "workload": {"kind": "closed", "parents": 2, "image": {"rss": "4MiB"}}})


def test_run_to_precision_reports_and_is_independent_of_workers():
    from forksim.runner import run_experiment

    one = run_experiment(_exp(), workers=1).summary
    two = run_experiment(_exp(), workers=2).summary
    p = one["precision"]
    assert p["stopped"].startswith("reached") and one["replications"] == p["replications"] <= 8
    assert all(v is not None and v <= 0.05 for v in p["reached"].values())
    assert one["warmup_check"]["rule"].startswith("MSER-5") and one["warmup_check"]["configured_us"] == 20_000.0
    drop = ("sim_wall_s",)
    assert {k: v for k, v in one.items() if k not in drop} == {k: v for k, v in two.items() if k not in drop}


def test_run_to_precision_stops_at_the_cap():
    from forksim.runner import run_experiment

    s = run_experiment(_exp(precision="0.01%", max_replications=4), workers=1).summary
    assert s["replications"] == 4 and s["precision"]["stopped"].startswith("cap")


def test_fixed_replications_carry_no_precision_section():
    from forksim.runner import run_experiment

    s = run_experiment(_exp(precision=None, replications=2), workers=1).summary
    assert "precision" not in s and "warmup_check" not in s and s["replications"] == 2


def test_plan_probes_run_until_the_slo_metric_is_decided_or_precise():
    from forksim.plan import parse_slo, plan

    exp = _exp(precision="2%", max_replications=12)
    slo = parse_slo("throughput_per_s.mean>=2500")
    res = plan(exp, slo, "machine.cpus", "1..6", workers=1)
    stops = [p.summary["precision"]["stopped"] for p in res.tried if p.summary.get("precision")]
    assert stops and all(s.startswith(("reached", "decided", "cap")) for s in stops)
    for p in res.tried:  # a probe that stopped on the decision has its CI wholly on one side of the bound
        if p.summary.get("precision", {}).get("stopped", "").startswith("decided"):
            lo, hi = p.ci95
            assert slo.holds(lo) == slo.holds(hi) == p.ok
    assert "throughput_per_s.mean" in res.tried[0].summary["precision"]["reached"]


def test_sweep_refuses_precision_with_the_key_named():
    from forksim.errors import ConfigError
    from forksim.sweep import sweep

    with pytest.raises(ConfigError, match="experiment.precision"):
        sweep(_exp(), out=None)
