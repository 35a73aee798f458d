"""The model's side of tools/redis_trace.py: each simulated Redis BGSAVE fork of validate's config (apps.redis_config)
with its placement, the parent's wait after copy_process (fork() return minus the end of copy_process_tail), and
fork_latency_us, from the first replication's timeline (forksim.trace.build_trace).

    python tools/redis_model_forks.py PROFILE RSS_BYTES [VMAS ANON_VMAS [SCATTER]]

SCATTER: the Redis image's physical layout as /proc/PID/pagemap shows it (0..1; tools/image_shape.py PID or
tools/redis_trace.py's per-block `scatter`); absent: the profile's fresh_image_scatter, else 0.
"""

from __future__ import annotations

import json
import sys

import pandas as pd

from forksim.config import parse_config
from forksim.trace import build_trace
from forksim.validation.apps import redis_config


def model_forks(profile: str, rss: int, vmas: int = 122, anon_vmas: int = 55, span_s: float = 30.0,
                scatter: float | None = None) -> pd.DataFrame:
    cfg = redis_config({"rss_bytes": rss, "vmas": vmas, "anon_vmas": anon_vmas, "scatter": scatter}, 1.0, cpus=2,
                       profile=profile, quick=True)
    cfg["experiment"]["duration"] = span_s * 1e6
    tr = build_trace(parse_config(cfg, source="redis_model_forks", resolved=True), profile,
                     max_span_us=span_s * 1e6, max_events=10**7)
    ev = [e for e in tr["traceEvents"] if e.get("ph") == "X"]
    tails = sorted(e["ts"] + e["dur"] for e in ev if e["name"] == "copy_process_tail")
    rows = []
    for f in (e for e in ev if e["name"] == "fork()"):
        end = f["ts"] + f["dur"]
        tail_end = max((t for t in tails if f["ts"] <= t <= end + 1e-6), default=end)
        a = f["args"]
        rows.append({"fork_us": a["fork_latency_us"], "local": a["parent_cpu"] == a["child_cpu"],
                     "wait_after_clone_us": end - tail_end})
    return pd.DataFrame(rows)


def main() -> int:
    prof, rss = sys.argv[1], int(sys.argv[2])
    vmas, anon = (int(sys.argv[3]), int(sys.argv[4])) if len(sys.argv) > 4 else (122, 55)
    scatter = float(sys.argv[5]) if len(sys.argv) > 5 else None
    d = model_forks(prof, rss, vmas, anon, scatter=scatter)
    out = {"scatter": scatter, "forks": int(len(d)), "local_share": round(float(d.local.mean()), 3),
           "fork_us_p50": round(float(d.fork_us.median()), 0),
           "by_placement": {("local" if k else "cross"): {"n": int(len(g)), "fork_us_p50": round(float(g.fork_us.median()), 0),
                                                          "wait_after_clone_us_max": round(float(g.wait_after_clone_us.max()), 1)}
                            for k, g in d.groupby("local")}}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
