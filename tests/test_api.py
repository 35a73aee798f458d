"""The public API keeps its names; a sweep whose workers die, or whose every point fails, is an
error; `--resume` refuses a folder holding another grid's points."""

from __future__ import annotations

import importlib
import os
import pkgutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

import forksim
from forksim.errors import SweepError

REPO = Path(__file__).resolve().parent.parent

SMALL = """
[experiment]
name = "small"
duration = "{duration}"
warmup = "1ms"
replications = {reps}
seed = 7

[workload.image]
rss = "1MiB"

[sweep]
"workload.parents" = [1, 2, 3, 4]
"""


def test_public_names_stay_what_they_are():
    before = {name: getattr(forksim, name) for name in forksim.__all__}
    assert callable(forksim.sweep) and callable(forksim.plan)
    for mod in pkgutil.walk_packages(forksim.__path__, "forksim."):  # forksim.sweep, forksim.plan, ...
        if mod.name.endswith("__main__"):
            continue
        importlib.import_module(mod.name)
    for name, obj in before.items():
        again = getattr(forksim, name)
        assert again is obj, f"forksim.{name} changed from {obj!r} to {again!r}"
        if name not in ("plots", "validation"):  # the two names that are modules on purpose
            assert not isinstance(again, types.ModuleType), f"forksim.{name} is a module"
    assert forksim.sweep is forksim.sweep and forksim.plan.__module__ == "forksim.plan"


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def test_a_local_pool_whose_worker_died_is_torn_down_before_close_returns():
    """A worker killed (here: it _exits) breaks the pool: run raises WorkersLost, and close, even asked to cancel,
    waits for the pool's manager thread, which otherwise closes its wake-up pipe while the interpreter's exit handler
    writes to it (an EBADF traceback at exit)."""
    import threading
    from concurrent.futures.process import _ExecutorManagerThread

    from forksim.executor import LocalPool, WorkersLost

    ex = LocalPool(1)
    with pytest.raises(WorkersLost):
        list(ex.run(os._exit, [(0, (1,))]))
    ex.close(cancel=True)
    assert not [t for t in threading.enumerate() if isinstance(t, _ExecutorManagerThread) and t.is_alive()]


def test_sweep_whose_workers_die_exits_nonzero(tmp_path):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(SMALL.format(duration="2s", reps=2))
    env = dict(os.environ, PYTHONPATH=str(REPO), NO_COLOR="1")
    proc = subprocess.Popen([sys.executable, "-m", "forksim", "sweep", str(cfg), "--out", str(tmp_path / "o"),
                             "--workers", "2", "--quiet"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        workers: list[int] = []
        while time.monotonic() < deadline and proc.poll() is None and len(workers) < 2:
            # the pool's workers are the forkserver's children (grandchildren of the sweep)
            workers = [w for c in _children(proc.pid) for w in _children(c)]
            time.sleep(0.05)
        assert workers, "no worker process seen"
        for w in workers:
            os.kill(w, signal.SIGKILL)  # as the OOM killer would
        rc = proc.wait(timeout=60)
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.stderr.close()
    assert rc != 0, err
    assert "worker processes died" in err and "Traceback" not in err
    assert not (tmp_path / "o" / "results.parquet").exists()


def test_sweep_where_every_point_fails_raises(tmp_path):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(SMALL.format(duration="20ms", reps=1))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SweepError, match="every point of the sweep failed"):
        forksim.sweep(cfg, out=tmp_path / "o", workers=1, profile=str(bad))
    assert (tmp_path / "o" / "results.parquet").exists()  # the failures are recorded


def test_resume_refuses_a_folder_of_another_grid(tmp_path, capsys):
    from forksim.cli import main

    cfg = tmp_path / "cfg.toml"
    cfg.write_text(SMALL.format(duration="5ms", reps=1))
    out = str(tmp_path / "o")
    assert main(["sweep", str(cfg), "--out", out, "--workers", "1", "--quiet"]) == 0
    assert main(["sweep", str(cfg), "--out", out, "--workers", "1", "--quiet", "--resume"]) == 0
    capsys.readouterr()
    assert main(["sweep", str(cfg), "--out", out, "--workers", "1", "--quiet", "--resume",
                 "--set", "workload.image.rss=2MiB"]) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "differ" in err and "new --out" in err
    assert len(list((tmp_path / "o" / "points").iterdir())) == 4  # nothing added
