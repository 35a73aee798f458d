"""What a user gets back in Python and in forks.parquet: the records' metadata (config, profile,
seed), marked warm-up rows, categoricals and unit suffixes, and the notebook views (`_repr_html_`)."""

from __future__ import annotations

import hashlib
import json
import tomllib

import pandas as pd
import pytest

import forksim
from forksim.config import parse_config
from forksim.metrics import RECORD_COLUMNS
from forksim.plan import PlanResult, Probe, parse_slo
from conftest import REFERENCE_PROFILE


def test_forks_parquet_carries_config_profile_seed_and_marks_warmup(forksim_cli, tiny_toml, tmp_path):
    path = tiny_toml({"experiment": {"seed": 11}})
    proc = forksim_cli("run", path, "--out", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    forks = tmp_path / "out" / "forks.parquet"
    meta = forksim.read_metadata(forks)
    assert meta["forksim.seed"] == "11"
    config = tomllib.loads(meta["forksim.config"])
    assert config.pop("units") == "model"  # bare numbers in the model's units, as config.resolved.toml
    resolved = parse_config(config, resolved=True)
    assert resolved.experiment.seed == 11 and resolved.workload.image.rss == 2**20
    assert meta["forksim.config"] == (tmp_path / "out" / "config.resolved.toml").read_text()
    profile = json.loads(meta["forksim.profile"])
    shipped = forksim.load_profile(REFERENCE_PROFILE)
    assert profile["name"] == "default"
    assert profile["sha256"] == hashlib.sha256(shipped.model_dump_json().encode()).hexdigest()

    df = pd.read_parquet(forks)
    assert isinstance(df["kind"].dtype, pd.CategoricalDtype) and set(df["kind"]) == {"fork"}
    assert df["warmup"].dtype == bool and df["warmup"].any() and not df["warmup"].all()
    assert (df.loc[df["warmup"], "start_us"] < 2000.0).all() and (df.loc[~df["warmup"], "start_us"] >= 2000.0).all()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["forks"] == int(df.loc[~df["warmup"], "fork_latency_us"].notna().sum())
    # every time column says its unit; the old bare names are gone
    times = [c for c in df.columns if df[c].dtype == float]
    assert times and all(c.endswith("_us") for c in times)
    assert not set(RECORD_COLUMNS) & set(df.columns)


def test_a_run_result_shows_its_headline_figures_with_units(tiny_exp):
    res = forksim.run(tiny_exp({"experiment": {"duration": "60ms"}}))
    page = res._repr_html_()
    s = res.summary
    assert f"{s['fork_latency_us']['p50']:,.1f}" in page and f"{s['fork_latency_us']['p99']:,.1f}" in page
    assert "p50 (µs)" in page and "p99.9 (µs)" in page and "creations/s" in page
    assert f"{s['forks']:,} creations measured" in page
    assert "not given" in page  # the p99.9 of ~2,000 creations: a dash and the rule
    assert "RunResult(" not in page and "<table" in page and len(page) < 8000


def test_a_plan_result_shows_the_answer_and_probes_with_units():
    slo = parse_slo("fork_latency_us.p99<=2ms")
    probes = [Probe(1, 3000.5, [2800.0, 3300.0], False), Probe(4, 1500.25, [1400.0, 1650.0], True)]
    page = PlanResult("machine.cpus", slo, 4, "smallest", (1, 8), probes)._repr_html_()
    assert "machine.cpus = 4" in page and "fork_latency_us.p99 (µs)" in page
    assert "1,500.2" in page and "1,400.0 .. 1,650.0" in page and "no" in page


def test_a_sweep_table_shows_one_row_per_point_with_units(tiny_exp):
    from forksim.sweep import sweep  # not forksim.sweep: once the submodule is imported it shadows the function (#17.1)

    exp = tiny_exp({"sweep": {"workload.image.rss": ["1MiB", "4MiB"]}})
    table = sweep(exp, workers=1)
    assert isinstance(table, forksim.SweepTable) and len(table) == 4  # 2 points x 2 replications
    page = table._repr_html_()
    assert "1MiB" in page and "4MiB" in page and "1048576" not in page
    assert "fork() p50 (µs)" in page and "throughput (/s)" in page
    points = table.points()
    assert list(points["workload.image.rss"]) == [2**20, 4 * 2**20]
    for _, row in points.iterrows():
        assert row["fork_latency_us.p50"] == table.summaries[row["point"]]["fork_latency_us"]["p50"]
    assert type(table[["point"]]) is pd.DataFrame  # what is derived from it is a plain DataFrame


@pytest.mark.parametrize("name", forksim.__all__)
def test_every_public_name_exists(name):
    assert getattr(forksim, name) is getattr(forksim, name)  # and stays what it is on a second look
