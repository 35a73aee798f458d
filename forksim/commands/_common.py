"""Pieces the subcommands share: config loading with overrides, output folders, tables."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ..config import CALLS, Experiment, load_experiment, parse_override
from ..errors import ConfigError, ForksimError
from ..kernel.flags import DEFAULT_KIND
from ..summary import LATENCIES, PERCENTILE_NAMES, latency_label



def _log_width(stream: Any) -> int | None:
    """Output going to a file or a pipe (a CI log, `| tee`) without COLUMNS set gets 200 columns, so
    that tables keep a row per line instead of folding at rich's 80; a terminal keeps its own width."""
    return None if "COLUMNS" in os.environ or stream.isatty() else 200


console = Console(stderr=False, width=_log_width(sys.stdout))
err_console = Console(stderr=True, width=_log_width(sys.stderr))

# The library's errors name the argument or config key they are about; where the CLI took that value
# from a flag, the message names the flag instead (`range: ...` -> `--range: ...`).
FLAGS = {
    "slo": "--slo", "find": "--find", "range": "--range", "tolerance": "--tolerance",
    "direction": "--smallest/--largest", "executor": "--executor", "scheduler": "--scheduler",
    "workers": "--workers", "format": "--format", "resume": "--resume",
}


def flag_error(exc: ForksimError) -> ForksimError:
    """`exc` with the argument it names (its `source`) shown as the flag it came from (FLAGS)."""
    if not isinstance(exc, ConfigError) or exc.source not in FLAGS:
        return exc
    where = ": ".join(p for p in (exc.source, exc.field) if p)
    message = str(exc)[len(where) + 2:] if str(exc).startswith(f"{where}: ") else str(exc)
    return type(exc)(message, source=FLAGS[exc.source], field=exc.field)


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="experiment config (TOML)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set workload.parents=8 (repeatable)")
    p.add_argument("--profile", help="profile name or file (default: the config's machine.profile; "
                   "'auto' there, the default, is the profile `forksim calibrate` stored for this host, else `default`)")
    p.add_argument("--seed", type=int, help="root seed (default: the config's experiment.seed)")


def load_from_args(args: argparse.Namespace) -> Experiment:
    overrides: dict[str, Any] = dict(parse_override(o) for o in args.overrides)
    if getattr(args, "profile", None):
        overrides["machine.profile"] = args.profile
    if getattr(args, "precision", None) is not None:  # the config's key: parsed and checked there
        overrides["experiment.precision"] = args.precision
    if getattr(args, "seed", None) is not None:
        if args.seed < 0:
            raise ConfigError("must be a non-negative integer", source="--seed")
        overrides["experiment.seed"] = args.seed
    return load_experiment(args.config, overrides)


def out_dir(args: argparse.Namespace, exp: Experiment, kind: str) -> Path:
    """The output folder (not created here: nothing is written before the results exist)."""
    out = Path(args.out) if args.out else Path("results") / f"{exp.experiment.name}" / kind
    for parent in (out, *out.parents):  # a file where a folder must go fails now, not after the run
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{parent} exists and is not a folder", source="--out" if args.out else None,
                                  field=None if args.out else "experiment.name")
            break
    return out


def fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return str(v)


def call_label(clone: str | None) -> str:
    """'vfork() call' for the creating call of a clone kind (None: kinds vary, 'creating call')."""
    return f"{CALLS[clone]} call" if clone in CALLS else "creating call"


def latency_table(summary: dict[str, Any], title: str, clone: str | None = DEFAULT_KIND) -> Table:
    t = Table(title=title, title_justify="left")
    t.add_column("latency (us)")
    for col in ("mean", *PERCENTILE_NAMES, "p99 95% CI"):
        t.add_column(col, justify="right")
    for key in LATENCIES:
        label = call_label(clone) if key == "fork_latency_us" else latency_label(key)
        s = summary.get(key)
        if not s:
            continue
        ci = (s.get("ci95") or {}).get("p99")
        ci_text = f"{fmt(ci[0])} .. {fmt(ci[1])}" if ci else "-"
        t.add_row(label, *(fmt(s.get(c)) for c in ("mean", *PERCENTILE_NAMES)), ci_text)
        if s.get("refused"):  # a tail percentile from too few samples (forksim.stats.MIN_BEYOND)
            from ..display import refused_note

            t.caption, t.caption_justify = refused_note().replace("–", "-"), "left"
    return t
