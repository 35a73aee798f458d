"""Records and summaries: per-creation records, percentiles of the pooled post-warm-up samples with
their confidence intervals (`stats`), warm-up marking, CPU utilisation; `build_summary` fills the
summary.json schema (`forksim.summary.Summary`)."""

from __future__ import annotations

import math
import operator
import struct
from itertools import starmap
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .kernel.flags import KINDS
from .kernel.stages import CALL_PARTS
from .requests import DONE, LATENCY, WINDOWS
from .stats import PERCENTILES, TAIL_PERCENTILES, beyond, bootstrap_ci95, refusal, stream, t_ci95
from .summary import LOCKS, Latency, LockWait, Rate, Stall, Summary

__all__ = ["Creation", "Records", "ReplicationResult", "records_frame", "summarize", "build_summary", "ci95", "PERCENTILES",
           "RECORD_COLUMNS", "KIND_DTYPE"]

_NAN = float("nan")

# The records table's public column names (RunResult.records, forks.parquet): every time carries its
# unit. The one place a `Creation` field is renamed; fields not named here keep their name.
RECORD_COLUMNS = {
    "arrival": "arrival_us", "start": "start_us", "fork_ret": "fork_ret_us", "child_start": "child_start_us",
    "mm_release": "mm_release_us", "child_exit": "child_exit_us", "reap": "reap_us",
    "mmap_wait": "mmap_wait_us", "pidmap_wait": "pidmap_wait_us", "tasklist_wait": "tasklist_wait_us",
}
# The clone kind as a pandas categorical with every kind as a category (tables of different runs
# concatenate without falling back to strings).
KIND_DTYPE = pd.CategoricalDtype(list(KINDS))


class Creation:
    """One creation request, from the creating call's entry to the parent's wait returning."""

    FIELDS = (
        "seq", "kind", "parent", "arrival", "start", "fork_ret", "child_start", "mm_release", "child_exit", "reap",
        "parent_cpu", "child_cpu", "stack_hit", "setup_us", "dup_mmap_us", "tail_us", "mmap_wait", "pidmap_wait",
        "tasklist_wait",
    )
    __slots__ = (*FIELDS, "code")  # code: the kind's code in its Records (order of first appearance)

    def __init__(self, seq: int, kind: str, parent: int, arrival: float, code: int = 0):
        self.seq = seq
        self.kind = kind
        self.code = code
        self.parent = parent
        self.arrival = arrival
        self.start = self.fork_ret = self.child_start = self.mm_release = self.child_exit = self.reap = _NAN
        self.parent_cpu = self.child_cpu = -1
        self.stack_hit = True
        self.setup_us = self.dup_mmap_us = self.tail_us = 0.0
        self.mmap_wait = self.pidmap_wait = self.tasklist_wait = 0.0


# A finished creation is one packed row: its float64 fields, its int64 fields, the kind's code (in order of
# first appearance) and stack_hit, padded to a multiple of 8 bytes so every field of every row is aligned.
_INT_FIELDS = ("seq", "parent", "parent_cpu", "child_cpu")
_FLOAT_FIELDS = tuple(f for f in Creation.FIELDS if f not in (*_INT_FIELDS, "kind", "stack_hit"))
_ROW_VALUES = operator.attrgetter(*_FLOAT_FIELDS, *_INT_FIELDS, "code", "stack_hit")  # a row's values, in order
_ROW_STRUCT = struct.Struct(f"={len(_FLOAT_FIELDS)}d{len(_INT_FIELDS)}q2B6x")
_WORDS = len(_FLOAT_FIELDS) + len(_INT_FIELDS)
# Rows are packed a block at a time (struct.pack over the records' value tuples, by itertools.starmap: no Python
# frame per row, and about a third of numpy.fromiter's time for the same bytes)
_BLOCK = 4096
_ROW_DTYPE = np.dtype({
    "names": [*_FLOAT_FIELDS, *_INT_FIELDS, "kind", "stack_hit"],
    "formats": [np.float64] * len(_FLOAT_FIELDS) + [np.int64] * len(_INT_FIELDS) + [np.uint8, np.uint8],
    "offsets": [8 * i for i in range(_WORDS)] + [8 * _WORDS, 8 * _WORDS + 1],
    "itemsize": _ROW_STRUCT.size,
})


class Records:
    """One replication's creations: a `Creation` object while it is in flight (the kernel fills in its
    fields), then a packed row of bytes (144 a creation instead of ~500 as an object): a million-creation
    run's records fit in memory and cross process boundaries quickly. Final rows are packed a block of
    `_BLOCK` at a time (_ROW_STRUCT.pack by itertools.starmap: no Python call per row); the table's
    columns are views of the rows, made once at the end. Rows are written in entry order (`seq`): a
    creation reaped before an earlier one waits for it."""

    def __init__(self) -> None:
        self.active: dict[int, Creation] = {}  # in flight
        self._reaped: dict[int, Creation] = {}  # reaped, waiting for an earlier creation's row
        self._final: list[tuple] = []  # final rows' values (_ROW_VALUES, taken as each is written), not yet packed
        self._rows: bytearray | None = bytearray()  # _ROW_DTYPE rows
        self._kind_codes: dict[str, int] = {}
        self._next = 0  # seq of the next creation to enter
        self._next_row = 0  # seq of the next row to write

    def new(self, kind: str, parent: int, arrival: float) -> Creation:
        """A creation request enters the kernel: its record, numbered in order of entry."""
        code = self._kind_codes.get(kind)
        if code is None:
            code = self._kind_codes[kind] = len(self._kind_codes)
        rec = Creation(self._next, kind, parent, arrival, code)
        self._next += 1
        self.active[rec.seq] = rec
        return rec

    def done(self, rec: Creation) -> None:
        """The parent has reaped the child: the record is final."""
        del self.active[rec.seq]
        if rec.seq != self._next_row:
            self._reaped[rec.seq] = rec
            return
        final = self._final
        final.append(_ROW_VALUES(rec))  # its values now: a thread's exit after its join stays out of its row
        self._next_row += 1
        reaped = self._reaped
        while reaped and self._next_row in reaped:
            final.append(_ROW_VALUES(reaped.pop(self._next_row)))
            self._next_row += 1
        if len(final) >= _BLOCK:
            self._pack()

    def _pack(self) -> None:
        """The final records so far, packed onto the rows."""
        final = self._final
        if final:
            self._rows += b"".join(starmap(_ROW_STRUCT.pack, final))  # _ROW_DTYPE rows
            final.clear()

    def __len__(self) -> int:
        return self._next

    @property
    def in_flight(self) -> int:
        return len(self.active)

    def frame(self) -> pd.DataFrame:
        """Every creation, finished or in flight, as a table in entry order (`seq`); the columns are
        views of the packed rows (no copy), so call it once, when the replication is over."""
        self._final += map(_ROW_VALUES, sorted([*self.active.values(), *self._reaped.values()], key=lambda r: r.seq))
        self._next_row += len(self.active) + len(self._reaped)
        self._pack()
        self.active.clear()
        self._reaped.clear()
        rows = np.frombuffer(self._rows, dtype=_ROW_DTYPE) if self._next_row else np.empty(0, _ROW_DTYPE)
        self._rows = None  # the table holds them now
        cols: dict[str, Any] = {f: rows[f] for f in (*_FLOAT_FIELDS, *_INT_FIELDS)}
        # the kind: a categorical over the codes as recorded (1 byte a creation), not an object array of strings
        # (8 bytes a creation, and records_frame's conversion hashed every one of them)
        cols["kind"] = pd.Categorical.from_codes(rows["kind"], categories=list(self._kind_codes))
        cols["stack_hit"] = rows["stack_hit"].view(bool)
        return pd.DataFrame({f: cols[f] for f in Creation.FIELDS}, copy=False)


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
        requests: pd.DataFrame | None = None,
        seed: int | None = None,
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
        self.requests = requests  # server workloads: requests arriving after warm-up (forksim.requests' columns)
        self.seed = seed  # the experiment's seed (the entropy of this replication's SeedSequence)


def records_frame(results: Sequence[ReplicationResult]) -> pd.DataFrame:
    """All replications' creations as one tidy table: `RECORD_COLUMNS` names (times in microseconds
    since the replication's start), `warmup` marking the creations that entered before the warm-up
    ended (summary.json leaves them out), `kind` a categorical, and the latencies."""
    frames = []
    for r in results:
        df = r.records.copy(deep=False)  # the replication's columns are shared, not copied
        df.insert(0, "replication", r.replication)
        df.insert(1, "warmup", df["start"].to_numpy() < r.window[0])
        frames.append(df)
    if not frames:
        df = pd.DataFrame(columns=["replication", "warmup", *Creation.FIELDS])
        df["warmup"] = df["warmup"].astype(bool)
    elif len(frames) == 1:
        df = frames[0]
    else:
        df = pd.concat(frames, ignore_index=True)
    df = df.rename(columns=RECORD_COLUMNS)
    if df["kind"].isin(KIND_DTYPE.categories).all():
        df["kind"] = df["kind"].astype(KIND_DTYPE)
    else:  # a kind outside the clone table (a test's own workload): categories from the data
        df["kind"] = df["kind"].astype("category")
    df["fork_latency_us"] = df["fork_ret_us"] - df["start_us"]
    df["roundtrip_latency_us"] = df["reap_us"] - df["start_us"]
    df["child_start_latency_us"] = df["child_start_us"] - df["start_us"]
    df["response_latency_us"] = df["reap_us"] - df["arrival_us"]
    return df


def ci95(values: Sequence[float]) -> list[float] | None:
    """Student-t 95% interval of the mean across replications (None with fewer than two)."""
    return t_ci95(values)


def _clean(x: float) -> float | None:
    return round(float(x), 6) if x is not None and math.isfinite(x) else None


def _latency(per_rep: list[np.ndarray], *, seed: int | None = None, name: str = "",
             replications: Sequence[int] = ()) -> dict[str, Any]:
    """Mean and percentiles of the pooled samples of all replications, each with a block-bootstrap
    95% interval (`stats`); `count` samples in all, `beyond` the samples above each tail percentile,
    and a tail percentile resting on too few of them null, with the reason under `refused`."""
    rows = [np.asarray(a, dtype=float) for a in per_rep if len(a)]
    count = int(sum(len(a) for a in rows))
    if not rows:
        return {"count": count, "mean": None, **{k: None for k in PERCENTILES}, "ci95": {}}
    pooled = rows[0] if len(rows) == 1 else np.concatenate(rows)  # one replication's: no copy (a 1M run's peak)
    values = dict(zip(PERCENTILES, np.percentile(pooled, list(PERCENTILES.values()))))
    cis = bootstrap_ci95(rows, PERCENTILES, stream(seed, name, replications))
    out: dict[str, Any] = {"count": count, "mean": _clean(pooled.mean())}
    counts, refused = {}, {}
    for p, v in values.items():
        out[p] = _clean(v)
        if p in TAIL_PERCENTILES:
            counts[p] = beyond(pooled, v)
            why = refusal(p, len(pooled), counts[p])
            if why:
                out[p], cis[p] = None, None
                refused[p] = why
    out["beyond"] = counts
    if refused:
        out["refused"] = refused
    out["ci95"] = {k: ([_clean(x) for x in v] if v else None) for k, v in cis.items()}
    return out  # a forksim.summary.Latency's fields


def _mean_ci(values: Sequence[float], lower: float | None = 0.0, upper: float | None = None) -> dict[str, Any]:
    """The mean across replications and its Student-t interval (stats.t_ci95), both rounded by `_clean`:
    rounding is monotone, so the rounded mean stays inside its rounded interval (an unrounded bound sat
    a hair above a rounded mean, and `forksim report` drew a negative error bar)."""
    if len(values) == 0:
        return {"mean": None, "ci95": None}
    ci = t_ci95(values, lower=lower, upper=upper)
    return {"mean": _clean(np.mean(values)), "ci95": [_clean(x) for x in ci] if ci else None}


def _requests(results: Sequence[ReplicationResult], latency) -> dict[str, Any]:
    """Server workloads: request latency (arrival to the end of its service) over every request and
    over the fork and snapshot windows (forksim.requests.WINDOWS, each section stating its window),
    requests unfinished at the end, and request throughput. `latency(name, per_rep)`: summarize's."""
    frames = [r.requests if r.requests is not None else pd.DataFrame({LATENCY: [], DONE: []}) for r in results]
    finished = [f[f[DONE].notna()] for f in frames]
    out: dict[str, Any] = {}
    for section, (flag, window) in WINDOWS.items():
        picked = [f if flag is None else f[f[flag].to_numpy(dtype=bool)] for f in finished]
        lat = latency(section, [f[LATENCY].to_numpy(dtype=float) for f in picked])
        lat.window = window
        out[section] = lat
    out["requests_unfinished"] = int(sum(len(f) - len(g) for f, g in zip(frames, finished)))
    rates = [len(f) / ((r.window[1] - r.window[0]) / 1e6) for f, r in zip(finished, results)]
    out["request_throughput_per_s"] = Rate(**_mean_ci(rates))
    return out


def _stage_means(measured: pd.DataFrame) -> dict[str, float | None]:
    """Where the parent's time inside the call goes (means over measured creations)."""
    stage_us: dict[str, float | None] = {}
    returned = measured["fork_ret_us"].notna().to_numpy()  # creations still inside the call have no stages yet
    if returned.any():
        def stage(column: str) -> np.ndarray:  # column by column: no copy of the whole table
            return measured[column].to_numpy()[returned]

        parts = {p.name: stage(p.column) for p in CALL_PARTS.values() if p.column is not None}
        for name, values in parts.items():
            stage_us[name] = _clean(values.mean())
        rest = stage("fork_latency_us") - sum(parts.values())  # IPI to a halted CPU, vfork wait
        stage_us.update({p.name: _clean(rest.mean()) for p in CALL_PARTS.values() if p.column is None})
    return stage_us


def _rates(results: Sequence[ReplicationResult], by_rep: dict[int, pd.DataFrame]) -> tuple[list[float], list[float]]:
    """Per replication: creations reaped per second in the measured window, and the CPUs' busy share."""
    throughputs, utilization = [], []
    for r in results:
        lo, hi = r.window
        if hi <= lo:  # stopped (experiment.max_creations) before its warm-up ended: measured nothing
            continue
        sub = by_rep[r.replication]
        done = int(((sub["reap_us"] >= lo) & (sub["reap_us"] <= hi)).sum())
        throughputs.append(done / ((hi - lo) / 1e6))
        utilization.append(r.busy_us / (r.cpus * (hi - lo)))
    return throughputs, utilization


def _lock_waits(results: Sequence[ReplicationResult]) -> dict[str, LockWait]:
    out = {}
    for name in LOCKS:
        parts = [np.asarray(r.lock_waits.get(name, []), dtype=float) for r in results]
        # one replication's waits read in place (np.asarray of an array("d") is a view): a 1M-creation run's
        # three million tasklist_lock waits are not copied before np.percentile copies them
        waits = parts[0] if len(parts) == 1 else np.concatenate(parts)
        out[name] = LockWait(
            acquisitions=int(len(waits)),
            mean=_clean(waits.mean()) if len(waits) else 0.0,
            p99=_clean(np.percentile(waits, 99)) if len(waits) else 0.0,
            max=_clean(waits.max()) if len(waits) else 0.0,
        )
    return out


def _stalls(results: Sequence[ReplicationResult]) -> Stall:
    stalls = np.concatenate([np.asarray(r.stalls, dtype=float) for r in results])
    return Stall(
        count=int(len(stalls)),
        p50=_clean(np.percentile(stalls, 50)) if len(stalls) else None,
        p99=_clean(np.percentile(stalls, 99)) if len(stalls) else None,
        max=_clean(stalls.max()) if len(stalls) else None,
    )


def build_summary(results: Sequence[ReplicationResult], df: pd.DataFrame | None = None, *,
                  seed: int | None = None) -> Summary:
    """The typed summary from all replications: latencies over the pooled post-warm-up creations,
    rates across replications. `seed` (default: the replications' own) seeds the bootstrap, so the
    same seed gives the same summary."""
    if df is None:
        df = records_frame(results)
    if seed is None:
        seed = next((r.seed for r in results if getattr(r, "seed", None) is not None), None)
    reps = [r.replication for r in results]
    warm = df["warmup"].to_numpy(dtype=bool) if len(df) else None
    measured = df if warm is None or not warm.any() else df[~warm]
    if len(results) == 1:  # no per-replication copies of a big run's table
        by_rep = {results[0].replication: measured}
    else:
        by_rep = {r.replication: measured[measured["replication"] == r.replication] for r in results}

    def col(name: str) -> list[np.ndarray]:
        return [by_rep[r.replication][name].dropna().to_numpy() for r in results]

    def latency(name: str, per_rep: list[np.ndarray]) -> Latency:
        return Latency(**_latency(per_rep, seed=seed, name=name, replications=reps))

    throughputs, utilization = _rates(results, by_rep)
    fields: dict[str, Any] = {
        "forks": int(measured["fork_ret_us"].notna().sum()),
        "replications": len(results),
        # range: the replications' lowest and highest, the spread of placement outcomes (where the
        # balancer put the hogs and parents) that a confidence interval of the mean hides
        "throughput_per_s": Rate(**_mean_ci(throughputs),
                                 range=[_clean(min(throughputs)), _clean(max(throughputs))] if throughputs else None),
    }
    for name in ("fork_latency_us", "roundtrip_latency_us", "child_start_latency_us"):
        fields[name] = latency(name, col(name))
    if measured["arrival_us"].notna().any() and (measured["arrival_us"] != measured["start_us"]).any():
        fields["response_latency_us"] = latency("response_latency_us", col("response_latency_us"))
    if any(getattr(r, "requests", None) is not None for r in results):
        fields.update(_requests(results, latency))
    util = _mean_ci(utilization, lower=0.0, upper=1.0)
    return Summary(
        **fields,
        cpu_utilization=util["mean"],
        cpu_utilization_ci95=util["ci95"],
        lock_wait_us=_lock_waits(results),
        mmap_stall_us=_stalls(results),
        stage_us=_stage_means(measured),
        stack_cache_hit_ratio=_clean(measured["stack_hit"].mean()) if len(measured) else None,
        in_flight_at_end=int(sum(r.in_flight for r in results)),
        events_per_creation=_clean(sum(r.events for r in results) / max(1, sum(len(r.records) for r in results))),
        sim_wall_s=round(sum(r.wall_s for r in results), 3),
    )


def summarize(results: Sequence[ReplicationResult], df: pd.DataFrame | None = None, *,
              seed: int | None = None) -> dict[str, Any]:
    """The summary.json dict (`build_summary(...).to_dict()`, the schema in forksim.summary)."""
    return build_summary(results, df, seed=seed).to_dict()
