"""Configs, overrides, units and the `forksim` command line: bad input gets one message and exit
status 2 with nothing written; `run` writes the contract's files; `predict --json` prints JSON."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forksim import cli
from forksim.config import (
    apply_overrides,
    experiment_to_toml_dict,
    load_experiment,
    parse_config,
    parse_override,
)
from forksim.errors import ConfigError
from forksim.units import UnitError, format_size, format_time_us, parse_rate, parse_size, parse_time_us

# ------------------------------------------------------------------------- bad configs

BAD_CONFIGS = {
    # name: (file text, what the message must name besides the file)
    "unknown_key": ('[workload]\nparnets = 4\n', ["workload.parnets", "did you mean 'parents'"]),
    "unknown_section": ('[wrkload]\nparents = 4\n', ["wrkload"]),
    "wrong_type": ('[machine]\ncpus = "many"\n', ["machine.cpus"]),
    "negative_count": ('[workload]\nparents = -3\n', ["workload.parents"]),
    "negative_hogs": ('[background]\ncpu_hogs = -1\n', ["background.cpu_hogs"]),
    "bad_size_unit": ('[workload.image]\nrss = "12 parsecs"\n', ["workload.image.rss", "parsecs"]),
    "bad_time_unit": ('[experiment]\nduration = "5 fortnights"\n', ["experiment.duration", "fortnights"]),
    "bad_clone": ('[workload.child]\nclone = "spoon"\n', ["workload.child.clone"]),
    "malformed_toml": ('[workload\nparents = 3\n', ["TOML"]),
}


def _one_message(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one message, got:\n{stderr}"
    return lines[0]


def _write_bad(tmp_path, case):
    text, names = BAD_CONFIGS[case]
    cfg = tmp_path / f"{case}.toml"
    cfg.write_text(text)
    return cfg, names


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_exits_2_with_one_message_and_writes_nothing(case, tmp_path, capsys):
    cfg, names = _write_bad(tmp_path, case)
    out = tmp_path / "out"
    rc = cli.main(["run", str(cfg), "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert rc == 2, captured.err
    assert "Traceback" not in captured.err
    msg = _one_message(captured.err)
    assert msg.startswith("forksim: error: ")
    assert cfg.name in msg
    for name in names:
        assert name in msg, msg
    assert not out.exists()
    assert captured.out.strip() == ""


@pytest.mark.parametrize("case", ["unknown_key", "malformed_toml"])
def test_bad_config_from_the_shell(case, tmp_path, forksim_cli):
    """The real command: exit status 2, one line on stderr, no traceback, no output folder."""
    cfg, names = _write_bad(tmp_path, case)
    out = tmp_path / "out"
    proc = forksim_cli("run", cfg, "--out", out)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    msg = _one_message(proc.stderr)
    assert cfg.name in msg and all(n in msg for n in names)
    assert not out.exists()


def test_missing_config_file(tmp_path, forksim_cli):
    out = tmp_path / "out"
    proc = forksim_cli("run", tmp_path / "nope.toml", "--out", out)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    msg = _one_message(proc.stderr)
    assert "nope.toml" in msg and "no such" in msg.lower()
    assert not out.exists()


@pytest.mark.parametrize(
    "argv,names",
    [
        (["--set", "workload.parents"], ["--set", "KEY=VALUE"]),
        (["--set", "workload.parents=-2"], ["workload.parents"]),
        (["--set", "workload.image.rss=lots"], ["workload.image.rss"]),
        (["--seed", "-1"], ["--seed"]),
        (["--workers", "-3"], ["--workers"]),
    ],
    ids=["set_without_value", "set_negative", "set_bad_size", "negative_seed", "negative_workers"],
)
def test_bad_flags_exit_2_in_process(argv, names, tiny_toml, tmp_path, capsys):
    out = tmp_path / "out"
    rc = cli.main(["run", str(tiny_toml()), "--out", str(out), "--quiet", *argv])
    err = capsys.readouterr().err
    assert rc == 2
    msg = _one_message(err)
    for name in names:
        assert name in msg, msg
    assert not out.exists()


def test_bad_rss_flag_for_predict(capsys):
    rc = cli.main(["predict", "--rss", "12XB"])
    assert rc == 2
    assert "--rss" in _one_message(capsys.readouterr().err)


def test_config_error_names_source_and_field():
    with pytest.raises(ConfigError) as info:
        parse_config({"machine": {"cpus": 0}}, source="box.toml")
    err = info.value
    assert err.source == "box.toml" and err.field == "machine.cpus"
    assert str(err).startswith("box.toml: machine.cpus: ")


# ------------------------------------------------------------------------- overrides


def test_overrides_set_nested_keys_and_quantities(tiny_toml):
    path = tiny_toml()
    overrides = dict(parse_override(o) for o in (
        "workload.parents=8", "workload.image.rss=512MiB", "workload.child.clone=vfork",
        "experiment.duration=3ms", "machine.cpus = 4", "workload.image.thp=true",
    ))
    assert overrides["workload.parents"] == 8
    assert overrides["workload.image.rss"] == "512MiB"
    exp = load_experiment(path, overrides)
    assert exp.workload.parents == 8
    assert exp.workload.image.rss == 512 * 1024**2
    assert exp.workload.child.clone == "vfork"
    assert exp.experiment.duration == 3000.0
    assert exp.machine.cpus == 4
    assert exp.workload.image.thp is True
    # untouched keys keep the file's values
    assert exp.workload.image.vmas == 20


def test_override_creates_a_missing_section(tiny_dict):
    data = apply_overrides(tiny_dict(), {"background.cpu_hogs": 3})
    assert parse_config(data).background.cpu_hogs == 3


@pytest.mark.parametrize(
    "key,hint",
    [("workload.image.rsss", "rss"), ("workload.parnets", "parents"), ("machin.cpus", "machine")],
)
def test_misspelt_override_key_gets_a_hint(key, hint, tiny_dict):
    with pytest.raises(ConfigError) as info:
        apply_overrides(tiny_dict(), {key: 1})
    assert f"did you mean '{hint}'" in str(info.value)
    assert key in str(info.value)


def test_misspelt_set_on_the_command_line(tiny_toml, tmp_path, capsys):
    rc = cli.main(["run", str(tiny_toml()), "--out", str(tmp_path / "o"), "--set", "workload.image.rsss=1MiB"])
    assert rc == 2
    msg = _one_message(capsys.readouterr().err)
    assert "did you mean 'rss'" in msg
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------- forksim run

LATENCY_KEYS = ("mean", "p50", "p90", "p99", "p999", "ci95")


def _check_contract(summary: dict) -> None:
    assert isinstance(summary["forks"], int) and summary["forks"] > 0
    assert isinstance(summary["sim_wall_s"], (int, float)) and summary["sim_wall_s"] >= 0
    thr = summary["throughput_per_s"]
    assert thr["mean"] > 0 and len(thr["ci95"]) == 2 and thr["ci95"][0] <= thr["mean"] <= thr["ci95"][1]
    for key in ("fork_latency_us", "roundtrip_latency_us", "child_start_latency_us"):
        lat = summary[key]
        for k in LATENCY_KEYS:
            assert k in lat, (key, k)
        given = [lat[p] for p in ("p50", "p90", "p99", "p999") if lat[p] is not None]
        assert 0 < lat["p50"] <= lat["p90"] and given == sorted(given)
        assert len(lat["ci95"]["p50"]) == 2
        for p in ("p99", "p999"):  # a tail percentile: given with its CI, or null with the reason
            assert (lat[p] is None) == (lat["ci95"][p] is None) == (p in lat.get("refused", {}))
    assert summary["fork_latency_us"]["mean"] <= summary["roundtrip_latency_us"]["mean"]
    assert 0.0 <= summary["cpu_utilization"] <= 1.0
    for lock in ("tasklist_lock", "mmap_lock"):
        w = summary["lock_wait_us"][lock]
        assert w["mean"] >= 0 and w["p99"] >= 0


def test_run_writes_the_contract_files(tiny_toml, tmp_path, forksim_cli):
    import pandas as pd

    path = tiny_toml()
    out = tmp_path / "run"
    proc = forksim_cli("run", path, "--out", out, "--set", "workload.image.rss=2MiB", "--set", "workload.parents=3")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert {p.name for p in out.iterdir()} >= {"summary.json", "forks.parquet", "config.resolved.toml"}
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    summary = json.loads((out / "summary.json").read_text())
    _check_contract(summary)
    forks = pd.read_parquet(out / "forks.parquet")
    assert {"replication", "warmup", "start_us", "fork_ret_us", "child_start_us", "reap_us", "fork_latency_us"} <= set(forks.columns)
    assert len(forks) >= summary["forks"]
    assert set(forks["replication"]) == {0, 1}

    # the resolved config re-loads into the same experiment (overrides included)
    resolved = load_experiment(out / "config.resolved.toml")
    wanted = load_experiment(path, {"workload.image.rss": "2MiB", "workload.parents": 3})
    assert resolved.model_dump() == wanted.model_dump()
    assert resolved.workload.parents == 3 and resolved.workload.image.rss == 2 * 1024**2
    assert experiment_to_toml_dict(resolved) == experiment_to_toml_dict(wanted)


def test_same_seed_gives_a_byte_identical_summary(tiny_toml, tmp_path, capsys):
    path = tiny_toml()
    texts = []
    for name, seed in (("a", "5"), ("b", "5"), ("c", "6")):
        rc = cli.main(["run", str(path), "--out", str(tmp_path / name), "--quiet", "--seed", seed])
        assert rc == 0, capsys.readouterr().err
        texts.append((tmp_path / name / "summary.json").read_text())

    def strip_wall(text: str) -> str:
        lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith('"sim_wall_s"')]
        assert len(lines) == len(text.splitlines()) - 1
        return "\n".join(lines)

    a, b, c = texts
    assert strip_wall(a) == strip_wall(b)
    ja, jc = json.loads(a), json.loads(c)
    ja.pop("sim_wall_s"), jc.pop("sim_wall_s")
    assert ja["seed"] == 5 and jc["seed"] == 6
    assert ja["fork_latency_us"] != jc["fork_latency_us"]


def test_run_prints_a_summary_table(tiny_toml, tmp_path, capsys):
    rc = cli.main(["run", str(tiny_toml()), "--out", str(tmp_path / "o")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "throughput" in out and "fork() call" in out


# ------------------------------------------------------------------------- forksim predict


def test_predict_json(forksim_cli):
    proc = forksim_cli("predict", "--rss", "256MiB", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["samples"] >= 1000  # the default: enough for a p99
    for key in ("fork_latency_us", "roundtrip_latency_us"):
        for q in ("p50", "p90", "p99"):
            assert isinstance(data[key][q], float) and data[key][q] > 0, (key, q)
        assert data[key]["p50"] <= data[key]["p90"] <= data[key]["p99"]
    assert data["rss_bytes"] == 256 * 1024**2
    assert data["fork_latency_us"]["p50"] < data["roundtrip_latency_us"]["p50"]


def test_predict_json_in_process_matches_flags(capsys):
    rc = cli.main(["predict", "--rss", "1GiB", "--thp", "on", "--clone", "fork", "--json", "--samples", "50"])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert data["thp"] is True and data["rss_bytes"] == 1024**3 and data["clone"] == "fork"


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("run", "predict"):
        assert cmd in out


def test_unknown_command_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["frobnicate"])
    assert info.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


# ------------------------------------------------------------------------- units


@pytest.mark.parametrize(
    "text,value",
    [("256MiB", 256 * 1024**2), ("1GiB", 1024**3), ("4096B", 4096), ("1.5KiB", 1536), ("2MB", 2_000_000),
     ("1 GiB", 1024**3), ("0", 0), ("3kib", 3072)],
)
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize(
    "text,value",
    [("250us", 250.0), ("2ms", 2000.0), ("10s", 10e6), ("1.5ms", 1500.0), ("500ns", 0.5), ("1min", 60e6),
     ("42us", 42.0), ("0us", 0.0), ("0", 0.0)],
)
def test_parse_time(text, value):
    assert parse_time_us(text) == pytest.approx(value)


@pytest.mark.parametrize("text,value", [("5000/s", 5000.0), ("2/ms", 2000.0), ("300/min", 5.0), ("7/s", 7.0)])
def test_parse_rate(text, value):
    assert parse_rate(text) == pytest.approx(value)


@pytest.mark.parametrize(
    "fn,text,fragments",
    [
        (parse_size, "12XB", ["unknown size unit", "XB", "MiB"]),
        (parse_size, "many", ["not a size", "256MiB"]),
        (parse_size, "-5MiB", []),
        (parse_time_us, "5 fortnights", ["unknown time unit", "fortnights", "ms"]),
        (parse_time_us, "soon", ["not a duration"]),
        (parse_rate, "fast", ["not a rate", "/s"]),
        (parse_rate, "5/fortnight", ["unknown rate unit"]),
    ],
)
def test_unit_errors_say_what_is_allowed(fn, text, fragments):
    with pytest.raises(UnitError) as info:
        fn(text)
    msg = str(info.value)
    assert text in msg or repr(text) in msg
    for f in fragments:
        assert f in msg, msg


def test_booleans_are_not_quantities():
    for fn in (parse_size, parse_time_us, parse_rate):
        with pytest.raises(UnitError):
            fn(True)


def test_format_round_trips_for_common_quantities():
    for text in ("256MiB", "1GiB", "4KiB", "1.5GiB", "512B"):
        assert format_size(parse_size(text)) == text
    for text in ("250us", "2ms", "10s", "1.5ms"):
        assert format_time_us(parse_time_us(text)) == text


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=1023), st.sampled_from([1, 1024, 1024**2, 1024**3]))
def test_size_format_parse_round_trip(n, unit):
    nbytes = n * unit
    assert parse_size(format_size(nbytes)) == nbytes


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=0.001, max_value=1e10, allow_nan=False, allow_infinity=False))
def test_time_format_parse_round_trip(us):
    back = parse_time_us(format_time_us(us))
    assert math.isclose(back, us, rel_tol=1e-5)


@pytest.mark.parametrize("flag,value", [("--gap", "5"), ("--gap", "2h"), ("--child-life", "-1s")])
def test_bad_gap_or_child_life_for_predict(capsys, flag, value):
    rc = cli.main(["predict", "--rss", "1MiB", f"{flag}={value}"])
    assert rc == 2
    assert flag in _one_message(capsys.readouterr().err)
