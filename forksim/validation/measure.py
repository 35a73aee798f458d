"""Real process-creation load on this machine, measured per creation.

`measure(scenario, quick)` runs the scenario on the C load generator (forksim.validation.loadgen: built,
run in its own process group and killed whatever happens), reads every creation's timestamps and returns
statistics; `measure_interleaved` measures a group of scenarios in turned rounds, `measure_all` the set.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable

import numpy as np

from .layouts import pooled_layout
from .loadgen import REC_DTYPE, STALL_DTYPE, LoadgenError, Tools, build_tools, check_memory, run_loadgen
from .scenarios import Scenario, capacity_key, scenarios

__all__ = [
    "LoadgenError",
    "Tools",
    "build_tools",
    "run_loadgen",
    "latency_stats",
    "measure",
    "measure_all",
    "measure_interleaved",
    "interleaved_measurer",
    "INTERLEAVE_ROUNDS",
    "REC_DTYPE",
    "STALL_DTYPE",
]

# Rounds of an interleaved group (full set; the quick set measures each scenario in one run)
INTERLEAVE_ROUNDS = 4

# ------------------------------------------------------------------ statistics


def latency_stats(values_us: np.ndarray) -> dict[str, float]:
    """mean, p50, p90, p99, p99.9 and max of a sample (microseconds); NaN-free, empty -> zeros."""
    v = np.asarray(values_us, dtype=float)
    if v.size == 0:
        return {"mean": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "p999": 0.0, "max": 0.0, "n": 0}
    p50, p90, p99, p999 = np.percentile(v, [50, 90, 99, 99.9])
    return {"mean": float(v.mean()), "p50": float(p50), "p90": float(p90), "p99": float(p99),
            "p999": float(p999), "max": float(v.max()), "n": int(v.size)}


def _placement(recs: np.ndarray) -> dict[str, Any]:
    """Where the children ran, relative to the parent's CPU at the call."""
    known = recs[recs["ccpu"] >= 0]
    if known.size == 0:
        return {"known": 0}
    same = known["ccpu"] == known["pcpu0"]
    out: dict[str, Any] = {
        "known": int(known.size),
        "same_cpu_frac": float(same.mean()),
        "parent_moved_frac": float((known["pcpu0"] != known["pcpu1"]).mean()),
    }
    fl = (known["t1"] - known["t0"]) / 1e3
    rt = (known["t2"] - known["t0"]) / 1e3
    for label, mask in (("same_cpu", same), ("other_cpu", ~same)):
        if mask.any():
            out[label] = {"n": int(mask.sum()),
                          "fork_p50_us": float(np.percentile(fl[mask], 50)),
                          "roundtrip_p50_us": float(np.percentile(rt[mask], 50)),
                          "roundtrip_p99_us": float(np.percentile(rt[mask], 99))}
    return out


def cpu_accounting(meta: dict, duration: float) -> dict[str, float]:
    """Shares of the machine's CPU time over the measured window (USER_HZ resolution): busy, ours
    (parents, their reaped children, hogs), the hogs alone, foreign (everything else running on the
    machine meanwhile: other users' load makes a run noisy) and steal."""
    hz, cpus = meta.get("clk_tck") or 100, meta.get("cpus") or 1
    cap = hz * duration * cpus
    if "win_busy_ticks" not in meta or cap <= 0:
        return {}
    busy, hogs, ours = meta["win_busy_ticks"], meta["win_hog_ticks"], meta["win_parent_ticks"] + meta["win_hog_ticks"]
    return {"busy_frac": busy / cap, "ours_frac": ours / cap, "hogs_frac": hogs / cap,
            "foreign_frac": max(0.0, busy - ours) / cap, "steal_frac": meta["win_steal_ticks"] / cap}


def _stall_stats(stalls: np.ndarray, recs: np.ndarray) -> tuple[dict, dict, dict]:
    """Stalls of the writer threads (gaps > threshold between two consecutive writes):
    (lock stalls: overlapping a fork call and blocked, i.e. a voluntary context switch: the wait on
    the mmap_lock / VMA lock the fork holds; all stalls overlapping a fork call, preemptions included;
    every stall)."""
    if stalls.size == 0:
        empty = {"count": 0, "p50": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0}
        return empty, dict(empty), dict(empty)
    start, end = stalls["start"], stalls["start"] + stalls["dur"]
    order = np.argsort(recs["t0"])
    t0, t1 = recs["t0"][order], recs["t1"][order]
    # The last fork that began before the stall ended; it overlaps when it ended after the stall began.
    i = np.searchsorted(t0, end, side="right") - 1
    overlap = (i >= 0) & (t1[np.clip(i, 0, None)] > start) if t0.size else np.zeros(stalls.size, bool)
    dur_us = stalls["dur"] / 1e3

    def st(mask):
        d = dur_us[mask]
        if d.size == 0:
            return {"count": 0, "p50": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0}
        return {"count": int(d.size), "p50": float(np.percentile(d, 50)), "p99": float(np.percentile(d, 99)),
                "max": float(d.max()), "mean": float(d.mean()),
                "blocked_frac": float((stalls["nvcsw"][mask] > 0).mean()),
                "preempted_frac": float((stalls["nivcsw"][mask] > 0).mean())}

    return st(overlap & (stalls["nvcsw"] > 0)), st(overlap), st(np.ones(stalls.size, bool))


def _gaps(recs: np.ndarray) -> np.ndarray:
    """One parent's gap before each fork: from the previous reap to this fork (us)."""
    order = np.argsort(recs["t0"])
    return (recs["t0"][order][1:] - recs["t2"][order][:-1]) / 1e3


def _throughput(scenario: Scenario, runs: list[np.ndarray], duration_s: float) -> float:
    """Creations per second over `runs` (their records) measuring `duration_s` in all. A closed loop's: each parent's
    cycles (its creations after its first) over the time from its first to its last, summed over the parents and
    pooled over the runs. Counted in a fixed window instead, a loop of few cycles gains or loses a creation by where
    its cycles fall: the 1000 ms think rows' windows (four rounds of 6.25 s after a 2 s warm-up) each opened just
    before a fork and held 7 of ~1.004 s cycles, 1.12/s from a loop that cannot make 1/s. An open stream's, or
    where a parent made fewer than two: the creations over the window."""
    if scenario.mode == "closed":
        cycles: dict[int, int] = {}
        span: dict[int, float] = {}
        for recs in runs:
            for parent in np.unique(recs["parent"]).tolist():
                t0 = recs["t0"][recs["parent"] == parent]
                if t0.size >= 2:
                    cycles[parent] = cycles.get(parent, 0) + int(t0.size) - 1
                    span[parent] = span.get(parent, 0.0) + float(t0.max() - t0.min()) / 1e9
        if len(cycles) == scenario.parents and all(s > 0.0 for s in span.values()):
            return sum(cycles[p] / span[p] for p in cycles)
    return sum(r.size for r in runs) / duration_s if duration_s > 0 else 0.0


def summarize(scenario: Scenario, meta: dict, recs: np.ndarray, stalls: np.ndarray, *, quick: bool,
              rate: float | None = None) -> dict[str, Any]:
    """The measured result of one run (the shape `compare` puts beside the prediction)."""
    duration = (meta["t_end_ns"] - meta["t_warm_ns"]) / 1e9
    fork_us = (recs["t1"] - recs["t0"]) / 1e3
    rt_us = (recs["t2"] - recs["t0"]) / 1e3
    out: dict[str, Any] = {
        "scenario": scenario.name,
        "quick": quick,
        "throughput_per_s": _throughput(scenario, [recs], duration),
        "fork_latency_us": latency_stats(fork_us),
        "roundtrip_latency_us": latency_stats(rt_us),
        "samples": int(recs.size),
        "duration_s": duration,
        "warmup_s": (meta["t_warm_ns"] - meta["t_start_ns"]) / 1e9,
        "vmas": int(meta["vmas"] - meta["vmas_dontcopy"]),
        "vmas_in_maps": int(meta["vmas"]),
        "anon_vmas": int(meta["anon_vmas"]),
        "rss_bytes": int(max(scenario.rss, meta["anon_kb"] * 1024)),
        "touched_bytes": int(scenario.rss),
        "pte_kb": int(meta["pte_kb"]),
        "setup_s": float(meta["setup_s"]),
        "creations": int(meta["creations"]),
        "errors": int(meta["errors"]),
        "dropped_records": int(meta["dropped"]),
        "cpus": int(meta["cpus"]),
        "pinned": scenario.pin,
        "placement": _placement(recs),
        "cpu": cpu_accounting(meta, duration),
    }
    if "image_layout" in meta:  # the parents' physical layout, read as the run began (validation/layouts.py)
        out["image_layout"] = meta["image_layout"]
    if scenario.mode == "closed" and scenario.parents == 1 and (scenario.think_s > 0 or scenario.other_work_llc > 0
                                                                or scenario.parent_work_s > 0):
        # the gap each fork followed: from the previous reap to this fork (sleep, co-runner's sweep, own work)
        out["gap_us"] = latency_stats(_gaps(recs))
        out["other_work_bytes"] = scenario.other_work_bytes
    if scenario.mode == "open":
        out["rate_per_s"] = rate
        out["response_latency_us"] = latency_stats((recs["t2"] - recs["arrival"]) / 1e3)
        out["queue_wait_us"] = latency_stats((recs["t0"] - recs["arrival"]) / 1e3)
        out["unserved"] = int(meta["unserved"])
    if scenario.mode == "mt":
        out["stalls_us"], out["stalls_during_fork_us"], out["stalls_all_us"] = _stall_stats(stalls, recs)
        run_s = (meta["t_end_ns"] - meta["t_start_ns"]) / 1e9
        writers = max(1, scenario.writers)
        out["writer_fault_rate_per_s"] = meta["writer_minflt"] / writers / run_s if run_s > 0 else 0.0
        out["writer_writes_per_s"] = meta["writer_writes"] / writers / run_s if run_s > 0 else 0.0
        out["stalls_dropped"] = int(meta["stalls_dropped"])
    return out


def measure(scenario: Scenario, quick: bool = False, *, capacity: float | None = None,
            raw: bool = False, tools: Tools | None = None) -> dict[str, Any]:
    """Run one scenario for real; return its measured statistics.

    Open scenarios run at `scenario.rate_fraction x capacity`; without `capacity` the K=2 closed
    scenario at the same RSS is measured first. `raw=True` adds the records under "_records".
    """
    check_memory(scenario)
    if any(f.startswith("CLONE_NEW") for f in scenario.clone_flags) and os.geteuid() != 0:
        raise LoadgenError(f"{', '.join(scenario.clone_flags)} needs CAP_SYS_ADMIN (clone refuses it with EPERM): "
                           "run forksim validate as root for this row")
    tools = tools or build_tools()
    rate = None
    if scenario.mode == "open":
        if capacity is None:
            from .scenarios import SCENARIOS

            base = next(s for s in SCENARIOS if s.mode == "closed" and s.parents == 2 and not s.hogs
                        and s.kind == scenario.kind and s.rss == scenario.rss)
            capacity = measure(base, quick, tools=tools)["throughput_per_s"]
        rate = float(scenario.rate_fraction or 0.5) * capacity
    args = scenario.loadgen_args(quick, rate)
    runs = [run_loadgen(args, timeout=_timeout(scenario, quick), tools=tools, image=(scenario.rss, scenario.parents))
            for _ in range(max(1, scenario.repeats))]
    return _pooled(scenario, runs, quick=quick, rate=rate, raw=raw, tools=tools)


def measure_interleaved(group: list[Scenario], quick: bool = False, *, rounds: int = INTERLEAVE_ROUNDS,
                        tools: Tools | None = None) -> dict[str, dict[str, Any]]:
    """Measure closed scenarios that are compared with one another (forks after 1 to 1000 ms asleep, after
    other work) in `rounds` rounds, each running every scenario for 1/rounds of its time, the order turned
    by one each round; {name: result}. The host's speed drifts over minutes (+-30% between rows run
    minutes apart here); interleaved, every scenario of the group sees the same drift, and each result's
    `rounds` lists the per-round fork() p50s. A scenario that fails is recorded as {"error": message}."""
    tools = tools or build_tools()
    runs: dict[str, list] = {sc.name: [] for sc in group}
    errors: dict[str, str] = {}
    for r in range(rounds):
        for sc in group[r % len(group):] + group[:r % len(group)]:
            if sc.name in errors:
                continue
            try:
                check_memory(sc)
                args = sc.loadgen_args(quick, duration=sc.duration(quick) / rounds)
                runs[sc.name].append(run_loadgen(args, timeout=_timeout(sc, quick), tools=tools,
                                                 image=(sc.rss, sc.parents)))
            except LoadgenError as exc:
                errors[sc.name] = str(exc)
    out: dict[str, dict[str, Any]] = {}
    for sc in group:
        if sc.name in errors:
            out[sc.name] = {"scenario": sc.name, "error": errors[sc.name]}
            continue
        res = _pooled(sc, runs[sc.name], quick=quick, rate=None, raw=False, tools=tools, spread=False)
        res["rounds"] = [{"fork_p50_us": float(np.median((recs["t1"] - recs["t0"]) / 1e3)) if recs.size else None,
                          "samples": int(recs.size)} for _m, recs, _st in runs[sc.name]]
        out[sc.name] = res
    return out


def interleaved_measurer(chosen: list[Scenario], quick: bool, say: Callable[[str], None]
                        ) -> Callable[[Scenario], tuple[dict[str, Any], float] | None]:
    """For each scenario: its measurement when it belongs to an interleaved group (full set; the whole
    group is measured, in rounds, when its first member comes up), else None (measure it alone)."""
    done: dict[str, tuple[dict[str, Any], float]] = {}

    def grouped(sc: Scenario) -> tuple[dict[str, Any], float] | None:
        if quick or not sc.interleave:
            return None
        if sc.name not in done:
            group = [s for s in chosen if s.interleave == sc.interleave]
            say(f"  measuring {len(group)} scenarios ({sc.interleave}) interleaved, in {INTERLEAVE_ROUNDS} rounds")
            t = time.monotonic()
            results = measure_interleaved(group, quick, rounds=INTERLEAVE_ROUNDS)
            took = (time.monotonic() - t) / len(group)
            done.update({name: (res, took) for name, res in results.items()})
        return done[sc.name]

    return grouped


def _timeout(scenario: Scenario, quick: bool) -> float:
    """Setup touches the images (a few seconds per GiB here), then the run itself."""
    return 60 + scenario.warmup(quick) + scenario.duration(quick) * 3 + 20 * scenario.rss * scenario.parents / 1024**3


def _pooled(scenario: Scenario, runs: list[tuple[dict, np.ndarray, np.ndarray]], *, quick: bool,
            rate: float | None, raw: bool, tools: Tools, spread: bool = True) -> dict[str, Any]:
    """One result from one or more runs of a scenario: the latencies pool every run's creations.
    `spread` (repeated runs, whose placement differs run to run): the throughput is the median run's
    and each run's is kept; else (rounds of one measurement) all creations over all measured time."""
    meta, recs, stalls = runs[0]
    out = summarize(scenario, meta, recs, stalls, quick=quick, rate=rate)
    if len(runs) > 1:
        each = [summarize(scenario, m, r, st, quick=quick, rate=rate) for m, r, st in runs]
        recs = np.concatenate([r for _m, r, _st in runs])
        pooled = summarize(scenario, meta, recs, stalls, quick=quick, rate=rate)
        for key in ("fork_latency_us", "roundtrip_latency_us", "placement", "samples"):
            out[key] = pooled[key]
        if spread:
            out["throughput_per_s"] = float(np.median([e["throughput_per_s"] for e in each]))
            out["throughput_runs_per_s"] = [e["throughput_per_s"] for e in each]
        else:
            out["duration_s"] = float(sum(e["duration_s"] for e in each))
            out["throughput_per_s"] = _throughput(scenario, [r for _m, r, _st in runs], out["duration_s"])
        if "image_layout" in out:
            out["image_layout"] = pooled_layout([m.get("image_layout") or {} for m, _r, _st in runs])
        if "gap_us" in out:  # gaps within each run (a run's last reap is not followed by the next run's fork)
            out["gap_us"] = latency_stats(np.concatenate([_gaps(r) for _m, r, _st in runs]))
    out["helper_static"] = tools.helper_static
    if raw:
        out["_records"] = recs
        out["_stalls"] = stalls
    return out


def measure_all(quick: bool = False, progress: bool | Callable[[str], None] = True,
                only: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Measure every scenario of the set (quick: the quick subset), in order; {name: result}.

    A scenario that fails is recorded as {"error": message}, not fatal to the rest.
    """
    say = progress if callable(progress) else ((lambda m: print(m, file=sys.stderr, flush=True)) if progress else (lambda m: None))
    tools = build_tools()
    results: dict[str, dict[str, Any]] = {}
    capacity: dict[tuple[str, int], float] = {}
    chosen = [sc for sc in scenarios(quick) if not only or sc.name in only]
    grouped = interleaved_measurer(chosen, quick, say)
    for sc in chosen:
        t = time.monotonic()
        try:
            cap = capacity.get(capacity_key(sc.kind, sc.rss)) if sc.mode == "open" else None
            before = grouped(sc)
            res = before[0] if before else measure(sc, quick, capacity=cap, tools=tools)
            if "error" in res:
                raise LoadgenError(res["error"])
            if sc.mode == "closed" and sc.parents == 2 and not sc.hogs:
                capacity[capacity_key(sc.kind, sc.rss)] = res["throughput_per_s"]
            results[sc.name] = res
            say(f"{sc.name:34s} {res['throughput_per_s']:9.0f}/s  fork p50 {res['fork_latency_us']['p50']:8.1f} us"
                f"  p99 {res['fork_latency_us']['p99']:8.1f} us  rt p50 {res['roundtrip_latency_us']['p50']:8.1f} us"
                f"  ({time.monotonic() - t:.1f} s)")
        except LoadgenError as exc:
            results[sc.name] = {"scenario": sc.name, "error": str(exc)}
            say(f"{sc.name:34s} FAILED: {exc}")
    return results
