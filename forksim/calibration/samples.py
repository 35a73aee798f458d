"""Reading calibration's raw samples: per-configuration groups, fork() times that kept their CPU,
traced segments, percentiles; and `Evidence`, what every fitter of derive.py reads from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .fit import PROBABILITIES, Config, median, residual_quantiles
from .plan import FORK_MODE, Store, label

__all__ = ["Evidence", "fork_cfg", "seg_cfgs", "group", "vals", "quantiles", "pct", "fork_field",
           "preempted_share", "context_switch", "PROBABILITIES", "tail_residual"]


@dataclass
class Evidence:
    """The raw samples of one calibration and what the fits found so far: the traced segments of the
    base image (`seg`, empty without tracefs) and the diagnostics, filled in the profile's order."""

    store: Store
    cpu: int
    traced: bool
    seg: dict[str, list[float]] = field(default_factory=dict)
    diag: dict[str, Any] = field(default_factory=dict)
    layout: Any = None  # the scatter terms fitted so far (layout.LayoutFit), for the stages fitted after dup_mmap

    @property
    def pin_txt(self) -> str:
        return f"pinned to CPU {self.cpu}"

    @property
    def trace_scale(self) -> float:
        """The factor that scales traced fixed parts to the untraced fork() (1 without tracepoints)."""
        return self.diag.get("trace_scale_k", 1.0)


def _clean(x: dict[str, Any]) -> bool:
    """A fork() sample that kept its CPU (wall time within 5 us and 2% of its CPU time)."""
    return "fork_cpu_ns" in x and x["fork_ns"] - x["fork_cpu_ns"] <= max(5000, 0.02 * x["fork_cpu_ns"])


def fork_cfg(runs: list[dict[str, Any]], field_: str, lab: str, source: str = "samples") -> Config:
    """A Config of one field's samples (microseconds) over the runs of one configuration."""
    shape = runs[0]["shape"]
    rows_all = [x for r in runs for x in r[source] if field_ in x]
    if field_ == "fork_cpu_ns":
        # samples that were preempted inside fork() resume with cold caches: their CPU time is inflated
        # too, so the samples that kept their CPU are used when there are enough of them
        clean = [x for x in rows_all if _clean(x)]
        if len(clean) >= max(5, 0.1 * len(rows_all)):
            rows_all = clean
        elif len(rows_all) >= 8:
            # too few: the CPU time grows with the time spent preempted (cold caches on resumption);
            # take each sample back along a robust (Theil-Sen) slope to zero time preempted
            from scipy.stats import theilslopes

            cpu = np.array([x["fork_cpu_ns"] for x in rows_all], dtype=float)
            offt = np.array([max(0.0, x["fork_ns"] - x["fork_cpu_ns"]) for x in rows_all], dtype=float)
            if np.ptp(offt) > 0:
                slope = float(theilslopes(cpu, offt)[0])
                if slope > 0:
                    return Config(vmas=shape["vmas"], anon_vmas=shape["anon_vmas"], ptes=shape["ptes"],
                                  pmds=shape["pmds"], samples=list(np.maximum(cpu - slope * offt, 0.05 * cpu) / 1000.0),
                                  label=lab)
    values = [x[field_] / (1000.0 if source == "samples" else 1.0) for x in rows_all]
    return Config(vmas=shape["vmas"], anon_vmas=shape["anon_vmas"], ptes=shape["ptes"], pmds=shape["pmds"],
                  samples=values, label=lab)


def seg_cfgs(store: Store, seg: str, kind: str = FORK_MODE, **key: Any) -> list[Config]:
    """Per traced configuration: a Config of one segment's samples."""
    out = []
    for r in store.select(kind, traced=True, **key):
        values = [s[seg] for s in r["segments"] if seg in s and s[seg] >= 0]
        if values:
            sh = r["shape"]
            lay = r.get("layout") or {}
            out.append(Config(sh["vmas"], sh["anon_vmas"], sh["ptes"], sh["pmds"], 1, values, label(r["key"]),
                              scatter=float(lay.get("scatter", 0.0)), after_break=tuple(lay.get("after_break") or ())))
    return out


def group(store: Store, kind: str, **key: Any) -> dict[str, list[dict[str, Any]]]:
    """The runs of one benchmark kind, grouped by configuration label."""
    g: dict[str, list[dict[str, Any]]] = {}
    for r in store.select(kind, **key):
        g.setdefault(label(r["key"]), []).append(r)
    return g


def vals(runs: list[dict[str, Any]], f: str, scale: float = 1e-3) -> list[float]:
    """One field of every sample of the runs, in microseconds (from nanoseconds)."""
    return [x[f] * scale for r in runs for x in r["samples"] if f in x]


def quantiles(samples: list[float]) -> list[float]:
    """The residual quantiles of one sample around its median."""
    return residual_quantiles([Config(samples=samples)])


def tail_residual(ratios: np.ndarray) -> dict[str, Any]:
    """An empirical residual of sample/median ratios at the tail-dense PROBABILITIES (a profile's JSON)."""
    q = np.maximum.accumulate(np.maximum(np.quantile(ratios, PROBABILITIES), 1e-3))
    return {"family": "empirical", "quantiles": [round(float(x), 5) for x in q], "probabilities": list(PROBABILITIES)}


def pct(v: list[float]) -> dict[str, float]:
    """n, p50, p90 and p99 of a sample (empty: {})."""
    a = np.asarray(v, dtype=float)
    if not a.size:
        return {}
    return {"n": int(a.size), "p50": round(float(np.median(a)), 3), "p90": round(float(np.quantile(a, 0.9)), 3),
            "p99": round(float(np.quantile(a, 0.99)), 3)}


def fork_field(runs: list[dict[str, Any]]) -> str:
    """fork_cpu_ns when the benchmark recorded it (CPU time: robust to other load), else fork_ns."""
    ok = runs and all(any("fork_cpu_ns" in x for x in r["samples"]) for r in runs if r["samples"])
    return "fork_cpu_ns" if ok else "fork_ns"


def preempted_share(runs: list[dict[str, Any]]) -> float | None:
    """Share of fork() calls whose wall time exceeds their CPU time (by > 5 us and 2%): preempted."""
    pairs = [(x["fork_ns"], x["fork_cpu_ns"]) for r in runs for x in r["samples"] if "fork_cpu_ns" in x]
    if not pairs:
        return None
    return round(sum(1 for w, c in pairs if w - c > max(5000, 0.02 * c)) / len(pairs), 4)


def context_switch(store: Store) -> float | None:
    """Same-CPU pipe ping-pong: half a round trip minus a write+read without blocking (us)."""
    same = [r for r in store.select("sched", mode="pipe") if r["key"]["a"] == r["key"]["b"]]
    p1 = store.select("sched", mode="pipe1")
    if not same or not p1:
        return None
    return max(0.1, median(vals(same, "rtt_ns")) / 2 - median(vals(p1, "rtt_ns")))
