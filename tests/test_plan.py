"""forksim plan: SLO parsing, the search (integer and continuous), the answer's neighbourhood, errors."""

from __future__ import annotations

import json

import pytest

from forksim.cli import main
from forksim.config import parse_config
from forksim.errors import ConfigError
from forksim.plan import parse_slo, plan
from forksim.runner import run_experiment

BASE = {
    "experiment": {"name": "plan-small", "duration": "0.1s", "warmup": "0.01s", "replications": 2, "seed": 5},
    "machine": {"cpus": 2},
    "workload": {"parents": 8, "image": {"rss": "16MiB"}, "child": {"lifetime": "200us"}},
}


def test_parse_slo():
    s = parse_slo("fork_latency_us.p99<=2000")
    assert (s.metric, s.op, s.bound) == ("fork_latency_us.p99", "<=", 2000.0) and s.upper
    assert parse_slo("throughput_per_s.mean >= 5000/s").bound == 5000.0
    assert parse_slo("request_latency_us.p999<2ms").bound == 2000.0
    assert parse_slo("cpu_utilization<=0.8").holds(0.8)
    assert not parse_slo("cpu_utilization<0.8").holds(0.8)
    assert parse_slo("lock_wait_us.tasklist_lock.p99<=10").metric == "lock_wait_us.tasklist_lock.p99"
    for bad in ("fork_latency_us.p99=<2000", "fork_latency_us.p99", "bogus.p99<=1", "fork_latency_us<=3",
                "fork_latency_us.p98<=3", "cpu_utilization.mean<=1", "fork_latency_us.p99<=fast", ""):
        with pytest.raises(ConfigError):
            parse_slo(bad)


def test_integer_answer_holds_and_one_step_worse_fails():
    exp = parse_config(BASE)
    slo = parse_slo("throughput_per_s.mean>=2500")
    res = plan(exp, slo, "machine.cpus", "1..12", workers=1)
    assert res.direction == "smallest"
    a = res.answer
    assert isinstance(a, int) and 1 < a < 12
    values = {p.value: p for p in res.tried}
    assert values[a].ok and not values[a - 1].ok  # both probed
    # and independently: the SLO holds at A and fails at A - 1 (same seeds: the same runs)
    at = run_experiment(exp.with_overrides({"machine.cpus": a})).summary
    below = run_experiment(exp.with_overrides({"machine.cpus": a - 1})).summary
    assert slo.holds(slo.value(at)[0]) and not slo.holds(slo.value(below)[0])
    assert values[a].metric == slo.value(at)[0]
    assert values[a].ci95 is not None and len(values[a].ci95) == 2


def test_continuous_largest_passing_value():
    exp = parse_config({**BASE, "workload": {"parents": 1, "think_time": "1ms", "image": {"rss": "16MiB"}}})
    res = plan(exp, "fork_latency_us.p50<=5000", "workload.image.rss", "16MiB..1GiB", tolerance="16MiB",
               workers=1)
    assert res.direction == "largest"
    a = res.answer
    assert isinstance(a, int) and 16 * 2**20 < a < 2**30
    ok = [p for p in res.tried if p.ok]
    bad = [p for p in res.tried if not p.ok]
    assert max(p.value for p in ok) == a
    worse = min(p.value for p in bad if p.value > a)
    assert worse - a <= 16 * 2**20  # failing within one tolerance above the answer
    # page tables: ~0.05 us per 4 KiB page, so 5 ms is a few hundred MiB
    assert 128 * 2**20 < a < 768 * 2**20


def test_range_ends_both_pass_and_neither_pass():
    exp = parse_config(BASE)
    res = plan(exp, "fork_latency_us.p50<=1000000", "machine.cpus", "2..4", workers=1)
    assert res.answer in (2, 4) and "whole range" in res.note
    with pytest.raises(ConfigError, match="met nowhere"):
        plan(exp, "fork_latency_us.p50<=0.001", "machine.cpus", "1..4", workers=1)


def test_plan_errors():
    exp = parse_config(BASE)
    with pytest.raises(ConfigError, match="unknown key"):
        plan(exp, "fork_latency_us.p99<=2000", "machine.cpu", "1..4")
    with pytest.raises(ConfigError, match="numeric"):
        plan(exp, "fork_latency_us.p99<=2000", "workload.child.clone", "1..4")
    with pytest.raises(ConfigError, match="continuous"):
        plan(exp, "fork_latency_us.p99<=2000", "workload.image.rss")
    with pytest.raises(ConfigError, match="LO..HI"):
        plan(exp, "fork_latency_us.p99<=2000", "machine.cpus", "4")
    with pytest.raises(ConfigError, match="low end"):
        plan(exp, "fork_latency_us.p99<=2000", "machine.cpus", "8..2")
    with pytest.raises(ConfigError, match="integer"):
        plan(exp, "fork_latency_us.p99<=2000", "machine.cpus", "1.5..4")


def test_cli_plan_json_and_exit_codes(tmp_path, capsys):
    cfg = tmp_path / "p.toml"
    cfg.write_text("""
[experiment]
duration = "0.1s"
warmup = "0.01s"
replications = 2
[workload]
parents = 8
[workload.child]
lifetime = "200us"
[workload.image]
rss = "16MiB"
""")
    rc = main(["plan", str(cfg), "--slo", "throughput_per_s.mean>=2500", "--find", "machine.cpus",
               "--range", "1..8", "--json", "--workers", "1"])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert data["key"] == "machine.cpus" and isinstance(data["answer"], int)
    assert {"value", "metric", "ci95", "ok"} <= set(data["tried"][0])
    assert main(["plan", str(cfg), "--slo", "throughput_per_s.mean>=2500", "--find", "machine.cpus",
                 "--range", "1..8", "--workers", "1"]) == 0
    text = capsys.readouterr().out
    assert "answer: machine.cpus =" in text and "evidence" in text
    for args in (["--slo", "fork_latency_us.p99=<1", "--find", "machine.cpus"],
                 ["--slo", "fork_latency_us.p99<=1", "--find", "machine.cpux", "--range", "1..2"],
                 ["--slo", "fork_latency_us.p99<=0.001", "--find", "machine.cpus", "--range", "1..2"]):
        assert main(["plan", str(cfg), *args, "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("forksim: error:") == 3 and "Traceback" not in err
