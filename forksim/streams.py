"""Named random streams of one replication: common random numbers across the points of a sweep.

Each purpose (a stage's residuals, the arrivals, the faults, placement coin flips) draws from a
stream of its own, spawned from the replication's SeedSequence by the purpose's name. Two sweep
points that share a seed then see the same arrival gaps (scaled by their rates) and the same cost
factors for the n-th creation of every stage, whatever else differs: the difference between the
points is sharper than either point's own interval (common random numbers; Law, Simulation
Modeling and Analysis, 5th ed., 11.2). One shared stream would let the first extra draw at one point
shift every later draw.
"""

from __future__ import annotations

import zlib

import numpy as np

__all__ = ["Streams"]


class Streams:
    """`streams(name)`: the replication's generator for `name`, made on first use."""

    __slots__ = ("_seed", "_made")

    def __init__(self, seed: np.random.SeedSequence):
        self._seed = seed
        self._made: dict[str, np.random.Generator] = {}

    def __call__(self, name: str) -> np.random.Generator:
        rng = self._made.get(name)
        if rng is None:
            key = (*self._seed.spawn_key, zlib.crc32(name.encode()))
            rng = self._made[name] = np.random.default_rng(
                np.random.SeedSequence(self._seed.entropy, spawn_key=key, pool_size=self._seed.pool_size))
        return rng
