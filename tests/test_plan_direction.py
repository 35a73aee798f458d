"""forksim plan: the direction from the key and the SLO, linked [sweep] keys followed, geometric
steps for sizes and rates, undecided answers, values printed in units."""

from __future__ import annotations

import math
import re

import pytest

from forksim.cli import main
from forksim.config import parse_config
from forksim.plan import PlanResult, Probe, _bisect, _result, parse_slo, plan
from forksim.plan_keys import direction, linked_keys
from forksim.runner import run_experiment

MiB = 2**20
BASE = {
    "experiment": {"name": "plan-dir", "duration": "40ms", "warmup": "5ms", "replications": 2, "seed": 5},
    "machine": {"cpus": 2},
    "workload": {"parents": 1, "think_time": "1ms", "image": {"rss": "1MiB", "vmas": 20}},
}


@pytest.mark.parametrize("key,upper,linked,want", [
    ("machine.cpus", True, [], "smallest"),           # how many CPUs for p99 <= X: the fewest
    ("machine.cpus", False, [], "smallest"),          # how many CPUs for throughput >= X: the fewest
    ("workload.rate", True, [], "largest"),           # the most load under a latency bound
    ("workload.image.rss", True, [], "largest"),
    ("workload.parents", False, [], "smallest"),      # the least load reaching a throughput
    ("whatif.dup_mmap.per_pte_us", True, [], "largest"),
    ("machine.cpus", True, ["workload.parents"], "largest"),  # cpu-scaling: the machine grows with its load
    ("machine.idle_wake", True, [], None),            # no known kind: the range's ends decide
])
def test_direction_from_the_key_and_the_slo(key, upper, linked, want):
    assert direction(key, upper, linked)[0] == want
    assert direction(key, upper, linked, "largest")[0] == "largest"


def test_geometric_bisection_of_a_size():
    limit = 100 * MiB
    seen = []

    def probe(v):
        seen.append(v)
        return Probe(int(v), None, None, v <= limit)

    lo, hi = float(MiB), float(1024 * MiB)
    answer = _bisect(probe, lo, hi, "bytes", (hi / lo) ** (1 / 64), True, True)
    assert seen[0] == pytest.approx(math.sqrt(lo * hi), abs=1)  # 32 MiB, not 512.5 MiB
    assert answer <= limit < answer * (hi / lo) ** (1 / 64) * 1.001
    assert len(seen) <= 8


def test_linear_bisection_of_an_integer():
    seen = []
    answer = _bisect(lambda v: seen.append(v) or Probe(int(v), None, None, v >= 7), 64.0, 1.0, "int", 1.0, False,
                     False)
    assert answer == 7 and seen[0] == 32


def test_undecided_when_the_ci_straddles_the_bound():
    slo = parse_slo("fork_latency_us.p99<=300us")
    p = Probe(192, 299.3, [297.9, 300.8], True)
    res = _result("machine.cpus", slo, 192, "largest", (2, 256), [p], [], {192.0: p}, "int", "why")
    assert isinstance(res, PlanResult) and res.undecided and "straddles" in res.note
    p = Probe(192, 280.0, [270.0, 290.0], True)
    res = _result("machine.cpus", slo, 192, "largest", (2, 256), [p], [], {192.0: p}, "int", "why")
    assert not res.undecided


def test_cpus_answers_the_smallest_count_and_linked_keys_follow():
    exp = parse_config({**BASE, "workload": {**BASE["workload"], "parents": 6, "think_time": "0us"}})
    res = plan(exp, "throughput_per_s.mean>=20000/s", "machine.cpus", "1..6", workers=1)
    assert res.direction == "smallest" and "resource" in res.why
    by = {p.value: p for p in res.tried}
    assert by[res.answer].ok and not by[res.answer - 1].ok
    # the same search with the config linking parents to cpus: every probe moves both
    linked = parse_config({**BASE, "sweep": {"machine.cpus,workload.parents": [[1, 2], [2, 4], [4, 8]]}})
    links = linked_keys(linked, "machine.cpus", lambda k, raw: float(raw))
    assert [(ln.key, ln.ratio) for ln in links] == [("workload.parents", 2.0)]
    res = plan(linked, "fork_latency_us.p90<=1s", "machine.cpus", "1..3", workers=1)
    assert res.direction == "largest" and "workload.parents = 2 x machine.cpus" in res.note
    at3 = run_experiment(linked.model_copy(update={"sweep": {}}).with_overrides(
        {"machine.cpus": 3, "workload.parents": 6})).summary
    assert {p.value: p for p in res.tried}[3].metric == at3["fork_latency_us"]["p90"]


def test_cli_plan_prints_sizes_in_units(tmp_path, capsys):
    cfg = tmp_path / "p.toml"
    cfg.write_text("""
[experiment]
duration = "40ms"
warmup = "5ms"
replications = 2
[workload]
think_time = "1ms"
[workload.image]
rss = "1MiB"
""")
    assert main(["plan", str(cfg), "--slo", "fork_latency_us.p50<=300us", "--find", "workload.image.rss",
                 "--range", "1MiB..256MiB", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "workload.image.rss = 256MiB" in out and "the largest value" in out
    assert not re.search(r"\de[+-]\d", out), out  # no 1.002e+06
    answer = re.search(r"answer: (?:undecided: )?workload.image.rss = (\S+)", out).group(1)
    assert answer.endswith(("MiB", "KiB")), answer
