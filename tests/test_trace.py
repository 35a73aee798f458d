"""`forksim run --trace`: Chrome trace-event JSON of replication 0 (forksim/trace.py)."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest

from forksim.cli import main
from forksim.config import parse_config
from forksim.runner import run_experiment
from forksim.trace import CPU_PID, TASK_PID, build_trace, write_trace

# Small but busy: 4 parents with faulting threads, a CPU hog, 3 CPUs, short children.
CONFIG = {
    "experiment": {"name": "trace-test", "duration": "20ms", "warmup": "2ms", "replications": 1, "seed": 7},
    "machine": {"cpus": 3},
    "workload": {"parents": 4, "image": {"rss": "8MiB", "vmas": 20, "threads": 3, "fault_rate": "20000/s"},
                 "child": {"clone": "fork", "lifetime": "30us"}},
    "background": {"cpu_hogs": 1},
}


def _lanes(trace):
    lanes = defaultdict(list)
    for e in trace["traceEvents"]:
        if e["ph"] == "X":
            lanes[(e["pid"], e["tid"])].append(e)
    return lanes


def _check_valid(trace):
    assert isinstance(trace["traceEvents"], list) and trace["traceEvents"]
    for e in trace["traceEvents"]:
        assert e["ph"] in ("X", "M")
        assert isinstance(e["pid"], int) and isinstance(e["name"], str)
        if e["ph"] == "X":
            assert isinstance(e["tid"], int)
            assert e["ts"] >= 0 and e["dur"] > 0
    lo, hi = trace["otherData"]["window_us"]
    for (pid, _tid), events in _lanes(trace).items():
        events.sort(key=lambda e: (e["ts"], -e["dur"]))
        for e in events:
            assert lo - 1e-6 <= e["ts"] and e["ts"] + e["dur"] <= hi + 1e-3
        if pid == CPU_PID:  # a CPU runs one thing at a time
            for a, b in zip(events, events[1:]):
                assert a["ts"] + a["dur"] <= b["ts"] + 1e-6, (a, b)
        else:  # task lanes: properly nested
            stack = []
            for e in events:
                end = e["ts"] + e["dur"]
                while stack and stack[-1] <= e["ts"] + 1e-6:
                    stack.pop()
                assert not stack or end <= stack[-1] + 1e-6, e
                stack.append(end)


@pytest.mark.parametrize("clone", ["fork", "posix_spawn"])
def test_trace_is_valid_and_matches_the_run(tmp_path, clone):
    cfg = {**CONFIG, "workload": {**CONFIG["workload"], "child": {"clone": clone, "lifetime": "30us"}}}
    if clone != "fork":
        cfg["workload"] = {**cfg["workload"], "image": {"rss": "8MiB", "vmas": 20}}
    exp = parse_config(cfg)
    result = run_experiment(exp)
    path = tmp_path / "t.json"
    meta = write_trace(exp, path, profile=result.profile)
    trace = json.loads(path.read_text())  # valid JSON, the object form of the trace-event format
    _check_valid(trace)
    other = trace["otherData"]
    assert other == meta
    assert other["bounded"] and other["window_us"] == [2000.0, 22000.0] and not other["truncated"]
    lanes = _lanes(trace)
    span = other["window_us"][1] - other["window_us"][0]
    cpus = exp.machine.cpus
    busy = [sum(e["dur"] for e in lanes[(CPU_PID, c)]) for c in range(cpus)]
    # every lane's busy time is the machine's own count for that CPU ...
    for c in range(cpus):
        assert busy[c] == pytest.approx(other["cpu_busy_us"][c], rel=1e-3, abs=0.01)
        assert 0.0 <= busy[c] / span <= 1.0 + 1e-9
    # ... and together they are the run's CPU utilisation
    util = sum(busy) / (cpus * span)
    assert util == pytest.approx(result.summary["cpu_utilization"], rel=0.01)
    # same seed, same timeline: the fork() slices are the run's replication-0 creations
    forks = sorted((e["args"]["creation"], e["ts"], e["dur"]) for e in trace["traceEvents"]
                   if e["ph"] == "X" and e["pid"] == TASK_PID and e["name"] == f"{clone}()" and e["args"]["complete"])
    rec = result.records.set_index("seq")
    assert len(forks) > 10
    for seq, ts, dur in forks:
        r = rec.loc[seq]
        if r["start_us"] >= 2000.0:
            assert ts == pytest.approx(r["start_us"], abs=1e-3)
            assert dur == pytest.approx(r["fork_latency_us"], abs=2e-3)
    names = {e["name"] for e in trace["traceEvents"] if e["ph"] == "X"}
    assert {"copy_process_setup", "copy_process_tail", "wait_reap", "context switch"} <= names
    if clone == "fork":
        assert "dup_mmap" in names and "mmap_lock stall" in names  # the faulting threads wait for dup_mmap


def test_trace_is_bounded(tmp_path):
    exp = parse_config({**CONFIG, "experiment": {**CONFIG["experiment"], "duration": "1s"}})
    trace = build_trace(exp, max_span_us=5000.0)
    assert trace["otherData"]["window_us"] == [2000.0, 7000.0]
    assert trace["otherData"]["truncated"] and "max_span_us" in trace["otherData"]["truncated_by"]
    _check_valid(trace)
    small = build_trace(exp, max_events=300)
    assert small["otherData"]["truncated"] and "max_events" in small["otherData"]["truncated_by"]
    assert small["otherData"]["window_us"][1] < 1_002_000.0
    _check_valid(small)


def test_run_trace_flag(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[experiment]\nname = "t"\nduration = "10ms"\nwarmup = "1ms"\nreplications = 2\n'
                   '[workload.image]\nrss = "4MiB"\n')
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out), "--quiet", "--trace", str(tmp_path / "tr.json")]) == 0
    trace = json.loads((tmp_path / "tr.json").read_text())
    _check_valid(trace)
    assert trace["otherData"]["experiment"] == "t"
