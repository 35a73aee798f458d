"""Summary statistics: percentiles of the pooled post-warm-up records, intervals inside the data's
support (block bootstrap), tail percentiles refused below the stated sample count, and the same
summary for the same seed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from forksim.metrics import _latency
from forksim.runner import run_experiment
from forksim.stats import MIN_BEYOND, blocks, t_ci95


def _two_replications() -> list[np.ndarray]:
    """Two replications whose tails disagree wildly (one hit a long stall): a Student-t interval of
    their p99s across the two runs far below zero."""
    rng = np.random.default_rng(3)
    calm = rng.lognormal(np.log(100.0), 0.3, 6000)
    stalled = np.concatenate([rng.lognormal(np.log(100.0), 0.3, 5900), rng.uniform(30_000, 45_000, 100)])
    return [calm, stalled]


def test_latency_intervals_stay_inside_the_samples_with_two_replications():
    per_rep = _two_replications()
    # the old interval (t across the two replications' own p99s) ran below zero on these samples
    old = t_ci95([float(np.percentile(a, 99)) for a in per_rep])
    assert old[0] < 0
    out = _latency(per_rep, seed=42, name="fork_latency_us", replications=[0, 1])
    pooled = np.concatenate(per_rep)
    for name in ("mean", "p50", "p90", "p99", "p999"):
        lo, hi = out["ci95"][name]
        assert pooled.min() <= lo <= hi <= pooled.max(), name
        assert lo <= out[name] <= hi, name


def test_summary_percentiles_are_those_of_the_pooled_post_warmup_records(tiny_exp):
    exp = tiny_exp({"experiment": {"duration": "60ms", "replications": 3}})
    res = run_experiment(exp)
    df = res.records
    assert df["warmup"].any() and not df["warmup"].all()  # warm-up rows are kept and marked
    for key in ("fork_latency_us", "roundtrip_latency_us", "child_start_latency_us"):
        pooled = df.loc[~df["warmup"], key].dropna().to_numpy()
        s = res.summary[key]
        assert s["count"] == len(pooled) > 1000
        assert s["mean"] == pytest.approx(pooled.mean(), abs=1e-6)
        for name, q in (("p50", 50), ("p90", 90), ("p99", 99)):
            assert s[name] == pytest.approx(np.percentile(pooled, q), abs=1e-6), (key, name)
        # the summary's p99 is rounded to 1e-6 us: a sample within that of it may fall on either side
        beyond = s["beyond"]["p99"]
        assert int((pooled > s["p99"] + 1e-6).sum()) <= beyond <= int((pooled > s["p99"] - 1e-6).sum())
        assert beyond >= MIN_BEYOND
        lo, hi = s["ci95"]["p99"]
        assert 0 <= lo <= s["p99"] <= hi


@pytest.mark.parametrize("n, given", [(500, {"p99": False, "p999": False}), (1500, {"p99": True, "p999": False}),
                                      (12_000, {"p99": True, "p999": True})])
def test_a_tail_percentile_from_too_few_samples_is_refused(n, given):
    samples = np.random.default_rng(n).exponential(100.0, n)
    out = _latency([samples[: n // 2], samples[n // 2:]], seed=1, name="x", replications=[0, 1])
    for name, ok in given.items():
        assert (out["beyond"][name] >= MIN_BEYOND) == ok
        if ok:
            assert out[name] is not None and out["ci95"][name] is not None
            assert name not in out.get("refused", {})
        else:
            assert out[name] is None and out["ci95"][name] is None
            assert f"fewer than {MIN_BEYOND}" in out["refused"][name]
    assert out["p50"] is not None and out["count"] == n


def test_the_cli_table_shows_a_dash_and_says_why(forksim_cli, tiny_toml, tmp_path):
    proc = forksim_cli("run", tiny_toml(), "--out", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    lat = summary["fork_latency_us"]
    assert lat["p999"] is None and "p999" in lat["refused"]  # a tiny run: ~100 creations
    row = next(line for line in proc.stdout.splitlines() if "fork" in line and "call" in line)
    cells = [c.strip() for c in row.strip("│| ").split("│")]
    assert cells[5] == "-"  # mean, p50, p90, p99, p999: the p99.9 column is a dash
    assert "not given, fewer than 10 samples lie beyond it" in " ".join(proc.stdout.split())


def test_throughput_interval_never_below_zero():
    assert t_ci95([1.0, 300.0], lower=0.0)[0] == 0.0
    assert t_ci95([0.2, 0.9], lower=0.0, upper=1.0) == [0.0, 1.0]


def test_blocks_split_few_replications_into_batches():
    bl = blocks([np.arange(100.0), np.arange(50.0)], min_blocks=20)
    assert len(bl) == 20 and sum(len(b) for b in bl) == 150
    assert all(np.all(np.diff(b) > 0) for b in bl)  # contiguous, in entry order
    assert len(blocks([np.arange(10.0)] * 25, min_blocks=20)) == 25  # enough replications: one block each


def test_same_seed_same_summary_bytes(tiny_exp):
    exp = tiny_exp({"experiment": {"duration": "30ms"}})
    a, b = run_experiment(exp), run_experiment(exp)
    strip = lambda s: json.dumps({k: v for k, v in s.items() if k != "sim_wall_s"}, sort_keys=True)  # noqa: E731
    assert strip(a.summary) == strip(b.summary)
    c = run_experiment(exp, seed=exp.experiment.seed + 1)
    assert c.summary["fork_latency_us"]["ci95"] != a.summary["fork_latency_us"]["ci95"]
