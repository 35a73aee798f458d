"""Quantities with units: sizes, durations and rates as users write them in configs and flags.

Internally forksim keeps sizes in bytes, times in microseconds (float) and rates per second. A
number without a unit (`2`, `"256"`) is refused: is `duration = 2` two seconds or two microseconds?
Zero needs no unit. Values forksim has already resolved (a config it wrote, a caller passing the
model's units on purpose) are read with `bare_ok=True`: a bare number is then bytes, microseconds or
per second.
"""

from __future__ import annotations

import math
import re

__all__ = ["parse_size", "parse_time_us", "parse_rate", "format_size", "format_time_us", "format_rate",
           "bare_number_error"]

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3, "t": 1000**4, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
_TIME_UNITS = {"ns": 1e-3, "us": 1.0, "µs": 1.0, "ms": 1e3, "s": 1e6, "min": 60e6, "h": 3600e6}
_NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"  # a sign is read, so "-5s" says negative


class UnitError(ValueError):
    """A quantity that does not parse; the message says what is allowed."""


def _float(value: int | float | str, what: str, given: object = None) -> float:
    """A finite float (a number too large for a float, inf and nan are refused)."""
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        text = repr(value if given is None else given)
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise UnitError(f"{shown} is not a finite {what}")
    return number


def _split(text: str, what: str, examples: str) -> tuple[float, str]:
    m = re.fullmatch(_NUMBER + r"\s*([a-zA-Zµ/]*)", text.strip())
    if not m:
        raise UnitError(f"{text!r} is not a {what} (examples: {examples})")
    return _float(m.group(1), what), m.group(2)


# What to write instead of a bare number, with the number the user gave.
_BARE_HINTS = {
    "size": ('"{n}MiB" or "{n}KiB"', "B, KiB, MiB, GiB, TiB, kB, MB, GB"),
    "duration": ('"{n}s" or "{n}ms"', "ns, us, ms, s, min, h"),
    "rate": ('"{n}/s"', "/s, /ms, /us, /min"),
}


def bare_number_error(value: object, what: str) -> UnitError:
    """The error for a quantity given without its unit: it names the number and the units allowed."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = int(value)
    shown = str(value).strip()
    example, units = _BARE_HINTS[what]
    return UnitError(f"{shown} has no unit: write {example.format(n=shown)} (a {what} takes one of {units})")


def _bare(value: object) -> float | None:
    """The number of a value written without a unit (5, 2.5, "5"), or None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and re.fullmatch(_NUMBER, value.strip()):
        return float(value)
    return None


def _check_bare(value: object, what: str, bare_ok: bool) -> None:
    n = _bare(value)
    if n is not None and n != 0 and math.isfinite(n) and not bare_ok:
        raise bare_number_error(value, what)


def parse_size(value: str | int | float, *, bare_ok: bool = False) -> int:
    """'256MiB', '1GiB', '4096B' -> bytes. A number without a unit is refused (0 aside), unless
    `bare_ok`: then it is bytes."""
    if isinstance(value, bool):
        raise UnitError(f"{value!r} is not a size (examples: 256MiB, 1GiB, 4096B)")
    _check_bare(value, "size", bare_ok)
    if isinstance(value, (int, float)):
        number, unit = _float(value, "size"), ""
    else:
        number, unit = _split(value, "size", "256MiB, 1GiB, 4096B")
    factor = _SIZE_UNITS.get(unit.lower())
    if factor is None:
        raise UnitError(f"unknown size unit {unit!r} in {value!r} (use B, KiB, MiB, GiB, TiB, kB, MB, GB)")
    if number < 0:
        raise UnitError(f"size {value!r} is negative")
    return int(round(_float(number * factor, "size", value)))


def parse_time_us(value: str | int | float, *, bare_ok: bool = False) -> float:
    """'250us', '2ms', '10s' -> microseconds. A number without a unit is refused (0 aside), unless
    `bare_ok`: then it is microseconds."""
    if isinstance(value, bool):
        raise UnitError(f"{value!r} is not a duration (examples: 250us, 2ms, 10s)")
    _check_bare(value, "duration", bare_ok)
    if isinstance(value, (int, float)):
        number, unit = _float(value, "duration"), "us"
    else:
        number, unit = _split(value, "duration", "250us, 2ms, 10s")
        unit = unit or "us"
    factor = _TIME_UNITS.get(unit)
    if factor is None:
        raise UnitError(f"unknown time unit {unit!r} in {value!r} (use ns, us, ms, s, min, h)")
    if number < 0:
        raise UnitError(f"duration {value!r} is negative")
    return _float(number * factor, "duration", value)


def parse_rate(value: str | int | float, *, bare_ok: bool = False) -> float:
    """'5000/s', '2/ms', '300/min' -> events per second. A number without a unit is refused (0
    aside), unless `bare_ok`: then it is per second."""
    if isinstance(value, bool):
        raise UnitError(f"{value!r} is not a rate (examples: 5000/s, 2/ms)")
    _check_bare(value, "rate", bare_ok)
    if isinstance(value, (int, float)):
        number, per = _float(value, "rate"), "s"
    else:
        m = re.fullmatch(_NUMBER + r"\s*(?:/\s*([a-zµ]+))?", value.strip())
        if not m:
            raise UnitError(f"{value!r} is not a rate (examples: 5000/s, 2/ms, 300/min)")
        number, per = _float(m.group(1), "rate"), m.group(2) or "s"
    factor = _TIME_UNITS.get(per)
    if factor is None:
        raise UnitError(f"unknown rate unit '/{per}' in {value!r} (use /s, /ms, /us, /min)")
    if number < 0:
        raise UnitError(f"rate {value!r} is negative")
    return _float(number / factor * 1e6, "rate", value)


def format_size(nbytes: float) -> str:
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if nbytes >= factor:
            return f"{nbytes / factor:g}{unit}"
    return f"{int(nbytes)}B"


def format_time_us(us: float) -> str:
    if us >= 1e6:
        return f"{us / 1e6:g}s"
    if us >= 1e3:
        return f"{us / 1e3:g}ms"
    return f"{us:g}us"


def format_rate(per_s: float) -> str:
    return f"{per_s:g}/s"
