"""A parent's own CPU work between its creations (`workload.parent_work`): the config key, what the model runs and
the validation rows and load generator flag that state it."""

from __future__ import annotations

import pytest

from forksim.config import ConfigError, parse_config
from forksim.lab.compiler import compiler
from forksim.runner import run_experiment
from forksim.validation.scenarios import SCENARIOS, get_scenario

from conftest import REFERENCE_PROFILE


def _loop(parent_work_us: float, cpus: int = 1) -> dict:
    exp = parse_config({
        "experiment": {"name": "t", "duration": 300_000.0, "warmup": 30_000.0, "replications": 1, "seed": 3},
        "machine": {"cpus": cpus, "profile": REFERENCE_PROFILE},
        "workload": {"kind": "closed", "parents": 1, "parent_work": parent_work_us, "image": {"rss": 0}},
    }, resolved=True)
    return run_experiment(exp).summary


# ------------------------------------------------------------------ the config key


def test_parent_work_takes_a_duration_and_a_server_refuses_it(tiny_dict):
    exp = parse_config(tiny_dict({"workload": {"parent_work": "250us"}}), source="t.toml")
    assert exp.workload.parent_work == 250.0
    with pytest.raises(ConfigError) as exc:
        parse_config(tiny_dict({"workload": {"parent_work": "-1us"}}), source="t.toml")
    assert "workload.parent_work" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        parse_config(tiny_dict({"workload": {"kind": "server", "rate": "1000/s", "parent_work": "10us"}}),
                     source="t.toml")
    assert "workload.server.service" in str(exc.value) and "parent_work" in str(exc.value)


# ------------------------------------------------------------------ the model


def _cpu_per_creation_us(summary: dict, cpus: int) -> float:
    return summary["cpu_utilization"] * cpus * 1e6 / summary["throughput_per_s"]["mean"]


def test_a_lone_parents_work_adds_to_its_cycle():
    """On one CPU the loop is serial: each cycle is the creation's round trip and then the parent's work, so the
    throughput is 1 / (mean round trip + work) (the work's interruptions aside)."""
    work = 200.0
    base, busy = _loop(0.0), _loop(work)
    rt = busy["roundtrip_latency_us"]["mean"]
    assert busy["throughput_per_s"]["mean"] == pytest.approx(1e6 / (rt + work), rel=0.03)
    assert busy["throughput_per_s"]["mean"] < base["throughput_per_s"]["mean"]


@pytest.mark.parametrize("cpus", [1, 2])
def test_the_cpu_time_a_creation_takes_grows_by_the_parents_work(cpus):
    """Conservation: the machine's busy time per creation is the creation's own and the parent's work after it
    (within 10%: the work's interruptions, and on two CPUs where the children then go)."""
    work = 200.0
    grew = _cpu_per_creation_us(_loop(work, cpus), cpus) - _cpu_per_creation_us(_loop(0.0, cpus), cpus)
    assert grew == pytest.approx(work, rel=0.1)


def test_parent_work_is_reproducible_for_a_seed():
    def run() -> dict:
        return {k: v for k, v in _loop(100.0, cpus=2).items() if k != "sim_wall_s"}

    assert run() == run()


# ------------------------------------------------------------------ validation


def test_the_busy_rows_state_the_work_to_loadgen_and_to_the_model():
    rows = {s.name: s for s in SCENARIOS if s.parent_work_s}
    assert set(rows) == {"closed-fork-K1-rss0-busy100us", "closed-fork-K1-rss64MiB-busy1ms"}
    sc = rows["closed-fork-K1-rss64MiB-busy1ms"]
    assert sc.loadgen_args(False)[-2:] == ["--parent-work", "0.001"]
    assert sc.to_config({}, cpus=2)["workload"]["parent_work"] == 1000.0
    assert not sc.pin and get_scenario("closed-fork-K1-rss0-busy100us").quick


@pytest.mark.skipif(compiler() is None, reason="no C compiler: the load generator is a C program")
def test_loadgen_parent_work_spins_between_creations():
    """--parent-work S: each fork follows the previous reap by S or more (the spin), which measure() reports as the
    rows' gap; a negative S is refused."""
    from forksim.validation.loadgen import LoadgenError, run_loadgen
    from forksim.validation.measure import measure

    res = measure(get_scenario("closed-fork-K1-rss0-busy100us"), quick=True)
    assert 100.0 <= res["gap_us"]["p50"] < 1000.0
    assert res["throughput_per_s"] < 1e6 / 100.0
    with pytest.raises(LoadgenError, match="--parent-work"):
        run_loadgen(["--mode", "closed", "--parent-work", "-1", "--duration", "0.1"], timeout=30.0)
