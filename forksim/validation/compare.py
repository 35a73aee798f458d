"""`forksim validate`: real load on this machine beside the simulator's prediction of it.

For each scenario (scenarios.py) the real load is measured (measure.py), the equivalent experiment
config is built from what was measured (VMA count, anonymous VMAs, RSS, offered rate) and simulated
through the simulator's Python API, and the two are compared. Written to OUT:

- validation.json: per scenario the measured and predicted numbers, the relative errors
  (pred - meas) / meas, the config that was simulated; the provenance (kernel, CPU model, CPUs, date,
  profile) and the median |relative error| per column against the targets.
- validation.md: the table, the medians beside the targets, the rows off by more than 2x.
- validation.png: predicted against measured, log-log, with the y = x line.
"""

from __future__ import annotations

import copy
import datetime as _dt
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

from .measure import LoadgenError, build_tools, interleaved_measurer, measure
from .apps import redis_bgsave
from .canary import CANARIES, COLD_CANARY, Canary, WakeCanary, canary_summary
from .crosscheck import stress_ng_fork, stress_ng_vfork
from .document import _fmt, _fmt_err, plot_report, render_markdown, write_report
from .metrics import EXTRA_METRICS, METRICS, NOISY_FOREIGN_FRAC, TARGETS
from .scenarios import capacity_key, scenarios

__all__ = [
    "METRICS",
    "TARGETS",
    "relative_error",
    "compare_row",
    "summarize_rows",
    "render_markdown",
    "plot_report",
    "provenance",
    "simulate",
    "stated_prediction",
    "validate",
    "write_report",
]



def _get(d: Any, path: tuple[str, ...]) -> float | None:
    for part in path:
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    if isinstance(d, bool) or not isinstance(d, (int, float)) or not math.isfinite(d):
        return None
    return float(d)


def relative_error(pred: float | None, meas: float | None) -> float | None:
    """(pred - meas) / meas; None when either is missing or the measurement is not positive."""
    if pred is None or meas is None or meas <= 0:
        return None
    return (pred - meas) / meas


def _off_by_factor(pred: float | None, meas: float | None, factor: float) -> bool:
    if pred is None or meas is None or meas <= 0:
        return False
    if pred <= 0:
        return True
    return pred / meas > factor or meas / pred > factor


def compare_row(name: str, measured: dict[str, Any], predicted: dict[str, Any] | None, *,
                config: dict | None = None, error: str | None = None) -> dict[str, Any]:
    """One scenario: measured, predicted, relative errors per metric, and whether any is off by > 2x."""
    row: dict[str, Any] = {"scenario": name, "measured": {}, "predicted": {}, "rel_error": {}}
    for key, _label, mpath, ppath, _t in METRICS + EXTRA_METRICS:
        m = _get(measured, mpath)
        p = _get(predicted, ppath) if predicted else None
        if m is None and p is None:
            continue
        row["measured"][key] = m
        row["predicted"][key] = p
        row["rel_error"][key] = relative_error(p, m)
    row["off_by_2x"] = [k for k in row["measured"]
                        if _off_by_factor(row["predicted"].get(k), row["measured"].get(k), TARGETS["max_factor"])]
    runs = measured.get("throughput_runs_per_s")
    # a [min, max] pair, which _get (numbers only) would refuse
    rng = ((predicted or {}).get("throughput_per_s") or {}).get("range")
    if runs:
        # The real run-to-run spread against the range of the model's replications.
        row["throughput_spread"] = {"measured": [min(runs), max(runs)], "runs": list(runs),
                                    "predicted": rng,
                                    "inside": bool(rng and rng[0] is not None and rng[1] is not None
                                                   and rng[0] <= min(runs) and max(runs) <= rng[1])}
    foreign = _get(measured, ("cpu", "foreign_frac"))
    if foreign is not None:
        row["foreign_cpu_frac"] = foreign
    if error:
        row["error"] = error
    if config is not None:
        row["config"] = config
    return row


def summarize_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Median |relative error| per column (over rows that have both sides), rows off by > 2x, targets."""
    out: dict[str, Any] = {"median_abs_rel_error": {}, "n": {}, "targets": {}, "meets_target": {}}
    for key, _label, _m, _p, target in METRICS + EXTRA_METRICS:
        errs = [abs(r["rel_error"][key]) for r in rows if r["rel_error"].get(key) is not None]
        out["n"][key] = len(errs)
        out["median_abs_rel_error"][key] = statistics.median(errs) if errs else None
        out["targets"][key] = TARGETS[target]
        out["meets_target"][key] = (out["median_abs_rel_error"][key] <= TARGETS[target]) if errs else None
    main_keys = {m[0] for m in METRICS}
    off = [r["scenario"] for r in rows if any(k in main_keys for k in r.get("off_by_2x", []))]
    out["rows_off_by_2x"] = len(off)
    out["rows_off_by_2x_names"] = off
    out["rows_compared"] = sum(1 for r in rows if any(v is not None for v in r["rel_error"].values()))
    out["rows_failed"] = [r["scenario"] for r in rows if r.get("error")]
    out["rows_noisy"] = [r["scenario"] for r in rows if (r.get("foreign_cpu_frac") or 0) > NOISY_FOREIGN_FRAC]
    quiet = [r for r in rows if r["scenario"] not in out["rows_noisy"]]
    out["median_abs_rel_error_quiet"] = {}
    for key, *_ in METRICS + EXTRA_METRICS:
        errs = [abs(r["rel_error"][key]) for r in quiet if r["rel_error"].get(key) is not None]
        out["median_abs_rel_error_quiet"][key] = statistics.median(errs) if errs else None
    return out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def provenance(profile: str) -> dict[str, Any]:
    def read(p: str) -> str | None:
        try:
            return Path(p).read_text().strip()
        except OSError:
            return None

    thp = read("/sys/kernel/mm/transparent_hugepage/enabled")
    prov: dict[str, Any] = {
        "kernel": platform.release(),
        "kernel_version": platform.version(),
        "cpu_model": _cpu_model(),
        "cpus": os.cpu_count(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "profile": profile,
        "hostname": platform.node(),
        "python": platform.python_version(),
        "thp": thp.split("[")[1].split("]")[0] if thp and "[" in thp else thp,
        "clocksource": read("/sys/devices/system/clocksource/clocksource0/current_clocksource"),
    }
    try:  # which profile file (sha256) and the host it was measured on, and this host's fingerprint
        from ..host import this_host
        from ..profile import load_profile, profile_info

        prov["profile_used"] = profile_info(load_profile(profile))
        prov["host"] = this_host().model_dump(mode="json", exclude_none=True)
    except Exception:  # noqa: BLE001 - provenance is best effort; the profile was checked before measuring
        pass
    try:
        tools = build_tools()
        prov.update({"compiler": tools.compiler_version, "spawn_helper_static": tools.helper_static})
    except LoadgenError:
        pass
    return prov


def simulate(config: dict[str, Any], profile: str | None) -> dict[str, Any]:
    """The simulator's summary.json for a config dict (through forksim's Python API)."""
    from forksim.config import parse_config
    from forksim.runner import run_experiment

    exp = parse_config(config, source="forksim validate", resolved=True)  # the scenarios' numbers: us, bytes, /s
    result = run_experiment(exp, profile=profile)
    summary = result.summary
    return dict(summary) if not isinstance(summary, dict) else summary


def stated_prediction(config: dict[str, Any], measured: dict[str, Any],
                      sim: Callable[[dict[str, Any], str | None], dict[str, Any]]) -> dict[str, Any] | None:
    """A cold row (a gap between forks: think time, the parent's own work, or a child's life before its exit)
    predicted as a user states it: the image's RSS, VMAs and threads and the gap, its layout not read
    (`workload.image.scatter` and `spread` left out, so the model takes the profile's fresh_image_scatter and
    fresh_image_spread): {"fork_p50": predicted us, "rel_error": against the measured p50}. None for a row without
    a gap or without a layout to leave out (its main prediction is that already)."""
    workload = config.get("workload") or {}
    gap = workload.get("think_time") or workload.get("parent_work") or (workload.get("child") or {}).get("lifetime")
    if not gap or "scatter" not in (workload.get("image") or {}):
        return None
    stated = copy.deepcopy(config)
    for key in ("scatter", "spread"):
        stated["workload"]["image"].pop(key, None)
    pred = _get(sim(stated, config["machine"]["profile"]), ("fork_latency_us", "p50"))
    return {"fork_p50": pred, "rel_error": relative_error(pred, _get(measured, ("fork_latency_us", "p50")))}


def _scenario_row(sc: Any, quick: bool, capacity: dict[tuple[str, int], float], cpus: int,
                  sim: Callable[[dict[str, Any], str | None], dict[str, Any]], profile: str,
                  measured_before: tuple[dict[str, Any], float] | None = None) -> dict[str, Any]:
    """One scenario measured for real and simulated: its compared row (with the measured and predicted
    summaries in full and the seconds each took). A closed 2-parent scenario without hogs records its
    throughput in `capacity`, the rate its open scenarios are offered a share of. `measured_before`:
    (result, seconds) of a measurement already taken (an interleaved group's)."""
    t = time.monotonic()
    measured: dict[str, Any] = {}
    predicted: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    stated: dict[str, Any] | None = None
    error = None
    if measured_before is not None:
        measured, t_meas = measured_before
        if "error" in measured:
            measured, error = {}, f"measurement failed: {measured['error']}"
    else:
        try:
            cap = capacity.get(capacity_key(sc.kind, sc.rss)) if sc.mode == "open" else None
            measured = measure(sc, quick, capacity=cap)
            if sc.mode == "closed" and sc.parents == 2 and not sc.hogs:
                capacity[capacity_key(sc.kind, sc.rss)] = measured["throughput_per_s"]
        except LoadgenError as exc:
            error = f"measurement failed: {exc}"
        t_meas = time.monotonic() - t
    t_sim = time.monotonic()
    if error is None:
        config = sc.to_config(measured, cpus=cpus, quick=quick, profile=profile)
        try:
            predicted = sim(config, profile)
            stated = stated_prediction(config, measured, sim)
        except Exception as exc:  # a failing point is recorded, not fatal (desmod habit)
            error = f"simulation failed: {exc.__class__.__name__}: {exc}"
    row = compare_row(sc.name, measured, predicted, config=config, error=error)
    if error is None and stated is not None:
        row["predicted_stated"] = stated
    row["measured_full"] = measured
    row["predicted_full"] = predicted
    row["seconds"] = {"measure": round(t_meas, 2), "simulate": round(time.monotonic() - t_sim, 2)}
    return row


def _progress_lines(name: str, row: dict[str, Any]) -> list[str]:
    """What `forksim validate` says as a scenario is done: measured figures and errors, or why it failed."""
    error, measured = row.get("error"), row["measured_full"]
    if error and not measured:
        return [f"  {name:34s} {error}"]
    e, m = row["rel_error"], row["measured"]
    line = (f"  {name:34s} thr {_fmt(m.get('throughput'))}/s ({_fmt_err(e.get('throughput'))})"
            f"  fork p50 {_fmt(m.get('fork_p50'))} us ({_fmt_err(e.get('fork_p50'))})"
            f"  p99 {_fmt(m.get('fork_p99'))} us ({_fmt_err(e.get('fork_p99'))})"
            f"  [{row['seconds']['measure']:.1f}+{row['seconds']['simulate']:.1f} s]")
    scatter = (measured.get("image_layout") or {}).get("scatter")
    if scatter is not None:  # the parents' physical layout, which the row's model was given
        line += f"  scatter {scatter:.2f}"
    if (row.get("foreign_cpu_frac") or 0) > NOISY_FOREIGN_FRAC:
        line += f"  noisy: {row['foreign_cpu_frac'] * 100:.0f}% of the CPUs busy with other processes"
    for key, what in CANARIES:
        if (row.get(key) or {}).get("rel_error") is not None:
            line += f"  {what} {_fmt_err(row[key]['rel_error'])}"
    return [line, f"  {'':34s} {error}"] if error else [line]


def validate(profile: str = "default", quick: bool = False, out: Path | None = None,
             progress: bool | Callable[[str], None] = True, *,
             only: list[str] | None = None, doc: Path | None = None,
             simulator: Callable[[dict[str, Any], str | None], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Measure each scenario for real, simulate it, compare; write the report files; return the report.

    `progress`: a callback for each progress line (True: lines on stderr; False: silent).
    `only` restricts the run to the named scenarios (open ones still get their capacity measured);
    `simulator(config, profile) -> summary dict` replaces the simulator (tests). A scenario whose
    measurement or simulation fails is recorded with its error, not fatal to the rest.
    """
    say: Callable[[str], None] = progress if callable(progress) else (
        (lambda m: print(m, file=sys.stderr, flush=True)) if progress else (lambda m: None))
    sim = simulator or simulate
    out = Path(out) if out is not None else Path("validation")
    build_tools()  # fail early, with the reason, when there is no compiler
    cpus = os.cpu_count() or 1
    t_start = time.monotonic()
    rows: list[dict[str, Any]] = []
    capacity: dict[tuple[str, int], float] = {}
    chosen = scenarios(quick)
    if only:
        names = set(only)
        needed_caps = {capacity_key(s.kind, s.rss) for s in chosen if s.name in names and s.mode == "open"}
        chosen = [s for s in chosen if s.name in names or (s.mode == "closed" and s.parents == 2 and not s.hogs
                                                           and capacity_key(s.kind, s.rss) in needed_caps)]
    say(f"forksim validate: {len(chosen)} scenarios ({'quick' if quick else 'full'}), profile {profile!r}")
    grouped = interleaved_measurer(chosen, quick, say)
    canary, drift, groups_seen = Canary(sim, profile, cpus), None, set()
    cold_canary, cold_drift = Canary(sim, profile, cpus, COLD_CANARY), None
    wake_canary, wake_drift = WakeCanary(profile, cpus), None
    for sc in chosen:
        if not sc.interleave or quick or sc.interleave not in groups_seen:
            drift = canary.measure()  # before each row; once before an interleaved group
            # a row with a gap: how cold a gap leaves an image drifts on its own (canary.py)
            gap = sc.think_s or sc.child_life_s or sc.other_work_llc or sc.parent_work_s
            cold_drift = cold_canary.measure() if gap else None
            # a row with a think time: how fast the halted vCPU wakes, the host's mode (canary.py)
            wake_drift = wake_canary.measure() if sc.think_s else None
        groups_seen.add(sc.interleave)
        row = _scenario_row(sc, quick, capacity, cpus, sim, profile, grouped(sc))
        row["canary"] = drift
        if cold_drift is not None:
            row["cold_canary"] = cold_drift
        if wake_drift is not None:
            row["wake_canary"] = wake_canary.after(wake_drift)  # the mode may change within the row: after it too
        rows.append(row)
        for line in _progress_lines(sc.name, row):
            say(line)
    crosscheck = stress_ng_vfork(2.0 if quick else 5.0, sim, profile)
    if crosscheck:
        say("  stress-ng cross-check (vfork, pinned, per s): " + ", ".join(
            f"{k} {_fmt(v)}" for k, v in crosscheck.items() if k.endswith("_per_s")))
    fork_check = stress_ng_fork(2.0 if quick else 4.0, sim, profile, cpus)
    if fork_check:
        say("  stress-ng --fork 1 (unpinned, per s): " + ", ".join(
            f"{k} {_fmt(v)}" for k, v in fork_check.items() if k.endswith("_per_s")) + (
            f"  {fork_check['error']}" if fork_check.get("error") else ""))
    # a real application, timed by itself (full set only: it fills Redis to 1 GiB)
    apps = ({"skipped": "quick set: the real application (Redis BGSAVE) runs in the full set only"} if quick or only
            else redis_bgsave(sim, profile, quick=quick, say=say))
    report = {
        "provenance": provenance(profile),
        "crosscheck_stress_ng": crosscheck,
        "crosscheck_stress_ng_fork": fork_check,
        "apps": apps,
        "quick": quick,
        "targets": TARGETS,
        "summary": {**summarize_rows(rows), **{key: canary_summary(rows, key) for key, _ in CANARIES}},
        "rows": rows,
        "wall_s": round(time.monotonic() - t_start, 1),
    }
    paths = write_report(report, out, doc)
    say("wrote " + ", ".join(str(p) for p in paths.values()))
    return report


# The documents (validation.md, VALIDATION.md, validation.png, validation.json): forksim.validation.document
# (imported last: it reads this module's METRICS and TARGETS).
