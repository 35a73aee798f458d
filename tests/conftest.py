"""Shared fixtures: tiny experiment configs (as mappings, Experiments or TOML files) and a way to
run the `forksim` command in a subprocess."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import tomli_w

from forksim.config import Experiment, parse_config

REPO = Path(__file__).resolve().parent.parent
# The profile the tests compute with: the shipped default as it was from 2026-11-28 to 2026-12-03, kept fixed here so
# that measuring the shipped default again (it tracks the host) moves no test; its sections are what the mechanism
# tests take as "a profile without X" or "with X"
REFERENCE_PROFILE = str(REPO / "tests" / "data" / "profile-amd-20261128.json")

# A small closed-loop experiment: short, two replications, the reference profile (`auto`, below).
TINY: dict[str, Any] = {
    "experiment": {"name": "tiny", "duration": "20ms", "warmup": "2ms", "replications": 2, "seed": 7},
    "machine": {"cpus": 2},
    "workload": {"kind": "closed", "parents": 2, "image": {"rss": "1MiB", "vmas": 20}},
}


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of `base` with the nested mapping `extra` laid over it."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@pytest.fixture(autouse=True, scope="session")
def _no_stored_profiles(tmp_path_factory) -> Any:
    """Every test (and every `forksim` subprocess a test starts) sees an empty profile store: a profile
    that `forksim calibrate` stored on this machine must not change what the tests compute, and the
    tests never write into the real ~/.local/share. Tests of the store point XDG_DATA_HOME elsewhere
    and unset FORKSIM_PROFILE."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("xdg-data")))
        # and `auto` means the reference profile on every host (a shipped profile of this host's kind, or the
        # shipped default measured again, would change the figures the tests check); the tests of `auto` unset it
        mp.setenv("FORKSIM_PROFILE", REFERENCE_PROFILE)
        yield


@pytest.fixture(autouse=True, scope="session")
def _wide_console() -> None:
    """In-process command output at 200 columns whatever the terminal's width (the `forksim` subprocesses get
    COLUMNS=200 too): tests read its lines, which rich would fold at a narrow terminal's edge."""
    from forksim.commands import _common

    for c in (_common.console, _common.err_console):
        c.width = 200


@pytest.fixture
def tiny_dict() -> Callable[..., dict[str, Any]]:
    """tiny_dict({"workload": {"parents": 4}}) -> the tiny config with those keys changed."""

    def make(extra: dict[str, Any] | None = None) -> dict[str, Any]:
        return merge(TINY, extra or {})

    return make


@pytest.fixture
def tiny_exp(tiny_dict) -> Callable[..., Experiment]:
    def make(extra: dict[str, Any] | None = None) -> Experiment:
        return parse_config(tiny_dict(extra), source="tiny")

    return make


@pytest.fixture
def tiny_toml(tmp_path, tiny_dict) -> Callable[..., Path]:
    """Write the tiny config (with changes) to a TOML file; returns its path."""

    def make(extra: dict[str, Any] | None = None, name: str = "tiny.toml") -> Path:
        path = tmp_path / name
        path.write_text(tomli_w.dumps(tiny_dict(extra)))
        return path

    return make


@pytest.fixture
def forksim_cli(tmp_path) -> Callable[..., subprocess.CompletedProcess]:
    """Run `python -m forksim ARGS...` (cwd: a scratch folder); returns the completed process."""

    def run(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
        env = dict(os.environ, COLUMNS="200", NO_COLOR="1", PYTHONPATH=str(REPO))
        return subprocess.run(
            [sys.executable, "-m", "forksim", *map(str, args)],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )

    return run
