"""The validation scoreboard again without measuring: re-simulate a validation.json's scenarios (their
stored configs, against their stored measurements) with today's model and a profile, and print the
errors beside the file's own. For a model change between quiet windows: which rows it moves, and how.

    python tools/repredict.py VALIDATION_JSON [--profile P] [--only SCENARIO ...] [--seed N] [--rebuild]

The measurement stays the one in the file (same host state, same day); only the prediction is new.
A row's config names the profile it was predicted with; --profile replaces it (a name or a path).
--rebuild makes each config again from today's scenario definition and the stored measurement
(Scenario.to_config), for a change in how a scenario becomes a config.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from forksim.validation.compare import METRICS, compare_row, simulate, summarize_rows
from forksim.validation.scenarios import get_scenario


def repredict(report: dict, profile: str | None, only: list[str], seed: int | None, rebuild: bool = False) -> list[dict]:
    rows = []
    for old in report["rows"]:
        if (only and old["scenario"] not in only) or not old.get("config") or not old.get("measured_full"):
            continue
        config = json.loads(json.dumps(old["config"]))
        if rebuild:
            config = get_scenario(old["scenario"]).to_config(
                old["measured_full"], cpus=config["machine"]["cpus"], quick=bool(report.get("quick")),
                profile=config["machine"]["profile"], seed=config["experiment"]["seed"])
        if profile:
            config["machine"]["profile"] = profile
        if seed is not None:
            config["experiment"]["seed"] = seed
        new = compare_row(old["scenario"], old["measured_full"], simulate(config, config["machine"]["profile"]))
        rows.append((old, new))
        print(_line(old, new), flush=True)
    return [new for _, new in rows]


def _line(old: dict, new: dict) -> str:
    cells = []
    for key, *_ in METRICS:
        a, b = old["rel_error"].get(key), new["rel_error"].get(key)
        if b is None:
            continue
        cells.append(f"{key} {'-' if a is None else f'{a * 100:+.0f}'}->{b * 100:+.0f}%")
    return f"{old['scenario']:44s} " + "  ".join(cells)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report", type=Path, help="a validation.json written by forksim validate")
    ap.add_argument("--profile", help="profile name or file (default: each row's own)")
    ap.add_argument("--only", action="append", default=[], help="one scenario (repeatable)")
    ap.add_argument("--seed", type=int, help="another seed than the rows' own")
    ap.add_argument("--rebuild", action="store_true", help="configs from today's scenario definitions")
    args = ap.parse_args()
    report = json.loads(args.report.read_text())
    rows = repredict(report, args.profile, args.only, args.seed, args.rebuild)
    if not rows:
        print("no row to re-predict (check --only)", file=sys.stderr)
        return 2
    before = summarize_rows([r for r in report["rows"] if r["scenario"] in {x["scenario"] for x in rows}])
    after = summarize_rows(rows)
    print("\nmedian |error| over these rows, file -> now:")
    for key, *_ in METRICS:
        a, b = before["median_abs_rel_error"][key], after["median_abs_rel_error"][key]
        if b is not None:
            print(f"  {key:12s} {a * 100:5.1f}% -> {b * 100:5.1f}%")
    print(f"  rows off by 2x: {before['rows_off_by_2x']} -> {after['rows_off_by_2x']}: "
          + ", ".join(after["rows_off_by_2x_names"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
