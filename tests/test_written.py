"""Pages the parent wrote since its last fork (dup_mmap's per_written_pte_us): the config key, the state the model
keeps."""

from __future__ import annotations

import pytest
import simpy

from forksim.config import ConfigError, parse_config
from forksim.kernel.mm import MM, wrote
from forksim.locks import LockStats
from forksim.profile import ImageShape, load_profile
from forksim.runner import run_experiment

from conftest import REFERENCE_PROFILE

MiB = 1024**2
PAGES_64M = 64 * MiB // 4096


def _profile(per_page_us: float):
    """The reference profile with a per-written-page term on dup_mmap and no cold terms (warmth off: a write pass
    lengthens the cycle, and a cooler image would blur the term)."""
    prof = load_profile(REFERENCE_PROFILE)
    stages = dict(prof.stages)
    stages["dup_mmap"] = stages["dup_mmap"].model_copy(update={"per_written_pte_us": per_page_us})
    return prof.model_copy(update={"stages": stages, "warmth": None})


def _loop(write_fraction: float, per_page_us: float, **workload) -> dict:
    exp = parse_config({
        "experiment": {"name": "t", "duration": 400_000.0, "warmup": 50_000.0, "replications": 1, "seed": 5},
        "machine": {"cpus": 2, "profile": REFERENCE_PROFILE},
        "workload": {"kind": "closed", "parents": 1, "pin": True, **workload,
                     "image": {"rss": 64 * MiB, "vmas": 26, "write_fraction": write_fraction}},
    }, resolved=True)
    return run_experiment(exp, profile=_profile(per_page_us)).summary


# ------------------------------------------------------------------ the config key


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_write_fraction_out_of_range_is_one_clear_error(tiny_dict, bad):
    with pytest.raises(ConfigError) as exc:
        parse_config(tiny_dict({"workload": {"image": {"write_fraction": bad}}}), source="t.toml")
    assert "workload.image.write_fraction" in str(exc.value) and "\n" not in str(exc.value)


def test_a_server_states_its_writes_per_request_not_a_write_fraction(tiny_dict):
    cfg = tiny_dict({"workload": {"kind": "server", "rate": "1000/s", "image": {"write_fraction": 0.5}}})
    with pytest.raises(ConfigError, match="writes_per_request"):
        parse_config(cfg, source="t.toml")


# ------------------------------------------------------------------ the state: MM.written


def test_a_run_starts_with_no_page_written_and_writes_cap_at_its_pages():
    mm = MM(simpy.Environment(), ImageShape(vmas=4, anon_vmas=2, ptes=100), LockStats("mmap_lock"))
    assert mm.written == 0  # as a process that forks regularly, just after a fork
    wrote(mm, 30)
    wrote(mm, 30)
    assert mm.written == 60
    wrote(mm, 500)
    assert mm.written == 100


# ------------------------------------------------------------------ the model


def test_the_term_adds_its_price_per_written_page_to_each_fork():
    per_page = 0.02  # us
    base = _loop(0.0, per_page)["fork_latency_us"]["p50"]
    half = _loop(0.5, per_page)["fork_latency_us"]["p50"]
    full = _loop(1.0, per_page)["fork_latency_us"]["p50"]
    assert base < half < full
    # the residual scales the extra with the rest of the walk: within 15% of the pages' price
    assert full - base == pytest.approx(per_page * PAGES_64M, rel=0.15)
    assert half - base == pytest.approx(per_page * PAGES_64M / 2, rel=0.15)


def test_without_the_term_writes_cost_only_their_faults():
    quiet, writing = _loop(0.0, 0.0), _loop(1.0, 0.0)
    # the fork itself is priced as before (the same median within the residual's noise) ...
    assert writing["fork_latency_us"]["p50"] == pytest.approx(quiet["fork_latency_us"]["p50"], rel=0.05)
    # ... and the parent's write faults (a reuse each: the child is reaped) lengthen every cycle
    reuse = load_profile(REFERENCE_PROFILE).stages["cow_fault_reuse"].fixed_us
    cycle = 1e6 / writing["throughput_per_s"]["mean"] - 1e6 / quiet["throughput_per_s"]["mean"]
    assert cycle == pytest.approx(reuse * PAGES_64M, rel=0.15)


def test_a_parent_writing_after_each_fork_pays_at_its_next_fork():
    """cow_writer = "parent": the pages it wrote right after the fork are writable again at the next."""
    per_page = 0.02
    quiet = _loop(0.0, per_page)["fork_latency_us"]["p50"]
    cow = _loop(0.0, per_page, child={"cow_writer": "parent", "cow_write_fraction": 1.0})["fork_latency_us"]["p50"]
    assert cow - quiet == pytest.approx(per_page * PAGES_64M, rel=0.15)

