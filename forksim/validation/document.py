"""The validation report's documents: the markdown table (validation.md), VALIDATION.md (the table with
the mechanism believed responsible for each row above target and other hosts' published figures), the
predicted-against-measured figure (validation.png) and validation.json. The rows and their errors
come from forksim.validation.compare.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..io import write_text
from .canary import CANARIES, WAKE_IDLE_US
from .mechanisms import mechanism_for
from .metrics import DRIFT_NOTE, EXTRA_METRICS, METRICS, NOISY_FOREIGN_FRAC, STEAL_NOTE, TARGETS
from .other_hosts import render_other_hosts

__all__ = ["render_markdown", "render_doc", "plot_report", "write_report"]


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


def _row_name(r: dict[str, Any]) -> str:
    """The scenario's name with its notes: off by 2x, foreign CPU, the canary's drift, the image's measured
    scatter (/proc/PID/pagemap, the model is configured with it), the host's steal."""
    name = r["scenario"]
    if any(k in {m[0] for m in METRICS} for k in r.get("off_by_2x", [])):
        name += " (2x!)"
    if (r.get("foreign_cpu_frac") or 0) > NOISY_FOREIGN_FRAC:
        name += f" (noisy: {r['foreign_cpu_frac'] * 100:.0f}% foreign CPU)"
    drifts = [f"{what} {_fmt_err(d)}" for key, what in CANARIES
              if (d := (r.get(key) or {}).get("rel_error")) is not None and abs(d) > DRIFT_NOTE]
    if drifts:
        name += f" (host drift: {', '.join(drifts)})"
    scatter = ((r.get("measured_full") or {}).get("image_layout") or {}).get("scatter")
    if scatter is not None:  # the parents' physical layout, configured into the row's model
        name += f" (scatter {scatter:.2f})"
    steal = ((r.get("measured_full") or {}).get("cpu") or {}).get("steal_frac")
    if steal is not None and steal > STEAL_NOTE:
        name += f" (host steal: {steal * 100:.0f}%)"
    return name


def _table(rows: list[dict[str, Any]], summ: dict[str, Any]) -> list[str]:
    """The main table: measured, predicted and error per column for each scenario, then the medians
    beside their targets."""
    lines: list[str] = []
    header = ["scenario"]
    for _key, label, *_ in METRICS:
        header += [f"{label} meas", "pred", "err"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for r in rows:
        cells = [_row_name(r)]
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
    return lines


def _other_comparisons(report: dict[str, Any]) -> list[str]:
    """The comparisons beside the main table: extra metrics, the throughput's run-to-run spread, the
    stress-ng cross-check and the real application."""
    rows, summ = report["rows"], report["summary"]
    lines: list[str] = []
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
    lines += _stated_rows(rows)
    cc = report.get("crosscheck_stress_ng")
    if cc and cc.get("stress_ng_per_s"):
        lines += ["", "Cross-check with stress-ng (vfork+_exit+wait, one process pinned to CPU 0, creations/s): "
                  f"stress-ng {_fmt(cc.get('stress_ng_per_s'))}, forksim's load generator "
                  f"{_fmt(cc.get('loadgen_per_s'))}, the model (1 CPU) {_fmt(cc.get('model_per_s'))}."]
    fc = report.get("crosscheck_stress_ng_fork")
    if fc and fc.get("stress_ng_per_s") and fc.get("model_per_s"):
        st = fc["stressor"]
        lines += ["", "A benchmark of its own, stress-ng --fork 1 (unpinned; per bogo-op the stressor forks, "
                  "setpgid()s and kill()s the child and reaps it), against the model given what /proc says of the "
                  f"stressor, never its result: {st['rss_bytes'] / 1024:.0f} KiB RssAnon, {st['vmas']} VMAs "
                  f"({st['anon_vmas']} with anonymous pages), per op {st['minflt_per_op']:.1f} minor faults "
                  f"(write_fraction), {st['child_minflt_per_op']:.1f} in the child (cow_write_fraction) and "
                  f"{st['user_us_per_op']:.1f} us of user CPU time (parent_work): stress-ng "
                  f"{_fmt(fc['stress_ng_per_s'])} bogo ops/s, the model {_fmt(fc['model_per_s'])} creations/s "
                  f"({_fmt_err(fc['model_per_s'] / fc['stress_ng_per_s'] - 1.0)})."]
    apps = report.get("apps") or {}
    if apps.get("rows"):
        lines += ["", f"A real application, timed by itself ({apps.get('app')}: BGSAVE every "
                  f"{apps['rows'][0]['interval_s']:g} s, `latest_fork_usec` of INFO stats; the model gets the RSS, "
                  "VMAs, threads and scatter (the physical layout of its pages) from /proc and the interval):", "",
                  "| scenario | RSS (MiB) | VMAs | scatter | forks | fork() p50 (us) meas | pred | err |",
                  "|---|---|---|---|---|---|---|---|"]
        for a in apps["rows"]:
            scatter = a["image"].get("scatter")
            lines.append(f"| {a['scenario']} | {a['image']['rss_bytes'] / 1024**2:.0f} | {a['image']['vmas']} | "
                         f"{'-' if scatter is None else f'{scatter:.2f}'} | "
                         f"{len(a['fork_usec'])} | {_fmt(a['measured_p50_us'])} | {_fmt(a['predicted_p50_us'])} | "
                         f"{_fmt_err(a['rel_error'])} |")
    elif apps.get("skipped"):
        lines += ["", f"Real application: skipped ({apps['skipped']})."]
    return lines


def _stated_rows(rows: list[dict[str, Any]]) -> list[str]:
    """The cold rows predicted twice: with the parents' layout as read from /proc/PID/pagemap (the main table),
    and as a user states the image (RSS, VMAs and the gap; the layout from the profile's fresh images)."""
    cold = [r for r in rows if r.get("predicted_stated")]
    if not cold:
        return []
    lines = ["", "Cold forks as a user states them: the image's RSS and VMAs and the gap between forks only (the model "
             "takes the layout of calibrate's freshly touched images, the profile's fresh_image_scatter and "
             "fresh_image_spread at the image's size), beside the "
             "main table's prediction, which was given the parents' layout as read at the run's start:", "",
             "| scenario | fork() p50 (us) meas | pred, layout read | err | pred, image and gap only | err |",
             "|---|---|---|---|---|---|"]
    for r in cold:
        st = r["predicted_stated"]
        lines.append(f"| {r['scenario']} | {_fmt(r['measured'].get('fork_p50'))} | {_fmt(r['predicted'].get('fork_p50'))} | "
                     f"{_fmt_err(r['rel_error'].get('fork_p50'))} | {_fmt(st['fork_p50'])} | {_fmt_err(st['rel_error'])} |")
    errs = [abs(r["predicted_stated"]["rel_error"]) for r in cold if r["predicted_stated"]["rel_error"] is not None]
    if errs:
        lines += ["", f"Image and gap only: largest error {max(errs) * 100:.0f}% over {len(errs)} cold rows."]
    return lines


def _drift_line(c: dict[str, Any] | None, cold: dict[str, Any] | None = None,
                wake: dict[str, Any] | None = None) -> list[str]:
    """What the canaries said about the host's drift over the run."""
    if not c:
        return []
    lines = [f"Host drift: before each row (once before an interleaved group) a canary ran, one pinned parent "
             f"forking a 64 MiB image back to back for 0.3 s. {_canary_range(c)} Rows whose canary was off by more "
             f"than {DRIFT_NOTE * 100:.0f}% are marked: the host had moved that far from the profile, and a row's "
             "error that follows its canary's is that drift, not the model's."]
    if cold:
        lines.append(f"Before each row with a gap (think time, a child's life, a co-runner's sweep) a cold canary "
                     f"ran too, the same parent asleep 10 ms before each fork for 0.5 s: how cold a gap leaves an "
                     f"image moves with the host's other tenants on its own. {_canary_range(cold)} Rows whose cold "
                     f"canary was off by more than {DRIFT_NOTE * 100:.0f}% are marked alike.")
    if wake:
        lines.append(f"Before and after each row with a think time a wake canary ran, pooled: cross-CPU wake-ups of "
                     f"a vCPU halted {WAKE_IDLE_US / 1000:g} ms (the calibration's schedbench wake), whose latency falls "
                     f"in one of two modes the host picks. {_canary_range(wake, 'wake_p50_us', 'Its wake-up latency p50')} "
                     f"Rows whose wake canary was off by more than {DRIFT_NOTE * 100:.0f}% are marked alike.")
    return lines


def _canary_range(c: dict[str, Any], value: str = "fork_p50_us", what: str = "Its fork() p50") -> str:
    return (f"{what} measured {_fmt(c[f'measured_{value}_min'])}-{_fmt(c[f'measured_{value}_max'])} "
            f"us over the run, against the model's {_fmt(c[f'predicted_{value}'])} us: error "
            f"{_fmt_err(c['rel_error_min'])} to {_fmt_err(c['rel_error_max'])} (median "
            f"{_fmt_err(c['rel_error_median'])}, {c['n']} rows).")


def render_markdown(report: dict[str, Any]) -> str:
    """The validation table (markdown): measured, predicted and error per metric, then the medians."""
    rows, summ, prov = report["rows"], report["summary"], report.get("provenance", {})
    lines = ["# forksim validation: measured vs predicted", ""]
    if prov:
        lines.append(f"Machine: {prov.get('cpu_model', '?')}, {prov.get('cpus', '?')} CPUs, "
                     f"Linux {prov.get('kernel', '?')}; profile `{prov.get('profile', '?')}`; "
                     f"{prov.get('date', '')}; {'quick' if report.get('quick') else 'full'} set.")
        lines.append("")
    lines += _table(rows, summ)
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
    lines += _drift_line(summ.get("canary"), summ.get("cold_canary"), summ.get("wake_canary"))
    stolen = [r["scenario"] for r in rows if "(host steal:" in _row_name(r)]
    if stolen:
        lines.append(f"Host steal: rows measured while the host held the vCPUs for more than {STEAL_NOTE * 100:.0f}% "
                     f"of their time (/proc/stat steal) are marked ({len(stolen)}): a short unpinned loop waits for "
                     "the host at every halt exit, which the profile, measured in another host state, does not hold.")
    lines += _other_comparisons(report)
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
        *([f"Predictions re-simulated on {re_['date']} by `{re_['by']}` with the profile below, against the "
           f"measurements of that validate run ({re_['measured']}): {re_['why']}"]
          if (re_ := prov.get("repredicted")) else []),
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
    by_mechanism: dict[str, list[str]] = {}  # each mechanism once, after every row it is believed to explain
    for row in report["rows"]:
        cols = _above_target(row)
        if cols or row.get("error"):
            what = ", ".join(cols) if cols else "not compared"
            by_mechanism.setdefault(mechanism_for(row["scenario"]), []).append(f"**{row['scenario']}** ({what})")
    lines += [f"- {'; '.join(named)}: {text}." for text, named in by_mechanism.items()]
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


