"""Same seed, same results: a fingerprint of what the model computes, to compare across a speed change.

    python tools/fingerprint.py record before.json     # on the commit before the change
    python tools/fingerprint.py record after.json      # after it
    python tools/fingerprint.py compare before.json after.json
    python tools/fingerprint.py record --full v.json   # the validation configs at their own length
    python tools/fingerprint.py record --seed-offset 1 other-seeds.json  # the null for a change of streams
    python tools/fingerprint.py record --full --seed-offset 1 v-other-seeds.json  # the same at full length

`record` runs, with fixed seeds: the 23 validation scenarios' simulator configs (tools/validation-configs.json,
shortened to 1 s), every experiment in experiments/ (shortened as the tests shorten them: tools/shortened.toml), the bench's
2- and 256-CPU rows and the engine's queueing checks (M/M/1, M/M/4, M/G/1 under the fair scheduler), and writes every summary.json
(less its wall time) and a hash of every records table (and of a server's request table). `compare` prints, per run, whether the
summaries and records are identical (the events per creation aside: they are the speed) and, where
not, how many of the two summaries' 95% intervals fail to overlap (a change of random streams, such as
common random numbers, must leave the distributions as they were: few intervals apart) and the
largest relative difference of any figure, and a two-sample Kolmogorov-Smirnov test of each run's
per-creation fork() and round-trip latencies (post-warm-up; a fixed random subsample of at most
`KS_SAMPLE` of each is stored). Creations within a run are not independent (they queue behind each
other), so the KS p-values are too small in absolute terms: hold the count of runs it rejects against
the null's (`record --seed-offset 1` against the old tree), as for the intervals.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]  # the forksim of this tree (an old checkout: copy tools/ and forksim/summary.py into it)

from forksim.summary import fields_of  # noqa: E402 - after the path

# What a speed change may change: how many events a creation takes (reported beside the results).
SPEED_FIGURES = fields_of(speed=True)
# Where a result came from, not what the model computed (the profile file's path differs per checkout).
PROVENANCE_KEYS = fields_of("provenance")
# Real time taken: differs on every run.
WALL_CLOCK = fields_of("wall_clock")
# The shortened sizes the tests run (tools/shortened.toml). Every run pins the shipped `default`
# profile: a profile `forksim calibrate` stored on this machine (machine.profile = "auto") must not
# change the fingerprint.
SHORTENED = tomllib.loads((ROOT / "tools" / "shortened.toml").read_text())
PINNED = {"machine.profile": "default"}
# Per-creation latencies kept per run for the KS test: a fixed random subsample of at most this many
# (the whole sample of the longest runs would make the file tens of MB).
KS_SAMPLE = 4000
KS_COLUMNS = ("fork_latency_us", "roundtrip_latency_us")


def _runs(full: bool = False):
    """(name, experiment) pairs: every run the fingerprint covers (`full`: only the validation
    scenarios, at the duration and replications `forksim validate` gives them)."""
    from forksim.bench import scenario_experiment
    from forksim.config import load_experiment, parse_config, parse_override

    configs = json.loads((ROOT / "tools" / "validation-configs.json").read_text())["configs"]
    for name, cfg in configs.items():
        cfg = json.loads(json.dumps(cfg))
        cfg.setdefault("machine", {})["profile"] = "default"
        if not full:
            cfg["experiment"].update({"duration": 1e6, "warmup": 0.2e6, "replications": 2})
        yield f"validate/{name}", parse_config(cfg, source=name, resolved=True)  # us, bytes, /s
    if full:
        return
    for path in sorted((ROOT / "experiments").glob("*.toml")):
        overrides = dict(parse_override(o) for o in SHORTENED["short"])
        overrides.update(PINNED)
        overrides.update(parse_override(o) for o in SHORTENED["extra"].get(path.stem, []))
        yield f"experiment/{path.stem}", load_experiment(path, overrides)
    for cpus in (2, 256):
        yield f"bench/{cpus}cpu-closed", scenario_experiment(cpus, 0, "closed", 3000, replications=2)


def _queueing() -> dict[str, float]:
    """The engine's queueing checks, as figures (tests/test_engine.py asserts them against theory)."""
    from forksim.queueing import FCFS, fair, simulate

    out = {}
    for name, (lam, cpus, params, preemptible, service) in {
        "mm1_fcfs_rho0.9": (0.9, 1, FCFS, False, "exponential"),
        "mm4_fcfs_rho0.8": (3.2, 4, FCFS, False, "exponential"),
        "mg1_fair_hyperexp_rho0.7": (0.7, 1, fair(0.04), True, "hyperexponential"),
    }.items():
        run = simulate(np.random.SeedSequence(7), lam, cpus, 20_000, service, params, preemptible)
        out[name] = {"mean_response": float(run.response.mean()),
                     "p99_response": float(np.percentile(run.response, 99)), "busy": run.busy, "end": run.end}
    return out


def _records_hash(df: pd.DataFrame) -> str:
    """A hash of the records table's values, column by column in order (whatever their names, in-memory
    layout or dtypes: a renamed column or a categorical hashes the same); the derived `warmup` mark is
    left out, so tables of trees before and after it compare."""
    df = df.drop(columns=["warmup"], errors="ignore")
    return hashlib.sha256(df.to_csv(index=False, header=False, float_format="%.17g").encode()).hexdigest()


def _latency_samples(df: pd.DataFrame) -> dict[str, list[float]]:
    """The post-warm-up creations' latencies (finished ones), each a fixed random subsample of at most KS_SAMPLE."""
    kept = df[~df["warmup"]] if "warmup" in df else df
    out = {}
    for col in KS_COLUMNS:
        v = kept[col].to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        if len(v) > KS_SAMPLE:
            v = np.random.default_rng(0).choice(v, KS_SAMPLE, replace=False)
        out[col] = [round(float(x), 4) for x in v]
    return out


def record(out: Path, full: bool = False, seed_offset: int = 0) -> None:
    """`seed_offset`: every run on other seeds (the null for `compare`'s interval count: the same
    model on other random numbers)."""
    from forksim.runner import run_experiment

    result = {}
    t0 = time.perf_counter()
    for name, exp in _runs(full):
        t = time.perf_counter()
        res = run_experiment(exp, workers=1, seed=exp.experiment.seed + seed_offset)
        summary = dict(res.summary)
        for key in (*WALL_CLOCK, *PROVENANCE_KEYS):
            summary.pop(key, None)
        result[name] = {"summary": summary, "records_sha256": _records_hash(res.records),
                        "latencies": _latency_samples(res.records)}
        if res.requests is not None:  # a server's per-request table (requests.parquet)
            result[name]["requests_sha256"] = _records_hash(res.requests)
        print(f"{name:55s} {time.perf_counter() - t:6.2f} s", flush=True)
    if not full:
        result["engine/queueing"] = {"summary": _queueing(), "records_sha256": None}
    out.write_text(json.dumps(result, indent=1, sort_keys=True, default=str))
    print(f"{len(result)} runs in {time.perf_counter() - t0:.0f} s -> {out}")


def _flatten(d, prefix=""):
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            yield from _flatten(v, f"{prefix}[{i}]")
    else:
        yield prefix, d


def _intervals(summary: dict, prefix: str = ""):
    """(path, [lo, hi]) of every 95% interval in a summary: a rate's ci95, a latency's ci95 per statistic."""
    for k, v in summary.items():
        if not isinstance(v, dict):
            continue
        ci = v.get("ci95")
        if isinstance(ci, list) and len(ci) == 2 and None not in ci:
            yield f"{prefix}{k}.mean", ci
        elif isinstance(ci, dict):
            for stat, iv in ci.items():
                if isinstance(iv, list) and len(iv) == 2 and None not in iv:
                    yield f"{prefix}{k}.{stat}", iv
        else:
            yield from _intervals(v, f"{prefix}{k}.")


def _apart(sa: dict, sb: dict) -> tuple[int, list[str]]:
    """How many 95% intervals the two summaries share, and those that do not overlap (a change that
    alters the random streams, not the model, keeps them overlapping bar the odd 1-in-20 miss)."""
    ia, ib = dict(_intervals(sa)), dict(_intervals(sb))
    shared = sorted(set(ia) & set(ib))
    return len(shared), [k for k in shared if ia[k][1] < ib[k][0] or ib[k][1] < ia[k][0]]


def _ks(ra: dict, rb: dict) -> list[tuple[str, float, float]]:
    """(latency, KS statistic D, p-value) of each latency both runs stored samples of."""
    from scipy.stats import ks_2samp

    la, lb = ra.get("latencies") or {}, rb.get("latencies") or {}
    out = []
    for col in KS_COLUMNS:
        x, y = la.get(col), lb.get(col)
        if x and y:
            t = ks_2samp(x, y)
            out.append((col, float(t.statistic), float(t.pvalue)))
    return out


def compare(a_path: Path, b_path: Path) -> int:
    a, b = json.loads(a_path.read_text()), json.loads(b_path.read_text())
    differ = 0
    tally = [0, 0]  # intervals compared, intervals that do not overlap
    ks_tally = [0, 0, 0.0]  # KS tests made, tests with p < 0.05, the largest D
    for name in sorted(set(a) | set(b)):
        if name not in a or name not in b:
            print(f"{name}: only in {'the first' if name in a else 'the second'}")
            differ += 1
            continue
        sa, sb = ({k: v for k, v in x[name]["summary"].items() if k not in PROVENANCE_KEYS} for x in (a, b))
        fa, fb = dict(_flatten(sa)), dict(_flatten(sb))
        speed = "".join(f"; {k} {fa.pop(k, None)} -> {fb.pop(k, None)}" for k in SPEED_FIGURES)
        same_rec = a[name]["records_sha256"] == b[name]["records_sha256"]
        if "requests_sha256" in a[name] and "requests_sha256" in b[name]:  # fingerprints made before it lack it
            same_rec = same_rec and a[name]["requests_sha256"] == b[name]["requests_sha256"]
        if fa == fb and same_rec:
            print(f"{name:45s} identical{speed}")
            continue
        differ += 1
        worst, where = 0.0, ""
        for k in set(fa) | set(fb):
            x, y = fa.get(k), fb.get(k)
            if x == y:
                continue
            if isinstance(x, (int, float)) and isinstance(y, (int, float)) and x != 0:
                r = abs(y - x) / abs(x)
            else:
                r = math.inf
            if r >= worst:
                worst, where = r, k
        shared, apart = _apart(sa, sb)
        tally[0] += shared
        tally[1] += len(apart)
        ks = _ks(a[name], b[name])
        ks_tally[0] += len(ks)
        ks_tally[1] += sum(p < 0.05 for _c, _d, p in ks)
        ks_tally[2] = max([ks_tally[2], *(d for _c, d, _p in ks)])
        ks_text = "".join(f"; KS {c.split('_')[0]} D={d:.3f} p={p:.2g}" for c, d, p in ks)
        print(f"{name:45s} DIFFERS: records {'same' if same_rec else 'differ'}; largest summary change "
              f"{worst:.3g} (relative) at {where}; 95% intervals apart: {len(apart)} of {shared}"
              + (f" ({', '.join(apart)})" if apart else "") + ks_text)
    print(f"{differ} of {len(set(a) | set(b))} runs differ "
          f"(records or any summary figure but {', '.join(SPEED_FIGURES)})")
    if tally[0]:
        print(f"where they differ: {tally[1]} of {tally[0]} 95% intervals do not overlap "
              f"({100 * tally[1] / tally[0]:.1f}%; the null to hold it against: the old tree against itself "
              "on other seeds, `record --seed-offset 1`)")
    if ks_tally[0]:
        print(f"two-sample KS tests of per-creation latencies (fork, round trip): {ks_tally[1]} of {ks_tally[0]} "
              f"with p < 0.05, largest D {ks_tally[2]:.3f} (hold against the null's count: creations within a run "
              "are correlated, so p-values run small)")
    return 1 if differ else 0


def _record_args(args: list[str]) -> tuple[Path, bool, int] | None:
    """`[--full] [--seed-offset N] OUT` (either order), or None where they do not parse."""
    full, offset = False, 0
    while len(args) > 1:
        if args[0] == "--full":
            full, args = True, args[1:]
        elif args[0] == "--seed-offset" and len(args) > 2 and args[1].lstrip("-").isdigit():
            offset, args = int(args[1]), args[2:]
        else:
            return None
    return (Path(args[0]), full, offset) if len(args) == 1 and not args[0].startswith("--") else None


if __name__ == "__main__":
    parsed = _record_args(sys.argv[2:]) if len(sys.argv) > 2 and sys.argv[1] == "record" else None
    if parsed is not None:
        out, full, offset = parsed
        record(out, full=full, seed_offset=offset)
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        sys.exit(compare(Path(sys.argv[2]), Path(sys.argv[3])))
    else:
        sys.exit(__doc__)
