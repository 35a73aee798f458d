"""Figures for runs and sweeps (seaborn on matplotlib), shared by `forksim report` and the notebooks.

Every function draws on the `ax` it is given (or a new one) and returns the axes; every axis names
its unit. Inputs are the tidy objects the rest of forksim produces: the per-creation records frame
(`RunResult.records`, forks.parquet), the per-request table of a server workload (requests.parquet),
a summary dict (summary.json), and a points frame (one row per sweep point, see
`forksim.report.points_frame`).

House rules: times on log axes with unit ticks ("100 µs", "1 ms", "10 ms"), sizes in binary units
("64 MiB", "1 GiB") on a log-2 axis ticked at the swept values, legends beside the axes (never on the
data), 95% CI bands faint and clipped to the range of the lines, a CI drawn only where it contains its
estimate (`ci_errors`).
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from .axes import (SIZE_KEYS, TIME_KEYS, ci_errors, key_axis, leaf, legend, legend_place, plain_log, size_text,
                   thousands, time_axis, time_text, x_values)
from .kernel.stages import CALL_PARTS

__all__ = [
    "LATENCY_LABELS",
    "STAGE_LABELS",
    "set_theme",
    "new_axes",
    "measured",
    "time_text",
    "size_text",
    "time_axis",
    "ci_errors",
    "key_axis",
    "latency_ecdf",
    "request_ecdf",
    "stage_breakdown",
    "latency_percentiles",
    "lock_waits",
    "sweep_lines",
    "sweep_throughput",
    "sweep_latency",
    "throughput_latency",
]

LATENCY_LABELS = {
    "fork_latency_us": "creating call (fork() entry to return)",
    "child_start_latency_us": "child start (entry to child's first instruction)",
    "roundtrip_latency_us": "round trip (entry to child reaped)",
    "response_latency_us": "response (arrival to child reaped)",
    "request_latency_us": "request, all (arrival to end of service)",
    "request_latency_in_snapshot_us": "request arriving in snapshot (fork entry to child exit)",
    "request_latency_in_fork_us": "request arriving in fork() (entry to return)",
}
# The creating call's parts as summary.json's `stage_us` names them (the table: kernel/stages.py).
STAGE_LABELS = {name: part.label for name, part in CALL_PARTS.items()}

def set_theme() -> None:
    """The house style: seaborn's whitegrid, colour-blind palette."""
    sns.set_theme(style="whitegrid", palette="colorblind", context="notebook")


def new_axes(ax=None, figsize=(7.0, 4.2)):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def measured(records: pd.DataFrame, warmup_us: float | None) -> pd.DataFrame:
    """The creations that count (started after the warm-up), as summary.json counts them."""
    if "warmup" in records:  # the records mark their warm-up rows (forksim.metrics.records_frame)
        return records[~records["warmup"].astype(bool)]
    if warmup_us is None or "start" not in records:
        return records
    return records[records["start"] >= warmup_us]


# ------------------------------------------------------------------ runs


def _ecdf(ax, long: pd.DataFrame, x: str, hue: str, log: bool | None) -> None:
    sns.ecdfplot(data=long, x=x, hue=hue, ax=ax)
    positive = long[x][long[x] > 0]
    if log is None:
        log = len(positive) > 0 and positive.max() / max(positive.min(), 1e-9) > 50
    if log and len(positive):
        ax.set_xlim(positive.min() / 1.5, positive.max() * 1.5)
    time_axis(ax, "x", log=bool(log and len(positive)))
    ax.set_ylim(0, 1.01)
    for q in (0.5, 0.99):
        ax.axhline(q, color="0.6", lw=0.8, ls=":")
        ax.annotate(f"p{int(q * 100)}", (1.0, q), xycoords=("axes fraction", "data"), xytext=(3, 0),
                    textcoords="offset points", va="center", fontsize=8, color="0.4")
    if ax.get_legend() is not None:
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        place = legend_place(labels)
        if place["loc"] == "upper left":
            place["bbox_to_anchor"] = (1.04, 1.0)  # room for the p50/p99 marks
        sns.move_legend(ax, frameon=False, fontsize=8, title=None, **place)


def latency_ecdf(
    records: pd.DataFrame,
    *,
    columns: Sequence[str] = ("fork_latency_us", "child_start_latency_us", "roundtrip_latency_us"),
    warmup_us: float | None = None,
    hue: str | None = None,
    log: bool | None = None,
    ax=None,
    title: str | None = None,
):
    """ECDF of per-creation latencies (µs). `columns`: which latencies, one line each; or, with
    `hue` (a records column such as 'label'), one latency column split by that column."""
    ax = new_axes(ax)
    df = measured(records, warmup_us)
    if hue is not None:
        col = columns[0]
        _ecdf(ax, df[[col, hue]].dropna(), col, hue, log)
        ax.set_xlabel(f"{LATENCY_LABELS.get(col, col)} (log scale)" if ax.get_xscale() == "log"
                      else LATENCY_LABELS.get(col, col))
    else:
        cols = [c for c in columns if c in df]
        long = df[cols].melt(var_name="latency", value_name="us").dropna()
        long["latency"] = long["latency"].map(lambda c: LATENCY_LABELS.get(c, c))
        _ecdf(ax, long, "us", "latency", log)
        ax.set_xlabel("latency per creation" + (" (log scale)" if ax.get_xscale() == "log" else ""))
    ax.set_ylabel("fraction of creations (ECDF)")
    if title:
        ax.set_title(title)
    return ax


def request_ecdf(requests: pd.DataFrame, *, ax=None, title: str | None = None):
    """A server workload's request latency (arrival to end of service) as ECDFs: every request, those
    arriving during a snapshot (fork entry to child exit) and those arriving inside fork()."""
    from .requests import IN_FORK, IN_SNAPSHOT, LATENCY

    ax = new_axes(ax)
    done = requests[requests[LATENCY].notna()]
    parts = [(LATENCY_LABELS["request_latency_us"], done[LATENCY]),
             (LATENCY_LABELS["request_latency_in_snapshot_us"], done.loc[done[IN_SNAPSHOT], LATENCY]),
             (LATENCY_LABELS["request_latency_in_fork_us"], done.loc[done[IN_FORK], LATENCY])]
    long = pd.concat([pd.DataFrame({"us": v.to_numpy(), "requests": f"{name} (n={len(v):,})"})
                      for name, v in parts if len(v)], ignore_index=True) if len(done) else None
    if long is None:
        ax.text(0.5, 0.5, "no finished request", ha="center", va="center", transform=ax.transAxes)
        return ax
    _ecdf(ax, long, "us", "requests", True)
    ax.set_xlabel("request latency, arrival to end of service (log scale)")
    ax.set_ylabel("fraction of requests (ECDF)")
    ax.set_title(title or "request latency")
    return ax


def stage_breakdown(summary: dict[str, Any], *, ax=None, title: str | None = None):
    """Where the parent's time inside the creating call goes: summary['stage_us'] (mean µs per creation)."""
    ax = new_axes(ax)
    stages = summary.get("stage_us") or {}
    df = pd.DataFrame(
        [(STAGE_LABELS.get(k, k), v or 0.0) for k, v in stages.items()], columns=["stage", "us"]
    )
    if df.empty:
        ax.text(0.5, 0.5, "no stage data", ha="center", va="center", transform=ax.transAxes)
        return ax
    sns.barplot(data=df, y="stage", x="us", ax=ax, color=sns.color_palette()[0])
    total = float(df["us"].sum())
    positive = df["us"][df["us"] > 0]
    log = bool(len(positive) and positive.max() / positive.min() > 100)
    if log:
        ax.set_xlim(positive.min() / 3, positive.max() * 8)
    else:
        ax.set_xlim(0, max(1e-9, df["us"].max()) * 1.35)
    time_axis(ax, "x", log=log)
    for i, v in enumerate(df["us"]):
        pct = 100 * v / total if total > 0 else 0.0
        share = "" if total <= 0 else f" ({pct:.0f}%)" if pct >= 1 or v == 0 else " (<1%)"
        ax.annotate(f"{time_text(v)}{share}", (max(v, ax.get_xlim()[0]), i), xytext=(4, 0),
                    textcoords="offset points", va="center", fontsize=8)
    ax.set_xlabel("mean time per creation inside the call" + (" (log scale)" if log else ""))
    ax.set_ylabel("")
    ax.set_title(title or "where the creating call's time goes")
    return ax


def latency_percentiles(summary: dict[str, Any], *, ax=None, title: str | None = None):
    """p50 / p90 / p99 / p99.9 of each latency in the summary, with the 95% CI across replications."""
    ax = new_axes(ax)
    rows = []
    server = isinstance(summary.get("request_latency_us"), dict)
    for key, label in LATENCY_LABELS.items():
        s = summary.get(key)
        if not s or (server and key in ("child_start_latency_us", "roundtrip_latency_us")):
            continue  # a server's question is its requests beside the fork stall
        for p in ("p50", "p90", "p99", "p999"):
            v = s.get(p)
            if v is None:
                continue
            ci = (s.get("ci95") or {}).get(p) or [None, None]
            rows.append((label, p.replace("p999", "p99.9"), v, ci[0], ci[1]))
    if not rows:
        ax.text(0.5, 0.5, "no latencies", ha="center", va="center", transform=ax.transAxes)
        return ax
    df = pd.DataFrame(rows, columns=["latency", "percentile", "us", "lo", "hi"]).astype({"lo": float, "hi": float})
    order = list(dict.fromkeys(df["percentile"]))
    metrics = list(dict.fromkeys(df["latency"]))
    palette = sns.color_palette(n_colors=len(metrics))
    width = 0.8 / len(metrics)
    for j, m in enumerate(metrics):
        sub = df[df["latency"] == m].set_index("percentile").reindex(order).dropna(subset=["us"])
        x = np.array([order.index(p) for p in sub.index]) + (j - (len(metrics) - 1) / 2) * width
        ax.errorbar(x, sub["us"], yerr=ci_errors(sub["us"], sub["lo"], sub["hi"]), fmt="o", capsize=3,
                    color=palette[j], label=m)
    ax.set_xticks(range(len(order)), order)
    positive = df["us"][df["us"] > 0]
    if len(positive):
        ax.set_ylim(positive.min() / 2, positive.max() * 2)
    time_axis(ax, "y")
    ax.set_xlabel("percentile")
    ax.set_ylabel("latency (log scale; bars: 95% CI)")
    legend(ax)
    ax.set_title(title or "latency percentiles across replications")
    return ax


def lock_waits(summary: dict[str, Any], *, ax=None, title: str | None = None):
    """Mean and p99 wait per acquisition of each shared lock (µs), and the faulting threads' stalls."""
    ax = new_axes(ax)
    rows = []
    for name, s in (summary.get("lock_wait_us") or {}).items():
        for stat in ("mean", "p99", "max"):
            if s.get(stat) is not None:
                rows.append((name, stat, s[stat]))
    stall = summary.get("mmap_stall_us") or {}
    if stall.get("count"):
        for stat in ("p50", "p99", "max"):
            if stall.get(stat) is not None:
                rows.append((f"mmap_lock stall\n(faulting threads, n={stall['count']:,})", stat, stall[stat]))
    df = pd.DataFrame(rows, columns=["lock", "statistic", "us"])
    if df.empty:
        ax.text(0.5, 0.5, "no lock data", ha="center", va="center", transform=ax.transAxes)
        return ax
    sns.barplot(data=df, x="lock", y="us", hue="statistic", ax=ax)
    if (df["us"] > 0).any():
        ax.set_ylim(0, df["us"].max() * 1.2)
    else:
        ax.set_ylim(0, 1)
        ax.text(0.5, 0.6, "no lock waited on", ha="center", transform=ax.transAxes, color="0.4")
    time_axis(ax, "y", log=False)
    ax.set_xlabel("")
    ax.set_ylabel("wait per acquisition")
    legend(ax, "statistic")
    ax.set_title(title or "lock waits")
    return ax


# ------------------------------------------------------------------ sweeps


def _groups(points: pd.DataFrame, by: Iterable[str]) -> list[tuple[str, pd.DataFrame]]:
    by = [b for b in by if b in points]
    if not by:
        return [("", points)]
    out = []
    for values, sub in points.groupby(by, sort=True, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        text = [size_text(v) if leaf(k) in SIZE_KEYS and isinstance(v, (int, float)) else str(v)
                for k, v in zip(by, values)]
        name = text[0] if len(by) == 1 else ", ".join(f"{k}={v}" for k, v in zip(by, text))
        out.append((name, sub))
    return out


def sweep_lines(points: pd.DataFrame, key: str, series: Sequence[tuple[str, str]], *, by: Sequence[str] = (),
                ax=None, unit: str = "time", ylabel: str = "", log: bool = True, xlabel: str | None = None,
                title: str | None = None):
    """Columns of a points frame against the swept key: `series` = [(column, label)], each with its
    95% CI where the frame has `column.lo`/`column.hi`: a faint band for up to three lines, thin error
    bars beyond (overlapping bands would bury the lines). One colour per series (per group with `by`,
    the series then told apart by line style). The y range follows the lines, not the intervals.
    `unit`: "time" (µs), "count" or "rate"."""
    ax = new_axes(ax)
    styles = [("o", "-"), ("s", "--"), ("^", "-."), ("D", ":")]
    groups = _groups(points, by)
    ys, banded, bars = [], False, False
    drawn = sum(1 for _, sub in groups for col, _ in series if col in sub and sub[col].notna().any())
    for g, (name, sub) in enumerate(groups):
        sub = sub.sort_values(key)
        x, labels = x_values(sub, key)
        if labels is not None:  # categories in the order of the whole frame
            all_labels = x_values(points, key)[1]
            x = np.array([all_labels.index(str(v)) for v in sub[key]], dtype=float)
        for j, (col, label) in enumerate(series):
            if col not in sub or sub[col].isna().all():
                continue
            y = sub[col].to_numpy(dtype=float)
            c = sns.color_palette()[(g if len(groups) > 1 else j) % 10]
            marker, ls = styles[j % len(styles)] if len(groups) > 1 else ("o", "-")
            text = f"{label}, {name}" if name and len(series) > 1 else (name or label)
            ax.plot(x, y, marker=marker, ls=ls, color=c, label=text, zorder=3)
            if f"{col}.lo" in sub and f"{col}.hi" in sub:
                lo, hi = sub[f"{col}.lo"].to_numpy(dtype=float), sub[f"{col}.hi"].to_numpy(dtype=float)
                err = ci_errors(y, lo, hi)
                ok = np.isfinite(y) & ((err[0] > 0) | (err[1] > 0))
                if ok.any() and drawn <= 3:
                    banded = True
                    ax.fill_between(x[ok], (y - err[0])[ok], (y + err[1])[ok], color=c, alpha=0.1, lw=0, zorder=1)
                elif ok.any():
                    ax.errorbar(x[ok], y[ok], yerr=err[:, ok], fmt="none", ecolor=c, elinewidth=0.8, capsize=2,
                                alpha=0.7, zorder=2)
                    bars = True
            ys.append(y)
    if not ys:
        ax.text(0.5, 0.5, "nothing to draw", ha="center", va="center", transform=ax.transAxes)
        return ax
    y_all = np.concatenate(ys)
    y_all = y_all[np.isfinite(y_all)]
    positive = y_all[y_all > 0]
    if log and len(positive):
        ax.set_ylim(positive.min() / 2.5, positive.max() * 2.5)
    else:
        log = False
        ax.set_ylim(0, max(float(y_all.max()) if len(y_all) else 1.0, 1e-9) * 1.25)
    if unit == "time":
        time_axis(ax, "y", log=log)
    elif log:
        ax.set_yscale("log")
        plain_log(ax)
    else:
        thousands(ax)
    key_axis(ax, points, key, xlabel)
    ax.set_ylabel(ylabel + (" (log scale)" if log else "") + ("\nband: 95% CI" if banded else "\nbars: 95% CI" if bars else ""))
    if len(ys) > 1:
        legend(ax, ", ".join(by) if len(groups) > 1 else None)
    ax.set_title(title or f"{ylabel} against {key}")
    return ax


def sweep_throughput(points: pd.DataFrame, key: str, *, by: Sequence[str] = (), ax=None, title: str | None = None,
                     column: str = "throughput_per_s", what: str = "creations/s"):
    """Completed creations (or `column`) per second against the swept key, with the 95% CI band."""
    lo, hi = ("throughput_lo", "throughput_hi") if column == "throughput_per_s" else (f"{column}.lo", f"{column}.hi")
    pts = points.rename(columns={lo: f"{column}.lo", hi: f"{column}.hi"})
    return sweep_lines(pts, key, [(column, "throughput")], by=by, ax=ax, unit="rate", log=False,
                       ylabel=f"throughput ({what})", title=title or f"throughput against {key}")


def sweep_latency(points: pd.DataFrame, key: str, *, metric: str = "fork_latency_us",
                  percentiles: Sequence[str] = ("p50", "p99"), by: Sequence[str] = (), ax=None,
                  log: bool = True, title: str | None = None):
    """A latency's percentiles against the swept key, with 95% CI bands."""
    name = LATENCY_LABELS.get(metric, metric).split(" (")[0]
    series = [(f"{metric}.{p}", p.replace("p999", "p99.9")) for p in percentiles]
    return sweep_lines(points, key, series, by=by, ax=ax, unit="time", log=log, ylabel=f"{name} latency",
                       title=title or f"{metric} against {key}")


def throughput_latency(points: pd.DataFrame, *, metric: str = "fork_latency_us", percentile: str = "p99",
                       key: str | None = None, by: Sequence[str] = (), slo_us: float | None = None,
                       ax=None, title: str | None = None):
    """The capacity curve: a latency percentile against throughput, one point per sweep point
    (labelled with the swept value), with both 95% CIs as error bars; an optional SLO line."""
    ax = new_axes(ax)
    col = f"{metric}.{percentile}"
    fmt = size_text if key and leaf(key) in SIZE_KEYS else time_text if key and leaf(key) in TIME_KEYS else str
    for j, (name, sub) in enumerate(_groups(points, by)):
        sub = sub.sort_values(key if key is not None and key in sub else "throughput_per_s")
        x, y = sub["throughput_per_s"].to_numpy(float), sub[col].to_numpy(float)
        xerr = ci_errors(x, sub.get("throughput_lo", sub["throughput_per_s"]), sub.get("throughput_hi", sub["throughput_per_s"]))
        yerr = ci_errors(y, sub.get(f"{col}.lo", sub[col]), sub.get(f"{col}.hi", sub[col]))
        c = sns.color_palette()[j % 10]
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, marker="o", color=c, capsize=3, label=name or None)
        if key is not None and key in sub:
            for xi, yi, v in zip(x, y, sub[key]):
                ax.annotate(fmt(v) if isinstance(v, (int, float)) else str(v), (xi, yi), xytext=(4, 4),
                            textcoords="offset points", fontsize=8, color=c)
    if slo_us is not None:
        ax.axhline(slo_us, color="crimson", ls="--", lw=1)
        ax.annotate(f"SLO {percentile} ≤ {time_text(slo_us)}", (0.01, slo_us), xycoords=("axes fraction", "data"),
                    xytext=(0, 3), textcoords="offset points", color="crimson", fontsize=8)
    ax.set_xlabel("throughput (creations/s; bars: 95% CI)")
    thousands(ax, "x")
    ax.set_ylabel(f"{LATENCY_LABELS.get(metric, metric).split(' (')[0]} {percentile} (log scale)")
    time_axis(ax, "y")
    if by:
        legend(ax, ", ".join(by))
    ax.set_title(title or f"{percentile} latency against throughput" + (f" (labels: {key})" if key else ""))
    return ax
