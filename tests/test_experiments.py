"""Every shipped experiment runs with `forksim run` in a shortened mode, opens with the comment that
states its question, and its [sweep] grid is valid; plus the features they need (server workload,
bursty arrivals, linked sweep keys, what-ifs)."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

import pytest

from forksim.cli import main
from forksim.config import load_experiment, parse_config
from forksim.errors import ConfigError
from forksim.runner import run_experiment
from forksim.sweep import grid_points
from forksim.workloads.arrivals import burst_times
from test_trace import _check_valid

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
CONFIGS = sorted(EXPERIMENTS.glob("*.toml"))

# The shortened sizes (tools/shortened.toml: tools/fingerprint.py runs the same).
_SHORTENED = tomllib.loads((EXPERIMENTS.parent / "tools" / "shortened.toml").read_text())
SHORT: list[str] = _SHORTENED["short"]
EXTRA: dict[str, list[str]] = _SHORTENED["extra"]
EXPECTED = {"fork-storm", "rss-latency", "clone-kinds", "thp", "redis-bgsave", "prefork-server", "cpu-scaling",
            "mmap-stall", "on-demand-fork", "async-fork", "quickstart"}


def test_the_library_is_complete():
    assert EXPECTED <= {p.stem for p in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_experiment_runs_shortened(path, tmp_path):
    text = path.read_text()
    first = text.lstrip().splitlines()[0]
    assert first.startswith("#") and "?" in text.split("[")[0], "opens with a comment stating its question"
    assert "Look at" in text or "look at" in text
    exp = load_experiment(path)
    assert exp.experiment.name == path.stem
    if path.stem != "quickstart":
        assert exp.sweep, "a library experiment sweeps something"
        points = grid_points(exp)
        assert len(points) >= 2 and all(p.error is None for p in points)
    out = tmp_path / "run"
    args = ["run", str(path), "--quiet", "--out", str(out), "--trace", str(tmp_path / "trace.json")]
    for o in SHORT + EXTRA.get(path.stem, []):
        args += ["--set", o]
    assert main(args) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["forks"] >= 1
    assert s["fork_latency_us"]["p50"] > 0
    if exp.workload.kind == "server":
        r = s["request_latency_us"]
        assert r["count"] > 100 and r["p50"] > 0
        assert set(r) >= {"mean", "p50", "p90", "p99", "p999", "ci95"}
        assert r["ci95"]["p99"] is not None
        assert s["request_latency_in_snapshot_us"]["count"] > 0  # async-fork's fork is too short to meet a request
        assert s["request_latency_in_fork_us"]["count"] > (0 if path.stem == "redis-bgsave" else -1)
        assert (out / "requests.parquet").exists()
    # the trace of replication 0 and the report of the run work for every shipped experiment
    trace = json.loads((tmp_path / "trace.json").read_text())
    _check_valid(trace)
    assert any(e["ph"] == "X" and e["name"].endswith("()") for e in trace["traceEvents"]), "a creation in the trace"
    assert main(["report", str(out), "--quiet"]) == 0
    assert (out / "summary.md").exists() and len(list(out.glob("*.png"))) >= 4
    if exp.workload.kind == "server":
        assert (out / "request_latency_ecdf.png").exists()
        assert "request_latency_in_snapshot_us" in (out / "summary.md").read_text()


def _server(**over):
    data = {
        "experiment": {"duration": "0.6s", "warmup": "0.05s", "replications": 2, "seed": 3},
        "machine": {"cpus": 2, "idle_wake": "20us"},
        "workload": {"kind": "server", "rate": "10000/s",
                     "server": {"service": "20us", "interval": "10s", "first_snapshot": "0.2s"},
                     "image": {"rss": "2GiB"}, "child": {"clone": "fork", "lifetime": "100ms"}},
    }
    exp = parse_config(data)
    return exp.with_overrides(over) if over else exp


def test_server_fork_stalls_the_requests():
    res = run_experiment(_server())
    s = res.summary
    assert s["forks"] == 2  # one snapshot per replication
    stall = s["fork_latency_us"]["p50"]
    assert stall > 20_000  # 2 GiB of page tables: tens of ms
    req = s["request_latency_us"]
    assert req["p50"] < 200  # most requests never meet the fork
    assert req["p999"] > 0.5 * stall  # the requests that arrive during the fork wait for it
    assert s["request_throughput_per_s"]["mean"] == pytest.approx(10_000, rel=0.05)
    # without snapshots, no tail
    quiet = run_experiment(_server(**{"workload.server.first_snapshot": "100s"})).summary
    assert quiet["forks"] == 0 and quiet["request_latency_us"]["p999"] < 1000


def test_server_reaps_without_blocking_and_cow_costs():
    base = run_experiment(_server(**{"workload.server.writes_per_request": 0})).summary
    cow = run_experiment(_server(**{"workload.server.writes_per_request": 8})).summary
    assert base["roundtrip_latency_us"]["p50"] >= 100_000  # the child's lifetime, reaped at a cron tick
    assert base["roundtrip_latency_us"]["p50"] <= 100_000 + 2 * 100_000 + 50_000
    assert cow["cpu_utilization"] > base["cpu_utilization"]  # COW copies while the child maps the pages


def test_server_config_errors():
    with pytest.raises(ConfigError, match="rate"):
        parse_config({"workload": {"kind": "server"}})
    with pytest.raises(ConfigError, match="single-threaded"):
        parse_config({"workload": {"kind": "server", "rate": "100/s", "image": {"threads": 4}}})
    with pytest.raises(ConfigError, match="workload.server"):
        parse_config({"workload": {"kind": "server", "rate": "100/s", "server": {"servce": "2us"}}})


def test_bursty_arrivals():
    b = parse_config({"workload": {"bursts": {"size": 3, "interval": "10ms", "spread": "3ms", "offset": "1ms"}}})
    gen = burst_times(b.workload.bursts)
    times = [next(gen) for _ in range(6)]
    assert times == pytest.approx([1000, 2000, 3000, 11000, 12000, 13000])
    exp = parse_config({
        "experiment": {"duration": "1s", "warmup": "0.1s", "replications": 2},
        "workload": {"kind": "open", "parents": 2, "arrivals": "bursty",
                     "bursts": {"size": 10, "interval": "100ms", "spread": "1ms"}},
    })
    s = run_experiment(exp).summary
    assert s["throughput_per_s"]["mean"] == pytest.approx(100, rel=0.15)  # 10 per 100 ms
    assert s["response_latency_us"]["p90"] > s["roundtrip_latency_us"]["p90"]  # queueing within a burst
    with pytest.raises(ConfigError, match="spread"):
        parse_config({"workload": {"bursts": {"interval": "1ms", "spread": "2ms"}}})


def test_linked_sweep_keys_and_whatif_axis():
    exp = parse_config({"sweep": {"machine.cpus,workload.parents": [[2, 2], [8, 8]],
                                  "workload.image.rss,whatif.cow_fault_copy.fixed_us": [["1GiB", 1.5]]}})
    pts = grid_points(exp)
    assert [(p.exp.machine.cpus, p.exp.workload.parents) for p in pts] == [(2, 2), (8, 8)]
    assert pts[0].exp.whatif == {"cow_fault_copy.fixed_us": 1.5}
    assert pts[0].values["workload.image.rss"] == 1024**3
    with pytest.raises(ConfigError, match="linked"):
        parse_config({"sweep": {"machine.cpus,workload.parents": [[2, 2, 2]]}})
    with pytest.raises(ConfigError, match="unknown key"):
        parse_config({"sweep": {"machine.cpus,workload.parent": [[2, 2]]}})


def test_async_fork_whatif_removes_the_stall():
    exp = _server()
    base = run_experiment(exp).summary
    af = run_experiment(exp.with_overrides({"whatif.dup_mmap.per_pte_us": 0.0})).summary
    assert af["fork_latency_us"]["p50"] < 0.01 * base["fork_latency_us"]["p50"]
    assert af["request_latency_us"]["p999"] < base["request_latency_us"]["p999"]
    assert math.isfinite(af["request_latency_us"]["p99"])
