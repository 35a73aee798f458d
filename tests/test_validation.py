"""forksim validate: the comparison/table code on stub data, and one short real run."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from forksim import lab
from forksim.validation import loadgen, measure, scenarios
from forksim.validation.compare import (
    compare_row,
    relative_error,
    render_markdown,
    stated_prediction,
    summarize_rows,
    validate,
    write_report,
)
from forksim.validation.scenarios import GiB, MiB, SCENARIOS, get_scenario

NEEDS_CC = pytest.mark.skipif(lab.compiler() is None,
                              reason="no C compiler (gcc/cc): the real load generator is compiled at run time")


def _stub_summary(thr=1000.0, f50=50.0, f99=150.0, r50=120.0, r99=400.0, stall=None):
    s = {"forks": 1000, "throughput_per_s": {"mean": thr, "ci95": [thr, thr]},
         "fork_latency_us": {"mean": f50, "p50": f50, "p90": f99, "p99": f99},
         "roundtrip_latency_us": {"mean": r50, "p50": r50, "p90": r99, "p99": r99}}
    if stall:
        s["mmap_stall_us"] = stall
    return s


def _stub_measured(thr=1000.0, f50=50.0, f99=150.0, r50=120.0, r99=400.0):
    return {"throughput_per_s": thr, "fork_latency_us": {"p50": f50, "p99": f99, "p90": f99, "mean": f50},
            "roundtrip_latency_us": {"p50": r50, "p99": r99, "p90": r99, "mean": r50}, "samples": 10,
            "vmas": 30, "anon_vmas": 12, "rss_bytes": 4096}


# ------------------------------------------------------------------ relative errors and the table


def test_relative_error():
    assert relative_error(110.0, 100.0) == pytest.approx(0.10)
    assert relative_error(50.0, 100.0) == pytest.approx(-0.5)
    assert relative_error(None, 100.0) is None
    assert relative_error(1.0, 0.0) is None
    assert relative_error(1.0, None) is None


def test_throughput_spread_compares_the_real_runs_with_the_model_range():
    measured = dict(_stub_measured(), throughput_runs_per_s=[950.0, 1000.0, 1050.0])
    inside = _stub_summary()
    inside["throughput_per_s"]["range"] = [900.0, 1100.0]
    sp = compare_row("a", measured, inside)["throughput_spread"]
    assert sp["predicted"] == [900.0, 1100.0] and sp["inside"] is True
    narrow = _stub_summary()
    narrow["throughput_per_s"]["range"] = [990.0, 1010.0]
    assert compare_row("b", measured, narrow)["throughput_spread"]["inside"] is False
    assert compare_row("c", measured, _stub_summary())["throughput_spread"]["predicted"] is None


def test_compare_row_and_summary():
    rows = [
        compare_row("a", _stub_measured(), _stub_summary(thr=1100, f50=55, f99=150, r50=120, r99=400)),
        compare_row("b", _stub_measured(), _stub_summary(thr=900, f50=50, f99=450, r50=100, r99=400)),
        compare_row("c", _stub_measured(), _stub_summary(thr=1000, f50=40, f99=150, r50=130, r99=300)),
        compare_row("d", _stub_measured(), None, error="simulation failed: boom"),
    ]
    assert rows[0]["rel_error"]["throughput"] == pytest.approx(0.10)
    assert rows[1]["rel_error"]["fork_p99"] == pytest.approx(2.0)
    assert rows[1]["off_by_2x"] == ["fork_p99"]
    assert rows[0]["off_by_2x"] == []
    assert rows[3]["predicted"]["throughput"] is None and rows[3]["rel_error"]["throughput"] is None
    s = summarize_rows(rows)
    assert s["median_abs_rel_error"]["throughput"] == pytest.approx(0.10)   # |.1|, |-.1|, 0
    assert s["median_abs_rel_error"]["fork_p50"] == pytest.approx(0.10)     # .1, 0, .2
    assert s["n"]["throughput"] == 3
    assert s["rows_off_by_2x"] == 1 and s["rows_off_by_2x_names"] == ["b"]
    assert s["rows_failed"] == ["d"]
    assert s["meets_target"]["throughput"] is True
    assert s["median_abs_rel_error"]["stall_p50"] is None


def test_off_by_2x_both_directions():
    r = compare_row("x", _stub_measured(f50=100), _stub_summary(f50=49))
    assert "fork_p50" in r["off_by_2x"]
    r = compare_row("x", _stub_measured(f50=100), _stub_summary(f50=51))
    assert "fork_p50" not in r["off_by_2x"]


def test_rows_far_from_their_canary_are_marked_as_host_drift():
    """The document marks a row whose canary was off the model by more than DRIFT_NOTE, and says the
    canary's range over the run; a row without a canary is not marked."""
    from forksim.validation.canary import canary_summary
    from forksim.validation.metrics import DRIFT_NOTE

    rows = [compare_row("a", _stub_measured(), _stub_summary()), compare_row("b", _stub_measured(), _stub_summary()),
            compare_row("c", _stub_measured(), _stub_summary())]
    rows[0]["canary"] = {"measured_fork_p50_us": 1000.0, "predicted_fork_p50_us": 800.0, "rel_error": -0.2}
    rows[1]["canary"] = {"measured_fork_p50_us": 820.0, "predicted_fork_p50_us": 800.0, "rel_error": -0.0244}
    summ = {**summarize_rows(rows), "canary": canary_summary(rows)}
    assert summ["canary"]["n"] == 2 and summ["canary"]["rel_error_min"] == -0.2
    assert summ["canary"]["measured_fork_p50_us_max"] == 1000.0
    md = render_markdown({"rows": rows, "summary": summ})
    assert DRIFT_NOTE < 0.2
    assert "| a (host drift: canary -20%) |" in md and "| b |" in md and "| c |" in md
    assert "Host drift:" in md and "800 us" in md
    assert canary_summary(rows[2:]) is None
    # a row with a gap has a cold canary too: marked and summed up alike
    rows[2]["cold_canary"] = {"measured_fork_p50_us": 1000.0, "predicted_fork_p50_us": 1500.0, "rel_error": 0.5}
    summ["cold_canary"] = canary_summary(rows, "cold_canary")
    assert summ["cold_canary"]["n"] == 1 and canary_summary(rows)["n"] == 2
    md = render_markdown({"rows": rows, "summary": summ})
    assert "| c (host drift: cold canary +50%) |" in md and "a cold canary ran too" in md
    # a row with a think time has a wake canary: its own figure (the wake-up latency), marked and summed up alike
    rows[1]["wake_canary"] = {"measured_wake_p50_us": 180.0, "predicted_wake_p50_us": 30.0, "rel_error": -0.8333}
    summ["wake_canary"] = canary_summary(rows, "wake_canary")
    assert summ["wake_canary"]["n"] == 1 and summ["wake_canary"]["measured_wake_p50_us_max"] == 180.0
    assert summ["wake_canary"]["predicted_wake_p50_us"] == 30.0
    md = render_markdown({"summary": summ, "rows": rows})
    assert "| b (host drift: wake canary -83%) |" in md
    assert "a wake canary ran, pooled: cross-CPU wake-ups of a vCPU halted 10 ms" in md and "180 us over the run" in md


def test_stall_metric_compared_for_multithreaded_rows():
    meas = _stub_measured() | {"stalls_us": {"count": 10, "p50": 1000.0, "p99": 4000.0, "max": 5000.0}}
    row = compare_row("mt", meas, _stub_summary(stall={"p50": 1200.0, "p99": 4000.0, "count": 12}))
    assert row["rel_error"]["stall_p50"] == pytest.approx(0.2)
    assert row["rel_error"]["stall_p99"] == pytest.approx(0.0)


def test_markdown_and_files(tmp_path):
    rows = [compare_row("closed-fork-K1-rss0", _stub_measured(), _stub_summary(thr=1100)),
            compare_row("closed-fork-K2-rss0", _stub_measured(), _stub_summary(f99=500)),
            compare_row("broken", {}, None, error="measurement failed: no")]
    rows[1]["foreign_cpu_frac"] = 0.5
    report = {"provenance": {"kernel": "6.18", "cpu_model": "AMD EPYC", "cpus": 2, "date": "today",
                             "profile": "default"},
              "quick": True, "summary": summarize_rows(rows), "rows": rows}
    md = render_markdown(report)
    assert "| scenario |" in md
    assert "closed-fork-K1-rss0" in md and "+10%" in md
    assert "median abs error" in md and "<= 10%" in md and "<= 15%" in md and "<= 25%" in md
    assert "more than 2x" in md and "closed-fork-K2-rss0 (2x!)" in md
    assert "broken: measurement failed" in md
    assert "(noisy: 50% foreign CPU)" in md and report["summary"]["rows_noisy"] == ["closed-fork-K2-rss0"]
    paths = write_report(report, tmp_path / "out")
    data = json.loads(paths["json"].read_text())
    assert data["rows"][0]["rel_error"]["throughput"] == pytest.approx(0.1)
    assert paths["md"].read_text() == md
    assert paths["png"].stat().st_size > 1000


def test_cold_rows_are_also_predicted_as_a_user_states_them():
    """A cold row's config without the layout read from pagemap (the model then takes the profile's
    fresh_image_scatter); warm rows and rows without a layout get no second prediction."""
    seen = []

    def sim(config, profile):
        seen.append(config)
        return _stub_summary(f50=80.0 if "scatter" in config["workload"]["image"] else 60.0)

    sc = get_scenario("closed-fork-K1-rss64MiB-think100ms")
    meas = {**_stub_measured(f50=100.0), "vmas": 31, "anon_vmas": 14, "rss_bytes": 64 * MiB,
            "image_layout": {"scatter": 0.4}}
    cfg = sc.to_config(meas, cpus=2, quick=True, profile="default")
    stated = stated_prediction(cfg, meas, sim)
    assert stated == {"fork_p50": 60.0, "rel_error": pytest.approx(-0.4)}
    assert "scatter" not in seen[-1]["workload"]["image"] and cfg["workload"]["image"]["scatter"] == 0.4
    assert seen[-1]["workload"]["think_time"] == cfg["workload"]["think_time"] > 0
    warm = get_scenario("closed-fork-K1-rss256MiB").to_config(meas, cpus=2, quick=True, profile="default")
    assert stated_prediction(warm, meas, sim) is None
    no_layout = sc.to_config({k: v for k, v in meas.items() if k != "image_layout"}, cpus=2, quick=True)
    assert stated_prediction(no_layout, meas, sim) is None and len(seen) == 1
    lived = get_scenario("closed-fork-K1-rss64MiB-life1000ms-pin").to_config(meas, cpus=2, quick=True)
    assert stated_prediction(lived, meas, sim)["fork_p50"] == 60.0  # the child's life is its gap
    assert seen[-1]["workload"]["child"]["lifetime"] == 1e6 and "scatter" not in seen[-1]["workload"]["image"]
    seen.pop()
    row = compare_row(sc.name, meas, sim(cfg, "default"), config=cfg)
    row["predicted_stated"] = stated
    md = render_markdown({"provenance": {"cpus": 2}, "quick": True, "summary": summarize_rows([row]), "rows": [row]})
    assert "Cold forks as a user states them" in md
    assert f"| {sc.name} | 100 | 80.0 | -20% | 60.0 | -40% |" in md and "largest error 40% over 1 cold rows" in md


# ------------------------------------------------------------------ scenarios and configs


def test_scenario_set():
    names = [s.name for s in SCENARIOS]
    assert len(names) == len(set(names))
    full = scenarios.scenarios(quick=False)
    assert len(full) == len(SCENARIOS) == 65
    # fork then exec (the copy dropped by exec_mmap at once): one parent at RSS 0 and 256 MiB
    assert {s.name for s in SCENARIOS if s.kind == "fork_exec"} == {"closed-fork_exec-K1-rss0",
                                                                    "closed-fork_exec-K1-rss256MiB"}
    # the busy machine: 1 and 2 parents beside 1, 2 and 4 hogs at RSS 0 and 256 MiB, and 50% duty hogs,
    # each repeated (the real run-to-run spread)
    hogs = [s for s in SCENARIOS if s.hogs]
    assert {(s.parents, s.hogs, s.rss) for s in hogs if s.hog_duty == 1.0} == {
        (k, h, r) for k in (1, 2) for h in (1, 2, 4) for r in (0, 256 * scenarios.MiB)}
    assert {s.name for s in hogs if s.hog_duty < 1.0} == {"closed-fork-K1-rss0-hogs2-duty50",
                                                          "closed-fork-K2-rss0-hogs2-duty50"}
    assert all(s.repeats == 3 for s in hogs)
    duty = next(s for s in hogs if s.hog_duty < 1.0)
    assert duty.loadgen_args(False)[-4:] == ["--hog-duty", "0.5", "--hog-period", "0.01"]
    assert duty.to_config({}, cpus=2)["background"] == {"cpu_hogs": 2, "hog_duty": 0.5, "hog_period": 10_000.0}
    # forks after idle gaps and after other work are measured interleaved, one group per image size
    # (the kinds that copy no image: one group per kind, its 1 and 10 ms gaps)
    assert {s.name: s.interleave for s in SCENARIOS if s.interleave} == {
        s.name: f"cold-{'64MiB' if s.rss == 64 * scenarios.MiB else '256MiB'}" if s.kind == "fork" else f"cold-{s.kind}"
        for s in SCENARIOS if s.think_s or s.other_work_llc or s.child_life_s}
    assert {s.name for s in SCENARIOS if s.kind != "fork" and s.think_s} == {
        f"closed-{k}-K1-rss0-think{g}ms" for k in ("vfork", "posix_spawn", "thread") for g in (1, 10)}
    quick = scenarios.scenarios(quick=True)
    assert {"closed-fork-K1-rss0", "closed-fork-K2-rss0", "closed-vfork-K1-rss0", "closed-posix_spawn-K1-rss0",
            "closed-thread-K1-rss0", "closed-fork_exec-K1-rss0", "closed-fork-K1-rss0-hogs2"} <= {s.name for s in quick}
    # every open load comes after the K=2 closed load at its RSS that sets its rate
    for runs in (full, quick):
        seen = set()
        for s in runs:
            if s.mode == "closed" and s.parents == 2 and not s.hogs:
                seen.add((s.kind, s.rss))
            if s.mode == "open":
                assert (s.kind, s.rss) in seen, s.name
    # the quick set is short: < ~2 minutes of real load with setup included
    assert sum((s.quick_duration_s + s.quick_warmup_s) * s.repeats for s in quick) < 30


def test_to_config_follows_the_schema():
    from forksim.config import parse_config

    meas = {"vmas": 31, "anon_vmas": 14, "rss_bytes": 256 * MiB + 118784, "rate_per_s": 4000.0,
            "writer_fault_rate_per_s": 50000.0, "gap_us": {"p50": 2500.0}, "other_work_bytes": 16 * MiB}
    for sc in SCENARIOS:
        cfg = sc.to_config(meas, cpus=2, quick=True, profile="default")
        exp = parse_config(cfg, resolved=True)  # the scenarios' numbers: us, bytes, /s
        assert exp.machine.cpus == 2
        assert exp.workload.image.vmas == 31 and exp.workload.image.anon_vmas == 14
        assert exp.workload.child.clone == sc.kind and exp.workload.child.lifetime == pytest.approx(sc.child_life_s * 1e6)
        assert exp.workload.parents == sc.parents
        assert exp.background.cpu_hogs == sc.hogs
        assert exp.workload.kind == ("open" if sc.mode == "open" else "closed")
        if sc.mode == "open":
            assert exp.workload.rate == 4000.0
        if sc.mode == "mt":
            assert exp.workload.image.threads == 4 and exp.workload.image.fault_rate == 50000.0
        assert exp.experiment.duration == pytest.approx(sc.quick_duration_s * 1e6)
        if sc.other_work_llc:  # the gap and the bytes, as measured
            assert exp.workload.think_time == 2500.0 and exp.workload.other_work == 16 * MiB
        else:
            assert exp.workload.think_time == pytest.approx(sc.think_s * 1e6) and exp.workload.other_work == 0
    gaps = {s.think_s for s in SCENARIOS if s.think_s}
    assert gaps == {0.001, 0.01, 0.1, 1.0}
    assert "--think" in get_scenario("closed-fork-K1-rss64MiB-think10ms").loadgen_args(True)
    work = [s for s in SCENARIOS if s.other_work_llc]
    assert {s.other_work_llc for s in work} == {0.5, 2.0} and all(s.pin and s.parents == 1 for s in work)
    args = work[0].loadgen_args(True)
    assert "--pin" in args and int(args[args.index("--other-work") + 1]) == work[0].other_work_bytes > 0
    with pytest.raises(ValueError, match="no gap"):
        work[0].to_config({"vmas": 31}, cpus=2)
    # a child that lives 1 s before its exit, pinned with its parent: a cold exit, then the next fork at once
    lived = [s for s in SCENARIOS if s.child_life_s]
    assert {(s.rss, s.child_life_s) for s in lived} == {(64 * MiB, 1.0), (256 * MiB, 1.0)}
    args = lived[0].loadgen_args(False)
    assert all(s.pin and not s.think_s for s in lived) and args[args.index("--child-life") + 1] == "1"


def test_real_application_config_from_proc(monkeypatch):
    from forksim.config import parse_config
    from forksim.validation import apps

    image = apps.image_from_proc(os.getpid())
    assert image["rss_bytes"] > 0 and image["vmas"] >= image["anon_vmas"] > 0 and image["threads"] >= 1
    exp = parse_config(apps.redis_config(image, 2.0, cpus=2, profile="default", quick=True), resolved=True)
    assert exp.workload.think_time == 2e6 and exp.workload.image.vmas == image["vmas"]
    # Redis's other threads sleep through a BGSAVE: the model's parent forks as one thread, whatever /proc says
    # (image.threads > 1 runs busy faulting threads beside it)
    many = parse_config(apps.redis_config({**image, "threads": 5}, 1.0, cpus=2, profile="default", quick=True),
                        resolved=True)
    assert many.workload.image.threads == 1
    monkeypatch.setattr(apps.shutil, "which", lambda _exe: None)
    assert "not installed" in apps.redis_bgsave(lambda c, p: {}, "default")["skipped"]


def test_memory_refusal(monkeypatch):
    monkeypatch.setattr(loadgen, "mem_available", lambda: 1 * GiB)
    big = dataclasses.replace(get_scenario("closed-fork-K2-rss1GiB"))
    with pytest.raises(loadgen.LoadgenError, match="MemAvailable"):
        loadgen.check_memory(big)
    loadgen.check_memory(get_scenario("closed-fork-K1-rss0"))


def test_stall_classification():
    recs = np.zeros(2, measure.REC_DTYPE)
    recs["t0"] = [1000, 10_000]
    recs["t1"] = [2000, 12_000]
    stalls = np.zeros(3, measure.STALL_DTYPE)
    stalls["start"] = [1500, 5000, 9000]     # inside fork 1, between forks, runs into fork 2
    stalls["dur"] = [400, 1000, 2000]
    stalls["nvcsw"] = [1, 1, 0]              # the third was preempted, not blocked
    lock, during, everything = measure._stall_stats(stalls, recs)
    assert during["count"] == 2 and everything["count"] == 3
    assert lock["count"] == 1 and lock["p50"] == pytest.approx(0.4)


# ------------------------------------------------------------------ real load


def _descendants_alive(pgid: int) -> bool:
    return lab.group_alive(pgid)


def _our_loadgens() -> list[int]:
    """Processes running our loadgen binary that are children (any depth) of this test process."""
    me = os.getpid()
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            exe = os.readlink(f"/proc/{d}/exe")
        except OSError:
            continue
        if "loadgen" not in os.path.basename(exe) and "spawn_helper" not in os.path.basename(exe):
            continue
        # walk up the parents to see whether it descends from us
        pid = int(d)
        for _ in range(10):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                break
            if ppid == me:
                found.append(int(d))
                break
            if ppid <= 1:
                break
            pid = ppid
    return found


@NEEDS_CC
@pytest.mark.kernel
def test_real_closed_fork_run():
    sc = dataclasses.replace(get_scenario("closed-fork-K1-rss0"), quick_duration_s=0.5, quick_warmup_s=0.1)
    res = measure.measure(sc, quick=True, raw=True)
    f, rt = res["fork_latency_us"], res["roundtrip_latency_us"]
    assert res["samples"] > 50 and res["samples"] == res["_records"].size
    assert res["throughput_per_s"] > 0
    assert res["duration_s"] == pytest.approx(0.5, rel=0.01)
    assert 0 < f["p50"] <= f["p99"] and 0 < rt["p50"] <= rt["p99"]
    assert rt["p50"] >= f["p50"]                       # the round trip contains the call
    assert f["p50"] < 100_000                          # a fork of an empty parent is not 100 ms
    assert res["vmas"] >= 5 and 0 < res["anon_vmas"] <= res["vmas"]
    assert res["errors"] == 0
    recs = res["_records"]
    assert (recs["t1"] >= recs["t0"]).all() and (recs["t2"] >= recs["t1"]).all()
    assert res["placement"]["known"] == recs.size      # every child reported its CPU
    assert not _our_loadgens(), "a loadgen process was left behind"


@NEEDS_CC
@pytest.mark.kernel
def test_real_fork_after_other_work():
    """A co-runner on the parent's CPU sweeps its memory before each fork: the gap it leaves is
    measured (what the model is given) and the co-runner goes with the run."""
    sc = dataclasses.replace(get_scenario("closed-fork-K1-rss64MiB-work0.5llc-pin"), rss=4 * MiB,
                             other_work_llc=0.0625, quick_duration_s=0.3, quick_warmup_s=0.05)
    res = measure.measure(sc, quick=True)
    assert res["samples"] > 10 and res["errors"] == 0
    assert res["other_work_bytes"] == sc.other_work_bytes > 0
    assert 0 < res["gap_us"]["p50"] < 1e6
    assert res["placement"]["parent_moved_frac"] == 0.0  # pinned
    assert not _our_loadgens(), "a loadgen process was left behind"


@NEEDS_CC
@pytest.mark.kernel
def test_a_closed_loops_throughput_is_its_cycles_not_a_windows_count():
    """Four rounds of 6.25 s, each window opening just before a fork of a loop with 1.004 s cycles: 7 forks a round,
    1.12/s counted in the window, from a loop that cannot make 1/s; its cycles over their span give 1/1.004. Two
    parents: their rates add. An open stream: its creations over the window."""
    def recs(parents: int, cycle_s: float, first_s: float, n: int) -> np.ndarray:
        r = np.zeros(parents * n, dtype=loadgen.REC_DTYPE)
        for p in range(parents):
            t0 = ((first_s + p * 0.1 + cycle_s * np.arange(n)) * 1e9).astype(np.int64)
            r["t0"][p * n:(p + 1) * n], r["parent"][p * n:(p + 1) * n] = t0, p
        return r

    think = get_scenario("closed-fork-K1-rss64MiB-think1000ms")
    rounds = [recs(1, 1.004, 2.008, 7) for _ in range(4)]
    assert sum(r.size for r in rounds) / 25.0 == pytest.approx(1.12)  # the window's count
    assert measure._throughput(think, rounds, 25.0) == pytest.approx(1 / 1.004)
    two = dataclasses.replace(think, parents=2)
    assert measure._throughput(two, [recs(2, 0.5, 0.0, 11)], 5.0) == pytest.approx(4.0)
    assert measure._throughput(two, [recs(1, 0.5, 0.0, 11)], 5.0) == pytest.approx(11 / 5.0)  # a parent missing
    open_ = next(s for s in SCENARIOS if s.mode == "open")
    assert measure._throughput(open_, [recs(1, 0.001, 0.0, 100)], 0.5) == pytest.approx(200.0)


def test_interleaved_rounds_pool_every_round():
    """A group measured in rounds: each scenario runs once a round (its time split among the rounds), its
    records pool all rounds, its throughput is its cycles over their time in all rounds, and the gaps come from
    within each run (no gap spans two runs)."""
    group = [dataclasses.replace(get_scenario(name), rss=4 * MiB, duration_s=0.6, warmup_s=0.05)
             for name in ("closed-fork-K1-rss64MiB-think1ms", "closed-fork-K1-rss64MiB-think10ms")]
    assert group[0].interleave == group[1].interleave == "cold-64MiB"
    res = measure.measure_interleaved(group, rounds=3)
    for sc in group:
        r = res[sc.name]
        assert len(r["rounds"]) == 3 and sum(x["samples"] for x in r["rounds"]) == r["samples"]
        assert r["duration_s"] == pytest.approx(0.6, rel=0.02)      # 3 rounds of 0.2 s
        # its cycles over their span, about its forks over the window
        assert r["throughput_per_s"] == pytest.approx(r["samples"] / r["duration_s"], rel=0.25)
        assert r["throughput_per_s"] < 1.0 / sc.think_s  # a loop that sleeps think_s each cycle
        assert sc.think_s * 1e6 <= r["gap_us"]["p50"] < 10 * sc.think_s * 1e6 + 5000  # the sleep, not minutes
        assert r["gap_us"]["n"] == r["samples"] - 3                  # one gap fewer than forks per run
    assert res[group[0].name]["samples"] > res[group[1].name]["samples"]  # the shorter sleep forks more often
    assert not _our_loadgens(), "a loadgen process was left behind"


@NEEDS_CC
@pytest.mark.kernel
def test_hogs_are_killed_even_when_interrupted():
    """A run with CPU hogs killed halfway (as by Ctrl-C) leaves no hog, parent or child behind."""
    tools = measure.build_tools()
    proc = subprocess.Popen([str(tools.loadgen), "--hogs", "2", "--parents", "2", "--duration", "30",
                             "--out", "/tmp/forksim-test-interrupt-" + str(os.getpid())],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        time.sleep(0.5)
        assert lab.group_alive(proc.pid)
        proc.send_signal(signal.SIGINT)            # the master's handler kills its whole tree
        proc.wait(timeout=10)
        deadline = time.monotonic() + 5
        while lab.group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not lab.group_alive(proc.pid), "processes of the load generator's group survived SIGINT"
    finally:
        lab.kill_group(proc.pid)
        proc.wait()
        for suffix in (".rec", ".stall"):
            try:
                os.unlink(f"/tmp/forksim-test-interrupt-{os.getpid()}{suffix}")
            except OSError:
                pass


@NEEDS_CC
@pytest.mark.kernel
def test_the_doc_states_each_mechanism_once_after_the_rows_it_explains():
    from forksim.validation.document import render_doc
    from forksim.validation.mechanisms import mechanism_for

    names = ("closed-fork-K1-rss0-hogs2", "closed-fork-K2-rss0-hogs4", "closed-fork-K1-rss0")
    rows = [compare_row(names[0], _stub_measured(), _stub_summary(thr=300)),
            compare_row(names[1], _stub_measured(), _stub_summary(f99=500)),
            compare_row(names[2], _stub_measured(), _stub_summary())]
    doc = render_doc({"provenance": {"cpus": 2}, "quick": True, "summary": summarize_rows(rows), "rows": rows})
    hogs = mechanism_for(names[0])
    assert mechanism_for(names[1]) == hogs and doc.count(hogs) == 1
    line = next(x for x in doc.splitlines() if hogs in x)
    assert line.startswith(f"- **{names[0]}** (throughput); **{names[1]}** (fork_p99")
    assert f"**{names[2]}**" not in doc  # within its targets: no mechanism line


def test_validate_end_to_end_with_a_stub_simulator(tmp_path):
    calls = []

    def fake_sim(config, profile):
        calls.append((config, profile))
        return _stub_summary(thr=5000.0)

    sc = "closed-thread-K1-rss0"
    report = validate(profile="default", quick=True, out=tmp_path, progress=False, only=[sc], simulator=fake_sim)
    assert [r["scenario"] for r in report["rows"]] == [sc]
    row = report["rows"][0]
    assert row["predicted"]["throughput"] == 5000.0 and row["measured"]["throughput"] > 0
    row_calls = [c for c, _p in calls if c["experiment"]["name"] == f"validate-{sc}"]
    assert row_calls[0]["workload"]["child"]["clone"] == "thread"
    assert row_calls[0]["machine"]["cpus"] == os.cpu_count()
    # the canary ran before the row and was simulated once: one pinned parent, 64 MiB
    canary_calls = [c for c, _p in calls if c["experiment"]["name"].startswith("validate-canary")]
    assert len(canary_calls) == 1 and canary_calls[0]["workload"]["pin"] is True
    assert row["canary"]["measured_fork_p50_us"] > 0 and row["canary"]["predicted_fork_p50_us"] == 50.0
    assert report["summary"]["canary"]["n"] == 1
    assert "cold_canary" not in row and report["summary"]["cold_canary"] is None  # no gap: no cold canary
    assert "wake_canary" not in row and report["summary"]["wake_canary"] is None  # no think time: no wake canary
    assert (tmp_path / "validation.json").exists() and (tmp_path / "validation.md").exists()
    assert report["provenance"]["profile"] == "default" and report["provenance"]["cpus"] == os.cpu_count()
    assert not _our_loadgens()


def test_loadgen_kinds_follow_the_kind_table():
    """The scenarios' kinds are the kind table's that loadgen.c runs (its --kind), and only those."""
    from forksim.kernel.flags import KINDS

    text = loadgen.CSRC.read_text()
    assert set(scenarios.LOADGEN_KINDS) <= set(KINDS)
    for kind in scenarios.LOADGEN_KINDS:
        assert f'!strcmp(v, "{kind}")' in text, f"loadgen.c has no --kind {kind}"
    assert {s.kind for s in SCENARIOS} == set(scenarios.LOADGEN_KINDS)


def test_the_wake_canary_measures_wake_ups_after_10_ms_idle_against_the_profiles_curve(monkeypatch):
    """The wake canary runs the calibration's schedbench wake after WAKE_IDLE_US of idle and compares the median of
    both directions' latencies with the profile's idle_wake median scaled by its curve there; on one CPU, or where
    the benchmark cannot run, it gives nothing."""
    from forksim.calibration import bench
    from forksim.errors import MeasurementError
    from forksim.profile import load_profile
    from forksim.validation.canary import WAKE_IDLE_US, WakeCanary, predicted_wake_us

    name = "intel-xeon-family6-model207-2cpu-linux6.18-kvm"
    sched = load_profile(name).scheduler
    assert predicted_wake_us(name, WAKE_IDLE_US) == pytest.approx(
        sched.idle_wake.fixed_us * sched.idle_wake_curve.at(WAKE_IDLE_US))
    argvs = []

    class B:
        schedbench = "/x/schedbench"

    def fake_run(argv, timeout=300.0):
        argvs.append(argv)
        return {}, [{"b": "wake", "lat_ns": 20_000, "lat_back_ns": 180_000}, {"b": "wake", "lat_ns": 30_000}], None, 1

    monkeypatch.setattr(bench, "build", lambda: B())
    monkeypatch.setattr(bench, "run_bench", fake_run)
    canary = WakeCanary(name, 2)
    got = canary.measure()
    assert argvs[0][:2] == ["/x/schedbench", "wake"] and argvs[0][argvs[0].index("-s") + 1] == str(WAKE_IDLE_US)
    assert got["measured_wake_p50_us"] == 30.0 and got["latencies_us"] == [20.0, 180.0, 30.0]
    assert got["rel_error"] == pytest.approx((got["predicted_wake_p50_us"] - 30.0) / 30.0)
    # after the row, measured again and pooled: the median of all six wake-ups, each run's own beside it
    pooled = canary.after(got)
    assert pooled["measured_wake_p50_us"] == 30.0 and len(pooled["latencies_us"]) == 6
    assert pooled["before_p50_us"] == 30.0 and pooled["after_p50_us"] == 30.0 and canary.after(None) is None
    assert WakeCanary(name, 1).measure() is None

    def refused(argv, timeout=300.0):
        raise MeasurementError("no")

    monkeypatch.setattr(bench, "run_bench", refused)
    assert WakeCanary(name, 2).measure() is None
    assert canary.after(got) == got  # the second run refused: the first stands


@NEEDS_CC
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="the wake canary wakes the other CPU: needs two")
def test_the_wake_canary_runs_on_this_machine():
    from forksim.validation.canary import WakeCanary

    got = WakeCanary("intel-xeon-family6-model207-2cpu-linux6.18-kvm", os.cpu_count() or 1).measure()
    assert got is not None and 0.0 < got["measured_wake_p50_us"] < 10_000.0 and got["predicted_wake_p50_us"] > 0


@NEEDS_CC
def test_a_fork_exec_child_runs_the_helper_and_a_helper_that_cannot_run_fails_the_run():
    """--kind fork_exec forks and the child execs the helper, which exits with its CPU as status (every record names
    a CPU of this machine); a helper execve refuses fails the run, saying so."""
    from forksim.validation.loadgen import LoadgenError, run_loadgen

    args = ["--mode", "closed", "--kind", "fork_exec", "--parents", "1", "--duration", "0.3", "--warmup", "0.05"]
    meta, recs, _stalls = run_loadgen(args, timeout=60.0)
    assert meta["records"] > 10 and meta["errors"] == 0
    assert ((recs["ccpu"] >= 0) & (recs["ccpu"] < (os.cpu_count() or 1))).all()
    assert (recs["t1"] > recs["t0"]).all() and (recs["t2"] >= recs["t1"]).all()
    tools = dataclasses.replace(measure.build_tools(), helper=Path("/dev/null"))
    with pytest.raises(LoadgenError, match="execve of the helper in the child"):
        run_loadgen(args, timeout=60.0, tools=tools)
    assert not _our_loadgens()


@NEEDS_CC
def test_a_parents_co_runner_counts_as_the_load_not_as_foreign_cpu_time():
    """--other-work's co-runner is the parent's live child for the whole window, sweeping while the parent waits: its
    CPU time is the load's (the model runs it as a task), so the pinned CPU it keeps busy is not foreign load."""
    from forksim.validation.loadgen import run_loadgen
    from forksim.validation.measure import cpu_accounting

    duration = 0.5
    meta, _recs, _stalls = run_loadgen(["--mode", "closed", "--kind", "fork", "--parents", "1", "--duration",
                                        f"{duration:g}", "--warmup", "0.1", "--rss", str(16 << 20), "--pin",
                                        "--other-work", str(64 << 20)], timeout=60.0)
    cpu = cpu_accounting(meta, duration)
    assert cpu["ours_frac"] > 0.3 / (os.cpu_count() or 1), cpu  # the sweeps fill most of the pinned CPU
    assert not _our_loadgens()


def test_read_stressor_reads_an_image_and_its_per_creation_counters():
    """What a user reads from /proc about a forking process: this process's own image and, per pid handed out in
    the window (at least one), its faults and user time."""
    from forksim.validation.crosscheck import read_stressor

    st = read_stressor(os.getpid(), 0.02)
    assert st["vmas"] > 0 and 0 <= st["anon_vmas"] <= st["vmas"] and st["rss_bytes"] > 0 and st["ops"] >= 1
    assert st["minflt_per_op"] >= 0 and st["child_minflt_per_op"] >= 0 and st["user_us_per_op"] >= 0


@pytest.mark.skipif(shutil.which("stress-ng") is None, reason="stress-ng is not installed (.ci/run installs it)")
def test_stress_ng_fork_is_predicted_from_what_proc_says_of_its_stressor():
    """The model is configured from the stressor's /proc, never its result: its image, its faults per op as the
    written and child-written fractions, its user time per op as the parent's work; the doc states both rates."""
    from forksim.validation.crosscheck import stress_ng_fork
    from forksim.validation.document import render_doc

    seen = []

    def sim(config, profile):
        seen.append(config)
        return {"throughput_per_s": {"mean": 1234.0}}

    got = stress_ng_fork(1.0, sim, "default", 2)
    assert got is not None and not got.get("error"), got
    st, wl = got["stressor"], seen[0]["workload"]
    assert got["stress_ng_per_s"] > 0 and got["model_per_s"] == 1234.0
    assert wl["image"]["rss"] == st["rss_bytes"] > 0 and wl["image"]["vmas"] == st["vmas"] > 10
    assert wl["parent_work"] == st["user_us_per_op"] and wl["child"]["clone"] == "fork"
    assert wl["image"]["write_fraction"] == pytest.approx(min(1.0, st["minflt_per_op"] / (st["rss_bytes"] // 4096)))
    doc = render_doc({"provenance": {"cpus": 2}, "quick": True, "summary": summarize_rows([]), "rows": [],
                      "crosscheck_stress_ng_fork": got})
    assert "stress-ng --fork 1" in doc and "the model 1,234 creations/s" in doc
