"""Calibration wing: fits, trace parsing, a seconds-long real calibration, and cleanup on SIGINT."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from forksim.calibration import tracefs
from forksim.calibration.plan import PLANS, MiB
from forksim.calibration.fit import (PROBABILITIES, Config, cross_validate, fit_linear, lognormal_sigma,
                                    residual_quantiles, stage_cost, typical_quantiles)
from forksim.profile import ImageShape, Profile

REPO = Path(__file__).resolve().parent.parent
HAVE_CC = any(shutil.which(c) for c in (os.environ.get("CC") or "cc", "gcc", "clang"))
LINUX = sys.platform == "linux"


# ---------------------------------------------------------------------------------------------
# fits


def _synthetic(coef: dict[str, float], sigma: float = 0.05, seed: int = 1) -> list[Config]:
    rng = np.random.default_rng(seed)
    shapes = [(25, 11, 24, 0), (25, 11, 4096, 0), (26, 12, 65560, 0), (26, 12, 262168, 0), (1025, 11, 24, 0),
              (10025, 11, 24, 0), (1025, 1011, 1024, 0), (10025, 10011, 10024, 0), (26, 12, 24, 128),
              (26, 12, 24, 512)]
    out = []
    for v, a, p, m in shapes:
        med = coef["fixed_us"] + coef["per_vma_us"] * v + coef["per_anon_vma_us"] * a + coef["per_pte_us"] * p \
            + coef["per_pmd_us"] * m
        out.append(Config(v, a, p, m, 1, list(med * rng.lognormal(0.0, sigma, 400)), f"{v}/{a}/{p}/{m}"))
    return out


def test_fit_recovers_known_coefficients():
    truth = {"fixed_us": 14.0, "per_vma_us": 0.35, "per_anon_vma_us": 0.86, "per_pte_us": 0.052, "per_pmd_us": 0.5}
    cfgs = _synthetic(truth)
    fit = fit_linear(cfgs)
    for term, want in truth.items():
        assert fit.coef[term] == pytest.approx(want, rel=0.05), term
    assert fit.coef["per_thread_us"] == 0.0
    assert fit.r2 > 0.999
    cv = cross_validate(cfgs)
    assert cv and max(abs(r["rel_error"]) for r in cv if r["config"] != "25/11/24/0") < 0.1


def test_fit_is_non_negative_and_residuals_are_ratios():
    truth = {"fixed_us": 10.0, "per_vma_us": 0.0, "per_anon_vma_us": 0.0, "per_pte_us": 0.03, "per_pmd_us": 0.0}
    cfgs = _synthetic(truth, sigma=0.2, seed=7)
    fit = fit_linear(cfgs)
    assert all(v >= 0 for v in fit.coef.values())
    q = residual_quantiles(cfgs)
    assert len(q) == len(PROBABILITIES) and q == sorted(q)
    assert q[10] == pytest.approx(1.0, abs=0.03)  # the median ratio
    # lognormal(0, 0.2): the 5% and 95% quantiles of the ratio
    assert q[1] == pytest.approx(np.exp(-1.645 * 0.2), rel=0.05)
    assert q[19] == pytest.approx(np.exp(1.645 * 0.2), rel=0.05)
    assert lognormal_sigma(cfgs) == pytest.approx(0.2, rel=0.1)


def test_one_outlier_is_drawn_about_as_often_as_it_was_measured():
    """A stage's lone hiccup (one sample of 60 at 50x) keeps about its 1/60 of the residual's mass: the model
    draws over 5x about 1-2% of the time, not the whole top 5% that an evenly spaced grid smeared it across."""
    rng = np.random.default_rng(3)
    samples = list(rng.lognormal(0.0, 0.1, 59)) + [50.0]
    cost = stage_cost(fixed_us=1.0, quantiles=residual_quantiles([Config(samples=samples)]), source="test")
    draws = cost.residual.draw(np.random.default_rng(4), 200_000)
    assert 0.003 < float(np.mean(draws > 5.0)) < 0.02
    assert float(draws.max()) == pytest.approx(50.0 / float(np.median(samples)), rel=0.01)
    assert cost.residual.mean() < 1.6  # the evenly spaced grid's: 1.87


def test_a_typical_configurations_spread_is_not_set_by_one_with_hiccups():
    truth = {"fixed_us": 10.0, "per_vma_us": 0.0, "per_anon_vma_us": 0.0, "per_pte_us": 0.03, "per_pmd_us": 0.0}
    cfgs = _synthetic(truth, sigma=0.05, seed=3)
    rng = np.random.default_rng(4)
    bad = cfgs[0].samples
    bad = [v * (3.0 if rng.random() < 0.2 else 1.0) for v in bad]  # one configuration: a fifth of it 3x
    cfgs[0] = Config(cfgs[0].vmas, cfgs[0].anon_vmas, cfgs[0].ptes, cfgs[0].pmds, 1, bad, "hiccups")
    pooled, typical = residual_quantiles(cfgs), typical_quantiles(cfgs)
    assert typical[19] == pytest.approx(np.exp(1.645 * 0.05), rel=0.03)  # the others' lognormal(0, 0.05)
    top = PROBABILITIES.index(0.995)
    assert pooled[top] > 2.0 > typical[top]  # pooled, the hiccups set the tail
    assert typical_quantiles(cfgs[:1]) is None  # one configuration: no typical one


# ---------------------------------------------------------------------------------------------
# trace parsing (no privileges needed)

_TRACE = """\
# tracer: nop
       forkbench-100   [001] .....    1000000: sys_enter: NR 56 (1200011, 0, 0, 7f, 0, 0)
       forkbench-100   [001] .....    1010000: mmap_lock_start_locking: mm=00000000aaaa memcg_id=1 write=true
       forkbench-100   [001] .....    1010500: mmap_lock_acquire_returned: mm=00000000aaaa memcg_id=1 write=true success=true
       forkbench-100   [001] .....    1011000: mmap_lock_start_locking: mm=00000000bbbb memcg_id=1 write=true
       forkbench-100   [001] .....    1011100: mmap_lock_acquire_returned: mm=00000000bbbb memcg_id=1 write=true success=true
       forkbench-100   [001] .....    1040000: mmap_lock_released: mm=00000000bbbb memcg_id=1 write=true
       forkbench-100   [001] .....    1040500: mmap_lock_released: mm=00000000aaaa memcg_id=1 write=true
       forkbench-100   [001] .....    1045500: task_newtask: pid=101 comm=forkbench clone_flags=1200011 oom_score_adj=0
       forkbench-100   [001] .....    1046000: sched_process_fork: comm=forkbench pid=100 child_comm=forkbench child_pid=101
       forkbench-100   [001] d..2.    1047000: sched_wakeup_new: comm=forkbench pid=101 prio=120 target_cpu=001
       forkbench-100   [001] .....    1051500: sys_exit: NR 56 = 101
       forkbench-100   [001] .....    1052000: sys_enter: NR 61 (65, 7ffd, 0, 0, 0, 0)
       forkbench-100   [001] d..2.    1055000: sched_switch: prev_comm=forkbench prev_pid=100 prev_prio=120 prev_state=S ==> next_comm=forkbench next_pid=101 next_prio=120
       forkbench-101   [001] .....    1090000: sys_enter: NR 231 (0, 0, 0, 0, 0, 0)
       forkbench-101   [001] .....    1091000: sched_process_exit: comm=forkbench pid=101 prio=120 group_dead=true
       forkbench-101   [001] .....    1092000: mmap_lock_start_locking: mm=00000000bbbb memcg_id=1 write=false
       forkbench-101   [001] .....    1092100: mmap_lock_acquire_returned: mm=00000000bbbb memcg_id=1 write=false success=true
       forkbench-101   [001] .....    1120000: mmap_lock_released: mm=00000000bbbb memcg_id=1 write=true
       forkbench-101   [001] d..2.    1130000: sched_switch: prev_comm=forkbench prev_pid=101 prev_prio=120 prev_state=Z ==> next_comm=forkbench next_pid=100 next_prio=120
       forkbench-100   [001] .....    1134000: sys_exit: NR 61 = 101
"""


def test_trace_parsing_cuts_the_fork_segments():
    ev = tracefs.parse_trace(_TRACE, tsc_hz=1e9)  # 1 tick = 1 ns
    assert len(ev) == 20
    (s,) = tracefs.fork_segments(ev, 100)
    assert s["A"] == pytest.approx(10.0)  # enter -> start_locking (us)
    assert s["lock_wait"] == pytest.approx(0.5)
    assert s["B"] == pytest.approx(30.0)  # acquire -> release of the parent's mm
    assert s["C"] == pytest.approx(5.0)  # release -> task_newtask
    assert s["E"] == pytest.approx(6.0)  # task_newtask -> sys_exit
    assert s["total"] == pytest.approx(51.5)
    assert s["child_start"] == pytest.approx(8.0)  # wakeup_new -> switch-in
    assert s["first_run"] == pytest.approx(35.0)
    assert s["exit_mmap"] == pytest.approx(28.0)
    assert s["exit_total"] == pytest.approx(40.0)
    assert s["wait_reap"] == pytest.approx(3.0 + 4.0)


_VFORK_TRACE = """\
# tracer: nop
       forkbench-100   [001] .....    1000000: sys_enter: NR 58 (0, 0, 0, 0, 0, 0)
       forkbench-100   [001] .....    1006000: task_newtask: pid=101 comm=forkbench clone_flags=4111 oom_score_adj=0
       forkbench-100   [001] d..2.    1007000: sched_wakeup_new: comm=forkbench pid=101 prio=120 target_cpu=001
       forkbench-100   [001] d..2.    1009000: sched_switch: prev_comm=forkbench prev_pid=100 prev_prio=120 prev_state=D ==> next_comm=forkbench next_pid=101 next_prio=120
       forkbench-101   [001] .....    1011000: sys_enter: NR 231 (0, 0, 0, 0, 0, 0)
       forkbench-101   [001] d..2.    1017000: sched_switch: prev_comm=forkbench prev_pid=101 prev_prio=120 prev_state=R+ ==> next_comm=forkbench next_pid=100 next_prio=120
       forkbench-100   [001] .....    1019000: sys_exit: NR 58 = 101
       forkbench-100   [001] .....    1020000: sys_enter: NR 61 (65, 7ffd, 0, 0, 0, 0)
       forkbench-100   [001] d..2.    1021000: sched_switch: prev_comm=forkbench prev_pid=100 prev_prio=120 prev_state=S ==> next_comm=forkbench next_pid=101 next_prio=120
       forkbench-101   [001] d..2.    1026000: sched_switch: prev_comm=forkbench prev_pid=101 prev_prio=120 prev_state=Z ==> next_comm=forkbench next_pid=100 next_prio=120
       forkbench-100   [001] .....    1028000: sys_exit: NR 61 = 101
"""


def test_trace_parsing_cuts_the_head_of_a_preempted_exit():
    """A vfork child preempted in do_exit (by the parent it released at mm_release) and finishing
    its exit later: the head is its on-CPU time up to that first, runnable switch-out."""
    ev = tracefs.parse_trace(_VFORK_TRACE, tsc_hz=1e9)
    (s,) = tracefs.fork_segments(ev, 100)
    assert s["exit_head"] == pytest.approx(6.0)
    assert s["exit_total"] == pytest.approx(6.0 + 5.0)  # the time the parent ran is not the child's
    (f,) = tracefs.fork_segments(tracefs.parse_trace(_TRACE, tsc_hz=1e9), 100)
    assert "exit_head" not in f  # a fork child that exits in one go has no head


_SPAWN_TRACE = """\
# tracer: nop
       forkbench-100   [001] .....    1000000: sys_enter: NR 56 (4111, 0, 0, 0, 0, 0)
       forkbench-100   [001] .....    1006000: task_newtask: pid=101 comm=forkbench clone_flags=4111 oom_score_adj=0
       forkbench-100   [001] d..2.    1007000: sched_wakeup_new: comm=forkbench pid=101 prio=120 target_cpu=001
       forkbench-100   [001] d..2.    1009000: sched_switch: prev_comm=forkbench prev_pid=100 prev_prio=120 prev_state=D ==> next_comm=forkbench next_pid=101 next_prio=120
       forkbench-101   [001] .....    1029000: sys_enter: NR 59 (7ffd, 7ffd, 7ffd, 0, 0, 0)
       forkbench-101   [001] d..2.    1041000: sched_switch: prev_comm=forkbench prev_pid=101 prev_prio=120 prev_state=R+ ==> next_comm=forkbench next_pid=100 next_prio=120
       forkbench-100   [001] .....    1043000: sys_exit: NR 56 = 101
       forkbench-100   [001] .....    1044000: sys_enter: NR 61 (65, 7ffd, 0, 0, 0, 0)
       forkbench-100   [001] d..2.    1045000: sched_switch: prev_comm=forkbench prev_pid=100 prev_prio=120 prev_state=S ==> next_comm=helper next_pid=101 next_prio=120
          helper-101   [001] .....    1052000: sys_exit: NR 59 = 0
          helper-101   [001] .....    1060000: sys_enter: NR 231 (0, 0, 0, 0, 0, 0)
          helper-101   [001] d..2.    1066000: sched_switch: prev_comm=helper prev_pid=101 prev_prio=120 prev_state=Z ==> next_comm=forkbench next_pid=100 next_prio=120
       forkbench-100   [001] .....    1068000: sys_exit: NR 61 = 101
"""


def test_trace_parsing_splits_an_execve_at_the_parents_preemption():
    """A posix_spawn child: its work before the execve (prep), and the execve up to the switch-out by the parent
    exec_mmap released (head); the execve's on-CPU total leaves out the time the parent ran."""
    (s,) = tracefs.fork_segments(tracefs.parse_trace(_SPAWN_TRACE, tsc_hz=1e9), 100)
    assert s["exec_prep"] == pytest.approx(20.0)  # first run at 1009 -> execve at 1029
    assert s["exec_head"] == pytest.approx(12.0)  # 1029 -> the runnable switch-out at 1041
    assert s["exec"] == pytest.approx(12.0 + 7.0)  # back in at 1045, sys_exit at 1052
    (f,) = tracefs.fork_segments(tracefs.parse_trace(_TRACE, tsc_hz=1e9), 100)
    assert "exec_head" not in f and "exec_prep" not in f  # no execve


# ---------------------------------------------------------------------------------------------
# real measurements


_ok, _why = tracefs.tracefs_status() if LINUX else (False, "not Linux")


def test_vmas_sharing_one_interval_tree_cost_n_log_n_and_the_fit_recovers_it():
    """dup_mmap links each VMA into an interval tree of the VMAs already there: a sweep of 10 .. 10,000 extra VMAs
    in one tree, costed 0.015 us x vmas x log2(vmas) and 0.28 us per anonymous VMA, is fitted through the base
    image with per_vma_log_us (within 2%), predicts each count within 2%, and the linear terms alone miss the
    largest count by more than 10%; the term is fitted only over VMA counts that span TREE_SPAN."""
    from forksim.calibration.fit import fit_linear_through
    from forksim.calibration.fork_path import _tree_separable
    from forksim.profile import StageCost, vma_log

    truth = StageCost(fixed_us=10.0, per_anon_vma_us=0.28, per_pte_us=0.022, per_vma_log_us=0.015, source="t")
    shapes = [ImageShape(26 + n, 12 + (n if anon else 0), 20) for n in (0, 10, 100, 1000, 3000, 10000)
              for anon in ((False,) if n == 0 else (False, True))]
    rng = np.random.default_rng(3)
    cfgs = [Config(vmas=s.vmas, anon_vmas=s.anon_vmas, ptes=s.ptes, label=f"{s.vmas}/{s.anon_vmas}",
                   samples=truth.median_us(s) * rng.uniform(0.99, 1.01, 41)) for s in shapes]
    base = cfgs[0]
    assert _tree_separable(cfgs) and not _tree_separable([c for c in cfgs if c.vmas <= 126])
    fit = fit_linear_through(cfgs, base, ("fixed_us", "per_vma_us", "per_anon_vma_us", "per_pte_us", "per_vma_log_us"))
    assert fit.coef["per_vma_log_us"] == pytest.approx(0.015, rel=0.02)
    assert max(abs(e) for e in fit.rel_errors.values()) < 0.02
    linear = fit_linear_through(cfgs, base, ("fixed_us", "per_vma_us", "per_anon_vma_us", "per_pte_us"))
    assert abs(linear.rel_errors["10026/12"]) > 0.10
    assert vma_log(1) == 0.0 and vma_log(1024) == 10240.0
    # a what-if on the per-VMA cost scales the tree insertions with it
    assert truth.scaled("per_vma_us", 0.5).per_vma_log_us == pytest.approx(0.0075)


def test_the_miss_term_is_fitted_only_where_the_images_miss_the_caches_differently():
    """per_pte_miss_us beside per_pte_us needs images whose walks miss the caches in different shares: with one
    image size the two columns are proportional (a smoke calibration put 15.3 us a missed page on a 0.24% miss,
    a 64 MiB fork at 16.9 ms)."""
    from forksim.calibration.fit import Config
    from forksim.calibration.fork_path import _miss_separable

    def cfg(ptes, miss):
        return Config(ptes=ptes, miss=miss, samples=[1.0])

    assert not _miss_separable([cfg(0, 0.0), cfg(4096, 0.0024)])
    assert not _miss_separable([cfg(0, 0.0), cfg(4096, 0.0), cfg(65536, 0.05)])
    assert _miss_separable([cfg(0, 0.0), cfg(4096, 0.0), cfg(65536, 0.28), cfg(262144, 0.32)])


@pytest.mark.skipif(not (LINUX and HAVE_CC), reason="needs Linux and a C compiler")
@pytest.mark.parametrize("traced", [False, True], ids=["microbenchmarks-only", "tracepoints"])
def test_smoke_calibration_writes_a_valid_profile(tmp_path, traced, monkeypatch):
    from forksim.calibration import build_published, calibrate, refit
    from forksim.host import this_host
    from forksim.store import auto_profile

    if traced and not _ok:
        pytest.skip(f"needs root and tracefs: {_why}")
    # without tracepoints: no --out, so the profile goes to the (temporary) profile store, named after the host
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("FORKSIM_PROFILE", raising=False)  # `auto` as a user gets it
    to_store = not traced
    out = tmp_path / "xdg" / "forksim" / "profiles" / f"{this_host().slug()}.json" if to_store else tmp_path / "smoke.json"
    raw = tmp_path / "smoke.raw.json.gz"
    prof = calibrate(None if to_store else out, smoke=True, progress=False, use_tracefs=None if traced else False,
                     raw_out=raw)
    assert out.exists() and json.loads(out.read_text()) == prof
    if to_store:
        assert prof["name"] == this_host().slug() and auto_profile() == str(out)  # used from now on on this host
    again = refit(raw, tmp_path / "refit.json")  # the fits redone offline from the raw samples
    assert again["stages"] == prof["stages"] and again["scheduler"]["tick"] == prof["scheduler"]["tick"]
    assert again["host"] == prof["host"] and again.get("interruptions") == prof.get("interruptions")
    assert again["host_speed"] == prof["host_speed"] and "4 parts" in prof["host_speed"]["source"]
    p = Profile.model_validate(prof)
    assert p.host is not None and p.host.matches(this_host()) and p.host.cpu_model == this_host().cpu_model
    assert p.provenance["tracefs"] is traced
    if traced:
        assert p.stages["exit_mmap"].source.startswith("measured: traced")
        assert p.diagnostics["segments_base_us"]["B"]["n"] > 0
        # the RCU callbacks of exited tasks (calibration/rcu.py), fitted again from the raw file
        assert p.rcu_callbacks is not None and p.rcu_callbacks.source.startswith("measured:")
        assert again["rcu_callbacks"] == prof["rcu_callbacks"]
        # a traced forkbench run keeps the segments of its measured creations, not of its (cold) warm-ups
        runs = [r for r in json.loads(gzip.decompress(raw.read_bytes()))["runs"] if r["key"].get("mode") and r["segments"]]
        assert runs and all(len(r["segments"]) <= len(r["samples"]) for r in runs)
    else:
        assert p.rcu_callbacks is None
    for key in ("kernel", "cpu_model", "cpus", "thp_mode", "page_size", "date", "command", "forksim_version"):
        assert key in p.provenance, key
    compaction = p.provenance["memory_compaction"]  # the free lists compacted first, or why not
    assert compaction["compacted"] is True or compaction["reason"]
    assert all(s.source.split(":")[0] in ("measured", "derived", "assumption") for s in p.stages.values())
    ho = p.diagnostics["held_out"]
    assert ho and {"rss_bytes", "vmas", "thp", "fork_p50_us"} <= set(ho[0])
    # dup_mmap grows with the image (the smoke plan's one image size leaves no miss term to take the slope)
    dm = p.stages["dup_mmap"]
    assert dm.median_us(ImageShape(vmas=26, anon_vmas=12, ptes=16384)) > dm.median_us(ImageShape(vmas=26, anon_vmas=12, ptes=0))
    # and forks of its image written since the last fork against read (calibration/written.py)
    assert "; per_written_pte_us: measured: forkbench -D" in dm.source and dm.per_written_pte_us >= 0.0
    assert set(p.diagnostics["written_ptes"]) == {f"{rss // MiB}MiB" for rss in PLANS["smoke"].written_sizes}
    if (os.cpu_count() or 1) > 1:  # forks whose children exit on the other CPU (kernel/slab.py)
        assert p.remote_free is not None and p.remote_free.source.startswith("measured:")
        assert set(p.diagnostics["remote_free"]) >= {"base", "file VMAs", "anon VMAs", "stack_miss_us"}
        # a fork loop beside another process's on the other CPU (calibration/concurrency.py)
        assert p.concurrent_creation is not None and p.concurrent_creation.source.startswith("measured:")
        assert len(p.diagnostics["concurrent_creation"]["fork_beside_minus_alone_us"]) == PLANS["smoke"].rounds
        # a child's exit waking its parent whose CPU runs a hog (schedbench exitwake): the share kept there
        wake = p.placement["wake_prev_when_busy"]
        assert 0.0 <= wake.value <= 1.0 and "schedbench exitwake" in wake.source
        assert p.diagnostics["placement_counts"]["wake_prev_when_busy"]["exit_wakes"] >= 30
        assert again["placement"]["wake_prev_when_busy"] == prof["placement"]["wake_prev_when_busy"]
    assert not list(out.parent.glob(f".{out.name}.*"))  # no temp file left behind

    pub = build_published(tmp_path / "published.json", base=out)
    Profile.model_validate(pub)
    assert "host" not in pub  # built from published figures: measured on no host
    assert pub["stages"]["dup_mmap"]["per_pte_us"] == pytest.approx(9000 / 262144, rel=1e-4)


@pytest.mark.skipif(not (LINUX and HAVE_CC), reason="needs Linux and a C compiler")
def test_a_fit_that_fails_leaves_the_raw_samples_for_refit(tmp_path, monkeypatch):
    """The raw file is written before the fits: a full calibration is minutes of a quiet window, and a fit that
    fails (a ZeroDivisionError in one on 2026-12-03) must not take the measurement with it."""
    import importlib

    cal = importlib.import_module("forksim.calibration.calibrate")  # the module (the package exports the function)

    def broken(*_a, **_k):
        raise ZeroDivisionError("a fit that fails")

    real = cal.build_profile
    monkeypatch.setattr(cal, "build_profile", broken)
    raw = tmp_path / "smoke.raw.json.gz"
    with pytest.raises(ZeroDivisionError):
        cal.calibrate(tmp_path / "smoke.json", smoke=True, progress=False, use_tracefs=False, raw_out=raw)
    assert not (tmp_path / "smoke.json").exists()
    data = json.loads(gzip.decompress(raw.read_bytes()))
    assert data["runs"] and data["interruptions"] is None and data["provenance"]["mode"] == "smoke"
    monkeypatch.setattr(cal, "build_profile", real)
    again = cal.refit(raw, tmp_path / "refit.json")  # the fits, once mended, redone from it
    assert Profile.model_validate(again).stages["dup_mmap"].per_pte_us >= 0 and "interruptions" not in again
    assert "3 parts" in again["host_speed"]["source"]  # the parts among the jobs; the last comes after the fits


def _tracefs_state() -> dict[str, object]:
    root = tracefs.TRACEFS
    mounted = any(l.split()[1] == str(root) for l in Path("/proc/self/mounts").read_text().splitlines())
    state: dict[str, object] = {"mounted": mounted}
    if mounted:
        state["set_event"] = (root / "set_event").read_text()
        state["instances"] = sorted(p.name for p in (root / "instances").iterdir())
    return state


def _bench_processes(prefix: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes()
            except OSError:
                continue
            if cmd.startswith(prefix.encode()):
                pids.append(int(d.name))
    return pids


@pytest.mark.skipif(not (LINUX and HAVE_CC), reason="needs Linux and a C compiler")
@pytest.mark.skipif(not _ok, reason=f"needs root and tracefs: {_why}")
def test_sigint_mid_calibration_leaves_tracefs_and_processes_clean(tmp_path):
    before = _tracefs_state()
    cache = tmp_path / "cache"
    env = dict(os.environ, XDG_CACHE_HOME=str(cache), PYTHONPATH=str(REPO))
    code = ("import sys; from forksim.calibration import calibrate; "
            "calibrate(sys.argv[1], quick=True, progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "p.json")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    inst = tracefs.TRACEFS / "instances" / f"forksim-{proc.pid}"
    try:
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and not (inst / "tracing_on").exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.05)
        assert inst.exists(), "tracing never started"
        # wait until a traced benchmark runs, then interrupt
        while time.monotonic() < deadline and not _bench_processes(str(cache)):
            time.sleep(0.02)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert not (tracefs.TRACEFS / "instances" / f"forksim-{proc.pid}").exists()
    after = _tracefs_state()
    assert after["mounted"] == before["mounted"]
    if after["mounted"]:
        assert after["set_event"] == before["set_event"]
        assert not [n for n in after["instances"] if n.startswith(f"forksim-{proc.pid}")]
    time.sleep(0.2)
    assert _bench_processes(str(cache)) == [], "benchmark processes survived the interrupt"
    assert not (tmp_path / "p.json").exists()


def test_placement_counts_use_the_other_cpus_idle_state():
    sw = tracefs.parse_trace(
        "  a-1 [001] d..2. 100: sched_switch: prev_comm=a prev_pid=1 prev_prio=120 prev_state=S ==> "
        "next_comm=swapper/1 next_pid=0 next_prio=120\n"
        "  b-2 [001] d..2. 500: sched_switch: prev_comm=swapper/1 prev_pid=0 prev_prio=120 prev_state=R ==> "
        "next_comm=b next_pid=2 next_prio=120\n", tsc_hz=1e9)
    segs = [{"t_wakeup_new": 200.0, "waker_cpu": 0.0, "target_cpu": 0.0},  # CPU 1 idle, child kept local
            {"t_wakeup_new": 300.0, "waker_cpu": 0.0, "target_cpu": 1.0},  # CPU 1 idle, child sent there
            {"t_wakeup_new": 600.0, "waker_cpu": 0.0, "target_cpu": 0.0},  # CPU 1 busy: not counted
            {"t_wakeup_new": 50.0, "waker_cpu": 0.0, "target_cpu": 0.0}]  # CPU 1 state unknown
    c = tracefs.placement_counts(segs, sw, 2)
    assert c == {"other_cpu_idle": 2, "stayed_local": 1, "unknown": 1, "creations": 4}


def test_family_check_puts_each_pinned_family_beside_its_prediction():
    from forksim.commands.calibrate import family_check
    from forksim.profile import profile_path

    shape = {"rss_bytes": 0, "vmas": 25, "anon_vmas": 11}
    variants = {
        "vfork pinned": {"call": {"p50": 14.4, "p99": 30.0}, "roundtrip": {"p50": 22.6, "p99": 40.0}, "mode": "vfork",
                         "shape": shape},
        "thread pinned": {"call": {"p50": 8.9}, "roundtrip": {"p50": 23.9}, "mode": "thread", "shape": shape},
        "vfork unpinned": {"call": {"p50": 22.9}, "roundtrip": {"p50": 47.1}, "mode": "vfork", "shape": shape},
        "fork pinned": {"call": {"p50": 37.0}, "roundtrip": {"p50": 109.0}},  # no mode/shape: an older profile
    }
    rows = family_check(str(profile_path("default")), variants)
    assert [(r["family"], r["what"]) for r in rows] == [
        ("vfork", "call"), ("vfork", "round trip"), ("thread", "call"), ("thread", "round trip")]
    for r in rows:
        assert r["forksim_p50_us"] > 0
        assert r["rel_error"] == pytest.approx((r["forksim_p50_us"] - r["measured_p50_us"]) / r["measured_p50_us"])
    call, rt = rows[0]["forksim_p50_us"], rows[1]["forksim_p50_us"]
    assert rt > call  # the round trip holds the call
    assert rows[0]["forksim_p99_us"] > call and rows[0]["rel_error_p99"] == pytest.approx(rows[0]["forksim_p99_us"] / 30.0 - 1)
    assert rows[2]["measured_p99_us"] is None and rows[2]["rel_error_p99"] is None  # the measurement has no p99


@pytest.mark.skipif(not LINUX, reason="process groups: Linux")
def test_a_background_co_runner_ends_with_everything_it_forked():
    """calibration.concurrency's co-runner (bench.background): a process group of its own, registered while it
    runs, and ended with its children when the measurement beside it is over (or fails)."""
    from forksim.calibration import bench
    from forksim.lab.processes import group_alive

    with pytest.raises(RuntimeError):
        with bench.background(["sh", "-c", "sleep 100 & sleep 100"]) as p:
            time.sleep(0.1)
            assert p.pid in bench.running_children() and group_alive(p.pid)
            raise RuntimeError("the measurement beside it failed")
    assert not group_alive(p.pid) and p.pid not in bench.running_children()


def test_a_lock_contention_event_keeps_its_positional_lock_address():
    """lock:contention_begin prints "%p (flags=%s)": the address has no key, the flags may be several."""
    (ev,) = tracefs.parse_trace(
        "  loadgen-7 [003] d..1. 100: contention_begin: 00000000c0ffee42 (flags=READ|WRITE)\n", tsc_hz=1e9)
    assert ev.f == {"lock_addr": "00000000c0ffee42", "flags": "READ|WRITE"}


def test_calibrate_s_report_names_the_fitted_configurations_the_profile_misses(capsys):
    """A fit through a host that drifted between the sizes: the report puts each fitted configuration beside the
    profile and warns of those missed by more than FIT_MISS, naming them and only them."""
    from forksim.commands import calibrate as cli

    cli._fit_table({"fit_in_sample": [
        {"config": "0MiB", "fork_p50_us": 27.7, "profile_predicted_p50_us": 27.7},
        {"config": "256MiB", "fork_p50_us": 1761.3, "profile_predicted_p50_us": 2001.0},  # +13.6%
        {"config": "1GiB", "fork_p50_us": 10348.7, "profile_predicted_p50_us": 8001.5}]})  # -22.7%
    text = capsys.readouterr().out
    assert "fitted configurations" in text and "+13.6%" in text and "-22.7%" in text
    warning = text[text.index("warning:"):]
    assert "1GiB (-23%)" in warning and "256MiB" not in warning
    cli._fit_table({"fit_in_sample": [{"config": "0MiB", "fork_p50_us": 27.7, "profile_predicted_p50_us": 28.0}]})
    assert "warning" not in capsys.readouterr().out


def test_calibrate_s_report_runs_its_checks_side_by_side_as_one_after_another(tmp_path, monkeypatch, capsys):
    """`forksim calibrate`'s report simulates the held-out sizes, the other families, the copies and the cold forks
    in a process pool: each check's rows are those of the check run alone, and the report prints them (here from
    the shipped zen4 profile's own diagnostics, the measurement left out)."""
    import argparse
    import shutil

    import forksim.calibration as calibration
    from forksim.commands import calibrate as cli

    src = Path(cli.__file__).resolve().parents[1] / "profiles" / "amd-epyc-zen4-2cpu-linux6.18-kvm-haltpoll.json"
    out = tmp_path / "p.json"
    shutil.copy(src, out)
    prof = json.loads(out.read_text())
    diag = prof["diagnostics"]
    pooled = cli._run_checks(str(out), diag)
    alone = {"held_out": cli.held_out_check(str(out), diag["held_out"]),
             "families": cli.family_check(str(out), diag["variants_us"]),
             "copies": cli.copies_check(str(out), diag["copies"]["measured"]),
             "cold": cli.cold_check(str(out), diag["cold_forks"])}
    assert pooled == alone and all(alone.values())
    asked: dict = {}
    monkeypatch.setattr(calibration, "calibrate", lambda *a, **k: asked.update(k) or prof)
    assert cli.main(argparse.Namespace(out=str(out), quick=True, quiet=True, raw=None, no_tracefs=False,
                                       no_compact=True)) == 0
    assert asked["compact"] is False  # --no-compact reaches calibrate
    text = capsys.readouterr().out
    assert "held-out sizes" in text and "other families" in text and "cold forks" in text


def test_mount_tracefs_mounts_only_where_tracefs_is_not(tmp_path, monkeypatch):
    """The trace tools and calibrate's instances mount tracefs on a fresh VM (it boots without it), and leave a
    mounted one alone."""
    from forksim.calibration import tracefs

    calls = []
    monkeypatch.setattr(tracefs.subprocess, "run", lambda argv, **kw: calls.append(argv))
    assert tracefs.mount_tracefs(tmp_path) is True
    assert calls == [["mount", "-t", "tracefs", "nodev", str(tmp_path)]]
    (tmp_path / "instances").mkdir()
    assert tracefs.mount_tracefs(tmp_path) is False and len(calls) == 1
