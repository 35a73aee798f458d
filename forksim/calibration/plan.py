"""What a calibration measures (the plans: smoke, quick, full) and where its raw samples go (Store)."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..kernel.flags import COPIES_MM, EXECS, FORK, FORK_EXEC, KINDS, POSIX_SPAWN, THREAD, VFORK

__all__ = ["MiB", "GiB", "Plan", "PLANS", "Store", "read_raw", "write_raw", "label", "BENCH_MODES", "VARIANTS",
           "FORK_MODE", "VFORK_MODE", "SPAWN_MODE", "FORKEXEC_MODE", "THREAD_MODE", "measured_segments"]

MiB = 1024**2
GiB = 1024**3

# forkbench's -m mode of each creation kind of the kind table (kernel/flags.KINDS): the kind's name
# without glibc's posix_ prefix and without underscores (posix_spawn -> spawn, fork_exec -> forkexec)
BENCH_MODES = {kind: kind.removeprefix("posix_").replace("_", "") for kind in KINDS}
# The same vocabulary by kind: a kind's forkbench mode is also the family key of its runs in the raw
# files (Store.select), so the fitters name a family by these and never spell forkbench's words again.
FORK_MODE, VFORK_MODE, SPAWN_MODE, FORKEXEC_MODE, THREAD_MODE = (
    BENCH_MODES[kind] for kind in (FORK, VFORK, POSIX_SPAWN, FORK_EXEC, THREAD))
# the kinds other than the plain fork (a copied mm and no exec: measured against the image), each with
# its forkbench mode, in the kind table's order: calibration measures each at RSS 0
VARIANTS = {kind: mode for kind, mode in BENCH_MODES.items() if kind not in COPIES_MM - EXECS}


# the store kind of calibrate's forkbench -D runs: an image written between forks, or only read (written.py)
WRITTEN = "written"


@dataclass(frozen=True)
class Plan:
    name: str
    sizes: tuple[int, ...]  # pinned fork sweep (THP off)
    held_out: tuple[int, ...]  # measured, never fitted
    rounds: int
    unpinned_sizes: tuple[int, ...]
    vma_counts: tuple[int, ...]
    thp_sizes: tuple[int, ...]
    traced_sizes: tuple[int, ...]
    traced_vmas: tuple[int, ...]
    budget_us: float  # per (size, round): time spent in fork round trips
    variant_reps: int
    sched_reps: int
    cow_pages: int
    cow_reps: int
    traced_reps: int
    burst_reps: int
    optional_sizes: tuple[int, ...] = ()  # measured when MemAvailable allows, else refused
    # the image's physical layout (layout.py): sizes forked again with their pages touched in a random order
    # (forkbench -L random), in `layout_rounds` of the sweep's rounds beside the sweep's in-order image of the
    # same size (measured in those rounds where the sweep has no such size); `layout_held_out` is measured but
    # left out of the fit of the scatter terms (2026-12-02, this host: the forks' knee lies at ~128 MiB, which the
    # fit needs, as it needs a size past it, 256 MiB; 64 MiB, below it, is held out: the curve must keep it cheap)
    layout_sizes: tuple[int, ...] = ()
    layout_held_out: tuple[int, ...] = ()
    layout_rounds: int = 0
    # the busy machine (busy.py): (parents, hogs, rss) loads of the validation's load generator, traced, each
    # `busy_reps` times for `busy_s` seconds after `busy_warmup_s`: where the kernel places hogs, parents and
    # children (the profile's `balancing` section). The quick plan's four loads give each share its cases:
    # K2 beside 1 hog (an idle CPU while a task waits), 2 and 4 hogs (no CPU idle, every runnable difference),
    # and K1 beside 2 hogs: a lone parent's CPU of a lower type than the hogs', whose children this kernel keeps
    # (13,634 of 13,641 and 10,634 of 10,634 beside 1 and 2 hogs, 2026-12-05 17:10) where K2 beside 1 hog, in the
    # same case, had 2-7% pushed to the hog's CPU, there to wait for its slice to the next tick; the shares pool the
    # loads by how often each meets a case, so without a lone parent its rows took K2's push (acc-6, 17:19: K1 beside
    # 1 and 2 hogs at -66% and -61% throughput, round trip p99 +980% and +854%; the same quick profile with the
    # shares of the same minute's traces of these four loads, two repetitions: +16 / +17% and +13 / +15%, p99 +17%).
    busy_loads: tuple[tuple[int, int, int], ...] = ()
    busy_s: float = 2.0
    busy_warmup_s: float = 0.5
    busy_reps: int = 1
    # the interruption probe's spin, seconds in all (interruptions.py: 4 windows over the CPUs)
    interruption_s: float = 2.0
    # the host speed probe's units of work, seconds in all (host_speed.py: PARTS parts spread over the calibration,
    # each CPU in turn; 1,000 windows of 2 ms at 2 s; how much of the time is slow moves within a minute: 1-23% in
    # 4 s runs a minute apart)
    host_speed_s: float = 4.0
    # the sweep's rounds that fork the images of 1 GiB and more (0: every round), each with the forks of the rounds
    # it leaves out: a round builds its image anew, 0.4 s at 1 GiB on a quiet host and up to 1.5 s when the host
    # backs the memory afresh (2026-12-05), for ~30 ms a fork round trip
    gib_rounds: int = 0
    # images whose parent writes them between forks (written.py): forks per half of each forkbench -D run
    written_sizes: tuple[int, ...] = ()
    written_forks: int = 20


PLANS = {
    "smoke": Plan("smoke", (0, 16 * MiB), (8 * MiB,), 1, (0,), (10, 300), (16 * MiB,), (0, 16 * MiB), (300,),
                  60_000, 30, 40, 512, 3, 15, 3, layout_sizes=(16 * MiB,), layout_rounds=1, interruption_s=0.5,
                  written_sizes=(16 * MiB,), written_forks=4, host_speed_s=0.5),
    # quick: 64 s on a 2-vCPU VM with 4 rounds and THP at 256 MiB and 1 GiB (2026-12-04 17:24, AMD zen4; 70 s on
    # 2026-12-03's AMD host, 81.8 s on a slower one, its 1 GiB rounds 1.7-2.6 s against 1.1-1.4; seconds_by_step in
    # the profile's diagnostics says where it goes): 3 rounds of 300 ms of fork round trips per size (a round's
    # setup, its images touched, is ~0.5 s of a 1 GiB round's 0.8-1.2), no unpinned 1 GiB, no traced 1 GiB without
    # THP (2.1 s; refitting the 2026-12-02 03:21 quick raw file without it moved predict at 0-1 GiB by under 0.3%),
    # THP at 256 and 512 MiB (a first 1 GiB THP image took 1.9-2.4 s of system time and the next 0.1 s: the
    # host backs huge frames the guest reported free anew, 2026-12-04), one traced VMA count; the fitted terms
    # are the full plan's. Since 2026-12-05 (the families' 100 ms gap and a second co-runner sweep, +1.6 s, put the
    # command at 61 s) the busy loads run 0.8 s, not 1 (their shares still from thousands of forks: 4,136-5,253 a
    # share in 1 s), and the interruption probe 1.5 s, not 2 (~1,800 gaps at this host's ~1,200/s, its tail
    # quantiles up to p99.9 from a dozen or more); and 1 GiB is forked in 2 of the 3 rounds, as many times in all
    # (the three acceptance runs of 09:39-10:40 took 60.2, 59.4 and 60.7 s in fresh accounts)
    "quick": Plan("quick", (0, 16 * MiB, 256 * MiB, 1 * GiB), (64 * MiB,), 3, (0, 64 * MiB, 256 * MiB),
                  (10, 100, 1000, 10000), (256 * MiB, 512 * MiB), (0, 16 * MiB, 256 * MiB), (1000,),
                  300_000, 300, 400, 4096, 15, 50, 30, layout_sizes=(64 * MiB, 128 * MiB, 256 * MiB),
                  layout_held_out=(64 * MiB,), layout_rounds=2,
                  busy_loads=((1, 2, 0), (2, 1, 0), (2, 2, 0), (2, 4, 0)), busy_s=0.8, busy_warmup_s=0.3,
                  interruption_s=1.5, gib_rounds=2, written_sizes=(64 * MiB, 256 * MiB), written_forks=12,
                  host_speed_s=2.0),
    "full": Plan("full", (0, 16 * MiB, 128 * MiB, 256 * MiB, 1 * GiB, 2 * GiB), (64 * MiB, 512 * MiB), 10,
                 (0, 64 * MiB, 256 * MiB, 1 * GiB), (10, 100, 1000, 3000, 10000), (64 * MiB, 256 * MiB, 1 * GiB, 2 * GiB),
                 (0, 16 * MiB, 128 * MiB, 256 * MiB, 1 * GiB, 2 * GiB), (1000, 10000),
                 450_000, 600, 1000, 8192, 20, 80, 60, optional_sizes=(4 * GiB,),
                 layout_sizes=(64 * MiB, 128 * MiB, 256 * MiB, 1 * GiB), layout_held_out=(64 * MiB,), layout_rounds=4,
                 busy_loads=tuple((k, h, rss) for rss in (0, 256 * MiB) for k in (1, 2) for h in (1, 2, 4)),
                 busy_reps=2, written_sizes=(64 * MiB, 256 * MiB, 1 * GiB), written_forks=30),
}




@dataclass
class Store:
    """Every raw sample, keyed by what was measured."""

    runs: list[dict[str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, kind: str, key: dict[str, Any], shape: dict[str, Any], samples: list[dict[str, Any]],
            segments: list[dict[str, float]] | None = None) -> None:
        self.runs.append({"kind": kind, "key": key, "shape": shape, "samples": samples,
                          "segments": segments or []})

    def select(self, kind: str, **key: Any) -> list[dict[str, Any]]:
        return [r for r in self.runs if r["kind"] == kind and all(r["key"].get(k) == v for k, v in key.items())]


def write_raw(path: str | Path, raw: dict[str, Any]) -> None:
    """A raw-sample file, as JSON (gzip when the name ends in .gz): the fits are redone from it."""
    path = Path(path)
    data = json.dumps(raw).encode()
    # level 6: 4% larger than 9 at a quarter of its time (0.11 s against 0.44 s for a quick plan's 4.4 MB)
    path.write_bytes(gzip.compress(data, compresslevel=6) if path.suffix == ".gz" else data)


def read_raw(path: str | Path) -> dict[str, Any]:
    """A raw-sample file written by write_raw."""
    path = Path(path)
    data = path.read_bytes()
    return json.loads(gzip.decompress(data) if path.suffix == ".gz" else data)


def measured_segments(segments: list[dict[str, float]], samples: list[dict[str, Any]]) -> list[dict[str, float]]:
    """A traced forkbench run's segments of its measured creations only. forkbench makes its -w warm-up
    creations first and reports no sample for them, but the trace holds them too, and the run's first
    creation is cold (2-8x its median in every traced run of the 2026-12-02 calibrations): kept, it put a
    cold outlier into every warm stage's residual tail (an 812 us execve among 109 of ~28 us)."""
    return segments[max(0, len(segments) - len(samples)):]


def label(key: dict[str, Any]) -> str:
    parts = []
    if key.get("rss") is not None:
        r = key["rss"]
        parts.append(f"{r // GiB}GiB" if r and r % GiB == 0 else f"{r // MiB}MiB")
    if key.get("anon_vmas"):
        parts.append(f"+{key['anon_vmas']}anonVMA")
    if key.get("file_vmas"):
        parts.append(f"+{key['file_vmas']}fileVMA")
    if key.get("thp"):
        parts.append("THP")
    return " ".join(parts) or "base"


