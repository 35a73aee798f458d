"""Blocks of numpy draws handed out one at a time: a scalar numpy call per draw is slow, so a
sampler draws `size` values at once and hands them out (the last of a block first).

`values(make, size)` is the hot paths' form: an iterator built from C-level iterators (itertools.chain
over the reversed blocks; `scaled` maps a factor over it), so a draw (`next(it)`, or the iterator's
`__next__` kept as a function) costs no Python frame; a block is drawn when the previous one is used
up, as `Draws` does. `Draws` is the same as an object."""

from __future__ import annotations

from itertools import chain, repeat
from operator import mul
from typing import Callable, Iterator

import numpy as np

__all__ = ["Draws", "values", "scaled"]


def _blocks(make: Callable[[int], np.ndarray], size: int) -> Iterator[Iterator[float]]:
    while True:  # resumed once per block: the next block, last value first (as list.pop hands them out)
        yield reversed(make(size).tolist())


def values(make: Callable[[int], np.ndarray], size: int = 2048) -> Iterator[float]:
    """`make(size)`'s values, block after block, the last of each block first."""
    return chain.from_iterable(_blocks(make, size))


def scaled(factor: float, it: Iterator[float]) -> Callable[[], float]:
    """`factor * next(it)` per call, without a Python frame (other users of `it` share its order)."""
    return map(mul, repeat(factor), it).__next__


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
