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

import datetime as _dt
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

from ..io import write_text
from ..summary import path as _summary_path
from .measure import LoadgenError, build_tools, measure
from .apps import redis_bgsave
from .crosscheck import stress_ng_vfork
from .other_hosts import render_other_hosts
from .mechanisms import mechanism_for
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
    "validate",
    "write_report",
]

# (column key, label, path in the measured result, path in summary.json (checked against its schema,
# forksim.summary), target key)
METRICS: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...], str], ...] = (
    ("throughput", "throughput (/s)", ("throughput_per_s",), _summary_path("throughput_per_s.mean"), "throughput"),
    ("fork_p50", "fork() p50 (us)", ("fork_latency_us", "p50"), _summary_path("fork_latency_us.p50"), "p50"),
    ("fork_p99", "fork() p99 (us)", ("fork_latency_us", "p99"), _summary_path("fork_latency_us.p99"), "p99"),
    ("rt_p50", "round trip p50 (us)", ("roundtrip_latency_us", "p50"), _summary_path("roundtrip_latency_us.p50"), "p50"),
    ("rt_p99", "round trip p99 (us)", ("roundtrip_latency_us", "p99"), _summary_path("roundtrip_latency_us.p99"), "p99"),
)
# Extra comparisons made where both sides have them (not in the main table's columns).
EXTRA_METRICS: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...], str], ...] = (
    ("stall_p50", "mmap stall p50 (us)", ("stalls_us", "p50"), _summary_path("mmap_stall_us.p50"), "p50"),
    ("stall_p99", "mmap stall p99 (us)", ("stalls_us", "p99"), _summary_path("mmap_stall_us.p99"), "p99"),
    ("response_p50", "response p50 (us)", ("response_latency_us", "p50"), _summary_path("response_latency_us.p50"), "p50"),
    ("response_p99", "response p99 (us)", ("response_latency_us", "p99"), _summary_path("response_latency_us.p99"), "p99"),
)
# Median |relative error| targets, and the largest factor any single number may be off by.
TARGETS = {"throughput": 0.10, "p50": 0.15, "p99": 0.25, "max_factor": 2.0}
# A measurement during which other processes (not ours) kept more than this share of the machine's
# CPUs busy is marked noisy in the table: the simulation does not know about that load.
NOISY_FOREIGN_FRAC = 0.10


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
    rng = _get(predicted, ("throughput_per_s", "range")) if predicted else None
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


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _fmt_pct(e: float | None) -> str:
    return "-" if e is None else f"{e * 100:.0f}%"


def _fmt_err(e: float | None) -> str:
    return "-" if e is None else f"{e * 100:+.0f}%"


def render_markdown(report: dict[str, Any]) -> str:
    """The validation table (markdown): measured, predicted and error per metric, then the medians."""
    rows, summ, prov = report["rows"], report["summary"], report.get("provenance", {})
    lines = ["# forksim validation: measured vs predicted", ""]
    if prov:
        lines.append(f"Machine: {prov.get('cpu_model', '?')}, {prov.get('cpus', '?')} CPUs, "
                     f"Linux {prov.get('kernel', '?')}; profile `{prov.get('profile', '?')}`; "
                     f"{prov.get('date', '')}; {'quick' if report.get('quick') else 'full'} set.")
        lines.append("")
    header = ["scenario"]
    for _key, label, *_ in METRICS:
        header += [f"{label} meas", "pred", "err"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for r in rows:
        name = r["scenario"]
        if any(k in {m[0] for m in METRICS} for k in r.get("off_by_2x", [])):
            name += " (2x!)"
        if (r.get("foreign_cpu_frac") or 0) > NOISY_FOREIGN_FRAC:
            name += f" (noisy: {r['foreign_cpu_frac'] * 100:.0f}% foreign CPU)"
        cells = [name]
        for key, *_ in METRICS:
            cells += [_fmt(r["measured"].get(key)), _fmt(r["predicted"].get(key)), _fmt_err(r["rel_error"].get(key))]
        lines.append("| " + " | ".join(cells) + " |")
    med = ["**median abs error**"]
    tgt = ["target"]
    for key, _label, _m, _p, target in METRICS:
        m = summ["median_abs_rel_error"].get(key)
        med += ["", "", "-" if m is None else f"**{m * 100:.0f}%**"]
        tgt += ["", "", f"<= {TARGETS[target] * 100:.0f}%"]
    lines.append("| " + " | ".join(med) + " |")
    lines.append("| " + " | ".join(tgt) + " |")
    lines.append("")
    lines.append(f"Rows off by more than {TARGETS['max_factor']:g}x in any column: **{summ['rows_off_by_2x']}** "
                 f"of {summ['rows_compared']} (target: 0)"
                 + (f": {', '.join(summ['rows_off_by_2x_names'])}" if summ["rows_off_by_2x_names"] else "") + ".")
    noisy = summ.get("rows_noisy") or []
    if noisy:
        lines.append(f"Rows measured while other processes used more than {NOISY_FOREIGN_FRAC * 100:.0f}% of the "
                     f"CPUs (not part of the simulated load): {len(noisy)}; median errors over the quiet rows only: "
                     + ", ".join(f"{k} {_fmt_pct(v)}" for k, v in (summ.get("median_abs_rel_error_quiet") or {}).items()
                                 if k in {m[0] for m in METRICS}) + ".")
    extra = [(k, lab) for k, lab, *_ in EXTRA_METRICS if summ["n"].get(k)]
    if extra:
        lines += ["", "Other comparisons:", "", "| scenario | metric | measured | predicted | error |", "|---|---|---|---|---|"]
        for r in rows:
            for k, lab in extra:
                if r["measured"].get(k) is not None or r["predicted"].get(k) is not None:
                    lines.append(f"| {r['scenario']} | {lab} | {_fmt(r['measured'].get(k))} | "
                                 f"{_fmt(r['predicted'].get(k))} | {_fmt_err(r['rel_error'].get(k))} |")
    spread = [r for r in rows if r.get("throughput_spread")]
    if spread:
        lines += ["", "Run-to-run spread of the throughput (/s; where the balancer put hogs and parents differs "
                  "from run to run): the real runs against the model's replications:", "",
                  "| scenario | real runs | real min .. max | model min .. max | real inside model's range |",
                  "|---|---|---|---|---|"]
        for r in spread:
            sp = r["throughput_spread"]
            pr = sp.get("predicted") or [None, None]
            lines.append(f"| {r['scenario']} | {', '.join(_fmt(v) for v in sp['runs'])} | "
                         f"{_fmt(sp['measured'][0])} .. {_fmt(sp['measured'][1])} | {_fmt(pr[0])} .. {_fmt(pr[1])} | "
                         f"{'yes' if sp['inside'] else 'no'} |")
    cc = report.get("crosscheck_stress_ng")
    if cc and cc.get("stress_ng_per_s"):
        lines += ["", "Cross-check with stress-ng (vfork+_exit+wait, one process pinned to CPU 0, creations/s): "
                  f"stress-ng {_fmt(cc.get('stress_ng_per_s'))}, forksim's load generator "
                  f"{_fmt(cc.get('loadgen_per_s'))}, the model (1 CPU) {_fmt(cc.get('model_per_s'))}."]
    apps = report.get("apps") or {}
    if apps.get("rows"):
        lines += ["", f"A real application, timed by itself ({apps.get('app')}: BGSAVE every "
                  f"{apps['rows'][0]['interval_s']:g} s, `latest_fork_usec` of INFO stats; the model gets the RSS, "
                  "VMAs and threads from /proc and the interval):", "",
                  "| scenario | RSS (MiB) | VMAs | forks | fork() p50 (us) meas | pred | err |", "|---|---|---|---|---|---|---|"]
        for a in apps["rows"]:
            lines.append(f"| {a['scenario']} | {a['image']['rss_bytes'] / 1024**2:.0f} | {a['image']['vmas']} | "
                         f"{len(a['fork_usec'])} | {_fmt(a['measured_p50_us'])} | {_fmt(a['predicted_p50_us'])} | "
                         f"{_fmt_err(a['rel_error'])} |")
    elif apps.get("skipped"):
        lines += ["", f"Real application: skipped ({apps['skipped']})."]
    failed = [r for r in rows if r.get("error")]
    if failed:
        lines += ["", "Not compared:", ""]
        lines += [f"- {r['scenario']}: {r['error']}" for r in failed]
    lines.append("")
    return "\n".join(lines)


def plot_report(report: dict[str, Any], path: Path) -> Path | None:
    """Predicted vs measured, one panel for throughput and one for latencies, log-log with y = x."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        return None
    try:
        import seaborn as sns

        sns.set_theme(style="whitegrid", context="notebook")
    except ImportError:  # pragma: no cover
        pass
    panels = [("throughput", "throughput (creations/s)", ["throughput"]),
              ("latency", "latency (µs)", ["fork_p50", "fork_p99", "rt_p50", "rt_p99", "stall_p50", "stall_p99"])]
    labels = {k: lab for k, lab, *_ in METRICS + EXTRA_METRICS}
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.5))
    for ax, (_name, unit, keys) in zip(axes, panels):
        allv: list[float] = []
        for key in keys:
            pts = [(r["measured"][key], r["predicted"][key]) for r in report["rows"]
                   if (r["measured"].get(key) or 0) > 0 and (r["predicted"].get(key) or 0) > 0]
            if not pts:
                continue
            xs, ys = zip(*pts)
            allv += list(xs) + list(ys)
            ax.scatter(xs, ys, label=labels[key], alpha=0.8, s=36)
        if allv:
            lo, hi = min(allv) / 1.5, max(allv) * 1.5
            ax.plot([lo, hi], [lo, hi], color="black", lw=1, label="y = x")
            ax.fill_between([lo, hi], [lo / 2, hi / 2], [lo * 2, hi * 2], color="grey", alpha=0.12, label="within 2x")
            ax.set_xlim(lo, hi)
            ax.set_ylim(lo, hi)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.legend(fontsize=8, loc="upper left")
        else:
            ax.text(0.5, 0.5, "no predictions to plot", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel(f"measured {unit}")
        ax.set_ylabel(f"predicted {unit}")
    prov = report.get("provenance", {})
    fig.suptitle(f"forksim validation ({prov.get('profile', '?')} profile, {prov.get('cpus', '?')} CPUs, "
                 f"Linux {prov.get('kernel', '?')})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


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


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    return str(o)


def _above_target(row: dict[str, Any]) -> list[str]:
    """The columns of a row whose |relative error| exceeds its target."""
    out = []
    for key, _label, _m, _p, target in METRICS:
        e = row["rel_error"].get(key)
        if e is not None and abs(e) > TARGETS[target]:
            out.append(key)
    return out


def render_doc(report: dict[str, Any]) -> str:
    """VALIDATION.md: provenance, the table, for every row above target the mechanism believed
    responsible (forksim/validation/mechanisms.py), and published fork times of other hosts beside
    the `published` profile (forksim/validation/other_hosts.py)."""
    prov = report.get("provenance", {})
    lines = [
        "# Validation: forksim against this machine kind",
        "",
        "Generated by `forksim validate" + (" --quick" if report.get("quick") else "") + " --doc VALIDATION.md`; "
        "do not edit by hand. Rerun the command to refresh it.",
        "",
        "## Machine",
        "",
    ]
    for key in ("cpu_model", "cpus", "kernel", "date", "profile", "compiler", "spawn_helper_static"):
        if key in prov:
            lines.append(f"- {key}: {prov[key]}")
    used = prov.get("profile_used")
    if used:
        lines.append(f"- profile used: {used.get('name')} (measured on {used.get('host')}; sha256 {used.get('sha256')})")
    lines += ["", render_markdown(report).split("\n", 2)[2], "## Rows above target and the mechanism believed responsible", ""]
    for row in report["rows"]:
        cols = _above_target(row)
        if cols or row.get("error"):
            what = ", ".join(cols) if cols else "not compared"
            lines.append(f"- **{row['scenario']}** ({what}): {mechanism_for(row['scenario'])}.")
    lines += ["", render_other_hosts()]
    return "\n".join(lines)


def write_report(report: dict[str, Any], out: Path, doc: Path | None = None) -> dict[str, Path]:
    """validation.json, validation.md and validation.png under `out` (and `doc`, VALIDATION.md)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "validation.json", "md": out / "validation.md", "png": out / "validation.png"}
    write_text(paths["json"], json.dumps(report, indent=2, default=_json_default) + "\n")
    write_text(paths["md"], render_markdown(report))
    if doc is not None:
        paths["doc"] = write_text(doc, render_doc(report))
    if plot_report(report, paths["png"]) is None:
        paths.pop("png")
    return paths


def validate(profile: str = "default", quick: bool = False, out: Path | None = None, progress: bool = True, *,
             only: list[str] | None = None, doc: Path | None = None,
             simulator: Callable[[dict[str, Any], str | None], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Measure each scenario for real, simulate it, compare; write the report files; return the report.

    `only` restricts the run to the named scenarios (open ones still get their capacity measured);
    `simulator(config, profile) -> summary dict` replaces the simulator (tests). A scenario whose
    measurement or simulation fails is recorded with its error, not fatal to the rest.
    """
    say: Callable[[str], None] = (lambda m: print(m, file=sys.stderr, flush=True)) if progress else (lambda m: None)
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
    for sc in chosen:
        t = time.monotonic()
        measured: dict[str, Any] = {}
        predicted: dict[str, Any] | None = None
        config: dict[str, Any] | None = None
        error = None
        try:
            cap = capacity.get(capacity_key(sc.kind, sc.rss)) if sc.mode == "open" else None
            measured = measure(sc, quick, capacity=cap)
            if sc.mode == "closed" and sc.parents == 2 and not sc.hogs:
                capacity[capacity_key(sc.kind, sc.rss)] = measured["throughput_per_s"]
        except LoadgenError as exc:
            error = f"measurement failed: {exc}"
        t_meas = time.monotonic() - t
        if error is None:
            config = sc.to_config(measured, cpus=cpus, quick=quick, profile=profile)
            try:
                predicted = sim(config, profile)
            except Exception as exc:  # a failing point is recorded, not fatal (desmod habit)
                error = f"simulation failed: {exc.__class__.__name__}: {exc}"
        row = compare_row(sc.name, measured, predicted, config=config, error=error)
        row["measured_full"] = measured
        row["predicted_full"] = predicted
        row["seconds"] = {"measure": round(t_meas, 2), "simulate": round(time.monotonic() - t - t_meas, 2)}
        rows.append(row)
        e, m = row["rel_error"], row["measured"]
        line = (f"  {sc.name:34s} thr {_fmt(m.get('throughput'))}/s ({_fmt_err(e.get('throughput'))})"
                f"  fork p50 {_fmt(m.get('fork_p50'))} us ({_fmt_err(e.get('fork_p50'))})"
                f"  p99 {_fmt(m.get('fork_p99'))} us ({_fmt_err(e.get('fork_p99'))})"
                f"  [{row['seconds']['measure']:.1f}+{row['seconds']['simulate']:.1f} s]")
        if (row.get("foreign_cpu_frac") or 0) > NOISY_FOREIGN_FRAC:
            line += f"  noisy: {row['foreign_cpu_frac'] * 100:.0f}% of the CPUs busy with other processes"
        say(line if not error or measured else f"  {sc.name:34s} {error}")
        if error and measured:
            say(f"  {'':34s} {error}")
    crosscheck = stress_ng_vfork(2.0 if quick else 5.0, sim, profile)
    if crosscheck:
        say("  stress-ng cross-check (vfork, pinned, per s): " + ", ".join(
            f"{k} {_fmt(v)}" for k, v in crosscheck.items() if k.endswith("_per_s")))
    # a real application, timed by itself (full set only: it fills Redis to 1 GiB)
    apps = ({"skipped": "quick set: the real application (Redis BGSAVE) runs in the full set only"} if quick or only
            else redis_bgsave(sim, profile, quick=quick, say=say))
    report = {
        "provenance": provenance(profile),
        "crosscheck_stress_ng": crosscheck,
        "apps": apps,
        "quick": quick,
        "targets": TARGETS,
        "summary": summarize_rows(rows),
        "rows": rows,
        "wall_s": round(time.monotonic() - t_start, 1),
    }
    paths = write_report(report, out, doc)
    if progress:
        print(render_markdown(report))
        say("wrote " + ", ".join(str(p) for p in paths.values()))
    return report
