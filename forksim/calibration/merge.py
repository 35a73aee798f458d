"""Writing one calibration step's fit into an existing profile file: the caller edits the loaded profile (its
other numbers stay as they were written), this stamps what was merged, validates and writes it."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from ..io import write_text
from ..profile import Profile

__all__ = ["write_merged"]


def write_merged(path: str | Path, prof: dict[str, Any], key: str, entry: dict[str, Any]) -> None:
    """provenance[`key`] = `entry` (what was merged, from what, how) and the date; the profile validated, then
    written to `path`."""
    prof.setdefault("provenance", {})[key] = {
        **entry, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    Profile.model_validate(prof)
    write_text(Path(path), json.dumps(prof, indent=1) + "\n")
