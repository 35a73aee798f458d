"""Common random numbers: each purpose draws from a stream of its own (forksim/streams.py), so two
sweep points of one seed see the same arrivals and the same n-th cost factor of every stage."""

import numpy as np

from forksim.config import parse_config
from forksim.runner import replication_seeds, resolve_profile, run_replication
from forksim.streams import Streams
from conftest import REFERENCE_PROFILE


def test_a_stream_does_not_depend_on_what_others_drew():
    seed = np.random.SeedSequence(5)
    a, b = Streams(seed), Streams(seed)
    a("costs").random(1000)  # one point draws more of another stream first
    assert np.array_equal(a("arrivals").random(10), b("arrivals").random(10))
    assert not np.array_equal(Streams(seed)("arrivals").random(10), Streams(seed)("costs").random(10))
    # replications differ: another spawn key
    s0, s1 = replication_seeds(5, 2)
    assert not np.array_equal(Streams(s0)("arrivals").random(10), Streams(s1)("arrivals").random(10))


def _open(rss: str, rate: str = "4000/s"):
    return parse_config({"experiment": {"duration": "1s", "warmup": "50ms", "replications": 1},
                         "machine": {"cpus": 2, "profile": REFERENCE_PROFILE},
                         "workload": {"kind": "open", "rate": rate, "image": {"rss": rss}}})


def test_sweep_points_of_one_seed_share_their_arrivals():
    # Two points that differ in what each creation costs: the arrival stream is the same (more
    # than one block of draws, so a shared stream would have interleaved them with the costs).
    seed = replication_seeds(3, 1)[0]
    a, b = (_open(rss) for rss in ("0B", "2MiB"))
    prof = resolve_profile(a)
    ra, rb = (run_replication(e, prof, 0, seed).records for e in (a, b))
    n = min(len(ra), len(rb))
    assert n > 3000
    assert np.array_equal(ra["arrival"].to_numpy()[:n], rb["arrival"].to_numpy()[:n])
    assert not np.array_equal(ra["reap"].to_numpy()[:n], rb["reap"].to_numpy()[:n])


def test_rates_scale_the_same_gaps():
    seed = replication_seeds(4, 1)[0]
    a, b = _open("0B", "2000/s"), _open("0B", "4000/s")
    prof = resolve_profile(a)
    ta = run_replication(a, prof, 0, seed).records["arrival"].to_numpy()
    tb = run_replication(b, prof, 0, seed).records["arrival"].to_numpy()
    n = min(len(ta), len(tb))
    np.testing.assert_allclose(tb[:n] * 2.0, ta[:n], rtol=1e-9)
