"""forksim.lab: the compiler and build cache, machine facts, and ending a measured program's group."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from forksim import lab
from forksim.calibration.fit import PROBABILITIES, stage_cost, stage_json
from forksim.calibration.plan import BENCH_MODES, VARIANTS
from forksim.kernel.flags import COPIES_MM, EXECS, KINDS
from forksim.lab.memory import compact_memory, large_block_share
from forksim.lab.processes import end_group

NEEDS_CC = pytest.mark.skipif(lab.compiler() is None, reason="no C compiler")


def test_cache_root_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("FORKSIM_CACHE_DIR", str(tmp_path / "a"))
    assert lab.cache_root() == tmp_path / "a" / "forksim"
    monkeypatch.delenv("FORKSIM_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "b"))
    assert lab.cache_root() == tmp_path / "b" / "forksim"


def test_build_dir_is_keyed_by_sources_and_compiler(tmp_path, monkeypatch):
    monkeypatch.setenv("FORKSIM_CACHE_DIR", str(tmp_path))
    src = tmp_path / "x.c"
    src.write_text("int main(void) { return 0; }\n")
    a = lab.build_dir("t", [src], "cc 1")
    assert a.is_dir() and a.name.startswith("t-")
    assert lab.build_dir("t", [src], "cc 1") == a  # same inputs: the same folder
    assert lab.build_dir("t", [src], "cc 2") != a  # another compiler
    src.write_text("int main(void) { return 1; }\n")
    assert lab.build_dir("t", [src], "cc 1") != a  # another source


def test_compiler_honours_cc(monkeypatch):
    monkeypatch.setenv("CC", sys.executable)  # any program on PATH stands for the named compiler
    assert lab.compiler() == sys.executable
    monkeypatch.setenv("CC", "/nonexistent/cc")
    assert lab.compiler() != "/nonexistent/cc"


@NEEDS_CC
def test_compile_c_is_atomic_and_reports_errors(tmp_path):
    cc = lab.compiler()
    good, bad = tmp_path / "good.c", tmp_path / "bad.c"
    good.write_text('#include "lab.h"\nint main(void) { return now_ns() > 0 ? 0 : 1; }\n')
    bad.write_text("int main(void) { return }\n")
    r = lab.compile_c(cc, ["-O2", str(good)], tmp_path / "good")
    assert r.returncode == 0 and subprocess.run([tmp_path / "good"]).returncode == 0
    r = lab.compile_c(cc, ["-O2", str(bad)], tmp_path / "bad")
    assert r.returncode != 0 and r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.c", "good", "good.c"]  # no half binary left


def test_machine_facts_and_memory():
    facts = lab.machine_facts()
    assert facts["cpus"] >= 1 and facts["page_size"] >= 4096 and facts["kernel"]
    avail = lab.mem_available()
    assert avail is None or 0 < avail <= facts["mem_total_bytes"]
    assert lab.read_text("/nonexistent/file") is None


BUDDYINFO = """Node 0, zone      DMA      0      0      0      0      0      0      0      0      1      1      3
Node 0, zone   Normal      8      0      0      0      0      0      0      0      0      1      0
"""


def test_large_block_share_counts_pages_not_blocks():
    # DMA: 256 + 512 + 3 * 1024 pages in blocks of order 8..10; Normal: 8 single pages and one order-9 block
    large = 512 + 3 * 1024 + 512
    assert large_block_share(BUDDYINFO) == round(large / (large + 256 + 8), 4)
    assert large_block_share("") is None


def test_compact_memory_writes_once_and_reports_a_refusal(tmp_path):
    knob, info = tmp_path / "compact_memory", tmp_path / "buddyinfo"
    knob.write_text("")
    info.write_text(BUDDYINFO)
    done = compact_memory(knob, info)
    assert done["compacted"] and knob.read_text() == "1\n" and done["seconds"] >= 0
    assert done["large_free_share_before"] == done["large_free_share_after"] == large_block_share(BUDDYINFO)
    refused = compact_memory(tmp_path / "no" / "compact_memory", tmp_path / "no" / "buddyinfo")  # never raises
    assert not refused["compacted"] and "not writable" in refused["reason"]
    assert refused["large_free_share_before"] is None


@pytest.mark.skipif(shutil.which("sh") is None, reason="no sh")
def test_end_group_leaves_nothing_of_the_group():
    # a leader whose child outlives it in the same group (setsid: the group is the leader's pid)
    proc = subprocess.Popen(["sh", "-c", "sleep 30 & sleep 30"], start_new_session=True)
    time.sleep(0.2)
    assert lab.group_alive(proc.pid)
    end_group(proc)
    assert proc.returncode is not None
    assert not lab.group_alive(proc.pid)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")
def test_a_group_of_zombies_is_not_alive():
    """An exited process nobody has reaped yet runs nothing: a group left with only such members is ended (an
    orphan's zombie waits for init, which reaps it seconds late on this machine kind)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # exited, not yet reaped: a zombie of ours
        with open(f"/proc/{proc.pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        time.sleep(0.01)
    assert not lab.group_alive(proc.pid)
    proc.wait()


def test_stage_cost_is_typed_and_writes_as_before():
    q = list(np.linspace(0.5, 2.0, len(PROBABILITIES)))  # a residual's quantiles are at fit.PROBABILITIES
    c = stage_cost({"per_pte_us": 0.0123456789, "fixed_us": -1.0}, quantiles=q, source="measured: x")
    assert c.per_pte_us == 0.0123457 and c.fixed_us == 0.0  # 6 significant digits, negatives to 0
    assert stage_json(c) == {"fixed_us": 0.0, "per_vma_us": 0.0, "per_anon_vma_us": 0.0, "per_pte_us": 0.0123457,
                             "per_pmd_us": 0.0, "per_thread_us": 0.0,
                             "residual": {"family": "empirical", "quantiles": q, "probabilities": list(PROBABILITIES)},
                             "source": "measured: x"}
    with pytest.raises(ValueError, match="PROBABILITIES"):
        stage_cost(fixed_us=1.0, quantiles=[0.5, 1.0, 2.0], source="s")  # not one per probability
    assert stage_json(stage_cost(fixed_us=2.0, sigma=0.1, source="s"))["residual"] == {"family": "lognormal",
                                                                                        "sigma": 0.1}


def test_benchmark_modes_follow_the_kind_table():
    assert set(BENCH_MODES) == set(KINDS)
    assert set(VARIANTS) == set(KINDS) - (COPIES_MM - EXECS)  # every kind but the plain fork
    csrc = Path(lab.__file__).parent.parent / "calibration" / "csrc" / "forkbench.c"
    text = csrc.read_text()
    for mode in BENCH_MODES.values():
        assert f'"{mode}"' in text, f"forkbench.c has no mode {mode!r}"
