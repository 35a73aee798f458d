"""A profile's optional sections: scheduler policy (`balancing`), interruptions, what copy_process
copies beyond the address space (`clone_flags`, `files`, `live_children`), the cold walks of the
image (`warmth`) and what a fork pays after its CPU's last child was freed on another CPU
(`remote_free`). A profile without one loads: each fallback says so in its `source`.

Part of a profile (forksim.profile re-exports every name here).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .kernel.stages import COLD_STAGES
from .sched.idlest import NO_IDLE_KEYS
from .profile_terms import Fraction, Residual, StageCost, scatter_ramp

__all__ = ["Balancing", "EEVDF_SOURCE", "Interruptions", "HostSpeed", "RcuCallbacks", "FD_BASE", "FlagCost",
           "FilesCost", "ChildrenCost", "ColdTerms", "Warmth",
           "RemoteFree", "ConcurrentCreation", "MAX_PER_SCATTERED_PTE_US"]


EEVDF_SOURCE = ("assumption: Linux 6.6+ EEVDF with the default features (PLACE_LAG, PLACE_DEADLINE_INITIAL, "
              "RUN_TO_PARITY, DELAY_DEQUEUE; kernel/sched/features.h); debugfs sched/features is not readable here")
_MIGRATION_COST_SRC = ("assumption: sysctl_sched_migration_cost default 500 us (kernel/sched/fair.c); "
                       "debugfs sched/migration_cost_ns is not readable here")
_IDLE_PULL_SRC = "assumption: upstream (no vCPU packing): an idle CPU's balance pass pulls a waiting task"
_TICK_PASS_DELAY_SRC = ("assumption: the tick's balance pass sees its CPUs as they are once the tick's own switches "
                        "are done, before anything they wake has run (not measured on this profile's host)")


class Balancing(BaseModel):
    """The fair scheduler's policy settings: EEVDF on or off, and load balancing (forksim.sched)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    eevdf: bool = True
    eevdf_source: str = EEVDF_SOURCE
    migration_cost_us: float = Field(default=500.0, ge=0.0, le=1e6)
    migration_cost_source: str = _MIGRATION_COST_SRC
    # sched_vcpu_pack-style packing: P(an idle vCPU's balance pass pulls a waiting task); 1 upstream.
    idle_pull: Fraction = Field(default_factory=lambda: Fraction(value=1.0, source=_IDLE_PULL_SRC))
    # how long after the tick its balance pass (SCHED_SOFTIRQ's sched_balance_rq) detaches what it pulls: the kernel
    # threads the tick woke (rcu_preempt, a kworker) have run by then; measured by forksim.calibration.busy
    tick_pass_delay_us: float = Field(default=0.0, ge=0.0, le=1e4)
    tick_pass_delay_source: str = _TICK_PASS_DELAY_SRC
    # P(a new child stays on its parent's CPU when no CPU is idle), by the case of the kernel's
    # sched_balance_find_dst_group that decided and the parent's CPU's runnable tasks minus the other's
    # (forksim.sched.idlest.NO_IDLE_KEYS: "<case>/<difference>", e.g. "both_spare/one_more"); measured by
    # forksim.calibration.busy (fork_placement_no_idle). Absent: the kernel's rule decides.
    fork_local_no_idle: dict[Literal[NO_IDLE_KEYS], Fraction] | None = None

    @field_validator("fork_local_no_idle")
    @classmethod
    def _every_case(cls, v: dict | None) -> dict | None:
        if v is not None and len(v) != len(NO_IDLE_KEYS):
            raise ValueError(f"needs every one of {', '.join(NO_IDLE_KEYS)}")
        return v


class Interruptions(BaseModel):
    """Interruptions of a running CPU (tick, device interrupts, the host preempting a vCPU): a
    Poisson stream at `rate_per_s`, each lasting a draw of `duration`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    rate_per_s: float = Field(ge=0.0, le=1e6)
    duration: StageCost
    source: str = Field(min_length=1)


class HostSpeed(BaseModel):
    """The host's speed over time as a vCPU sees it: episodes in which all of a CPU's work runs `slow_factor`
    times as long as usual (another tenant on the physical core's SMT sibling, the host's frequency), between
    stretches at the usual speed; each CPU's episodes independent of the other's (measured: P(slow) on one vCPU
    the same whether the other was slow or not). The stretches' and episodes' lengths and the episodes' factors
    are empirical quantiles at `probabilities` (forksim.calibration.host_speed); the model draws them in turn
    per CPU and scales each chunk of a task's work by the factor at its start (forksim.cpu.CPU.speed_at)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    probabilities: list[float] = Field(min_length=2)
    slow_factor: list[float] = Field(min_length=2, description="an episode's factor on work (>= 1), its quantiles")
    slow_us: list[float] = Field(min_length=2, description="an episode's length (us), its quantiles")
    normal_us: list[float] = Field(min_length=2, description="a stretch at the usual speed (us), its quantiles")
    slow_share: float = Field(ge=0.0, le=1.0, description="the share of the measured time in episodes (reported)")
    source: str = Field(min_length=1)

    @field_validator("probabilities")
    @classmethod
    def _probabilities(cls, v: list[float]) -> list[float]:
        if v[0] != 0.0 or v[-1] != 1.0 or any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError("probabilities rise strictly from 0 to 1")
        return v

    @field_validator("slow_factor", "slow_us", "normal_us")
    @classmethod
    def _quantiles(cls, v: list[float], info) -> list[float]:
        if any(not math.isfinite(x) or x <= 0.0 for x in v) or any(b < a for a, b in zip(v, v[1:])):
            raise ValueError(f"{info.field_name}: quantiles are positive, finite and non-decreasing")
        if info.field_name == "slow_factor" and v[0] < 1.0:
            raise ValueError("slow_factor: an episode slows work (>= 1)")
        return v

    @model_validator(mode="after")
    def _one_per_probability(self) -> "HostSpeed":
        if not len(self.slow_factor) == len(self.slow_us) == len(self.normal_us) == len(self.probabilities):
            raise ValueError("one quantile per probability in slow_factor, slow_us and normal_us")
        return self


class RcuCallbacks(BaseModel):
    """RCU callbacks of exited tasks (forksim.rcu): microseconds queued per reaped process on the reaper's
    CPU (release_task) and per dying mm on the exiting task's CPU (exit_mmap), run in softirq a grace
    period later. Absent: they cost nothing (the profiles measured before 2026-12-02)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    reap_us: float = Field(ge=0.0, le=1e4)
    exit_mm_us: float = Field(ge=0.0, le=1e4)
    grace_us: float = Field(gt=0.0, le=1e6)
    # one __do_softirq budget: a batch runs that much at its tick, the rest at the running task's softirq points
    # or in ksoftirqd, whichever gets there first (forksim.rcu; absent: all at the tick)
    softirq_cap_us: float | None = Field(default=None, gt=0.0, le=1e6)
    # the grace-period kthread (rcu_preempt; forksim.rcu.GpKthread): its run at each wake-up, and its
    # force-quiescent-state wait in ticks (rcutree.jiffies_till_next_fqs); absent: not modelled
    gp_kthread_us: float | None = Field(default=None, gt=0.0, le=1e4)
    fqs_jiffies: int | None = Field(default=None, ge=1, le=1000)
    # a kworker's delayed_vfree_work per thread stack the per-CPU cache could not take (forksim.kernel.stack.StackVfree);
    # absent: such stacks cost nothing
    vfree_per_stack_us: float | None = Field(default=None, gt=0.0, le=1e4)
    source: str = Field(min_length=1)


class NetnsCleanup(BaseModel):
    """A network namespace's teardown and the rtnl_mutex it shares with the next one's setup (forksim.kernel.netns;
    measured by forksim.calibration.netns). cleanup_net tears down every namespace queued so far as one
    batch: a lead-in (pre_us asleep: synchronize_rcu), then under rtnl_lock the unregister chain
    (rtnl_fixed_us + rtnl_per_netns_us a namespace, CPU) and a grace period (rtnl_grace_us asleep,
    synchronize_net), then the other exit methods (cpu_fixed_us + cpu_per_netns_us, less the chain) and
    post_us asleep (rcu_barrier, the frees). A clone(CLONE_NEWNET) holds rtnl for rtnl_setup_us of its
    copy_net_ns (register_netdev of the loopback). Absent: cleanup_net is the clone flag's deferred_us of
    CPU on a worker, and no rtnl_mutex is modelled (profiles measured before 2026-12-02 05:00)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    rtnl_setup_us: float = Field(ge=0.0, le=1e5)
    rtnl_fixed_us: float = Field(ge=0.0, le=1e6)
    rtnl_per_netns_us: float = Field(ge=0.0, le=1e5)
    rtnl_grace_us: float = Field(ge=0.0, le=1e6)
    pre_us: float = Field(ge=0.0, le=1e6)
    cpu_fixed_us: float = Field(ge=0.0, le=1e6)
    cpu_per_netns_us: float = Field(ge=0.0, le=1e5)
    post_us: float = Field(ge=0.0, le=1e7)
    source: str = Field(min_length=1)


class DamonRmap(BaseModel):
    """A DAMON kdamond's rmap walks over a creator's anonymous folios (forksim.kernel.damon): each walk holds the
    anon_vma root rwsem for read while it visits every VMA mapping the folio (per_mapping_us each: a parent with
    N live children has N + 1), and walks_per_s of them reach the creator's folios. Absent: no monitor runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    per_mapping_us: float = Field(gt=0.0, le=1e3)
    walks_per_s: float = Field(gt=0.0, le=1e5)
    source: str = Field(min_length=1)


# ---- what copy_process copies beyond the address space (optional sections: absent -> cost 0)

# The calibration's parents hold stdin, stdout and stderr: copying (and closing) those three is
# inside the measured fixed costs (copy_process_setup, do_exit), so the per-fd terms count the fds
# beyond them and the default image (fds = 3) adds nothing.
FD_BASE = 3

_ABSENT_FILES = ("assumption: this profile has no `files` section (measured before the fd terms existed): "
                 "dup_fd and close_files cost nothing per fd beyond the 3 the calibration's parents held")
_ABSENT_CHILDREN = ("assumption: this profile has no `live_children` section: the parent's other live children "
                    "cost nothing")
_ABSENT_FLAG = "assumption: this profile has no measurement of {flag}: it changes no cost"
_ABSENT_UNSHARE = ("derived: this profile has no measurement of unshare({flag}): the clone flag's cost "
                   "(create_new_namespaces builds the namespace for both); clone's measurement: ")


class FlagCost(BaseModel):
    """What one clone flag beyond a kind's preset changes, measured against a plain clone() of the same
    parent (SIGCHLD only): signed medians (a sharing flag saves the copy_* it skips)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    call_us: float = Field(description="change of the creating call's median (us): copy_* / copy_namespaces")
    exit_us: float = Field(default=0.0, description="change of the child's exit and reap (us): exit_* / put_*_ns")
    deferred_us: float = Field(default=0.0, ge=0.0,
                               description="CPU a kernel worker spends later per creation (us): cleanup_net")
    sigma: float = Field(default=0.1, ge=0.0, le=2.0, description="lognormal residual of the added parts")
    source: str = Field(min_length=1)

    @field_validator("call_us", "exit_us", "deferred_us")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number of microseconds")
        return v


class FilesCost(BaseModel):
    """The fd table: dup_fd (copy_files) and close_files (the child's exit_files) per open fd beyond
    FD_BASE, each fd costing its share of the table's copy and its reference count."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    dup_fd_per_fd_us: float = Field(ge=0.0, le=10.0)
    close_files_per_fd_us: float = Field(ge=0.0, le=10.0)
    sigma: float = Field(default=0.1, ge=0.0, le=2.0)
    source: str = Field(min_length=1)


class ChildrenCost(BaseModel):
    """The parent's other live children (a prefork master): what grows with their number, per child,
    in the stage where the measurement puts it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    fork_per_child_us: float = Field(default=0.0, ge=0.0, le=10.0,
                                     description="copy_process, inside its tasklist_lock write section")
    exit_per_child_us: float = Field(default=0.0, ge=0.0, le=10.0,
                                     description="the child's exit_notify, under tasklist_lock for write")
    wait_per_child_us: float = Field(default=0.0, ge=0.0, le=10.0,
                                     description="do_wait walking the parent's children, tasklist_lock read side")
    fork_after_walk_per_child_us: float = Field(
        default=0.0, ge=0.0, le=10.0,
        description="the next fork after a waitpid(-1) walk, per child walked: the walk's footprint (every child's "
                    "task_struct) cools the fork's working set (absent in profiles measured before 2026-12-03)")
    sigma: float = Field(default=0.1, ge=0.0, le=2.0)
    source: str = Field(min_length=1)

# The most a page out of physical order may add to a cold walk: about ten misses to memory
MAX_PER_SCATTERED_PTE_US = 1.0


class FamilyCold(BaseModel):
    """How a creation that copies no image (vfork, posix_spawn, pthread_create) cools with the time since the
    parent's last creation: full_us * (1 - exp(-gap/tau_us)) on top of its back-to-back call (pinned on the
    2026-12-04 zen4 host, pthread_create: +3..+7 us after 1 ms, +40 after 10 ms, +46..+54 after 30 ms, +52..+77
    from 100 ms on)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    full_us: float = Field(ge=0.0, le=10000.0, description="the fully cold extra of the creating call (us)")
    tau_us: float = Field(gt=0.0, description="the time scale of its cooling (us)")
    rest_full_us: float = Field(
        default=0.0, ge=0.0, le=10000.0, description="the fully cold extra of the rest of the round trip, from the "
        "call's return to the wait's (the child's start, its exec where it execs, its exit, the reap: pinned on the "
        "2026-12-04 zen4 host, pthread_create +34..+37 us after 10 ms, +39..+75 from 30 ms on), on the call's time "
        "scale; 0: the rest is as warm as back to back")
    before_wakeup: float = Field(
        default=1.0, ge=0.0, le=1.0, description="the share of the call's extra that comes before wake_up_new_task "
        "places the child (the rest after it: the child's run to its exit or exec, the return); measured traced, "
        "sys_enter to task_newtask against the call, after 10 ms asleep (zen4 haltpoll host 2026-12-05: vfork "
        "0.45-0.53, pthread_create 0.60-0.67, posix_spawn 0.17-0.21); 1: all of it before (older profiles)")
    residual: Residual | None = Field(
        default=None, description="the spread of a call's cooled extra around the curve, as each call's extra over "
        "its run's median extra (pinned on the zen4 haltpoll host, 2026-12-05, 200 calls each after 10 ms asleep: "
        "vfork's extra p10 / p90 / p99 0.6 / 2.1 / 3.3 times its p50, pthread_create's 0.4 / 1.7 / 2.3); the rest "
        "of the round trip scales with the same draw; absent: every call cools by the curve alone")

    def coldness(self, gap_us: float, evicted: float = 0.0) -> float:
        """The share of the fully cold extras due after `gap_us`; `evicted`: the share other work on the CPU, or a
        move to another CPU, took besides."""
        return 1.0 - math.exp(-gap_us / self.tau_us) * (1.0 - evicted)

    def extra_us(self, gap_us: float, evicted: float = 0.0) -> float:
        """The call's extra after `gap_us` (see `coldness`)."""
        return self.full_us * self.coldness(gap_us, evicted)


class ColdTerms(BaseModel):
    """What a stage that walks the parent's image costs on top of its (warm, back-to-back) median
    when the walk finds the image fully cold: fixed_us + per_pte_us * min(ptes, pte_cap) (times the image's
    spread where per_spread: a cold walk misses per vmemmap page of struct pages, and an image whose frames sit
    among other processes' has its struct pages on more of them), and
    per_scattered_pte_us per page the walk reaches within `scatter_window` pages after a break in the frame
    order (ptes * scatter_ramp(scatter, scatter_window)) beyond the in-order calibration images' own share
    (reference_scatter: the fixed and per-PTE terms include theirs): walked cold in physical order, the struct
    pages stream in behind the hardware prefetcher; after each break the stream starts again from demand
    misses to memory, however large the image (no cap). Both layout terms together stop at
    saturated_per_pte_us a page where the profile has it: once every struct page is a demand miss, a wider spread
    or more breaks add nothing."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    fixed_us: float = Field(default=0.0, ge=0.0)
    per_pte_us: float = Field(default=0.0, ge=0.0)
    pte_cap: float = Field(default=0.0, ge=0.0, description="4 KiB pages beyond which the extra stops growing "
                           "(what the caches held warm of a larger image)")
    per_scattered_pte_us: float = Field(default=0.0, ge=0.0, le=MAX_PER_SCATTERED_PTE_US, description="the cold extra per page out of "
                                        "physical order, beyond the in-order cold extra and the warm scatter term")
    scatter_window: float = Field(default=1.0, ge=1.0, le=4096.0, description="pages after a break in the frame "
                                  "order that a cold walk pays per_scattered_pte_us on (absent: 1, the pages out "
                                  "of order themselves)")
    reference_scatter: float = Field(default=0.0, ge=0.0, le=1.0, description="the scatter of the in-order images "
                                     "the fixed and per-PTE terms were measured on: per_scattered_pte_us prices the share "
                                     "after a break beyond theirs (absent: 0)")
    per_spread: bool = Field(default=False, description="per_pte_us is the extra per page of an image whose struct "
                             "pages are one dense range (spread 1), and grows with the image's spread (the vmemmap "
                             "pages its struct pages sit on), and the breaks' term (per_scattered_pte_us) shrinks as "
                             "1 / spread; absent: as measured on the calibration's images, whatever their spread")
    saturated_per_pte_us: float | None = Field(
        default=None, ge=0.0, le=MAX_PER_SCATTERED_PTE_US, description="the most a cold walk pays per page beyond "
        "fixed_us whatever the layout: one demand miss per struct page, no prefetch (images touched in a random "
        "order, measured); the spread and breaks' terms stop there, never below the dense image's per_pte_us; "
        "absent: no bound")

    def extra_us(self, ptes: int, scatter: float = 0.0, spread: float = 1.0) -> float:
        w = self.scatter_window
        beyond = max(0.0, scatter_ramp(scatter, w) - scatter_ramp(self.reference_scatter, w))
        # per_spread: the break term was measured on dense images (runs of K pages, random order: spread ~1); on
        # an image spread among other processes' frames its walk already leaves a vmemmap page every 64 / spread
        # pages, which the spread term prices, and the two overlap: the breaks' term is divided by the spread
        # (assumption, chosen on validate's 1 s rounds: see the README's "spread")
        spread = max(1.0, spread) if self.per_spread else 1.0
        dense = self.per_pte_us * min(float(ptes), self.pte_cap)
        layout = dense * spread + self.per_scattered_pte_us * ptes * beyond / spread
        if self.saturated_per_pte_us is not None:
            # a walk misses at most once per struct page: past a spread of ~8 (runs of 8 struct pages or fewer per
            # vmemmap page) no prefetch is left to lose (calibration/data/spread-saturation-20261206.json)
            layout = min(layout, max(dense, self.saturated_per_pte_us * ptes))
        return self.fixed_us + layout


class Warmth(BaseModel):
    """How cold a walk of a process's image (dup_mmap, exit_mmap) finds its page tables and struct
    pages: a coldness 0 (right after the last walk, on the same CPU: what the back-to-back
    calibration measured) .. 1 (fully cold), from what the last walk left cold (`residual`), the time
    since it, 1 - exp(-(dt/tau_us)^beta), the bytes other walks touched on that CPU since,
    1 - exp(-bytes/footprint_bytes), and a move to another CPU (`migration`), combined as
    independent chances of eviction; where the profile has `remote` terms, a walk on another CPU than the
    image's last walk pays those on what is still cached instead of `migration`, and a family's creation on
    another CPU than its last (`families`) pays no move (none was measured). Absent from a profile: every
    walk is warm."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tau_us: float = Field(gt=0.0)
    beta: float = Field(default=1.0, gt=0.0, le=4.0)
    footprint_bytes: float = Field(gt=0.0)
    walk_bytes_per_pte: float = Field(default=80.0, ge=0.0, description="what one walk touches per 4 KiB page "
                                      "(its PTE in the parent and in the child, 8 + 8 B, and its struct page, 64 B)")
    migration: float = Field(default=0.0, ge=0.0, le=1.0)
    residual: list[tuple[float, float]] = Field(
        default_factory=list, description="(4 KiB pages, share) points: the share of a walk's coldness still there "
        "right after the walk (a cold walk leaves its image only partly warm: the next walk right after it pays "
        "that share of its own cold extra), interpolated in the image's pages, flat beyond the points; absent: "
        "every walk leaves its image as warm as a back-to-back loop's")
    stages: dict[Literal[COLD_STAGES], ColdTerms]  # type: ignore[valid-type] - kernel/stages.py marks them
    families: dict[Literal["vfork", "posix_spawn", "thread"], FamilyCold] = Field(
        default_factory=dict, description="the creating call's cold extra for the kinds that copy no image "
        "(CLONE_VM: vfork, posix_spawn, pthread_create): the parent's task, mm and files structs, the kernel's code "
        "and slabs cool from the parent's last creation (when, on which CPU, the bytes walked there since); absent "
        "for a kind: its creations are as warm as back to back")
    remote: dict[Literal[COLD_STAGES], ColdTerms] = Field(  # type: ignore[valid-type]
        default_factory=dict, description="what a walk pays on top of its warm median when the image's lines were "
        "last written on another CPU (the child's exit there, or the parent's last walk before it moved) and are "
        "still in that CPU's private caches, per stage: per_pte_us * min(ptes, pte_cap) (the cap: what that cache "
        "holds), and exit_mmap's fixed_us: the structs the fork wrote on the parent's CPU (task, mm, files, "
        "signal) that a child's exit on the other CPU fetches, beyond the parent's cross-CPU wake-up the scheduler "
        "prices; a walk at coldness c pays c of the cold terms and 1 - c of these. Present: a child's exit on "
        "another CPU moves the image's lines there and `migration` is not used; absent: an exit elsewhere leaves "
        "the image where it was, and a move pays `migration`")
    source: str = Field(min_length=1)

    @field_validator("residual")
    @classmethod
    def _residual_points(cls, v: list[tuple[float, float]]) -> list[tuple[float, float]]:
        if any(not 0.0 <= share <= 1.0 or pages < 0.0 for pages, share in v):
            raise ValueError("residual points are (pages >= 0, share in 0..1)")
        if [p for p, _ in v] != sorted({p for p, _ in v}):
            raise ValueError("residual points must be in increasing order of pages, each size once")
        return v

    def residual_at(self, ptes: float) -> float:
        """The share of a walk's coldness left right after it, for an image of `ptes` pages."""
        if not self.residual:
            return 0.0
        return float(np.interp(ptes, [p for p, _ in self.residual], [s for _, s in self.residual]))

    def scaled(self, stage: str, term: str, factor: float) -> "Warmth":
        """A what-if on a stage's warm term scales its cold counterpart alike (a walk that touches
        fewer PTEs misses on fewer): fixed_us, and per_pte_us with per_scattered_pte_us."""
        cold = self.stages.get(stage)
        if cold is None or term not in ("fixed_us", "per_pte_us"):
            return self
        update = {term: getattr(cold, term) * factor}
        if term == "per_pte_us":
            update["per_scattered_pte_us"] = cold.per_scattered_pte_us * factor
        terms = cold.model_copy(update=update)
        remote = self.remote.get(stage)
        if remote is not None and term == "per_pte_us":
            remote = remote.model_copy(update={"per_pte_us": remote.per_pte_us * factor})
        return self.model_copy(update={"stages": {**self.stages, stage: terms},
                                       "remote": {**self.remote, **({stage: remote} if remote is not None else {})}})


class ConcurrentCreation(BaseModel):
    """What a creation and an exit pay on top of their (pinned, back-to-back) stages when another CPU, creating or
    reaping for another process, wrote the kernel's shared creation state last (credentials and user counts, the
    pid allocator, the task list, the root css_set: kernel/shared.py). Absent from a profile: nothing (every
    creation priced as a loop alone on the machine)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    fork_us: float = Field(ge=0.0, le=10000.0, description="median extra of copy_process (us)")
    exit_us: float = Field(ge=0.0, le=10000.0, description="median extra of the child's exit and its reap (us)")
    sigma: float = Field(default=0.3, ge=0.0, le=2.0, description="lognormal residual of each extra")
    source: str = Field(min_length=1)
    # Past two writers: the extras grow by this fraction of themselves for each further CPU that wrote the state
    # within `window_us` (the lines' transfers queue behind one another). 0: two CPUs' extra at any count.
    per_writer: float = Field(default=0.0, ge=0.0, le=100.0)
    window_us: float = Field(default=1000.0, gt=0.0, le=1e6)
    per_writer_source: str = ("assumption: no growth past two writers (measured only with two CPUs creating; "
                              "docs/MANY_CPUS.md measures the growth on a 16-vCPU machine)")


class RemoteFree(BaseModel):
    """What a fork() pays on top of its (back-to-back, pinned) stages when the last child created on its
    CPU was freed on another CPU: that child's VMAs, anon_vma chains, files and fs structs went back to
    their slabs as SLUB remote frees (the next fork takes them again through the slow path, their lines
    in the other CPU's caches), its page tables into the other CPU's per-CPU page lists (this CPU's
    refill from the buddy allocator), its memcg charges into the other CPU's stock. Linear in the
    image's VMAs (one vm_area_struct each) and anonymous VMAs (an anon_vma and two anon_vma_chains
    each). The thread-stack cache miss it also causes is not in here: StackCache prices it
    (stack_vmalloc); nor the image's lines the child's exit_mmap wrote on the other CPU, which grow with the
    image (the warmth section's `remote`). `thread_us` prices a thread's creation the same way: a thread
    releases its own task and pid where it exits (exit_notify's release_task), so the next thread on
    its creator's CPU reallocates them.
    Absent from a profile: such a fork costs what a back-to-back pinned one does."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    fixed_us: float = Field(ge=0.0, le=10000.0, description="median extra of the fork() call (us)")
    per_vma_us: float = Field(default=0.0, ge=0.0, le=100.0, description="... per VMA of the parent (us)")
    per_anon_vma_us: float = Field(default=0.0, ge=0.0, le=100.0,
                                   description="... per VMA holding anonymous pages, beyond per_vma_us (us)")
    sigma: float = Field(default=0.3, ge=0.0, le=2.0, description="lognormal residual of the extra")
    thread_us: float | None = Field(
        default=None, ge=0.0, le=10000.0,
        description="median extra of a thread's creation (CLONE_THREAD) when the last thread created on its CPU "
                    "exited on another CPU: the task_struct and pid it released there (us); absent: not priced")
    source: str = Field(min_length=1)

    def median_us(self, vmas: int, anon_vmas: int) -> float:
        return self.fixed_us + self.per_vma_us * vmas + self.per_anon_vma_us * anon_vmas
