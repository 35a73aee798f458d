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
    profile: str | Profile = "default",
    cpus: int | None = None,
    samples: int = 400,
    seed: int = 0,
    warm: bool = False,
) -> dict[str, Any]:
    """Latency of single creations, each on an idle machine (one parent, 2 ms apart so the CPUs
    halt and the stack cache refills between them; the image cools as much as 2 ms let it, by the
    profile's warmth terms). `cpus` defaults to the profile's machine. `warm`: every fork as warm as
    in a back-to-back loop (the warmth terms off), to compare with back-to-back measurements."""
    prof = profile if isinstance(profile, Profile) else load_profile(profile)
    if warm:
        prof = prof.model_copy(update={"warmth": None})
    if cpus is None:
        cpus = int(prof.provenance.get("cpus", 2) or 2)
    image: dict[str, Any] = {"rss": rss, "vmas": vmas, "thp": thp}
    if anon_vmas is not None:
        image["anon_vmas"] = anon_vmas
    exp = parse_config(
        {
            "experiment": {
                "name": "predict", "duration": 1e12, "warmup": 0, "replications": 1, "seed": seed,
                "max_creations": samples,
            },
            "machine": {"cpus": cpus},
            "workload": {"kind": "closed", "parents": 1, "think_time": 2000.0, "image": image, "child": {"clone": clone}},
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
        "cpus": cpus,
        "profile": prof.name,
        "samples": s["fork_latency_us"]["count"],
        "fork_latency_us": {k: s["fork_latency_us"][k] for k in keys},
        "roundtrip_latency_us": {k: s["roundtrip_latency_us"][k] for k in keys},
        "child_start_latency_us": {k: s["child_start_latency_us"][k] for k in keys},
        "stage_us": s["stage_us"],
    }
