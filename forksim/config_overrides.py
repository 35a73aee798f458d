"""Overrides: `KEY=VALUE` texts (`--set`), dotted keys set into a config mapping, and a `[sweep]`
axis's value as the overrides it stands for. Values are checked against the schema as they are set:
an unknown key or section, and a time, size or rate without its unit, are refused naming the key.
"""

from __future__ import annotations

import copy
import difflib
import tomllib
from typing import Any

from pydantic import BaseModel, ValidationError

from .config_keys import OVERRIDE_SOURCE, _field_names, _format_validation, _model_at, _require_unit
from .config_sections import Experiment
from .errors import ConfigError

__all__ = ["parse_override", "apply_overrides", "sweep_overrides"]


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


def parse_override(text: str) -> tuple[str, Any]:
    """'workload.parents=8' -> ('workload.parents', 8); the value is read as TOML when it can be."""
    if "=" not in text:
        raise ConfigError(f"an override must look like KEY=VALUE, got {text!r}", source=OVERRIDE_SOURCE)
    key, raw = (s.strip() for s in text.split("=", 1))
    if not key:
        raise ConfigError(f"an override needs a key before '=', got {text!r}", source=OVERRIDE_SOURCE)
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
                raise ConfigError("is not a section", source=source or OVERRIDE_SOURCE, field="whatif")
            out["whatif"][".".join(parts[1:])] = value
            continue
        model: type[BaseModel] | None = Experiment
        node = out
        for depth, part in enumerate(parts):
            if model is not None and part not in _field_names(model):
                names = _field_names(model)
                close = difflib.get_close_matches(part, names, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise ConfigError(f"unknown key{hint}", source=source or OVERRIDE_SOURCE, field=key)
            if depth == len(parts) - 1:
                if not resolved:
                    _require_unit(key, value, source)
                node[part] = value
            else:
                node = node.setdefault(part, {})
                section = ".".join(parts[: depth + 1])
                if not isinstance(node, dict):
                    raise ConfigError("is not a section", source=source or OVERRIDE_SOURCE, field=section)
                model = _model_at(tuple(parts[: depth + 1]))
                if model is None:
                    raise ConfigError("is not a section", source=source or OVERRIDE_SOURCE, field=section)
    if validate:
        try:
            from .config import validate_resolved

            validate_resolved(out)
        except ValidationError as exc:
            raise _format_validation(exc, source) from None
    return out
