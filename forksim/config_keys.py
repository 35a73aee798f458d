"""Dotted config keys over the schema (`workload.image.rss`): which section a key names, its units
parser, its value in an `Experiment`, how a value is written back, and the one-line `ConfigError`
naming the key that a pydantic validation error becomes.
"""

from __future__ import annotations

import difflib
import typing
from typing import Annotated, Any, Callable

from pydantic import BaseModel, BeforeValidator, ValidationError

from .config_sections import Experiment
from .errors import ConfigError
from .units import UnitError, format_rate, format_size, format_time_us, parse_size, parse_time_us

__all__ = ["quantity_parser", "format_config_value", "experiment_to_toml_dict", "config_value", "OVERRIDE_SOURCE"]

# Where an error says an override came from when it names no file: the command line's `--set` (the
# one CLI name the library still writes; the CLI may map it).
OVERRIDE_SOURCE = "--set"


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
        raise ConfigError(str(exc), source=source or OVERRIDE_SOURCE, field=field or key) from None


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
