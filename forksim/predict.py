"""One creation on an otherwise idle machine: `forksim predict`."""

from __future__ import annotations

from typing import Any

from .config import parse_config
from .profile import Profile, load_profile
from .runner import run_experiment

__all__ = ["predict"]


def predict(
    rss: int,
    *,
    vmas: int = 40,
    anon_vmas: int | None = None,
    thp: bool = False,
    clone: str = "fork",
    fds: int = 3,
    flags: list[str] | tuple[str, ...] = (),
    live_children: int = 0,
    profile: str | Profile = "default",
    cpus: int | None = None,
    samples: int = 400,
    seed: int = 0,
) -> dict[str, Any]:
    """Latency of single creations, each on an idle machine (one parent, 2 ms apart so the CPUs
    halt and the stack cache refills between them). `cpus` defaults to the profile's machine.
    `fds` open file descriptors, clone `flags` beyond the kind's preset, `live_children` other
    children the parent keeps alive: as `[workload.image] fds`, `[workload.child] flags`,
    `[workload] live_children`."""
    prof = profile if isinstance(profile, Profile) else load_profile(profile)
    if cpus is None:
        cpus = int(prof.provenance.get("cpus", 2) or 2)
    image: dict[str, Any] = {"rss": rss, "vmas": vmas, "thp": thp, "fds": fds}
    if anon_vmas is not None:
        image["anon_vmas"] = anon_vmas
    exp = parse_config(
        {
            "experiment": {
                "name": "predict", "duration": 1e12, "warmup": 0, "replications": 1, "seed": seed,
                "max_creations": samples,
            },
            "machine": {"cpus": cpus},
            "workload": {"kind": "closed", "parents": 1, "think_time": 2000.0, "live_children": live_children,
                         "image": image, "child": {"clone": clone, "flags": list(flags)}},
        },
        source="predict",
    )
    result = run_experiment(exp, profile=prof)
    s = result.summary
    keys = ("mean", "p50", "p90", "p99")
    return {
        "clone": clone,
        "rss_bytes": rss,
        "vmas": vmas,
        "thp": thp,
        "fds": fds,
        "flags": list(exp.workload.child.flags),
        "live_children": live_children,
        "cpus": cpus,
        "profile": prof.name,
        "samples": s["fork_latency_us"]["count"],
        "fork_latency_us": {k: s["fork_latency_us"][k] for k in keys},
        "roundtrip_latency_us": {k: s["roundtrip_latency_us"][k] for k in keys},
        "child_start_latency_us": {k: s["child_start_latency_us"][k] for k in keys},
        "stage_us": s["stage_us"],
    }
