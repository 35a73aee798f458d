"""The families' fit (forksim/calibration/families.py): each family's fixed cost comes from its own untraced
loop, the traced run only apportioning it; and the fork sweep's fit through the base image."""

from __future__ import annotations

import numpy as np
import pytest

from forksim.calibration.families import SHORT_STAGES, family_paths, fit_families
from forksim.calibration.fit import Config, fit_linear, fit_linear_through
from forksim.calibration.plan import FORK_MODE, SPAWN_MODE, THREAD_MODE, VFORK_MODE, Store
from forksim.calibration.samples import Evidence
from forksim.profile import load_profile

BASE = {"rss_bytes": 0, "vmas": 25, "anon_vmas": 11, "ptes": 25, "pmds": 0}
CTX, HEAD = 3.8, 0.5


def _run(mode: str, call_us: float, rt_us: float, traced: bool = False) -> dict:
    key = {"rss": 0, "anon_vmas": 0, "file_vmas": 0, "thp": False, "pinned": True, "traced": traced, "mode": mode,
           "round": 0}
    sample = {"fork_ns": call_us * 1e3, "rt_ns": rt_us * 1e3}
    if mode == FORK_MODE:
        sample["fork_cpu_ns"] = call_us * 1e3
    return {"kind": mode, "key": key, "shape": dict(BASE), "samples": [dict(sample) for _ in range(20)],
            "segments": []}


def _true_stages() -> dict:
    """A profile's stages standing for the untraced truth."""
    return dict(load_profile("default").stages)


THREAD_START, EXEC_START = 6.0, 30.0  # the truth's thread and exec'd program's own work (us)


def _loops(st: dict, reap_vfork: float | None) -> dict[str, float]:
    return family_paths(st, CTX, HEAD, BASE, reap_vfork, THREAD_START, EXEC_START)


def _store(truth: dict[str, float]) -> Store:
    s = Store()
    s.runs += [_run(VFORK_MODE, truth["vfork call"], truth["vfork round trip"]),
               _run(THREAD_MODE, truth["thread call"], truth["thread round trip"]),
               _run(SPAWN_MODE, truth["posix_spawn call"], truth["posix_spawn round trip"]),
               _run(FORK_MODE, truth["fork call"], truth["fork round trip"])]
    return s


@pytest.mark.parametrize("inflation", [1.0, 1.6, 2.5])
def test_traced_short_stages_inflated_by_a_known_factor_come_back_to_the_untraced_loop(inflation):
    true = _true_stages()
    reap_v = 5.0
    truth = _loops(true, reap_v)
    # what tracing made of them: every short stage (and the families' own stages) `inflation` times longer
    traced = dict(true)
    for n in SHORT_STAGES + ("copy_process_setup_thread", "exec", "dup_mm", "fork_child_touch"):
        traced[n] = true[n].model_copy(update={"fixed_us": true[n].fixed_us * inflation})
    reap_tr = true["wait_reap"].model_copy(update={"fixed_us": reap_v * inflation})
    ev = Evidence(_store(truth), 1, True)
    st, reap, starts = fit_families(ev, traced, CTX, HEAD, reap_tr)
    for n in SHORT_STAGES + ("copy_process_setup_thread", "exec", "dup_mm", "fork_child_touch"):
        assert st[n].fixed_us == pytest.approx(true[n].fixed_us, rel=1e-4, abs=1e-4), n
    assert reap.fixed_us == pytest.approx(reap_v, rel=1e-4)
    assert starts["thread_start"].fixed_us == pytest.approx(THREAD_START, rel=1e-4)
    assert starts["exec_start"].fixed_us == pytest.approx(EXEC_START, rel=1e-4)
    after = family_paths(st, CTX, HEAD, BASE, reap.fixed_us, starts["thread_start"].fixed_us,
                         starts["exec_start"].fixed_us)
    for what, v in truth.items():
        assert after[what] == pytest.approx(v, rel=1e-4), what
    assert ev.diag["families"]["k_short"] == pytest.approx(1 / inflation, rel=1e-3)
    assert all(s.source.startswith(("derived", "assumption")) for s in st.values() if "calibration.families" in s.source)


def test_the_traced_split_survives_the_scaling():
    true = _true_stages()
    truth = _loops(true, 5.0)
    traced = dict(true)
    # tracing inflated setup twice as much as the tail: the fit keeps the traced proportions
    traced["copy_process_setup"] = true["copy_process_setup"].model_copy(update={"fixed_us": 10.0})
    traced["copy_process_tail"] = true["copy_process_tail"].model_copy(update={"fixed_us": 5.0})
    ev = Evidence(_store(truth), 1, True)
    st, _, _ = fit_families(ev, traced, CTX, HEAD, None)
    assert st["copy_process_setup"].fixed_us / st["copy_process_tail"].fixed_us == pytest.approx(2.0, rel=1e-4)
    assert _loops(st, None)["vfork call"] == pytest.approx(truth["vfork call"], rel=1e-4)


def test_a_loop_that_leaves_no_room_keeps_the_traced_value_and_says_so():
    true = _true_stages()
    truth = _loops(true, 5.0)
    truth["posix_spawn call"] = truth["vfork call"]  # as if measured at a far faster moment: exec would be ~0
    ev = Evidence(_store(truth), 1, True)
    st, _, _ = fit_families(ev, dict(true), CTX, HEAD, None)
    assert st["exec"].fixed_us == true["exec"].fixed_us
    assert any(m.startswith("exec:") for m in ev.diag["families"]["refused"])


def test_without_untraced_loops_nothing_changes():
    true = _true_stages()
    ev = Evidence(Store(), 1, True)
    st, reap, starts = fit_families(ev, dict(true), CTX, HEAD, None)
    assert st == true and reap is None and starts == {} and "families" not in ev.diag


def test_fit_through_the_base_image_predicts_it_exactly_and_recovers_linear_slopes():
    rng = np.random.default_rng(3)
    coef = {"fixed_us": 20.0, "per_vma_us": 0.5, "per_anon_vma_us": 1.0, "per_pte_us": 0.08, "per_pmd_us": 0.9}
    shapes = [(25, 11, 25, 0), (25, 11, 4096, 0), (26, 12, 65560, 0), (1025, 11, 25, 0), (1025, 1011, 1024, 0),
              (26, 12, 25, 512)]

    def cfg(v, a, p, m, bend=0.0):
        med = coef["fixed_us"] + coef["per_vma_us"] * v + coef["per_anon_vma_us"] * a + coef["per_pte_us"] * p \
            + coef["per_pmd_us"] * m
        med *= 1.0 + bend * (v > 500)  # many VMAs cost more each (caches): bends the free fit's intercept
        return Config(v, a, p, m, 1, list(med * rng.lognormal(0.0, 0.02, 300)), f"{v}/{a}/{p}/{m}")

    lin = [cfg(*s) for s in shapes]
    f = fit_linear_through(lin, lin[0])
    for t, v in coef.items():
        assert f.coef[t] == pytest.approx(v, rel=0.08), t
    bent = [cfg(*s, bend=0.4) for s in shapes]
    through, free = fit_linear_through(bent, bent[0]), fit_linear(bent)
    assert through.predict(bent[0]) == pytest.approx(bent[0].median, rel=1e-9)
    assert abs(through.predict(bent[0]) - bent[0].median) < abs(free.predict(bent[0]) - bent[0].median)


def test_the_cold_table_puts_the_error_on_the_extra_over_its_own_runs_back_to_back():
    from forksim.commands.calibrate import _cold_extras

    # the grid's back-to-back fork ran slower than the sweep the model prices (the host drifted): the
    # absolute errors hold that drift, the extras do not
    rows = [{"rss_bytes": 64 << 20, "cond": "sleep", "x": 0, "fork_p50_us": 1777.0, "forksim_p50_us": 1450.0},
            {"rss_bytes": 64 << 20, "cond": "sleep", "x": 100_000, "fork_p50_us": 2277.0, "forksim_p50_us": 1950.0},
            {"rss_bytes": 0, "cond": "sleep", "x": 100_000, "fork_p50_us": 200.0, "forksim_p50_us": 210.0}]  # no gap-0 run
    _cold_extras(rows)
    assert "extra_us" not in rows[0] and "extra_us" not in rows[2]
    assert rows[1]["extra_us"] == pytest.approx(500.0) and rows[1]["forksim_extra_us"] == pytest.approx(500.0)
    assert rows[1]["extra_error"] == pytest.approx(0.0)


def _spawn_traced(prep: float, head: float, tail: float, n: int = 40, preempted: int | None = None) -> dict:
    """A traced pinned posix_spawn run whose children spent `prep` us before the execve (beyond ret_from_fork),
    `head` in it up to the parent's preemption and `tail` after; `preempted` of them preempted inside execve."""
    run = _run(SPAWN_MODE, 0.0, 0.0, traced=True)
    k = n if preempted is None else preempted
    run["segments"] = [{"exec": head + tail, "exec_prep": prep + 1.5, "ret_from_fork": 1.5,
                        **({"exec_head": head} if i < k else {})} for i in range(n)]
    return run


def test_posix_spawn_call_splits_into_glibc_work_and_the_exec_up_to_its_release():
    """With the traced split (before execve : execve up to exec_mmap's release : after it = 3 : 1 : 0.5, all
    inflated alike by tracing), posix_spawn's untraced call remainder goes 3:1 to spawn_prep and exec, exec_tail
    is half the untraced exec, and fork+exec's round trip then holds the whole execve and no glibc work."""
    true = _true_stages()
    truth = _loops(true, 5.0)
    store = _store(truth)
    store.runs.append(_spawn_traced(60.0, 20.0, 10.0))
    ev = Evidence(store, 1, True)
    st, _, starts = fit_families(ev, dict(true), CTX, HEAD, None)
    rest = true["exec"].fixed_us  # what the call leaves beyond the shared stages: the old exec, all of it
    assert st["exec"].fixed_us == pytest.approx(rest / 4, rel=1e-4)
    assert starts["spawn_prep"].fixed_us == pytest.approx(3 * rest / 4, rel=1e-4)
    assert starts["exec_tail"].fixed_us == pytest.approx(rest / 8, rel=1e-4)
    split = {n: starts[n].fixed_us for n in ("spawn_prep", "exec_tail")}
    after = family_paths(st, CTX, HEAD, BASE, None, starts["thread_start"].fixed_us, starts["exec_start"].fixed_us,
                         **split)
    assert after["posix_spawn call"] == pytest.approx(truth["posix_spawn call"], rel=1e-4)
    assert after["posix_spawn round trip"] == pytest.approx(truth["posix_spawn round trip"], rel=1e-4)
    # fork+exec: the exec up to the release and its tail (which exec_start held before), no posix_spawn glibc work:
    # shorter by spawn_prep
    assert after["fork_exec round trip"] == pytest.approx(truth["fork_exec round trip"] - 3 * rest / 4, rel=1e-4)
    assert "exec_split" in ev.diag["families"]


def test_no_exec_split_where_the_parent_did_not_preempt_the_child_inside_execve():
    """Too few posix_spawn children preempted inside execve (a kernel where the released parent waits): exec
    keeps the whole call remainder, as before, and no spawn_prep or exec_tail is fitted."""
    true = _true_stages()
    truth = _loops(true, 5.0)
    store = _store(truth)
    store.runs.append(_spawn_traced(60.0, 20.0, 10.0, preempted=10))
    st, _, starts = fit_families(Evidence(store, 1, True), dict(true), CTX, HEAD, None)
    assert st["exec"].fixed_us == pytest.approx(true["exec"].fixed_us, rel=1e-4)
    assert "spawn_prep" not in starts and "exec_tail" not in starts
