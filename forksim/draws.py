"""Blocks of numpy draws handed out one at a time: a scalar numpy call per draw is slow, so a
sampler draws `size` values at once and pops them (the last of a block first)."""

from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["Draws"]


class Draws:
    """Blocks of numpy draws handed out one at a time (a scalar numpy call per draw is slow)."""

    __slots__ = ("make", "size", "block")

    def __init__(self, make: Callable[[int], np.ndarray], size: int = 2048):
        self.make = make
        self.size = size
        self.block: list[float] = []

    def __call__(self) -> float:
        if not self.block:
            self.block = self.make(self.size).tolist()
        return self.block.pop()
