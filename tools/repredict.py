"""The validation scoreboard again without measuring: re-simulate a validation.json's scenarios (their
stored configs, against their stored measurements) with today's model and a profile, and print the
errors beside the file's own. For a model change between quiet windows: which rows it moves, and how.

    python tools/repredict.py VALIDATION_JSON [--profile P] [--only SCENARIO ...] [--seed N] [--rebuild]
                              [--out DIR [--doc FILE --why TEXT]]

The measurement stays the one in the file (same host state, same day); only the prediction is new.
A row's config names the profile it was predicted with; --profile replaces it (a name or a path).
--rebuild makes each config again from today's scenario definition and the stored measurement
(Scenario.to_config), for a change in how a scenario becomes a config. --out writes the report again
(validation.json/.md/.png, and with --doc VALIDATION.md), the real application's rows and the stress-ng
cross-check re-simulated too, its provenance saying that the predictions were re-simulated and why. Each
row's canaries (the host's drift: forksim.validation.canary) are carried over as they were: measured with the
row, its model figure the run's own (the canary's measured shape is not stored, so it is not re-simulated).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

from forksim.validation.canary import CANARIES, canary_summary
from forksim.validation.compare import METRICS, compare_row, simulate, stated_prediction, summarize_rows
from forksim.kernel.flags import VFORK
from forksim.profile import load_profile, profile_info
from forksim.validation.apps import redis_config
from forksim.validation.document import write_report
from forksim.validation.scenarios import Scenario, get_scenario


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
        predicted = simulate(config, config["machine"]["profile"])
        new = compare_row(old["scenario"], old["measured_full"], predicted, config=config)
        new.update(measured_full=old["measured_full"], predicted_full=predicted, seconds=old.get("seconds"))
        for key, _ in CANARIES:  # the host's drift then: measured with the row, its model figure as then
            if old.get(key) is not None:
                new[key] = old[key]
        stated = stated_prediction(config, old["measured_full"], simulate)
        if stated is not None:
            new["predicted_stated"] = stated
        rows.append((old, new))
        print(_line(old, new), flush=True)
    return [new for _, new in rows]


def rewrite(report: dict, rows: list[dict], profile: str, why: str) -> dict:
    """The report with these rows, its real application and stress-ng rows re-simulated with `profile`."""
    new = {**report, "rows": rows,
           "summary": {**summarize_rows(rows), **{key: canary_summary(rows, key) for key, _ in CANARIES}}}
    cpus = report["provenance"].get("cpus") or 2
    apps = report.get("apps") or {}
    if apps.get("rows"):
        app_rows = []
        for r in apps["rows"]:
            cfg = redis_config(r["image"], r["interval_s"], cpus=cpus, profile=profile, quick=bool(report.get("quick")))
            pred = simulate(cfg, profile)["fork_latency_us"]["p50"]
            app_rows.append({**r, "predicted_p50_us": pred, "rel_error": (pred - r["measured_p50_us"]) / r["measured_p50_us"]})
        new["apps"] = {**apps, "rows": app_rows}
    cross = report.get("crosscheck_stress_ng")
    if cross and cross.get("model_per_s") is not None:
        sc = Scenario(name="crosscheck-vfork-K1-pinned", mode="closed", kind=VFORK, parents=1, rss=0, pin=True)
        model = simulate(sc.to_config({}, cpus=1, quick=True, profile=profile), profile)["throughput_per_s"]["mean"]
        new["crosscheck_stress_ng"] = {**cross, "model_per_s": model}
    prov = dict(report["provenance"])
    prov.update(profile=profile, profile_used=profile_info(load_profile(profile)), repredicted={
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "by": "tools/repredict.py",
        "measured": report["provenance"].get("date"), "why": why})
    new["provenance"] = prov
    return new


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
    ap.add_argument("--out", type=Path, help="write the re-predicted report into this folder")
    ap.add_argument("--doc", type=Path, help="with --out: also the validation document (VALIDATION.md)")
    ap.add_argument("--why", default="", help="with --out: why the predictions were re-simulated (one sentence)")
    args = ap.parse_args()
    if args.out and (args.only or not args.profile or not args.why):
        ap.error("--out re-writes the whole report: give --profile and --why, and no --only")
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
    if args.out:
        paths = write_report(rewrite(report, rows, args.profile, args.why), args.out, args.doc)
        print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
