"""The errors forksim reports to users: each names where the problem is and what is allowed."""

from __future__ import annotations

__all__ = ["ForksimError", "ConfigError", "ProfileError", "MeasurementError", "SweepError", "UnstableError"]


class ForksimError(Exception):
    """Base of every error forksim reports as a one-line message (exit status 2 in the CLI)."""


class ConfigError(ForksimError):
    """An experiment config, an override or a flag is invalid."""

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None):
        self.source = source
        self.field = field
        # a key or path with a newline or control character stays on the one line of the message
        where = ": ".join(p if p.isprintable() else repr(p)[1:-1] for p in (source, field) if p)
        super().__init__(f"{where}: {message}" if where else message)


class ProfileError(ConfigError):
    """A profile file is missing, malformed or inconsistent."""


class MeasurementError(ForksimError):
    """A real-kernel measurement could not be made (missing privilege, compiler, memory)."""


class SweepError(ForksimError):
    """A sweep that produced no answer: its worker processes died, or every point failed. (One
    failing point is recorded in the table; this is the sweep itself failing.)"""


class UnstableError(ForksimError):
    """An open or server workload's queue grew past its bound (workload.max_queue): the offered rate
    exceeds what the machine serves. Raised while simulating, or before running when the rate is far
    beyond the capacity estimate (work.check_work)."""
