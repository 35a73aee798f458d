"""Experiment configs: loading a TOML file, validating it into the frozen `Experiment`, and the
public names of the config's modules.

Every key has a default, so an empty file is a valid experiment. Quantities keep their units in
TOML ("256MiB", "2ms", "5000/s"); the validated `Experiment` holds plain numbers (bytes,
microseconds, per second) and is immutable, so one object flows from the config into the model.

A time, size or rate written as a bare number (`duration = 2`, `--set workload.image.rss=256`) is
refused: its unit is not known. Numbers already in the model's units come in only through named
doors: `parse_config(..., resolved=True)`, `Experiment.with_overrides(..., resolved=True)`, and a
config file that says `units = "model"` (the `config.resolved.toml` that `forksim run` writes).

The house: config_sections.py (the schema: sections, quantities, physical bounds), config_keys.py
(dotted keys: units, values, error messages naming a key), config_overrides.py (KEY=VALUE overrides
and sweep points); this module loads and validates, and re-exports all of them.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .config_keys import (  # noqa: F401 - re-exported (plan.py reads _model_at)
    _field_names,
    _format_validation,
    _model_at,
    _require_unit,
    config_value,
    experiment_to_toml_dict,
    format_config_value,
    quantity_parser,
)
from .config_overrides import apply_overrides, parse_override, sweep_overrides
from .config_sections import (  # noqa: F401 - re-exported
    CALLS,
    CLONE_KINDS,
    MAX_FDS,
    MAX_LIVE_CHILDREN,
    MAX_QUEUE,
    MAX_RSS_BYTES,
    MAX_VMAS,
    BackgroundSection,
    BurstSection,
    Bytes,
    ChildSection,
    Experiment,
    ExperimentSection,
    ImageSection,
    MachineSection,
    Micros,
    PerSecond,
    ServerSection,
    WorkloadSection,
)
from .errors import ConfigError

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
    "MAX_QUEUE",
    "MAX_RSS_BYTES",
    "MAX_VMAS",
    "Bytes",
    "Micros",
    "PerSecond",
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
