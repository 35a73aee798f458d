"""forked_map: the calibration's traces read side by side in forked workers."""

import os

import pytest

from forksim.calibration.forked import forked_map


def _pid_and_square(x: int) -> tuple[int, int]:
    return os.getpid(), x * x


def test_results_come_back_in_the_items_order_whatever_the_cost_order():
    got = forked_map(_pid_and_square, list(range(7)), cost=lambda x: x % 3, workers=2)
    assert [sq for _pid, sq in got] == [x * x for x in range(7)]
    assert all(pid != os.getpid() for pid, _sq in got)  # each in a worker


def test_one_worker_or_one_item_runs_here():
    assert [pid for pid, _ in forked_map(_pid_and_square, [1, 2, 3], workers=1)] == [os.getpid()] * 3
    assert forked_map(_pid_and_square, [4]) == [(os.getpid(), 16)]
    assert forked_map(_pid_and_square, []) == []


def test_a_worker_sees_what_the_parent_held_when_it_forked_and_its_errors_come_back():
    big = ["x" * 1000] * 3  # never pickled on the way in: the workers read it from the forked memory
    assert forked_map(lambda s: len(s), big, workers=2) == [1000] * 3

    def fails(x: int) -> int:
        raise ValueError(f"item {x}")

    with pytest.raises(ValueError, match="item"):
        forked_map(fails, [1, 2], workers=2)
