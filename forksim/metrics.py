"""Records and summaries: per-creation records, percentiles with confidence intervals across
independent replications, warm-up removal, CPU utilisation, and the summary.json contract."""

from __future__ import annotations

import math
import operator
from array import array
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy.special import stdtrit  # Student's t quantile; scipy.stats would cost 50 MB to import

__all__ = ["Creation", "Records", "ReplicationResult", "records_frame", "summarize", "ci95", "PERCENTILES"]

PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9}
_NAN = float("nan")


class Creation:
    """One creation request, from the creating call's entry to the parent's wait returning."""

    __slots__ = (
        "seq", "kind", "parent", "arrival", "start", "fork_ret", "child_start", "mm_release", "child_exit", "reap",
        "parent_cpu", "child_cpu", "stack_hit", "setup_us", "dup_mmap_us", "tail_us", "mmap_wait", "pidmap_wait",
        "tasklist_wait",
    )
    FIELDS = __slots__

    def __init__(self, seq: int, kind: str, parent: int, arrival: float):
        self.seq = seq
        self.kind = kind
        self.parent = parent
        self.arrival = arrival
        self.start = self.fork_ret = self.child_start = self.mm_release = self.child_exit = self.reap = _NAN
        self.parent_cpu = self.child_cpu = -1
        self.stack_hit = True
        self.setup_us = self.dup_mmap_us = self.tail_us = 0.0
        self.mmap_wait = self.pidmap_wait = self.tasklist_wait = 0.0


# Column types of the records table: int64 ("q"), bool ("b"), kind (index into the kinds seen), else float64.
_TYPECODES = {"seq": "q", "parent": "q", "parent_cpu": "q", "child_cpu": "q", "stack_hit": "b", "kind": "B"}
_ROW = operator.attrgetter(*Creation.FIELDS)
_BLOCK_ROWS = 4096


class Records:
    """One replication's creations: a `Creation` object while it is in flight (the kernel fills in its
    fields), then a row of typed columns (`array`), about 130 bytes a creation instead of ~500 as
    objects: a million-creation run's records fit in memory and cross process boundaries quickly.
    Rows are written in entry order (`seq`): a creation reaped before an earlier one waits for it."""

    def __init__(self) -> None:
        self.active: dict[int, Creation] = {}  # in flight
        self._reaped: dict[int, Creation] = {}  # reaped, waiting for an earlier creation's row
        self._cols = {f: array(_TYPECODES.get(f, "d")) for f in Creation.FIELDS}
        self._extends = [self._cols[f].extend for f in Creation.FIELDS]
        self._rows: list[tuple] = []
        self._kind_codes: dict[str, int] = {}
        self._next = 0  # seq of the next creation to enter
        self._next_row = 0  # seq of the next row to write

    def new(self, kind: str, parent: int, arrival: float) -> Creation:
        """A creation request enters the kernel: its record, numbered in order of entry."""
        rec = Creation(self._next, kind, parent, arrival)
        self._next += 1
        self.active[rec.seq] = rec
        return rec

    def done(self, rec: Creation) -> None:
        """The parent has reaped the child: the record is final."""
        del self.active[rec.seq]
        if rec.seq != self._next_row:
            self._reaped[rec.seq] = rec
            return
        self._append(rec)
        reaped = self._reaped
        while reaped and self._next_row in reaped:
            self._append(reaped.pop(self._next_row))

    def _append(self, rec: Creation) -> None:
        # a row is a tuple until a block of them is moved into the columns (a C-level transpose)
        self._rows.append(_ROW(rec))
        self._next_row += 1
        if len(self._rows) >= _BLOCK_ROWS:
            self._flush()

    def _flush(self) -> None:
        codes = self._kind_codes
        for field, extend, values in zip(Creation.FIELDS, self._extends, zip(*self._rows)):
            if field == "kind":
                values = [codes.setdefault(k, len(codes)) for k in values]
            extend(values)
        self._rows = []

    def __len__(self) -> int:
        return self._next

    @property
    def in_flight(self) -> int:
        return len(self.active)

    def frame(self) -> pd.DataFrame:
        """Every creation, finished or in flight, as a table in entry order (`seq`); the columns are
        moved out (no copy), so call it once, when the replication is over."""
        for rec in sorted([*self.active.values(), *self._reaped.values()], key=lambda r: r.seq):
            self._append(rec)
        self.active.clear()
        self._reaped.clear()
        self._flush()
        n = self._next_row
        cols = {}
        for f in Creation.FIELDS:
            col = self._cols[f]
            if f == "kind":
                codes = np.frombuffer(col, dtype=np.uint8) if n else np.empty(0, np.uint8)
                cols[f] = np.asarray(list(self._kind_codes) or [""], dtype=object)[codes]
            else:
                a = np.frombuffer(col, dtype=col.typecode) if n else np.empty(0, col.typecode)
                cols[f] = a.view(bool) if f == "stack_hit" else a
        self._cols, self._extends = {}, []
        return pd.DataFrame(cols, copy=False)


class ReplicationResult:
    """What one replication hands back: records and machine-level measurements."""

    def __init__(
        self,
        replication: int,
        records: pd.DataFrame,
        window: tuple[float, float],
        busy_us: float,
        cpus: int,
        lock_waits: dict[str, Sequence[float]],
        stalls: Sequence[float],
        in_flight: int,
        events: int,
        wall_s: float,
        requests: Sequence[float] | None = None,
    ):
        self.replication = replication
        self.records = records  # this replication's creations (records_frame's columns, less `replication`)
        self.window = window
        self.busy_us = busy_us
        self.cpus = cpus
        self.lock_waits = lock_waits
        self.stalls = stalls
        self.in_flight = in_flight
        self.events = events
        self.wall_s = wall_s
        self.requests = requests  # server workloads: latencies (us) of requests arriving after warm-up


def records_frame(results: Sequence[ReplicationResult]) -> pd.DataFrame:
    """All replications' creations as one tidy table (times in microseconds)."""
    frames = []
    for r in results:
        df = r.records.copy(deep=False)  # the replication's columns are shared, not copied
        df.insert(0, "replication", r.replication)
        frames.append(df)
    if not frames:
        df = pd.DataFrame(columns=["replication", *Creation.FIELDS])
    elif len(frames) == 1:
        df = frames[0]
    else:
        df = pd.concat(frames, ignore_index=True)
    df["fork_latency_us"] = df["fork_ret"] - df["start"]
    df["roundtrip_latency_us"] = df["reap"] - df["start"]
    df["child_start_latency_us"] = df["child_start"] - df["start"]
    df["response_latency_us"] = df["reap"] - df["arrival"]
    return df


def ci95(values: Sequence[float]) -> list[float] | None:
    """Student-t 95% interval of the mean across replications (None with fewer than two)."""
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=float)
    if len(v) < 2:
        return None
    mean = float(v.mean())
    half = float(stdtrit(len(v) - 1, 0.975) * v.std(ddof=1) / math.sqrt(len(v)))
    return [mean - half, mean + half]


def _clean(x: float) -> float | None:
    return round(float(x), 6) if x is not None and math.isfinite(x) else None


def _latency(per_rep: list[np.ndarray]) -> dict[str, Any]:
    """Mean and percentiles: the mean over replications of each replication's value, with a CI."""
    rows = [a for a in per_rep if len(a)]
    out: dict[str, Any] = {"count": int(sum(len(a) for a in rows))}
    if not rows:
        out.update({k: None for k in ("mean", *PERCENTILES)})
        out["ci95"] = {}
        return out
    means = [float(a.mean()) for a in rows]
    out["mean"] = _clean(np.mean(means))
    cis: dict[str, Any] = {"mean": ci95(means)}
    for name, q in PERCENTILES.items():
        vals = [float(np.percentile(a, q)) for a in rows]
        out[name] = _clean(np.mean(vals))
        cis[name] = ci95(vals)
    out["ci95"] = {k: ([_clean(x) for x in v] if v else None) for k, v in cis.items()}
    return out


def _window_mask(df: pd.DataFrame, results: Sequence[ReplicationResult]) -> pd.Series:
    lo = df["replication"].map({r.replication: r.window[0] for r in results})
    return df["start"] >= lo


def summarize(results: Sequence[ReplicationResult], df: pd.DataFrame | None = None) -> dict[str, Any]:
    """The summary.json contract from all replications."""
    if df is None:
        df = records_frame(results)
    mask = _window_mask(df, results) if len(df) else None
    measured = df if mask is None or mask.all() else df[mask]
    if len(results) == 1:  # no per-replication copies of a big run's table
        by_rep = {results[0].replication: measured}
    else:
        by_rep = {r.replication: measured[measured["replication"] == r.replication] for r in results}

    def col(name: str) -> list[np.ndarray]:
        return [by_rep[r.replication][name].dropna().to_numpy() for r in results]

    throughputs = []
    for r in results:
        sub = by_rep[r.replication]
        lo, hi = r.window
        done = int(((sub["reap"] >= lo) & (sub["reap"] <= hi)).sum())
        throughputs.append(done / ((hi - lo) / 1e6))
    utilization = [r.busy_us / (r.cpus * (r.window[1] - r.window[0])) for r in results]

    summary: dict[str, Any] = {
        "forks": int(measured["fork_ret"].notna().sum()),
        "replications": len(results),
        # range: the replications' lowest and highest, the spread of placement outcomes (where the
        # balancer put the hogs and parents) that a confidence interval of the mean hides
        "throughput_per_s": {"mean": _clean(np.mean(throughputs)), "ci95": ci95(throughputs),
                             "range": [_clean(min(throughputs)), _clean(max(throughputs))]},
        "fork_latency_us": _latency(col("fork_latency_us")),
        "roundtrip_latency_us": _latency(col("roundtrip_latency_us")),
        "child_start_latency_us": _latency(col("child_start_latency_us")),
    }
    if measured["arrival"].notna().any() and (measured["arrival"] != measured["start"]).any():
        summary["response_latency_us"] = _latency(col("response_latency_us"))
    if any(getattr(r, "requests", None) is not None for r in results):
        # server workloads: request latency (arrival to the end of its service) and request throughput
        reqs = [np.asarray(getattr(r, "requests", None) or [], dtype=float) for r in results]
        summary["request_latency_us"] = _latency(reqs)
        rates = [len(a) / ((r.window[1] - r.window[0]) / 1e6) for a, r in zip(reqs, results)]
        summary["request_throughput_per_s"] = {"mean": _clean(np.mean(rates)), "ci95": ci95(rates)}
    summary["cpu_utilization"] = _clean(np.mean(utilization))
    summary["cpu_utilization_ci95"] = ci95(utilization)

    lock_wait: dict[str, Any] = {}
    for name in ("tasklist_lock", "pidmap_lock", "mmap_lock"):
        waits = np.concatenate([np.asarray(r.lock_waits.get(name, []), dtype=float) for r in results])
        lock_wait[name] = {
            "acquisitions": int(len(waits)),
            "mean": _clean(waits.mean()) if len(waits) else 0.0,
            "p99": _clean(np.percentile(waits, 99)) if len(waits) else 0.0,
            "max": _clean(waits.max()) if len(waits) else 0.0,
        }
    summary["lock_wait_us"] = lock_wait
    stalls = np.concatenate([np.asarray(r.stalls, dtype=float) for r in results])
    summary["mmap_stall_us"] = {
        "count": int(len(stalls)),
        "p50": _clean(np.percentile(stalls, 50)) if len(stalls) else None,
        "p99": _clean(np.percentile(stalls, 99)) if len(stalls) else None,
        "max": _clean(stalls.max()) if len(stalls) else None,
    }
    # Where the parent's time inside the call goes (means over measured creations).
    stage_us = {}
    returned = measured["fork_ret"].notna().to_numpy()  # creations still inside the call have no stages yet
    if returned.any():
        def stage(column: str) -> np.ndarray:  # column by column: no copy of the whole table
            return measured[column].to_numpy()[returned]

        parts = {
            "copy_process_setup": stage("setup_us"),
            "mmap_lock_wait": stage("mmap_wait"),
            "dup_mmap": stage("dup_mmap_us"),
            "copy_process_tail": stage("tail_us"),
        }
        for name, values in parts.items():
            stage_us[name] = _clean(values.mean())
        rest = stage("fork_latency_us") - sum(parts.values())
        stage_us["after_wake_up_new_task"] = _clean(rest.mean())  # IPI to a halted CPU, vfork wait
    summary["stage_us"] = stage_us
    summary["stack_cache_hit_ratio"] = _clean(measured["stack_hit"].mean()) if len(measured) else None
    summary["in_flight_at_end"] = int(sum(r.in_flight for r in results))
    summary["events_per_creation"] = _clean(
        sum(r.events for r in results) / max(1, sum(len(r.records) for r in results))
    )
    summary["sim_wall_s"] = round(sum(r.wall_s for r in results), 3)
    return summary
