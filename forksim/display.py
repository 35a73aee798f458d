"""Jupyter views: what `RunResult`, `PlanResult` and a sweep table show in a notebook (`_repr_html_`),
a compact table of the headline figures with their units, not a dump of the objects."""

from __future__ import annotations

import html
import typing
from typing import Any, Iterable

import pandas as pd

from .summary import LATENCIES, PERCENTILE_NAMES, latency_label
from .units import format_size, format_time_us, parse_rate, parse_size, parse_time_us

__all__ = ["run_html", "plan_html", "sweep_html", "latency_frame", "refused_note", "key_unit", "key_value",
           "SweepTable", "LATENCY_LABELS", "PERCENTILE_KEYS"]

# Each latency section's label, from summary.json's schema (forksim.summary).
LATENCY_LABELS = {key: latency_label(key, long=True) for key in LATENCIES}
_PCTS = (("mean", "mean"), ("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p999", "p99.9"))
_DASH = "–"
PERCENTILE_KEYS = PERCENTILE_NAMES


def _num(v: Any, digits: int = 1) -> str:
    if v is None:
        return _DASH
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _ci(ci: Any, digits: int = 1) -> str:
    return f"{_num(ci[0], digits)} .. {_num(ci[1], digits)}" if ci else _DASH


def key_unit(key: str) -> str | None:
    """'size', 'time' or 'rate' for a config key that takes a unit (from the config's schema), else None."""
    from .config import Experiment

    model: Any = Experiment
    info = None
    for part in key.split("."):
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return None
        info = fields[part]
        model = info.annotation
    metadata = list(getattr(info, "metadata", ()))
    for arg in typing.get_args(getattr(info, "annotation", None)):  # an optional quantity: Annotated | None
        metadata += list(getattr(arg, "__metadata__", ()))
    for m in metadata:  # config._unit wraps each quantity's parser in a BeforeValidator: the parser is the unit
        cells = getattr(getattr(m, "func", None), "__closure__", None) or ()
        for cell in cells:
            parser = cell.cell_contents
            if parser is parse_size:
                return "size"
            if parser is parse_time_us:
                return "time"
            if parser is parse_rate:
                return "rate"
    return None


def key_value(key: str, value: Any) -> str:
    """A swept key's value with its unit (256MiB, 2ms, 5000/s)."""
    if hasattr(value, "item"):  # a numpy scalar from the table
        value = value.item()
    unit = key_unit(key) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    if unit == "size":
        return format_size(value)
    if unit == "time":
        return format_time_us(value)
    if unit == "rate":
        return f"{value:g}/s"
    return _num(value, 3) if isinstance(value, float) else str(value)


def _table(df: pd.DataFrame, caption: str, notes: Iterable[str] = ()) -> str:
    body = df.to_html(escape=True, border=0, classes="forksim", index=False)
    head = f"<p><b>{html.escape(caption)}</b></p>"
    foot = "".join(f"<p style='font-size:smaller'>{html.escape(n)}</p>" for n in notes)
    return f"<div>{head}{body}{foot}</div>"


def refused_note() -> str:
    """What a dash in a p99 or p99.9 column means (the rule in forksim.stats)."""
    from .stats import MIN_BEYOND

    return (f"{_DASH} in p99 / p99.9: not given, fewer than {MIN_BEYOND} samples lie beyond it (p99 needs about "
            f"{100 * MIN_BEYOND:,} samples, p99.9 about {1000 * MIN_BEYOND:,}); the summary's 'refused' says why")


def latency_frame(summary: dict[str, Any]) -> tuple[pd.DataFrame, list[str]]:
    """One row per latency the summary holds (µs), with the p99's 95% CI and the sample count; a
    refused tail percentile is a dash, its reason a note."""
    rows, notes = [], []
    for key, label in LATENCY_LABELS.items():
        s = summary.get(key)
        if not s:
            continue
        row = {"latency": label}
        for k, name in _PCTS:
            row[f"{name} (µs)"] = _num(s.get(k))
        row["p99 95% CI (µs)"] = _ci((s.get("ci95") or {}).get("p99"))
        row["samples"] = _num(s.get("count"))
        rows.append(row)
        if s.get("refused"):
            notes = [refused_note()]
    return pd.DataFrame(rows), notes


def run_html(result: Any) -> str:
    """A run: creations, replications, seed and profile; the latencies; throughput and CPU use."""
    s = result.summary
    caption = (f"{s.get('experiment')}: {_num(s.get('forks'))} creations measured over {s.get('replications')} "
               f"replication(s), seed {s.get('seed')}, profile {s.get('profile')}")
    lat, notes = latency_frame(s)
    thr = s.get("throughput_per_s") or {}
    rates = [f"throughput {_num(thr.get('mean'))} creations/s (95% CI {_ci(thr.get('ci95'))})",
             f"CPU utilisation {_num(100 * s['cpu_utilization']) if s.get('cpu_utilization') is not None else _DASH} %"]
    req = s.get("request_throughput_per_s")
    if req:
        rates.append(f"requests served {_num(req.get('mean'))} /s (95% CI {_ci(req.get('ci95'))})")
    notes = ["; ".join(rates), *notes,
             "percentiles of the pooled post-warm-up samples; 95% CIs by block bootstrap (forksim.stats)"]
    return _table(lat, caption, notes)


def plan_html(plan: Any) -> str:
    """A plan: the answer, then every probe with the metric, its 95% CI and whether the SLO held."""
    metric = plan.slo.metric
    unit = "µs" if "_us" in metric else ("/s" if "per_s" in metric else "")
    rows = [{plan.key: _num(p.value), f"{metric} ({unit})" if unit else metric: _num(p.metric),
             "95% CI": _ci(p.ci95), "SLO met": "unstable" if p.unstable else ("yes" if p.ok else "no")}
            for p in plan.probes]
    caption = f"{plan.key} = {_num(plan.answer)} ({plan.direction} value meeting {plan.slo})"
    return _table(pd.DataFrame(rows), caption, [plan.note] if plan.note else [])


def sweep_html(table: pd.DataFrame) -> str:
    """A sweep: one row per point (its swept keys, replications, throughput and the fork() call's
    p50/p99 with units), from the points' own summaries when the table carries them."""
    summaries: dict[str, dict] = getattr(table, "summaries", None) or {}
    keys = SweepTable.swept_keys(table)
    rows, notes = [], []
    for pid, sub in table.groupby("point", sort=False):
        first = sub.iloc[0]
        row = {k: key_value(k, first[k]) for k in keys if k in sub}
        s = summaries.get(pid) or {}
        row["replications"] = len(sub)
        if s.get("error"):
            row["error"] = s["error"]
            rows.append(row)
            continue
        fork = s.get("fork_latency_us") or {}
        row["throughput (/s)"] = _num((s.get("throughput_per_s") or {}).get("mean"))
        row["fork() p50 (µs)"] = _num(fork.get("p50"))
        row["fork() p99 (µs)"] = _num(fork.get("p99"))
        row["fork() p99 95% CI (µs)"] = _ci((fork.get("ci95") or {}).get("p99"))
        req = s.get("request_latency_us")
        if req:
            row["request p99 (µs)"] = _num(req.get("p99"))
            snap = s.get("request_latency_in_snapshot_us") or {}
            row["request p99 in snapshot (µs)"] = _num(snap.get("p99"))
        rows.append(row)
        if fork.get("refused"):
            notes = [refused_note()]
    caption = f"sweep: {len(rows)} point(s), {len(table)} row(s) (one per point and replication)"
    return _table(pd.DataFrame(rows), caption, notes)


class SweepTable(pd.DataFrame):
    """The table `forksim.sweep` returns: a plain DataFrame (one row per point x replication) that
    shows as a per-point summary in a notebook. `summaries` holds each point's summary.json (by point
    id). Anything derived from it is a plain DataFrame."""

    _metadata = ["summaries"]

    def __init__(self, *args: Any, summaries: dict[str, dict] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.summaries = summaries or {}

    @property
    def _constructor(self):
        return pd.DataFrame

    def swept_keys(self) -> list[str]:
        """The swept dotted keys (the columns between "point" and "replication")."""
        cols = list(self.columns)
        return cols[1:cols.index("replication")] if "point" in cols and "replication" in cols else []

    def points(self) -> pd.DataFrame:
        """One row per finished point: its swept keys (model units: bytes, µs, per second) and 'point',
        beside its summary's figures (`forksim.summary.summary_row`: 'throughput_per_s', 'throughput_lo',
        'fork_latency_us.p99', 'fork_latency_us.p99.lo', ...; every latency block of the summary)."""
        from .summary import summary_row

        keys, rows = self.swept_keys(), []
        for pid, sub in pd.DataFrame(self).groupby("point", sort=False):
            s = self.summaries.get(pid) or {}
            if not s or s.get("error"):
                continue
            rows.append({**{k: sub.iloc[0][k] for k in keys}, "point": pid, **summary_row(s)})
        return pd.DataFrame(rows)

    def _repr_html_(self) -> str:  # noqa: D401 - Jupyter's hook
        return sweep_html(self)
