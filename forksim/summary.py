"""The schema of summary.json: one typed `Summary` (pydantic), the one place its shape is declared.

`metrics.summarize` builds a `Summary` and writes its `to_dict()` (the summary.json dict: sections in
declaration order, a section that does not apply left out). Everything that names summary figures
derives from the fields here instead of spelling them again: the SLO paths `forksim plan` accepts
(`slo_fields`), the sweep table's columns (`FLAT_SKIP`), the report's and the CLI's latency tables
(`LATENCIES`, `latency_label`), the fingerprint's wall-clock and speed figures (`fields_of`).

Each top-level field has a role (`Field(json_schema_extra={"role": ...})`):

- "identity": which experiment, point, profile and seed a summary belongs to;
- "provenance": the profile file as used (its path differs per checkout), the image's scatter and its origin;
- "run": how the run went (replications, partial, a sweep point's errors);
- "wall_clock": real time taken (differs on every run);
- "ci": a confidence interval given beside a scalar figure (`cpu_utilization_ci95`);
- "metric" (the default): what the model computed. `speed` marks the metric a speed change may move.

Latencies are in microseconds, rates per second, utilisation a fraction of all CPUs.
"""

from __future__ import annotations

import typing
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field

from .stats import PERCENTILES

__all__ = ["Summary", "Latency", "Rate", "LockWait", "Stall", "LATENCIES", "RATES", "PERCENTILE_NAMES", "LOCKS",
           "FLAT_SKIP", "fields_of", "role", "slo_fields", "metric_fields", "latency_label", "path", "summary_row"]

PERCENTILE_NAMES = tuple(PERCENTILES)  # p50, p90, p99, p999


class _Section(BaseModel):
    """A part of summary.json: no extra keys; a field never set is left out of the dict."""

    model_config = ConfigDict(extra="forbid")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True)


class Latency(_Section):
    """Percentiles of the pooled post-warm-up samples of all replications (µs) with block-bootstrap
    95% intervals (forksim.stats); a tail percentile on too few samples is null, its reason in `refused`."""

    count: int
    mean: Optional[float] = None
    p50: Optional[float] = None
    p90: Optional[float] = None
    p99: Optional[float] = None
    p999: Optional[float] = None
    beyond: Optional[dict[str, int]] = None  # samples above each tail percentile
    refused: Optional[dict[str, str]] = None
    ci95: dict[str, Optional[list[Optional[float]]]] = Field(default_factory=dict)
    window: Optional[str] = None  # server request sections: the window the latency is measured over


class Rate(_Section):
    """A rate (per second): the mean across replications, its Student-t 95% interval, and (creations) the
    replications' lowest and highest."""

    mean: Optional[float] = None
    ci95: Optional[list[Optional[float]]] = None
    range: Optional[list[Optional[float]]] = None


class LockWait(_Section):
    """Waits for one lock (µs per acquisition) over every acquisition."""

    acquisitions: int
    mean: Optional[float] = None
    p99: Optional[float] = None
    max: Optional[float] = None


class Stall(_Section):
    """mmap_lock stalls of the forking parent's other threads (µs)."""

    count: int
    p50: Optional[float] = None
    p99: Optional[float] = None
    max: Optional[float] = None


def _f(role: str = "metric", *, title: str | None = None, description: str | None = None,
       speed: bool = False) -> Any:
    extra: dict[str, Any] = {"role": role}
    if speed:
        extra["speed"] = True
    return Field(default=None, title=title, description=description, json_schema_extra=extra)


class Summary(_Section):
    """summary.json. A run's summary carries identity, run and metric fields; a sweep point's adds
    `point`, `overrides` and `errors` (replications that failed); a sweep point that measured nothing
    is identity fields and `error` only."""

    experiment: Optional[str] = _f("identity")
    point: Optional[str] = _f("identity")
    overrides: Optional[dict[str, Any]] = _f("identity")
    profile: Optional[str] = _f("identity")
    profile_used: Optional[dict[str, Any]] = _f("provenance")
    image_scatter: Optional[dict[str, Any]] = _f(
        "provenance", description="the physical layout the image was priced at: value (0..1) and where it came from "
        "(config, the profile's fresh_image_scatter, or the default 0), and priced: whether the profile has a scatter "
        "term to price it with")
    image_spread: Optional[dict[str, Any]] = _f(
        "provenance", description="how far the image's struct pages spread (1 = one dense range of frames): value and "
        "where it came from (config, the profile's fresh_image_spread, or the default 1), and priced: whether the "
        "profile's cold terms grow with it (warmth, per_spread)")
    seed: Optional[int] = _f("identity")
    forks: Optional[int] = _f(description="creations measured (returned from the call after the warm-up)")
    replications: Optional[int] = _f("run")
    throughput_per_s: Optional[Rate] = _f(description="creations reaped per second")
    fork_latency_us: Optional[Latency] = _f(
        title="creating call", description="creating call (entry to return)")
    roundtrip_latency_us: Optional[Latency] = _f(
        title="round trip (to reap)", description="round trip (entry to reaped)")
    child_start_latency_us: Optional[Latency] = _f(
        title="child start", description="child start (entry to the child's first instruction)")
    response_latency_us: Optional[Latency] = _f(
        title="response (arrival to reap)", description="response (arrival to reaped)")
    request_latency_us: Optional[Latency] = _f(
        title="request, all", description="server request (arrival to reply)")
    request_latency_in_fork_us: Optional[Latency] = _f(
        title="request arriving in fork()", description="server request arriving in fork() (entry to return)")
    request_latency_in_snapshot_us: Optional[Latency] = _f(
        title="request arriving in snapshot",
        description="server request arriving in a snapshot (fork entry to child exit)")
    requests_unfinished: Optional[int] = _f(description="requests still queued or in service at the end")
    request_throughput_per_s: Optional[Rate] = _f(description="requests served per second")
    cpu_utilization: Optional[float] = _f(description="fraction of all CPUs busy")
    cpu_utilization_ci95: Optional[list[Optional[float]]] = _f("ci")
    lock_wait_us: Optional[dict[str, LockWait]] = _f()
    mmap_stall_us: Optional[Stall] = _f()
    stage_us: Optional[dict[str, Optional[float]]] = _f(description="mean µs per creation in each stage of the call")
    stack_cache_hit_ratio: Optional[float] = _f()
    in_flight_at_end: Optional[int] = _f()
    events_per_creation: Optional[float] = _f(speed=True)
    sim_wall_s: Optional[float] = _f("wall_clock")
    partial: Optional[bool] = _f("run")  # interrupted: `replications` of `replications_planned` finished
    replications_planned: Optional[int] = _f("run")
    precision: Optional[dict[str, Any]] = _f("run", description="run to a precision: target, reached, why it stopped")
    warmup_check: Optional[dict[str, Any]] = _f("run", description="MSER-5's truncation against the configured warm-up")
    error: Optional[str] = _f("run")  # a sweep point that produced nothing
    errors: Optional[list[str]] = _f("run")  # a sweep point's failed replications


def role(name: str) -> str:
    """The role of a top-level summary field ('metric' for a name Summary does not declare)."""
    info = Summary.model_fields.get(name)
    extra = info.json_schema_extra if info is not None and isinstance(info.json_schema_extra, dict) else {}
    return str(extra.get("role", "metric"))


def fields_of(*roles: str, speed: bool | None = None) -> tuple[str, ...]:
    """The top-level fields with one of `roles` (all roles when none given), in declaration order."""
    out = []
    for name, info in Summary.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if roles and extra.get("role") not in roles:
            continue
        if speed is not None and bool(extra.get("speed")) != speed:
            continue
        out.append(name)
    return tuple(out)


def _section_type(name: str) -> Any:
    """The section model (or dict/scalar type) a top-level field holds, Optional stripped."""
    ann = Summary.model_fields[name].annotation
    args = [a for a in typing.get_args(ann) if a is not type(None)]
    return args[0] if len(args) == 1 else ann


def _numeric(ann: Any) -> bool:
    args = [a for a in typing.get_args(ann) if a is not type(None)] or [ann]
    return all(a in (int, float) for a in args)


def _fields_typed(kind: type) -> tuple[str, ...]:
    return tuple(n for n in Summary.model_fields if _section_type(n) is kind)


# The latency sections and the rate sections, in summary.json's order.
LATENCIES = _fields_typed(Latency)
RATES = _fields_typed(Rate)


def slo_fields(name: str) -> tuple[str, ...] | None:
    """For a top-level metric field: () when it is a number itself, the names of its numeric fields
    when it is a section (`fork_latency_us` -> count, mean, p50, ...), None when its keys are open
    (`lock_wait_us.<lock>.p99`, `stage_us.<stage>`). Raises KeyError for a name that is not a metric."""
    if name not in Summary.model_fields or role(name) != "metric":
        raise KeyError(name)
    t = _section_type(name)
    if isinstance(t, type) and issubclass(t, BaseModel):
        return tuple(f for f, info in t.model_fields.items() if _numeric(info.annotation))
    if typing.get_origin(t) is dict:
        return None
    return ()


def metric_fields() -> tuple[str, ...]:
    """The top-level fields an SLO may name (numbers or sections of numbers)."""
    return fields_of("metric")


def latency_label(name: str, long: bool = False) -> str:
    """A latency section's label for tables: short (the CLI) or long (notebooks)."""
    info = Summary.model_fields[name]
    return (info.description if long else info.title) or name


# What a flat table of a summary (the sweep's results, one column per figure) leaves out: who and how
# (identity, provenance, run), wall-clock times, and the confidence intervals.
FLAT_SKIP = frozenset(fields_of("identity", "provenance", "run", "wall_clock", "ci")) | {"ci95"}

# The locks whose waits summary.json's lock_wait_us reports (metrics.build_summary fills them in this order).
LOCKS = ("tasklist_lock", "pidmap_lock", "mmap_lock")


def path(dotted: str) -> tuple[str, ...]:
    """A numeric figure's path in summary.json ('fork_latency_us.p99' -> ('fork_latency_us', 'p99')),
    checked against the schema: raises KeyError for a path summary.json does not have."""
    parts = tuple(dotted.split("."))
    fields = slo_fields(parts[0])
    ok = (fields == () and len(parts) == 1) or (fields and len(parts) == 2 and parts[1] in fields) \
        or (fields is None and len(parts) >= 2)
    if not ok:
        raise KeyError(dotted)
    return parts


def summary_row(summary: dict[str, Any]) -> dict[str, Any]:
    """One sweep point's summary.json as flat columns (means, percentiles, CI bounds), every latency
    section and figure as forksim.summary declares them."""
    row: dict[str, Any] = {"forks": summary.get("forks"), "replications": summary.get("replications")}
    thr = summary.get("throughput_per_s") or {}
    ci = thr.get("ci95") or [None, None]
    row.update({"throughput_per_s": thr.get("mean"), "throughput_lo": ci[0], "throughput_hi": ci[1]})
    for key in LATENCIES:
        s = summary.get(key)
        if not isinstance(s, dict):
            continue
        row[f"{key}.mean"] = s.get("mean")
        for p in PERCENTILE_NAMES:
            row[f"{key}.{p}"] = s.get(p)
            pci = (s.get("ci95") or {}).get(p) or [None, None]
            row[f"{key}.{p}.lo"], row[f"{key}.{p}.hi"] = pci[0], pci[1]
    req = summary.get("request_throughput_per_s")
    if isinstance(req, dict):
        rci = req.get("ci95") or [None, None]
        row.update({"request_throughput_per_s": req.get("mean"), "request_throughput_per_s.lo": rci[0],
                    "request_throughput_per_s.hi": rci[1], "requests_unfinished": summary.get("requests_unfinished")})
    stall = summary.get("mmap_stall_us")
    if isinstance(stall, dict):
        row.update({f"mmap_stall_us.{k}": stall.get(k) for k in Stall.model_fields})
    for lock, v in (summary.get("lock_wait_us") or {}).items():
        row.update({f"lock_wait_us.{lock}.{k}": v.get(k) for k in LockWait.model_fields})
    row["cpu_utilization"] = summary.get("cpu_utilization")
    return row
