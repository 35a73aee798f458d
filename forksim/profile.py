"""Profiles: the measured cost of every kernel stage, and how to sample it.

A profile is a JSON file (schema `forksim-profile`, version 1). Each stage cost is linear in the
parent's image,

    median_us = fixed_us + per_vma_us*vmas + per_anon_vma_us*anon_vmas + per_pte_us*ptes
                + per_pmd_us*pmds + per_thread_us*threads

(with the optional terms of forksim.profile_terms: a VMA's interval-tree insertion, a walk larger than the
caches, pages out of physical order), times a residual factor with median 1 drawn from the stage's residual
distribution (a lognormal `sigma`, or empirical quantiles of measured/fitted ratios), so the model reproduces
tails as well as medians. `ptes` counts 4 KiB anonymous pages, `pmds` 2 MiB transparent huge pages. Every stage
and scheduler entry says where its number came from in `source` ("measured: ...",
"derived: ...", "assumption: ...").

Optional sections (issue 19; a profile without them loads and they cost 0, each fallback saying so
in its `source`): `files` (dup_fd and close_files per open fd beyond the calibration's FD_BASE = 3),
`clone_flags` (per flag beyond a kind's preset: the call's, the exit's signed change and deferred
work), `live_children` (per live child of the parent, in the stage where it was measured to grow),
`remote_free` (a fork after its CPU's last child was freed on another CPU: kernel/slab.py),
`concurrent_creation` (a creation or exit after another CPU, for another process, wrote the shared creation
state: kernel/shared.py).

Which stages exist and which kernel functions each stands for: `STAGES` below (the table:
kernel/stages.py). The scheduler section holds the machine's costs (tick, slice, idle wake-up,
context switch, migration).

The house: profile_terms.py (a stage's cost terms and residual, the image shape, the scheduler's
costs), profile_sections.py (the optional sections); this module holds the `Profile` and loads
it, and re-exports both.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, ValidationInfo, field_validator

from .errors import ProfileError
from .host import HostFingerprint, host_from_provenance
from .kernel.stages import STAGES as _STAGE_TABLE
from .profile_placement import ROOM_FAMILIES, PlacementRoom, RoomCurve, WakeAway  # noqa: F401
from .profile_sections import (
    _ABSENT_CHILDREN,
    _ABSENT_FILES,
    _ABSENT_FLAG,
    _ABSENT_UNSHARE,
    FD_BASE,
    Balancing,
    ChildrenCost,
    ColdTerms,
    FamilyCold,
    FilesCost,
    FlagCost,
    DamonRmap,
    HostSpeed,
    Interruptions,
    NetnsCleanup,
    RcuCallbacks,
    RemoteFree,
    ConcurrentCreation,
    Warmth,
)
from .profile_terms import (  # noqa: F401 - _TERMS: the old private name of TERMS
    _TERMS,
    TERMS,
    CacheCurve,
    Fraction,
    ImageShape,
    Residual,
    IdleWakeCurve,
    IpiSendCurve,
    vma_log,
    SchedulerCosts,
    Scatter,
    Spread,
    StageCost,
)
from .scaling import ScalingRule, default_scaling

__all__ = [
    "STAGES",
    "SCHEDULER_KEYS",
    "Residual",
    "StageCost",
    "IdleWakeCurve",
    "IpiSendCurve",
    "SchedulerCosts",
    "Fraction",
    "Spread",
    "Scatter",
    "RecentIdle",
    "RoomCurve",
    "PlacementRoom",
    "WakeAway",
    "ROOM_FAMILIES",
    "Interruptions",
    "HostSpeed",
    "RcuCallbacks",
    "NetnsCleanup",
    "DamonRmap",
    "ColdTerms",
    "FamilyCold",
    "Warmth",
    "Balancing",
    "TERMS",
    "vma_log",
    "CacheCurve",
    "Profile",
    "ImageShape",
    "FlagCost",
    "FilesCost",
    "ChildrenCost",
    "RemoteFree",
    "ConcurrentCreation",
    "FD_BASE",
    "load_profile",
    "profile_path",
    "shipped_profiles",
    "PROFILE_FORMAT",
    "PROFILE_VERSION",
    "profile_info",
]

PROFILE_FORMAT = "forksim-profile"
PROFILE_VERSION = 1
_SHIPPED = Path(__file__).parent / "profiles"

# Stage name -> the kernel functions it stands for, in kernel order (the table: kernel/stages.py).
STAGES: dict[str, str] = {name: stage.kernel for name, stage in _STAGE_TABLE.items()}

SCHEDULER_KEYS = ("tick", "slice", "idle_wake", "context_switch", "migration", "wakeup_granularity")


_UPSTREAM = "assumption: upstream select_task_rq_fair (SD_BALANCE_FORK) puts a new task on an idle CPU"


_EXIT_HEAD_DEFAULT = ("assumption: do_exit runs exit_signals .. exit_mm (where mm_release releases a vfork parent) "
                      "before its first preemption point, close_files' cond_resched: half of it, as measured on "
                      "a 2-vCPU Linux 6.18 VM (0.52 of a vfork child's exit, forksim calibrate)")


class RecentIdle(BaseModel):
    """Where a kernel that packs vCPUs puts a CLONE_VFORK child while another CPU is idle, when that CPU
    went idle less than `below_us` ago (still warm from the previous child): `vfork_local` is the share kept
    on the parent's CPU. A CPU idle longer than that gets placement.vfork_local_when_idle."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    below_us: float = Field(gt=0.0, le=1e6)
    vfork_local: float = Field(ge=0.0, le=1.0)
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
    # waking its parent) that leave the wakee on its own busy CPU instead of the waker's, the waker alone
    # on its CPU (measured by schedbench exitwake since 2026-12-05, by the busy traces before); absent: 0.
    # By creation family where measured (forksim.calibration.scheduling.fit_placement; absent: the
    # fallback named): thread_local_when_idle, a CLONE_THREAD child (absent: fork_local_when_idle);
    # spawn_local_when_idle, a CLONE_VFORK child that execs, posix_spawn (absent: vfork_local_when_idle);
    # exec_moves_when_idle, sched_exec's share that moves an exec'ing child alone on its CPU to an idle
    # one (absent: 0, upstream's find_idlest_group counts the child's own CPU idle and keeps it there).
    placement: dict[Literal["fork_local_when_idle", "vfork_local_when_idle", "fork_local_when_idle_busy",
                            "wake_prev_when_busy", "thread_local_when_idle", "spawn_local_when_idle",
                            "exec_moves_when_idle"], Fraction] = Field(
        default_factory=lambda: {
            "fork_local_when_idle": Fraction(value=0.0, source=_UPSTREAM),
            "vfork_local_when_idle": Fraction(value=0.0, source=_UPSTREAM),
        }
    )
    # The same share for a vfork child when the idle CPU went idle only just now (sched_vcpu_pack spreads a
    # tight vfork loop over both vCPUs); absent: vfork_local_when_idle whatever the idle time.
    placement_recent_idle: RecentIdle | None = None
    # The room rule of a packing kernel by the parent CPU's awake time and the idle CPU's idle time, by family
    # (PlacementRoom); where present for a family it replaces placement and placement_recent_idle for it.
    placement_room: PlacementRoom | None = None
    interruptions: Interruptions | None = None
    # The host's slow episodes per vCPU (forksim.calibration.host_speed); absent: every CPU at one speed throughout
    host_speed: HostSpeed | None = None
    # RCU callbacks of exited tasks, run a grace period later in softirq (forksim.rcu; measured by
    # forksim.calibration.rcu); absent: they cost nothing
    rcu_callbacks: RcuCallbacks | None = None
    # A network namespace's batched teardown (cleanup_net) and the rtnl_mutex it holds against the next
    # clone(CLONE_NEWNET)'s setup (forksim.kernel.netns); absent: the flag's deferred_us on a worker, no rtnl
    netns_cleanup: NetnsCleanup | None = None
    # A DAMON monitor (kdamond, physical-address mode) whose rmap walks hold a creator's anon_vma root for read,
    # one VMA visit per process mapping the folio (forksim.kernel.damon); absent: no monitor
    damon_rmap: DamonRmap | None = None
    # ImageShape.scatter of a freshly touched image on this host (what calibrate's own images had, read from
    # /proc/PID/pagemap): the layout a config that does not state `workload.image.scatter` gets (Scatter.at: by
    # size where the profile has breaks); absent: 0
    fresh_image_scatter: Scatter | None = None
    # ImageShape.spread of a freshly touched image on this host, from the same images: what a config that does not
    # state `workload.image.spread` gets; absent: 1 (one dense range of frames)
    fresh_image_spread: Spread | None = None
    # The machine the costs were measured on (forksim.host). Optional: a profile without it falls back
    # to the facts its provenance recorded (CPU model name, kernel, CPUs), and a profile built from
    # published figures has none.
    host: HostFingerprint | None = None
    # How each cost that depends on the CPU count or the machine's size scales beyond `host`
    # (forksim.scaling); a profile without the section gets the standard statements.
    scaling: dict[str, ScalingRule] = Field(default_factory=default_scaling)
    # Scheduler policy (EEVDF, load balancing, vCPU packing, forksim.sched); absent: the fair queue
    # with wake-affine placement and idle pulls that the validated model runs.
    balancing: Balancing | None = None
    # Share of do_exit (the child's whole exit, less exit_mmap) before its first preemption point:
    # a task woken meanwhile (a vfork parent, at mm_release) waits for it under preempt=none.
    exit_head_share: Fraction = Field(default_factory=lambda: Fraction(value=0.5, source=_EXIT_HEAD_DEFAULT))
    # Share of do_exit before exit_mm -> mm_release -> complete_vfork_done wakes a vfork parent: what a parent
    # on another CPU waits for (it need not wait for this CPU's preemption point); absent: exit_head_share.
    mm_release_share: Fraction | None = None
    # wait4's reap of a vfork child that exited still sharing the parent's mm, measured on the vfork loop
    # (the stage wait_reap is measured on fork's); absent: wait_reap.
    wait_reap_vfork: StageCost | None = None
    # A new thread's own work in glibc's start_thread around its function (signal mask, rseq, robust list;
    # TLS destructors, the stack's MADV_DONTNEED) before its exit, and an exec'd program's start in its new
    # image (first return, its page faults) with what its exit costs beyond an empty image's exit_mmap: each
    # fitted to its family's untraced round trip (calibration.families); absent: 0 (not modelled).
    thread_start: StageCost | None = None
    exec_start: StageCost | None = None
    # execve split where exec_mmap's exec_mm_release wakes a vfork parent (complete_vfork_done): with exec_tail
    # set, the stage `exec` is bprm_execve up to that release and exec_tail the rest (mmput of the old mm aside:
    # begin_new_exec's remainder and the binary's load), so a posix_spawn parent runs before the tail;
    # spawn_prep is posix_spawn's child-side work in glibc before its execve (__spawni_child: signal mask and
    # dispositions, file actions). Fitted from the traced posix_spawn loop's split and its untraced call
    # (calibration.families); absent: `exec` is the whole execve, the release at its end, no spawn_prep.
    exec_tail: StageCost | None = None
    spawn_prep: StageCost | None = None
    # What copy_process copies beyond the address space; profiles without them load (costs 0, see
    # `files_cost`, `children_cost`, `flag_cost`).
    clone_flags: dict[str, FlagCost] = Field(default_factory=dict)
    files: FilesCost | None = None
    live_children: ChildrenCost | None = None
    # unshare(2) by a running task, per flag (measured against unshare(0) in the same child); a flag
    # absent falls back to the clone flag's cost (see `unshare_cost`).
    unshare: dict[str, FlagCost] = Field(default_factory=dict)

    # Cold walks of the image (idle gaps, other work, migration); None: every fork as warm as the
    # back-to-back loops the stages were fitted from (profiles older than the measurement).
    warmth: Warmth | None = None
    # A fork after its CPU's last child was freed on another CPU (kernel/slab.py); None: no extra
    # (profiles older than the measurement: every fork priced as the pinned back-to-back loop).
    remote_free: RemoteFree | None = None
    # A creation or exit after another CPU, for another process, wrote the shared creation state
    # (kernel/shared.py); None: no extra (profiles older than the measurement).
    concurrent_creation: ConcurrentCreation | None = None
    diagnostics: dict[str, Any] = Field(default_factory=dict)
    # Where this profile was read from: {"name", "path", "sha256"} (set by load_profile).
    _origin: dict[str, Any] = PrivateAttr(default_factory=dict)

    @field_validator("clone_flags", "unshare")
    @classmethod
    def _known_flags(cls, flags: dict[str, FlagCost], info: ValidationInfo) -> dict[str, FlagCost]:
        from .kernel.flags import UNSHARE_FLAGS, USER_FLAGS

        known, what = (USER_FLAGS, "clone") if info.field_name == "clone_flags" else (UNSHARE_FLAGS, "unshare")
        unknown = [f for f in flags if f not in known]
        if unknown:
            raise ValueError(f"unknown {what} flag(s): {', '.join(unknown)} (known: {', '.join(known)})")
        return flags

    def flag_cost(self, flag: str) -> FlagCost:
        """A flag's measured cost, or a zero cost saying it was not measured."""
        return self.clone_flags.get(flag) or FlagCost(call_us=0.0, sigma=0.0, source=_ABSENT_FLAG.format(flag=flag))

    def unshare_cost(self, flag: str) -> FlagCost:
        """unshare(flag)'s measured cost; absent, a namespace's clone cost (unshare_nsproxy_namespaces and
        copy_namespaces both build it with create_new_namespaces), else 0 (CLONE_FILES, CLONE_FS: their
        table copies are the fd and fs terms)."""
        if flag in self.unshare:
            return self.unshare[flag]
        if flag in self.clone_flags and flag.startswith("CLONE_NEW"):
            c = self.clone_flags[flag]
            return c.model_copy(update={"source": _ABSENT_UNSHARE.format(flag=flag) + c.source})
        return FlagCost(call_us=0.0, sigma=0.0, source=f"assumption: this profile has no measurement of unshare({flag}): "
                        "it costs nothing beyond the copies the fd term prices")

    def files_cost(self) -> FilesCost:
        return self.files or FilesCost(dup_fd_per_fd_us=0.0, close_files_per_fd_us=0.0, sigma=0.0,
                                       source=_ABSENT_FILES)

    def children_cost(self) -> ChildrenCost:
        return self.live_children or ChildrenCost(sigma=0.0, source=_ABSENT_CHILDREN)

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

    def fingerprint(self) -> HostFingerprint | None:
        """The host this profile was measured on: its `host` section, else what its provenance says (a host
        section written before it carried the cpuidle driver takes the one its provenance recorded)."""
        if self.host is None:
            return host_from_provenance(self.provenance)
        if self.host.cpuidle_driver is None and self.provenance.get("cpuidle_driver"):
            return self.host.model_copy(update={"cpuidle_driver": self.provenance["cpuidle_driver"]})
        return self.host

    def with_whatif(self, modifiers: dict[str, float]) -> "Profile":
        """Scale cost terms, e.g. {'dup_mmap.per_pte_us': 0.05} (what-if experiments)."""
        if not modifiers:
            return self
        stages = dict(self.stages)
        warmth = self.warmth
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
            warmth = warmth.scaled(stage, term, float(factor)) if warmth is not None else None
        return self.model_copy(update={"stages": stages, "warmth": warmth})


def shipped_profiles() -> dict[str, Path]:
    return {p.stem: p for p in sorted(_SHIPPED.glob("*.json"))}


def stored_profiles() -> dict[str, Path]:
    """Profiles `forksim calibrate` stored for this account (forksim.store), by name."""
    from .store import stored_profile_paths

    return {p.stem: p for p in stored_profile_paths()}


def profile_path(name_or_path: str) -> Path:
    """A shipped profile's name, `auto` (forksim.store.auto_profile: this host's stored profile, else the
    shipped one measured on this kind of host, else `default`), a stored
    profile's name (its host, e.g. intel-xeon-family6-model207-2cpu-linux6.18-kvm), or a file."""
    if name_or_path == "auto":
        from .store import auto_profile

        name_or_path = auto_profile()
    shipped = shipped_profiles()
    if name_or_path in shipped:
        return shipped[name_or_path]
    stored = stored_profiles()
    if name_or_path in stored:
        return stored[name_or_path]
    path = Path(name_or_path)
    if path.exists():
        return path
    names = ", ".join(shipped) + (f"; stored: {', '.join(stored)}" if stored else "")
    raise ProfileError(f"no shipped or stored profile of that name and no such file (shipped: {names})",
                       source=name_or_path)


def profile_info(profile: Profile) -> dict[str, Any]:
    """Which profile a result used: name, file, its sha256 and the host it was measured on."""
    host = profile.fingerprint()
    origin = profile._origin
    return {
        "name": profile.name,
        "path": origin.get("path"),
        "sha256": origin.get("sha256"),
        "host_cpu": host.cpu_model if host else None,
        "host": host.describe() if host else "no host (published figures)",
        "measured": str(profile.provenance.get("date") or "")[:10] or None,
    }


def load_profile(name_or_path: str) -> Profile:
    """Load a shipped profile by name, a stored one by name, or a profile file by path, and validate it."""
    path = profile_path(name_or_path)
    try:
        raw = path.read_bytes()
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ProfileError(f"not valid JSON: {exc}", source=str(path)) from None
    except RecursionError:
        raise ProfileError("not valid JSON: nested too deeply", source=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"cannot read profile: {exc.__class__.__name__}", source=str(path)) from None
    if not isinstance(data, dict) or data.get("format") != PROFILE_FORMAT:
        raise ProfileError(f"not a forksim profile (expected \"format\": \"{PROFILE_FORMAT}\")", source=str(path))
    try:
        prof = Profile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        raise ProfileError(msg, source=str(path), field=field or None) from None
    prof._origin = {"name": prof.name, "path": str(path.resolve()), "sha256": hashlib.sha256(raw).hexdigest()}
    return prof
