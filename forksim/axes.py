"""Axes in units for forksim's figures: times in µs on log axes with unit ticks ("100 µs", "1 ms"),
sizes in binary units ("64 MiB") on log-2 axes ticked at the swept values, counts with thousands
separators, legends placed off the data, and error bars drawn only for intervals that contain their
estimate. Used by forksim.plots."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, MaxNLocator, NullFormatter

__all__ = ["SIZE_KEYS", "TIME_KEYS", "RATE_KEYS", "COUNT_UNITS", "time_text", "size_text", "time_axis", "plain_log",
           "thousands", "legend_place", "legend", "ci_errors", "leaf", "x_values", "key_axis"]

# what a swept key's values are (the resolved config's units: bytes, microseconds, per second)
SIZE_KEYS = {"rss", "other_work"}
TIME_KEYS = {"duration", "warmup", "think_time", "parent_work", "lifetime", "exec_lifetime", "tick", "slice",
             "idle_wake", "context_switch", "migration", "service", "interval", "cron", "first_snapshot"}
RATE_KEYS = {"rate", "fault_rate"}
COUNT_UNITS = {"cpus": "CPUs", "parents": "processes", "threads": "threads", "vmas": "mappings",
                "anon_vmas": "mappings", "cpu_hogs": "tasks"}


# ------------------------------------------------------------------ units on axes


def time_text(us: float) -> str:
    """A time in µs as a tick label: '500 µs', '2 ms', '1.5 s'."""
    if us == 0 or not math.isfinite(us):
        return "0" if us == 0 else ""
    a = abs(us)
    for unit, f in (("s", 1e6), ("ms", 1e3), ("µs", 1.0)):
        if a >= f:
            return f"{us / f:.3g} {unit}"
    return f"{us * 1e3:.3g} ns"


def size_text(nbytes: float) -> str:
    """A size in bytes as a tick label: '64 MiB', '1 GiB'."""
    if nbytes == 0 or not math.isfinite(nbytes):
        return "0" if nbytes == 0 else ""
    for unit, f in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(nbytes) >= f:
            return f"{nbytes / f:.3g} {unit}"
    return f"{nbytes:.3g} B"


def time_axis(ax, axis: str = "y", log: bool = True) -> None:
    """A time axis in µs: log scale, ticks at 1-2-5 (or decades over a wide range) labelled in units."""
    target = ax.yaxis if axis == "y" else ax.xaxis
    if log:
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
        lo, hi = ax.get_ylim() if axis == "y" else ax.get_xlim()
        decades = math.log10(max(hi, 1e-12) / max(lo, 1e-12))
        target.set_major_locator(LogLocator(base=10, subs=(1.0,) if decades > 3 else (1.0, 2.0, 5.0)))
        target.set_minor_formatter(NullFormatter())
    target.set_major_formatter(FuncFormatter(lambda v, _pos: time_text(v)))


def plain_log(ax, axis: str = "y") -> None:
    """Log-scale count labels as plain numbers (2,000, not 2x10^3)."""
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
    target.set_minor_formatter(NullFormatter())


def thousands(ax, axis: str = "y") -> None:
    """Plain counts with thousands separators (60,000, not 60000 or 6e4)."""
    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}" if abs(v) >= 10 or v == int(v) else f"{v:g}"))


def legend_place(labels: Sequence[str]) -> dict[str, Any]:
    """Beside the axes, or below them when the labels are long (a legend never covers the data)."""
    if max((len(str(t)) for t in labels), default=0) > 32:
        return {"loc": "upper center", "bbox_to_anchor": (0.5, -0.16), "ncol": 1 if len(labels) < 4 else 2}
    return {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0)}


def legend(ax, title: str | None = None) -> None:
    """The legend off the data (see legend_place)."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, borderaxespad=0.0, fontsize=8, title=title, title_fontsize=8, frameon=False,
                  **legend_place(labels))


def ci_errors(est: Sequence[float], lo: Sequence[float], hi: Sequence[float]) -> np.ndarray:
    """Error-bar lengths (2 x n) for intervals [lo, hi] around `est`; a bound that is missing, or an
    interval that does not contain its estimate (beyond rounding), draws no bar rather than a wrong one."""
    est, lo, hi = (np.asarray(v, dtype=float) for v in (est, lo, hi))
    tol = 1e-6 * np.maximum(np.abs(est), 1.0)
    ok = np.isfinite(est) & np.isfinite(lo) & np.isfinite(hi) & (lo <= est + tol) & (hi >= est - tol)
    return np.vstack([np.where(ok, np.maximum(est - lo, 0.0), 0.0), np.where(ok, np.maximum(hi - est, 0.0), 0.0)])


def leaf(key: str) -> str:
    return key.split(",")[0].rsplit(".", 1)[-1]


def x_values(points: pd.DataFrame, key: str) -> tuple[np.ndarray, list[str] | None]:
    vals = points[key]
    numeric = pd.api.types.is_numeric_dtype(vals) and not pd.api.types.is_bool_dtype(vals)
    if numeric:
        return vals.to_numpy(dtype=float), None
    labels = [str(v) for v in dict.fromkeys(vals)]
    return np.array([labels.index(str(v)) for v in vals], dtype=float), labels


def key_axis(ax, points: pd.DataFrame, key: str, label: str | None = None) -> None:
    """The swept key on x: sizes on a log-2 axis ticked at the swept values in binary units, times in
    units, counts spanning a factor of 8 or more on a log-2 axis, text values as categories."""
    x, labels = x_values(points, key)
    name = leaf(key)
    unit = ""
    if labels is None and len(x):
        values = np.unique(x[np.isfinite(x)])
        positive = values[values > 0]
        wide = len(positive) >= 3 and positive.max() / positive.min() >= 8
        if (name in SIZE_KEYS or wide) and len(positive):
            if (values <= 0).any():  # a zero among sizes: linear up to the smallest positive value
                ax.set_xscale("symlog", base=2, linthresh=positive.min(), linscale=0.6)
            else:
                ax.set_xscale("log", base=2)
            unit = "log scale"
        fmt = size_text if name in SIZE_KEYS else time_text if name in TIME_KEYS else (lambda v: f"{v:g}")
        if len(values) <= 12:
            ax.xaxis.set_major_locator(FixedLocator(values))
        elif pd.api.types.is_integer_dtype(points[key]):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: fmt(v)))
        ax.xaxis.set_minor_formatter(NullFormatter())
        what = "per second" if name in RATE_KEYS else COUNT_UNITS.get(name, "")
        unit = ", ".join(u for u in (what, unit) if u)
    else:
        ax.set_xticks(range(len(labels or [])), labels or [])
    ax.set_xlabel(label or (key + (f" ({unit})" if unit else "")))
