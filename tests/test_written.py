"""Pages the parent wrote since its last fork (dup_mmap's per_written_pte_us): the config key, the state the model
keeps, the calibration's fit and merge, the validation rows that state it and the tool that reads it."""

from __future__ import annotations

import json
import shutil
import resource
import subprocess
import sys
import tomllib

import pytest
import simpy

from forksim.calibration.plan import PLANS, WRITTEN, MiB, Store
from forksim.calibration.written import fit_written, merge_into, with_written
from forksim.config import ConfigError, parse_config
from forksim.lab.compiler import compiler
from forksim.kernel.mm import MM, wrote
from forksim.locks import LockStats
from forksim.profile import ImageShape, StageCost, load_profile
from forksim.runner import run_experiment
from forksim.validation.loadgen import build_tools
from forksim.validation.scenarios import get_scenario

from conftest import REFERENCE_PROFILE, REPO

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

def _server_fork_p50(per_page_us: float, writes: float) -> float:
    exp = parse_config({
        "experiment": {"name": "t", "duration": 1_000_000.0, "warmup": 100_000.0, "replications": 1, "seed": 5},
        "machine": {"cpus": 2, "profile": REFERENCE_PROFILE},
        "workload": {"kind": "server", "rate": "10000/s", "image": {"rss": 64 * MiB, "vmas": 26},
                     "server": {"service": 20.0, "interval": 400_000.0, "writes_per_request": writes},
                     "child": {"lifetime": 50_000.0}},
    }, resolved=True)
    return run_experiment(exp, profile=_profile(per_page_us)).summary["fork_latency_us"]["p50"]


def test_a_server_pays_at_each_snapshot_for_the_pages_its_requests_wrote():
    """A run starts as just after a snapshot: the requests' writes fault from the start and each snapshot
    write-protects the pages written since the last (400 ms at 10,000 requests/s, 2 writes each: 5,000-6,300 of the
    dataset's 16,384 pages, a page written twice counted once)."""
    per_page = 0.02
    assert _server_fork_p50(per_page, 0.0) == _server_fork_p50(0.0, 0.0)  # nothing written: nothing to pay
    extra = _server_fork_p50(per_page, 2.0) - _server_fork_p50(0.0, 2.0)
    assert 0.2 * per_page * PAGES_64M < extra < 0.6 * per_page * PAGES_64M


# ------------------------------------------------------------------ calibration: the fit and the merge


def _run(rss: int, read_us: float, written_us: float) -> dict:
    samples = [{"fork_cpu_ns": (written_us if i % 2 else read_us) * 1e3, "dirty": i % 2} for i in range(20)]
    return {"kind": WRITTEN, "key": {"rss": rss}, "shape": {}, "samples": samples, "segments": []}


def test_the_fit_is_the_sizes_extra_over_their_pages():
    store = Store(runs=[_run(64 * MiB, 900.0, 1200.0), _run(256 * MiB, 3600.0, 4600.0)])
    fit = fit_written(store)
    pages = (64 + 256) * MiB // 4096
    assert fit["per_written_pte_us"] == pytest.approx((300.0 + 1000.0) / pages, rel=1e-5)
    assert fit["rows"]["64MiB"]["extra_per_page_ns"] == pytest.approx(300.0 / PAGES_64M * 1e3, abs=0.01)
    assert "forkbench -D" in fit["source"] and "64 MiB 900 -> 1,200 us" in fit["source"]
    assert fit_written(Store()) is None
    # a written image measured no dearer never gives a negative price
    assert fit_written(Store(runs=[_run(64 * MiB, 900.0, 880.0)]))["per_written_pte_us"] == 0.0


def test_with_written_keeps_the_stage_and_appends_the_terms_source():
    cost = StageCost(fixed_us=5.0, per_pte_us=0.05, source="measured: the sweep")
    got = with_written(cost, {"per_written_pte_us": 0.015, "source": "measured: forkbench -D"})
    assert got.per_written_pte_us == 0.015 and got.per_pte_us == 0.05
    assert got.source == "measured: the sweep; per_written_pte_us: measured: forkbench -D"
    assert with_written(cost, None) is cost


def test_merge_sets_the_term_and_a_second_merge_replaces_the_first(tmp_path):
    prof = tmp_path / "p.json"
    shutil.copy(REFERENCE_PROFILE, prof)
    before = json.loads(prof.read_text())
    for written_us in (1200.0, 1300.0):
        raw = tmp_path / "raw.json"
        raw.write_text(json.dumps({"facts": {"kernel": "6.18"}, "runs": [_run(64 * MiB, 900.0, written_us)]}))
        merge_into(str(raw), str(prof), note="test")
    after = json.loads(prof.read_text())
    dup = after["stages"]["dup_mmap"]
    assert dup["per_written_pte_us"] == pytest.approx(400.0 / PAGES_64M, rel=1e-4)
    assert dup["source"].count("per_written_pte_us:") == 1 and "900 -> 1,300 us" in dup["source"]
    assert after["provenance"]["merged_written"]["sections"] == ["stages.dup_mmap.per_written_pte_us"]
    # every other number as it was
    del dup["per_written_pte_us"], dup["source"], before["stages"]["dup_mmap"]["source"]
    assert after["stages"] == before["stages"]
    assert load_profile(str(prof)).stages["dup_mmap"].per_written_pte_us > 0


def test_merge_of_a_raw_file_without_such_runs_says_so(tmp_path):
    raw = tmp_path / "raw.json"
    raw.write_text(json.dumps({"runs": []}))
    res = subprocess.run([sys.executable, "-m", "forksim.calibration.written", "merge", str(raw), REFERENCE_PROFILE],
                         capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 2 and "no runs of kind 'written'" in res.stderr and "Traceback" not in res.stderr


def test_the_plans_measure_written_images():
    assert PLANS["quick"].written_sizes and PLANS["full"].written_sizes
    assert set(PLANS["quick"].written_sizes) <= set(PLANS["full"].written_sizes)

# ------------------------------------------------------------------ the validation rows


def test_the_writing_rows_state_their_fraction_to_loadgen_and_to_the_model():
    sc = get_scenario("closed-fork-K1-rss256MiB-writes25pct")
    args = sc.loadgen_args(quick=False)
    assert args[args.index("--write-fraction") + 1] == "0.25" and "--pin" not in args
    cfg = sc.to_config({"vmas": 30, "rss_bytes": 256 * MiB}, cpus=2)
    assert cfg["workload"]["image"]["write_fraction"] == 0.25
    assert get_scenario("closed-fork-K1-rss64MiB-writes100pct-pin").pin



def _loadgen_minor_faults(loadgen: str, out, fraction: float) -> int:
    """Minor faults of one 0.3 s pinned loadgen run of a 16 MiB parent (its parents and children, reaped)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt
    run = subprocess.run([loadgen, "--out", str(out), "--rss", str(16 * MiB), "--duration", "0.3", "--warmup", "0.05",
                          "--write-fraction", f"{fraction:g}", "--pin"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt - before


@pytest.mark.skipif(compiler() is None, reason="needs a C compiler (gcc or cc) to build the load generator")
def test_loadgen_writes_its_share_after_each_reap_and_refuses_one_out_of_range(tmp_path):
    loadgen = str(build_tools().loadgen)
    bad = subprocess.run([loadgen, "--out", str(tmp_path / "x"), "--write-fraction", "1.5"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "--write-fraction" in bad.stderr
    # a quarter of the image written after each reap faults once a page (the fork write-protected it): 1,024 a
    # cycle of ~2 ms, against none without writes
    extra = _loadgen_minor_faults(loadgen, tmp_path / "w", 0.25) - _loadgen_minor_faults(loadgen, tmp_path / "r", 0.0)
    assert extra > 10 * 1024

# ------------------------------------------------------------------ the user's tool: tools/image_shape.py --written

_WRITER = """
import mmap, os, sys, time
n = 64 << 20
m = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
for i in range(0, n, 4096):
    m[i] = 1
print("ready", flush=True)
while True:  # fork, reap, write a quarter of the image, sleep: a fork every ~0.18 s
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    for i in range(0, n // 4, 4096):
        m[i] = 2
    time.sleep(0.17)
"""


def test_image_shape_reads_the_share_written_between_forks():
    writer = subprocess.Popen([sys.executable, "-c", _WRITER], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "ready"
        # a window longer than the writer's sleep and its fork together holds one or two of its write bursts, never
        # none (a window as long as the sleep fell between two bursts about once in 70 runs)
        res = subprocess.run([sys.executable, str(REPO / "tools" / "image_shape.py"), str(writer.pid), "--written",
                              "0.3"], capture_output=True, text=True, timeout=60)
    finally:
        writer.kill()
        writer.wait()
    assert res.returncode == 0, res.stderr
    image = tomllib.loads(res.stdout)["workload"]["image"]
    # one or two quarters of 64 MiB of its ~70 MiB, and the interpreter's own faults
    assert 0.2 < image["write_fraction"] < 0.6
    assert "minor faults in 0.3 s" in res.stdout
    bad = subprocess.run([sys.executable, str(REPO / "tools" / "image_shape.py"), "1", "--written", "0"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--written" in bad.stderr
