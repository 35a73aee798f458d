"""The host's slow episodes, drawn for one replication (the profile's `host_speed`, forksim.profile.HostSpeed).

A vCPU does not run at one speed: for a few to a few hundred milliseconds at a time all of its work runs
1.2-1.8x as long (another tenant on the physical core's SMT sibling, the host's frequency), and the guest
sees no event for it. Measured on the AMD zen4 host (2026-12-06) a pinned fork loop at RSS 0 spent 6-15% of
its 2 ms windows so, its forks there 1.4x as long (p50 61-64 us against 44-46), with no interrupt, softirq or
switch of the guest's inside them (traced); that, not the interruptions, is most of why its fork() p90 and p99
sit above a model whose stage costs only vary fork by fork.

`SpeedEpisodes` draws, in turn, a stretch at the usual speed, an episode and its factor, from the profile's
quantiles (linear between them); each CPU keeps its own sequence (CPU.speed_at), drawn lazily as time
passes it, on the replication's "host_speed" stream.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .draws import values

if TYPE_CHECKING:
    from .kernel.costs import Costs
    from .profile import HostSpeed

__all__ = ["SpeedEpisodes"]


class SpeedEpisodes:
    """One replication's draws of the host's episodes: `dwell(slow)` the length (us) of a stretch at the usual speed
    or of a slow episode, `factor()` an episode's factor on work, `slow_share` the share of time in episodes."""

    __slots__ = ("_u", "_p", "_factor", "_slow", "_normal", "slow_share")

    def __init__(self, spec: "HostSpeed", costs: "Costs"):
        self._u = values(costs.stream("host_speed").random).__next__  # uniform draws, as Draws makes them
        self._p = np.asarray(spec.probabilities, dtype=float)
        self._factor = np.asarray(spec.slow_factor, dtype=float)
        self._slow = np.asarray(spec.slow_us, dtype=float)
        self._normal = np.asarray(spec.normal_us, dtype=float)
        self.slow_share = spec.slow_share

    def _draw(self, q: np.ndarray) -> float:
        return float(np.interp(self._u(), self._p, q))

    def dwell(self, slow: bool) -> float:
        return self._draw(self._slow if slow else self._normal)

    def factor(self) -> float:
        return self._draw(self._factor)

    def first(self) -> tuple[bool, float]:
        """A CPU's state at time 0: slow with the measured share; the time left in it (us), a uniform part of a
        drawn length (the run starts inside a stretch, not at its beginning)."""
        slow = self._u() < self.slow_share
        return slow, self._u() * self.dwell(slow)
