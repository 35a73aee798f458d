"""Spinning locks on a timeline: grants never overlap a writer, whatever order requests come in."""

import numpy as np
import pytest
import simpy

from forksim.locks import SpinRWLock


def _grants(seed: int, future_share: float):
    env = simpy.Environment()
    lock = SpinRWLock(env, "test")
    grants = []
    take = lock._take

    def recording(at, hold, write):
        wait = take(at, hold, write)
        grants.append((at + wait, at + wait + hold, write, wait))
        return wait

    lock._take = recording
    rng = np.random.default_rng(seed)

    def user():
        while True:
            yield env.timeout(rng.exponential(10.0))  # ~75% busy: stable
            # a fork asks for a moment inside its coming chunk, an exit for now: out of order
            at = env.now + (rng.random() * 3.0 if rng.random() < future_share else 0.0)
            if rng.random() < 0.7:
                lock.write(at, 1.0)
            else:
                lock.read(at, 0.5)

    for _ in range(8):
        env.process(user())
    env.run(until=3000)
    return grants


@pytest.mark.parametrize("future_share", [0.0, 0.5])
def test_no_grant_overlaps_a_writer(future_share):
    grants = sorted(_grants(1, future_share))
    writers = [g for g in grants if g[2]]
    for a, b in zip(writers, writers[1:]):
        assert b[0] >= a[1] - 1e-9
    for s, e, write, _ in grants:
        if not write:
            assert all(e <= ws + 1e-9 or s >= we - 1e-9 for ws, we, *_ in writers)
    assert all(g[3] >= 0 for g in grants)
    assert any(g[3] > 0 for g in grants)  # the load is high enough to contend


def _reference_waits(requests):
    """First fit over every grant so far, kept apart and walked from the start: what SpinRWLock must
    compute however it prunes, bisects and merges its timeline."""
    writes, reads, waits = [], [], []
    for at, hold, write in requests:
        busy = sorted(writes + reads) if write else sorted(writes)
        start = at
        for s, e in busy:
            if e <= start:
                continue
            if start + hold <= s:
                break
            start = e
        (writes if write else reads).append((start, start + hold))
        waits.append(start - at)
    return waits


@pytest.mark.parametrize("reads", [False, True])
def test_timeline_matches_a_plain_first_fit(reads):
    """Bisection to the first live grant and coalescing of back-to-back grants change no wait: a
    saturated lock (many requests queued ahead, out of order) against the plain walk."""
    env = simpy.Environment()
    lock = SpinRWLock(env, "test")
    rng = np.random.default_rng(5)
    requests, waits = [], []

    def user():
        while True:
            yield env.timeout(rng.exponential(4.0))  # offered load ~2: the queue grows
            at = env.now + rng.random() * 3.0 * (rng.random() < 0.5)
            write = not reads or rng.random() < 0.7
            hold = float(rng.choice([1.0, 0.5, 1.5]))
            requests.append((at, hold, write))
            waits.append(lock.write(at, hold) if write else lock.read(at, hold))

    for _ in range(8):
        env.process(user())
    env.run(until=800)
    assert max(waits) > 50.0  # saturated: long queues to step over
    assert waits == _reference_waits(requests)
    assert len(lock._write) < len([r for r in requests if r[2]]) / 10  # merged into few intervals


# ------------------------------------------------------------------------- the mmap_lock's reader handoff


def _handoff_run(hog_us: float) -> dict[str, float]:
    """Two CPUs, no ticks or slices in the way. A fork's walk (task F, CPU 0) holds the mmap_lock for
    write over [0, 10); a thread R of the same mm (CPU 1) faults on a VMA the walk reached at t=1 and
    sleeps on the lock; a CPU hog on CPU 1 runs a `hog_us` chunk with no preemption point from t=1.
    The walk's end hands R the lock for read (rwsem_mark_wake), but R runs only once the hog's chunk
    ends; its fault takes 0.5. F's next fork asks for the lock for write at t=20."""
    from forksim.locks import LockStats, MmapLock
    from forksim.machine import Machine, SchedulerParams

    from engine_tasks import start_task

    env = simpy.Environment()
    m = Machine(env, 2, SchedulerParams(tick_us=1e9, slice_us=1e9, wakeup_granularity_us=1e9))
    lock = MmapLock(env, LockStats("mmap_lock"))
    seen: dict[str, float] = {}

    def reader(task):
        yield task.run(1.0)  # user work, then the fault on the walked VMA
        released = lock.wait_read()
        woken = task.sleep()
        released.callbacks.append(lambda _e: m.wake(task, None))
        yield woken
        seen["reader_runs"] = env.now
        yield task.run(0.5)  # handle_mm_fault under the handed-over read lock
        lock.read_release()

    def hog(task):
        yield task.run(hog_us)  # one chunk, no preemption point

    def forker(task):
        assert lock.try_write(task) is None
        yield task.run(10.0)  # the walk
        lock.release()
        yield task.run(10.0)  # the rest of the fork, the child, the wait: the next fork at t=20
        granted = lock.try_write(task)
        if granted is not None:
            woken = task.sleep()
            granted.callbacks.append(lambda _e: m.wake(task, None))
            yield woken
        seen["second_walk"] = env.now
        lock.release()

    start_task(env, m, "F", forker, cpu=0)
    start_task(env, m, "R", reader, cpu=1)
    start_task(env, m, "hog", hog, cpu=1)
    env.run()
    seen["second_wait"] = lock.stats.waits[-1]
    return seen


def test_a_walks_end_hands_the_lock_to_its_sleeping_readers_until_their_fault_is_done():
    """The known answer: the reader runs when the hog's chunk ends (1 + 100), its fault ends at 101.5,
    and only then can the next fork's walk start (81.5 after it asked at 20), although nobody ran
    under the lock in between."""
    seen = _handoff_run(100.0)
    assert seen["reader_runs"] == pytest.approx(101.0)
    assert seen["second_walk"] == pytest.approx(101.5)
    assert seen["second_wait"] == pytest.approx(81.5)


def test_a_reader_that_ran_before_the_next_fork_holds_nothing_up():
    """The same, the hog's chunk over at t=6 (before the walk ends): the reader's fault is done at
    10.5, so the next fork at t=20 takes the lock at once."""
    seen = _handoff_run(5.0)
    assert seen["reader_runs"] == pytest.approx(10.0)
    assert seen["second_walk"] == pytest.approx(20.0)
    assert seen["second_wait"] == 0.0
