"""The user's profile store: profiles `forksim calibrate` measured on this account's hosts.

`forksim calibrate` without `--out` writes its profile to `$XDG_DATA_HOME/forksim/profiles/<host>.json`
(`~/.local/share/forksim/profiles` when XDG_DATA_HOME is unset or not absolute), named after the kind
of host (`HostFingerprint.slug`). A config that leaves `machine.profile` at `auto` (the default), and a
command without `--profile`, then use the newest stored profile whose host matches this one (see
`forksim.host.MATCHING_RULE`); with none, the shipped profile measured on this kind of host (`default` on
the AMD EPYC host, `intel-xeon-2cpu-linux6.18-kvm` on the Intel Xeon family 6 model 167 one,
`intel-xeon-family6-model207-2cpu-linux6.18-kvm` on the model 207 one, `amd-epyc-zen4-2cpu-linux6.18-kvm-haltpoll`
on the AMD EPYC family 25 model 17 host with haltpoll); with none of those either, the shipped `default`, and a
one-line warning that it describes another host.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from .host import HostFingerprint, this_host

__all__ = ["store_dir", "stored_profile_paths", "matching_stored", "matching_shipped", "auto_profile", "save_to_store",
           "OffHostProfileWarning", "warn_if_off_host", "AUTO", "PROFILE_ENV"]

AUTO = "auto"


class OffHostProfileWarning(UserWarning):
    """A profile measured on another kind of host than the one forksim runs on."""


def store_dir() -> Path:
    """$XDG_DATA_HOME/forksim/profiles, or ~/.local/share/forksim/profiles (XDG Base Directory spec:
    a relative XDG_DATA_HOME is ignored)."""
    base = os.environ.get("XDG_DATA_HOME", "")
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".local" / "share"
    return root / "forksim" / "profiles"


def stored_profile_paths() -> list[Path]:
    d = store_dir()
    return sorted(d.glob("*.json")) if d.is_dir() else []


def _host_and_date(path: Path) -> tuple[HostFingerprint | None, str]:
    """A stored file's host and calibration date, without validating the whole profile (a file
    that is not a profile, or is damaged, is skipped: it has no host)."""
    from .host import host_from_provenance

    try:
        data = json.loads(path.read_text())
        prov = data.get("provenance") or {}
        host = HostFingerprint.model_validate(data["host"]) if data.get("host") else host_from_provenance(prov)
        return host, str(prov.get("date") or "")
    except Exception:  # noqa: BLE001 - anything unreadable is not a candidate
        return None, ""


def matching_stored(host: HostFingerprint | None = None) -> Path | None:
    """The newest stored profile (by calibration date, then file time) measured on a host matching `host`
    (this one by default); None if none does."""
    paths = stored_profile_paths()
    if not paths:
        return None
    host = host or this_host()
    found: list[tuple[str, float, Path]] = []
    for p in paths:
        h, date = _host_and_date(p)
        if h is not None and h.matches(host):
            found.append((date, p.stat().st_mtime, p))
    return max(found)[2] if found else None


def matching_shipped(host: HostFingerprint | None = None) -> str | None:
    """The name of the shipped profile measured on a host matching `host` (this one by default):
    `default` when it matches, else the newest other; None if none does."""
    from .profile import shipped_profiles

    host = host or this_host()
    found: list[tuple[bool, str, str]] = []
    for name, p in shipped_profiles().items():
        h, date = _host_and_date(p)
        if h is not None and h.matches(host):
            found.append((name == "default", date, name))
    return max(found)[2] if found else None


# A profile name or file that `auto` means whatever the host: for runs whose figures must not depend on the
# machine they run on (the tests set it to `default`), or to pin one profile for a whole session.
PROFILE_ENV = "FORKSIM_PROFILE"


def auto_profile() -> str:
    """What `machine.profile = "auto"` means on this host: $FORKSIM_PROFILE where set, else the matching
    stored profile's path, else the matching shipped profile's name, else the shipped `default`."""
    pinned = os.environ.get(PROFILE_ENV, "").strip()
    if pinned:
        return pinned
    path = matching_stored()
    return str(path) if path is not None else matching_shipped() or "default"


def save_to_store(profile: dict[str, Any], host: HostFingerprint) -> Path:
    """Write a calibrated profile into the store as <host slug>.json (a newer calibration of the
    same kind of host replaces it) and return its path."""
    d = store_dir()
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{host.slug()}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(profile, indent=1) + "\n")
    tmp.replace(path)
    return path


_warned: set[str] = set()


def warn_if_off_host(profile: Any) -> str | None:
    """Warn once per profile and process (OffHostProfileWarning) when `profile` was measured on a
    host that does not match this one; return the message (None when it matches, or when the
    profile was not measured on a host, such as `published`)."""
    host = profile.fingerprint()
    if host is None:
        return None
    here = this_host()
    if host.matches(here):
        return None
    msg = (f"profile '{profile.name}' was measured on {host.describe()}; this host is {here.describe()}: its "
           "predictions describe that host, not this one (`forksim calibrate --quick` measures this one in "
           "about a minute and is then used by default)")
    if msg not in _warned:
        _warned.add(msg)
        warnings.warn(msg, OffHostProfileWarning, stacklevel=2)
    return msg
