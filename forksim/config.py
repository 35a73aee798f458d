"""Experiment configs: the TOML schema, units, `--set` overrides, and the frozen `Experiment`.

Every key has a default, so an empty file is a valid experiment. Quantities keep their units in
TOML ("256MiB", "2ms", "5000/s"); the validated `Experiment` holds plain numbers (bytes,
microseconds, per second) and is immutable, so one object flows from the config into the model.

A time, size or rate written as a bare number (`duration = 2`, `--set workload.image.rss=256`) is
refused: its unit is not known. Numbers already in the model's units come in only through named
doors: `parse_config(..., resolved=True)`, `Experiment.with_overrides(..., resolved=True)`, and a
config file that says `units = "model"` (the `config.resolved.toml` that `forksim run` writes).
"""

from __future__ import annotations

import copy
import difflib
import re
import tomllib
import typing
from pathlib import Path
from typing import Annotated, Any, Callable, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .errors import ConfigError
from .kernel import flags as clone_flags
from .units import UnitError, format_rate, format_size, format_time_us, parse_rate, parse_size, parse_time_us

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
    "format_config_value",
    "load_config",
    "load_experiment",
    "parse_config",
    "apply_overrides",
    "parse_override",
    "sweep_overrides",
    "experiment_to_toml_dict",
    "config_value",
    "quantity_parser",
    "validate_resolved",
]

CLONE_KINDS = tuple(clone_flags.KINDS)  # the kinds' table: forksim/kernel/flags.py
CALLS = {name: kind.call for name, kind in clone_flags.KINDS.items()}  # the call each kind makes
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
    fds: int = Field(default=3, ge=0, le=MAX_FDS,
                     description="open file descriptors: copy_files -> dup_fd copies them, exit closes them "
                     "(default 3: stdin, stdout, stderr; at most fs.nr_open's default 1048576)")

    @field_validator("rss")
    @classmethod
    def _rss(cls, v: int) -> int:
        if v > MAX_RSS_BYTES:
            raise ValueError(_RSS_REASON)
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

    @property
    def anon_vma_count(self) -> int:
        if self.anon_vmas is not None:
            return self.anon_vmas
        return max(1, self.vmas // 2) if self.rss > 0 else 0


class ChildSection(_Section):
    """[workload.child]: what each creation makes and what the child does."""

    clone: Literal["fork", "vfork", "posix_spawn", "fork_exec", "thread"] = "fork"
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

    @field_validator("flags")
    @classmethod
    def _flags(cls, v: list[str], info: ValidationInfo) -> list[str]:
        why = clone_flags.check(info.data.get("clone", "fork"), v)
        if why:
            raise ValueError(why)
        return sorted(set(v), key=clone_flags.USER_FLAGS.index)

    @field_validator("unshare")
    @classmethod
    def _unshare(cls, v: list[str], info: ValidationInfo) -> list[str]:
        why = clone_flags.check_unshare(info.data.get("clone", "fork"), v)
        if why:
            raise ValueError(why)
        return sorted(set(v), key=clone_flags.UNSHARE_FLAGS.index)


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
    rate: PerSecond | None = None
    arrivals: str = Field(
        default="poisson", description="poisson | deterministic | bursty ([workload.bursts]) | path to a file of arrival times"
    )
    max_queue: int = Field(default=100_000, ge=1, le=MAX_QUEUE,
                           description="open workload: refuse to queue more requests")
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
    image: ImageSection = ImageSection()
    child: ChildSection = ChildSection()
    bursts: BurstSection = BurstSection()
    server: ServerSection = ServerSection()

    @model_validator(mode="after")
    def _check(self) -> "WorkloadSection":
        if self.kind == "open" and self.rate is None and self.arrivals in ("poisson", "deterministic"):
            raise ValueError("an open workload needs `rate` (e.g. rate = \"2000/s\") or an arrivals file")
        if self.kind == "server":
            if self.rate is None and self.arrivals in ("poisson", "deterministic"):
                raise ValueError("a server workload needs the request `rate` (e.g. rate = \"20000/s\") or an arrivals file")
            if self.image.threads != 1:
                raise ValueError("a server workload models a single-threaded server: workload.image.threads must be 1")
            if self.child.clone != "fork":
                raise ValueError("a server workload snapshots with fork: workload.child.clone must be \"fork\"")
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
    machine: MachineSection = MachineSection()
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
        from .profile import _TERMS, STAGES

        for key, factor in mods.items():
            stage, _, term = key.partition(".")
            if stage not in STAGES:
                close = difflib.get_close_matches(stage, list(STAGES), n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise ValueError(f"whatif.{key}: unknown stage {stage!r}{hint} (a what-if is 'stage.term' = factor)")
            if term not in _TERMS:
                close = difflib.get_close_matches(term, _TERMS, n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                raise ValueError(f"whatif.{key}: unknown cost term {term!r} ({hint}terms: {', '.join(_TERMS)})")
            if factor < 0:
                raise ValueError(f"whatif.{key}: a what-if factor must be a non-negative number (got {factor!r})")
        return mods

    def with_overrides(self, overrides: dict[str, Any], *, resolved: bool = False) -> "Experiment":
        """A copy with dotted keys set. Values are written as in a config ("256MiB", "2ms", "5000/s");
        `resolved=True`: they are already in the model's units (bytes, microseconds, per second), as
        `config_value` returns them."""
        data = apply_overrides(experiment_to_toml_dict(self), overrides, source=self.source, resolved=resolved)
        return parse_config(data, source=self.source, resolved=True)


# ------------------------------------------------------------------ loading and errors


def _field_names(model: type[BaseModel]) -> list[str]:
    return [n for n in model.model_fields if n != "source"]


def _model_at(path: tuple) -> type[BaseModel] | None:
    model: type[BaseModel] | None = Experiment
    for part in path:
        if model is None:
            return None
        info = model.model_fields.get(part)
        if info is None:
            return None
        ann = info.annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    return model


def _clean_loc(loc: tuple) -> tuple:
    """The config path of an error: fields down to the leaf, plus a dict key (whatif, sweep); pydantic's
    union-member tags ('float', "literal['uniform']") and list indexes are dropped."""
    model: type[BaseModel] | None = Experiment
    out: list = []
    parts = [p for p in loc if not isinstance(p, int)]
    while parts:
        part = parts.pop(0)
        out.append(part)
        info = model.model_fields.get(part) if model is not None else None
        if info is None:
            break
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
            continue
        if typing.get_origin(ann) is dict and parts:
            out.append(parts.pop(0))
        break
    return tuple(out)


def _format_validation(exc: ValidationError, source: str | None) -> ConfigError:
    err = exc.errors()[0]
    loc = _clean_loc(tuple(err["loc"]))
    field = ".".join(str(p) for p in loc)
    if err["type"] == "extra_forbidden":
        parent = _model_at(loc[:-1])
        names = _field_names(parent) if parent else []
        close = difflib.get_close_matches(str(loc[-1]), names, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        allowed = f" (allowed: {', '.join(names)})" if names else ""
        return ConfigError(f"unknown key{hint}{allowed}", source=source, field=field)
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if field == "whatif" and msg.startswith("whatif."):  # the validator names the key
        field, _, msg = msg.partition(": ")
    given = err.get("input")
    if err["type"] not in ("missing",) and not isinstance(given, dict):
        shown = repr(given)
        if shown not in msg and "has no unit" not in msg:
            msg = f"{msg} (got {shown if len(shown) <= 60 else shown[:57] + '...'})"
    return ConfigError(msg, source=source, field=field or None)


def parse_config(data: dict[str, Any], *, source: str | None = None, resolved: bool = False) -> Experiment:
    """Validate a config mapping (as read from TOML) into an `Experiment`. Times, sizes and rates need
    their units; `resolved=True`: bare numbers are already in the model's units (microseconds,
    bytes, per second), as `experiment_to_toml_dict` writes them. The `[sweep]` lists always need
    units."""
    if not isinstance(data, dict):
        raise ConfigError("a config must be a table of sections", source=source)
    if "source" in data:  # set by the loader, not by the file
        raise ConfigError(f"unknown key (allowed: {', '.join(_field_names(Experiment))})", source=source,
                          field="source")
    try:
        exp = Experiment.model_validate(data, context={"resolved": resolved})
    except ValidationError as exc:
        raise _format_validation(exc, source) from None
    for key, values in exp.sweep.items():
        if not isinstance(values, list) or not values:
            raise ConfigError("a sweep key needs a non-empty list of values", source=source, field=f"sweep.{key}")
        # Every swept value must itself make a valid experiment. Linked keys "a,b" = [[a1, b1], ...]
        # move together (one axis of the grid).
        for value in values:
            overrides = sweep_overrides(key, value, source=source)
            for k, v in overrides.items():
                _require_unit(k, v, source, f"sweep.{key}")
            apply_overrides(experiment_to_toml_dict(exp), overrides, source=source, validate=True, resolved=True)
    return exp.model_copy(update={"source": source})


def validate_resolved(data: dict[str, Any]) -> Experiment:
    """pydantic validation of a mapping whose bare numbers are in the model's units (errors as
    pydantic's ValidationError)."""
    data = {k: v for k, v in data.items() if k != "sweep"}
    return Experiment.model_validate(data, context={"resolved": True})


def quantity_parser(key: str) -> Callable[..., Any] | None:
    """The units parser of a dotted key (parse_time_us, parse_size, parse_rate), None for other keys."""
    parts = key.split(".")
    model = _model_at(tuple(parts[:-1]))
    info = model.model_fields.get(parts[-1]) if model is not None else None
    if info is None:
        return None
    found = [m for m in info.metadata if isinstance(m, BeforeValidator)]
    for arg in typing.get_args(info.annotation):  # an optional quantity: Micros | None
        if typing.get_origin(arg) is Annotated:
            found += [m for m in arg.__metadata__ if isinstance(m, BeforeValidator)]
    for m in found:
        parser = getattr(m.func, "parser", None)
        if parser is not None:
            return parser
    return None


def format_config_value(key: str, value: Any) -> str:
    """A key's value in the model's units as a user writes it: 64MiB, 2ms, 5000/s, 8."""
    parser = quantity_parser(key)
    if parser is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if parser is parse_size:
        return format_size(value)
    if parser is parse_time_us:
        return format_time_us(value)
    return format_rate(value)


def _require_unit(key: str, value: Any, source: str | None, field: str | None = None) -> None:
    """Refuse a time, size or rate override given as a bare number (it has no unit)."""
    parser = quantity_parser(key)
    if parser is None or isinstance(value, (bool, dict, list)) or value is None:
        return
    try:
        parser(value)
    except UnitError as exc:
        raise ConfigError(str(exc), source=source or "--set", field=field or key) from None


def sweep_overrides(key: str, value: Any, *, source: str | None = None) -> dict[str, Any]:
    """One value of a `[sweep]` axis as overrides: 'k' = v -> {k: v}; linked keys 'k1,k2' = [v1, v2]
    -> {k1: v1, k2: v2}."""
    keys = [k.strip() for k in key.split(",")]
    if len(keys) == 1:
        return {key: value}
    if not isinstance(value, list) or len(value) != len(keys):
        raise ConfigError(f"linked sweep keys need a list of {len(keys)} values per point (got {value!r})",
                          source=source, field=f"sweep.{key}")
    return dict(zip(keys, value))


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file into a mapping (no validation yet)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError("no such config file", source=str(path)) from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config: {exc.__class__.__name__}", source=str(path)) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", source=str(path)) from None
    except RecursionError:
        raise ConfigError("not valid TOML: nested too deeply", source=str(path)) from None


_ARRIVAL_KINDS = ("poisson", "deterministic", "bursty")


def _relative_to(base: Path, data: dict[str, Any]) -> dict[str, Any]:
    """File paths written in a config (an arrivals file, a profile file) are read from the config's
    folder when they name a file there, as a user who keeps them side by side expects."""
    for section, key, keep in (("workload", "arrivals", _ARRIVAL_KINDS), ("machine", "profile", ())):
        table = data.get(section)
        value = table.get(key) if isinstance(table, dict) else None
        if isinstance(value, str) and value not in keep and not Path(value).is_absolute():
            candidate = base / value
            if candidate.is_file() and not Path(value).is_file():
                table[key] = str(candidate)
    return data


def load_experiment(path: str | Path, overrides: dict[str, Any] | None = None) -> Experiment:
    """Load, override and validate a config file. A file that opens with `units = "model"` (as
    `config.resolved.toml` does) holds bare numbers in the model's units; `overrides` need units."""
    data = _relative_to(Path(path).parent, load_config(path))
    resolved = False
    if "units" in data:
        if data["units"] != "model":
            raise ConfigError(f'the only value is "model": bare numbers are microseconds, bytes and per second '
                              f"(got {data['units']!r})", source=str(path), field="units")
        resolved = bool(data.pop("units"))
    if overrides:
        data = apply_overrides(data, overrides, source=str(path))
    return parse_config(data, source=str(path), resolved=resolved)


def parse_override(text: str) -> tuple[str, Any]:
    """'workload.parents=8' -> ('workload.parents', 8); the value is read as TOML when it can be."""
    if "=" not in text:
        raise ConfigError(f"an override must look like KEY=VALUE, got {text!r}", source="--set")
    key, raw = (s.strip() for s in text.split("=", 1))
    if not key:
        raise ConfigError(f"an override needs a key before '=', got {text!r}", source="--set")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word or a quantity such as 256MiB
    return key, value


def apply_overrides(
    data: dict[str, Any], overrides: dict[str, Any], *, source: str | None = None, validate: bool = False,
    resolved: bool = False,
) -> dict[str, Any]:
    """Return a copy of `data` with dotted keys set; unknown sections and keys are reported, and so is
    a time, size or rate without its unit (unless `resolved`: values in the model's units).
    `validate`: check the result, reading `data`'s bare numbers in the model's units."""
    out = copy.deepcopy(data)
    for key, value in overrides.items():
        parts = key.split(".")
        if parts[0] == "whatif" and len(parts) > 1:
            if not isinstance(out.setdefault("whatif", {}), dict):
                raise ConfigError("is not a section", source=source or "--set", field="whatif")
            out["whatif"][".".join(parts[1:])] = value
            continue
        model: type[BaseModel] | None = Experiment
        node = out
        for depth, part in enumerate(parts):
            if model is not None and part not in _field_names(model):
                names = _field_names(model)
                close = difflib.get_close_matches(part, names, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise ConfigError(f"unknown key{hint}", source=source or "--set", field=key)
            if depth == len(parts) - 1:
                if not resolved:
                    _require_unit(key, value, source)
                node[part] = value
            else:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise ConfigError("is not a section", source=source or "--set", field=".".join(parts[: depth + 1]))
                model = _model_at(tuple(parts[: depth + 1]))
                if model is None:
                    raise ConfigError("is not a section", source=source or "--set", field=".".join(parts[: depth + 1]))
    if validate:
        try:
            validate_resolved(out)
        except ValidationError as exc:
            raise _format_validation(exc, source) from None
    return out


def experiment_to_toml_dict(exp: Experiment) -> dict[str, Any]:
    """The experiment as a TOML-ready mapping, with quantities in the model's units (us, bytes, /s)."""
    data = exp.model_dump(mode="json", exclude_none=True)
    return data


def config_value(exp: Experiment, key: str, default: Any = None) -> Any:
    """The value a dotted key has in `exp`, in the model's units (`default` if it is not set)."""
    if key.startswith("whatif."):
        return exp.whatif.get(key[len("whatif."):], default)
    node: Any = experiment_to_toml_dict(exp)
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node
