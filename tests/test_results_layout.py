"""The results side: summary.json's schema (forksim.summary), the run folder (forksim.layout), the
executor (forksim.executor) and the CLI showing an argument's error as its flag."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from forksim import layout
from forksim.commands._common import flag_error
from forksim.config import load_experiment
from forksim.errors import ConfigError
from forksim.executor import InProcess, LocalPool, WorkersLost, make_executor
from forksim.plan import parse_slo
from forksim.profile import load_profile
from forksim.runner import run_experiment
from forksim.summary import FLAT_SKIP, LATENCIES, Summary, fields_of, metric_fields, path, slo_fields
from forksim.sweep import flatten_summary


@pytest.fixture(scope="module")
def server_run(tmp_path_factory):
    """A short server run (every summary section: creations, requests, windows), written to a folder."""
    from pathlib import Path

    exp = load_experiment(Path(__file__).resolve().parent.parent / "experiments" / "redis-bgsave.toml", {
        "experiment.duration": "100ms", "experiment.warmup": "10ms", "experiment.replications": 2,
        "workload.server.first_snapshot": "0.05s", "workload.child.lifetime": "50ms",
        "workload.image.rss": "64MiB", "workload.rate": "5000/s", "machine.profile": "default"})
    result = run_experiment(exp)
    out = tmp_path_factory.mktemp("run")
    result.write(out)
    return result, out


def test_every_summary_key_is_declared_in_the_schema(server_run):
    result, _ = server_run
    s = result.summary
    again = Summary.model_validate(s).to_dict()  # extra keys are refused: the schema declares them all
    assert json.dumps(again) == json.dumps(s)  # same keys, same order, same values
    assert {"request_latency_us", "request_latency_in_fork_us", "request_latency_in_snapshot_us"} <= set(s)
    assert set(LATENCIES) >= {k for k in s if k.endswith("_latency_us")}


def test_slo_paths_and_flat_columns_come_from_the_schema(server_run):
    result, _ = server_run
    for top in metric_fields():
        fields = slo_fields(top)
        if fields:
            for f in fields:
                assert parse_slo(f"{top}.{f}<=1").metric == f"{top}.{f}"
                assert path(f"{top}.{f}") == (top, f)
    with pytest.raises(ConfigError, match="slo"):
        parse_slo("fork_latency_us.p97<=1")
    with pytest.raises(KeyError):
        path("fork_latency_us.median")
    flat = flatten_summary(result.summary)
    assert not any(col.split(".")[0] in FLAT_SKIP or ".ci95" in col for col in flat)
    assert "fork_latency_us.p50" in flat and "request_throughput_per_s.mean" in flat
    assert fields_of("wall_clock") == ("sim_wall_s",) and fields_of(speed=True) == ("events_per_creation",)


def test_run_folder_holds_config_and_profile_and_reads_back(server_run):
    result, out = server_run
    assert {p.name for p in out.iterdir()} == {"summary.json", "forks.parquet", "requests.parquet",
                                               "config.resolved.toml", "profile.json"}
    summary, records, config = layout.read_run(out)
    assert summary == json.loads(json.dumps(result.summary))
    assert len(records) == len(result.records) and config["experiment"]["name"] == "redis-bgsave"
    assert layout.read_requests(out) is not None
    again = load_experiment(out / "config.resolved.toml")
    assert again.experiment.replications == 2
    used = load_profile(str(out / "profile.json"))  # the profile as used, loadable
    digest = hashlib.sha256(used.model_dump_json().encode()).hexdigest()
    assert digest == json.loads(result.metadata()["forksim.profile"])["sha256"]


def test_executors_return_every_job_and_report_a_dead_worker():
    jobs = [(i, (i, 2)) for i in range(5)]
    assert sorted(InProcess().run(pow, jobs)) == [(i, i * i) for i in range(5)]
    pool = LocalPool(2)
    try:
        assert sorted(pool.run(pow, jobs)) == [(i, i * i) for i in range(5)]
    finally:
        pool.close()
    pool = LocalPool(2)
    try:
        with pytest.raises(WorkersLost):
            list(pool.run(os._exit, [(0, (3,))]))  # a worker that dies, as one killed would
    finally:
        pool.close(cancel=True)
    assert isinstance(make_executor("local", 4, jobs=1), InProcess)
    for kwargs, name in (({"kind": "threads"}, "executor"), ({"workers": 0}, "workers"),
                         ({"scheduler": "tcp://x:1"}, "scheduler")):
        with pytest.raises(ConfigError, match=f"^{name}: "):
            make_executor(**kwargs)


def test_the_cli_shows_an_arguments_error_as_its_flag():
    shown = flag_error(ConfigError("a range looks like LO..HI", source="range"))
    assert str(shown) == "--range: a range looks like LO..HI" and isinstance(shown, ConfigError)
    keyed = ConfigError("must be positive", source="c.toml", field="experiment.duration")
    assert flag_error(keyed) is keyed  # a config file's key stays the key
