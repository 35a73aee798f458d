"""forksim sweep: the grid, identical tables on the local pool and on dask, resume after SIGKILL,
failing points recorded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from forksim.cli import main
from forksim.config import parse_config
from forksim.errors import ConfigError
from forksim.sweep import grid_points, sweep

SMALL = """
[experiment]
name = "small"
duration = "0.1s"
warmup = "0.01s"
replications = 2
seed = 7

[workload]
parents = 2

[workload.image]
rss = "16MiB"

[workload.child]
lifetime = "50us"

[sweep]
"workload.parents" = [1, 3]
"workload.image.rss" = ["8MiB", "64MiB"]
"""


def _write(tmp_path: Path, text: str, name: str = "cfg.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_grid_order_ids_and_seeds(tmp_path):
    exp = parse_config({"experiment": {"replications": 3},
                        "sweep": {"workload.parents": [1, 2], "workload.image.rss": ["8MiB", "1GiB"]}})
    pts = grid_points(exp)
    assert [(p.exp.workload.parents, p.exp.workload.image.rss) for p in pts] == [
        (1, 8 * 2**20), (1, 2**30), (2, 8 * 2**20), (2, 2**30)]
    assert len({p.id for p in pts}) == 4
    # seeds depend only on the point's config seed and the replication index
    assert [s.entropy for s in pts[0].seeds] == [s.entropy for s in pts[3].seeds]
    assert [s.spawn_key for s in pts[0].seeds] == [(0,), (1,), (2,)]
    # the id changes when anything that makes the point changes
    other = grid_points(exp.with_overrides({"workload.child.lifetime": "1ms"}))
    assert {p.id for p in other}.isdisjoint({p.id for p in pts})


def test_local_and_dask_give_identical_tables(tmp_path):
    cfg = _write(tmp_path, SMALL)
    local = sweep(cfg, out=tmp_path / "local", workers=2)
    assert len(local) == 4 * 2
    assert list(local.columns[:5]) == ["point", "workload.parents", "workload.image.rss", "replication", "seed"]
    for col in ("throughput_per_s.mean", "fork_latency_us.p99", "roundtrip_latency_us.p50", "cpu_utilization",
                "lock_wait_us.tasklist_lock.mean", "lock_wait_us.mmap_lock.p99", "error"):
        assert col in local.columns
    assert local["error"].isna().all()
    assert (local["throughput_per_s.mean"] > 0).all()
    inproc = sweep(cfg, workers=1)  # no output folder: in memory, in this process
    pd.testing.assert_frame_equal(local, inproc)
    dask = sweep(cfg, out=tmp_path / "dask", executor="dask", workers=2)
    pd.testing.assert_frame_equal(local, dask)
    on_disk = pd.read_parquet(tmp_path / "dask" / "results.parquet")
    pd.testing.assert_frame_equal(on_disk, pd.read_parquet(tmp_path / "local" / "results.parquet"))
    # per-point summaries follow the summary.json contract
    pid = local["point"].iloc[0]
    s = json.loads((tmp_path / "local" / "points" / pid / "summary.json").read_text())
    assert s["replications"] == 2 and s["fork_latency_us"]["ci95"]["p50"] is not None
    assert (s["fork_latency_us"]["ci95"]["p99"] is not None) == (s["fork_latency_us"]["p99"] is not None)
    assert s["overrides"] == {"workload.parents": 1, "workload.image.rss": "8MiB"}
    manifest = json.loads((tmp_path / "local" / "sweep.json").read_text())
    assert [p["id"] for p in manifest["points"]] == list(dict.fromkeys(local["point"]))


def test_failing_point_is_recorded_not_fatal(tmp_path):
    bad_profile = tmp_path / "broken.json"
    bad_profile.write_text("{not json")
    cfg = _write(tmp_path, f"""
[experiment]
duration = "0.2s"
warmup = "0.01s"
replications = 2
[workload]
kind = "open"
parents = 1
rate = "200/s"
max_queue = 20
[sweep]
"machine.profile" = ["default", "{bad_profile}"]
"workload.rate" = ["200/s", "1000000/s"]
""")
    df = sweep(cfg, out=tmp_path / "out", workers=2)
    assert len(df) == 8
    good = df[df["machine.profile"] == "default"]
    ok, unstable = good[good["workload.rate"] == 200.0], good[good["workload.rate"] == 1e6]
    assert ok["error"].isna().all() and (ok["throughput_per_s.mean"] > 0).all()
    assert unstable["error"].str.contains("UnstableError").all() and unstable["throughput_per_s.mean"].isna().all()
    broken = df[df["machine.profile"] != "default"]
    assert broken["error"].str.contains("ProfileError").all()  # fails before it runs
    s = json.loads((tmp_path / "out" / "points" / unstable["point"].iloc[0] / "summary.json").read_text())
    assert "UnstableError" in s["error"]
    assert (tmp_path / "out" / "results.parquet").exists()


def test_sigkill_then_resume_recomputes_nothing_finished(tmp_path):
    text = SMALL.replace('duration = "0.1s"', 'duration = "0.4s"').replace(
        '"workload.parents" = [1, 3]', '"workload.parents" = [1, 2, 3, 4]')
    cfg = _write(tmp_path, text)
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "forksim", "sweep", str(cfg), "--out", str(out), "--workers", "2", "--quiet"],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if len(list(out.glob("points/*/result.json"))) >= 2:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the sweep finished before it could be killed: " + proc.stderr.read().decode()
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its pool workers (its own session)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.stderr.close()
    finished = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("points/*/result.json")}
    assert 2 <= len(finished) < 8
    assert not (out / "results.parquet").exists()

    resumed = sweep(cfg, out=out, resume=True, workers=2)
    assert set(resumed.attrs["reused"]) == set(finished)
    assert set(resumed.attrs["computed"]).isdisjoint(finished)
    assert len(resumed.attrs["reused"]) + len(resumed.attrs["computed"]) == 8
    assert {p.parent.name: p.stat().st_mtime_ns for p in out.glob("points/*/result.json") if p.parent.name in finished} == finished

    whole = sweep(cfg, out=tmp_path / "whole", workers=2)
    pd.testing.assert_frame_equal(resumed, whole)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "results.parquet"),
                                  pd.read_parquet(tmp_path / "whole" / "results.parquet"))
    # resuming a finished sweep computes nothing
    again = sweep(cfg, out=out, resume=True, workers=2)
    assert again.attrs["computed"] == [] and len(again.attrs["reused"]) == 8


def test_cli_sweep(tmp_path, capsys):
    cfg = _write(tmp_path, SMALL)
    out = tmp_path / "cli"
    assert main(["sweep", str(cfg), "--out", str(out), "--workers", "1", "--format", "csv",
                 "--set", "experiment.replications=1"]) == 0
    text = capsys.readouterr().out
    assert "sweep points" in text and "4 rows" in text
    df = pd.read_csv(out / "results.csv")
    assert len(df) == 4
    assert main(["sweep", str(cfg), "--out", str(out), "--resume", "--quiet", "--format", "csv",
                 "--set", "experiment.replications=1"]) == 0


def test_cli_sweep_errors(tmp_path, capsys):
    cfg = _write(tmp_path, SMALL)
    assert main(["sweep", str(cfg), "--workers", "0"]) == 2
    assert main(["sweep", str(cfg), "--scheduler", "tcp://127.0.0.1:1"]) == 2
    assert main(["sweep", str(cfg), "--set", "sweep.workload.parent=[1]"]) == 2
    err = capsys.readouterr().err
    assert "forksim: error:" in err and "Traceback" not in err
    with pytest.raises(ConfigError, match="resume"):
        sweep(cfg, resume=True)
