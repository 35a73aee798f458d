"""Sampling stage costs from a profile: fitted median for an image, times a residual draw.

Residual factors are drawn from numpy in blocks (a scalar numpy call per draw costs more than the
whole rest of a stage), and medians are cached per (stage, image shape).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..profile import ImageShape, Profile
from ..streams import Streams

__all__ = ["Costs", "EMPTY_IMAGE"]

EMPTY_IMAGE = ImageShape()
_BLOCK = 2048


class Costs:
    """Draws stage costs (microseconds) for one replication, each stage (and term) from a stream of its
    own (forksim.streams: the n-th draw of a stage is the same at every sweep point of a seed)."""

    def __init__(self, profile: Profile, streams: Streams):
        self.profile = profile
        self.streams = streams
        self._medians: dict[tuple[str, ImageShape], float] = {}
        self._blocks: dict[str, list[float]] = {}
        self._mean_ratio: dict[str, float] = {}
        self._empty_medians: dict[str, float] = {}
        self._by_identity: dict[tuple[str, int], tuple[ImageShape, float]] = {}

    def median(self, stage: str, shape: ImageShape = EMPTY_IMAGE) -> float:
        key = (stage, shape)
        m = self._medians.get(key)
        if m is None:
            m = self._medians[key] = self.profile.stages[stage].median_us(shape)
        return m

    def _ratio(self, stage: str) -> float:
        block = self._blocks.get(stage)
        if block is None:
            block = self._blocks[stage] = []
        if not block:  # refilled in place: a `drawer` holds the same list
            block.extend(self.profile.stages[stage].residual.draw(self.streams(stage), _BLOCK).tolist())
        return block.pop()

    def drawer(self, stage: str) -> Callable[[], float]:
        """`draw(stage)` as a no-argument function for the hot path (no lookups per draw): it pops from
        the same block as `draw(stage)`, so mixing the two keeps one order of draws per stage."""
        spec = self.profile.stages.get(stage)
        if spec is None:  # not in this profile: fails as draw() does, when (if ever) drawn
            return lambda: self.draw(stage)
        m = self._empty_medians.get(stage)
        if m is None:
            m = self._empty_medians[stage] = self.median(stage)
        block = self._blocks.get(stage)
        if block is None:
            block = self._blocks[stage] = []
        residual, rng = spec.residual, self.streams(stage)

        def draw() -> float:
            if not block:
                block.extend(residual.draw(rng, _BLOCK).tolist())
            return m * block.pop()

        return draw

    def draw(self, stage: str, shape: ImageShape = EMPTY_IMAGE) -> float:
        # the hot path: a shape-free median looked up by stage alone (hashing an ImageShape costs
        # a Python-level call), and the block pop inlined; same values, same order of draws
        if shape is EMPTY_IMAGE:
            m = self._empty_medians.get(stage)
            if m is None:
                m = self._empty_medians[stage] = self.median(stage)
        else:
            # by the shape's identity (a process keeps one shape object): hashing a dataclass per
            # draw costs more than the draw; the shape is kept in the entry, so its id is not reused
            hit = self._by_identity.get((stage, id(shape)))
            if hit is None or hit[0] is not shape:
                hit = self._by_identity[(stage, id(shape))] = (shape, self.median(stage, shape))
            m = hit[1]
        block = self._blocks.get(stage)
        if not block:
            return m * self._ratio(stage)
        return m * block.pop()

    def term(self, key: str, median: float, sigma: float) -> float:
        """A term beyond the profile's stages (fds, flags, live children): `median` times a
        lognormal(0, sigma) factor; nothing is drawn for a zero term (the default's stream is kept)."""
        if median <= 0.0:
            return median
        if sigma <= 0.0:
            return median
        block = self._blocks.get(key)
        if not block:
            block = self._blocks[key] = self.streams(key).lognormal(0.0, sigma, _BLOCK).tolist()
        return median * block.pop()

    def draw_plus(self, stage: str, shape: ImageShape, extra_us: float) -> float:
        """A draw of `stage` whose median is raised by `extra_us` (a cold walk), under the same residual."""
        if extra_us <= 0.0:
            return self.draw(stage, shape)
        return (self.median(stage, shape) + extra_us) * self._ratio(stage)

    def uniform(self) -> float:
        """A U(0,1) draw (placement decisions)."""
        block = self._blocks.get("")
        if not block:
            block = self._blocks[""] = self.streams("uniform").random(_BLOCK).tolist()
        return block.pop()

    def draw_many(self, stage: str, count: int, shape: ImageShape = EMPTY_IMAGE) -> float:
        """The total of `count` independent draws (per-page costs); large counts use the mean ratio."""
        if count <= 0:
            return 0.0
        if count <= 64:
            return sum(self.draw(stage, shape) for _ in range(count))
        mean = self._mean_ratio.get(stage)
        if mean is None:
            mean = self._mean_ratio[stage] = float(self.profile.stages[stage].residual.draw(self.streams(stage + " mean"), 20000).mean())
        return self.median(stage, shape) * count * mean

    def stream(self, name: str) -> np.random.Generator:
        """The replication's stream for `name` (a draw that is not a stage's: interruption gaps)."""
        return self.streams(name)

    def sampler(self, stage_cost, name: str) -> Callable[[], float]:
        """A no-argument sampler for a scheduler cost (a StageCost using fixed_us as its median), on
        the stream `name`."""
        median = stage_cost.fixed_us
        residual = stage_cost.residual
        rng = self.streams(name)
        block: list[float] = []

        def draw() -> float:
            if not block:
                block.extend(residual.draw(rng, _BLOCK).tolist())
            return median * block.pop()

        return draw
