"""Profiles: the measured cost of every kernel stage, and how to sample it.

A profile is a JSON file (schema `forksim-profile`, version 1). Each stage cost is linear in the
parent's image,

    median_us = fixed_us + per_vma_us*vmas + per_anon_vma_us*anon_vmas + per_pte_us*ptes
                + per_pmd_us*pmds + per_thread_us*threads

times a residual factor with median 1 drawn from the stage's residual distribution (a lognormal
`sigma`, or empirical quantiles of measured/fitted ratios), so the model reproduces tails as well
as medians. `ptes` counts 4 KiB anonymous pages, `pmds` 2 MiB transparent huge pages. Every stage
and scheduler entry says where its number came from in `source` ("measured: ...",
"derived: ...", "assumption: ...").

Which stages exist and which kernel functions each stands for: `STAGES` below. The scheduler
section holds the machine's costs (tick, slice, idle wake-up, context switch, migration).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ProfileError

__all__ = [
    "STAGES",
    "SCHEDULER_KEYS",
    "Residual",
    "StageCost",
    "SchedulerCosts",
    "Fraction",
    "Interruptions",
    "Profile",
    "ImageShape",
    "load_profile",
    "profile_path",
    "shipped_profiles",
    "PROFILE_FORMAT",
    "PROFILE_VERSION",
]

PROFILE_FORMAT = "forksim-profile"
PROFILE_VERSION = 1
_SHIPPED = Path(__file__).parent / "profiles"

# Stage name -> the kernel functions it stands for. Order is kernel order along the creation path.
STAGES: dict[str, str] = {
    "copy_process_setup": "kernel_clone entry, dup_task_struct (without the stack), copy_creds, sched_fork, "
    "copy_files, copy_fs, copy_sighand, copy_signal: a new process (fork, vfork, posix_spawn)",
    "copy_process_setup_thread": "the same stages for CLONE_THREAD|CLONE_VM|CLONE_FILES|CLONE_FS|CLONE_SIGHAND "
    "(reference counts instead of copies)",
    "stack_cache_hit": "alloc_thread_stack_node: a per-CPU cached vmalloc'd stack, zeroed",
    "stack_vmalloc": "alloc_thread_stack_node: cache miss, __vmalloc_node_range of a new stack",
    "dup_mm": "copy_mm -> dup_mm: mm_alloc, mm_init, pgd_alloc (before dup_mmap takes mmap_lock)",
    "dup_mmap": "dup_mmap under the parent's mmap_lock (write): vm_area_dup, anon_vma_fork, maple tree, "
    "copy_page_range (per PTE / per PMD), flush_tlb_mm",
    "copy_process_tail": "copy_namespaces, copy_io, copy_thread, alloc_pid, cgroup_can_fork, the tasklist_lock "
    "section, post-fork hooks (sched_post_fork, cgroup_post_fork, perf/uprobe) up to task_newtask",
    "alloc_pid_hold": "alloc_pid: time pidmap_lock is held (idr_alloc_cyclic per namespace level)",
    "tasklist_fork_hold": "copy_process: time tasklist_lock is held for write while linking the child",
    "wake_up_new_task": "kernel_clone: trace_sched_process_fork, wake_up_new_task (select_task_rq, activate_task, "
    "wakeup_preempt) and the return to user space",
    "ret_from_fork": "ret_from_fork -> schedule_tail: the child's first return to user space",
    "fork_child_touch": "a fork child's first writes after the return (its stack, glibc's fork bookkeeping, TLS): "
    "the COW faults it takes before it can exit or exec",
    "exec": "execve of a small static binary: bprm, load_elf_binary, begin_new_exec (without dropping the old mm)",
    "exit_mmap": "exit_mmap / exec_mmap of the old mm: unmap_vmas, zap_pte_range (per PTE/PMD), free_pgtables",
    "do_exit": "do_exit without exit_mmap: exit_files, exit_fs, exit_sighand, exit_thread, exit_notify bookkeeping",
    "exit_notify_hold": "exit_notify: time tasklist_lock is held for write",
    "wait_reap": "do_wait -> wait_task_zombie -> release_task, and the wait syscall's own entry and exit",
    "release_task_hold": "release_task: time tasklist_lock is held for write (__exit_signal, __unhash_process)",
    "cow_fault_copy": "do_wp_page -> wp_page_copy: a write to a page the other side still maps (per page)",
    "cow_fault_reuse": "do_wp_page -> wp_page_reuse: a write to a page no longer shared (per page)",
    "page_fault": "handle_mm_fault under the per-VMA lock: an ordinary anonymous fault (per fault)",
    "ipi_send": "the waker's cost of sending a reschedule IPI to a halted vCPU (VM exit on the APIC write)",
}

SCHEDULER_KEYS = ("tick", "slice", "idle_wake", "context_switch", "migration", "wakeup_granularity")


class Residual(BaseModel):
    """Multiplicative noise around the fitted median: lognormal(0, sigma) or empirical quantiles."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    family: Literal["lognormal", "empirical", "none"] = "lognormal"
    sigma: float = Field(default=0.0, ge=0.0, le=5.0)
    quantiles: list[float] | None = Field(
        default=None, description="ratios measured/median at evenly spaced probabilities 0..1"
    )

    @model_validator(mode="after")
    def _check(self) -> "Residual":
        if self.family == "empirical":
            q = self.quantiles
            if not q or len(q) < 3:
                raise ValueError("an empirical residual needs at least 3 quantiles")
            if any(not math.isfinite(x) or x <= 0 for x in q):
                raise ValueError("empirical residual quantiles must be positive finite ratios")
            if any(b < a for a, b in zip(q, q[1:])):
                raise ValueError("empirical residual quantiles must be non-decreasing")
        return self

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.family == "none" or (self.family == "lognormal" and self.sigma == 0.0):
            return np.ones(n)
        if self.family == "lognormal":
            return rng.lognormal(0.0, self.sigma, n)
        q = np.asarray(self.quantiles, dtype=float)
        return np.interp(rng.random(n), np.linspace(0.0, 1.0, len(q)), q)


_TERMS = ("fixed_us", "per_vma_us", "per_anon_vma_us", "per_pte_us", "per_pmd_us", "per_thread_us")


class StageCost(BaseModel):
    """One stage's cost: a linear median in the image, and a residual around it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    fixed_us: float = Field(default=0.0, ge=0.0)
    per_vma_us: float = Field(default=0.0, ge=0.0)
    per_anon_vma_us: float = Field(default=0.0, ge=0.0)
    per_pte_us: float = Field(default=0.0, ge=0.0)
    per_pmd_us: float = Field(default=0.0, ge=0.0)
    per_thread_us: float = Field(default=0.0, ge=0.0)
    residual: Residual = Residual()
    source: str = Field(min_length=1, description="measured: ... | derived: ... | assumption: ...")

    @field_validator(*_TERMS)
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number of microseconds")
        return v

    def median_us(self, shape: "ImageShape") -> float:
        return (
            self.fixed_us
            + self.per_vma_us * shape.vmas
            + self.per_anon_vma_us * shape.anon_vmas
            + self.per_pte_us * shape.ptes
            + self.per_pmd_us * shape.pmds
            + self.per_thread_us * shape.threads
        )

    def scaled(self, term: str, factor: float) -> "StageCost":
        if term not in _TERMS:
            raise ValueError(f"unknown cost term {term!r} (one of {', '.join(_TERMS)})")
        return self.model_copy(update={term: getattr(self, term) * factor})


class SchedulerCosts(BaseModel):
    """The machine's scheduling costs, each a StageCost with only `fixed_us` used as its median."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tick: StageCost
    slice: StageCost
    idle_wake: StageCost
    context_switch: StageCost
    migration: StageCost
    wakeup_granularity: StageCost

    @model_validator(mode="after")
    def _check(self) -> "SchedulerCosts":
        for name in ("tick", "slice"):  # the scheduler divides by them
            if getattr(self, name).fixed_us <= 0.0:
                raise ValueError(f"scheduler.{name}.fixed_us must be positive (microseconds)")
        return self


class Fraction(BaseModel):
    """A probability or share measured on (or assumed for) this kernel, with where it came from."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    value: float = Field(ge=0.0, le=1.0)
    source: str = Field(min_length=1)


_UPSTREAM = "assumption: upstream select_task_rq_fair (SD_BALANCE_FORK) puts a new task on an idle CPU"


_EXIT_HEAD_DEFAULT = ("assumption: do_exit runs exit_signals .. exit_mm (where mm_release releases a vfork parent) "
                      "before its first preemption point, close_files' cond_resched: half of it, as measured on "
                      "a 2-vCPU Linux 6.18 VM (0.52 of a vfork child's exit, forksim calibrate)")


_EEVDF_SRC = ("assumption: Linux 6.6+ EEVDF with the default features (PLACE_LAG, PLACE_DEADLINE_INITIAL, "
              "RUN_TO_PARITY, DELAY_DEQUEUE; kernel/sched/features.h); debugfs sched/features is not readable here")
_MIGRATION_COST_SRC = ("assumption: sysctl_sched_migration_cost default 500 us (kernel/sched/fair.c); "
                       "debugfs sched/migration_cost_ns is not readable here")
_IDLE_PULL_SRC = "assumption: upstream (no vCPU packing): an idle CPU's balance pass pulls a waiting task"


class Balancing(BaseModel):
    """The fair scheduler's policy settings: EEVDF on or off, and load balancing (forksim.sched)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    eevdf: bool = True
    eevdf_source: str = _EEVDF_SRC
    migration_cost_us: float = Field(default=500.0, ge=0.0, le=1e6)
    migration_cost_source: str = _MIGRATION_COST_SRC
    # sched_vcpu_pack-style packing: P(an idle vCPU's balance pass pulls a waiting task); 1 upstream.
    idle_pull: Fraction = Field(default_factory=lambda: Fraction(value=1.0, source=_IDLE_PULL_SRC))


class Interruptions(BaseModel):
    """Interruptions of a running CPU (tick, device interrupts, the host preempting a vCPU): a
    Poisson stream at `rate_per_s`, each lasting a draw of `duration`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    rate_per_s: float = Field(ge=0.0, le=1e6)
    duration: StageCost
    source: str = Field(min_length=1)


class Profile(BaseModel):
    """A whole profile file."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    format: Literal["forksim-profile"]
    version: int
    name: str
    description: str = ""
    provenance: dict[str, Any]
    stages: dict[str, StageCost]
    scheduler: SchedulerCosts
    stack_cache_per_cpu: int = Field(default=2, ge=0, le=64)
    # Share of creations whose child the scheduler keeps on the parent's CPU although another CPU is
    # idle (a kernel that packs vCPUs does; upstream does not). By family: fork and threads, CLONE_VFORK.
    # Under load, with vCPU packing (measured by forksim.calibration.busy; absent: as upstream):
    # fork_local_when_idle_busy: the same share when the parent's CPU also has a task waiting (a hog);
    # absent: fork_local_when_idle. wake_prev_when_busy: share of sync wake-ups (a child's exit
    # waking its parent) that leave the wakee on its own busy CPU instead of the waker's; absent: 0.
    placement: dict[Literal["fork_local_when_idle", "vfork_local_when_idle", "fork_local_when_idle_busy",
                            "wake_prev_when_busy"], Fraction] = Field(
        default_factory=lambda: {
            "fork_local_when_idle": Fraction(value=0.0, source=_UPSTREAM),
            "vfork_local_when_idle": Fraction(value=0.0, source=_UPSTREAM),
        }
    )
    interruptions: Interruptions | None = None
    # Scheduler policy (EEVDF, load balancing, vCPU packing); absent: the defaults of Balancing.
    balancing: Balancing = Field(default_factory=Balancing)
    # Share of do_exit (the child's whole exit, less exit_mmap) before its first preemption point:
    # a task woken meanwhile (a vfork parent, at mm_release) waits for it under preempt=none.
    exit_head_share: Fraction = Field(default_factory=lambda: Fraction(value=0.5, source=_EXIT_HEAD_DEFAULT))
    diagnostics: dict[str, Any] = Field(default_factory=dict)

    @field_validator("version")
    @classmethod
    def _version(cls, v: int) -> int:
        if v != PROFILE_VERSION:
            raise ValueError(f"unknown profile version {v}; this forksim reads version {PROFILE_VERSION}")
        return v

    @field_validator("stages")
    @classmethod
    def _stages(cls, stages: dict[str, StageCost]) -> dict[str, StageCost]:
        missing = [s for s in STAGES if s not in stages]
        if missing:
            raise ValueError(f"missing stage(s): {', '.join(missing)}")
        unknown = [s for s in stages if s not in STAGES]
        if unknown:
            raise ValueError(f"unknown stage(s): {', '.join(unknown)} (known: {', '.join(STAGES)})")
        return stages

    def stage(self, name: str) -> StageCost:
        return self.stages[name]

    def with_whatif(self, modifiers: dict[str, float]) -> "Profile":
        """Scale cost terms, e.g. {'dup_mmap.per_pte_us': 0.05} (what-if experiments)."""
        if not modifiers:
            return self
        stages = dict(self.stages)
        for key, factor in modifiers.items():
            stage, _, term = key.partition(".")
            if stage not in stages or not term:
                raise ProfileError(
                    f"a what-if names 'stage.term' with a known stage (got {key!r})", field=f"whatif.{key}"
                )
            if not (isinstance(factor, (int, float)) and math.isfinite(factor) and factor >= 0):
                raise ProfileError("a what-if factor must be a non-negative number", field=f"whatif.{key}")
            try:
                stages[stage] = stages[stage].scaled(term, float(factor))
            except ValueError as exc:
                raise ProfileError(str(exc), field=f"whatif.{key}") from None
        return self.model_copy(update={"stages": stages})


@dataclass(frozen=True)
class ImageShape:
    """The parent's image as the cost model sees it."""

    vmas: int = 0
    anon_vmas: int = 0
    ptes: int = 0
    pmds: int = 0
    threads: int = 1

    @classmethod
    def from_rss(cls, rss: int, vmas: int, anon_vmas: int, thp: bool, threads: int = 1) -> "ImageShape":
        if thp:
            pmds, rest = divmod(rss, 2 * 1024**2)
            return cls(vmas, anon_vmas, -(-rest // 4096), pmds, threads)
        return cls(vmas, anon_vmas, -(-rss // 4096), 0, threads)


def shipped_profiles() -> dict[str, Path]:
    return {p.stem: p for p in sorted(_SHIPPED.glob("*.json"))}


def profile_path(name_or_path: str) -> Path:
    shipped = shipped_profiles()
    if name_or_path in shipped:
        return shipped[name_or_path]
    path = Path(name_or_path)
    if path.exists():
        return path
    raise ProfileError(
        f"no shipped profile of that name and no such file (shipped: {', '.join(shipped) or 'none'})",
        source=name_or_path,
    )


def load_profile(name_or_path: str) -> Profile:
    """Load a shipped profile by name, or a profile file by path, and validate it."""
    path = profile_path(name_or_path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ProfileError(f"not valid JSON: {exc}", source=str(path)) from None
    except RecursionError:
        raise ProfileError("not valid JSON: nested too deeply", source=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"cannot read profile: {exc.__class__.__name__}", source=str(path)) from None
    if not isinstance(data, dict) or data.get("format") != PROFILE_FORMAT:
        raise ProfileError(f"not a forksim profile (expected \"format\": \"{PROFILE_FORMAT}\")", source=str(path))
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        raise ProfileError(msg, source=str(path), field=field or None) from None
