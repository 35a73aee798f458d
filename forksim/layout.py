"""The run and sweep folders: the one place their file names are spelled, and where they are written
and read. Every results folder holds the resolved config and the profile as used beside its results.

A run folder (`forksim run --out DIR`, `RunResult.write`):

- `summary.json`: the summary (schema: forksim.summary);
- `forks.parquet` (or `.csv`): one row per creation, with the config, profile and seed as parquet
  key-value metadata (`RunResult.metadata`);
- `requests.parquet` (or `.csv`): a server workload's requests after the warm-up;
- `config.resolved.toml`: the fully resolved experiment (`units = "model"`: `forksim run` reads it back);
- `profile.json`: the profile as the run used it (what-ifs applied; `load_profile` reads it).

A sweep folder (`forksim sweep --out DIR`):

- `sweep.json`: the grid (point ids and overrides) and how the sweep was run;
- `results.parquet` (or `.csv`): one row per point x replication;
- `config.resolved.toml`: the experiment before the grid (with its `[sweep]` table);
- `points/<point-id>/`: a point folder: `summary.json`, `config.resolved.toml`, `profile.json`, and
  `result.json` (the point's table rows; written last, it marks the point finished).

Every file is written atomically (forksim.io), so a reader or a resumed sweep never sees half a file.
`read_run` and `read_sweep` read the folders back (`forksim report`, notebooks), and also folders made
by hand (a sweep's points named `key=value`); a folder they cannot read is a `FolderError`.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import tomli_w

from .errors import ForksimError
from .io import read_table, write_json, write_table, write_text
from .summary import summary_row

if TYPE_CHECKING:
    from .config import Experiment
    from .profile import Profile
    from .runner import RunResult

__all__ = [
    "SUMMARY", "RECORDS", "REQUESTS", "CONFIG", "PROFILE", "MANIFEST", "SWEEP_TABLE", "POINTS", "POINT_RESULT",
    "FORMATS", "config_toml", "profile_json", "table_path", "is_run_dir", "is_sweep_dir", "write_run",
    "write_provenance", "point_dir", "write_point", "read_point_rows", "read_point_summary", "write_manifest",
    "read_manifest", "write_sweep_table", "read_run", "read_requests", "read_sweep", "points_frame", "dotted_get",
    "FolderError",
]

SUMMARY = "summary.json"
RECORDS = "forks"  # the records table's stem: forks.parquet or forks.csv
REQUESTS = "requests"
CONFIG = "config.resolved.toml"
PROFILE = "profile.json"
MANIFEST = "sweep.json"
SWEEP_TABLE = "results"  # results.parquet or results.csv
POINTS = "points"
POINT_RESULT = "result.json"
FORMATS = ("parquet", "csv")
_SECTIONS = ("experiment.", "machine.", "workload.", "background.", "whatif.")  # a config key's first part


class FolderError(ForksimError):
    """The directory is not a run or sweep directory, or its files cannot be read."""


# ------------------------------------------------------------------ what travels with every result


def config_toml(exp: Experiment) -> str:
    """The fully resolved experiment as TOML (config.resolved.toml)."""
    from .config import experiment_to_toml_dict

    return ("# The fully resolved experiment: times in microseconds, sizes in bytes, rates per second\n"
            "# (units = \"model\": forksim reads its bare numbers so).\n"
            + tomli_w.dumps({"units": "model", **experiment_to_toml_dict(exp)}))


def profile_json(profile: Profile) -> str:
    """The profile as used (what-ifs applied), as `load_profile` reads it back (profile.json)."""
    return profile.model_dump_json(indent=1) + "\n"


def write_provenance(directory: str | Path, exp: Experiment, profile: Profile | None) -> None:
    """config.resolved.toml and (when there is one) profile.json into `directory`."""
    d = Path(directory)
    write_text(d / CONFIG, config_toml(exp))
    if profile is not None:
        write_text(d / PROFILE, profile_json(profile))


# ------------------------------------------------------------------ reading

def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise FolderError(f"{path}: cannot read: {exc.__class__.__name__}") from None
    except json.JSONDecodeError as exc:
        raise FolderError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise FolderError(f"{path}: not a summary (expected a JSON object)")
    return data


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise FolderError(f"{path}: cannot read the config: {exc}") from None


def dotted_get(d: dict[str, Any], dotted: str) -> Any:
    """d["a"]["b"] for "a.b" (None where a part is missing)."""
    cur: Any = d
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


# ------------------------------------------------------------------ run folders


def table_path(directory: str | Path, stem: str) -> Path | None:
    """`stem`.parquet or `stem`.csv in `directory`, whichever exists (parquet first)."""
    for ext in FORMATS:
        p = Path(directory) / f"{stem}.{ext}"
        if p.exists():
            return p
    return None


def is_run_dir(directory: str | Path) -> bool:
    return (Path(directory) / SUMMARY).is_file() and table_path(directory, RECORDS) is not None


def is_sweep_dir(directory: str | Path) -> bool:
    return (Path(directory) / POINTS).is_dir() or table_path(directory, SWEEP_TABLE) is not None


def write_run(directory: str | Path, result: RunResult, format: str = "parquet") -> Path:
    """A run folder: the records (and a server's requests) with their metadata, the resolved config,
    the profile, then summary.json (last: a folder with a summary is complete)."""
    d = Path(directory)
    meta = result.metadata()
    write_table(d / f"{RECORDS}.{format}", result.records, metadata=meta)
    if result.requests is not None:  # server workloads: every request after the warm-up
        write_table(d / f"{REQUESTS}.{format}", result.requests, metadata=meta)
    write_provenance(d, result.experiment, result.profile)
    write_json(d / SUMMARY, result.summary)
    return d


def read_requests(directory: str | Path) -> pd.DataFrame | None:
    """A server run's per-request table (requests.parquet or .csv), or None where there is none."""
    table = table_path(Path(directory), REQUESTS)
    if table is None:
        return None
    try:
        return read_table(table)
    except Exception as exc:
        raise FolderError(f"{table}: cannot read the requests: {exc.__class__.__name__}: {exc}") from None


def read_run(directory: str | Path) -> tuple[dict[str, Any], pd.DataFrame, dict[str, Any]]:
    """summary.json, the per-creation records and the resolved config of a run directory."""
    d = Path(directory)
    if not is_run_dir(d):
        raise FolderError(f"{d}: not a run directory (needs {SUMMARY} and {RECORDS}.parquet or {RECORDS}.csv)")
    summary = _read_json(d / SUMMARY)
    table = table_path(d, RECORDS)
    try:
        records = read_table(table)
    except Exception as exc:  # pyarrow / pandas errors of many kinds
        raise FolderError(f"{table}: cannot read the records: {exc.__class__.__name__}: {exc}") from None
    cfg_path = d / CONFIG
    config = _read_toml(cfg_path) if cfg_path.exists() else {}
    return summary, records, config


# ------------------------------------------------------------------ sweep folders


def point_dir(out: str | Path, point_id: str) -> Path:
    return Path(out) / POINTS / point_id


def write_point(out: str | Path, point_id: str, index: int, overrides: dict[str, Any], rows: list[dict[str, Any]],
                summary: dict[str, Any], exp: Experiment | None, profile: Profile | None) -> Path:
    """A finished point's folder: its resolved config and profile, summary.json, then result.json
    (its table rows; last, since it marks the point finished for --resume)."""
    d = point_dir(out, point_id)
    if exp is not None:
        write_provenance(d, exp, profile)
    write_json(d / SUMMARY, summary)
    write_json(d / POINT_RESULT, {"id": point_id, "index": index, "overrides": overrides, "rows": rows})
    return d


def read_point_rows(out: str | Path, point_id: str) -> list[dict[str, Any]] | None:
    """The table rows of a point finished in `out`, or None when it is not (or not this point)."""
    try:
        data = json.loads((point_dir(out, point_id) / POINT_RESULT).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("id") != point_id or not isinstance(data.get("rows"), list):
        return None
    return data["rows"]


def read_point_summary(out: str | Path, point_id: str) -> dict[str, Any]:
    """A point's summary.json ({} when it cannot be read)."""
    try:
        data = json.loads((point_dir(out, point_id) / SUMMARY).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_manifest(out: str | Path, manifest: dict[str, Any], exp: Experiment) -> None:
    """sweep.json and the experiment before the grid (config.resolved.toml, with its [sweep] table)."""
    write_json(Path(out) / MANIFEST, manifest)
    write_text(Path(out) / CONFIG, config_toml(exp))


def read_manifest(out: str | Path) -> dict[str, Any] | None:
    """sweep.json, or None when the folder has none (or it cannot be read)."""
    try:
        data = json.loads((Path(out) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_sweep_table(out: str | Path, df: pd.DataFrame, format: str = "parquet") -> Path:
    return write_table(Path(out) / f"{SWEEP_TABLE}.{format}", df)


# ------------------------------------------------------------------ reading a sweep folder


def _parse_scalar(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _from_dir_name(name: str) -> dict[str, Any]:
    """'workload.parents=4,machine.cpus=2' (or '__' / ';' separated) -> {key: value}."""
    out = {}
    for part in re.split(r",|__|;|&", name):
        if "=" in part:
            k, v = part.split("=", 1)
            out[k.strip()] = _parse_scalar(v.strip())
    return out


def _sweep_keys(d: Path, results: pd.DataFrame | None, point_values: list[dict[str, Any]]) -> list[str]:
    for cfg_name in (CONFIG, "config.toml", "sweep.toml"):
        p = d / cfg_name
        if p.exists():
            sweep = _read_toml(p).get("sweep")
            if isinstance(sweep, dict) and sweep:  # linked keys ("a,b") are one axis, two columns
                return [k.strip() for axis in sweep for k in axis.split(",")]
    keys: list[str] = []
    for values in point_values:
        for k in values:
            if k not in keys:
                keys.append(k)
    if keys:
        return keys
    if results is not None:
        return [c for c in results.columns if c.startswith(_SECTIONS) and results[c].nunique(dropna=True) > 1]
    return []


def _point_values(pdir: Path, summary: dict[str, Any], results: pd.DataFrame | None) -> dict[str, Any]:
    for k in ("point", "sweep", "params", "values"):
        v = summary.get(k)
        if isinstance(v, dict) and v:
            return dict(v)
    values: dict[str, Any] = {}
    if results is not None and "point" in results.columns:
        rows = results[results["point"].astype(str) == pdir.name]
        if len(rows):
            first = rows.iloc[0]
            values.update({c: first[c] for c in results.columns if c.startswith(_SECTIONS)})
    if not values:
        values = _from_dir_name(pdir.name)
    cfg = pdir / CONFIG
    if cfg.exists():
        values["__config__"] = _read_toml(cfg)
    return values


def points_frame(points: list[tuple[dict[str, Any], dict[str, Any]]], keys: list[str] | None = None) -> pd.DataFrame:
    """One row per sweep point: its swept values (`keys`) beside `summary_row(summary)`."""
    rows = []
    for values, summary in points:
        row = {k: values.get(k) for k in (keys or list(values))}
        row.update(summary_row(summary))
        rows.append(row)
    return pd.DataFrame(rows)


def read_sweep(directory: str | Path) -> tuple[pd.DataFrame, list[str], list[str]]:
    """(points frame, swept keys, notes) of a sweep directory; the frame holds each point's
    summary.json numbers (see `summary_row`) and a 'point' column (the point's folder name)."""
    d = Path(directory)
    if not is_sweep_dir(d):
        raise FolderError(f"{d}: not a sweep directory (needs {POINTS}/*/{SUMMARY} or {SWEEP_TABLE}.parquet)")
    results = None
    table = table_path(d, SWEEP_TABLE)
    if table is not None:
        try:
            results = read_table(table)
        except Exception as exc:
            raise FolderError(f"{table}: cannot read: {exc.__class__.__name__}: {exc}") from None
    notes: list[str] = []
    found: list[tuple[Path, dict[str, Any], dict[str, Any]]] = []
    for pdir in sorted(p for p in (d / POINTS).glob("*") if p.is_dir()) if (d / POINTS).is_dir() else []:
        sfile = pdir / SUMMARY
        if not sfile.exists():
            notes.append(f"point `{pdir.name}`: no summary.json (failed or not finished)")
            continue
        summary = _read_json(sfile)
        if summary.get("error"):
            notes.append(f"point `{pdir.name}`: {summary['error']}")
            continue
        found.append((pdir, summary, _point_values(pdir, summary, results)))
    if not found:
        raise FolderError(f"{d}: no finished sweep point (no points/*/summary.json)")
    keys = _sweep_keys(d, results, [{k: v for k, v in vals.items() if k != "__config__"} for _, _, vals in found])
    if not keys:
        raise FolderError(f"{d}: cannot tell which key was swept (no [sweep] in config.resolved.toml, "
                          "no point values in summary.json or results, no key=value folder names)")
    pts = []
    for pdir, summary, vals in found:
        cfg = vals.pop("__config__", None)
        for k in keys:
            if k not in vals and cfg is not None:
                vals[k] = dotted_get(cfg, k)
        vals["point"] = pdir.name
        pts.append((vals, summary))
    frame = points_frame(pts, ["point", *keys])
    for k in keys:  # numbers stored as strings in some tables
        conv = pd.to_numeric(frame[k], errors="coerce")
        if conv.notna().all():
            frame[k] = conv
    frame = frame.sort_values(keys, kind="stable").reset_index(drop=True)
    return frame, keys, notes
