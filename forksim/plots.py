"""Figures for runs and sweeps (seaborn on matplotlib), shared by `forksim report` and the notebooks.

Every function draws on the `ax` it is given (or a new one) and returns the axes; every axis names
its unit. Inputs are the tidy objects the rest of forksim produces: the per-creation records frame
(`RunResult.records`, forks.parquet), a summary dict (summary.json), and a points frame (one row
per sweep point, see `forksim.report.points_frame`).
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import seaborn as sns

__all__ = [
    "LATENCY_LABELS",
    "STAGE_LABELS",
    "set_theme",
    "new_axes",
    "measured",
    "latency_ecdf",
    "stage_breakdown",
    "latency_percentiles",
    "lock_waits",
    "sweep_throughput",
    "sweep_latency",
    "throughput_latency",
]

LATENCY_LABELS = {
    "fork_latency_us": "creating call (fork() entry to return)",
    "child_start_latency_us": "child start (entry to child's first instruction)",
    "roundtrip_latency_us": "round trip (entry to child reaped)",
    "response_latency_us": "response (arrival to child reaped)",
}
STAGE_LABELS = {
    "copy_process_setup": "copy_process setup\n(task struct, stack, creds .. dup_mm)",
    "mmap_lock_wait": "mmap_lock wait",
    "dup_mmap": "dup_mmap\n(VMAs + page tables)",
    "copy_process_tail": "copy_process tail\n(alloc_pid, tasklist_lock, wake_up_new_task)",
    "after_wake_up_new_task": "after wake_up_new_task\n(IPI, vfork wait)",
}


def _plain_log(ax, axis: str = "y") -> None:
    """Log-scale tick labels as plain numbers (2000, not 2x10^3)."""
    from matplotlib.ticker import FuncFormatter

    fmt = FuncFormatter(lambda v, _pos: f"{v:,.0f}" if v >= 1 else f"{v:g}")
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_formatter(fmt)
    target.set_minor_formatter(FuncFormatter(lambda v, _pos: ""))


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
        data = df[[col, hue]].dropna()
        sns.ecdfplot(data=data, x=col, hue=hue, ax=ax)
        ax.set_xlabel(f"{LATENCY_LABELS.get(col, col)} (µs)")
        values = data[col]
    else:
        cols = [c for c in columns if c in df]
        long = df[cols].melt(var_name="latency", value_name="us").dropna()
        long["latency"] = long["latency"].map(lambda c: LATENCY_LABELS.get(c, c))
        sns.ecdfplot(data=long, x="us", hue="latency", ax=ax)
        ax.set_xlabel("latency (µs)")
        values = long["us"]
    positive = values[values > 0]
    if log is None:
        log = len(positive) > 0 and positive.max() / max(positive.min(), 1e-9) > 50
    if log and len(positive):
        ax.set_xscale("log")
    ax.set_ylabel("fraction of creations (ECDF)")
    ax.set_ylim(0, 1.01)
    for q in (0.5, 0.99):
        ax.axhline(q, color="0.6", lw=0.8, ls=":")
        ax.annotate(f"p{int(q * 100)}", (1.0, q), xycoords=("axes fraction", "data"), xytext=(3, 0),
                    textcoords="offset points", va="center", fontsize=8, color="0.4")
    if title:
        ax.set_title(title)
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
    if len(positive) and positive.max() / positive.min() > 100:
        ax.set_xscale("log")
        ax.set_xlim(positive.min() / 3, positive.max() * 8)
    else:
        ax.set_xlim(0, max(1e-9, df["us"].max()) * 1.35)
    for i, v in enumerate(df["us"]):
        share = f" ({100 * v / total:.0f}%)" if total > 0 else ""
        ax.annotate(f"{v:,.1f} µs{share}", (max(v, ax.get_xlim()[0]), i), xytext=(4, 0),
                    textcoords="offset points", va="center", fontsize=8)
    ax.set_xlabel("mean time per creation inside the call (µs)")
    ax.set_ylabel("")
    ax.set_title(title or "where the creating call's time goes")
    return ax


def latency_percentiles(summary: dict[str, Any], *, ax=None, title: str | None = None):
    """p50 / p90 / p99 / p99.9 of each latency, with the 95% CI across replications."""
    ax = new_axes(ax)
    rows = []
    for key, label in LATENCY_LABELS.items():
        s = summary.get(key)
        if not s:
            continue
        for p in ("p50", "p90", "p99", "p999"):
            v = s.get(p)
            if v is None:
                continue
            ci = (s.get("ci95") or {}).get(p)
            rows.append((label.split(" (")[0], p.replace("p999", "p99.9"), v,
                         ci[0] if ci else v, ci[1] if ci else v))
    if not rows:
        ax.text(0.5, 0.5, "no latencies", ha="center", va="center", transform=ax.transAxes)
        return ax
    df = pd.DataFrame(rows, columns=["latency", "percentile", "us", "lo", "hi"])
    order = list(dict.fromkeys(df["percentile"]))
    metrics = list(dict.fromkeys(df["latency"]))
    palette = sns.color_palette(n_colors=len(metrics))
    width = 0.8 / len(metrics)
    for j, m in enumerate(metrics):
        sub = df[df["latency"] == m].set_index("percentile").reindex(order).dropna()
        x = np.array([order.index(p) for p in sub.index]) + (j - (len(metrics) - 1) / 2) * width
        ax.errorbar(x, sub["us"], yerr=[sub["us"] - sub["lo"], sub["hi"] - sub["us"]], fmt="o", capsize=3,
                    color=palette[j], label=m)
    ax.set_xticks(range(len(order)), order)
    ax.set_yscale("log")
    _plain_log(ax)
    ax.set_xlabel("percentile")
    ax.set_ylabel("latency (µs, log scale; bars: 95% CI)")
    ax.legend(fontsize=8)
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
                rows.append(("mmap_lock stall\n(faulting threads)", stat, stall[stat]))
    df = pd.DataFrame(rows, columns=["lock", "statistic", "us"])
    if df.empty:
        ax.text(0.5, 0.5, "no lock data", ha="center", va="center", transform=ax.transAxes)
        return ax
    sns.barplot(data=df, x="lock", y="us", hue="statistic", ax=ax)
    if (df["us"] > 0).any():
        top = df["us"].max()
        ax.set_ylim(0, top * 1.2)
    else:
        ax.set_ylim(0, 1)
        ax.text(0.5, 0.6, "no lock waited on", ha="center", transform=ax.transAxes, color="0.4")
    ax.set_xlabel("")
    ax.set_ylabel("wait per acquisition (µs)")
    ax.set_title(title or "lock waits")
    return ax


# ------------------------------------------------------------------ sweeps


def _x(points: pd.DataFrame, key: str) -> tuple[np.ndarray, list[str] | None]:
    vals = points[key]
    numeric = pd.api.types.is_numeric_dtype(vals) and not pd.api.types.is_bool_dtype(vals)
    if numeric:
        return vals.to_numpy(dtype=float), None
    labels = [str(v) for v in dict.fromkeys(vals)]
    return np.array([labels.index(str(v)) for v in vals], dtype=float), labels


def _groups(points: pd.DataFrame, by: Iterable[str]) -> list[tuple[str, pd.DataFrame]]:
    by = [b for b in by if b in points]
    if not by:
        return [("", points)]
    out = []
    for values, sub in points.groupby(by, sort=True, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        name = str(values[0]) if len(by) == 1 else ", ".join(f"{k}={v}" for k, v in zip(by, values))
        out.append((name, sub))
    return out


def _series(ax, points: pd.DataFrame, key: str, y: str, lo: str, hi: str, by: Sequence[str], label: str,
            color=None, marker="o", ls="-"):
    labels = None
    for j, (name, sub) in enumerate(_groups(points, by)):
        sub = sub.sort_values(key)
        x, labels = _x(sub, key) if labels is None else (np.array([labels.index(str(v)) for v in sub[key]]), labels)
        yv = sub[y].to_numpy(dtype=float)
        c = color if color is not None else sns.color_palette()[j % 10]
        ax.plot(x, yv, marker=marker, ls=ls, color=c, label=f"{label} {name}".strip())
        if lo in sub and hi in sub:
            lov, hiv = sub[lo].to_numpy(dtype=float), sub[hi].to_numpy(dtype=float)
            ok = np.isfinite(lov) & np.isfinite(hiv)
            if ok.any():
                floor = np.nanmin(yv[yv > 0]) / 10 if (yv > 0).any() else 0.0
                ax.fill_between(x[ok], np.maximum(lov[ok], floor), hiv[ok], color=c, alpha=0.15, lw=0)
    if labels is not None:
        ax.set_xticks(range(len(labels)), labels)
    elif pd.api.types.is_integer_dtype(points[key]):
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return ax


def sweep_throughput(points: pd.DataFrame, key: str, *, by: Sequence[str] = (), ax=None, title: str | None = None):
    """Completed creations per second against the swept key, with the 95% CI band."""
    ax = new_axes(ax)
    _series(ax, points, key, "throughput_per_s", "throughput_lo", "throughput_hi", by, "throughput")
    ax.set_xlabel(key)
    ax.set_ylabel("throughput (creations/s; band: 95% CI)")
    ax.set_ylim(bottom=0)
    if by:
        ax.legend(fontsize=8)
    ax.set_title(title or f"throughput against {key}")
    return ax


def sweep_latency(points: pd.DataFrame, key: str, *, metric: str = "fork_latency_us",
                  percentiles: Sequence[str] = ("p50", "p99"), by: Sequence[str] = (), ax=None,
                  log: bool = True, title: str | None = None):
    """A latency's percentiles against the swept key, with 95% CI bands."""
    ax = new_axes(ax)
    styles = {"p50": ("o", "-"), "p90": ("^", "--"), "p99": ("s", "-."), "p999": ("D", ":")}
    groups = _groups(points, by)
    for j, (name, sub) in enumerate(groups):
        for p in percentiles:
            col = f"{metric}.{p}"
            if col not in sub:
                continue
            m, ls = styles.get(p, ("o", "-"))
            _series(ax, sub, key, col, f"{col}.lo", f"{col}.hi", (), f"{p} {name}".strip(),
                    color=sns.color_palette()[j % 10] if len(groups) > 1 else None, marker=m, ls=ls)
    if len(groups) == 1:  # colour by percentile instead
        for line, c in zip(ax.get_lines(), sns.color_palette()):
            line.set_color(c)
        for coll, c in zip(ax.collections, sns.color_palette()):
            coll.set_color(c)
    ax.set_xlabel(key)
    ax.set_ylabel(f"{LATENCY_LABELS.get(metric, metric).split(' (')[0]} latency (µs; band: 95% CI)")
    if log:
        ax.set_yscale("log")
        _plain_log(ax)
    ax.legend(fontsize=8)
    ax.set_title(title or f"{metric} against {key}")
    return ax


def throughput_latency(points: pd.DataFrame, *, metric: str = "fork_latency_us", percentile: str = "p99",
                       key: str | None = None, by: Sequence[str] = (), slo_us: float | None = None,
                       ax=None, title: str | None = None):
    """The capacity curve: a latency percentile against throughput, one point per sweep point
    (labelled with the swept value), with both 95% CIs as error bars; an optional SLO line."""
    ax = new_axes(ax)
    col = f"{metric}.{percentile}"
    for j, (name, sub) in enumerate(_groups(points, by)):
        sub = sub.sort_values(key if key is not None and key in sub else "throughput_per_s")
        x, y = sub["throughput_per_s"].to_numpy(float), sub[col].to_numpy(float)
        xerr = np.vstack([x - sub.get("throughput_lo", sub["throughput_per_s"]).to_numpy(float),
                          sub.get("throughput_hi", sub["throughput_per_s"]).to_numpy(float) - x])
        yerr = np.vstack([y - sub.get(f"{col}.lo", sub[col]).to_numpy(float),
                          sub.get(f"{col}.hi", sub[col]).to_numpy(float) - y])
        c = sns.color_palette()[j % 10]
        ax.errorbar(x, y, xerr=np.nan_to_num(xerr), yerr=np.nan_to_num(yerr), marker="o", color=c, capsize=3,
                    label=name or None)
        if key is not None and key in sub:
            for xi, yi, v in zip(x, y, sub[key]):
                ax.annotate(f"{v}", (xi, yi), xytext=(4, 4), textcoords="offset points", fontsize=8, color=c)
    if slo_us is not None:
        ax.axhline(slo_us, color="crimson", ls="--", lw=1)
        ax.annotate(f"SLO {percentile} ≤ {slo_us:g} µs", (0.01, slo_us), xycoords=("axes fraction", "data"),
                    xytext=(0, 3), textcoords="offset points", color="crimson", fontsize=8)
    ax.set_xlabel("throughput (creations/s)")
    ax.set_ylabel(f"{metric.removesuffix('_us')} {percentile} (µs)")
    ax.set_yscale("log")
    _plain_log(ax)
    if by:
        ax.legend(fontsize=8)
    ax.set_title(title or f"{percentile} latency against throughput" + (f" (labels: {key})" if key else ""))
    return ax
