"""Measure and fit what copy_process copies beyond the address space (csrc/clonebench.c).

Pinned, RSS ~0, untraced: fork() against the number of open fds (copy_files -> dup_fd, and the
child's close_files); clone() with each sharing flag and each CLONE_NEW* against a plain clone()
(the call, the child's exit and reap, and for deferred teardown the CPU the rest of the machine
spent); fork() with N live children of the parent (the call, the exit and reap); unshare(FLAG) as a
fresh child's first call against unshare(0) in alternate repetitions (`-u`). The fits give the
profile's optional `files`, `clone_flags`, `live_children` and `unshare` sections, each with its
provenance. Namespaces need CAP_SYS_ADMIN: without it they are skipped with the kernel's reason.
`measure_contention` (`--contention`): one creator of clone(CLONE_NEWNS / CLONE_NEWNET) against two at
once, one per CPU (`-P 2`), alternated: whether creators serialise on namespace_sem or rtnl_lock.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..errors import MeasurementError
from ..kernel.flags import FLAG_BITS
from ..lab import build_dir, compile_c, compiler_version
from ..profile import FD_BASE
from . import bench

__all__ = ["CopiesPlan", "COPIES_PLANS", "build_clonebench", "measure_copies", "fit_copies", "FLAG_BITS"]

_SHARING = ("CLONE_FILES", "CLONE_FS", "CLONE_SIGHAND", "CLONE_SYSVSEM", "CLONE_IO")
_NAMESPACES = ("CLONE_NEWNS", "CLONE_NEWPID", "CLONE_NEWNET", "CLONE_NEWUTS", "CLONE_NEWIPC", "CLONE_NEWCGROUP",
               "CLONE_NEWUSER")
# unshare(2) of a running task: the namespaces, and the fd table and fs_struct of a child that shares
# them (clone(CLONE_FILES|CLONE_FS)): ksys_unshare -> unshare_fd (dup_fd) / unshare_fs (copy_fs_struct)
_UNSHARE = ("CLONE_FILES", "CLONE_FS") + _NAMESPACES
# Teardown the kernel defers to a worker (the rest is inside the child's exit): a network
# namespace's last put queues cleanup_net on netns_wq (net/core/net_namespace.c).
_DEFERRED = ("CLONE_NEWNET",)


@dataclass(frozen=True)
class CopiesPlan:
    fds: tuple[int, ...]
    children: tuple[int, ...]
    reps: int
    ns_reps: int
    # the traced clone(CLONE_NEWNET) loop (netns.py): about 0.75 ms a creation, 1 s of analysis per 1,000;
    # 0: not measured
    netns_reps: int = 0


COPIES_PLANS = {
    "smoke": CopiesPlan((3, 1000), (0, 200), 30, 10),
    "quick": CopiesPlan((3, 1000, 10000), (0, 10000), 80, 30, 600),
    "full": CopiesPlan((3, 1000, 5000, 10000, 19000), (0, 1000, 3000, 10000), 300, 150, 2000),
}


def build_clonebench(cc: str) -> str:
    """Compile csrc/clonebench.c into the benchmarks' build folder (forksim.lab: by content hash)."""
    out = build_dir("bench", sorted(bench.CSRC.glob("*.[ch]")), compiler_version(cc) or cc) / "clonebench"
    if not out.exists():
        r = compile_c(cc, ["-O2", str(bench.CSRC / "clonebench.c")], out)
        if r.returncode != 0:
            raise MeasurementError(f"cannot compile clonebench.c: {r.stderr.strip()[-400:]}")
    return str(out)


def _fd_limit() -> int:
    import resource

    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


PARTS = ("fds", "flags", "children", "unshare")


def measure_copies(exe: str, cpu: int, plan: CopiesPlan, log: Callable[[str], None] = lambda m: None,
                   parts: tuple[str, ...] = PARTS) -> dict[str, Any]:
    """Run the set (`parts` of it); returns {"runs": [{"key", "setup", "samples", "sys"}], "skipped": [reasons]}."""
    runs: list[dict[str, Any]] = []
    skipped: list[str] = []
    limit = _fd_limit() - 16

    def one(key: dict[str, Any], args: list[str], reps: int, split: dict[int, dict[str, Any]] | None = None) -> None:
        """One clonebench run; `split` {any: key}: an -A run's samples, by wait style, as one run each."""
        argv = [exe, "-n", str(reps), "-w", str(max(3, reps // 10)), "-c", str(cpu), *args]
        try:
            setup, samples, _, _ = bench.run_bench(argv, timeout=120)
        except MeasurementError as exc:
            skipped.append(f"{key}: {exc}")
            log(f"skipped {key}: {exc}")
            return
        sysrow = next((s for s in samples if s.get("b") == "sys"), None)
        timed = [s for s in samples if s.get("b") in ("clone", "unshare")]
        for any_wait, k in (split or {None: key}).items():
            runs.append({"key": k, "setup": setup, "sys": sysrow,
                         "samples": [s for s in timed if any_wait is None or s.get("any") == any_wait]})

    for fds in plan.fds if "fds" in parts else ():
        if fds > limit:
            skipped.append(f"fds={fds}: above RLIMIT_NOFILE's hard limit {limit + 16} (the per-fd term extrapolates)")
            continue
        one({"what": "fds", "fds": fds}, ["-d", str(fds)], plan.reps)
    if "flags" in parts:
        one({"what": "flag", "flag": "none"}, ["-C"], plan.reps)
        one({"what": "flag", "flag": "CLONE_VM"}, ["-f", f"{FLAG_BITS['CLONE_VM']:x}"], plan.reps)
        for flag in _SHARING:
            one({"what": "flag", "flag": flag}, ["-f", f"{FLAG_BITS[flag]:x}"], plan.reps)
    if os.geteuid() != 0:
        skipped.append("namespaces: not root (CLONE_NEW* needs CAP_SYS_ADMIN): no namespace costs measured")
    elif "flags" in parts:
        for flag in _NAMESPACES:
            one({"what": "flag", "flag": flag}, ["-f", f"{FLAG_BITS[flag]:x}"], plan.ns_reps)
    for n in plan.children if "children" in parts else ():
        # both wait styles from one set of live children, alternating (starting and ending 10,000 of them
        # takes seconds; the timed loop milliseconds)
        one({"what": "children", "live_children": n}, ["-L", str(n), "-A"], 2 * plan.reps,
            split={0: {"what": "children", "live_children": n}, 1: {"what": "children_any", "live_children": n}})
    shared = ["-f", f"{FLAG_BITS['CLONE_FILES'] | FLAG_BITS['CLONE_FS']:x}"]  # unshare copies only what is shared
    for flag in _UNSHARE if "unshare" in parts else ():
        if flag in _NAMESPACES and os.geteuid() != 0:
            continue  # said once above
        args = ["-u", f"{FLAG_BITS[flag]:x}"] + (shared if flag in ("CLONE_FILES", "CLONE_FS") else [])
        one({"what": "unshare", "flag": flag}, args, 2 * plan.ns_reps)  # half of them unshare(0)
    if "unshare" in parts and plan.fds[-1] <= limit:  # the per-fd check of unshare_fd -> dup_fd
        one({"what": "unshare", "flag": "CLONE_FILES", "fds": plan.fds[-1]},
            ["-u", f"{FLAG_BITS['CLONE_FILES']:x}", "-d", str(plan.fds[-1]), *shared], 2 * plan.ns_reps)
    return {"runs": runs, "skipped": skipped}


def measure_contention(exe: str, cpu: int, flags: tuple[str, ...] = ("CLONE_NEWNS", "CLONE_NEWNET"),
                       rounds: int = 30, reps: int = 100, log: Callable[[str], None] = lambda m: None
                       ) -> dict[str, Any]:
    """Creators serialising on a namespace's lock: clone(FLAG) by one creator, then by two at once
    (one per CPU, -P 2), alternated `rounds` times in one run (the box's other load hits both alike).
    Returns {"runs": [{"flag", "creators", "round", "samples", "spans"}]}."""
    runs: list[dict[str, Any]] = []
    for r in range(rounds):
        for flag in ("none", *flags):
            bits = ["-C"] if flag == "none" else ["-f", f"{FLAG_BITS[flag]:x}"]
            for n in (1, 2):
                argv = [exe, "-n", str(reps), "-w", "3", "-c", str(cpu), "-P", str(n), *bits]
                _, samples, _, _ = bench.run_bench(argv, timeout=300)
                runs.append({"flag": flag, "creators": n, "round": r,
                             "samples": [s for s in samples if s.get("b") == "clone"],
                             "spans": [s for s in samples if s.get("b") == "span"]})
        log(f"contention round {r + 1}/{rounds}")
    return {"runs": runs}


def contention_table(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Per flag and number of creators: the call's wall and CPU p50 (us) and the throughput (creations/s
    over the longest worker's loop, median over rounds), and two creators' throughput against one's."""
    rows: list[dict[str, Any]] = []
    one: dict[str, float] = {}
    for flag in dict.fromkeys(r["flag"] for r in data["runs"]):
        for n in (1, 2):
            rs = [r for r in data["runs"] if r["flag"] == flag and r["creators"] == n]
            samples = [s for r in rs for s in r["samples"]]
            thr = [sum(s["reps"] for s in r["spans"]) / (max(s["wall_ns"] for s in r["spans"]) / 1e9) for r in rs]
            row = {"flag": flag, "creators": n, "rounds": len(rs), "call_wall_p50_us": float(np.median(
                [s["fork_ns"] for s in samples]) / 1e3), "call_cpu_p50_us": float(np.median(
                    [s["fork_cpu_ns"] for s in samples]) / 1e3), "throughput_per_s": float(np.median(thr))}
            if n == 1:
                one[flag] = row["throughput_per_s"]
            else:
                row["throughput_vs_one"] = row["throughput_per_s"] / one[flag]
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------- fits


def _med(run: dict[str, Any], field: str) -> tuple[float, float]:
    """(median us, its standard error us) of one run's field (SE from the IQR, normal approximation)."""
    v = np.asarray([s[field] for s in run["samples"]], dtype=float) / 1e3
    q1, q2, q3 = np.percentile(v, [25, 50, 75])
    return float(q2), float(1.253 * (q3 - q1) / 1.349 / np.sqrt(max(1, len(v))))


def _other_cpu_us(run: dict[str, Any]) -> float:
    s = run.get("sys") or {}
    return float(s.get("other_cpu_ns", 0)) / max(1, int(s.get("reps", 1))) / 1e3


def _slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope through the first point (the calibration's own baseline)."""
    x = np.asarray(xs, dtype=float) - xs[0]
    y = np.asarray(ys, dtype=float) - ys[0]
    den = float((x * x).sum())
    return max(0.0, float((x * y).sum()) / den) if den > 0 else 0.0


def _delta(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, bool]:
    """a - b, and whether it stands out of the noise (more than 2 standard errors)."""
    d = a[0] - b[0]
    return d, abs(d) > 2.0 * float(np.hypot(a[1], b[1]))


def _fit_files(runs: list[dict[str, Any]], where: str) -> dict[str, Any] | None:
    fd_runs = sorted((r for r in runs if r["key"]["what"] == "fds"), key=lambda r: r["key"]["fds"])
    if len(fd_runs) < 2 or fd_runs[0]["key"]["fds"] != FD_BASE:
        return None
    xs = [r["key"]["fds"] for r in fd_runs]
    call = [_med(r, "fork_cpu_ns")[0] for r in fd_runs]
    exit_ = [_med(r, "exit_ns")[0] for r in fd_runs]
    n = min(len(r["samples"]) for r in fd_runs)
    pts = ", ".join(f"{x} fds {c:.1f}/{e:.1f} us" for x, c, e in zip(xs, call, exit_))
    resid = [c - call[0] - _slope(xs, call) * (x - xs[0]) for x, c in zip(xs, call)]
    return {
        "dup_fd_per_fd_us": round(_slope(xs, call), 6),
        "close_files_per_fd_us": round(_slope(xs, exit_), 6),
        "sigma": 0.1,
        "source": (f"measured: fork() of a parent holding N open fds (dup of /dev/null), RSS ~0, {where}, "
                   f">= {n} samples per size, clonebench; p50 of the call (the parent's CPU time) / of the child's "
                   f"exit and reap: {pts}; least-squares slopes through the {FD_BASE}-fd point (the calibration's "
                   f"parents hold {FD_BASE} fds, inside the fixed stages, so the default adds 0); residuals of the "
                   f"call's line {', '.join(f'{r:+.1f}' for r in resid)} us; sigma an assumption"),
    }



def _zero_unless_significant(what: str, call: float, exit_: float, call_sig: bool,
                             exit_sig: bool) -> tuple[str, float, float]:
    """A change within 2 standard errors of the reference is taken as 0, and the source says so."""
    if not call_sig:
        what += "; the call's change is within 2 standard errors: taken as 0"
        call = 0.0
    if not exit_sig:
        what += "; the exit's change is within 2 standard errors: taken as 0"
        exit_ = 0.0
    return what, call, exit_

def _fit_flags(runs: list[dict[str, Any]], where: str) -> dict[str, Any]:
    by = {r["key"]["flag"]: r for r in runs if r["key"]["what"] == "flag"}
    out: dict[str, Any] = {}
    base = by.get("none")
    if base is None:
        return out
    for flag, run in by.items():
        if flag in ("none", "CLONE_VM"):
            continue
        ref = by.get("CLONE_VM") if flag == "CLONE_SIGHAND" else base
        if ref is None:
            continue
        call, call_sig = _delta(_med(run, "fork_cpu_ns"), _med(ref, "fork_cpu_ns"))
        exit_, exit_sig = _delta(_med(run, "exit_ns"), _med(ref, "exit_ns"))
        deferred = max(0.0, _other_cpu_us(run) - _other_cpu_us(ref)) if flag in _DEFERRED else 0.0
        against = "clone(CLONE_VM)" if flag == "CLONE_SIGHAND" else "clone(SIGCHLD)"
        what = (f"measured: clone({flag}{'|CLONE_VM' if flag == 'CLONE_SIGHAND' else ''}) against {against} of the "
                f"same parent (RSS ~0, 3 fds, {where}, {len(run['samples'])} and {len(ref['samples'])} samples, "
                f"clonebench): call p50 {_med(run, 'fork_cpu_ns')[0]:.1f} vs {_med(ref, 'fork_cpu_ns')[0]:.1f} us, "
                f"child exit + reap p50 {_med(run, 'exit_ns')[0]:.1f} vs {_med(ref, 'exit_ns')[0]:.1f} us")
        what, call, exit_ = _zero_unless_significant(what, call, exit_, call_sig, exit_sig)
        if flag in _DEFERRED:
            what += (f"; deferred: CPU the rest of the machine spent per creation beyond the plain clone's "
                     f"({_other_cpu_us(run):.0f} vs {_other_cpu_us(ref):.0f} us, /proc/stat less the benchmark's own "
                     f"rusage, 0.3 s allowed for the workqueue to drain)")
        out[flag] = {"call_us": round(call, 3), "exit_us": round(exit_, 3), "deferred_us": round(deferred, 3),
                     "sigma": 0.1, "source": what + "; sigma an assumption"}
    return out


def _after_walk(run: dict[str, Any]) -> bool:
    """Whether a children run's forks each came right after a waitpid(-1) walk of the children list. In a run of
    both wait styles alternating (clonebench -A: samples of one parity of `i`), the fork of a waitpid(pid)
    repetition follows the previous repetition's waitpid(-1), and the other way round; in a run of one style,
    a fork follows its own style's reap."""
    idx = [int(x["i"]) for x in run["samples"] if "i" in x]
    alternating = len(idx) > 1 and all((i - idx[0]) % 2 == 0 for i in idx)
    any_wait = run["key"]["what"] == "children_any"
    return any_wait != alternating


def _fit_children(runs: list[dict[str, Any]], where: str) -> dict[str, Any] | None:
    """Per live child: the fork's own growth (forks that did not follow a waitpid(-1) walk), the fork's extra
    right after a walk (the walk's footprint, 10,000 task_structs, cools the fork's working set: +19 us at
    10,000 on the Intel host, 2026-12-03, where the call's own growth is +5 us), the exit and the walk."""
    pid = sorted((r for r in runs if r["key"]["what"] == "children"), key=lambda r: r["key"]["live_children"])
    anyw = {r["key"]["live_children"]: r for r in runs if r["key"]["what"] == "children_any"}
    if len(pid) < 2 or pid[0]["key"]["live_children"] != 0:
        return None
    xs = [r["key"]["live_children"] for r in pid]
    both = len(anyw) >= 2 and all(x in anyw for x in xs)
    # per N, (the run whose forks did not follow a walk, the run whose forks did)
    pairs = [(anyw[x], r) if _after_walk(r) else (r, anyw[x]) for x, r in zip(xs, pid)] if both else []
    call = [_med(plain, "fork_cpu_ns")[0] for plain, _ in pairs] or [_med(r, "fork_cpu_ns")[0] for r in pid]
    cooled = [_med(walked, "fork_cpu_ns")[0] - c for (_, walked), c in zip(pairs, call)] or [0.0] * len(xs)
    exit_ = [_med(r, "exit_ns")[0] for r in pid]
    walk = [(_med(anyw[x], "exit_ns")[0] - e) if x in anyw else e for x, e in zip(xs, exit_)]
    pts = ", ".join(f"{x}: call {c:.1f} ({k:+.1f} after a walk), exit+reap {e:.1f}, waitpid(-1) extra {w:+.1f}"
                    for x, c, k, e, w in zip(xs, call, cooled, exit_, walk))
    n = min(len(r["samples"]) for r in pid)
    return {
        **_CHILDREN_PLACE(_slope(xs, call), _slope(xs, exit_), _slope(xs, walk) if len(anyw) >= 2 else 0.0,
                          _slope(xs, cooled) if both else 0.0),
        "sigma": 0.1,
        "source": (f"measured: fork() of a parent with N live children blocked in read() (RSS ~0, {where}, "
                   f">= {n} samples per N, clonebench), p50 us by N: {pts}; least-squares slopes through N = 0; "
                   "the call's CPU time from the forks that did not follow a waitpid(-1) walk, its extra after "
                   "one from those that did (the two wait styles alternate in one run); reaped with waitpid(pid) "
                   "(do_wait_pid: no walk of the children list), the walk from the waitpid(-1) runs' extra; "
                   "sigma an assumption"),
    }


def _med_u(run: dict[str, Any], field: str, u: int) -> tuple[float, float]:
    """_med over the unshare run's repetitions with ("u": 1) or without ("u": 0) the flags."""
    return _med({"samples": [x for x in run["samples"] if x.get("u") == u]}, field)


def _fit_unshare(runs: list[dict[str, Any]], where: str, clone_flags: dict[str, Any]) -> dict[str, Any]:
    """unshare(FLAG) in a fresh child against unshare(0) in the same run (alternate repetitions): the
    call's CPU time and the child's exit + reap; a network namespace's deferred cleanup_net is the
    clone flag's (the same teardown; /proc/stat cannot single it out of a busy machine's CPU time)."""
    out: dict[str, Any] = {}
    by = {r["key"]["flag"]: r for r in runs if r["key"]["what"] == "unshare" and "fds" not in r["key"]}
    wide = next((r for r in runs if r["key"]["what"] == "unshare" and r["key"].get("fds")), None)
    for flag, run in by.items():
        if flag not in _UNSHARE or min(sum(1 for x in run["samples"] if x.get("u") == u) for u in (0, 1)) < 2:
            continue  # a combination (a check, not a term), or nothing measured
        call, call_sig = _delta(_med_u(run, "unshare_cpu_ns", 1), _med_u(run, "unshare_cpu_ns", 0))
        exit_, exit_sig = _delta(_med_u(run, "exit_ns", 1), _med_u(run, "exit_ns", 0))
        n1 = sum(1 for x in run["samples"] if x.get("u") == 1)
        shared = " by a child sharing the parent's fd table and fs_struct (clone(CLONE_FILES|CLONE_FS))" \
            if flag in ("CLONE_FILES", "CLONE_FS") else ""
        what = (f"measured: unshare({flag}){shared} as a fresh child's first call, against unshare(0) in alternate "
                f"repetitions of the same run (RSS ~0, 3 fds, {where}, {n1} + {len(run['samples']) - n1} samples, "
                f"clonebench -u): call CPU p50 {_med_u(run, 'unshare_cpu_ns', 1)[0]:.1f} vs "
                f"{_med_u(run, 'unshare_cpu_ns', 0)[0]:.1f} us (the latter: the bare syscall and the fresh child's "
                f"first page faults), child exit + reap p50 {_med_u(run, 'exit_ns', 1)[0]:.1f} vs "
                f"{_med_u(run, 'exit_ns', 0)[0]:.1f} us")
        what, call, exit_ = _zero_unless_significant(what, call, exit_, call_sig, exit_sig)
        if flag == "CLONE_FILES" and wide is not None:
            d = _med_u(wide, "unshare_cpu_ns", 1)[0] - _med_u(wide, "unshare_cpu_ns", 0)[0]
            fds = int(wide["key"]["fds"])
            what += (f"; check of the per-fd term: with {fds} fds the call adds {d:.1f} us, "
                     f"{(d - call) / (fds - FD_BASE):.4f} us per fd beyond {FD_BASE} (dup_fd: the files section's "
                     "dup_fd_per_fd_us, added by the model)")
        deferred = 0.0
        if flag in _DEFERRED:
            deferred = float((clone_flags.get(flag) or {}).get("deferred_us", 0.0))
            what += (f"; deferred {deferred:.1f} us: clone({flag})'s measured cleanup_net (the same teardown)"
                     if deferred else "; deferred: not measured (no clone measurement of the flag)")
        out[flag] = {"call_us": round(max(0.0, call), 3), "exit_us": round(exit_, 3), "deferred_us": round(deferred, 3),
                     "sigma": 0.1, "source": what + "; sigma an assumption"}
    return out


def _CHILDREN_PLACE(call: float, exit_: float, walk: float, after_walk: float = 0.0) -> dict[str, float]:
    """Where each measured growth lands in the model (see the module's docstring)."""
    return {"fork_per_child_us": round(call, 6), "exit_per_child_us": round(exit_, 6),
            "wait_per_child_us": round(walk, 6), "fork_after_walk_per_child_us": round(after_walk, 6)}


def fit_copies(raw: dict[str, Any], cpu: int, host: str = "", clone_flags: dict[str, Any] | None = None
               ) -> dict[str, Any]:
    """The profile's optional sections from measure_copies()'s runs (absent where not measured);
    `clone_flags`: a profile's measured flags, for deferred teardown when the raw holds no clone run."""
    where = f"pinned to CPU {cpu}" + (f" on {host}" if host else "")
    runs = raw.get("runs", [])
    out: dict[str, Any] = {}
    files = _fit_files(runs, where)
    if files:
        out["files"] = files
    flags = _fit_flags(runs, where)
    if flags:
        out["clone_flags"] = flags
    kids = _fit_children(runs, where)
    if kids:
        out["live_children"] = kids
    unshare = _fit_unshare(runs, where, flags or clone_flags or {})
    if unshare:
        out["unshare"] = unshare
    if raw.get("netns"):  # the traced clone(CLONE_NEWNET) loop (netns.py): rtnl and cleanup_net's batches
        from .netns import fit as fit_netns

        netns = fit_netns(raw["netns"], where)
        if netns:
            out["netns_cleanup"] = netns
    return out


def measured_p50(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """Every run's p50s (us), for the diagnostics and the closure beside the model."""
    rows = []
    for r in raw.get("runs", []):
        if r["key"]["what"] == "unshare":
            rows.append({**r["key"], "samples": len(r["samples"]),
                         "unshare_p50_us": round(_med_u(r, "unshare_cpu_ns", 1)[0], 2),
                         "unshare0_p50_us": round(_med_u(r, "unshare_cpu_ns", 0)[0], 2),
                         "exit_p50_us": round(_med_u(r, "exit_ns", 1)[0], 2),
                         "exit0_p50_us": round(_med_u(r, "exit_ns", 0)[0], 2)})
            continue
        after = {"after_walk": _after_walk(r)} if r["key"]["what"] in ("children", "children_any") else {}
        rows.append({**r["key"], **after, "vmas": (r.get("setup") or {}).get("vmas"), "samples": len(r["samples"]),
                     "call_p50_us": round(_med(r, "fork_cpu_ns")[0], 2), "exit_p50_us": round(_med(r, "exit_ns")[0], 2),
                     "rt_p50_us": round(_med(r, "rt_ns")[0], 2)})
    return rows


def merge_into(path: str, fit: dict[str, Any], note: str, key: str = "merged_copies") -> None:
    """Add the fitted sections to an existing profile file (an additive merge: every other number stays),
    with a provenance entry saying what was added, when and how."""
    import json
    from pathlib import Path

    from .merge import write_merged

    data = json.loads(Path(path).read_text())
    data.update(fit)
    write_merged(path, data, key, {"sections": sorted(fit), "note": note})


def main(argv: list[str] | None = None) -> int:
    """`python -m forksim.calibration.copies`: measure the fd table, clone flags and live children alone
    (pinned; run it under the exclusive CPU lock), print the fit, optionally merge it into profiles."""
    import argparse
    import json
    from pathlib import Path

    from ..lab import machine_facts
    from .plan import read_raw, write_raw

    ap = argparse.ArgumentParser(prog="python -m forksim.calibration.copies", description=main.__doc__)
    ap.add_argument("--plan", choices=sorted(COPIES_PLANS), default="full")
    ap.add_argument("--cpu", type=int, default=(os.cpu_count() or 1) - 1, help="CPU to pin to (default: the last)")
    ap.add_argument("--raw", help="write the raw samples here (.json or .json.gz)")
    ap.add_argument("--from-raw", help="fit a raw file written by --raw instead of measuring")
    ap.add_argument("--merge", action="append", default=[], metavar="PROFILE",
                    help="add the fitted sections to this profile file (repeatable)")
    ap.add_argument("--parts", default=",".join(PARTS), help="what to measure, comma-separated (default: "
                    f"{','.join(PARTS)})")
    ap.add_argument("--contention", action="store_true", help="instead: one creator against two at once (one per "
                    "CPU) of clone(CLONE_NEWNS) and clone(CLONE_NEWNET), alternated; prints the medians and ratios")
    a = ap.parse_args(argv)
    if a.contention:
        data = measure_contention(build_clonebench(bench.build().cc), a.cpu, log=print)
        print(json.dumps(contention_table(data), indent=1))
        return 0
    if a.from_raw:
        raw = read_raw(a.from_raw)
    else:
        parts = tuple(p for p in a.parts.split(",") if p)
        if not set(parts) <= set(PARTS):
            ap.error(f"--parts: one or more of {', '.join(PARTS)}")
        raw = measure_copies(build_clonebench(bench.build().cc), a.cpu, COPIES_PLANS[a.plan], print, parts)
        raw["plan"], raw["cpu"], raw["facts"], raw["parts"] = a.plan, a.cpu, machine_facts(), list(parts)
        if a.raw:
            write_raw(a.raw, raw)
    cpu, host = int(raw.get("cpu", a.cpu)), str(raw.get("facts", {}).get("cpu_model") or "")
    fit = fit_copies(raw, cpu, host)
    print(json.dumps({"fit": fit, "measured": measured_p50(raw), "skipped": raw.get("skipped", [])}, indent=1))
    parts = raw.get("parts", PARTS)
    for path in a.merge:  # unshare's deferred teardown: the target's own clone measurement where this raw has none
        target = fit_copies(raw, cpu, host, json.loads(Path(path).read_text()).get("clone_flags") or {})
        merge_into(path, target, f"python -m forksim.calibration.copies --plan {raw.get('plan')} --parts "
                   f"{','.join(parts)} (raw: {a.raw or a.from_raw or 'not kept'}), kernel "
                   f"{raw.get('facts', {}).get('kernel')}", key="merged_copies" if set(parts) == set(PARTS)
                   else f"merged_copies_{'_'.join(parts)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
