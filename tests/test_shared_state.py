"""The shared creation state (kernel/shared.py): a creation or exit pays the profile's `concurrent_creation` when
another CPU, for another process, wrote the state last; a loop alone, or one parent whose children exit on the
other CPU (remote_free's case), does not. And its calibration's fit (calibration/concurrency.py)."""

from __future__ import annotations

import numpy as np
import pytest

from forksim.calibration.concurrency import ALONE, BESIDE, fit_concurrent_creation
from forksim.calibration.plan import Store
from forksim.calibration.samples import Evidence
from forksim.config import parse_config
from forksim.kernel.costs import Costs
from forksim.kernel.shared import SharedState
from forksim.profile import ConcurrentCreation, load_profile
from forksim.runner import run_experiment
from forksim.streams import Streams
from conftest import REFERENCE_PROFILE

TERM = ConcurrentCreation(fork_us=6.0, exit_us=9.0, sigma=0.0, source="assumption: test")


def _costs(term: ConcurrentCreation | None = TERM) -> Costs:
    return Costs(load_profile(REFERENCE_PROFILE).model_copy(update={"concurrent_creation": term}),
                 Streams(np.random.SeedSequence(1)))


def test_only_another_cpu_writing_for_another_process_costs():
    costs, a, b = _costs(), object(), object()
    s = SharedState(TERM)
    assert s.fork_us(0, a, costs, 0.0) == 0.0  # a booted machine: nobody wrote it yet
    assert s.fork_us(0, a, costs, 1.0) == 0.0  # the same CPU again
    assert s.exit_us(1, a, costs, 2.0) == 0.0  # a's own child exiting on the other CPU: remote_free's case
    assert s.fork_us(1, b, costs, 3.0) == 0.0  # another process on the CPU that wrote it last
    assert s.fork_us(0, a, costs, 4.0) == 6.0  # CPU 1 wrote it last, for b: a's creation on CPU 0 pays
    assert s.exit_us(1, b, costs, 5.0) == 9.0  # and b's child's exit on CPU 1 after it


def test_past_two_writers_the_extra_grows_per_cpu_that_wrote_within_the_window():
    """per_writer: each CPU beyond two that wrote the state within window_us adds that share of the extra; a
    CPU whose last write is older than the window no longer counts."""
    term = TERM.model_copy(update={"per_writer": 0.5, "window_us": 100.0})
    costs, s = _costs(term), SharedState(term)
    owners = [object() for _ in range(4)]
    for cpu in range(3):
        s.fork_us(cpu, owners[cpu], costs, float(cpu))
    assert s.fork_us(3, owners[3], costs, 10.0) == pytest.approx(6.0 * (1 + 0.5 * 2))  # 4 writers within 100 us
    assert s.fork_us(0, owners[0], costs, 105.0) == pytest.approx(6.0 * (1 + 0.5 * 0))  # CPUs 1, 2 out of it
    assert s.exit_us(1, owners[1], costs, 108.0) == pytest.approx(9.0 * (1 + 0.5 * 1))  # CPUs 3, 0, 1


def test_no_section_or_a_zero_one_costs_nothing_and_keeps_the_streams():
    assert load_profile(REFERENCE_PROFILE).concurrent_creation is None  # measured before the term: loads without it
    assert SharedState(None).fork_us(1, object(), _costs(None), 0.0) == 0.0
    exp = _two_parents(pinned=True)
    base = load_profile(REFERENCE_PROFILE)
    zero = ConcurrentCreation(fork_us=0.0, exit_us=0.0, sigma=0.3, source="assumption: test")
    a = run_experiment(exp, profile=base).records
    b = run_experiment(exp, profile=base.model_copy(update={"concurrent_creation": zero})).records
    assert a.equals(b)


def _two_parents(pinned: bool, parents: int = 2):
    return parse_config({
        "experiment": {"name": "t", "duration": 200_000.0, "warmup": 20_000.0, "replications": 1, "seed": 3},
        "machine": {"cpus": 2, "profile": REFERENCE_PROFILE},
        "workload": {"kind": "closed", "parents": parents, "think_time": 0.0, "pin": pinned,
                     "image": {"rss": 0}, "child": {"clone": "fork", "lifetime": 0.0}},
    }, resolved=True)


def _p50s(exp, term):
    prof = load_profile(REFERENCE_PROFILE).model_copy(update={"concurrent_creation": term, "interruptions": None})
    df = run_experiment(exp, profile=prof).records
    df = df[~df.warmup]
    return df.fork_latency_us.median(), df.roundtrip_latency_us.median()


def test_two_parents_on_two_cpus_pay_it_at_almost_every_creation_and_exit():
    """Each parent pinned to its own CPU: every creation and exit finds the other CPU's last write (the two
    loops interleave), so the call's p50 grows by fork_us and the round trip's by fork_us + exit_us."""
    exp = _two_parents(pinned=True)
    (f0, r0), (f1, r1) = _p50s(exp, None), _p50s(exp, TERM)
    assert f1 - f0 == pytest.approx(6.0, abs=1.0)
    assert r1 - r0 == pytest.approx(15.0, abs=2.5)


def test_one_parent_alone_never_pays_it():
    """One unpinned parent whose children run on either CPU: every write is for the same process."""
    exp = _two_parents(pinned=False, parents=1)
    assert _p50s(exp, None) == _p50s(exp, TERM)


def _store(beside_minus_alone: list[tuple[float, float]]) -> Store:
    """Two sides per round: fork_ns and rt_ns samples around 24 / 70 us alone, plus the round's extras beside."""
    store, rng = Store(), np.random.default_rng(5)
    for rnd, (df, dr) in enumerate(beside_minus_alone):
        for kind, (f, r) in ((ALONE, (24.0, 46.0)), (BESIDE, (24.0 + df, 46.0 + dr))):
            fork = f + rng.normal(0.0, 0.5, 301)
            rest = r + rng.normal(0.0, 0.5, 301)
            samples = [{"fork_ns": a * 1e3, "fork_cpu_ns": a * 1e3, "rt_ns": (a + b) * 1e3} for a, b in zip(fork, rest)]
            store.add(kind, {"rss": 0, "round": rnd, "pinned": True}, {}, samples, None)
    return store


def test_the_fit_takes_each_side_s_median_difference_over_rounds():
    ev = Evidence(_store([(5.9, 8.7), (6.2, 9.2), (5.6, 6.8), (8.1, 9.0)]), cpu=1, traced=False)
    sec = fit_concurrent_creation(ev)
    ConcurrentCreation.model_validate(sec)
    assert sec["fork_us"] == pytest.approx(6.05, abs=0.3) and sec["exit_us"] == pytest.approx(8.85, abs=0.3)
    assert sec["source"].startswith("measured:") and len(ev.diag["concurrent_creation"]["fork_beside_minus_alone_us"]) == 4


def test_the_fit_floors_a_negative_difference_and_needs_both_sides():
    ev = Evidence(_store([(-1.0, -2.0), (-0.5, -1.0)]), cpu=0, traced=False)
    sec = fit_concurrent_creation(ev)
    assert sec["fork_us"] == 0.0 and sec["exit_us"] == 0.0
    assert fit_concurrent_creation(Evidence(Store(), cpu=0, traced=False)) is None


def test_a_cpu_that_wrote_again_stays_a_writer_when_its_older_write_leaves_the_window():
    term = TERM.model_copy(update={"per_writer": 1.0, "window_us": 100.0})
    costs, s, a, b, c = _costs(term), SharedState(term), object(), object(), object()
    s.fork_us(0, a, costs, 0.0)
    s.fork_us(1, b, costs, 10.0)
    s.fork_us(0, a, costs, 50.0)  # CPU 0 again: its write at 0 is no longer its last
    assert s.fork_us(2, c, costs, 105.0) == pytest.approx(6.0 * 2)  # CPUs 1 (10), 0 (50) and 2: three writers
    assert s.fork_us(1, b, costs, 130.0) == pytest.approx(6.0 * 2)  # since 30: CPU 0's write at 0 gone, at 50 kept


def test_the_growth_past_two_writers_is_for_a_copied_mm_only():
    """A vfork, posix_spawn or thread creation (no mm of its own) pays the two-CPU extra, however many CPUs
    write; its write still counts as a writer for the forks beside it."""
    term = TERM.model_copy(update={"per_writer": 1.0, "window_us": 100.0})
    costs, s = _costs(term), SharedState(term)
    for cpu in range(3):
        s.fork_us(cpu, object(), costs, float(cpu), grows=False)
    assert s.fork_us(3, object(), costs, 3.0, grows=False) == pytest.approx(6.0)
    assert s.fork_us(4, object(), costs, 4.0) == pytest.approx(6.0 * 4)  # five writers: three beyond two
