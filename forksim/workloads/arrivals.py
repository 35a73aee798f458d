"""Where requests come from (Ciw's arrival node): a file of arrival times, bursts, or a
deterministic or Poisson stream, fed into a queue that refuses to grow past `workload.max_queue`.

A file of arrivals is read once per experiment (`forksim.model.ModelParams.of`), not per replication.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import simpy

from ..draws import values
from ..errors import ConfigError, UnstableError
from ..units import UnitError, parse_time_us

if TYPE_CHECKING:
    from ..config import WorkloadSection

__all__ = ["load_arrivals", "burst_times", "arrival_times", "feed_arrivals", "FILE_FREE"]

# `workload.arrivals` values that are not a file
FILE_FREE = ("poisson", "deterministic", "bursty")


def load_arrivals(path: str) -> np.ndarray:
    """A file of arrival times, one per line: seconds from the start, or with a unit (1.5ms).
    Lines starting with '#' are comments."""
    p = Path(path)
    try:
        lines = p.read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read arrivals file: {exc.strerror or exc}", source=path, field="workload.arrivals") from None
    except UnicodeDecodeError:
        raise ConfigError("cannot read arrivals file: not a text file of times", source=path,
                          field="workload.arrivals") from None
    times = []
    for n, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            try:
                times.append(float(text) * 1e6)  # a bare number: seconds
            except ValueError:
                times.append(parse_time_us(text))
        except UnitError as exc:
            raise ConfigError(f"line {n}: {exc}", source=path, field="workload.arrivals") from None
    if not times:
        raise ConfigError("the arrivals file holds no arrival time", source=path, field="workload.arrivals")
    arr = np.asarray(times)
    bad = ~np.isfinite(arr) | (arr < 0)
    if bad.any():
        raise ConfigError(f"arrival times must be finite and non-negative (got {float(arr[bad][0]) / 1e6!r} s)",
                          source=path, field="workload.arrivals")
    if np.any(np.diff(arr) < 0):
        raise ConfigError("arrival times must be non-decreasing", source=path, field="workload.arrivals")
    return arr


def burst_times(bursts):
    """`arrivals = "bursty"`: absolute arrival times (us) of [workload.bursts]: `size` requests per
    burst, evenly over `spread`, a burst every `interval` from `offset` (deterministic, endless)."""
    step = bursts.spread / bursts.size
    k = 0
    while True:
        t0 = bursts.offset + k * bursts.interval
        for j in range(bursts.size):
            yield t0 + j * step
        k += 1



def arrival_times(wl: "WorkloadSection", rng: np.random.Generator, arrivals: np.ndarray | None,
                  rate: float | None) -> Iterator[float]:
    """Absolute arrival times (us): a file's, bursts, or a deterministic or Poisson stream at `rate`."""
    if arrivals is not None:
        yield from arrivals.tolist()
        return
    if wl.arrivals == "bursty":
        yield from burst_times(wl.bursts)
        return
    gap = (lambda: 1e6 / rate) if wl.arrivals == "deterministic" else values(lambda n: rng.exponential(1e6 / rate, n)).__next__
    t = 0.0
    while True:
        t += gap()
        yield t


def feed_arrivals(env: simpy.Environment, times: Iterator[float], requests: deque, max_queue: int,
                  on_arrival: Callable[[], None], overflow: Callable[[int], str]):
    """Queue each arrival at its time and call `on_arrival`; a queue beyond `max_queue` means the
    offered load exceeds capacity: UnstableError(overflow(queued)) rather than an endless climb."""
    for t in times:  # (env._now: the clock without the property's call, once per request)
        if t > env._now:
            yield env.timeout(t - env._now)
        requests.append(env._now)
        if len(requests) > max_queue:
            raise UnstableError(overflow(len(requests)))
        on_arrival()
