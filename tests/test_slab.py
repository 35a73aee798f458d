"""Remote frees (kernel/slab.py): a fork after its CPU's last child was freed on another CPU pays the
profile's `remote_free`; a back-to-back fork whose children exit where they were made does not. A thread
after its CPU's last thread exited on another CPU pays `remote_free.thread_us`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from forksim.config import parse_config
from forksim.errors import ProfileError
from forksim.kernel.costs import Costs
from forksim.kernel.slab import SlabFreelists
from forksim.profile import Fraction, ImageShape, RemoteFree, load_profile
from forksim.runner import run_experiment
from forksim.streams import Streams
from conftest import REFERENCE_PROFILE

TERM = RemoteFree(fixed_us=40.0, sigma=0.0, source="assumption: test")
SHAPE = ImageShape(vmas=25, anon_vmas=11)


def _costs(remote_free: RemoteFree | None = TERM) -> Costs:
    return Costs(load_profile(REFERENCE_PROFILE).model_copy(update={"remote_free": remote_free}), Streams(np.random.SeedSequence(1)))


def test_only_a_remote_free_of_the_cpus_own_child_costs():
    costs = _costs()
    slab = SlabFreelists(costs.profile.remote_free, 2)
    assert slab.extra_us(0, SHAPE, costs) == 0.0  # a booted machine: local frees
    slab.freed(0, 1)  # made on CPU 0, freed on CPU 1
    assert slab.extra_us(0, SHAPE, costs) == 40.0 and slab.extra_us(1, SHAPE, costs) == 0.0
    slab.freed(1, 0)  # CPU 1's own child freed remotely marks CPU 1, not CPU 0
    assert slab.extra_us(1, SHAPE, costs) == 40.0 and slab.extra_us(0, SHAPE, costs) == 40.0
    slab.freed(0, 0)  # the last frees into CPU 0's slabs are local again
    assert slab.extra_us(0, SHAPE, costs) == 0.0


def test_the_extra_grows_with_the_objects_the_fork_reallocates():
    costs = _costs(RemoteFree(fixed_us=10.0, per_vma_us=0.5, per_anon_vma_us=1.0, sigma=0.0, source="assumption: t"))
    slab = SlabFreelists(costs.profile.remote_free, 2)
    slab.freed(0, 1)
    assert slab.extra_us(0, SHAPE, costs) == pytest.approx(10.0 + 0.5 * 25 + 1.0 * 11)
    assert slab.extra_us(0, ImageShape(vmas=125, anon_vmas=111), costs) == pytest.approx(10.0 + 62.5 + 111.0)


def test_no_section_no_extra_and_the_residual_is_lognormal():
    costs = _costs(None)
    slab = SlabFreelists(None, 2)
    slab.freed(0, 1)
    assert slab.extra_us(0, SHAPE, costs) == 0.0
    noisy = _costs(RemoteFree(fixed_us=40.0, sigma=0.3, source="assumption: test"))
    s = SlabFreelists(noisy.profile.remote_free, 2)
    s.freed(0, 1)
    draws = np.array([s.extra_us(0, SHAPE, noisy) for _ in range(4000)])
    assert np.median(draws) == pytest.approx(40.0, rel=0.05)
    assert np.std(np.log(draws)) == pytest.approx(0.3, rel=0.1)


def test_profiles_without_the_section_load_and_a_bad_one_names_its_field(tmp_path):
    assert load_profile(REFERENCE_PROFILE).remote_free is None
    p = json.loads(load_profile(REFERENCE_PROFILE).model_dump_json())
    p["remote_free"] = {"fixed_us": -1.0, "source": "measured: x"}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(p))
    with pytest.raises(ProfileError) as exc:
        load_profile(str(path))
    assert "remote_free.fixed_us" in str(exc.value)


def test_a_thread_pays_for_its_cpus_last_thread_exiting_elsewhere_and_a_fork_does_not():
    costs = _costs(TERM.model_copy(update={"thread_us": 5.0}))
    slab = SlabFreelists(costs.profile.remote_free, 2)
    slab.thread_freed(0, 1)  # a thread made on CPU 0 released itself on CPU 1
    assert slab.thread_extra_us(0, costs) == 5.0 and slab.thread_extra_us(1, costs) == 0.0
    assert slab.extra_us(0, SHAPE, costs) == 0.0  # a fork's freelists of mm objects are untouched
    slab.thread_freed(0, 0)
    assert slab.thread_extra_us(0, costs) == 0.0
    unpriced = SlabFreelists(TERM, 2)  # a profile measured before the thread A/B: nothing drawn
    unpriced.thread_freed(0, 1)
    assert unpriced.thread_cost is None and unpriced.thread_extra_us(0, costs) == 0.0


def _k1(remote_free: RemoteFree | None, fork_local: float, clone: str = "fork") -> dict:
    exp = parse_config({
        "experiment": {"name": "t", "duration": 300_000.0, "warmup": 30_000.0, "replications": 1, "seed": 5},
        "machine": {"cpus": 2, "profile": REFERENCE_PROFILE},
        "workload": {"kind": "closed", "parents": 1, "think_time": 0.0,
                     "image": {"rss": 0, "vmas": 25}, "child": {"clone": clone, "lifetime": 0.0}},
    }, resolved=True)
    base = load_profile(REFERENCE_PROFILE)
    placement = {**base.placement, f"{clone}_local_when_idle": Fraction(value=fork_local, source="assumption: test")}
    prof = base.model_copy(update={"remote_free": remote_free, "placement": placement})
    return run_experiment(exp, profile=prof).summary


def test_children_on_the_other_cpu_slow_the_next_fork_by_the_term():
    without, with_ = _k1(None, 0.0), _k1(TERM, 0.0)
    # every child runs and exits on the idle CPU: every fork after the first pays the term
    gain = with_["fork_latency_us"]["p50"] - without["fork_latency_us"]["p50"]
    assert 0.8 * TERM.fixed_us < gain < 1.2 * TERM.fixed_us
    assert with_["throughput_per_s"]["mean"] < without["throughput_per_s"]["mean"]


def test_children_kept_on_the_parents_cpu_pay_nothing():
    # a child that stays is freed where it was made: the term all but never applies. (A child kept on its
    # parent's CPU no longer takes it at the fork's return, wake_up_new_task's rule; one still waiting at
    # a tick is pulled by the idle CPU's nohz balance and exits there: 2 of 2835 with this seed.)
    with_, without = _k1(TERM, 1.0)["fork_latency_us"], _k1(None, 1.0)["fork_latency_us"]
    assert with_["p50"] == pytest.approx(without["p50"], rel=0.01)
    assert with_["mean"] == pytest.approx(without["mean"], rel=0.02)


def test_threads_exiting_on_the_other_cpu_slow_the_next_thread_by_thread_us():
    thread_term = TERM.model_copy(update={"thread_us": 6.0})
    without, with_ = _k1(TERM, 0.0, "thread"), _k1(thread_term, 0.0, "thread")
    gain = with_["fork_latency_us"]["p50"] - without["fork_latency_us"]["p50"]
    assert 0.8 * 6.0 < gain < 1.2 * 6.0  # every thread runs and exits on the idle CPU
    # kept on the creator's CPU, a thread releases itself there: nothing to pay, and a profile
    # without thread_us runs exactly as before
    def same(a: dict, b: dict) -> bool:
        return all(a[k] == b[k] for k in ("fork_latency_us", "roundtrip_latency_us", "throughput_per_s"))
    assert same(_k1(thread_term, 1.0, "thread"), _k1(TERM, 1.0, "thread"))
    assert same(_k1(None, 0.0, "thread"), without)


def _runs(store, kind: str, shape: dict, p50_us: float, rnd: int, mode: str = "fork") -> None:
    samples = [{"fork_ns": int(1000 * p50_us * f), "fork_cpu_ns": int(1000 * p50_us * f)} for f in (0.9, 1.0, 1.1)]
    key = {"rss": 0, "anon_vmas": shape["anon_vmas"] - 11, "file_vmas": shape["vmas"] - 25 - (shape["anon_vmas"] - 11),
           "thp": False, "pinned": True, "traced": False, "mode": mode, "round": rnd}
    store.add(kind, key, shape, samples)


def test_the_fit_recovers_a_known_extra_less_the_stack_miss():
    from forksim.calibration.fork_path import fit_remote_free
    from forksim.calibration.plan import Store
    from forksim.calibration.samples import Evidence
    from forksim.profile import StageCost

    def extra(vmas: int, anon: int) -> float:  # the truth: 8 + 0.4/VMA + 0.9/anon VMA, plus a 2.5 us stack miss
        return 8.0 + 0.4 * vmas + 0.9 * anon + 2.5

    store = Store()
    shapes = ({"vmas": 25, "anon_vmas": 11}, {"vmas": 125, "anon_vmas": 11}, {"vmas": 125, "anon_vmas": 111})
    for rnd in range(2):
        for sh in shapes:
            local = 60.0 + sh["vmas"] + rnd
            _runs(store, "free_local", sh, local, rnd)
            _runs(store, "free_remote", sh, local + extra(sh["vmas"], sh["anon_vmas"]), rnd)
        _runs(store, "thread_free_local", shapes[0], 7.0 + rnd, rnd, "thread")
        _runs(store, "thread_free_remote", shapes[0], 7.0 + rnd + 4.0 + 2.5, rnd, "thread")  # 4 us, + the stack miss
    st = {"stack_vmalloc": StageCost(fixed_us=3.1, source="measured: t"),
          "stack_cache_hit": StageCost(fixed_us=0.6, source="assumption: t")}
    ev = Evidence(store, 1, False)
    got = RemoteFree.model_validate(fit_remote_free(ev, st))
    assert got.fixed_us == pytest.approx(8.0, abs=0.01)
    assert got.per_vma_us == pytest.approx(0.4, abs=1e-3) and got.per_anon_vma_us == pytest.approx(0.9, abs=1e-3)
    assert got.source.startswith("measured:") and ev.diag["remote_free"]["stack_miss_us"] == pytest.approx(2.5)
    assert got.thread_us == pytest.approx(4.0, abs=0.01) and "thread_us" in got.source
    assert fit_remote_free(Evidence(Store(), 1, False), st) is None  # an old raw file: no section
    for kind in ("thread_free_local", "thread_free_remote"):  # a raw file older than the thread A/B
        store.runs = [r for r in store.runs if r["kind"] != kind]
    assert RemoteFree.model_validate(fit_remote_free(Evidence(store, 1, False), st)).thread_us is None
