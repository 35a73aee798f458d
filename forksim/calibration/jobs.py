"""The runs a calibration makes, in order: each a (what, job) pair whose job runs one benchmark and
adds its samples to the Store.

Order of work: the traced runs first (while the tracefs instance exists); then the untraced runs,
sizes interleaved over rounds: fork against touched anonymous RSS (pinned and unpinned), against VMA
counts (anonymous-with-pages and file-backed), THP on, in some of the sweep's rounds the same sizes with their
pages touched in a random order (layout.py; every sized pinned image's layout is read at forkbench's gate),
the other creation kinds (vfork, posix_spawn,
fork+execve, threads; pinned in the fork sweep's rounds), bursts of forks (stack cache), COW and page faults, forks after the child
exited on the other CPU (remote frees), cold forks (warmth.py) and the scheduler's costs (idle
wake-up, context switch, IPI).
"""

from __future__ import annotations

import os
import random
from typing import Any, Callable

from ..errors import MeasurementError
from ..kernel.flags import EXECS
from ..lab import llc_bytes, mem_available
from . import bench, tracefs
from .room_loops import measure_room
from .plan import (FORK_MODE, FORKEXEC_MODE, SPAWN_MODE, THREAD_MODE, VFORK_MODE, VARIANTS, WRITTEN, GiB, MiB, Plan, Store,
                   label as _label, measured_segments)
from .caches import lines_job
from .concurrency import ALONE, BESIDE, beside_forker
from .layout import RANDOM, SCATTERED, layout_reader
from .cold_families import family_jobs, family_traced_jobs
from .scheduling import MIN_EXIT_WAKES
from .warmth import cold_jobs

__all__ = ["Job", "calibration_jobs", "written_jobs"]

Job = tuple[str, Callable[[], None]]


def _reps(rss: int, vmas: int, budget_us: float, lo: int, hi: int, thp: bool = False) -> int:
    """Repetitions so that one run's fork round trips take about budget_us (rough cost model)."""
    est = 120.0 + vmas * 2.5 + (rss / (2 * MiB) * 1.2 if thp else rss / 4096 * 0.12)
    return int(max(lo, min(hi, budget_us / est)))


class _Jobs:
    """Builds the job list of one calibration (plan, benchmarks, pinned CPU and the other CPU)."""

    def __init__(self, plan: Plan, b: bench.Benchmarks, store: Store, trace: tracefs.TraceInstance | None,
                 cpu: int, other: int):
        self.plan, self.b, self.store, self.trace, self.cpu, self.other = plan, b, store, trace, cpu, other
        self.helper = ["-x", str(b.helper)]

    def fits(self, rss: int) -> bool:
        """Whether MemAvailable holds the image, its page tables and a margin (else: refused, noted)."""
        need = rss + rss // 256 + 512 * MiB
        avail = mem_available()
        if avail and need > avail:
            msg = (f"refused {rss / GiB:.2f} GiB: MemAvailable is {avail / GiB:.2f} GiB "
                   f"(needs the image, its page tables and a 512 MiB margin)")
            if msg not in self.store.refused:
                self.store.refused.append(msg)
            return False
        return True

    def fork(self, kind: str, rss: int = 0, anon_vmas: int = 0, file_vmas: int = 0, thp: bool = False,
             pinned: bool = True, reps: int | None = None, traced: bool = False, rnd: int = 0,
             mode: str = FORK_MODE, extra: list[str] | None = None,
             aux: tracefs.TraceInstance | None = None, layout: bool = False,
             warm: int | None = None) -> Callable[[], None]:
        """A forkbench run (mode: fork, vfork, spawn, forkexec, thread, burst, cow, fault); `layout`: its
        image's physical layout read at forkbench's gate (layout.py) into the run's "layout"."""
        plan, store, cpu = self.plan, self.store, self.cpu

        def run() -> None:
            if rss and not self.fits(rss):
                return
            n = reps or _reps(rss, anon_vmas + file_vmas, plan.budget_us, 5, 400, thp)
            argv = [str(self.b.forkbench), mode, "-r", str(rss), "-A", str(anon_vmas), "-F", str(file_vmas),
                    "-t", str(int(thp)), "-n", str(n),
                    "-w", str(warm if warm is not None else 3 if rss >= 256 * MiB else 10),
                    "-c", str(cpu if pinned else -1), *(extra or [])]
            switches: list[tracefs.Event] = []
            got: dict[str, Any] = {}
            try:
                shape, samples, events, pid = bench.run_bench(argv, self.trace if traced else None, aux=aux,
                                                              aux_out=switches,
                                                              on_ready=layout_reader(store, got) if layout else None)
            except MeasurementError as exc:
                if "refused" in str(exc):
                    store.refused.append(str(exc))
                    return
                raise
            segs = measured_segments(tracefs.fork_segments(events, pid), samples) if events is not None else None
            key = {"rss": rss, "anon_vmas": anon_vmas, "file_vmas": file_vmas, "thp": thp, "pinned": pinned,
                   "traced": traced, "mode": mode, "round": rnd}
            store.add(kind, key, shape, samples, segs)
            if got:
                store.runs[-1]["layout"] = got["layout"]
            if aux is not None and segs is not None:
                store.runs[-1]["placement"] = tracefs.placement_counts(segs, switches, os.cpu_count() or 1)
            if thp and shape.get("rss_bytes"):
                frac = shape["anon_huge_kb"] * 1024 / shape["rss_bytes"]
                if frac < 0.9:
                    store.notes.append(f"THP {rss // MiB} MiB: only {frac:.0%} of the region is in AnonHugePages")

        return run

    def sched(self, mode: str, a: int, bb: int, reps: int, spin: int = 200, warm: int = 10) -> Callable[[], None]:
        """A schedbench run (wake, nowake, pipe, pipe1, exitwake) between CPUs a and bb, after `warm` unrecorded."""
        def run() -> None:
            argv = [str(self.b.schedbench), mode, "-a", str(a), "-b", str(bb), "-n", str(reps), "-s", str(spin),
                    "-w", str(warm)]
            shape, samples, _, _ = bench.run_bench(argv)
            key = {"mode": mode, "a": a, "b": bb}
            if spin != 200:  # the reference idle time keeps the old key (raw files before 2026-12-01 evening)
                key["spin"] = spin
            self.store.add("sched", key, shape, samples)

        return run

    def traced(self) -> list[Job]:
        """1. the traced runs (the tracefs instance exists from the start)."""
        plan, reps, jobs = self.plan, self.plan.traced_reps, []
        for rss in plan.traced_sizes:
            jobs.append((f"traced fork {_label({'rss': rss})}",
                         self.fork(FORK_MODE, rss=rss, traced=True, reps=reps if rss < GiB else max(8, reps // 4),
                                   layout=rss >= 16 * MiB)))
        for nv in plan.traced_vmas:
            jobs.append((f"traced fork +{nv} file VMAs", self.fork(FORK_MODE, file_vmas=nv, traced=True, reps=reps // 2)))
            jobs.append((f"traced fork +{nv} anon VMAs", self.fork(FORK_MODE, anon_vmas=nv, traced=True, reps=reps // 2)))
        for mode in (VFORK_MODE, THREAD_MODE):
            jobs.append((f"traced {mode}", self.fork(mode, traced=True, reps=reps * 2, mode=mode)))
        spawn = SPAWN_MODE
        jobs.append(("traced posix_spawn", self.fork(spawn, traced=True, reps=reps * 2, mode=spawn, extra=self.helper)))
        aux = self.trace.aux
        jobs.append(("traced fork unpinned", self.fork(FORK_MODE, traced=True, pinned=False, reps=reps * 4, aux=aux)))
        jobs.append(("traced vfork unpinned", self.fork(VFORK_MODE, mode=VFORK_MODE, traced=True, pinned=False,
                                                        reps=reps * 4, aux=aux)))
        jobs.append(("traced posix_spawn unpinned", self.fork(spawn, mode=spawn, traced=True, pinned=False,
                                                              reps=reps * 2, aux=aux, extra=self.helper)))
        # a thread's placement is its own (the fork share does not carry: tools/place_trace.py, 2026-12-02)
        jobs.append(("traced thread unpinned", self.fork(THREAD_MODE, mode=THREAD_MODE, traced=True, pinned=False,
                                                         reps=reps * 4, aux=aux)))
        if plan.thp_sizes:  # last: the untraced THP runs follow it (thp())
            t = plan.thp_sizes[-1]
            jobs.append((f"traced fork {_label({'rss': t})} THP", self.fork(FORK_MODE, rss=t, thp=True, traced=True,
                                                                           reps=reps)))
        return jobs

    def thp(self) -> list[Job]:
        """3a. fork with THP on, each size in `rounds // 4` passes, as soon after the traced THP run as the traced
        runs allow: the frames a THP image freed are reported free to the host after ~2 s (free page reporting),
        which drops them, and the next image's huge pages are then backed anew: a first 1 GiB THP image took
        1.9-2.4 s of system time to touch and the next one, right after, 0.1 s (2026-12-04, AMD zen4 host)."""
        plan = self.plan
        return [(f"fork {_label({'rss': rss})} THP", self.fork(FORK_MODE, rss=rss, thp=True, rnd=rnd))
                for rnd in range(max(1, plan.rounds // 4)) for rss in sorted(plan.thp_sizes, reverse=True)]

    def untraced_forks(self) -> list[Job]:
        """2. fork vs RSS, pinned, sizes interleaved over rounds (held-out sizes in the same rounds);
        3. VMA counts (THP on: thp())."""
        plan, jobs, rng = self.plan, [], random.Random(20240611)
        sizes = list(plan.sizes) + list(plan.held_out) + list(plan.optional_sizes)
        gib_rounds = plan.gib_rounds or plan.rounds
        for rnd in range(plan.rounds):
            order = sizes[:]
            rng.shuffle(order)
            # the images' layout read in the rounds of the layout A/B (what the fits use)
            read = rnd in self.layout_rounds()
            this = [(f"fork {_label({'rss': rss})} pinned (round {rnd + 1}/{plan.rounds})",
                     self.fork(FORK_MODE, rss=rss, rnd=rnd, layout=read and rss >= 16 * MiB,
                               reps=_reps(rss, 0, plan.budget_us * plan.rounds / gib_rounds, 5, 400)
                               if rss >= GiB else None))
                    for rss in order if rss < GiB or rnd < gib_rounds]
            # the scattered images after the round's in-order ones, before them in every other layout round
            scattered = self.scattered(rnd)
            before = plan.layout_rounds and (rnd * plan.layout_rounds // plan.rounds) % 2 == 1
            jobs += scattered + this if before else this + scattered
            jobs += self.pinned_variants(rnd)
            if rnd % 4 == 0:
                for rss in plan.unpinned_sizes:
                    jobs.append((f"fork {_label({'rss': rss})} unpinned",
                                 self.fork(FORK_MODE, rss=rss, pinned=False, rnd=rnd)))
        for rnd in range(max(1, plan.rounds // 4)):
            for nv in plan.vma_counts:
                jobs.append((f"fork +{nv} file VMAs", self.fork(FORK_MODE, file_vmas=nv, rnd=rnd)))
                jobs.append((f"fork +{nv} anon VMAs", self.fork(FORK_MODE, anon_vmas=nv, rnd=rnd)))
        return jobs

    def scattered(self, rnd: int) -> list[Job]:
        """2a. in `layout_rounds` of the sweep's rounds, spread over them: each layout size again with its
        pages touched in a random order (forkbench -L random, scatter ~1), beside the round's in-order image
        of the same size: the A/B of the image's physical layout (layout.py)."""
        plan = self.plan
        if rnd not in self.layout_rounds():
            return []
        swept = set(plan.sizes) | set(plan.held_out) | set(plan.optional_sizes)
        jobs = []
        for rss in plan.layout_sizes:
            if rss in plan.layout_held_out and rnd != min(self.layout_rounds()):
                continue  # the held-out size's A/B: one round (a check, not a fit)
            reps = max(6, _reps(rss, 0, plan.budget_us, 5, 400) // 8)  # an eighth of the sweep's: p50s of one A/B
            if rss not in swept:  # the in-order side, where the sweep has no image of this size
                jobs.append((f"fork {_label({'rss': rss})} pinned (round {rnd + 1}/{plan.rounds})",
                             self.fork(FORK_MODE, rss=rss, rnd=rnd, layout=True, reps=reps, warm=1)))
            jobs.append((f"fork {_label({'rss': rss})} pinned, pages touched in a random order (round {rnd + 1}/"
                         f"{plan.rounds})", self.fork(SCATTERED, rss=rss, rnd=rnd, layout=True, extra=["-L", RANDOM],
                                                      reps=reps, warm=1)))
        return jobs

    def layout_rounds(self) -> set[int]:
        """The sweep's rounds that hold the layout A/B, spread over them (layout.py)."""
        plan = self.plan
        return {i * plan.rounds // plan.layout_rounds for i in range(plan.layout_rounds)} if plan.layout_rounds else set()

    def pinned_variants(self, rnd: int) -> list[Job]:
        """The other creation kinds at RSS 0, pinned, in every round of the fork sweep (a share of their
        repetitions each): the host drifts by tens of percent over a calibration (2026-12-02: the same
        pinned fork 57 us in one round, 82 in the next), and the families' fit (families.py) compares
        each family's loop with fork's, so they are measured in the same rounds."""
        plan, jobs = self.plan, []
        for kind, mode in VARIANTS.items():
            extra = self.helper if kind in EXECS else None
            jobs.append((f"{mode} pinned (round {rnd + 1}/{plan.rounds})",
                         self.fork(mode, mode=mode, reps=-(-plan.variant_reps // plan.rounds), extra=extra, rnd=rnd)))
        return jobs

    def variants(self) -> list[Job]:
        """4. the other creation kinds at RSS 0, unpinned (pinned: in the sweep's rounds); fork+execve of a
        256 MiB parent."""
        plan, jobs = self.plan, []
        for kind, mode in VARIANTS.items():
            extra = self.helper if kind in EXECS else None
            jobs.append((f"{mode} unpinned", self.fork(mode, mode=mode, pinned=False, reps=plan.variant_reps // 2,
                                                       extra=extra)))
        fe = FORKEXEC_MODE
        jobs.append(("fork+execve 256MiB pinned", self.fork(fe, rss=256 * MiB if plan.name != "smoke" else 16 * MiB,
                                                            mode=fe, reps=max(5, plan.variant_reps // 10),
                                                            extra=self.helper)))
        return jobs

    def memory(self) -> list[Job]:
        """5. stack cache (bursts of 8 forks), COW and page faults."""
        plan, burst = self.plan, ["-k", "8"]
        pages = ["-p", str(plan.cow_pages)]
        return [
            ("burst of 8 forks (stack cache)", self.fork("burst", mode="burst", reps=plan.burst_reps, extra=burst)),
            ("burst of 8 forks unpinned", self.fork("burst", mode="burst", pinned=False, reps=plan.burst_reps,
                                                    extra=burst)),
            ("COW faults", self.fork("cow", mode="cow", reps=plan.cow_reps, extra=pages)),
            ("anonymous page faults", self.fork("fault", mode="fault", reps=plan.cow_reps, extra=pages)),
        ]

    def written(self) -> list[Job]:
        """5'. fork of an image written since the last fork against one only read, alternating (written.py)."""
        plan = self.plan
        return [(f"fork {_label({'rss': rss})}, written or read between forks",
                 self.fork(WRITTEN, rss=rss, reps=2 * plan.written_forks, warm=2, extra=["-D"]))
                for rss in plan.written_sizes]

    def remote_free(self) -> list[Job]:
        """5a. fork() pinned, each child exiting on the other CPU (forkbench -R: it pins itself there first)
        against the same loop with the child's pin to the parent's own CPU: the next fork refills
        freelists the remote frees emptied (kernel/slab.py). The base image, and +REMOTE_VMAS file and
        anonymous VMAs (what the refill grows with); then the same A/B with pthread_create (a thread
        releases its task and pid where it exits); rounds alternate the order."""
        jobs: list[Job] = []
        reps = self.plan.variant_reps
        for rnd in range(max(1, self.plan.rounds // 2)):
            sides = [("free_local", self.cpu), ("free_remote", self.other)]
            for what, files, anon in (("", 0, 0), (f" +{REMOTE_VMAS} file VMAs", REMOTE_VMAS, 0),
                                      (f" +{REMOTE_VMAS} anon VMAs", 0, REMOTE_VMAS)):
                for kind, exit_cpu in (sides if rnd % 2 == 0 else sides[::-1]):
                    where = "the other CPU" if kind == "free_remote" else "its parent's CPU"
                    jobs.append((f"fork{what}, the child exits on {where} (round {rnd + 1})",
                                 self.fork(kind, file_vmas=files, anon_vmas=anon, rnd=rnd,
                                           reps=reps if not (files or anon) else reps // 2,
                                           extra=["-R", str(exit_cpu)])))
            for kind, exit_cpu in (sides if rnd % 2 == 0 else sides[::-1]):  # a thread releases itself there
                where = "the other CPU" if kind == "free_remote" else "its creator's CPU"
                jobs.append((f"pthread_create, the thread exits on {where} (round {rnd + 1})",
                             self.fork(THREAD_FREE[kind], mode="thread", rnd=rnd, reps=reps,
                                       extra=["-R", str(exit_cpu)])))
        return jobs

    def host_speed_part(self, part: int) -> list[Job]:
        """Part `part` of the host speed probe (host_speed.py: PARTS parts spread over the calibration, the last
        run by calibrate after the fits), on each CPU in turn."""
        from .host_speed import PARTS, measure_part  # (here: python -m forksim.calibration.host_speed runs it too)

        cpus = sorted({self.cpu, self.other})
        return [(f"host speed (part {part + 1} of {PARTS})",
                 lambda: measure_part(self.b, self.store, cpus, self.plan.host_speed_s, part))]

    def idle_wakes_part(self, part: int) -> list[Job]:
        """Part `part` of the IDLE_WAKE_PARTS runs of idle wake-ups after each of PARTED_IDLE_US, placed apart in
        the calibration (the fit pools a spin's runs)."""
        jobs = []
        for spin in PARTED_IDLE_US:
            reps = -(-_idle_reps(self.plan.sched_reps, spin) // IDLE_WAKE_PARTS)
            warm = LONG_IDLE_WARM if spin >= LONG_IDLE_US else 10
            jobs.append((f"idle wake-up after {spin} us idle (part {part + 1} of {IDLE_WAKE_PARTS})",
                         self.sched("wake", self.cpu, self.other, reps, spin=spin, warm=warm)))
        return jobs

    def concurrency(self) -> list[Job]:
        """5a'. fork() pinned at RSS 0, alone against beside another process's fork loop pinned to the other CPU:
        the shared creation state its writes find there (concurrency.py); rounds alternate the order."""
        jobs: list[Job] = []
        sides = [(ALONE, False), (BESIDE, True)]
        for rnd in range(self.plan.rounds):
            for kind, beside in (sides if rnd % 2 == 0 else sides[::-1]):
                run = self.fork(kind, rnd=rnd, reps=self.plan.variant_reps)
                if beside:
                    run = beside_forker(str(self.b.forkbench), self.other, run)
                what = "beside another process forking on the other CPU" if beside else "alone"
                jobs.append((f"fork {what} (round {rnd + 1})", run))
        return jobs

    def scheduler(self) -> list[Job]:
        """6. the scheduler's costs: wake-ups across and on one CPU, context switches, IPIs."""
        r, cpu, other = self.plan.sched_reps, self.cpu, self.other
        exit_wakes = max(MIN_EXIT_WAKES, r // 4)
        return [
            ("idle wake-up (cross-CPU futex)", self.sched("wake", cpu, other, max(20, r // 2))),
            # the same after shorter idle times (IDLE_SPINS_US): the host's halt polling; the longest's last part
            *((f"idle wake-up after {s} us idle", self.sched("wake", cpu, other, _idle_reps(r, s), spin=s))
              for s in IDLE_SPINS_US if s not in PARTED_IDLE_US),
            *self.idle_wakes_part(IDLE_WAKE_PARTS - 1),
            ("local wake-up (same-CPU futex)", self.sched("wake", cpu, cpu, max(10, r // 10), spin=20)),
            # where a child's exit on the other CPU puts its parent whose own CPU is busy (wake_prev_when_busy)
            *((("exit wake-up of a parent beside a hog", self.sched("exitwake", cpu, other, exit_wakes)),)
              if other != cpu else ()),
            ("futex wake without waiter", self.sched("nowake", cpu, cpu, r)),
            ("context switch (same-CPU pipe)", self.sched("pipe", cpu, cpu, r * 5)),
            ("cross-CPU pipe ping-pong", self.sched("pipe", cpu, other, r)),
            ("pipe syscalls without switch", self.sched("pipe1", cpu, cpu, r * 5)),
        ]


# the VMAs the remote-free runs add to the base image (file-backed, then anonymous)
REMOTE_VMAS = 100
# the store kinds of the remote-free A/B's thread runs
THREAD_FREE = {"free_local": "thread_free_local", "free_remote": "thread_free_remote"}

# how long the wakee's CPU has been idle before the cross-CPU wake-ups beside the 200 us reference. 10 ms: a
# closed loop's think time or a server's gap between forks leaves the other vCPU halted that long, and its wake-up
# is slower again than after 1 ms (Intel host, 2026-12-05 20:17, schedbench wake, 160 wakes each: median 15-27 us
# after 1 ms, 46-183 us after 10 ms, 68-176 us after 30-100 ms; two modes, ~10-50 us and ~150-220 us, the host's),
# which the curve, held flat past its last point, priced at the 1 ms point's (24 us in that host's 17:52 profile).
# 150 us: the host polls a halted vCPU up to ~200 us (KVM's halt_poll_ns default on x86; this VM 2026-12-06 04:45,
# 900 wake-ups each: p50 4.3-5.8 us after 50-170 us idle, none over 11 us; 11.4 us and 7% over 60 us after 200),
# and the model draws a wake-up between two measured idle times from one of the two (IdleWakeCurve.around): with
# 50 and 200 only, one after 100 us came from the 200 us distribution half the time, its slow mode included
IDLE_SPINS_US = (10, 50, 150, 1000, 10000)
LONG_IDLE_US = 10000  # from this idle time on, fewer wake-ups: each costs its idle time twice
# Which of the two modes a wake-up after 10 ms of idle lands in changes within seconds (Intel host, 2026-12-05
# 22:28-22:35, 36 runs of 16 round trips 10 s apart: medians 13-58 us in 30 of them, 131-163 us in 6, alone or two
# in a row; each run's wake-ups 10-730 us), so one half-second run set the curve's point in one mode (48.9 us,
# then 173 us, in two quick calibrations 46 minutes apart). The runs after LONG_IDLE_US come in parts spread over
# the calibration (after the traced runs, before the cold grid, with the scheduler's), pooled by the fit. So do the
# runs after 1 ms: its slow mode's share flips too (this VM 2026-12-06 06:30, 60 runs of 100 round trips 3.3 s
# apart: p50 15-48 us in 43 of them, 134-154 us in 17, in phases of 1-7 runs; slow share per run 0-86%, sd 0.27 over
# the runs against 0.16 for three runs of 34 round trips 23 s apart; two quick calibrations that morning put the
# 1 ms point at 12.9x and 2.1x the 200 us one).
IDLE_WAKE_PARTS = 3
PARTED_IDLE_US = (1000, LONG_IDLE_US)  # the idle times measured in IDLE_WAKE_PARTS parts
LONG_IDLE_WARM = 2  # unrecorded round trips before each part (10 before the other runs: 0.2 s each at 10 ms)


def _idle_reps(sched_reps: int, spin_us: int) -> int:
    """Round trips of the idle wake-up run after `spin_us` of idle (two wake-ups each): a quarter of the plan's
    scheduler repetitions, a sixteenth from LONG_IDLE_US on (the quick plan's 25 at 10 ms: 0.5 s)."""
    return max(20, sched_reps // 4) if spin_us < LONG_IDLE_US else max(10, sched_reps // 16)


def calibration_jobs(plan: Plan, b: bench.Benchmarks, store: Store, trace: tracefs.TraceInstance | None, cpu: int,
                     other: int) -> list[Job]:
    """Every run of one calibration, in order (the traced ones first, while `trace` is open)."""
    j = _Jobs(plan, b, store, trace, cpu, other)
    jobs = j.traced() if trace is not None else []
    if trace is not None:
        # where a cold creation that copies no image spends its extra: before the placement or after (cold_families)
        jobs += family_traced_jobs(plan, str(b.forkbench), j.helper, store, cpu, trace)
        # the traced burst goes last among the traced runs
        jobs.append(("traced burst of 8 forks", j.fork("burst", mode="burst", traced=True, reps=plan.burst_reps,
                                                       extra=["-k", "8"])))
    jobs += j.idle_wakes_part(0)  # (IDLE_WAKE_PARTS: the host's wake-up mode, apart in time)
    jobs += j.host_speed_part(0)  # (host_speed.PARTS: the host's slow episodes, apart in time; the last after the fits)
    jobs += j.thp()  # closes the trace: the room loops record with their own instance
    if trace is not None:
        # the placement room rule in the regime a running program's tight loop settles in (room_loops.py)
        secs = 1.0 if plan.name == "full" else 0.3
        jobs.append(("traced tight loops (placement room)", lambda: measure_room(store, secs, store.notes.append)))
    jobs += j.untraced_forks() + j.variants() + j.host_speed_part(1) + j.memory() + j.written()
    if other != cpu:
        jobs += j.remote_free() + j.concurrency()
    # 5b. the caches as the fork sweep's back-to-back walks see them: dup_mmap's miss term (caches.py)
    jobs.append(("cache curve (forkbench lines)", lines_job(str(b.forkbench), store, cpu, max(2 * llc_bytes(), 64 * MiB))))
    if plan.layout_sizes:  # the same walk in one random order: the scatter curve's shape (layout.py)
        jobs.append(("scatter curve (forkbench lines -L random)",
                     lines_job(str(b.forkbench), store, cpu, 32 * MiB, layout=RANDOM)))
    # 5c. cold forks: after idle gaps, other work, a move to the other CPU (warmth.py)
    jobs.extend(job for k in range(1, IDLE_WAKE_PARTS - 1) for job in j.idle_wakes_part(k))
    jobs.extend(cold_jobs(plan, str(b.forkbench), store, cpu, other))
    jobs.extend(family_jobs(plan, str(b.forkbench), j.helper, store, cpu))  # and the kinds that copy no image
    jobs += j.host_speed_part(2)
    return jobs + j.scheduler()


def written_jobs(plan: Plan, b: bench.Benchmarks, store: Store, cpu: int) -> list[Job]:
    """The runs of written.py alone (its `measure`)."""
    return _Jobs(plan, b, store, None, cpu, cpu).written()
