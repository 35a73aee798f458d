"""The config's schema: its TOML sections as frozen pydantic models, and the `Experiment` they make.

Quantities keep their units in TOML ("256MiB", "2ms", "5000/s"): `Bytes`, `Micros` and `PerSecond`
parse them into the model's units (bytes, microseconds, per second) and refuse a bare number unless
the validation context says the data are resolved. Loading, overrides and error messages live in
forksim.config (which re-exports everything here).
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from .kernel import flags as clone_flags
from .units import UnitError, parse_rate, parse_size, parse_time_us

__all__ = [
    "Experiment",
    "ExperimentSection",
    "MachineSection",
    "WorkloadSection",
    "ImageSection",
    "ChildSection",
    "BackgroundSection",
    "BurstSection",
    "ServerSection",
    "CLONE_KINDS",
    "CALLS",
    "MAX_FDS",
    "MAX_LIVE_CHILDREN",
    "MAX_RSS_BYTES",
    "MAX_VMAS",
    "MAX_QUEUE",
    "Bytes",
    "Micros",
    "PerSecond",
]

CLONE_KINDS = tuple(clone_flags.KINDS)  # the kinds' table: forksim/kernel/flags.py
CALLS = {name: kind.call for name, kind in clone_flags.KINDS.items()}  # the call each kind makes
# A server's snapshot child (BGSAVE): a copy of the parent's memory that runs without exec.
_SNAPSHOT_KINDS = clone_flags.kinds_where(copies_mm=True, execs=False)
MAX_FDS = 1_048_576  # fs.nr_open's default: RLIMIT_NOFILE cannot be raised beyond it
MAX_LIVE_CHILDREN = 4_194_304  # PID_MAX_LIMIT on 64-bit: kernel.pid_max cannot be set higher

# Physical bounds (the reason goes into the message).
MAX_RSS_BYTES = 64 * 1024**4  # x86-64, 4-level page tables: 46-bit physical addresses, 64 TiB of RAM at most
MAX_VMAS = 1_048_576  # vm.max_map_count: 65530 by default, 1048576 where distributions raise it
MAX_QUEUE = 10_000_000  # an open workload's queue: beyond this the memory grows without telling anything new
_RSS_REASON = (
    "more than 64 TiB (64TiB): more memory than an x86-64 machine with 4-level page tables can hold "
    "(46-bit physical addresses), so no process can touch that much"
)
_VMAS_REASON = (
    f"more than {MAX_VMAS} mappings: Linux refuses mmap beyond vm.max_map_count, 65530 by default and "
    f"{MAX_VMAS} where distributions raise it"
)
_NAME = re.compile(r"[A-Za-z0-9_.+-][A-Za-z0-9 _.,+=@-]{0,99}")


def _unit(parser):
    """A quantity's validator: the unit is required unless the validation context says the data are
    resolved (the model's units)."""

    def convert(value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            try:
                return parser(value, bare_ok=bool((info.context or {}).get("resolved")))
            except UnitError as exc:
                raise ValueError(str(exc)) from None
        return value

    convert.parser = parser  # type: ignore[attr-defined] - read by quantity_parser()
    return BeforeValidator(convert)


Bytes = Annotated[int, _unit(parse_size), Field(ge=0)]
Micros = Annotated[float, _unit(parse_time_us), Field(ge=0)]
PerSecond = Annotated[float, _unit(parse_rate), Field(gt=0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False, allow_inf_nan=False)


class ExperimentSection(_Section):
    """[experiment]: what to call the run, how long to simulate, how many replications."""

    name: str = "experiment"
    duration: Micros = Field(default=2e6, gt=0, description="simulated time per replication after warm-up (default 2s)")
    warmup: Micros = Field(default=0.2e6, description="simulated time discarded at the start (default 0.2s)")
    replications: int = Field(default=5, ge=1, le=10_000, description="independent replications (default 5)")
    seed: int = Field(default=42, ge=0, description="root seed; replications get independent streams")
    max_creations: int = Field(default=0, ge=0, description="stop a replication after this many creations (0: no limit)")
    precision: float | None = Field(
        default=None, description="run to a precision instead of a fixed count: add `replications` at a time "
        "until the 95% CI half-width of throughput and of fork() p99 is within this fraction of each "
        "estimate (\"5%\" or 0.05), or max_replications is reached (default: off)")
    max_replications: int = Field(default=200, ge=2, le=10_000,
                                  description="with precision: the cap on replications (default 200)")

    @field_validator("precision", mode="before")
    @classmethod
    def _precision(cls, v: Any) -> float | None:
        from .precision import parse_precision

        return None if v is None else parse_precision(v)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        # The name becomes a folder (results/<name>/run): no path separators, no '..', no control characters.
        if not _NAME.fullmatch(v) or v in (".", ".."):
            raise ValueError(
                "must be 1-100 characters of letters, digits, spaces and _ . , + = @ - (it names the results "
                "folder), not starting with a space"
            )
        return v


class MachineSection(_Section):
    """[machine]: the simulated box. Scheduler costs come from the profile unless set here."""

    cpus: int = Field(default=2, ge=1, le=4096)
    profile: str = Field(default="auto", validate_default=True,
                         description="a shipped profile's name, a stored profile's name, a file, or 'auto': the "
                         "profile `forksim calibrate` stored for this host, else the shipped default")
    tick: Micros | None = Field(default=None, gt=0, description="scheduler tick (default: profile, 4ms at HZ=250)")
    slice: Micros | None = Field(default=None, gt=0, description="fair-share time slice (default: the profile's, "
                                 "scaled from its host's CPU count to `cpus` by 1 + ilog2(min(cpus, 8)) as the kernel does)")
    idle_wake: Micros | None = Field(default=None, description="latency to wake a halted CPU (default: profile)")
    context_switch: Micros | None = Field(default=None, description="cost of a context switch (default: profile)")
    migration: Micros | None = Field(default=None, description="cost of pulling a task to another CPU (default: profile)")
    wakeup_preemption: bool = True
    host_speed: bool = Field(default=True, description="the profile's slow episodes of the host (its vCPUs' work "
                             "1.2-1.8x as long for milliseconds at a time, where the profile measured them); false: "
                             "every CPU at one speed throughout, as on a dedicated host")

    @field_validator("profile")
    @classmethod
    def _profile(cls, v: str) -> str:
        # Resolved here, so that config.resolved.toml and a sweep point's digest name the profile used:
        # 'auto' becomes the stored profile's path (or 'default'), a stored name its path.
        from .profile import shipped_profiles, stored_profiles
        from .store import AUTO, auto_profile

        if v == AUTO:
            return auto_profile()
        shipped = list(shipped_profiles())
        if v in shipped:
            return v
        stored = stored_profiles()
        if v in stored:
            return str(stored[v])
        try:
            if v and Path(v).is_file():
                return v
        except (OSError, ValueError):  # a name too long for a path, a NUL byte
            pass
        close = difflib.get_close_matches(v, shipped + list(stored), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        more = f"; stored: {', '.join(stored)}" if stored else ""
        raise ValueError(f"no shipped or stored profile of that name and no such file ({hint}shipped: "
                         f"{', '.join(shipped)}{more}; or 'auto')")


class ImageSection(_Section):
    """[workload.image]: the parent's address space."""

    rss: Bytes = Field(default=64 * 1024**2, description="touched anonymous memory (default 64MiB)")
    vmas: int = Field(default=40, ge=1, description=f"mappings in the address space (at most {MAX_VMAS})")
    anon_vmas: int | None = Field(
        default=None, ge=0, description="mappings carrying anonymous pages (default: half of vmas, at least 1)"
    )
    thp: bool = False
    threads: int = Field(default=1, ge=1, le=100_000, description="threads in the parent process")
    fault_rate: PerSecond = Field(default=2000.0, description="page faults per second per extra thread")
    fault_position: float | Literal["uniform"] = Field(
        default="uniform",
        description="where in the VMA walk the threads' faults land: 'uniform' or a fraction 0..1",
    )
    # dup_mmap write-protects each PTE written since the last fork (StageCost.per_written_pte_us prices it)
    write_fraction: float = Field(
        default=0.0, ge=0.0, le=1.0,
        description="share of the image's 4 KiB pages each parent writes between a reap and its next creation (its "
        "own work: a write fault on each, and the next fork write-protects each again; closed and open workloads; "
        "tools/image_shape.py PID --written S reads a running process's share; default 0: the image is only read)")
    fds: int = Field(default=3, ge=0, le=MAX_FDS,
                     description="open file descriptors: copy_files -> dup_fd copies them, exit closes them "
                     "(default 3: stdin, stdout, stderr; at most fs.nr_open's default 1048576)")
    # fork's copy_present_pte and exit's zap_pte_range touch each page's struct page in virtual order: where
    # the frames are out of that order no prefetcher follows the walk (StageCost.scatter_us prices it)
    scatter: float | None = Field(
        default=None, ge=0.0, le=1.0,
        description="physical layout of the image: the share of consecutive anonymous pages whose frames are not "
        "neighbours in /proc/PID/pagemap (0 = in order, 1 = none in order; tools/image_shape.py PID reads it; "
        "default: the profile's fresh_image_scatter at this image's size, else 0)")
    # a cold walk misses per vmemmap page of struct pages: frames spread among other processes' put the image's
    # struct pages on more of them (ColdTerms.per_spread prices it)
    spread: float | None = Field(
        default=None, ge=1.0, le=64.0,
        description="how far the image's struct pages spread: the distinct 4 KiB vmemmap pages holding them x 64 / "
        "pages, from /proc/PID/pagemap (1 = one dense range of frames, up to 64; tools/image_shape.py PID reads it; "
        "default: the profile's fresh_image_spread at this image's size, else 1)")

    @field_validator("rss")
    @classmethod
    def _rss(cls, v: int) -> int:
        if v > MAX_RSS_BYTES:
            raise ValueError(_RSS_REASON)
        return v

    @field_validator("scatter", mode="before")
    @classmethod
    def _scatter(cls, v: Any) -> Any:
        if isinstance(v, bool) or (isinstance(v, (int, float)) and not 0.0 <= v <= 1.0):  # NaN fails too
            raise ValueError(f"must be a fraction between 0 (pages in physical order) and 1 (none in order), "
                             f"as tools/image_shape.py PID reads it from /proc/PID/pagemap")
        return v

    @field_validator("vmas")
    @classmethod
    def _vmas(cls, v: int) -> int:
        if v > MAX_VMAS:
            raise ValueError(_VMAS_REASON)
        return v

    @model_validator(mode="after")
    def _check(self) -> "ImageSection":
        if self.anon_vmas is not None and self.anon_vmas > self.vmas:
            raise ValueError(f"anon_vmas ({self.anon_vmas}) cannot exceed vmas ({self.vmas})")
        if isinstance(self.fault_position, float) and not 0.0 <= self.fault_position <= 1.0:
            raise ValueError("fault_position must be 'uniform' or a fraction between 0 and 1")
        return self

    def scatter_used(self, profile: Any) -> tuple[float, str]:
        """The scatter the model prices this image at and where it came from: the config's own, else the
        profile's `fresh_image_scatter` at this image's size (what calibrate's freshly touched images had), else 0."""
        return self._layout_used("scatter", profile, 0.0)

    def spread_used(self, profile: Any) -> tuple[float, str]:
        """The spread the model prices this image at and where it came from: the config's own, else the profile's
        `fresh_image_spread` at this image's size (what calibrate's freshly touched images had), else 1."""
        return self._layout_used("spread", profile, 1.0)

    def _layout_used(self, key: str, profile: Any, default: float) -> tuple[float, str]:
        stated = getattr(self, key)
        if stated is not None:
            return stated, "config"
        fresh = getattr(profile, f"fresh_image_{key}", None)
        if fresh is None:
            return default, "default (neither the config nor the profile states it)"
        if fresh.by_size:
            return round(fresh.at(self.rss // 4096), 4), f"profile fresh_image_{key} at this image's size"
        return fresh.value, f"profile fresh_image_{key}"

    @property
    def anon_vma_count(self) -> int:
        if self.anon_vmas is not None:
            return self.anon_vmas
        return max(1, self.vmas // 2) if self.rss > 0 else 0


class ChildSection(_Section):
    """[workload.child]: what each creation makes and what the child does."""

    clone: Literal[CLONE_KINDS] = clone_flags.DEFAULT_KIND  # type: ignore[valid-type] - the kinds: kernel/flags.py
    lifetime: Micros = Field(default=0.0, description="child's CPU time before it exits (exec kinds: before exec)")
    exec_lifetime: Micros = Field(default=0.0, description="CPU time of the exec'd program before it exits")
    cow_write_fraction: float = Field(default=0.0, ge=0.0, le=1.0)
    cow_writer: Literal["child", "parent"] = "child"
    flags: list[str] = Field(
        default_factory=list,
        description="clone flags beyond the kind's preset: " + ", ".join(clone_flags.USER_FLAGS),
    )
    unshare: list[str] = Field(
        default_factory=list,
        description="the child first calls unshare(2) with these flags (as unshare(1), runc and systemd's "
        "PrivateNetwork= do; it creates no task): " + ", ".join(clone_flags.UNSHARE_FLAGS),
    )

    @field_validator("flags", "unshare")
    @classmethod
    def _flags(cls, v: list[str], info: ValidationInfo) -> list[str]:
        # what copy_process (flags) or ksys_unshare (unshare) refuses for this kind, in the kernel's words
        check, order = ((clone_flags.check, clone_flags.USER_FLAGS) if info.field_name == "flags"
                        else (clone_flags.check_unshare, clone_flags.UNSHARE_FLAGS))
        why = check(info.data.get("clone", clone_flags.DEFAULT_KIND), v)
        if why:
            raise ValueError(why)
        return sorted(set(v), key=order.index)


class BurstSection(_Section):
    """[workload.bursts]: `arrivals = "bursty"`: deterministic bursts of requests."""

    size: int = Field(default=20, ge=1, le=1_000_000, description="requests per burst (default 20)")
    interval: Micros = Field(default=100e3, gt=0, description="time from one burst to the next (default 100ms)")
    spread: Micros = Field(
        default=0.0, description="the burst's requests arrive evenly over this time (default 0: all at once)"
    )
    offset: Micros = Field(default=0.0, description="time of the first burst (default 0)")

    @model_validator(mode="after")
    def _check(self) -> "BurstSection":
        if self.spread >= self.interval:
            raise ValueError("spread must be shorter than interval")
        return self


class ServerSection(_Section):
    """[workload.server]: `kind = "server"`: a single-threaded server (Redis-like) that serves an open
    request stream (`workload.rate`, `workload.arrivals`) and forks a snapshot child (BGSAVE) every
    `interval`; the child runs `workload.child.lifetime` (the snapshot's write time) and exits."""

    service: Micros = Field(default=20.0, gt=0, description="mean CPU time per request (default 20us)")
    service_distribution: Literal["exponential", "deterministic"] = Field(
        default="exponential", description="distribution of the per-request CPU time (default exponential)"
    )
    interval: Micros = Field(default=1e6, gt=0, description="time between snapshot forks (default 1s)")
    first_snapshot: Micros | None = Field(
        default=None, description="time of the first snapshot fork (default: experiment.warmup + interval/2)"
    )
    cron: Micros = Field(
        default=100e3, gt=0,
        description="the server checks for a due snapshot and reaps an exited child (WNOHANG) this often "
        "(default 100ms: Redis hz=10)",
    )
    writes_per_request: float = Field(
        default=2.0, ge=0.0,
        description="4 KiB dataset pages each request writes, at random (default 2); a write to a page still "
        "write-protected since the fork faults: a copy while the snapshot child maps it, a reuse after",
    )


class WorkloadSection(_Section):
    """[workload]: who creates, how often."""

    kind: Literal["closed", "open", "server"] = "closed"
    parents: int = Field(default=1, ge=1, le=100_000)
    think_time: Micros = 0.0
    parent_work: Micros = Field(
        default=0.0,
        description="CPU time each parent runs after each reap, before its think time and its next creation (its "
        "own work between creations: a shell reading the next command, a master's bookkeeping, a service handling "
        "the next request); its CPU stays busy meanwhile, unlike think_time's sleep (default 0)",
    )
    rate: PerSecond | None = None
    arrivals: str = Field(
        default="poisson", description="poisson | deterministic | bursty ([workload.bursts]) | path to a file of arrival times"
    )
    max_queue: int = Field(default=100_000, ge=1, le=MAX_QUEUE,
                           description="open workload: refuse to queue more requests")
    arrival_wakeup: Literal["event", "timer"] = Field(
        default="event",
        description="open workload: how an idle parent learns of an arrival: 'event' (woken at once, as a server by "
        "its socket) or 'timer' (it sleeps in clock_nanosleep until the arrival's time, as the validation's load "
        "generator does: woken the profile's scheduler.timer_slack later)",
    )
    queue: Literal["shared", "per_parent"] = Field(
        default="shared",
        description="open workload: one queue served by every parent, or per_parent: each parent its own "
        "arrival stream at rate/parents and its own queue (a pre-forked server per core, say)",
    )
    live_children: int = Field(
        default=0, ge=0, le=MAX_LIVE_CHILDREN,
        description="other children each parent keeps alive (a prefork master's workers; default 0)",
    )
    wait: Literal["pid", "any"] = Field(
        default="pid",
        description="how the parent reaps: 'pid' (waitpid(pid): do_wait_pid looks the child up, the default, "
        "as forksim's closed loop and the validation's loadgen do) or 'any' (waitpid(-1)/wait(): do_wait walks "
        "the parent's whole children list, as shells and prefork masters do)",
    )
    other_work: Bytes = Field(
        default=0,
        description="closed: bytes of its own memory another process touches on the parent's CPU in each think "
        "time, just before the next fork (a co-runner sweeping its working set): a task of its own that the parent "
        "wakes and waits on, running think_time of CPU work on the parent's CPU (so the scheduler decides whether "
        "the next fork's child runs before fork() returns); the bytes count against the warmth of the parent's "
        "image (profile `warmth`) (default 0)",
    )
    pin: bool = Field(
        default=False,
        description="pin parent i (and its threads) to CPU i % cpus, as taskset does; its children inherit the "
        "pin and never leave that CPU (default false: the scheduler places every task)",
    )
    image: ImageSection = ImageSection()
    child: ChildSection = ChildSection()
    bursts: BurstSection = BurstSection()
    server: ServerSection = ServerSection()

    @model_validator(mode="after")
    def _check(self) -> "WorkloadSection":
        if self.kind == "open" and self.rate is None and self.arrivals in ("poisson", "deterministic"):
            raise ValueError("an open workload needs `rate` (e.g. rate = \"2000/s\") or an arrivals file")
        if self.other_work and (self.kind != "closed" or self.think_time <= 0):
            raise ValueError("workload.other_work runs in a closed workload's think time: set kind = \"closed\" "
                             "and workload.think_time to the gap between a reap and the next fork")
        if self.kind == "server":
            if self.rate is None and self.arrivals in ("poisson", "deterministic"):
                raise ValueError("a server workload needs the request `rate` (e.g. rate = \"20000/s\") or an arrivals file")
            if self.parent_work:
                raise ValueError("a server workload states its own work per request (workload.server.service), "
                                 "not workload.parent_work")
            if self.image.threads != 1:
                raise ValueError("a server workload models a single-threaded server: workload.image.threads must be 1")
            if self.image.write_fraction:
                raise ValueError("a server writes its dataset per request: set workload.server.writes_per_request, "
                                 "not workload.image.write_fraction")
            if self.child.clone not in _SNAPSHOT_KINDS:
                need = " or ".join(f'"{k}"' for k in _SNAPSHOT_KINDS)
                raise ValueError(f"a server workload snapshots with fork: workload.child.clone must be {need}")
        return self


class BackgroundSection(_Section):
    """[background]: load that competes with the creations."""

    cpu_hogs: int = Field(default=0, ge=0, le=100_000)
    hog_duty: float = Field(default=1.0, gt=0.0, le=1.0,
                            description="share of each hog_period a hog spins (wall clock); it sleeps the rest (default 1: always)")
    hog_period: Micros = Field(default=10_000.0, gt=0, description="a duty-cycled hog's period (default 10ms)")


class Experiment(_Section):
    """A validated, frozen experiment: what `run()` consumes."""

    experiment: ExperimentSection = ExperimentSection()
    # built per experiment, not once at import: its profile 'auto' resolves against the profile store as it
    # is when the config is read (a profile calibrated since the import, or a test's own store)
    machine: MachineSection = Field(default_factory=MachineSection)
    workload: WorkloadSection = WorkloadSection()
    background: BackgroundSection = BackgroundSection()
    whatif: dict[str, float] = Field(
        default_factory=dict,
        description="profile modifiers: 'stage.term' = factor, e.g. 'dup_mmap.per_pte_us' = 0.05",
    )
    sweep: dict[str, list[Any]] = Field(default_factory=dict)
    source: str | None = Field(default=None, exclude=True)

    @field_validator("whatif")
    @classmethod
    def _whatif(cls, mods: dict[str, float]) -> dict[str, float]:
        from .profile import STAGES, TERMS

        for key, factor in mods.items():
            stage, _, term = key.partition(".")
            if stage not in STAGES:
                close = difflib.get_close_matches(stage, list(STAGES), n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise ValueError(f"whatif.{key}: unknown stage {stage!r}{hint} (a what-if is 'stage.term' = factor)")
            if term not in TERMS:
                close = difflib.get_close_matches(term, TERMS, n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                raise ValueError(f"whatif.{key}: unknown cost term {term!r} ({hint}terms: {', '.join(TERMS)})")
            if factor < 0:
                raise ValueError(f"whatif.{key}: a what-if factor must be a non-negative number (got {factor!r})")
        return mods

    def with_overrides(self, overrides: dict[str, Any], *, resolved: bool = False) -> "Experiment":
        """A copy with dotted keys set. Values are written as in a config ("256MiB", "2ms", "5000/s");
        `resolved=True`: they are already in the model's units (bytes, microseconds, per second), as
        `config_value` returns them."""
        from .config import parse_config
        from .config_keys import experiment_to_toml_dict
        from .config_overrides import apply_overrides

        data = apply_overrides(experiment_to_toml_dict(self), overrides, source=self.source, resolved=resolved)
        return parse_config(data, source=self.source, resolved=True)
