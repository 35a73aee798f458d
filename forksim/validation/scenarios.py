"""The validation scenarios, as data: what to run for real, and the same thing as a forksim config.

Each `Scenario` names one real load (run by `measure.measure`) and knows how to write the equivalent
forksim experiment config (`Scenario.to_config`), filled in with what the real run measured: the
parent's VMA count, how many of them carry anonymous pages, its anonymous RSS, and for open loads
the offered rate (a fraction of the closed-loop capacity measured in the same validation run).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Literal

from ..kernel.flags import COPIES_MM, DEFAULT_KIND, EXECS, FORK, KINDS
from ..lab import llc_bytes

__all__ = [
    "Scenario",
    "SCENARIOS",
    "MiB",
    "GiB",
    "scenarios",
    "get_scenario",
    "capacity_key",
    "LOADGEN_KINDS",
]

MiB = 1024**2
GiB = 1024**3

Mode = Literal["closed", "open", "mt"]
# The creation kinds the load generator runs (its --kind): every kind of kernel/flags.KINDS.
LOADGEN_KINDS = tuple(KINDS)
Kind = str  # one of LOADGEN_KINDS


def _size_name(rss: int) -> str:
    if rss == 0:
        return "0"
    if rss % GiB == 0:
        return f"{rss // GiB}GiB"
    return f"{rss // MiB}MiB"


def _time_name(s: float) -> str:
    return f"{s * 1e3:g}ms" if s >= 1e-3 else f"{s * 1e6:g}us"


@dataclass(frozen=True)
class Scenario:
    """One real load and its simulated twin.

    mode: "closed" (K parents loop create -> exit -> wait), "open" (Poisson arrivals at
    `rate_fraction` x the K=2 closed-loop capacity at the same RSS, served by K parents) or "mt"
    (one parent with `writers` extra threads writing one byte per page across its RSS; their stalls
    during forks are measured).
    """

    name: str
    mode: Mode = "closed"
    kind: Kind = DEFAULT_KIND
    parents: int = 1
    rss: int = 0
    hogs: int = 0
    hog_duty: float = 1.0          # share of each 10 ms a hog spins (1: always runnable)
    repeats: int = 1               # real runs (placement differs run to run: the spread is reported)
    rate_fraction: float | None = None
    writers: int = 0
    quick: bool = False            # part of the quick subset
    duration_s: float = 5.0        # full mode, after warm-up
    quick_duration_s: float = 1.0
    warmup_s: float = 0.5
    quick_warmup_s: float = 0.2
    pin: bool = False              # pin parent i to CPU i % cpus (children inherit it)
    think_s: float = 0.0           # closed: the parent sleeps this long after each reap (a cold fork)
    other_work_llc: float = 0.0    # closed: then a co-runner on its CPU sweeps this many last-level caches
    child_life_s: float = 0.0      # fork: the child spins this long before it exits (the image cools meanwhile)
    interleave: str = ""           # full set: scenarios with this key are measured together, in rounds
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    fds: int = 3                   # open fds in each parent (loadgen --fds)
    clone_flags: tuple[str, ...] = ()  # fork kind: clone(flags|SIGCHLD) (loadgen --clone-flags)
    live_children: int = 0         # idle children each parent keeps (loadgen --live-children)
    wait: str = "pid"              # how each parent reaps: "pid" or "any" (loadgen --wait-any: waitpid(-1))
    unshare: tuple[str, ...] = ()  # fork kind: the child calls unshare(flags) before it exits (loadgen --unshare)
    write_fraction: float = 0.0    # closed: after each reap the parent writes this share of its pages
    parent_work_s: float = 0.0     # closed: then the parent spins this long, its own CPU work (workload.parent_work)

    def duration(self, quick: bool) -> float:
        return self.quick_duration_s if quick else self.duration_s

    def warmup(self, quick: bool) -> float:
        return self.quick_warmup_s if quick else self.warmup_s

    @property
    def other_work_bytes(self) -> int:
        """What the co-runner sweeps before each fork on this machine (bytes, 4 KiB pages)."""
        return int(self.other_work_llc * llc_bytes()) // 4096 * 4096 if self.other_work_llc > 0 else 0

    @property
    def threads(self) -> int:
        return 1 + self.writers if self.mode == "mt" else 1

    def loadgen_args(self, quick: bool, rate: float | None = None, *, duration: float | None = None) -> list[str]:
        """The load generator's flags for this scenario (without --out/--helper); `duration`: a run's
        measured seconds when not the scenario's own (a round of an interleaved group)."""
        args = [
            "--mode", self.mode,
            "--kind", self.kind,
            "--parents", str(self.parents),
            "--duration", f"{duration if duration is not None else self.duration(quick):g}",
            "--warmup", f"{self.warmup(quick):g}",
            "--hogs", str(self.hogs),
            "--rss", str(self.rss),
        ]
        if self.hogs and self.hog_duty < 1.0:
            args += ["--hog-duty", f"{self.hog_duty:g}", "--hog-period", "0.01"]
        if self.mode == "open":
            if rate is None or rate <= 0:
                raise ValueError(f"scenario {self.name}: an open load needs a rate")
            args += ["--rate", f"{rate:.3f}"]
        if self.mode == "mt":
            args += ["--writers", str(self.writers)]
        if self.pin:
            args.append("--pin")
        if self.fds != 3:
            args += ["--fds", str(self.fds)]
        if self.clone_flags:
            from ..kernel.flags import FLAG_BITS

            args += ["--clone-flags", f"{sum(FLAG_BITS[f] for f in self.clone_flags):x}"]
        if self.live_children:
            args += ["--live-children", str(self.live_children)]
        if self.wait == "any":
            args.append("--wait-any")
        if self.unshare:
            from ..kernel.flags import FLAG_BITS

            args += ["--unshare", f"{sum(FLAG_BITS[f] for f in self.unshare):x}"]
        if self.think_s > 0:
            args += ["--think", f"{self.think_s:g}"]
        if self.other_work_llc > 0:
            args += ["--other-work", str(self.other_work_bytes)]
        if self.child_life_s > 0:
            args += ["--child-life", f"{self.child_life_s:g}"]
        if self.write_fraction > 0:
            args += ["--write-fraction", f"{self.write_fraction:g}"]
        if self.parent_work_s > 0:
            args += ["--parent-work", f"{self.parent_work_s:g}"]
        return args

    def to_config(self, measured: dict[str, Any], *, cpus: int, quick: bool = False,
                  profile: str = "default", replications: int | None = None, seed: int = 42) -> dict[str, Any]:
        """The forksim experiment config (a dict of forksim/config.py keys) equivalent to the real run."""
        vmas = int(measured.get("vmas") or 1)
        anon_vmas = measured.get("anon_vmas")
        anon_vmas = None if anon_vmas is None else max(0, min(int(anon_vmas), vmas))
        rss = int(measured.get("rss_bytes", self.rss))
        image: dict[str, Any] = {"rss": rss, "vmas": vmas, "thp": False, "threads": self.threads, "fds": self.fds,
                                 "write_fraction": self.write_fraction}
        if anon_vmas is not None:
            image["anon_vmas"] = anon_vmas
        # what a user reads from /proc/PID/pagemap (tools/image_shape.py): the parents' layout as the run began
        layout = measured.get("image_layout") or {}
        if layout.get("scatter") is not None:
            image["scatter"] = float(layout["scatter"])
        if layout.get("spread"):  # every parent's of every run: the median, as the scatter's
            image["spread"] = min(64.0, max(1.0, float(statistics.median(layout["spread"]))))
        workload: dict[str, Any] = {
            "kind": "open" if self.mode == "open" else "closed",
            "parents": self.parents,
            "think_time": self.think_s * 1e6,
            "parent_work": self.parent_work_s * 1e6,
            "image": image,
            "child": {"clone": self.kind, "lifetime": self.child_life_s * 1e6, "flags": list(self.clone_flags),
                      "unshare": list(self.unshare)},
            "live_children": self.live_children,
            "wait": self.wait,
            "pin": self.pin,  # loadgen --pin: parent i and its children on CPU i % cpus
        }
        if self.other_work_llc > 0:
            # what a user states: the bytes the other work touches, and the gap it leaves between a
            # reap and the next fork (the co-runner's sweep and any sleep: the measured median)
            workload["other_work"] = int(measured.get("other_work_bytes", self.other_work_bytes))
            gap = (measured.get("gap_us") or {}).get("p50")
            if not gap:
                raise ValueError(f"scenario {self.name}: the measured result has no gap between forks")
            workload["think_time"] = float(gap)
        if self.mode == "open":
            rate = measured.get("rate_per_s")
            if not rate:
                raise ValueError(f"scenario {self.name}: the measured result has no offered rate")
            workload["rate"] = float(rate)
            workload["arrivals"] = "poisson"
            workload["queue"] = "per_parent"  # loadgen: each parent its own Poisson stream at rate/K
            workload["arrival_wakeup"] = "timer"  # each parent sleeps in clock_nanosleep until its next arrival
        if self.mode == "mt":
            fault_rate = measured.get("writer_fault_rate_per_s")
            if fault_rate:
                image["fault_rate"] = float(fault_rate)
        reps = replications if replications is not None else (2 if quick else 3)
        if replications is None and self.repeats > 1:  # a spread to compare: more placement draws
            reps = 4 if quick else 8
        return {
            "experiment": {
                "name": f"validate-{self.name}",
                "duration": self.duration(quick) * 1e6,
                "warmup": self.warmup(quick) * 1e6,
                "replications": reps,
                "seed": seed,
            },
            "machine": {"cpus": int(cpus), "profile": profile},
            "workload": workload,
            "background": {"cpu_hogs": self.hogs, "hog_duty": self.hog_duty, "hog_period": 10_000.0},
        }


def capacity_key(kind: str, rss: int) -> tuple[str, int]:
    """Open loads at RSS r run at a fraction of the K=2 closed-loop throughput of `kind` at r."""
    return (kind, rss)


def _closed(kind: Kind, parents: int, rss: int, *, hogs: int = 0, quick: bool = False, **kw) -> Scenario:
    name = f"closed-{kind}-K{parents}-rss{_size_name(rss)}" + (f"-hogs{hogs}" if hogs else "")
    duty = kw.get("hog_duty", 1.0)
    if hogs and duty < 1.0:
        name += f"-duty{int(round(duty * 100))}"
    return Scenario(name=name, mode="closed", kind=kind, parents=parents, rss=rss, hogs=hogs, quick=quick, **kw)


def _paced(gap_s: float) -> dict[str, float]:
    """Run and warm-up lengths for a row whose forks come `gap_s` apart or more: enough of them for a p50."""
    return {"duration_s": max(5.0, 25 * gap_s), "quick_duration_s": max(1.0, 12 * gap_s),
            "warmup_s": max(0.5, 2 * gap_s), "quick_warmup_s": max(0.2, 1.5 * gap_s)}


def _think(rss: int, think_s: float, *, quick: bool = False, kind: Kind = FORK) -> Scenario:
    """One parent creating after an idle gap: fork -> reap -> sleep `think_s` -> fork (a server, a
    database snapshot, a shell at the pace of its user; a server spawning a helper, a pool starting a
    thread now and then); enough gaps for a p50 in the time given."""
    gap = f"{think_s * 1e3:g}ms"
    cooled = ("the parent's page tables and struct pages have cooled" if kind in COPIES_MM else
              "the creation path (the parent's structs, the slabs, the kernel's code) has cooled")
    return Scenario(name=f"closed-{kind}-K1-rss{_size_name(rss)}-think{gap}", mode="closed", kind=kind, parents=1,
                    rss=rss, think_s=think_s, quick=quick, **_paced(think_s),
                    interleave=f"cold-{_size_name(rss)}" if kind == FORK else f"cold-{kind}",
                    notes=f"a {kind} after {gap} asleep: {cooled}")


def _after_work(rss: int, llc: float, *, quick: bool = False) -> Scenario:
    """One pinned parent forking after another process swept `llc` last-level caches of its own memory
    on the same CPU (a database forking beside a busy neighbour): fork -> reap -> sweep -> fork."""
    return Scenario(name=f"closed-fork-K1-rss{_size_name(rss)}-work{llc:g}llc-pin", mode="closed", kind=FORK,
                    parents=1, rss=rss, other_work_llc=llc, pin=True, quick=quick, duration_s=4.0,
                    quick_duration_s=1.0, interleave=f"cold-{_size_name(rss)}",
                    notes=f"a fork after a co-runner on the parent's CPU swept {llc:g}x the last-level cache")


def _lived(rss: int, life_s: float) -> Scenario:
    """One pinned parent whose child lives (spins) `life_s` before it exits (a worker, a snapshot child): the
    child's exit finds the image cooled that long since the fork walked it, and the next fork follows that cold
    exit at once (what one walk of a cold image leaves cold: the profile's warmth.residual)."""
    life = f"{life_s * 1e3:g}ms"
    return Scenario(name=f"closed-fork-K1-rss{_size_name(rss)}-life{life}-pin", mode="closed", kind=FORK, parents=1,
                    rss=rss, child_life_s=life_s, pin=True, **_paced(life_s), interleave=f"cold-{_size_name(rss)}",
                    notes=f"a fork right after the exit of a child that lived {life}: the exit found the image cold")


def _writing(rss: int, fraction: float, *, pin: bool = True, quick: bool = False) -> Scenario:
    """One parent writing `fraction` of its image after each reap (a service that forks after doing work, an
    interpreter whose objects it touches): the next fork write-protects each of those PTEs again."""
    pct = f"{fraction * 100:g}pct"
    return Scenario(name=f"closed-fork-K1-rss{_size_name(rss)}-writes{pct}" + ("-pin" if pin else ""), mode="closed",
                    kind=FORK, parents=1, rss=rss, write_fraction=fraction, pin=pin, quick=quick, duration_s=4.0,
                    notes=f"a fork after the parent wrote {pct} of its pages since the last: their PTEs writable")


def _open(fraction: float, rss: int, *, quick: bool = False) -> Scenario:
    pct = int(round(fraction * 100))
    return Scenario(name=f"open-fork-{pct}pct-rss{_size_name(rss)}", mode="open", kind=FORK, parents=2, rss=rss,
                    rate_fraction=fraction, quick=quick)


def _build() -> tuple[Scenario, ...]:
    out: list[Scenario] = []
    for k in (1, 2, 4, 8):
        out.append(_closed(FORK, k, 0, quick=k in (1, 2)))
    for rss in (256 * MiB, 1 * GiB):
        for k in (1, 2):
            # Large images fork slowly (milliseconds): fewer samples per second, so run longer.
            out.append(_closed(FORK, k, rss, quick=rss == 256 * MiB, duration_s=6.0, quick_duration_s=1.5))
    for kind in (k for k in LOADGEN_KINDS if k not in COPIES_MM):  # the kinds that share the parent's mm
        for rss in (0, 256 * MiB):
            out.append(_closed(kind, 1, rss, quick=rss == 0))
    for kind in (k for k in LOADGEN_KINDS if k in COPIES_MM & EXECS):  # fork, then exec: the copy dropped at once
        for rss in (0, 256 * MiB):
            out.append(_closed(kind, 1, rss, quick=rss == 0))
    # A busy machine: CPU hogs beside the parents. Where the balancer puts hogs and parents differs
    # from run to run (a 3 s run of one parent beside hogs gave 300 or 4,300 forks/s), so each runs
    # 3 times (quick: twice) and the spread is compared with the model's replications.
    for rss in (0, 256 * MiB):
        for k in (1, 2):
            for hogs in (1, 2, 4):
                out.append(_closed(FORK, k, rss, hogs=hogs, quick=rss == 0 and k == 1 and hogs == 2,
                                   repeats=3, duration_s=3.0, quick_duration_s=1.0))
    for k in (1, 2):
        out.append(_closed(FORK, k, 0, hogs=2, hog_duty=0.5, repeats=3, duration_s=3.0))
    for rss in (0, 256 * MiB):
        for f in (0.3, 0.6, 0.9):
            out.append(_open(f, rss, quick=rss == 0 and f == 0.6))
    for rss in (64 * MiB, 256 * MiB):
        for think in (0.001, 0.01, 0.1, 1.0):
            out.append(_think(rss, think, quick=rss == 64 * MiB and think in (0.01, 0.1)))
    for kind in (k for k in LOADGEN_KINDS if k not in COPIES_MM):  # the kinds that copy no image, cold
        for think in (0.001, 0.01):
            out.append(_think(0, think, kind=kind))
    for llc in (0.5, 2.0):
        out.append(_after_work(64 * MiB, llc, quick=llc == 0.5))
    for rss in (64 * MiB, 256 * MiB):
        out.append(_lived(rss, 1.0))
    for rss, fraction, pin in ((64 * MiB, 1.0, True), (256 * MiB, 1.0, True), (256 * MiB, 0.25, False)):
        out.append(_writing(rss, fraction, pin=pin, quick=rss == 64 * MiB))
    # a parent that works between its creations (its CPU busy, not halted): unpinned, as a service runs
    for rss, work in ((0, 100e-6), (64 * MiB, 1e-3)):
        out.append(Scenario(name=f"closed-fork-K1-rss{_size_name(rss)}-busy{_time_name(work)}", mode="closed",
                            kind=FORK, parents=1, rss=rss, parent_work_s=work, quick=rss == 0,
                            notes=f"after each reap the parent spins {_time_name(work)} before its next fork"))
    out.append(Scenario(name="mt-fork-4threads-rss1GiB", mode="mt", kind=FORK, parents=1, rss=1 * GiB, writers=3,
                        quick=True, duration_s=6.0, quick_duration_s=1.5,
                        notes="1 forking thread + 3 threads writing one byte per page across the 1 GiB image"))
    # What copy_process copies beyond the mm: one pinned parent each (issue 19)
    for name, kw in (("fds10000", {"fds": 10000}), ("newnet", {"clone_flags": ("CLONE_NEWNET",)}),
                     ("live10000", {"live_children": 10000}),
                     ("live10000-waitany", {"live_children": 10000, "wait": "any"}),
                     ("unshare-newnet", {"unshare": ("CLONE_NEWNET",)})):
        out.append(Scenario(name=f"closed-fork-K1-rss0-{name}-pin", mode="closed", kind=FORK, parents=1, rss=0,
                            pin=True, notes="one pinned parent, RSS ~0: " + name, **kw))
    return tuple(out)


SCENARIOS: tuple[Scenario, ...] = _build()


def scenarios(quick: bool = False) -> list[Scenario]:
    """The scenarios of a run, in run order: every open load comes after the closed K=2 run at its
    RSS that sets its capacity (added to the list when the subset does not hold it)."""
    chosen = [s for s in SCENARIOS if s.quick or not quick]
    have = {capacity_key(s.kind, s.rss) for s in chosen if s.mode == "closed" and s.parents == 2 and not s.hogs}
    extra: list[Scenario] = []
    for s in chosen:
        if s.mode == "open" and capacity_key(s.kind, s.rss) not in have:
            base = next(c for c in SCENARIOS if c.mode == "closed" and c.parents == 2 and not c.hogs
                        and c.kind == s.kind and c.rss == s.rss)
            extra.append(base)
            have.add(capacity_key(s.kind, s.rss))
    chosen = extra + chosen
    # Closed loads first, then open ones (which need the capacities), keeping the order otherwise.
    return [s for s in chosen if s.mode != "open"] + [s for s in chosen if s.mode == "open"]


def get_scenario(name: str) -> Scenario:
    for s in SCENARIOS:
        if s.name == name:
            return s
    raise KeyError(f"no validation scenario named {name!r} (have: {', '.join(s.name for s in SCENARIOS)})")
