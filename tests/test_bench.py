"""forksim bench: runs in a tiny mode and prints its tables (figures only: no timing assertions)."""

from __future__ import annotations

import json

from forksim.bench import MODES, PRECISION_RUNS, floor_rate, plan
from forksim.cli import main
from forksim.commands.bench import COLUMNS


def test_floor_counts_jobs():
    fl = floor_rate(2, 200)
    assert fl["jobs"] == 200 and fl["rate"] > 0
    assert fl["events_per_job"] > 1


def test_bench_tiny_table(capsys, monkeypatch):
    from forksim.commands._common import console

    monkeypatch.setattr(console, "_width", 200)  # a wide terminal: headers on one line
    assert main(["bench", "--tiny"]) == 0
    out = capsys.readouterr().out
    flat = " ".join(out.split())
    header = next(line for line in out.splitlines() if "CPUs" in line)
    for col in COLUMNS:
        assert col in header, col
    for figure in ("2-CPU fork storm", "1M creations on 256 CPUs", "2 workers / 1 worker"):
        assert figure in flat
    for target in (">= 0.5", "< 60", "< 500", ">= 1.8"):
        assert target in flat
    assert "extrapolated" in flat


def test_bench_tiny_json(capsys):
    assert main(["bench", "--tiny", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    rows = result["scenarios"]
    assert [(r["cpus"], r["rss"], r["workload"]) for r in rows] == plan(MODES["tiny"])
    for r in rows:
        for key in ("creations_per_s", "events_per_creation", "floor_per_s", "ratio"):
            assert key in r
        assert r["creations"] >= MODES["tiny"].creations
    assert result["million"]["extrapolated"] is True
    assert set(result["targets"]) == {"floor_ratio_2cpu_storm", "million_wall_s", "million_peak_mb", "parallel_speedup",
                                      "precision_fork_storm_s"}
    assert "speedup" in result["parallel"]
    ttp = {t["experiment"]: t for t in result["time_to_precision"]}
    assert set(ttp) == set(PRECISION_RUNS)
    for t in ttp.values():  # tiny: 50% or a cap of 4 replications, whichever first
        assert 2 <= t["replications"] <= MODES["tiny"].precision_cap and t["wall_s"] > 0
        assert t["stopped"].startswith(("reached", "cap"))


def test_precision_runs_are_the_experiment_files():
    """The bench's own copies of fork-storm and cpu-scaling are the files' base points (sweep aside)."""
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "experiments"
    for name, cfg in PRECISION_RUNS.items():
        file = tomllib.loads((root / f"{name}.toml").read_text())
        file.pop("sweep", None)
        file["machine"]["profile"] = "default"  # the bench pins the shipped profile
        assert file == cfg, name
