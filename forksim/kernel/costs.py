"""Sampling stage costs from a profile: fitted median for an image, times a residual draw.

Residual factors are drawn from numpy in blocks (a scalar numpy call per draw costs more than the
whole rest of a stage) and handed out by C-level iterators (forksim.draws), and medians are cached
per (stage, image shape).
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from ..draws import scaled, values
from ..profile import ImageShape, Profile, Residual
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
        # a stage's (or term's) residual factors, one iterator per stage that every way of drawing the
        # stage shares (draw, drawer, draw_plus): one order of draws per stage, as a single list gave
        self._ratios: dict[str, Iterator[float]] = {}
        self._mean_ratio: dict[str, float] = {}
        self._empty_medians: dict[str, float] = {}
        self._by_identity: dict[tuple[str, int], tuple[ImageShape, float]] = {}
        self.uniform: Callable[[], float] = values(self.streams("uniform").random, _BLOCK).__next__
        """A U(0,1) draw (placement decisions)."""

    def median(self, stage: str, shape: ImageShape = EMPTY_IMAGE) -> float:
        key = (stage, shape)
        m = self._medians.get(key)
        if m is None:
            m = self._medians[key] = self.profile.stages[stage].median_us(shape)
        return m

    def _ratio_iter(self, stage: str) -> Iterator[float]:
        it = self._ratios.get(stage)
        if it is None:
            it = self._ratios[stage] = _draws(self.profile.stages[stage].residual, self.streams(stage))
        return it

    def _ratio(self, stage: str) -> float:
        return next(self._ratio_iter(stage))

    def drawer(self, stage: str) -> Callable[[], float]:
        """`draw(stage)` as a no-argument function for the hot path: a C-level iterator's `__next__` (no
        Python frame per draw) over the same residuals as `draw(stage)`, so mixing the two keeps one
        order of draws per stage."""
        if self.profile.stages.get(stage) is None:  # not in this profile: fails as draw() does, when (if ever) drawn
            return lambda: self.draw(stage)
        m = self._empty_medians.get(stage)
        if m is None:
            m = self._empty_medians[stage] = self.median(stage)
        return scaled(m, self._ratio_iter(stage))

    def draw(self, stage: str, shape: ImageShape = EMPTY_IMAGE) -> float:
        # a shape-free median looked up by stage alone (hashing an ImageShape costs a Python-level call)
        if shape is EMPTY_IMAGE:
            m = self._empty_medians.get(stage)
            if m is None:
                m = self._empty_medians[stage] = self.median(stage)
        else:
            m = self._median_of(stage, shape)
        it = self._ratios.get(stage)
        return m * next(it if it is not None else self._ratio_iter(stage))

    def term(self, key: str, median: float, sigma: float) -> float:
        """A term beyond the profile's stages (fds, flags, live children): `median` times a
        lognormal(0, sigma) factor; nothing is drawn for a zero term (the default's stream is kept)."""
        if median <= 0.0:
            return median
        if sigma <= 0.0:
            return median
        it = self._ratios.get(key)
        if it is None:  # the first block's sigma serves the key's every block, as one list of draws did
            rng = self.streams(key)
            it = self._ratios[key] = values(lambda n: rng.lognormal(0.0, sigma, n), _BLOCK)
        return median * next(it)

    def ratio_drawer(self, key: str, residual: Residual) -> Callable[[], float]:
        """Draws of `residual` (a spread beyond the profile's stages) on the stream `key`, as a no-argument
        function (a C-level iterator's `__next__`)."""
        return _draws(residual, self.streams(key)).__next__

    def _median_of(self, stage: str, shape: ImageShape) -> float:
        """`median(stage, shape)` looked up by the shape's identity (a process keeps one shape object):
        hashing a dataclass per draw costs more than the draw; the shape is kept in the entry, so its
        id is not reused."""
        hit = self._by_identity.get((stage, id(shape)))
        if hit is None or hit[0] is not shape:
            hit = self._by_identity[(stage, id(shape))] = (shape, self.median(stage, shape))
        return hit[1]

    def draw_plus(self, stage: str, shape: ImageShape, extra_us: float) -> float:
        """A draw of `stage` whose median is raised by `extra_us` (a cold walk), under the same residual."""
        if extra_us <= 0.0:
            return self.draw(stage, shape)
        hit = self._by_identity.get((stage, id(shape)))  # self._median_of(stage, shape), its hit written out
        m = hit[1] if hit is not None and hit[0] is shape else self._median_of(stage, shape)
        it = self._ratios.get(stage)  # self._ratio(stage), written out
        return (m + extra_us) * next(it if it is not None else self._ratio_iter(stage))

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
        the stream `name` (a C-level iterator's `__next__`: no Python frame per draw)."""
        return scaled(stage_cost.fixed_us, _draws(stage_cost.residual, self.streams(name)))


def _draws(residual: Residual, rng: np.random.Generator) -> Iterator[float]:
    """A residual's factors on one stream, drawn _BLOCK at a time (a C-level iterator: no Python frame per draw)."""
    return values(lambda n: residual.draw(rng, n), _BLOCK)
