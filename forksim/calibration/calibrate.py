"""Measure this machine and write a forksim profile (`forksim calibrate`).

Order of work: build the C benchmarks; if root and tracefs are available, the traced runs first
(a private tracefs instance, segments per fork, see tracefs.py); then the untraced runs, sizes
interleaved over rounds: fork against touched anonymous RSS (pinned and unpinned), against VMA
counts (anonymous-with-pages and file-backed), THP on, vfork / posix_spawn / fork+execve / threads,
bursts of forks (stack cache), COW and page faults, and the scheduler's costs (idle wake-up,
context switch, IPI). Then the fits (fit.py) and the profile, written atomically.

Pinned runs give the stage costs (intrinsic costs, no idle-CPU wake-up); cross-CPU runs give the
scheduler's idle_wake and ipi_send. Held-out sizes are measured but left out of every fit; their
measured fork() p50 (the parent's time inside fork(), pinned, untraced) is recorded with the
profile's own prediction in diagnostics['held_out'].
"""

from __future__ import annotations

import datetime as _dt
import gzip
import json
import os
import shlex
import subprocess
import sys
import time
import random
from pathlib import Path
from typing import Any, Callable

from ..errors import MeasurementError
from ..io import write_text
from . import bench, tracefs
from .derive import build_profile
from .warmth import cold_jobs
from .interruptions import measure_interruptions
from ..host import this_host
from ..store import store_dir
from ..lab import machine_facts, mem_available, read_text
from .plan import GiB, MiB, PLANS, Plan, Store, label as _label

__all__ = ["calibrate", "refit", "Plan", "PLANS", "machine_facts"]


def _reps(rss: int, vmas: int, budget_us: float, lo: int, hi: int, thp: bool = False) -> int:
    """Repetitions so that one run's fork round trips take about budget_us (rough cost model)."""
    est = 120.0 + vmas * 2.5 + (rss / (2 * MiB) * 1.2 if thp else rss / 4096 * 0.12)
    return int(max(lo, min(hi, budget_us / est)))


class _Progress:
    def __init__(self, enabled: bool, total: int):
        self.enabled = enabled
        self._p = None
        if enabled:
            try:
                from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

                self._p = Progress(TextColumn("[bold]calibrate[/]"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                                   TimeElapsedColumn(), TextColumn("{task.description}"), transient=False)
                self._p.start()
                self._task = self._p.add_task("", total=total)
            except Exception:  # noqa: BLE001 - no rich: plain lines
                self._p = None

    def step(self, what: str) -> None:
        if self._p is not None:
            self._p.update(self._task, description=what)
        elif self.enabled:
            print(f"calibrate: {what}", file=sys.stderr, flush=True)

    def advance(self) -> None:
        if self._p is not None:
            self._p.advance(self._task)

    def log(self, msg: str) -> None:
        if self._p is not None:
            self._p.console.log(msg)
        elif self.enabled:
            print(f"calibrate: {msg}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._p is not None:
            self._p.stop()
            self._p = None


def _jobs(plan: Plan, b: bench.Benchmarks, store: Store, trace: tracefs.TraceInstance | None, cpu: int,
          other: int) -> list[tuple[str, Callable[[], None]]]:
    fb = str(b.forkbench)
    sb = str(b.schedbench)
    jobs: list[tuple[str, Callable[[], None]]] = []
    rng = random.Random(20240611)

    def fits(rss: int) -> bool:
        need = rss + rss // 256 + 512 * MiB
        avail = mem_available()
        if avail and need > avail:
            msg = (f"refused {rss / GiB:.2f} GiB: MemAvailable is {avail / GiB:.2f} GiB "
                   f"(needs the image, its page tables and a 512 MiB margin)")
            if msg not in store.refused:
                store.refused.append(msg)
            return False
        return True

    def fork_job(kind: str, rss: int = 0, anon_vmas: int = 0, file_vmas: int = 0, thp: bool = False,
                 pinned: bool = True, reps: int | None = None, traced: bool = False, rnd: int = 0,
                 mode: str = "fork", extra: list[str] | None = None,
                 aux: tracefs.TraceInstance | None = None) -> Callable[[], None]:
        def run() -> None:
            if rss and not fits(rss):
                return
            n = reps or _reps(rss, anon_vmas + file_vmas, plan.budget_us, 5, 400, thp)
            argv = [fb, mode, "-r", str(rss), "-A", str(anon_vmas), "-F", str(file_vmas), "-t", str(int(thp)),
                    "-n", str(n), "-w", "3" if rss >= 256 * MiB else "10", "-c", str(cpu if pinned else -1),
                    *(extra or [])]
            switches: list[tracefs.Event] = []
            try:
                shape, samples, events, pid = bench.run_bench(argv, trace if traced else None, aux=aux,
                                                              aux_out=switches)
            except MeasurementError as exc:
                if "refused" in str(exc):
                    store.refused.append(str(exc))
                    return
                raise
            segs = tracefs.fork_segments(events, pid) if events is not None else None
            key = {"rss": rss, "anon_vmas": anon_vmas, "file_vmas": file_vmas, "thp": thp, "pinned": pinned,
                   "traced": traced, "mode": mode, "round": rnd}
            store.add(kind, key, shape, samples, segs)
            if aux is not None and segs is not None:
                store.runs[-1]["placement"] = tracefs.placement_counts(segs, switches, os.cpu_count() or 1)
            if thp and shape.get("rss_bytes"):
                frac = shape["anon_huge_kb"] * 1024 / shape["rss_bytes"]
                if frac < 0.9:
                    store.notes.append(f"THP {rss // MiB} MiB: only {frac:.0%} of the region is in AnonHugePages")

        return run

    # 1. traced runs first (the instance exists from the start)
    if trace is not None:
        for rss in plan.traced_sizes:
            jobs.append((f"traced fork {_label({'rss': rss})}",
                         fork_job("fork", rss=rss, traced=True, reps=plan.traced_reps if rss < GiB else max(8, plan.traced_reps // 4))))
        for nv in plan.traced_vmas:
            jobs.append((f"traced fork +{nv} file VMAs", fork_job("fork", file_vmas=nv, traced=True, reps=plan.traced_reps // 2)))
            jobs.append((f"traced fork +{nv} anon VMAs", fork_job("fork", anon_vmas=nv, traced=True, reps=plan.traced_reps // 2)))
        if plan.thp_sizes:
            t = plan.thp_sizes[-1]
            jobs.append((f"traced fork {_label({'rss': t})} THP", fork_job("fork", rss=t, thp=True, traced=True,
                                                                          reps=plan.traced_reps)))
        for mode in ("vfork", "thread"):
            jobs.append((f"traced {mode}", fork_job(mode, traced=True, reps=plan.traced_reps * 2, mode=mode)))
        jobs.append(("traced posix_spawn", fork_job("spawn", traced=True, reps=plan.traced_reps * 2, mode="spawn",
                                                    extra=["-x", str(b.helper)])))
        aux = trace.aux
        jobs.append(("traced fork unpinned", fork_job("fork", traced=True, pinned=False, reps=plan.traced_reps * 4,
                                                      aux=aux)))
        jobs.append(("traced vfork unpinned", fork_job("vfork", mode="vfork", traced=True, pinned=False,
                                                       reps=plan.traced_reps * 4, aux=aux)))
        jobs.append(("traced posix_spawn unpinned", fork_job("spawn", mode="spawn", traced=True, pinned=False,
                                                             reps=plan.traced_reps * 2, aux=aux,
                                                             extra=["-x", str(b.helper)])))

    # 2. fork vs RSS, pinned, sizes interleaved over rounds (held-out sizes in the same rounds)
    sizes = list(plan.sizes) + list(plan.held_out) + list(plan.optional_sizes)
    for rnd in range(plan.rounds):
        order = sizes[:]
        rng.shuffle(order)
        for rss in order:
            jobs.append((f"fork {_label({'rss': rss})} pinned (round {rnd + 1}/{plan.rounds})",
                         fork_job("fork", rss=rss, rnd=rnd)))
        if rnd % 4 == 0:
            for rss in plan.unpinned_sizes:
                jobs.append((f"fork {_label({'rss': rss})} unpinned", fork_job("fork", rss=rss, pinned=False, rnd=rnd)))
    # 3. VMA counts; THP on
    for rnd in range(max(1, plan.rounds // 4)):
        for nv in plan.vma_counts:
            jobs.append((f"fork +{nv} file VMAs", fork_job("fork", file_vmas=nv, rnd=rnd)))
            jobs.append((f"fork +{nv} anon VMAs", fork_job("fork", anon_vmas=nv, rnd=rnd)))
        for rss in plan.thp_sizes:
            jobs.append((f"fork {_label({'rss': rss})} THP", fork_job("fork", rss=rss, thp=True, rnd=rnd)))
    # 4. variants
    for mode in ("vfork", "spawn", "forkexec", "thread"):
        extra = ["-x", str(b.helper)] if mode in ("spawn", "forkexec") else None
        jobs.append((f"{mode} pinned", fork_job(mode, mode=mode, reps=plan.variant_reps, extra=extra)))
        jobs.append((f"{mode} unpinned", fork_job(mode, mode=mode, pinned=False, reps=plan.variant_reps // 2,
                                                   extra=extra)))
    jobs.append(("fork+execve 256MiB pinned", fork_job("forkexec", rss=256 * MiB if plan.name != "smoke" else 16 * MiB,
                                                       mode="forkexec", reps=max(5, plan.variant_reps // 10),
                                                       extra=["-x", str(b.helper)])))
    # 5. stack cache, COW, faults
    if trace is not None:
        jobs.insert(len([j for j in jobs if j[0].startswith("traced")]),
                    ("traced burst of 8 forks", fork_job("burst", mode="burst", traced=True, reps=plan.burst_reps,
                                                         extra=["-k", "8"])))
    jobs.append(("burst of 8 forks (stack cache)", fork_job("burst", mode="burst", reps=plan.burst_reps, extra=["-k", "8"])))
    jobs.append(("burst of 8 forks unpinned", fork_job("burst", mode="burst", pinned=False, reps=plan.burst_reps,
                                                       extra=["-k", "8"])))
    jobs.append(("COW faults", fork_job("cow", mode="cow", reps=plan.cow_reps, extra=["-p", str(plan.cow_pages)])))
    jobs.append(("anonymous page faults", fork_job("fault", mode="fault", reps=plan.cow_reps, extra=["-p", str(plan.cow_pages)])))
    # 5b. cold forks: after idle gaps, other work, a move to the other CPU (warmth.py)
    jobs.extend(cold_jobs(plan, fb, store, cpu, other))

    # 6. scheduler costs
    def sched_job(mode: str, a: int, bb: int, reps: int, spin: int = 200) -> Callable[[], None]:
        def run() -> None:
            argv = [sb, mode, "-a", str(a), "-b", str(bb), "-n", str(reps), "-s", str(spin)]
            shape, samples, _, _ = bench.run_bench(argv)
            store.add("sched", {"mode": mode, "a": a, "b": bb}, shape, samples)

        return run

    r = plan.sched_reps
    jobs.append(("idle wake-up (cross-CPU futex)", sched_job("wake", cpu, other, max(20, r // 2))))
    jobs.append(("local wake-up (same-CPU futex)", sched_job("wake", cpu, cpu, max(10, r // 10), spin=20)))
    jobs.append(("futex wake without waiter", sched_job("nowake", cpu, cpu, r)))
    jobs.append(("context switch (same-CPU pipe)", sched_job("pipe", cpu, cpu, r * 5)))
    jobs.append(("cross-CPU pipe ping-pong", sched_job("pipe", cpu, other, r)))
    jobs.append(("pipe syscalls without switch", sched_job("pipe1", cpu, cpu, r * 5)))
    return jobs


# ---------------------------------------------------------------------------------------------
# entry point


def _loadavg() -> float:
    try:
        return float((read_text("/proc/loadavg") or "0").split()[0])
    except ValueError:
        return 0.0


def _idlest_cpu(allowed: list[int], window_s: float = 0.3) -> int:
    """The allowed CPU with the most idle time over a short window (others share this machine)."""

    def idle() -> dict[int, int]:
        out = {}
        for line in (read_text("/proc/stat") or "").splitlines():
            if line.startswith("cpu") and line[3:4].isdigit():
                f = line.split()
                out[int(f[0][3:])] = int(f[4]) + int(f[5])
        return out

    a = idle()
    time.sleep(window_s)
    b = idle()
    scores = {c: b.get(c, 0) - a.get(c, 0) for c in allowed}
    return max(allowed, key=lambda c: (scores[c], c)) if scores else allowed[-1]


def calibrate(out: str | Path | None, quick: bool = False, progress: bool = True, *, smoke: bool = False,
              use_tracefs: bool | None = None, raw_out: str | Path | None = None, cpu: int | None = None,
              name: str | None = None) -> dict[str, Any]:
    """Measure this machine and write a profile to `out` (atomically); return the profile dict.
    `out` None: the user's profile store (forksim.store), as <host>.json, named after the host; the
    path written is in the returned profile's provenance ("written_to" is not kept in the file).

    quick: the short plan (< 2 min); default: the full plan (< 10 min). smoke: a seconds-long subset
    (tests). use_tracefs: None = when root and tracefs allow; False = never. raw_out: also write
    every raw sample (JSON, gzip if it ends in .gz). cpu: the CPU for pinned runs (default: the last)."""
    t_start = time.monotonic()
    load_start = _loadavg()
    host = this_host()
    if out is None:
        out = store_dir() / f"{host.slug()}.json"
        name = name or host.slug()
        out.parent.mkdir(parents=True, exist_ok=True)
    out = Path(out)
    if out.parent and not out.parent.exists():
        raise MeasurementError(f"{out}: the directory {out.parent} does not exist")
    if sys.platform != "linux":
        raise MeasurementError("calibration measures a Linux kernel; this is not Linux")
    plan = PLANS["smoke" if smoke else "quick" if quick else "full"]
    facts = machine_facts()
    ncpu = os.cpu_count() or 1
    allowed = sorted(os.sched_getaffinity(0))
    cpu = _idlest_cpu(allowed) if cpu is None else cpu
    other = next((c for c in allowed if c != cpu), cpu)
    store = Store()
    ok, why = tracefs.tracefs_status()
    if use_tracefs is False:
        ok, why = False, "disabled by the caller"
    prog = _Progress(progress, 1)
    restore = tracefs.install_signal_cleanup()
    unreg_kids = tracefs.register_cleanup(bench.kill_children)
    trace = None
    try:
        b = bench.build()
        if ok:
            try:
                trace = tracefs.TraceInstance().open()
                # every pid's context switches (to know which CPUs were idle when a child was placed)
                trace.aux = tracefs.TraceInstance(events=("sched/sched_switch",), buffer_kb=16384,
                                                  name=f"forksim-{os.getpid()}-cpus", optional=False).open()
            except (OSError, subprocess.CalledProcessError) as exc:
                ok, why = False, f"tracefs instance: {exc}"
                if trace is not None:
                    trace.close()
                trace = None
        if not ok:
            prog.log(f"no tracepoints ({why}): calibrating from the microbenchmarks alone")
            store.notes.append(f"tracefs not used: {why}")
        jobs = _jobs(plan, b, store, trace, cpu, other)
        if prog._p is not None:
            prog._p.update(prog._task, total=len(jobs))
        traced_done = False
        for what, job in jobs:
            prog.step(what)
            if trace is not None and not what.startswith("traced") and not traced_done:
                traced_done = True
                lost = trace.lost
                trace.aux.close()
                trace.close()
                trace = None
                if lost:
                    store.notes.append(f"tracefs reported {lost} lost events (overrun)")
            n_refused = len(store.refused)
            job()
            for msg in store.refused[n_refused:]:
                prog.log(msg)
            prog.advance()
        if trace is not None:
            trace.aux.close()
            trace.close()
            trace = None
        # fds, clone flags and namespaces, live children (csrc/clonebench.c; copies.py)
        from .copies import COPIES_PLANS, build_clonebench, fit_copies, measure_copies, measured_p50

        prog.step("fd table, clone flags, namespaces, live children")
        raw_copies = measure_copies(build_clonebench(b.cc), cpu, COPIES_PLANS[plan.name], prog.log)
        prog.step("fitting")
        load_end = _loadavg()
        busy = max(load_start, load_end) > 0.5 * ncpu
        if busy:
            msg = (f"this machine was busy during the calibration (load average {load_start:.1f} at the start, "
                   f"{load_end:.1f} at the end, {ncpu} CPUs): fork() times are the parent's CPU time (samples that "
                   f"kept their CPU where there are enough), but long copies that other tasks preempted still come "
                   f"out slower (cold caches); calibrate on a quiet machine for a reference profile")
            store.notes.append(msg)
            prog.log(msg)
        prov_extra = {
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(shlex.quote(a) for a in sys.argv) or "python",
            "mode": plan.name,
            "compiler": b.cc,
            "helper_static": b.helper_static,
            "tracefs_reason": why,
            "profile_name": name or out.stem,
        }
        prov_extra["loadavg_start_end"] = [round(load_start, 2), round(load_end, 2)]
        profile = build_profile(store, plan, facts, ok, cpu, prov_extra)
        profile["host"] = host.model_dump(mode="json", exclude_none=True)
        profile["interruptions"] = measure_interruptions(b, cpu, seconds=0.5 if smoke else 2.0)
        profile.update(fit_copies(raw_copies, cpu, str(facts.get("cpu_model") or "")))
        profile["diagnostics"]["copies"] = {"measured": measured_p50(raw_copies), "skipped": raw_copies["skipped"]}
        profile["provenance"].pop("profile_name", None)
        profile["provenance"]["duration_s"] = round(time.monotonic() - t_start, 1)
        # validate before writing
        from ..profile import Profile

        Profile.model_validate(profile)
        text = json.dumps(profile, indent=1, sort_keys=False) + "\n"
        write_text(out, text)
        profile = json.loads(text)  # exactly what was written
        if raw_out:
            raw = {"provenance": profile["provenance"], "host": profile["host"], "plan": plan.__dict__, "runs": store.runs, "copies": raw_copies,
                   "refused": store.refused, "notes": store.notes}
            rp = Path(raw_out)
            data = json.dumps(raw).encode()
            if rp.suffix == ".gz":
                data = gzip.compress(data)
            rp.write_bytes(data)
        return profile
    finally:
        prog.close()
        if trace is not None:
            if getattr(trace, "aux", None) is not None:
                trace.aux.close()
            trace.close()
        bench.kill_children()
        unreg_kids()
        restore()


def refit(raw: str | Path, out: str | Path) -> dict[str, Any]:
    """Redo the fits from a raw-sample file written by calibrate(raw_out=...), without measuring;
    write the profile to `out` atomically and return it (provenance kept, `refit` noted)."""
    from ..profile import Profile

    rp = Path(raw)
    data = rp.read_bytes()
    if rp.suffix == ".gz":
        data = gzip.decompress(data)
    r = json.loads(data)
    plan = Plan(**{k: tuple(v) if isinstance(v, list) else v for k, v in r["plan"].items()})
    store = Store(runs=r["runs"], refused=list(r.get("refused", [])), notes=list(r.get("notes", [])))
    prov = dict(r["provenance"])
    facts_keys = ("kernel", "cpu_model", "cpus", "thp_mode", "page_size", "hz", "hz_source", "preempt", "vmap_stack",
                  "per_vma_lock", "cpuidle_driver", "mem_total_bytes", "forksim_version", "python")
    facts = {k: prov.get(k) for k in facts_keys}
    extra = {k: v for k, v in prov.items() if k not in facts_keys and k not in ("tracefs", "measured_cpu")}
    extra["refit"] = {"from": str(rp), "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    extra["profile_name"] = Path(out).stem
    profile = build_profile(store, plan, facts, bool(prov.get("tracefs")), int(prov.get("measured_cpu", 0)), extra)
    if r.get("copies"):
        from .copies import fit_copies

        profile.update(fit_copies(r["copies"], int(prov.get("measured_cpu", 0)), str(facts.get("cpu_model") or "")))
    profile["provenance"].pop("profile_name", None)
    if r.get("host"):
        profile["host"] = r["host"]
    Profile.model_validate(profile)
    text = json.dumps(profile, indent=1) + "\n"
    write_text(out, text)
    return json.loads(text)
