"""`forksim report DIR`: figures (PNG) and a short markdown summary of a run or a sweep directory.

A run directory (what `forksim run --out DIR` writes): summary.json, forks.parquet or forks.csv,
config.resolved.toml (a server workload: requests.parquet too). The report draws the latency ECDFs
(a server: its request latency overall, arriving in a snapshot, arriving in fork()), the percentiles
with their confidence intervals, where the creating call's time goes by stage, and the lock waits.

A sweep directory (what `forksim sweep --out DIR` writes): results.parquet or results.csv (one row
per point x replication) and points/*/summary.json. The report draws throughput and latency against
the swept key (keys linked to it on the same line) with the 95% confidence intervals of each point,
the latency-throughput curve, and what the experiment asks about where its points measured it: request
latency over the snapshot windows (a server), the faulting threads' mmap_lock stalls, the lock waits.

The folders are read by forksim.layout (which also owns their file names); `load_run`, `load_sweep`
and `ReportError` here are its `read_run`, `read_sweep` and `FolderError`.

summary.md's numbers are summary.json's under one rule, `rounded()`: a float is shown rounded to
`DIGITS` decimals (Python's round), an integer as it is, a missing value as "-".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from . import plots
from .axes import SIZE_KEYS, TIME_KEYS, size_text, time_text
from .io import write_text
from .layout import FolderError as ReportError  # the folder's files cannot be read (forksim.layout reads them)
from .layout import dotted_get as _get
from .layout import is_run_dir, is_sweep_dir, points_frame
from .layout import read_requests as load_requests
from .layout import read_run as load_run
from .layout import read_sweep as load_sweep
from .requests import WINDOWS
from .summary import LATENCIES, LOCKS, PERCENTILE_NAMES, summary_row

__all__ = [
    "DIGITS",
    "ReportError",
    "Report",
    "rounded",
    "report",
    "run_report",
    "sweep_report",
    "load_run",
    "load_sweep",
    "points_frame",
    "summary_row",
    "is_run_dir",
    "is_sweep_dir",
]

DIGITS = 2
# The sections and their fields come from summary.json's schema (forksim.summary).
REQUEST_WINDOWS = tuple(WINDOWS)  # the server's request latency sections


@dataclass
class Report:
    kind: str  # "run" | "sweep"
    directory: Path
    markdown: Path
    figures: list[Path] = field(default_factory=list)


def rounded(x: Any) -> str:
    """The one rounding rule of summary.md: floats to DIGITS decimals, integers as they are."""
    if x is None:
        return "-"
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if not math.isfinite(x):
            return "-"
        return f"{round(x, DIGITS):.{DIGITS}f}"
    return str(x)


# ------------------------------------------------------------------ runs


def _seconds(us: Any) -> str:
    return f"{us / 1e6:g} s" if isinstance(us, (int, float)) else "-"


def _run_markdown(summary: dict[str, Any], config: dict[str, Any], figures: list[Path]) -> str:
    r = rounded
    name = summary.get("experiment") or _get(config, "experiment.name") or "run"
    lines = [
        f"# forksim run report: {name}",
        "",
        f"Experiment `{name}`, profile `{summary.get('profile', '-')}`, seed {r(summary.get('seed'))}, "
        f"{r(summary.get('replications'))} replications, {r(summary.get('forks'))} creations measured "
        f"({_seconds(_get(config, 'experiment.duration'))} measured per replication after a warm-up of "
        f"{_seconds(_get(config, 'experiment.warmup'))}; from config.resolved.toml).",
        "",
        f"Every number below is summary.json's, rounded to {DIGITS} decimals. Latencies in microseconds; "
        "each percentile is the mean over replications of that replication's percentile, with a 95% "
        "confidence interval across replications.",
        "",
        "## Latency (µs)",
        "",
        "| latency | count | mean | p50 | p90 | p99 | p999 | p99 95% CI low | p99 95% CI high |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key in LATENCIES:
        s = summary.get(key)
        if not isinstance(s, dict):
            continue
        ci = (s.get("ci95") or {}).get("p99") or [None, None]
        lines.append(f"| `{key}` | {r(s.get('count'))} | " + " | ".join(
            r(s.get(c)) for c in ("mean", *PERCENTILE_NAMES)) + f" | {r(ci[0])} | {r(ci[1])} |")
    windows = [(k, summary[k].get("window")) for k in REQUEST_WINDOWS if isinstance(summary.get(k), dict)]
    if windows:
        lines += ["", "Request latency is measured from a request's arrival to the end of its service, over three "
                  f"windows ({r(summary.get('requests_unfinished'))} requests unfinished at the end are left out):", ""]
        lines += [f"- `{k}`: {w}" for k, w in windows if w]
    thr = summary.get("throughput_per_s") or {}
    tci = thr.get("ci95") or [None, None]
    uci = summary.get("cpu_utilization_ci95") or [None, None]
    lines += [
        "",
        "## Throughput and CPU utilisation",
        "",
        "| quantity | value | 95% CI low | 95% CI high |",
        "|---|---:|---:|---:|",
        f"| `throughput_per_s` (creations reaped per second) | {r(thr.get('mean'))} | {r(tci[0])} | {r(tci[1])} |",
        f"| `cpu_utilization` (fraction of all CPUs busy) | {r(summary.get('cpu_utilization'))} | {r(uci[0])} | {r(uci[1])} |",
    ]
    req = summary.get("request_throughput_per_s")
    if isinstance(req, dict):
        rci = req.get("ci95") or [None, None]
        lines.append(f"| `request_throughput_per_s` (requests served per second) | {r(req.get('mean'))} | {r(rci[0])} "
                     f"| {r(rci[1])} |")
    stages = summary.get("stage_us") or {}
    if stages:
        lines += ["", "## Where the creating call's time goes (mean µs per creation)", "",
                  "| stage | µs |", "|---|---:|"]
        lines += [f"| `{k}` | {r(v)} |" for k, v in stages.items()]
    locks = summary.get("lock_wait_us") or {}
    if locks:
        lines += ["", "## Lock waits (µs per acquisition)", "", "| lock | acquisitions | mean | p99 | max |",
                  "|---|---:|---:|---:|---:|"]
        for k, v in locks.items():
            lines.append(f"| `{k}` | {r(v.get('acquisitions'))} | {r(v.get('mean'))} | {r(v.get('p99'))} | {r(v.get('max'))} |")
    stall = summary.get("mmap_stall_us")
    if isinstance(stall, dict):
        lines += ["", "## mmap_lock stalls of the parent's other threads (µs)", "",
                  "| count | p50 | p99 | max |", "|---:|---:|---:|---:|",
                  f"| {r(stall.get('count'))} | {r(stall.get('p50'))} | {r(stall.get('p99'))} | {r(stall.get('max'))} |"]
    other = [(k, summary.get(k)) for k in ("stack_cache_hit_ratio", "in_flight_at_end", "events_per_creation", "sim_wall_s")
             if k in summary]
    if other:
        lines += ["", "## Other", "", "| quantity | value |", "|---|---:|"]
        lines += [f"| `{k}` | {r(v)} |" for k, v in other]
    if figures:
        lines += ["", "## Figures", ""]
        lines += [f"![{p.stem}]({p.name})" for p in figures]
    return "\n".join(lines) + "\n"


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    return path


def _figure(figsize=(7.5, 4.5)):
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots()


def run_report(directory: str | Path, out: str | Path | None = None) -> Report:
    """Figures and summary.md for a run directory (written into `out`, default the directory)."""
    d = Path(directory)
    summary, records, config = load_run(d)
    out = Path(out) if out is not None else d
    out.mkdir(parents=True, exist_ok=True)
    warmup = _get(config, "experiment.warmup")
    plots.set_theme()
    figures = []
    name = summary.get("experiment") or "run"
    fig, ax = _figure((8.5, 4.5))
    plots.latency_ecdf(records, warmup_us=warmup, ax=ax, title=f"{name}: latency per creation (ECDF)")
    figures.append(_save(fig, out / "latency_ecdf.png"))
    fig, ax = _figure((9.0, 4.5))
    plots.latency_percentiles(summary, ax=ax, title=f"{name}: latency percentiles (95% CI across replications)")
    figures.append(_save(fig, out / "latency_percentiles.png"))
    fig, ax = _figure((8.0, 4.2))
    plots.stage_breakdown(summary, ax=ax, title=f"{name}: where the creating call's time goes")
    figures.append(_save(fig, out / "stages.png"))
    fig, ax = _figure((7.5, 4.0))
    plots.lock_waits(summary, ax=ax, title=f"{name}: lock waits")
    figures.append(_save(fig, out / "lock_waits.png"))
    requests = load_requests(d)
    if requests is not None:
        fig, ax = _figure((8.5, 4.5))
        plots.request_ecdf(requests, ax=ax, title=f"{name}: request latency, overall and during the snapshots")
        figures.insert(0, _save(fig, out / "request_latency_ecdf.png"))
    md = write_text(out / "summary.md", _run_markdown(summary, config, figures))
    return Report("run", d, md, figures)


# ------------------------------------------------------------------ sweeps


# Extra summary.md columns and figures for what an experiment asks about: (column, header).
_SERVER_COLUMNS = [("request_latency_us.p99", "request p99"), ("request_latency_in_snapshot_us.p99", "request p99 in snapshot"),
                   ("request_latency_in_snapshot_us.p90", "request p90 in snapshot"),
                   ("request_latency_in_fork_us.p50", "request p50 in fork()"), ("request_throughput_per_s", "requests/s")]
_STALL_COLUMNS = [("mmap_stall_us.count", "mmap stalls"), ("mmap_stall_us.p99", "mmap stall p99"),
                  ("mmap_stall_us.max", "mmap stall max")]
_LOCK_COLUMNS = [(f"lock_wait_us.{lock}.{stat}", f"{lock} {stat}") for lock in LOCKS for stat in ("mean", "p99")]


def _any_positive(frame: pd.DataFrame, columns: list[str]) -> bool:
    return any(c in frame and (pd.to_numeric(frame[c], errors="coerce") > 0).any() for c in columns)


def _headlines(frame: pd.DataFrame) -> dict[str, bool]:
    """What the sweep's points measured beyond creations: requests (a server), the faulting threads'
    mmap_lock stalls, lock waits."""
    return {"server": "request_latency_us.p50" in frame and frame["request_latency_us.p50"].notna().any(),
            "stalls": _any_positive(frame, ["mmap_stall_us.count"]),
            "locks": _any_positive(frame, [c for c, _ in _LOCK_COLUMNS])}


def _key_cell(key: str, value: Any) -> str:
    """A swept value in summary.md: sizes and times in units, the rest as `rounded`."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        leaf = key.rsplit(".", 1)[-1]
        if leaf in SIZE_KEYS:
            return size_text(value)
        if leaf in TIME_KEYS:
            return time_text(value)
    return rounded(value)


def _sweep_markdown(d: Path, frame: pd.DataFrame, keys: list[str], notes: list[str], figures: list[Path]) -> str:
    r = rounded
    head = _headlines(frame)
    extra = (_SERVER_COLUMNS if head["server"] else []) + (_STALL_COLUMNS if head["stalls"] else []) \
        + ([c for c in _LOCK_COLUMNS if _any_positive(frame, [c[0]])] if head["locks"] else [])
    lines = [
        f"# forksim sweep report: {d.name}",
        "",
        f"{len(frame)} points over {', '.join(f'`{k}`' for k in keys)}. Every number is the point's "
        f"summary.json value, rounded to {DIGITS} decimals; latencies in microseconds, throughput in "
        "creations per second; CI: 95% confidence interval across replications.",
    ]
    if head["server"]:
        lines += ["", "Requests: latency from arrival to the end of service, in µs; *in snapshot*: requests that "
                  "arrived between the fork's entry and the snapshot child's exit; *in fork()*: between the fork's "
                  "entry and its return. Those two windows are set by the snapshots, not by the run's length; the "
                  "p99 of all requests falls as the run gets longer (more requests that never meet a fork)."]
    lines += [
        "",
        "| point | " + " | ".join(f"`{k}`" for k in keys)
        + " | forks | throughput | thr. CI low | thr. CI high | fork p50 | fork p99 | fork p99 CI low "
          "| fork p99 CI high | round trip p99 | cpu_utilization | " + "".join(f"{h} | " for _, h in extra),
        "|---|" + "---:|" * (len(keys) + 10 + len(extra)),
    ]

    def val(row, col):
        v = row.get(col)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return None
        if hasattr(v, "item"):
            v = v.item()
        return v

    for _, row in frame.iterrows():
        row = row.to_dict()
        cells = [f"`{row['point']}`"] + [_key_cell(k, val(row, k)) for k in keys] + [
            r(val(row, c)) for c in ("forks", "throughput_per_s", "throughput_lo", "throughput_hi",
                                     "fork_latency_us.p50", "fork_latency_us.p99", "fork_latency_us.p99.lo",
                                     "fork_latency_us.p99.hi", "roundtrip_latency_us.p99", "cpu_utilization",
                                     *[c for c, _ in extra])]
        lines.append("| " + " | ".join(cells) + " |")
    if notes:
        lines += ["", "## Points left out", ""] + [f"- {n}" for n in notes]
    if figures:
        lines += ["", "## Figures", ""] + [f"![{p.stem}]({p.name})" for p in figures]
    return "\n".join(lines) + "\n"


def _moves_with(frame: pd.DataFrame, key: str, other: str) -> bool:
    """Whether `other` takes one value per value of `key` (linked sweep keys, or a constant)."""
    return bool(frame.groupby(key, dropna=False)[other].nunique(dropna=False).le(1).all())


def _sweep_figures(frame: pd.DataFrame, key: str, by: list[str], linked: list[str], out: Path) -> list[Path]:
    head = _headlines(frame)
    figures: list[Path] = []

    def draw(name: str, fn, *args, size=(8.5, 4.5), **kw) -> None:
        fig, ax = _figure(size)
        fn(*args, by=by, ax=ax, **kw)
        if linked and fn is not plots.throughput_latency:  # linked keys move with x: one line, all named
            ax.set_xlabel(f"{ax.get_xlabel()}; with {', '.join(linked)}")
        figures.append(_save(fig, out / name))

    if head["server"]:  # the question: request latency during the snapshot
        draw("sweep_request_latency.png", plots.sweep_lines, frame, key, [
            ("request_latency_in_snapshot_us.p99", "p99, arriving in snapshot"),
            ("request_latency_in_snapshot_us.p90", "p90, arriving in snapshot"),
            ("request_latency_in_fork_us.p50", "p50, arriving in fork()"),
            ("request_latency_us.p99", "p99, all requests"), ("request_latency_us.p50", "p50, all requests")],
            ylabel="request latency", title=f"request latency against {key}")
        draw("sweep_throughput.png", plots.sweep_throughput, frame, key, column="request_throughput_per_s",
             what="requests/s", title=f"requests served per second against {key}")
    else:
        draw("sweep_throughput.png", plots.sweep_throughput, frame, key, title=f"throughput against {key}")
    if head["stalls"]:
        draw("sweep_mmap_stall.png", plots.sweep_lines, frame, key, [
            ("mmap_stall_us.max", "max"), ("mmap_stall_us.p99", "p99"), ("mmap_stall_us.p50", "p50"),
            ("fork_latency_us.p50", "fork() p50 (the stall's bound)")],
            ylabel="mmap_lock stall", title=f"faulting threads' mmap_lock stalls against {key}")
    if head["locks"]:
        cols = [(c, h) for c, h in _LOCK_COLUMNS if _any_positive(frame, [c])]
        draw("sweep_lock_waits.png", plots.sweep_lines, frame, key, cols, log=False,
             ylabel="wait per acquisition", title=f"lock waits against {key}")
    draw("sweep_fork_latency.png", plots.sweep_latency, frame, key, metric="fork_latency_us",
         percentiles=("p50", "p99"), title=f"creating call latency (entry to return) against {key}")
    if not head["server"]:
        if "roundtrip_latency_us.p99" in frame:
            draw("sweep_roundtrip_latency.png", plots.sweep_latency, frame, key, metric="roundtrip_latency_us",
                 percentiles=("p50", "p99"), title=f"round-trip latency against {key}")
        draw("sweep_throughput_latency.png", plots.throughput_latency, frame, key=key,
             title=f"creating call p99 against throughput (labels: {', '.join([key, *linked])})")
    return figures


def sweep_report(directory: str | Path, out: str | Path | None = None) -> Report:
    """Figures and summary.md for a sweep directory."""
    d = Path(directory)
    frame, keys, notes = load_sweep(d)
    out = Path(out) if out is not None else d
    out.mkdir(parents=True, exist_ok=True)
    plots.set_theme()
    key = keys[0]
    linked = [k for k in keys[1:] if _moves_with(frame, key, k)]
    by = [k for k in keys[1:] if k not in linked]
    figures = _sweep_figures(frame, key, by, linked, out)
    md = write_text(out / "summary.md", _sweep_markdown(d, frame, keys, notes, figures))
    return Report("sweep", d, md, figures)


def report(directory: str | Path, out: str | Path | None = None) -> Report:
    """`forksim report DIR`: a run directory or a sweep directory, whichever DIR is."""
    d = Path(directory)
    if not d.is_dir():
        raise ReportError(f"{d}: no such directory")
    if is_run_dir(d):
        return run_report(d, out)
    if is_sweep_dir(d):
        return sweep_report(d, out)
    raise ReportError(f"{d}: neither a run directory (summary.json + forks.parquet/.csv) nor a sweep "
                      "directory (results.parquet/.csv + points/*/summary.json)")
