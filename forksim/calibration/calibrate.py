"""Measure this machine and write a forksim profile (`forksim calibrate`).

Order of work: build the C benchmarks (bench.py); if root and tracefs are available, open a private
tracefs instance (segments per fork, see tracefs.py); run the jobs in order (jobs.py: the traced
runs first, then the untraced ones, sizes interleaved over rounds); measure the fd table, clone flags
and live children (copies.py) and the interruptions; then the fits (derive.py) and the profile,
written atomically.

Pinned runs give the stage costs (intrinsic costs, no idle-CPU wake-up); cross-CPU runs give the
scheduler's idle_wake and ipi_send. Held-out sizes are measured but left out of every fit; their
measured fork() p50 (the parent's time inside fork(), pinned, untraced) is recorded with the
profile's own prediction in diagnostics['held_out'].
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shlex
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..errors import MeasurementError
from ..io import write_text
from . import bench, tracefs
from .busy import fit_balancing, measure as measure_busy
from .derive import build_profile
from .jobs import calibration_jobs
from .interruptions import measure_interruptions
from .rcu import fit_rcu, measure_rcu
from .room_loops import loop_shares, room_section
from .scheduling import fit_recent_idle
from ..host import this_host
from ..store import store_dir
from ..lab import machine_facts, read_text
from ..lab.memory import compact_memory
from .plan import PLANS, Plan, Store, measured_segments, read_raw, write_raw

__all__ = ["calibrate", "refit", "Reporter", "Plan", "PLANS", "machine_facts"]


class Reporter:
    """Where `calibrate` says how far it is: `total(n)` once the jobs are known, `step(what)` as each
    begins, `advance()` as each ends, `log(msg)` for what the user should read. This one writes plain
    lines to stderr (or nothing); the CLI passes one that draws a progress bar (commands/calibrate.py)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled

    def total(self, n: int) -> None:
        pass

    def step(self, what: str) -> None:
        self.log(what)

    def advance(self) -> None:
        pass

    def log(self, msg: str) -> None:
        if self.enabled:
            print(f"calibrate: {msg}", file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------------------------
# entry point


def _loadavg() -> float:
    try:
        return float((read_text("/proc/loadavg") or "0").split()[0])
    except ValueError:
        return 0.0


def _idlest_cpu(allowed: list[int], window_s: float = 0.1) -> int:
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


def _open_trace() -> tuple[tracefs.TraceInstance | None, str]:
    """The private tracefs instance of the traced runs, with an aux instance recording every pid's
    context switches (to know which CPUs were idle when a child was placed); (None, why) when it fails."""
    trace = None
    try:
        trace = tracefs.TraceInstance().open()
        trace.aux = tracefs.TraceInstance(events=("sched/sched_switch",), buffer_kb=16384,
                                          name=f"forksim-{os.getpid()}-cpus", optional=False).open()
        return trace, ""
    except (OSError, subprocess.CalledProcessError) as exc:
        if trace is not None:
            trace.close()
        return None, f"tracefs instance: {exc}"


def _close_trace(trace: tracefs.TraceInstance) -> None:
    if getattr(trace, "aux", None) is not None:
        trace.aux.close()
    trace.close()


@contextmanager
def _timed(took: dict[str, float], what: str) -> Iterator[None]:
    """Add the wall seconds the block takes to took[what] (diagnostics.seconds_by_step)."""
    t0 = time.monotonic()
    try:
        yield
    finally:
        took[what] = round(took.get(what, 0.0) + time.monotonic() - t0, 2)


def _run_jobs(jobs: list, trace: tracefs.TraceInstance | None, store: Store, prog: Reporter) -> dict[str, float]:
    """Run the jobs in order; the tracefs instance is closed after the last traced one (its lost
    events noted), and in any case before this returns. The wall seconds of each job."""
    prog.total(len(jobs))
    took: dict[str, float] = {}
    try:
        for what, job in jobs:
            prog.step(what)
            if trace is not None and not what.startswith("traced"):
                lost = trace.lost
                _close_trace(trace)
                trace = None
                if lost:
                    store.notes.append(f"tracefs reported {lost} lost events (overrun)")
            n_refused = len(store.refused)
            with _timed(took, what):
                job()
            for msg in store.refused[n_refused:]:
                prog.log(msg)
            prog.advance()
    finally:
        if trace is not None:
            _close_trace(trace)
    return took


def _note_busy(load_start: float, load_end: float, store: Store, prog: Reporter) -> None:
    """A note (in the profile and on the console) when the load average says others shared the machine."""
    ncpu = os.cpu_count() or 1
    if max(load_start, load_end) > 0.5 * ncpu:
        msg = (f"this machine was busy during the calibration (load average {load_start:.1f} at the start, "
               f"{load_end:.1f} at the end, {ncpu} CPUs): fork() times are the parent's CPU time (samples that "
               f"kept their CPU where there are enough), but long copies that other tasks preempted still come "
               f"out slower (cold caches); calibrate on a quiet machine for a reference profile")
        store.notes.append(msg)
        prog.log(msg)


def _output(out: str | Path | None, name: str | None, slug: str) -> tuple[Path, str | None]:
    """Where the profile goes and its name: `out`, else <profile store>/<host slug>.json named after
    the host; refused when the folder does not exist."""
    if out is None:
        out = store_dir() / f"{slug}.json"
        name = name or slug
        out.parent.mkdir(parents=True, exist_ok=True)
    out = Path(out)
    if out.parent and not out.parent.exists():
        raise MeasurementError(f"{out}: the directory {out.parent} does not exist")
    return out, name


def _write_profile(out: Path, profile: dict[str, Any]) -> dict[str, Any]:
    """Validate the profile, write it atomically, and return exactly what was written."""
    from ..profile import Profile

    Profile.model_validate(profile)
    text = json.dumps(profile, indent=1, sort_keys=False) + "\n"
    write_text(out, text)
    return json.loads(text)


def _compact(compact: bool, prog: Reporter) -> dict[str, Any]:
    """Compact the free memory before the first measured image (forksim.lab.memory), unless asked not to;
    what was done, for the provenance."""
    if not compact:
        return {"compacted": False, "reason": "--no-compact: the free lists are as this host's past runs left them"}
    done = compact_memory()
    if not done["compacted"]:
        prog.log(f"memory not compacted: {done['reason']}")
        return done
    shares = [done[f"large_free_share_{when}"] for when in ("before", "after")]
    said = " -> ".join("?" if s is None else f"{100 * s:.1f}%" for s in shares)
    prog.log(f"memory compacted in {done['seconds']:.2f} s (free pages in blocks of 2 MiB or more: {said})")
    return done


def _provenance(plan: Plan, b: bench.Benchmarks, why: str, name: str, loadavg: tuple[float, float],
                compaction: dict[str, Any]) -> dict[str, Any]:
    """How this calibration ran: when, the command, the plan, the compiler, tracefs, the load, the free lists."""
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in sys.argv) or "python",
        "mode": plan.name,
        "compiler": b.cc,
        "helper_static": b.helper_static,
        "tracefs_reason": why,
        "profile_name": name,
        "loadavg_start_end": [round(loadavg[0], 2), round(loadavg[1], 2)],
        "memory_compaction": compaction,
    }


def calibrate(out: str | Path | None, quick: bool = False, progress: "bool | Reporter" = True, *, smoke: bool = False,
              use_tracefs: bool | None = None, raw_out: str | Path | None = None, cpu: int | None = None,
              name: str | None = None, compact: bool = True) -> dict[str, Any]:
    """Measure this machine and write a profile to `out` (atomically); return the profile dict.
    `out` None: the user's profile store (forksim.store), as <host>.json, named after the host; the
    path written is in the returned profile's provenance ("written_to" is not kept in the file).

    quick: the short plan (about a minute on a 2-vCPU VM); default: the full plan (< 10 min). smoke: a seconds-long subset
    (tests). use_tracefs: None = when root and tracefs allow; False = never. raw_out: also write
    every raw sample (JSON, gzip if it ends in .gz). cpu: the CPU for pinned runs (default: the last). compact:
    compact the free memory first (forksim.lab.memory: the state the shipped profiles were measured in)."""
    t_start = time.monotonic()
    load_start = _loadavg()
    host = this_host()
    out, name = _output(out, name, host.slug())
    if sys.platform != "linux":
        raise MeasurementError("calibration measures a Linux kernel; this is not Linux")
    plan = PLANS["smoke" if smoke else "quick" if quick else "full"]
    facts = machine_facts()
    allowed = sorted(os.sched_getaffinity(0))
    cpu = _idlest_cpu(allowed) if cpu is None else cpu
    other = next((c for c in allowed if c != cpu), cpu)
    store = Store()
    ok, why = tracefs.tracefs_status()
    if use_tracefs is False:
        ok, why = False, "disabled by the caller"
    prog = Reporter(progress) if isinstance(progress, bool) else progress
    restore = tracefs.install_signal_cleanup()
    unreg_kids = tracefs.register_cleanup(bench.kill_children)
    trace = None
    try:
        b = _build_all()
        if ok:
            trace, err = _open_trace()
            if trace is None:
                ok, why = False, err
        if not ok:
            prog.log(f"no tracepoints ({why}): calibrating from the microbenchmarks alone")
            store.notes.append(f"tracefs not used: {why}")
        compaction = _compact(compact, prog)
        took = _run_jobs(calibration_jobs(plan, b, store, trace, cpu, other), trace, store, prog)
        trace = None  # _run_jobs closed it
        # read before the copies step: its thousands of live children and dying namespaces are this
        # calibration's own, yet lift the load average (to 134 in the 2026-12-02 full run on an idle machine)
        load_end = _loadavg()
        raw_copies = _measure_copies(plan.name, b.cc, cpu, ok, took, prog)
        if ok:
            _measure_traced_loads(b, store, plan, cpu, other, smoke, took, prog)
        prog.step("fitting")
        _note_busy(load_start, load_end, store, prog)
        prov_extra = _provenance(plan, b, why, name or out.stem, (load_start, load_end), compaction)
        host_d = host.model_dump(mode="json", exclude_none=True)
        if raw_out:  # before the fits, so that one that fails leaves the minutes measured for `refit` (less the
            # interruptions, measured after the fits: the copies step's dying namespaces are torn down meanwhile)
            write_raw(raw_out, _raw_content({**facts, **prov_extra, "tracefs": ok, "measured_cpu": cpu}, host_d,
                                                   plan, store, raw_copies, None))
        profile = build_profile(store, plan, facts, ok, cpu, prov_extra)
        profile["host"] = host_d
        _probe_after_fits(b, store, plan, profile, sorted({cpu, other}), took)
        _add_sections(profile, store, raw_copies, cpu, facts)
        profile["diagnostics"]["seconds_by_step"] = took
        from .copies import measured_p50

        profile["diagnostics"]["copies"] = {"measured": measured_p50(raw_copies), "skipped": raw_copies["skipped"]}
        profile["provenance"].pop("profile_name", None)
        profile["provenance"]["duration_s"] = round(time.monotonic() - t_start, 1)
        profile = _write_profile(out, profile)
        if raw_out:  # again, with the profile's whole provenance
            write_raw(raw_out, _raw_content(profile["provenance"], host_d, plan, store, raw_copies,
                                                   profile["interruptions"]))
        return profile
    finally:
        prog.close()
        if trace is not None:
            _close_trace(trace)
        bench.kill_children()
        unreg_kids()
        restore()


def _probe_after_fits(b: bench.Benchmarks, store: Store, plan: Plan, profile: dict[str, Any], cpus: list[int],
                      took: dict[str, float]) -> None:
    """The probes run once the copies step's dying namespaces are torn down: the interruptions (into `profile`) and
    the host speed probe's last part (into `store`; the parts before it ran among the jobs, jobs.py)."""
    from .host_speed import PARTS, measure_part  # (here: python -m forksim.calibration.host_speed runs it too)

    with _timed(took, "interruptions"):
        profile["interruptions"] = measure_interruptions(b, cpus, seconds=plan.interruption_s)
    with _timed(took, "host speed (last part)"):
        measure_part(b, store, cpus, plan.host_speed_s, PARTS - 1)


def _build_all() -> bench.Benchmarks:
    """Compile every C program a calibration runs (each cached by content hash): the benchmarks, and beside them
    clonebench and the validation's load generator (the room loops and the busy step run it), so that a fresh
    machine's compilers run side by side rather than one by one in the middle of the measurements. A program
    that does not compile is left to the step that runs it (the build is tried again there, and that step says
    what it could not measure)."""
    from concurrent.futures import ThreadPoolExecutor

    from ..validation.loadgen import LoadgenError, build_tools
    from .copies import build_clonebench

    with ThreadPoolExecutor(2) as pool:
        others = [pool.submit(build_tools)]
        b = bench.build()
        others.append(pool.submit(build_clonebench, b.cc))
        for job in others:
            try:
                job.result()
            except (LoadgenError, MeasurementError):
                pass
    return b


def _measure_traced_loads(b: bench.Benchmarks, store: Store, plan: Plan, cpu: int, other: int, smoke: bool,
                          took: dict[str, float], prog: Reporter) -> None:
    """The traced runs after the jobs and the copies: RCU callbacks of exited tasks (rcu.py; about 2 s) and
    where the kernel places hogs, parents and children on a busy machine (busy.py; the plan's loads)."""
    with _timed(took, "rcu callbacks"):
        measure_rcu(b, store, cpu, other, reps=300 if smoke else 600)
    if plan.busy_loads:
        prog.step(what := "busy machine: fork parents beside CPU hogs, traced")
        with _timed(took, what):
            measure_busy(store, plan.busy_loads, plan.busy_s, plan.busy_warmup_s, plan.busy_reps, prog.log)


def _raw_content(provenance: dict[str, Any], host: dict[str, Any], plan: Plan, store: Store,
                 copies: dict[str, Any], interruptions: dict[str, Any] | None) -> dict[str, Any]:
    """The raw file: every sample, with what `refit` needs to fit them again."""
    return {"provenance": provenance, "host": host, "plan": plan.__dict__, "runs": store.runs, "copies": copies,
            "refused": store.refused, "notes": store.notes,
            "interruptions": interruptions}  # measured and fitted in one step (hiccup.c): kept whole


def _add_sections(profile: dict[str, Any], store: Store, copies: dict[str, Any] | None, cpu: int,
                  facts: dict[str, Any]) -> None:
    """The sections fitted beside build_profile's, by calibrate and refit alike: RCU callbacks, recent-idle
    placement, placement room, balancing (where the busy runs were traced), the host's speed (where its probe ran)
    and the copies step's (where it ran)."""
    profile.update(_rcu_section(store, profile))
    from .host_speed import fit_store

    host_speed = fit_store(store)
    if host_speed is not None:
        profile["host_speed"] = host_speed
    balancing, busy_placement = fit_balancing(store, float(profile["scheduler"]["tick"]["fixed_us"]))
    if balancing is not None:
        profile["balancing"] = balancing
        _merge_busy_placement(profile["placement"], busy_placement)
    profile.update(_recent_idle_section(store, profile))
    profile.update(_room_section(store, profile))
    if copies:
        from .copies import fit_copies

        profile.update(fit_copies(copies, cpu, str(facts.get("cpu_model") or "")))


def _merge_busy_placement(placement: dict[str, Any], busy: dict[str, Any]) -> None:
    """The traced hog loads' placement shares into the profile's, but wake_prev_when_busy measured in the model's
    case (schedbench exitwake: the waker alone on its CPU) stays, the traced loads' share named in its source (their
    parents were woken from CPUs with other tasks runnable too)."""
    direct, traced = placement.get("wake_prev_when_busy"), busy.get("wake_prev_when_busy")
    placement.update(busy)
    if direct is not None:
        placement["wake_prev_when_busy"] = direct
        if traced is not None:
            direct["source"] += f"; in the traced hog loads {traced['value']}: {traced['source']}"


def _measure_copies(plan: str, cc: str, cpu: int, traced: bool, took: dict[str, float],
                    prog: "Reporter") -> dict[str, Any]:
    """fds, clone flags and namespaces, live children (csrc/clonebench.c; copies.py), and under tracefs
    rtnl and cleanup_net's batches (netns.py): the raw data fit_copies fits."""
    from .copies import COPIES_PLANS, build_clonebench, measure_copies

    prog.step(what := "fd table, clone flags, namespaces, live children")
    with _timed(took, what):
        raw = measure_copies(build_clonebench(cc), cpu, COPIES_PLANS[plan], prog.log)
    if traced and COPIES_PLANS[plan].netns_reps:
        from .netns import measure as measure_netns

        with _timed(took, "netns teardown"):
            raw["netns"] = _netns_or_none(measure_netns, build_clonebench(cc), cpu, COPIES_PLANS[plan].netns_reps,
                                          prog.log)
    return raw


def _netns_or_none(measure, exe: str, cpu: int, reps: int, log) -> dict[str, Any] | None:
    """The traced clone(CLONE_NEWNET) loop's summary, or None (said in the log) where it cannot run."""
    try:
        return measure(exe, cpu, reps, log)
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        log(f"netns teardown not measured ({exc}): the profile keeps cleanup_net as deferred CPU")
        return None


def _rcu_section(store: Store, profile: dict[str, Any]) -> dict[str, Any]:
    """{"rcu_callbacks": ...} when the store holds the traced RCU loops (rcu.py), else {}."""
    sec = fit_rcu(store, float(profile["scheduler"]["tick"]["fixed_us"]))
    return {"rcu_callbacks": sec} if sec else {}


def _recent_idle_section(store: Store, profile: dict[str, Any]) -> dict[str, Any]:
    """{"placement_recent_idle": ...} when the traced unpinned vfork loop found the other CPU recently idle
    often enough (scheduling.fit_recent_idle), with placement.vfork_local_when_idle refitted on the creations
    that found it idle longer where enough did; else {} (the profile's documented fallback)."""
    sec, local = fit_recent_idle(store)
    if sec is None:
        return {}
    if local is not None:
        profile["placement"]["vfork_local_when_idle"] = local
    return {"placement_recent_idle": sec}


def _room_section(store: Store, profile: dict[str, Any]) -> dict[str, Any]:
    """{"placement_room": ...} from the traced tight loops (room_loops.py) where they show the rule, else {}; the
    families it leaves out get their placement share from the same loops (room_loops.loop_shares)."""
    slice_us = profile.get("scheduler", {}).get("slice", {}).get("fixed_us")
    # the child's protected slice: a new task's deadline half a slice ahead (PLACE_DEADLINE_INITIAL, RUN_TO_PARITY)
    sec = room_section(store, slice_us / 2.0 if slice_us else None)
    profile["placement"].update(loop_shares(store, sec))
    return {"placement_room": sec} if sec else {}


def refit(raw: str | Path, out: str | Path) -> dict[str, Any]:
    """Redo the fits from a raw-sample file written by calibrate(raw_out=...), without measuring;
    write the profile to `out` atomically and return it (provenance kept, `refit` noted)."""
    from ..profile import Profile

    rp = Path(raw)
    r = read_raw(rp)
    plan = Plan(**{k: tuple(v) if isinstance(v, list) else v for k, v in r["plan"].items()})
    store = Store(runs=r["runs"], refused=list(r.get("refused", [])), notes=list(r.get("notes", [])))
    for run in store.runs:  # raw files before 2026-12-03 kept forkbench's warm-up creations' segments
        if run["key"].get("mode") and run["segments"]:
            run["segments"] = measured_segments(run["segments"], run["samples"])
    prov = dict(r["provenance"])
    facts_keys = ("kernel", "cpu_model", "cpus", "thp_mode", "page_size", "hz", "hz_source", "preempt", "vmap_stack",
                  "per_vma_lock", "cpuidle_driver", "mem_total_bytes", "forksim_version", "python")
    facts = {k: prov.get(k) for k in facts_keys}
    extra = {k: v for k, v in prov.items() if k not in facts_keys and k not in ("tracefs", "measured_cpu")}
    extra["refit"] = {"from": str(rp), "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    extra["profile_name"] = Path(out).stem
    profile = build_profile(store, plan, facts, bool(prov.get("tracefs")), int(prov.get("measured_cpu", 0)), extra)
    _add_sections(profile, store, r.get("copies"), int(prov.get("measured_cpu", 0)), facts)
    profile["provenance"].pop("profile_name", None)
    if r.get("host"):
        profile["host"] = r["host"]
    if r.get("interruptions"):  # raw files since 2026-12-02 11:00 UTC; older ones: the section is left out
        profile["interruptions"] = r["interruptions"]
    Profile.model_validate(profile)
    text = json.dumps(profile, indent=1) + "\n"
    write_text(out, text)
    return json.loads(text)
