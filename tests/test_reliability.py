"""Reliability: every bad input (config, --set, profile, flag, arrivals file) gets one clear message
naming the file and the field, exit status 2, no traceback and nothing written; results are written
atomically; a run is reproducible from its seed."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from forksim import io
from forksim.cli import main
from forksim.profile import profile_path

DATA = Path(__file__).parent / "data" / "malformed"
QUICK = """
[experiment]
name = "tiny"
duration = "20ms"
warmup = "2ms"
replications = 2
seed = 7

[machine]
cpus = 2

[workload]
parents = 2

[workload.image]
rss = "8MiB"
vmas = 20

[workload.child]
lifetime = "50us"
"""
OPEN = QUICK.replace('parents = 2', 'kind = "open"\nparents = 2\narrivals = "{arrivals}"')


def invoke(argv: list[str], capsys) -> tuple[int, str]:
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse usage errors
        rc = exc.code
    return rc, capsys.readouterr().err


def check_rejected(argv: list[str], capsys, out: Path, *needles: str) -> str:
    rc, err = invoke(argv, capsys)
    assert rc == 2, (argv, rc, err)
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert lines and "error" in lines[0], err
    for needle in needles:
        assert needle in err, (needle, err)
    assert not out.exists() or not any(out.iterdir()), f"{out} was written"
    return err


@pytest.fixture
def quick(tmp_path) -> Path:
    p = tmp_path / "quick.toml"
    p.write_text(QUICK)
    return p


# ------------------------------------------------------------------ config files

CONFIGS = [
    # file, fragments the message must hold (the field, and a hint of what is allowed)
    ("typo_section.toml", "workloda", "did you mean 'workload'"),
    ("typo_key.toml", "workload.parnets", "did you mean 'parents'"),
    ("not_toml.toml", "not valid TOML"),
    ("negative_duration.toml", "experiment.duration"),
    ("bad_size_unit.toml", "workload.image.rss", "MiB"),
    ("rss_beyond_machine.toml", "workload.image.rss", "64 TiB"),
    ("vmas_beyond_max_map_count.toml", "workload.image.vmas", "vm.max_map_count"),
    ("bad_clone_kind.toml", "workload.child.clone", "'vfork'"),
    ("open_without_rate.toml", "workload", "rate"),
    ("nan_duration.toml", "experiment.duration", "finite"),
    ("inf_rate.toml", "workload.rate", "finite"),
    ("anon_vmas_above_vmas.toml", "workload.image", "anon_vmas"),
    ("profile_misspelt.toml", "machine.profile", "did you mean 'default'"),
    ("whatif_bad_term.toml", "whatif.dup_mmap.per_pet_us", "did you mean 'per_pte_us'"),
    ("section_not_a_table.toml", "workload"),
    ("wrong_type.toml", "workload.parents", "integer"),
    ("cow_fraction_above_one.toml", "workload.child.cow_write_fraction"),
    ("name_escapes_folder.toml", "experiment.name"),
    ("hours_of_work.toml", "experiment.duration", "experiment.max_creations="),
    ("unstable_open_rate.toml", "workload.rate", "far beyond"),
    ("sweep_typo.toml", "workload.parnets", "did you mean 'parents'"),
    ("sweep_empty.toml", "sweep.workload.parents", "non-empty"),
    ("not_utf8.toml", "cannot read config"),
    ("max_queue_unbounded.toml", "workload.max_queue"),
    ("tick_too_fine.toml", "machine.tick"),
    ("source_key.toml", "source", "unknown key"),
    ("fault_storm.toml", "workload.image.fault_rate"),
    ("replications_zero.toml", "experiment.replications"),
    ("unknown_kind.toml", "workload.kind", "'open'"),
]


@pytest.mark.parametrize("name,needles", [(c[0], c[1:]) for c in CONFIGS], ids=[c[0] for c in CONFIGS])
def test_malformed_config(name, needles, tmp_path, capsys):
    path = DATA / name
    assert path.exists()
    out = tmp_path / "out"
    check_rejected(["run", str(path), "--out", str(out), "--quiet"], capsys, out, str(path), *needles)


def test_missing_config_file(tmp_path, capsys):
    out = tmp_path / "out"
    check_rejected(["run", str(tmp_path / "nope.toml"), "--out", str(out)], capsys, out, "nope.toml", "no such config")


# ------------------------------------------------------------------ --set overrides

OVERRIDES = [
    ("workload.parents", "--set", "KEY=VALUE"),
    ("=5", "--set", "key"),
    ("workload.parnets=3", "workload.parnets", "did you mean 'parents'"),
    ("workload.image.rss=1e400", "workload.image.rss", "finite"),
    ("workload.image.rss.x=1", "workload.image.rss", "not a section"),
    ("experiment.duration=forever", "experiment.duration", "250us"),
    ("machine.cpus=0", "machine.cpus", "greater than or equal to 1"),
    ("whatif.dup_mmapp.per_pte_us=0.5", "whatif.dup_mmapp.per_pte_us", "did you mean 'dup_mmap'"),
    ("workload.rate=-5/s", "workload.rate", "negative"),
    ("experiment.seed=-1", "experiment.seed", "greater than or equal to 0"),
]


@pytest.mark.parametrize("override,field,hint", OVERRIDES, ids=[o[0] or "empty" for o in OVERRIDES])
def test_malformed_override(override, field, hint, quick, tmp_path, capsys):
    out = tmp_path / "out"
    check_rejected(["run", str(quick), "--out", str(out), "--set", override], capsys, out, field, hint)


# ------------------------------------------------------------------ flags

def test_malformed_flags(quick, tmp_path, capsys):
    out = tmp_path / "out"
    cases = [
        (["run", str(quick), "--out", str(out), "--workers", "-1"], "--workers"),
        (["run", str(quick), "--out", str(out), "--seed", "-3"], "--seed"),
        (["run", str(quick), "--out", str(out), "--format", "xls"], "--format"),
        (["predict", "--rss", "12 parsecs"], "--rss"),
        (["predict", "--rss", "100TiB"], "--rss"),
        (["predict", "--rss", "1e400"], "--rss"),
        (["predict", "--rss", "1GiB", "--thp", "maybe"], "--thp"),
        (["predict", "--rss", "1GiB", "--samples", "-5"], "--samples"),
        (["predict", "--rss", "1GiB", "--vmas", "0"], "--vmas"),
        (["predict", "--rss", "1GiB", "--seed", "-1"], "--seed"),
        (["predict", "--rss", "1GiB", "--cpus", "0"], "--cpus"),
    ]
    for argv, flag in cases:
        check_rejected(argv, capsys, out, flag)


def test_out_is_a_file(quick, tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("not a folder")
    check_rejected(["run", str(quick), "--out", str(target), "--quiet"], capsys, tmp_path / "none", "--out", "not a folder")
    assert target.read_text() == "not a folder"


# ------------------------------------------------------------------ profile files

def _profile_data() -> dict:
    return json.loads(profile_path("default").read_text())


def _bad_profiles() -> list[tuple[str, object, tuple[str, ...]]]:
    base = _profile_data()

    def edit(fn):
        d = json.loads(json.dumps(base))
        fn(d)
        return d

    stage = next(iter(base["stages"]))
    return [
        ("missing_stage", edit(lambda d: d["stages"].pop("dup_mmap")), ("stages", "dup_mmap")),
        ("nan_cost", edit(lambda d: d["stages"][stage].update(fixed_us=math.nan)), (f"stages.{stage}.fixed_us",)),
        ("negative_cost", edit(lambda d: d["stages"]["dup_mmap"].update(per_pte_us=-0.1)),
         ("stages.dup_mmap.per_pte_us", "greater than or equal to 0")),
        ("unknown_version", edit(lambda d: d.update(version=99)), ("version", "99")),
        ("wrong_format", edit(lambda d: d.update(format="something-else")), ("forksim-profile",)),
        ("zero_tick", edit(lambda d: d["scheduler"]["tick"].update(fixed_us=0.0)), ("scheduler", "tick")),
        ("not_an_object", [1, 2, 3], ("forksim-profile",)),
    ]


@pytest.mark.parametrize("case", range(7))
def test_malformed_profile(case, quick, tmp_path, capsys):
    name, data, needles = _bad_profiles()[case]
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data))  # json writes NaN as NaN, as a careless tool would
    out = tmp_path / "out"
    check_rejected(["run", str(quick), "--out", str(out), "--profile", str(path)], capsys, out, str(path), *needles)
    check_rejected(["predict", "--rss", "1MiB", "--profile", str(path), "--samples", "3"], capsys, out, str(path))


def test_profile_not_json(quick, tmp_path, capsys):
    path = DATA / "not_json_profile.json"
    out = tmp_path / "out"
    check_rejected(["run", str(quick), "--out", str(out), "--profile", str(path)], capsys, out, str(path), "not valid JSON")


def test_profile_missing(quick, tmp_path, capsys):
    out = tmp_path / "out"
    check_rejected(["run", str(quick), "--out", str(out), "--profile", "defualt"], capsys, out,
                   "machine.profile", "did you mean 'default'")


# ------------------------------------------------------------------ arrival-time files

ARRIVALS = [
    ("garbage.txt", "line 3"),
    ("empty.txt", "no arrival time"),
    ("decreasing.txt", "non-decreasing"),
    ("nan.txt", "finite"),
    ("negative.txt", "non-negative"),
    ("not_text.txt", "not a text file"),
    ("missing.txt", "cannot read"),
]


@pytest.mark.parametrize("name,hint", ARRIVALS, ids=[a[0] for a in ARRIVALS])
def test_malformed_arrivals(name, hint, tmp_path, capsys):
    arrivals = DATA / "arrivals" / name
    cfg = tmp_path / "open.toml"
    cfg.write_text(OPEN.format(arrivals=arrivals))
    out = tmp_path / "out"
    check_rejected(["run", str(cfg), "--out", str(out), "--quiet"], capsys, out, str(arrivals), "workload.arrivals", hint)


# ------------------------------------------------------------------ the real process: no traceback, --debug shows one

def test_subprocess_no_traceback_and_debug(tmp_path):
    bad = str(DATA / "typo_key.toml")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    res = subprocess.run([sys.executable, "-m", "forksim", "run", bad, "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert res.stderr.count("\n") == 1 and "workload.parnets" in res.stderr
    res = subprocess.run([sys.executable, "-m", "forksim", "run", bad, "--debug", "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 2 and "Traceback" in res.stderr
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ atomic writes

def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_atomic_write_leaves_nothing_when_the_writer_raises(tmp_path):
    target = tmp_path / "summary.json"

    def half(p: Path) -> None:
        p.write_text('{"forks": 12')  # half a file, then the writer dies
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        io.atomic_write(target, half)
    assert not target.exists()
    assert _leftovers(tmp_path) == []


def test_atomic_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "summary.json"
    io.write_json(target, {"forks": 1})
    with pytest.raises(ValueError):
        io.write_json(target, {"forks": math.nan})  # allow_nan=False: raises before anything lands
    assert json.loads(target.read_text()) == {"forks": 1}
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("suffix", ["parquet", "csv"])
def test_write_table_atomic(tmp_path, suffix, monkeypatch):
    df = pd.DataFrame({"a": [1, 2, 3], "b": [0.5, 1.5, 2.5]})
    target = tmp_path / f"forks.{suffix}"
    io.write_table(target, df)
    pd.testing.assert_frame_equal(io.read_table(target), df)
    before = target.read_bytes()

    if suffix == "parquet":  # written through pyarrow (with the records' key-value metadata)
        import pyarrow.parquet as pq

        real_pq = pq.write_table

        def broken_pq(table, where, *a, **k):
            real_pq(table.slice(0, 1), where, *a, **k)  # a partial table on disk, then a failure
            raise OSError("no space left on device")

        monkeypatch.setattr(pq, "write_table", broken_pq)
    else:
        real = pd.DataFrame.to_csv

        def broken(self, path, *a, **k):
            real(self.head(1), path, *a, **k)  # a partial table on disk, then a failure
            raise OSError("no space left on device")

        monkeypatch.setattr(pd.DataFrame, "to_csv", broken)
    with pytest.raises(OSError):
        io.write_table(target, df)
    assert target.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_run_writes_no_temp_files(quick, tmp_path, capsys):
    out = tmp_path / "out"
    rc, err = invoke(["run", str(quick), "--out", str(out), "--quiet"], capsys)
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["config.resolved.toml", "forks.parquet", "profile.json", "summary.json"]


# ------------------------------------------------------------------ reproducibility

@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_same_seed_same_results(fmt, quick, tmp_path, capsys):
    outs = []
    for i, workers in enumerate((1, 2)):  # and whatever the worker count
        out = tmp_path / f"run{i}"
        rc, err = invoke(["run", str(quick), "--out", str(out), "--quiet", "--format", fmt, "--workers", str(workers)],
                         capsys)
        assert rc == 0, err
        outs.append(out)
    a, b = (json.loads((o / "summary.json").read_text()) for o in outs)
    assert a.pop("sim_wall_s") >= 0 and b.pop("sim_wall_s") >= 0
    assert a == b
    assert a["forks"] > 0
    if fmt == "parquet":
        pd.testing.assert_frame_equal(pd.read_parquet(outs[0] / "forks.parquet"), pd.read_parquet(outs[1] / "forks.parquet"),
                                      check_exact=True)
    else:
        assert (outs[0] / "forks.csv").read_bytes() == (outs[1] / "forks.csv").read_bytes()
    assert (outs[0] / "config.resolved.toml").read_bytes() == (outs[1] / "config.resolved.toml").read_bytes()


def test_other_seed_other_results(quick, tmp_path, capsys):
    sums = []
    for seed in ("1", "2"):
        out = tmp_path / f"s{seed}"
        rc, err = invoke(["run", str(quick), "--out", str(out), "--quiet", "--seed", seed], capsys)
        assert rc == 0, err
        s = json.loads((out / "summary.json").read_text())
        s.pop("sim_wall_s")
        sums.append(s)
    assert sums[0] != sums[1]
