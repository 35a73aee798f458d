"""One creation on an otherwise idle machine: `forksim predict`."""

from __future__ import annotations

from typing import Any

from .config import parse_config
from .kernel.flags import DEFAULT_KIND
from .profile import Profile, load_profile, profile_info
from .runner import run_experiment
from .store import warn_if_off_host

__all__ = ["predict"]


def predict(
    rss: int,
    *,
    vmas: int = 40,
    anon_vmas: int | None = None,
    thp: bool = False,
    clone: str = DEFAULT_KIND,
    fds: int = 3,
    flags: list[str] | tuple[str, ...] = (),
    live_children: int = 0,
    wait: str = "pid",
    unshare: list[str] | tuple[str, ...] = (),
    profile: str | Profile = "auto",
    cpus: int | None = None,
    samples: int = 1200,
    seed: int = 0,
    warm: bool = False,
    scatter: float | None = None,
    spread: float | None = None,
    gap_us: float = 2000.0,
    child_life_us: float = 0.0,
) -> dict[str, Any]:
    """Latency of single creations, each on an idle machine (one parent, `gap_us` apart after each reap: by default
    2 ms, so that the CPUs halt and the stack cache refills between them; the image cools as much as the gap lets it,
    by the profile's warmth terms: 1 s gives a fork that finds it fully cold). `child_life_us`: the child's CPU time
    before it exits (its exit then finds the image cooled that long, and the next fork follows that exit). `cpus` defaults to the profile's machine. `samples` creations: 1200 by
    default, enough for a p99 (with fewer than ~1,000 it is None, and the reason is under "refused").
    `profile` "auto": the profile `forksim calibrate` stored for this host, else `default`. `fds` open
    file descriptors, clone `flags` beyond the kind's preset, `live_children` other children the parent
    keeps alive, `wait` how it reaps ("pid" or "any": waitpid(-1) walks its children list), `unshare`
    the flags the child unshares first: as `[workload.image] fds`, `[workload.child] flags`,
    `[workload] live_children`, `[workload] wait` and `[workload.child] unshare`.
    `scatter`: the image's physical layout as `[workload.image] scatter` (0..1, what tools/image_shape.py reads
    from /proc/PID/pagemap; None: the profile's fresh_image_scatter at this size, else 0); `spread` as `[workload.image] spread`
    (1..64; None: the profile's fresh_image_spread at this size, else 1).
    `warm`: every fork as warm as in a back-to-back loop (the warmth terms off), to compare with
    back-to-back measurements."""
    prof = profile if isinstance(profile, Profile) else load_profile(profile)
    warn_if_off_host(prof)
    if warm:
        prof = prof.model_copy(update={"warmth": None})
    if cpus is None:
        cpus = int(prof.provenance.get("cpus", 2) or 2)
    image: dict[str, Any] = {"rss": rss, "vmas": vmas, "thp": thp, "fds": fds}
    if anon_vmas is not None:
        image["anon_vmas"] = anon_vmas
    if scatter is not None:
        image["scatter"] = scatter
    if spread is not None:
        image["spread"] = spread
    exp = _experiment(image, cpus=cpus, seed=seed, samples=samples, live_children=live_children, wait=wait,
                      gap_us=gap_us, child={"clone": clone, "flags": list(flags), "unshare": list(unshare),
                                            "lifetime": child_life_us})
    s = run_experiment(exp, profile=prof).summary
    return {
        "clone": clone,
        "rss_bytes": rss,
        "vmas": vmas,
        "thp": thp,
        "fds": fds,
        "flags": list(exp.workload.child.flags),
        "live_children": live_children,
        "wait": wait,
        "unshare": list(exp.workload.child.unshare),
        "cpus": cpus,
        "gap_us": gap_us,
        "child_life_us": child_life_us,
        "scatter": s["image_scatter"],
        "spread": s["image_spread"],
        "profile": prof.name,
        "profile_used": profile_info(prof),
        **_latencies(s),
    }


def _latencies(s: dict[str, Any]) -> dict[str, Any]:
    """predict's figures from a run's summary: the samples, mean and percentiles of each latency, the stage means,
    and why a p99 was refused (too few samples)."""
    keys = ("mean", "p50", "p90", "p99")
    names = ("fork_latency_us", "roundtrip_latency_us", "child_start_latency_us")
    refused = {k: s[k]["refused"]["p99"] for k in names if "p99" in s[k].get("refused", {})}
    return {"samples": s["fork_latency_us"]["count"], **{k: {q: s[k][q] for q in keys} for k in names},
            "stage_us": s["stage_us"], **({"refused": refused} if refused else {})}


def _experiment(image: dict[str, Any], *, cpus: int, seed: int, samples: int, live_children: int, wait: str,
                gap_us: float, child: dict[str, Any]) -> Any:
    """predict's experiment: one parent forking `samples` times, `gap_us` after each reap (rss in bytes, times
    in us)."""
    return parse_config(
        {
            "experiment": {
                "name": "predict", "duration": 1e12, "warmup": 0, "replications": 1, "seed": seed,
                "max_creations": samples,
            },
            "machine": {"cpus": cpus},
            "workload": {"kind": "closed", "parents": 1, "think_time": gap_us, "live_children": live_children,
                         "wait": wait, "image": image, "child": child},
        },
        source="predict",
        resolved=True,
    )
