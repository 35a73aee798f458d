"""Capacity planning: the smallest (or largest) value of one config key that meets an SLO.

An SLO is a bound on any numeric field of summary.json, named by its path:
`fork_latency_us.p99<=2000`, `throughput_per_s.mean>=5000`, `request_latency_us.p999<5ms`,
`lock_wait_us.tasklist_lock.p99<=10`, `cpu_utilization<=0.8`. Every probe runs the experiment with
all its replications (same seeds at every probe: common random numbers), and is judged on the
point estimate (with `strict`, on the whole 95% CI: a pass needs the interval's worse end to meet
the bound).

The search assumes the metric is monotone in the key. The range's two ends are probed first: if
the SLO holds at the high end only, the answer is the smallest passing value (more CPUs, say); at
the low end only, the largest passing value (the highest rate or the biggest image). Integer keys
(machine.cpus, workload.parents, ...) are searched by binary search over the integers; continuous
keys (rates, sizes, times, what-if factors) by bisection until the bracket is within `tolerance`.
The answer is always a probed value that passed, and its neighbour one step (or one tolerance)
worse was probed and failed.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Iterator, Literal, get_args, get_origin

from pydantic import BaseModel

from .config import (
    Experiment,
    _model_at,
    apply_overrides,
    config_value,
    experiment_to_toml_dict,
    format_config_value,
    load_experiment,
    parse_override,
    validate_resolved,
)
from .errors import ConfigError
from .plan_keys import direction as plan_direction
from .plan_keys import geometric, linked_keys
from .profile import Profile
from .executor import make_executor
from .runner import run_experiment
from .errors import UnstableError
from .slo import SLO, parse_slo

__all__ = ["plan", "PlanResult", "Probe", "SLO", "parse_slo", "parse_range"]

# ------------------------------------------------------------------ the key and its range


def _key_kind(exp: Experiment, key: str) -> str:
    """'int' for plain integer keys, 'float' for quantities, factors and sizes; raises for unknown keys."""
    apply_overrides(experiment_to_toml_dict(exp), {key: config_value(exp, key, None) or 1}, source="find",
                    resolved=True)
    if key.startswith("whatif."):
        return "float"
    parts = key.split(".")
    model = _model_at(tuple(parts[:-1]))
    if model is None or parts[-1] not in model.model_fields:
        raise ConfigError("unknown key", source="find", field=key)
    info = model.model_fields[parts[-1]]
    ann = info.annotation
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        raise ConfigError("is a section, not a key to search", source="find", field=key)
    has_unit = any(type(m).__name__ == "BeforeValidator" for m in info.metadata)
    args = getattr(ann, "__args__", None) or ()
    if args and type(None) in args:  # an optional key: int | None
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and rest[0] is int:
            ann = int
    if ann is int and not has_unit:
        return "int"
    if not _numeric(ann):
        raise ConfigError("plan searches a numeric key (an integer, a size, a time, a rate or a factor)",
                          source="find", field=key)
    return "bytes" if ann is int else "float"


def _numeric(ann: Any) -> bool:
    """int/float, an Annotated quantity of them, or a union holding one."""
    if ann in (int, float):
        return True
    if get_origin(ann) is Annotated:
        return _numeric(get_args(ann)[0])
    if get_origin(ann) is Literal:
        return False
    return any(_numeric(a) for a in get_args(ann) if a is not type(None))


def _resolve_value(exp: Experiment, key: str, raw: Any, what: str) -> float:
    """A value as the user wrote it (256MiB, 2ms, 5000/s, 8) -> the model's unit, via the config."""
    if key.startswith("whatif."):
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"a what-if factor is a number, got {raw!r}", source=what) from None
    data = apply_overrides(experiment_to_toml_dict(exp), {key: raw}, source=what)
    try:
        probe = validate_resolved(data)
    except Exception as exc:
        err = getattr(exc, "errors", None)
        msg = err()[0]["msg"].removeprefix("Value error, ") if callable(err) else str(exc)
        raise ConfigError(f"{raw!r} is not a valid value for {key}: {msg}", source=what) from None
    value = config_value(probe, key, None)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ConfigError(f"{key} is not numeric", source=what)
    return float(value)


def parse_range(exp: Experiment, key: str, text: str | tuple | list | None, kind: str) -> tuple[float, float]:
    """'LO..HI' (units allowed: 1GiB..64GiB, 1000/s..20000/s) -> (lo, hi) in the model's units."""
    if text is None:
        if kind != "int":
            raise ConfigError(f"{key} is continuous: give a search range, e.g. --range LO..HI", source="range")
        cur = config_value(exp, key, 1) or 1
        return 1.0, float(max(16, 8 * int(cur)))
    if isinstance(text, str):
        if ".." not in text:
            raise ConfigError(f"a range looks like LO..HI, got {text!r}", source="range")
        lo_raw, hi_raw = (s.strip() for s in text.split("..", 1))
        if not lo_raw or not hi_raw:
            raise ConfigError(f"a range looks like LO..HI, got {text!r}", source="range")
        lo_raw, hi_raw = parse_override(f"v={lo_raw}")[1], parse_override(f"v={hi_raw}")[1]
    else:
        if len(text) != 2:
            raise ConfigError("a range is two values (LO, HI)", source="range")
        lo_raw, hi_raw = text
    lo = _resolve_value(exp, key, lo_raw, "range")
    hi = _resolve_value(exp, key, hi_raw, "range")
    if kind == "int" and (lo != int(lo) or hi != int(hi)):
        raise ConfigError(f"{key} is an integer key: give integer ends", source="range")
    if not lo < hi:
        raise ConfigError(f"the range's low end must be below its high end (got {lo:g}..{hi:g})", source="range")
    return lo, hi


# ------------------------------------------------------------------ results


@dataclass
class Probe:
    """One probed value: the metric with its CI across replications, and whether the SLO held."""

    value: Any  # int for integer keys
    metric: float | None
    ci95: list[float] | None
    ok: bool
    summary: dict[str, Any] = field(repr=False, default_factory=dict)
    unstable: bool = False  # an open workload whose queue grew without bound

    def to_dict(self) -> dict[str, Any]:
        d = {"value": self.value, "metric": self.metric, "ci95": self.ci95, "ok": self.ok}
        if self.unstable:
            d["unstable"] = True
        return d


@dataclass
class PlanResult:
    """The answer and the evidence."""

    key: str
    slo: SLO
    answer: Any
    direction: str  # "smallest" or "largest" passing value
    range: tuple[Any, Any]
    tried: list[Probe]
    note: str = ""
    why: str = ""  # why this direction (the key's kind, or as asked)
    undecided: bool = False  # the answer's 95% CI straddles the SLO's bound

    @property
    def probes(self) -> list[Probe]:
        """The probes sorted by value."""
        return sorted(self.tried, key=lambda p: p.value)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "answer": self.answer,
            "slo": str(self.slo),
            "direction": self.direction,
            "why": self.why,
            "undecided": self.undecided,
            "range": list(self.range),
            "note": self.note,
            "tried": [p.to_dict() for p in self.tried],
        }

    def frame(self):
        import pandas as pd

        return pd.DataFrame([p.to_dict() for p in self.tried])

    def _repr_html_(self) -> str:
        from .display import plan_html

        return plan_html(self)


# ------------------------------------------------------------------ the search


def _as_key_value(kind: str, v: float) -> Any:
    return int(round(v)) if kind in ("int", "bytes") else float(v)


def plan(
    exp_or_path: Experiment | str | Path,
    slo: str | SLO,
    find: str,
    range: str | tuple | list | None = None,  # noqa: A002 - the command's flag name
    *,
    overrides: dict[str, Any] | None = None,
    profile: str | Profile | None = None,
    tolerance: float | str | None = None,
    strict: bool = False,
    workers: int | None = None,
    executor: str = "local",
    scheduler: str | None = None,
    max_probes: int = 40,
    direction: str | None = None,
    on_probe: Callable[[Probe], None] | None = None,
) -> PlanResult:
    """Search `find` over `range` ('LO..HI' or (lo, hi), units allowed) for the boundary of `slo`.

    `direction` ("smallest" or "largest" passing value) defaults to what the key and the SLO say
    (forksim.plan_keys: a resource such as machine.cpus: the smallest; a load such as workload.rate
    under a latency bound: the largest). Keys the config's [sweep] links to `find` follow it.
    Integer keys: binary search (the answer passes, one step worse fails). Continuous keys:
    bisection (geometric for sizes and rates) until the bracket is narrower than `tolerance`
    (default: 1/64 of the range, of its log for sizes and rates; a quantity with units is allowed,
    '64MiB'). `workers`: processes for each probe's replications (default one per CPU), on one
    `executor` for every probe ("local" or "dask" at `scheduler`: forksim.executor)."""
    exp, slo_ = _inputs(exp_or_path, overrides, slo, find, direction)
    kind = _key_kind(exp, find)
    links = linked_keys(exp, find, lambda k, raw: _resolve_value(exp, k, raw, "[sweep]"))
    exp = exp.model_copy(update={"sweep": {}})
    lo, hi = parse_range(exp, find, range, kind)
    geo = geometric(find) and lo > 0
    tol = _tolerance(exp, find, kind, tolerance, lo, hi, geo)
    ratio_tol = geo and tolerance is None  # the default geometric tolerance is a ratio
    want, why = plan_direction(find, slo_.upper, [ln.key for ln in links], direction)

    prober = _Prober(exp, find, kind, links, slo_, strict, profile, max_probes, on_probe)
    with prober.on(make_executor(executor, workers, scheduler, jobs=exp.experiment.replications)):
        return _search(prober, lo, hi, want, why, tol, geo, ratio_tol, rng=(_as_key_value(kind, lo),
                                                                            _as_key_value(kind, hi)))


def _search(prober: "_Prober", lo: float, hi: float, want: str | None, why: str, tol: float, geo: bool,
            ratio_tol: bool, rng: tuple) -> PlanResult:
    """Probe the range's ends, then bisect between the passing and the failing end."""
    find, kind, slo_, probe, cache, tried = prober.find, prober.kind, prober.slo, prober, prober.cache, prober.tried
    links = prober.links
    p_lo, p_hi = probe(lo), probe(hi)
    show = lambda v: format_config_value(find, _as_key_value(kind, v))  # noqa: E731
    if not p_lo.ok and not p_hi.ok:
        raise ConfigError(
            f"the SLO {slo_} is met nowhere in {find} = {show(lo)}..{show(hi)} "
            f"({slo_.metric} = {_shown(p_lo)} at {show(lo)}, {_shown(p_hi)} at {show(hi)}); "
            "widen --range or relax the SLO", source="plan")
    if want is None:  # a key of no known kind: the ends tell which way the SLO breaks
        if p_lo.ok != p_hi.ok:
            want = "smallest" if p_hi.ok else "largest"
        else:
            worsens_up = (p_hi.metric or 0) > (p_lo.metric or 0) if slo_.upper else (p_hi.metric or 0) < (p_lo.metric or 0)
            want = "largest" if worsens_up else "smallest"
        why = f"{find}: the direction the range's ends show (--smallest/--largest to choose)"
    good, bad = (hi, lo) if want == "smallest" else (lo, hi)
    extra = [f"{ln.describe(find)} at every probe (linked in [sweep])" for ln in links]
    end_note = _ends_note(want, cache[float(_as_key_value(kind, good))].ok, cache[float(_as_key_value(kind, bad))].ok,
                          show(good), show(bad), why)
    if end_note:  # the answer is an end of the range
        return _result(find, slo_, _as_key_value(kind, bad), want, rng, tried, [*extra, end_note], cache, kind, why)
    good = _bisect(probe, good, bad, kind, tol, geo, ratio_tol)
    notes = list(extra)
    passes = [p.ok for p in sorted(tried, key=lambda p: p.value)]
    if sum(1 for a, b in zip(passes, passes[1:]) if a != b) > 1:
        notes.append("the probes are not monotone in the key (noise or a non-monotone metric): "
                     "more replications or a longer duration would settle the boundary")
    return _result(find, slo_, _as_key_value(kind, good), want, rng, tried, notes, cache, kind, why)


class _Prober:
    """The probes of one search: each value run once (all the config's replications, same seeds), on
    one executor, cached by value, at most `max_probes` of them."""

    def __init__(self, exp: Experiment, find: str, kind: str, links: list, slo_: SLO, strict: bool,
                 profile: str | Profile | None, max_probes: int, on_probe: Callable[[Probe], None] | None):
        self.exp, self.find, self.kind, self.links, self.slo = exp, find, kind, links, slo_
        self.strict, self.profile, self.max_probes, self.on_probe = strict, profile, max_probes, on_probe
        self.cache: dict[float, Probe] = {}
        self.tried: list[Probe] = []
        self.executor: Any = None

    @contextmanager
    def on(self, executor: Any) -> Iterator[None]:
        self.executor = executor
        try:
            yield
        finally:
            executor.close()

    def __call__(self, v: float) -> Probe:
        kind = self.kind
        v = float(_as_key_value(kind, v))
        if v in self.cache:
            return self.cache[v]
        if len(self.tried) >= self.max_probes:
            raise ConfigError(f"no answer within {self.max_probes} probes; widen --tolerance", source="plan")
        values = {self.find: _as_key_value(kind, v), **{ln.key: ln(v) for ln in self.links}}
        p = _run_probe(self.exp.with_overrides(values, resolved=True), self.slo, self.strict, self.profile,
                       self.executor, _as_key_value(kind, v))
        self.cache[v] = p
        self.tried.append(p)
        if self.on_probe is not None:
            self.on_probe(p)
        return p


def _ends_note(want: str, good_ok: bool, bad_ok: bool, good: str, bad: str, why: str) -> str:
    """When the answer is the range's end `bad` (the end where the SLO should break): why."""
    if not good_ok:  # the SLO holds only at the other end
        return (f"the SLO holds at {bad} but not at {good}: it does not improve the way {why.split(':')[0]} suggests; "
                f"within the range, the answer is {bad}")
    if bad_ok:
        return "the SLO holds across the whole range; " + (
            f"it holds already at {bad}" if want == "smallest" else f"the limit lies above {bad}")
    return ""


def _inputs(exp_or_path: Experiment | str | Path, overrides: dict[str, Any] | None, slo: str | SLO, find: str,
            direction: str | None) -> tuple[Experiment, SLO]:
    if isinstance(exp_or_path, Experiment):
        exp = exp_or_path.with_overrides(overrides) if overrides else exp_or_path
    else:
        exp = load_experiment(exp_or_path, overrides)
    slo_ = parse_slo(slo) if isinstance(slo, str) else slo
    if not find or not isinstance(find, str):
        raise ConfigError("name the key to search, e.g. --find machine.cpus", source="find")
    if direction not in (None, "smallest", "largest"):
        raise ConfigError(f"'smallest' or 'largest', got {direction!r}", source="direction")
    return exp, slo_


def _tolerance(exp: Experiment, find: str, kind: str, tolerance: float | str | None, lo: float, hi: float,
               geo: bool) -> float:
    """The bracket width at which bisection stops: 1 for integers; a ratio hi/lo for geometric keys
    without an explicit tolerance; else a width in the key's units."""
    if kind == "int":
        return 1.0
    if tolerance is None:
        return (hi / lo) ** (1 / 64) if geo else (hi - lo) / 64.0
    tol = _resolve_value(exp, find, tolerance, "tolerance") if isinstance(tolerance, str) else float(tolerance)
    if not tol > 0:
        raise ConfigError("must be positive", source="tolerance")
    return max(tol, 1.0) if kind == "bytes" else tol


def _bisect(probe: Callable[[float], Probe], good: float, bad: float, kind: str, tol: float, geo: bool,
            ratio_tol: bool) -> float:
    """Narrow [good, bad] (good passes, bad fails) to `tol` (a ratio hi/lo when `ratio_tol`); returns
    the last passing value."""
    while True:
        if kind == "int":
            if abs(good - bad) <= 1:
                return good
            mid = float((good + bad) // 2)
        else:
            if (max(good, bad) / min(good, bad) <= tol) if ratio_tol else abs(good - bad) <= tol + 1e-12 * max(1.0, abs(good)):
                return good
            mid = math.sqrt(good * bad) if geo else (good + bad) / 2.0
            if kind == "bytes":
                mid = float(round(mid))
                if mid in (good, bad):
                    return good
        if probe(mid).ok:
            good = mid
        else:
            bad = mid


def _run_probe(pexp: Experiment, slo_: SLO, strict: bool, profile: str | Profile | None, executor: Any,
               value: Any) -> Probe:
    try:
        # with experiment.precision: until the SLO metric too is that precise, or its CI clears the bound
        result = run_experiment(pexp, profile=profile, executor=executor, watch=(slo_.metric,),
                                decided=lambda s: _clears(slo_, s))
    except UnstableError as exc:  # an open workload the machine cannot keep up with: fails any SLO
        return Probe(value, None, None, False, {"error": str(exc)}, unstable=True)
    metric, ci = slo_.value(result.summary)
    ok = slo_.holds(metric)
    if ok and strict and ci:
        worse = max(ci) if slo_.upper else min(ci)
        ok = slo_.holds(worse)
    return Probe(value, metric, ci, ok, result.summary)


def _clears(slo_: SLO, summary: dict[str, Any]) -> bool:
    """The SLO metric's 95% CI lies wholly on one side of the bound: more replications cannot change the verdict."""
    _, ci = slo_.value(summary)
    return bool(ci) and None not in ci and slo_.holds(ci[0]) == slo_.holds(ci[1])


def _result(find: str, slo_: SLO, answer: Any, want: str, rng: tuple, tried: list[Probe], notes: list[str],
            cache: dict[float, Probe], kind: str, why: str) -> PlanResult:
    """The PlanResult, with a note when the answer's CI (or its failing neighbour's) straddles the bound."""
    at = cache.get(float(answer))
    undecided = False
    if at is not None and at.ci95 and min(at.ci95) <= slo_.bound <= max(at.ci95):
        undecided = True
        notes.append(f"undecided: at {format_config_value(find, answer)} the 95% CI of {slo_.metric} "
                     f"({_fmt(at.ci95[0])} .. {_fmt(at.ci95[1])}) straddles the bound {_fmt(slo_.bound)}: more "
                     "replications or a longer experiment.duration would decide (or --strict: the CI's worse end "
                     "must meet it)")
    return PlanResult(find, slo_, answer, want, rng, tried, "; ".join(n for n in notes if n), why=why,
                      undecided=undecided)


def _shown(p: Probe) -> str:
    if p.unstable:
        return "unstable (the queue grew without bound)"
    if p.metric is None:  # a percentile summary.json refuses (too few samples beyond it)
        return "n/a (too few samples: lengthen experiment.duration or add replications)"
    return _fmt(p.metric)


def _fmt(v: float | None) -> str:
    """A metric in full, never in exponent form (208,230.4, not 2.082e+05)."""
    if v is None:
        return "n/a"
    if float(v).is_integer():
        return f"{int(v):,}"
    return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.3g}"
