#!/usr/bin/env python3
"""Put tools/many_cpus_measure.py's real measurements beside forksim's model of the same loads.

    python tools/many_cpus.py measured.json [--profile default] [--profile path/to/device-quick.json]
                                [--cpus 16] [--md table.md] [--json predicted.json]

Each measured scenario's config is built as `forksim validate` builds it (compare._scenario_row:
`Scenario.to_config(measured, cpus=..., profile=...)`, so the model gets the measured VMA count,
anonymous VMAs, RSS and the parents' physical layout), with the machine's CPUs set to the measured
nproc (or --cpus), then simulated for each --profile (default: `default`) through
`forksim.validation.compare.simulate`. The simulated run is kept short: --duration seconds at most
(default 20), cut to about --max-forks creations at the measured throughput (at least --min-duration),
after a --warmup (default 0.1 s), --replications (default 1).

Prints, per profile, one row per scenario: measured and predicted throughput/s, the relative error
(pred - meas) / meas, measured / predicted fork() p50 and p99 (us); --md writes the same tables as
markdown, --json every predicted summary's headline figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(x)


def _fmt(x: float | None, digits: int = 0) -> str:
    if x is None:
        return "-"
    if abs(x) >= 100 or digits == 0:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}"


def _err(pred: float | None, meas: float | None) -> float | None:
    if pred is None or meas is None or meas <= 0:
        return None
    return (pred - meas) / meas


def _fmt_err(e: float | None) -> str:
    return "-" if e is None else f"{e * 100:+.0f}%"


def load_rows(path: Path) -> list[dict[str, Any]]:
    data = json.loads(path.read_text())
    if isinstance(data, dict):  # tolerate {"rows": [...]} as well
        data = data.get("rows", [])
    return list(data)


def scenario_of(fields: dict[str, Any]):
    from dataclasses import fields as dc_fields

    from forksim.validation.scenarios import Scenario

    known = {f.name for f in dc_fields(Scenario)}
    kw = {k: v for k, v in fields.items() if k in known}
    for k in ("clone_flags", "unshare"):
        if k in kw and kw[k] is not None:
            kw[k] = tuple(kw[k])
    return Scenario(**kw)


def sim_lengths(measured: dict[str, Any], args) -> tuple[float, float]:
    """(duration, warm-up) in seconds of the simulated run."""
    thr = _num(measured.get("throughput_per_s")) or 0.0
    dur = args.duration
    if thr > 0:
        dur = min(args.duration, max(args.min_duration, args.max_forks / thr))
    return dur, min(args.warmup, dur / 2)


def config_for(sc, measured: dict[str, Any], cpus: int, profile: str, args) -> dict[str, Any]:
    """compare._scenario_row's config (Scenario.to_config of what was measured), made short."""
    config = sc.to_config(measured, cpus=cpus, quick=False, profile=profile, replications=args.replications,
                          seed=args.seed)
    dur, warm = sim_lengths(measured, args)
    config["experiment"]["duration"] = dur * 1e6
    config["experiment"]["warmup"] = warm * 1e6
    return config


def headline(summary: dict[str, Any]) -> dict[str, Any]:
    thr = summary.get("throughput_per_s") or {}
    fl = summary.get("fork_latency_us") or {}
    rt = summary.get("roundtrip_latency_us") or summary.get("response_latency_us") or {}
    return {
        "throughput_per_s": _num(thr.get("mean") if isinstance(thr, dict) else thr),
        "fork_p50_us": _num(fl.get("p50")),
        "fork_p99_us": _num(fl.get("p99")),
        "fork_count": fl.get("count"),
        "roundtrip_p50_us": _num(rt.get("p50")) if isinstance(rt, dict) else None,
        "cpu_utilization": summary.get("cpu_utilization"),
        "sim_wall_s": summary.get("sim_wall_s"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("measured", type=Path, nargs="+", help="many_cpus_measure.py's JSON lists (their rows in order)")
    ap.add_argument("--profile", action="append", default=None,
                    help="a profile name or file (repeatable; default: default)")
    ap.add_argument("--cpus", type=int, default=None,
                    help="the simulated machine's CPUs (default: each row's measured nproc)")
    ap.add_argument("--duration", type=float, default=20.0,
                    help="simulated seconds at most (default 20: slow large-image loads get forks enough for a p99)")
    ap.add_argument("--min-duration", type=float, default=0.3, help="simulated seconds at least (default 0.3)")
    ap.add_argument("--max-forks", type=float, default=30000,
                    help="cut the simulated run to about this many creations at the measured rate (default 30000)")
    ap.add_argument("--warmup", type=float, default=0.1, help="simulated warm-up seconds (default 0.1)")
    ap.add_argument("--replications", type=int, default=1)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--only", action="append", default=None, help="only scenarios whose name contains this")
    ap.add_argument("--md", type=Path, default=None, help="write the tables as markdown here")
    ap.add_argument("--json", type=Path, default=None, help="write every row (measured, predicted, config) here")
    args = ap.parse_args(argv)
    profiles = args.profile or ["default"]

    from forksim.validation.compare import simulate

    rows = [row for path in args.measured for row in load_rows(path)]
    if args.only:
        rows = [r for r in rows if any(o in (r.get("scenario") or {}).get("name", "") for o in args.only)]
    host = next((r.get("host") for r in rows if r.get("host")), {}) or {}
    t_all = time.monotonic()
    out: list[dict[str, Any]] = []
    cmd = " ".join(["python tools/many_cpus.py", *(argv if argv is not None else sys.argv[1:])])
    md: list[str] = [f"# forksim at {host.get('nproc', '?')} CPUs: the model beside real closed loops", "",
                     f"Generated by `{cmd}` from {', '.join(f'`{m}`' for m in args.measured)} (measured by tools/many_cpus_measure.py with the "
                     f"validation's load generator); do not edit by hand. Each profile's predictions are today's model.", ""]
    md.append(f"Measured on: {host.get('cpu_model', '?')}, nproc {host.get('nproc', '?')}, kernel "
              f"{host.get('kernel', '?')}, {host.get('date', '?')}. Simulated: up to {args.duration:g} s "
              f"(~{args.max_forks:.0f} creations), warm-up {args.warmup:g} s, {args.replications} replication(s).")
    md.append("")
    for profile in profiles:
        print(f"\n== profile {profile}", flush=True)
        hdr = (f"{'scenario':38s} {'cpus':>4s} {'meas/s':>10s} {'pred/s':>10s} {'err':>6s}  "
               f"{'p50 meas':>9s} {'p50 pred':>9s} {'err':>6s}  {'p99 meas':>9s} {'p99 pred':>9s} {'err':>6s}  {'sim s':>5s}")
        print(hdr)
        md += [f"## profile `{profile}`", "",
               "| scenario | cpus | measured /s | predicted /s | err | fork p50 meas (us) | pred | err "
               "| fork p99 meas (us) | pred | err |",
               "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        errs: dict[str, list[float]] = {"throughput": [], "p50": [], "p99": []}
        for r in rows:
            fields = r.get("scenario") or {}
            name = fields.get("name", "?")
            measured = r.get("measured")
            rec: dict[str, Any] = {"scenario": name, "profile": profile}
            if not measured:
                rec["error"] = r.get("error") or "not measured"
                print(f"{name:38s} not measured: {rec['error']}")
                md.append(f"| {name} | | not measured | | | | | | | | |")
                out.append(rec)
                continue
            cpus = args.cpus or int(measured.get("cpus") or (r.get("host") or {}).get("nproc") or os.cpu_count() or 1)
            m_thr = _num(measured.get("throughput_per_s"))
            m_p50 = _num((measured.get("fork_latency_us") or {}).get("p50"))
            m_p99 = _num((measured.get("fork_latency_us") or {}).get("p99"))
            rec.update({"cpus": cpus, "measured": {"throughput_per_s": m_thr, "fork_p50_us": m_p50,
                                                   "fork_p99_us": m_p99, "samples": measured.get("samples")}})
            t = time.monotonic()
            try:
                sc = scenario_of(fields)
                config = config_for(sc, measured, cpus, profile, args)
                rec["config"] = config
                pred = headline(simulate(config, profile))
            except Exception as exc:  # a failing point is recorded, the rest go on
                rec["error"] = f"simulation failed: {exc.__class__.__name__}: {exc}"
                print(f"{name:38s} {rec['error']}", flush=True)
                md.append(f"| {name} | {cpus} | {_fmt(m_thr)} | {rec['error']} | | | | | | | |")
                out.append(rec)
                continue
            rec["predicted"] = pred
            rec["sim_wall_s"] = round(time.monotonic() - t, 2)
            e_thr, e50, e99 = (_err(pred["throughput_per_s"], m_thr), _err(pred["fork_p50_us"], m_p50),
                               _err(pred["fork_p99_us"], m_p99))
            rec["rel_error"] = {"throughput": e_thr, "fork_p50": e50, "fork_p99": e99}
            for k, e in (("throughput", e_thr), ("p50", e50), ("p99", e99)):
                if e is not None:
                    errs[k].append(abs(e))
            print(f"{name:38s} {cpus:4d} {_fmt(m_thr):>10s} {_fmt(pred['throughput_per_s']):>10s} {_fmt_err(e_thr):>6s}  "
                  f"{_fmt(m_p50, 1):>9s} {_fmt(pred['fork_p50_us'], 1):>9s} {_fmt_err(e50):>6s}  "
                  f"{_fmt(m_p99, 1):>9s} {_fmt(pred['fork_p99_us'], 1):>9s} {_fmt_err(e99):>6s}  "
                  f"{rec['sim_wall_s']:5.1f}", flush=True)
            md.append(f"| {name} | {cpus} | {_fmt(m_thr)} | {_fmt(pred['throughput_per_s'])} | {_fmt_err(e_thr)} "
                      f"| {_fmt(m_p50, 1)} | {_fmt(pred['fork_p50_us'], 1)} | {_fmt_err(e50)} "
                      f"| {_fmt(m_p99, 1)} | {_fmt(pred['fork_p99_us'], 1)} | {_fmt_err(e99)} |")
            out.append(rec)
        med = {k: (statistics.median(v) if v else None) for k, v in errs.items()}
        line = ("median |rel error|: throughput " + _fmt_err(med["throughput"]).lstrip("+")
                + ", fork p50 " + _fmt_err(med["p50"]).lstrip("+") + ", fork p99 " + _fmt_err(med["p99"]).lstrip("+"))
        print(line)
        md += ["", line, ""]
    print(f"\n({time.monotonic() - t_all:.0f} s)")
    if args.md:
        args.md.write_text("\n".join(md) + "\n")
        print(f"wrote {args.md}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
