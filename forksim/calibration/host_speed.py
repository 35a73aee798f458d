"""The host's slow episodes: how often, for how long and by how much a vCPU's work runs slower than usual.

A pinned loop (csrc/pace.c) times a fixed unit of work (~10 us: a multiply-add chain over an L1-sized table,
no system call) back to back on one CPU while the other is idle, on each CPU in turn; calibrate runs it in PARTS
parts spread over its jobs (the Store keeps each run's windows, so refit redoes the fit). Per `WINDOW_US` of
units, the units' median over the unit at the usual speed (pooled over every run: the windows near the fastest)
is the host's factor on work there; windows above `SLOW_AT` are slow. A run of slow windows is an episode; the
runs between are the usual stretches. Their lengths (the windows' count times WINDOW_US) and the slow windows'
factors become the profile's `host_speed` quantiles (forksim.profile.HostSpeed); the model draws them in turn
per CPU (forksim.host_speed).

Why the window median: a unit that an interruption hits (the tick, the host taking the vCPU for tens of us) is
long on its own and is the `interruptions` section's (hiccup.c); the median of a window's ~200 units ignores it.
Measured on the AMD zen4 host (2026-12-06 20:45-21:00, 4 s per CPU, each run against its own median): 8-31% of
the windows slow, their factor p50 1.3-1.4 (up to 1.8), episodes 6-17 ms on average and up to 290 ms; one vCPU's
episodes independent of the other's (P(CPU 1 slow) 0.31, 0.29 given CPU 0 slow), and our own vCPUs do not slow
each other (a unit's median the same with the other vCPU spinning: not SMT siblings that contend). A pinned fork
loop of the validation's load generator at RSS 0 at the same time: 6-15% of its 2 ms windows slow, the forks
there 1.4x as long (p50 61-64 against 44-46 us), no interrupt, softirq or switch of the guest's inside the
slower ones up to the p98 (traced: irq, softirq, local_timer and sched_switch events). How much of the time
is slow moves with the host's other tenants from minute to minute; the profile keeps what its calibration saw.

    python -m forksim.calibration.host_speed measure [--seconds S] [--rounds N --every S] [--merge PROFILE]...
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import MeasurementError
from .bench import Benchmarks, build
from .merge import write_merged
from .plan import Store

__all__ = ["measure_host_speed", "measure_part", "fit_host_speed", "fit_store", "probe", "windows", "WINDOW_US",
           "SLOW_AT", "PROBABILITIES", "UNIT_ITERATIONS", "PARTS", "KIND"]

WINDOW_US = 2000.0  # a window of units: an episode's length is counted in these
SLOW_AT = 1.15  # a window this much slower than the usual ones is slow (usual windows: 0.97-1.03; slow: 1.2-1.8)
UNIT_ITERATIONS = 4000  # ~9.4 us a unit on the AMD zen4 host
KIND = "host_speed"  # the Store's runs of a calibration's probe parts
PARTS = 4  # calibrate's probe parts, spread over its jobs (a part: each CPU in turn)
# dense in the upper tail: the lengths are heavy-tailed (episodes of 2 ms to hundreds), and the model's share of slow
# time is the mean episode over the mean of both, which a coarse top segment, linear up to the longest, inflates
PROBABILITIES = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.975, 0.99, 1.0)


def probe(b: Benchmarks, cpu: int, seconds: float) -> np.ndarray:
    """One run of pace.c on `cpu`: the median unit (us) of each WINDOW_US, in order."""
    try:
        proc = subprocess.run([str(b.pace), str(cpu), f"{seconds:g}", str(UNIT_ITERATIONS)],
                              capture_output=True, text=True, timeout=seconds + 30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MeasurementError(f"the host speed probe failed: {exc}") from None
    if proc.returncode != 0:
        raise MeasurementError(f"the host speed probe failed: {proc.stderr.strip()[-200:]}")
    return windows(np.loadtxt(proc.stdout.splitlines(), ndmin=2).reshape(-1, 2))


def windows(rows: np.ndarray) -> np.ndarray:
    """The median unit length of each WINDOW_US of a run of rows (start us, unit us); windows with fewer than 5
    units left out."""
    idx = (rows[:, 0] // WINDOW_US).astype(int)
    order = np.argsort(idx, kind="stable")
    idx, units = idx[order], rows[order, 1]
    cuts = np.flatnonzero(np.diff(idx)) + 1
    return np.array([np.median(u) for u in np.split(units, cuts) if len(u) >= 5])


def measure_part(b: Benchmarks, store: Store, cpus: Sequence[int], total_s: float, part: int) -> None:
    """One of PARTS parts of a calibration's probe of `total_s` seconds in all: its share on each of `cpus` in turn,
    kept in `store` (KIND, one run a CPU, its windows in order) for fit_store. calibrate spreads the parts over its
    minute or more: the share of slow time moves within a minute (1.2-23% in 4 s probes a minute apart)."""
    seconds = total_s / PARTS / len(cpus)
    for cpu in cpus:
        samples = [{"window_us": round(float(w), 4)} for w in probe(b, cpu, seconds)]
        store.add(KIND, {"cpu": cpu, "part": part}, {}, samples)


def fit_store(store: Store) -> dict[str, Any] | None:
    """The `host_speed` section from a calibration's probe parts (None where it ran none: an older raw file)."""
    runs = [(r["key"]["cpu"], np.array([x["window_us"] for x in r["samples"]])) for r in store.select(KIND)]
    if not runs:
        return None
    section = fit_host_speed(runs)
    parts = len({r["key"]["part"] for r in store.select(KIND)})
    section["source"] += f"; {parts} parts spread over the calibration, pooled"
    return section


def measure_host_speed(b: Benchmarks, cpus: Sequence[int], seconds: float = 2.0, rounds: int = 1,
                       every_s: float = 0.0, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Time units of work `seconds` a round, on each of `cpus` in turn, `rounds` times `every_s` seconds apart (start
    to start: the host's share of slow time moves from minute to minute, so a profile meant for hours pools rounds
    over minutes); the profile's `host_speed` section."""
    runs: list[tuple[int, np.ndarray]] = []
    t0 = time.monotonic()
    for r in range(rounds):
        time.sleep(max(0.0, t0 + r * every_s - time.monotonic()))
        runs += [(cpu, probe(b, cpu, seconds / len(cpus))) for cpu in cpus]
        if log is not None and rounds > 1:
            log(f"host speed: round {r + 1} of {rounds} measured")
    section = fit_host_speed(runs)
    if rounds > 1:
        section["source"] += f"; {rounds} rounds of {seconds:g} s, {every_s:g} s apart, pooled"
    return section


def _stretches(slow: np.ndarray) -> tuple[list[int], list[int]]:
    """The lengths (in windows) of the runs of slow windows and of the runs between them."""
    runs: tuple[list[int], list[int]] = ([], [])
    start = 0
    for i in range(1, len(slow) + 1):
        if i == len(slow) or slow[i] != slow[start]:
            runs[0 if slow[start] else 1].append(i - start)
            start = i
    return runs


def _usual_unit(windows_us: np.ndarray) -> float:
    """The unit's length at the host's usual speed: the median of the windows within SLOW_AT of the fastest ones
    (their 5th percentile), pooled over every run, so that a run slow throughout (a phase of seconds or minutes:
    2026-12-06 21:36, two 3 s runs at 1.27 and 1.46x) counts as slow, not as its own reference."""
    return float(np.median(windows_us[windows_us <= np.percentile(windows_us, 5) * SLOW_AT]))


def fit_host_speed(runs: list[tuple[int, np.ndarray]]) -> dict[str, Any]:
    """The `host_speed` section from probe runs, each (cpu, its windows' median unit in us, in order); a host with
    no slow window gets slow_share 0 (the model then runs every CPU at one speed)."""
    factors, slow_w, normal_w = [], [], []
    total = 0
    for _, w in runs:
        if len(w) < 10:
            raise MeasurementError(f"the host speed probe gave {len(w)} windows of {WINDOW_US:g} us (10 needed)")
    usual = _usual_unit(np.concatenate([w for _, w in runs]))
    for _, w in runs:
        f = w / usual
        slow = f > SLOW_AT
        factors.append(f[slow])
        s, n = _stretches(slow)
        slow_w += s
        normal_w += n
        total += len(w)
    slow_f = np.concatenate(factors)
    cpus = sorted({c for c, _ in runs})
    share = float(sum(slow_w)) / total
    where = (f"{len(runs)} runs of a pinned unit of work (csrc/pace.c, {UNIT_ITERATIONS} iterations, {usual:.2f} us at "
             f"the usual speed) alternating over CPUs "
             f"{', '.join(map(str, cpus))}, the other CPU idle; windows of {WINDOW_US:g} us, slow where their median "
             f"unit is over {SLOW_AT:g}x the usual one")
    if not slow_w:
        return {"probabilities": [0.0, 1.0], "slow_factor": [1.0, 1.0], "slow_us": [WINDOW_US, WINDOW_US],
                "normal_us": [float(total * WINDOW_US)] * 2, "slow_share": 0.0,
                "source": f"measured: no slow window of {total} in {where}"}
    p = np.array(PROBABILITIES)
    q = lambda a: [round(float(x), 4) for x in np.quantile(np.asarray(a, dtype=float), p)]  # noqa: E731
    slow_us, normal_us = q(np.array(slow_w) * WINDOW_US), q(np.array(normal_w) * WINDOW_US)
    drawn = np.trapezoid(slow_us, p) / (np.trapezoid(slow_us, p) + np.trapezoid(normal_us, p))  # SpeedEpisodes' draws
    return {"probabilities": list(PROBABILITIES), "slow_factor": q(slow_f), "slow_us": slow_us, "normal_us": normal_us,
            "slow_share": round(share, 4),
            "source": (f"measured: {len(slow_w)} slow episodes over {sum(slow_w)} of {total} windows "
                       f"({100 * share:.1f}% of the time; factor p50 {np.median(slow_f):.2f}, max {slow_f.max():.2f}; "
                       f"episodes p50 {np.median(slow_w) * WINDOW_US / 1e3:.0f} ms, "
                       f"max {max(slow_w) * WINDOW_US / 1e3:.0f} ms) in "
                       f"{where}; a stretch cut by a run's start or end counts as measured (shorter than it was); "
                       f"the model's draws from these quantiles are slow {100 * drawn:.1f}% of the time")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m forksim.calibration.host_speed",
                                 description="Measure the host's slow episodes (csrc/pace.c on each CPU in turn) "
                                             "and print the profile's host_speed section, or merge it into profiles.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure", help="run the probe (SECONDS in all, ~1 s more) and fit it")
    m.add_argument("--seconds", type=float, default=4.0, help="probe time a round (default 4)")
    m.add_argument("--rounds", type=int, default=1, help="rounds, pooled (default 1)")
    m.add_argument("--every", type=float, default=60.0, metavar="S",
                   help="seconds from one round's start to the next's (default 60)")
    m.add_argument("--merge", action="append", default=[], metavar="PROFILE",
                   help="a profile file to write the section into (repeatable); without: print it")
    a = ap.parse_args(argv)
    if a.rounds < 1 or a.seconds <= 0 or a.every < 0:
        ap.error("--rounds must be at least 1, --seconds positive and --every not negative")
    b = build()
    cpus = sorted(os.sched_getaffinity(0))[:2]
    section = measure_host_speed(b, cpus, a.seconds, a.rounds, a.every,
                                 log=lambda msg: print(msg, file=sys.stderr, flush=True))
    if not a.merge:
        print(json.dumps(section, indent=1))
    for path in a.merge:
        prof = json.loads(Path(path).read_text())
        prof["host_speed"] = section
        write_merged(path, prof, "host_speed_merge", {"what": "host_speed from python -m "
                     "forksim.calibration.host_speed measure", "seconds": a.seconds, "rounds": a.rounds,
                     "every_s": a.every})
        print(f"merged host_speed (slow {100 * section['slow_share']:.1f}% of the time) into {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
