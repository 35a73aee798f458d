"""Server request records and their windows (forksim/requests.py), the sweep report of shipped
experiments (shortened), and the figures' guards (forksim/plots.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forksim import plots
from forksim.config import load_experiment, parse_config, parse_override
from forksim.metrics import ReplicationResult, summarize
from forksim.report import load_sweep, report
from forksim.requests import (CREATION_CHILD_EXIT, CREATION_FORK_RET, CREATION_PARENT, CREATION_START, IN_FORK,
                              IN_SNAPSHOT, mark_windows)
from forksim.runner import run_experiment
from forksim.sweep import sweep
from test_experiments import EXPERIMENTS, EXTRA, SHORT

# ------------------------------------------------------------------ request windows


def test_mark_windows_known_answer():
    creations = pd.DataFrame({CREATION_PARENT: [0, 0, 1], CREATION_START: [100.0, 500.0, 200.0],
                              CREATION_FORK_RET: [150.0, np.nan, 210.0], CREATION_CHILD_EXIT: [300.0, np.nan, 260.0]})
    req = pd.DataFrame({"arrival_us": [50.0, 100.0, 149.0, 150.0, 299.0, 300.0, 600.0, 205.0, 230.0],
                        "server": [0, 0, 0, 0, 0, 0, 0, 1, 1]})
    out = mark_windows(req, creations, end=1000.0)
    assert out[IN_FORK].tolist() == [False, True, True, False, False, False, True, True, False]
    assert out[IN_SNAPSHOT].tolist() == [False, True, True, True, True, False, True, True, True]


def _server(duration: str):
    return parse_config({
        "experiment": {"duration": duration, "warmup": "0.05s", "replications": 2, "seed": 11},
        "machine": {"cpus": 2, "idle_wake": "20us"},
        "workload": {"kind": "server", "rate": "10000/s",
                     "server": {"service": "20us", "interval": "10s", "first_snapshot": "0.1s"},
                     "image": {"rss": "1GiB"}, "child": {"clone": "fork", "lifetime": "50ms"}},
    })


@pytest.fixture(scope="module")
def server_runs():
    return run_experiment(_server("0.3s")), run_experiment(_server("0.6s"))


def test_snapshot_windows_do_not_depend_on_the_run_length(server_runs):
    short, long = (r.summary for r in server_runs)
    for section in ("request_latency_in_fork_us", "request_latency_in_snapshot_us"):
        assert short[section]["count"] > 0
        for stat in ("count", "mean", "p50", "p99"):
            assert short[section][stat] == long[section][stat], (section, stat)
        assert "window" in short[section]
    # the tail of all requests does move with the run's length (more requests that never meet the fork)
    assert long["request_latency_us"]["count"] > short["request_latency_us"]["count"]
    assert long["request_latency_us"]["p99"] < short["request_latency_us"]["p99"]


def test_requests_arriving_in_fork_wait_for_it(server_runs):
    res = server_runs[0]
    req, forks = res.requests, res.records
    assert set(req.columns) >= {"replication", "arrival_us", "done_us", "latency_us", "server", IN_FORK, IN_SNAPSHOT}
    for rep, f in forks.groupby("replication"):
        ret = f["fork_ret_us"].iloc[0]
        inside = req[(req["replication"] == rep) & req[IN_FORK]]
        assert len(inside) > 0
        assert (inside["done_us"] >= ret).all()  # served only after fork() returned
        assert (inside["latency_us"] >= ret - inside["arrival_us"] - 1e-9).all()
    s = res.summary
    done = req[req["done_us"].notna()]
    assert s["request_latency_us"]["count"] == len(done)
    assert s["request_latency_in_fork_us"]["count"] == int(done[IN_FORK].sum())
    assert s["requests_unfinished"] == int(req["done_us"].isna().sum())
    # the stall dominates the requests that arrive in it: their median is far above everyone's
    assert s["request_latency_in_fork_us"]["p50"] > 20 * s["request_latency_us"]["p50"]


def test_request_records_are_deterministic_and_leave_the_forks_alone(server_runs):
    again = run_experiment(_server("0.3s"))
    pd.testing.assert_frame_equal(again.requests, server_runs[0].requests)
    pd.testing.assert_frame_equal(again.records, server_runs[0].records)


# ------------------------------------------------------------------ CIs that contain their estimate


def _one_fork(rep: int, window_us: float) -> ReplicationResult:
    rec = pd.DataFrame({"seq": [0], "kind": ["fork"], "parent": [0], "arrival": [1e5], "start": [1e5],
                        "fork_ret": [1.1e5], "child_start": [1.1e5], "mm_release": [np.nan], "child_exit": [2e5],
                        "reap": [3e5], "parent_cpu": [0], "child_cpu": [1], "stack_hit": [True], "setup_us": [1.0],
                        "dup_mmap_us": [9e3], "tail_us": [1.0], "mmap_wait": [0.0], "pidmap_wait": [0.0],
                        "tasklist_wait": [0.0]})
    return ReplicationResult(rep, rec, (0.0, window_us), 1e5 * (1 + rep / 7), 2, {}, [], 0, 10, 0.0)


def test_summary_means_lie_inside_their_intervals():
    """One snapshot reaped in each 3 s window: 1/3 per second in every replication; the rounded mean
    sat above an unrounded CI bound and `forksim report` crashed on redis-bgsave's sweep."""
    s = summarize([_one_fork(0, 3e6), _one_fork(1, 3e6)])
    for est, ci in ((s["throughput_per_s"]["mean"], s["throughput_per_s"]["ci95"]),
                    (s["cpu_utilization"], s["cpu_utilization_ci95"])):
        assert ci[0] <= est <= ci[1]


def test_ci_errors_never_negative_and_never_wrong():
    err = plots.ci_errors([1.0, 1 / 3, 5.0, 2.0], [0.5, 0.3333333333333333, 6.0, np.nan], [2.0, 0.3333333333333333, 7.0, 3.0])
    assert (err >= 0).all()
    assert err[:, 0].tolist() == [0.5, 1.0]
    assert err[:, 2].tolist() == [0.0, 0.0]  # an interval that misses its estimate: no bar
    assert err[:, 3].tolist() == [0.0, 0.0]  # a missing bound: no bar


def test_unit_tick_labels():
    assert [plots.time_text(v) for v in (0, 0.5, 20, 1000, 2500, 1e6)] == ["0", "500 ns", "20 µs", "1 ms", "2.5 ms", "1 s"]
    assert [plots.size_text(v) for v in (0, 64 * 2**20, 2**30, 32 * 2**30)] == ["0", "64 MiB", "1 GiB", "32 GiB"]


# ------------------------------------------------------------------ sweep reports of the shipped experiments

# The first two values of each [sweep] list; the experiments whose figures differ in kind: a server
# (request latency), linked keys (one line), two keys with text values and stalls, sizes from 0 (log-2 x).
SWEPT = ["redis-bgsave", "cpu-scaling", "mmap-stall", "rss-latency"]
# rss-latency stops after 8 creations: at rss 0 they all fall in the warm-up (see the report).
SWEEP_EXTRA = {"rss-latency": ["experiment.warmup=0s"]}


@pytest.mark.parametrize("name", SWEPT)
def test_shipped_sweep_reports(name, tmp_path):
    overrides = dict(parse_override(o) for o in SHORT + EXTRA.get(name, []) + SWEEP_EXTRA.get(name, []))
    exp = load_experiment(EXPERIMENTS / f"{name}.toml", overrides)
    exp = exp.model_copy(update={"sweep": {k: v[:2] for k, v in exp.sweep.items()}})
    sweep(exp, out=tmp_path, workers=1)
    rep = report(tmp_path)
    names = {p.name for p in rep.figures}
    frame, keys, _ = load_sweep(tmp_path)
    md = rep.markdown.read_text()
    if exp.workload.kind == "server":
        assert "sweep_request_latency.png" in names and "sweep_throughput_latency.png" not in names
        assert "request p99 in snapshot" in md
        assert frame["request_latency_in_snapshot_us.p50"].notna().all()  # a p99 from these few may be refused
    if name == "mmap-stall":
        assert "sweep_mmap_stall.png" in names
    if name == "cpu-scaling":  # linked keys: cpus and parents move together, one line per figure
        assert "sweep_lock_waits.png" in names
        assert len(keys) == 2
    for p in rep.figures:
        assert p.stat().st_size > 10_000
        assert f"]({p.name})" in md
    summaries = [json.loads(p.read_text()) for p in Path(tmp_path).glob("points/*/summary.json")]
    assert len(summaries) == len(frame) >= 2
