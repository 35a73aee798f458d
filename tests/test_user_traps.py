"""What a new user hits: bare numbers for times, sizes and rates; a run that measures nothing; the
call each table names; Ctrl-C keeping what finished; citations of files the repo holds."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from forksim import cli
from forksim.config import load_experiment, parse_config
from forksim.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _off_host_warning_already_given():
    """The off-host warning is given once a process (store.warn_if_off_host): give it here, so that the one-line
    errors these tests read do not depend on whether an earlier test already had it (on a host the default
    profile was not measured on, this file alone failed)."""
    import warnings

    from forksim.profile import load_profile
    from forksim.store import warn_if_off_host

    from conftest import REFERENCE_PROFILE

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in ("default", REFERENCE_PROFILE):  # the shipped one, and the one `auto` means in the tests
            warn_if_off_host(load_profile(name))

BASE = """
[experiment]
name = "traps"
duration = "20ms"
warmup = "2ms"
replications = 2
seed = 3

[workload.image]
rss = "1MiB"
vmas = 20
"""


def _one_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("text,field,hint", [
    (BASE.replace('duration = "20ms"', "duration = 2"), "experiment.duration", '"2s"'),
    (BASE.replace('rss = "1MiB"', "rss = 256"), "workload.image.rss", '"256MiB"'),
    (BASE + '\n[workload.child]\nlifetime = 50\n', "workload.child.lifetime", '"50ms"'),
    (BASE.replace("[workload.image]", '[machine]\ntick = 4000\n\n[workload.image]'), "machine.tick", '"4000s"'),
    (BASE.replace("[workload.image]", '[workload]\nkind = "open"\nrate = 5000\n\n[workload.image]'),
     "workload.rate", '"5000/s"'),
    (BASE + '\n[sweep]\n"workload.image.rss" = ["1MiB", 2048]\n', "sweep.workload.image.rss", '"2048MiB"'),
])
def test_bare_numbers_in_a_config_are_refused(tmp_path, capsys, text, field, hint):
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    assert cli.main(["run", str(cfg), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert f"{field}: " in line and "has no unit" in line and hint in line, line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv,field", [
    (["run", "{cfg}", "--set", "experiment.duration=2"], "experiment.duration"),
    (["run", "{cfg}", "--set", "workload.image.rss=256"], "workload.image.rss"),
    (["plan", "{cfg}", "--slo", "fork_latency_us.p99<=2ms", "--find", "workload.image.rss", "--range", "1..64MiB"],
     "--range"),
    (["predict", "--rss", "256"], "--rss"),
])
def test_bare_numbers_on_the_command_line_are_refused(tmp_path, capsys, argv, field):
    cfg = tmp_path / "c.toml"
    cfg.write_text(BASE)
    assert cli.main([a.format(cfg=cfg) for a in argv]) == 2
    line = _one_line(capsys.readouterr().err)
    assert field in line and "has no unit" in line, line


def test_resolved_numbers_come_in_only_through_named_doors(tmp_path):
    data = {"experiment": {"duration": 20000.0, "warmup": 0}, "workload": {"image": {"rss": 1 << 20}}}
    with pytest.raises(ConfigError, match="has no unit"):
        parse_config(data)
    exp = parse_config(data, resolved=True)
    assert exp.experiment.duration == 20000.0 and exp.workload.image.rss == 1 << 20
    assert exp.with_overrides({"workload.image.rss": 2 << 20}, resolved=True).workload.image.rss == 2 << 20
    assert exp.with_overrides({"workload.image.rss": "2MiB"}).workload.image.rss == 2 << 20
    with pytest.raises(ConfigError, match="workload.image.rss: 2097152 has no unit"):
        exp.with_overrides({"workload.image.rss": 2 << 20})
    assert parse_config({"workload": {"think_time": 0, "child": {"lifetime": "0"}}}).workload.think_time == 0.0
    cfg = tmp_path / "r.toml"
    cfg.write_text('units = "model"\n[experiment]\nduration = 20000.0\n')
    assert load_experiment(cfg).experiment.duration == 20000.0
    cfg.write_text('units = "seconds"\n[experiment]\nduration = 2\n')
    with pytest.raises(ConfigError, match="units"):
        load_experiment(cfg)


def test_a_run_that_measures_no_creation_is_an_error(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(BASE)
    assert cli.main(["run", str(cfg), "--out", str(tmp_path / "o"), "--quiet", "--set", "experiment.duration=1us",
                     "--set", "experiment.warmup=0s"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "experiment.duration: no creation was measured" in line and "lengthen experiment.duration" in line
    assert not (tmp_path / "o").exists()


def test_a_creation_cap_reached_inside_the_warm_up_is_an_error_not_a_crash(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(BASE)
    assert cli.main(["run", str(cfg), "--out", str(tmp_path / "o"), "--quiet", "--set", "experiment.max_creations=3",
                     "--set", "experiment.warmup=200ms"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "no creation was measured" in line and "experiment.max_creations (3" in line


@pytest.mark.parametrize("clone,call", [("vfork", "vfork() call"), ("posix_spawn", "posix_spawn() call"),
                                        ("thread", "pthread_create() (clone(CLONE_THREAD)) call"),
                                        ("fork_exec", "fork() (+execve) call")])
def test_tables_name_the_call(clone, call, capsys):
    assert cli.main(["predict", "--rss", "1MiB", "--clone", clone, "--samples", "20"]) == 0
    out = capsys.readouterr().out
    assert call in out and not re.search(r"(?<!v)fork\(\) call", out.replace(call, ""))


def test_run_and_sweep_tables_name_the_call_and_units(tmp_path, forksim_cli):
    cfg = tmp_path / "c.toml"
    cfg.write_text(BASE + '\n[workload.child]\nclone = "vfork"\n\n[sweep]\n"workload.image.rss" = ["1MiB", "64MiB"]\n')
    proc = forksim_cli("run", cfg, "--out", tmp_path / "r")
    assert proc.returncode == 0, proc.stderr
    assert "vfork() call" in proc.stdout and not re.search(r"(?<!v)fork\(\) call", proc.stdout)
    proc = forksim_cli("sweep", cfg, "--out", tmp_path / "s", "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "rss=64MiB" in out and "rss=1MiB" in out and "67108864" not in out
    assert "vfork() p50 us" in out


def test_ctrl_c_keeps_the_finished_replications(tmp_path, capsys, monkeypatch):
    import forksim.runner as runner

    real, calls = runner._one, []

    def interrupted_at_the_third(args):
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(args)

    monkeypatch.setattr(runner, "_one", interrupted_at_the_third)
    cfg = tmp_path / "c.toml"
    cfg.write_text(BASE.replace("replications = 2", "replications = 4"))
    out = tmp_path / "o"
    assert cli.main(["run", str(cfg), "--out", str(out), "--workers", "1", "--quiet"]) == 130
    err = capsys.readouterr().err
    assert "the 2 finished of 4 replications are kept" in err
    s = json.loads((out / "summary.json").read_text())
    assert s["partial"] is True and s["replications"] == 2 and s["replications_planned"] == 4 and s["forks"] > 0
    assert (out / "forks.parquet").exists() and load_experiment(out / "config.resolved.toml").experiment.replications == 4


def test_cited_files_are_in_the_repo():
    cited = set()
    for path in [*REPO.glob("experiments/*.toml"), *REPO.glob("forksim/**/*.py"), *REPO.glob("forksim/profiles/*.json"),
                 *REPO.glob("*.md")]:
        cited |= set(re.findall(r"\b((?:[\w-]+/)*[A-Z][A-Z_-]*\.md)\b", path.read_text()))  # README.md, docs/X.md
    assert cited, "no citation found"
    for name in cited:
        assert (REPO / name).exists() or name.startswith("http"), f"{name} is cited but not in the repository"
