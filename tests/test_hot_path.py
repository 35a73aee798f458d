"""The creation path's speed devices behave as the plain code they replace: per-stage drawers draw what
Costs.draw draws, the uncontended lock fast path grants what the general search grants, a Coroutine
drives a generator as simpy.Process does (without its two events), and stages merged into one chunk
add up to what separate chunks give."""

from __future__ import annotations

import numpy as np
import pytest
import simpy

from forksim.config import parse_config
from forksim.kernel.costs import Costs
from forksim.kernel.flags import FORK, POSIX_SPAWN, VFORK
from forksim.locks import SpinRWLock
from forksim.model import ModelParams
from forksim.profile import load_profile
from forksim.runner import replication_seeds
from forksim.simulation import Simulation
from forksim.streams import Streams
from forksim.task import Coroutine
from conftest import REFERENCE_PROFILE


def test_a_drawer_draws_what_draw_draws_in_one_order():
    profile = load_profile(REFERENCE_PROFILE)
    a, b = (Costs(profile, Streams(np.random.SeedSequence(5))) for _ in range(2))
    plain = [a.draw("copy_process_tail") for _ in range(5000)]  # past a block's end: a refill
    d = b.drawer("copy_process_tail")
    mixed = [d() if i % 3 else b.draw("copy_process_tail") for i in range(5000)]
    assert mixed == plain


def test_uncontended_write_fast_path_grants_as_the_search_does():
    """Random writes (some contended, some not; some touching the previous grant's end) through
    `write` and through the general `_take`: the same waits and the same granted intervals."""
    rng = np.random.default_rng(3)
    env = simpy.Environment()
    fast, slow = SpinRWLock(env, "a"), SpinRWLock(env, "b")
    now = 0.0
    for _ in range(3000):
        now += float(rng.choice([0.0, rng.exponential(2.0)]))
        env._now = now
        at = now + float(rng.choice([0.0, rng.exponential(1.0)]))
        if fast._write and rng.random() < 0.2:
            at = max(now, fast._write[-1][1])  # begins as the last grant ends: merged into it
        hold = float(rng.exponential(1.0))
        assert fast.write(at, hold) == slow._take(at, hold, True)
        assert fast._write == slow._write
    assert list(fast.stats.waits) == list(slow.stats.waits)
    assert any(w > 0 for w in fast.stats.waits) and any(w == 0 for w in fast.stats.waits)


def test_a_coroutine_drives_a_generator_without_start_and_end_events():
    env = simpy.Environment()
    seen = []

    def gen():
        seen.append(("start", env.now))
        yield env.timeout(2)
        done = env.event().succeed()
        yield done  # an event already triggered: resumed when it is processed
        seen.append(("end", env.now))

    first = env.timeout(1)
    Coroutine(gen(), first)
    env.run()
    assert seen == [("start", 1), ("end", 3)]
    assert next(env._eid) == 3  # the two timeouts and the succeeded event: nothing of the driver's own


def test_a_coroutine_raises_out_of_the_event_loop():
    env = simpy.Environment()

    def gen():
        yield env.timeout(1)
        raise ValueError("boom")

    Coroutine(gen(), env.timeout(0))
    with pytest.raises(ValueError, match="boom"):
        env.run()


def _stages(kind: str, merge: bool):
    exp = parse_config({
        "experiment": {"name": "merge", "duration": "1000s", "warmup": "0s", "max_creations": 400},
        "machine": {"cpus": 1, "profile": REFERENCE_PROFILE},
        "workload": {"kind": "closed", "parents": 1, "image": {"rss": 64 << 20},
                     "child": {"clone": kind, "lifetime": "0us"}},
    }, resolved=True)
    profile = load_profile(REFERENCE_PROFILE)
    sim = Simulation(ModelParams.of(exp, profile), replication_seeds(7, 1)[0])
    sim.kernel.merge_stages = merge
    df = sim.run().records
    df = df[df["reap"].notna()]  # reaped (one in flight at the stop is mid-chunk in one and not the other)
    return df[["start", "fork_ret", "setup_us", "dup_mmap_us", "tail_us", "reap", "child_start", "child_exit"]].to_numpy()


@pytest.mark.parametrize("kind", [FORK, VFORK, POSIX_SPAWN])
def test_merged_stages_add_up_as_separate_chunks(kind):
    """One parent on one CPU (nothing else runs, so nothing can tell the stages' boundaries apart): a
    creation's stages merged into one chunk give the times of separate chunks, to rounding (a fork
    child's ret_from_fork and do_exit included: its child_start and child_exit)."""
    merged, separate = _stages(kind, True), _stages(kind, False)
    assert merged.shape == separate.shape and len(merged) >= 400
    np.testing.assert_allclose(merged, separate, rtol=1e-9, atol=1e-6)
    assert (merged[:, 2] > 0).all() and (merged[:, 4] > 0).all()  # setup and tail both recorded


def _event_log(env):
    """A small model with timeouts, priorities, a process, an event succeeded by hand and an AnyOf:
    the order and times its callbacks run in."""
    log = []

    def proc(name, delays):
        for d in delays:
            yield env.timeout(d)
            log.append((name, env.now))
        done = env.event()
        env.timeout(0.5).callbacks.append(lambda _e: done.succeed(name))
        value = yield done
        log.append((value, env.now))

    for i, delays in enumerate(([1, 1, 2], [2, 0, 1], [0.5, 1.5, 0])):
        env.process(proc(f"p{i}", delays))
    return log


def test_the_environment_processes_events_as_simpy_does():
    """forksim.environment.Environment (step inlined into run) against simpy.Environment: the same
    callbacks at the same times in the same order, through a run to a time, a run to an event that
    stops it with callbacks left, and a run to the end."""
    from forksim.environment import Environment

    logs, counts = [], []
    for env in (simpy.Environment(), Environment()):
        log = _event_log(env)
        env.run(until=2.0)
        stop = env.timeout(1.0)
        stop.callbacks.append(lambda _e: None)  # runs before the stop's own callback
        assert env.run(until=simpy.AnyOf(env, [stop])) is not None
        env.run()
        logs.append(log)
        counts.append(next(env._eid))
    assert logs[0] == logs[1] and len(logs[0]) == 12
    assert counts[0] == counts[1]


def test_the_environment_raises_as_simpy_does():
    from forksim.environment import Environment

    env = Environment()
    env.timeout(1).callbacks.append(lambda _e: None)
    with pytest.raises(ValueError, match="must be greater"):
        env.run(until=0)
    with pytest.raises(RuntimeError, match="No scheduled events left"):
        env.run(until=env.event())  # never triggered

    def fails():
        yield env.timeout(1)
        raise KeyError("lost")

    env.process(fails())
    with pytest.raises(KeyError, match="lost"):  # a failed process nobody waits on crashes the run
        env.run()


def test_block_iterators_hand_out_draws_as_draws_does():
    """forksim.draws.values (and `scaled`) give Draws' values in Draws' order, block after block."""
    from forksim.draws import Draws, scaled, values

    plain = Draws(np.random.default_rng(4).random, 7)
    it = values(np.random.default_rng(4).random, 7)
    assert [plain() for _ in range(30)] == [next(it) for _ in range(30)]
    plain = Draws(np.random.default_rng(4).random, 7)
    shared = values(np.random.default_rng(4).random, 7)
    times3 = scaled(3.0, shared)
    got = [times3() if i % 2 else 3.0 * next(shared) for i in range(30)]  # both share one order
    assert got == [3.0 * plain() for _ in range(30)]
