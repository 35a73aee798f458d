"""A calibration's tails against its own measurements: each family's untraced pinned loop at RSS 0 in a raw file
(fork, vfork, thread, posix_spawn; the creating call's and the round trip's p50 and p99, the median over
the runs) beside the model's pinned closed loop on the same image with each profile given (one refitted from that
raw file, say, before and after a change to the fits). The stages' residuals are fitted from the traced runs, so
this is where a residual that draws a rare stall too often (or never) shows.

    python tools/tail_selfcheck.py RAW PROFILE [PROFILE ...]

Prints one line a family, and the median and largest |error| of the call's p99 per profile.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
from pathlib import Path

import numpy as np

from forksim.calibration.plan import BENCH_MODES
from forksim.validation.compare import simulate

# the validation's closed loop, pinned, one parent, the base image forkbench forks at RSS 0
LOOP = {"experiment": {"name": "tail-selfcheck", "duration": 2e6, "warmup": 2e5, "replications": 2, "seed": 42},
        "machine": {"cpus": 2, "profile": None},
        "workload": {"kind": "closed", "parents": 1, "think_time": 0.0,
                     "image": {"rss": 118784, "vmas": 31, "thp": False, "threads": 1, "anon_vmas": 14},
                     "child": {"clone": "fork", "lifetime": 0.0, "flags": [], "unshare": []},
                     "live_children": 0, "wait": "pid", "pin": True},
        "background": {"cpu_hogs": 0, "hog_duty": 1.0, "hog_period": 10000.0}}
FAMILIES = ("fork", "vfork", "thread", "posix_spawn")


def measured(raw: dict) -> dict[str, np.ndarray]:
    """Per family: [call p50, call p99, round trip p50, round trip p99] in us, the median over its untraced
    pinned runs at RSS 0 with no extra VMAs."""
    out: dict[str, list] = {}
    mode_kind = {BENCH_MODES[k]: k for k in FAMILIES}
    for r in raw["runs"]:
        k = r["key"]
        kind = mode_kind.get(r["kind"])
        if kind is None or k.get("traced") or not k.get("pinned") or k.get("rss") != 0 or k.get("anon_vmas") \
                or k.get("file_vmas") or k.get("thp"):
            continue
        call = np.array([s["fork_ns"] for s in r["samples"] if "fork_ns" in s]) / 1e3
        rt = np.array([s["rt_ns"] for s in r["samples"] if "rt_ns" in s]) / 1e3
        if call.size and rt.size:
            out.setdefault(kind, []).append(np.percentile(call, [50, 99]).tolist() + np.percentile(rt, [50, 99]).tolist())
    return {kind: np.median(np.array(rows), axis=0) for kind, rows in out.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("raw", type=Path, help="a calibration's raw file (calibrate --raw)")
    ap.add_argument("profiles", nargs="+", help="profile files or names")
    a = ap.parse_args(argv)
    data = a.raw.read_bytes()
    meas = measured(json.loads(gzip.decompress(data) if a.raw.suffix == ".gz" else data))
    errors: dict[str, list[float]] = {p: [] for p in a.profiles}
    for kind, m in meas.items():
        line = f"{kind:11s} measured call p50/p99 {m[0]:6.1f}/{m[1]:6.1f} us, round trip {m[2]:6.1f}/{m[3]:6.1f} us"
        for prof in a.profiles:
            cfg = copy.deepcopy(LOOP)
            cfg["machine"]["profile"] = prof
            cfg["workload"]["child"]["clone"] = kind
            s = simulate(cfg, prof)
            f, rt = s["fork_latency_us"], s["roundtrip_latency_us"]
            errors[prof].append(abs(f["p99"] / m[1] - 1.0))
            line += f" | {Path(prof).stem}: {f['p50']:6.1f}/{f['p99']:6.1f}, {rt['p50']:6.1f}/{rt['p99']:6.1f}"
        print(line, flush=True)
    for prof, e in errors.items():
        print(f"{Path(prof).stem}: call p99 |error| median {100 * np.median(e):.0f}%, largest {100 * max(e):.0f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
