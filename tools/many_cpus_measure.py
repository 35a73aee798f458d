#!/usr/bin/env python3
"""Real closed-loop fork()/vfork() throughput at many CPUs, with forksim's own load generator.

    python tools/many_cpus_measure.py OUT.json

Runs (in this order, the most wanted first):
  fork  K = 1, 2, 4, 8, 16 parents, RSS 0
  fork  K = 1, 2, 4, 8, 16 parents, RSS 256 MiB
  vfork K = 16, RSS 0
  fork  K = 16, RSS 1 GiB
each 2 s measured after a 0.3 s warm-up, plus 0.2 s per GiB of all the parents' images (16 x 1 GiB: 3.5 s),
so that the run's read of the parents' pagemaps ends before the measured window
(forksim.validation.measure.measure, quick=False: the Scenario's own duration_s / warmup_s).
OUT.json is a JSON list, one entry per scenario:
  {"scenario": dataclasses.asdict(Scenario), "measured": measure()'s dict or null,
   "error": null or why, "seconds": wall time, "host": {cpu model, nproc, kernel, tools, ...}}
rewritten after every scenario, so a run cut short still leaves what it measured.

Environment:
  FORKSIM_DEV_SMALL=1      K in (1, 2), 0.5 s runs, the extras at K=2 (vfork) and K=1 (1 GiB): a local test
  FORKSIM_DEV_BUDGET_S=S   stop starting scenarios once one would end past S seconds (default 215)
  FORKSIM_MANY_PLAN=pinned fork K = 1..16 parents each pinned to its own CPU, RSS 0 and 64 MiB, and the unpinned
                           RSS-0 loads at K = 8 and 16 again (instead of the scaling plan above)
  FORKSIM_PREBUILT_DIR=D   a build cache (D/loadgen-*/loadgen, spawn_helper) used when build_tools() fails
                           (no compiler: a machine lent without gcc); default: prebuilt/forksim beside this script
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import sys
import time
import traceback
from pathlib import Path

T0 = time.monotonic()
SMALL = os.environ.get("FORKSIM_DEV_SMALL", "") not in ("", "0")
BUDGET_S = float(os.environ.get("FORKSIM_DEV_BUDGET_S", "215"))
PLAN = os.environ.get("FORKSIM_MANY_PLAN", "scaling")
HERE = Path(__file__).resolve().parent


def say(msg: str) -> None:
    print(f"[many_cpus_measure +{time.monotonic() - T0:6.1f}s] {msg}", flush=True)


def _jsonable(o):
    """numpy scalars and arrays, paths, tuples: what json.dumps cannot take as it is."""
    try:
        import numpy as np

        if isinstance(o, np.integer):
            return int(o)
        if isinstance(o, np.floating):
            v = float(o)
            return v if math.isfinite(v) else None
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, np.bool_):
            return bool(o)
    except ImportError:
        pass
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    return str(o)


def write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=_jsonable))
    os.replace(tmp, path)


def mem_available_gib() -> float | None:
    from forksim.lab.facts import mem_available

    got = mem_available()
    return None if got is None else got / 1024**3


def get_tools():
    """forksim's build of the load generator; without a compiler, a prebuilt one (FORKSIM_PREBUILT_DIR)."""
    from forksim.validation.loadgen import LoadgenError, Tools, build_tools

    try:
        tools = build_tools()
        return tools, "build_tools"
    except LoadgenError as exc:
        say(f"build_tools() failed: {exc}")
    pre = Path(os.environ.get("FORKSIM_PREBUILT_DIR") or HERE / "prebuilt" / "forksim")
    for d in sorted(pre.glob("loadgen-*")):
        lg, hp, meta = d / "loadgen", d / "spawn_helper", d / "build.json"
        if lg.exists() and hp.exists():
            for p in (lg, hp):
                if not os.access(p, os.X_OK):
                    p.chmod(0o755)
            info = json.loads(meta.read_text()) if meta.exists() else {}
            say(f"using the PREBUILT load generator {lg} (its source hash may differ from this tree's loadgen.c)")
            return Tools(lg, hp, bool(info.get("helper_static", True)), info.get("compiler", "prebuilt"),
                         info.get("compiler_version", "prebuilt")), f"prebuilt:{d.name}"
    raise LoadgenError(f"no compiler and no prebuilt load generator under {pre}")


def plan():
    from forksim.validation.scenarios import GiB, MiB, Scenario

    def size_name(rss: int) -> str:
        return "0" if rss == 0 else f"{rss // GiB}GiB" if rss % GiB == 0 else f"{rss // MiB}MiB"

    cpus = os.cpu_count() or 1
    ks = (1, 2) if SMALL else (1, 2, 4, 8, 16)
    dur, warm = (0.5, 0.3) if SMALL else (2.0, 0.3)
    kmax = max(ks)

    def sc(kind: str, k: int, rss: int, pin: bool = False) -> Scenario:
        # The run reads every parent's pagemap once all images are touched, just as the forks begin
        # (validation/layouts.py: about 0.12 s per GiB on a 2-vCPU VM, one CPU, taking each parent's mmap_lock
        # for reading): a longer warm-up for large images keeps that read out of the measured window.
        warm_k = round(warm + 0.2 * rss * k / GiB, 1)
        return Scenario(
            name=f"dev{cpus}-closed-{kind}-K{k}-rss{size_name(rss)}{'-pin' if pin else ''}",
            mode="closed", kind=kind, parents=k, rss=rss, repeats=1, pin=pin,
            duration_s=dur, warmup_s=warm_k, quick_duration_s=dur, quick_warmup_s=warm_k,
            notes=f"tools/many_cpus_measure.py on {cpus} CPUs",
        )

    if PLAN == "pinned":  # each parent pinned to its own CPU: the scheduler's placement out of the growth with K
        out = [sc("fork", k, 0, pin=True) for k in ks]
        out += [sc("fork", k, 64 * MiB, pin=True) for k in ks]
        out += [sc("fork", k, 0) for k in (kmax // 2, kmax)]  # the unpinned loads again: their run-to-run spread
    else:
        out = [sc("fork", k, 0) for k in ks]
        out += [sc("fork", k, 256 * MiB) for k in ks]
        out.append(sc("vfork", kmax, 0))
        out.append(sc("fork", 1 if SMALL else kmax, 1 * GiB))
    names = [s.name for s in out]
    assert len(set(names)) == len(names), names
    return out


def estimate_s(s) -> float:
    """A generous guess at one scenario's wall time: touching the images (a few s per GiB on a 2-vCPU VM,
    in parallel across parents), warm-up, run, the layout reader, the summary."""
    gib = s.rss * s.parents / 1024**3
    return 2.0 + s.warmup_s + s.duration_s + 1.5 * gib


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1].startswith("-"):
        print(__doc__, file=sys.stderr)
        return 2
    out_path = Path(argv[1])
    out_path.parent.mkdir(parents=True, exist_ok=True)

    import forksim
    from forksim.lab import facts
    from forksim.validation.measure import measure

    tools, tools_from = get_tools()
    say(f"load generator: {tools.loadgen} (helper static: {tools.helper_static}; {tools.compiler_version}; {tools_from})")
    host = {
        "cpu_model": facts.cpu_model() or platform.processor() or "unknown",
        "nproc": os.cpu_count(),
        "sched_getaffinity": len(os.sched_getaffinity(0)),
        "kernel": platform.release(),
        "kernel_version": platform.version(),
        "machine": platform.machine(),
        "hostname": platform.node(),
        "python": platform.python_version(),
        "forksim": getattr(forksim, "__version__", None),
        "forksim_path": str(Path(forksim.__file__).parent),
        "tools": {"loadgen": str(tools.loadgen), "compiler": tools.compiler_version,
                  "helper_static": tools.helper_static, "from": tools_from},
        "small": SMALL,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "mem_available_gib_at_start": mem_available_gib(),
    }
    say(f"host: {host['cpu_model']}, nproc {host['nproc']}, kernel {host['kernel']}, "
        f"MemAvailable {host['mem_available_gib_at_start']:.1f} GiB" if host["mem_available_gib_at_start"] else
        f"host: {host['cpu_model']}, nproc {host['nproc']}")
    scenarios = plan()
    say(f"{len(scenarios)} scenarios ({'SMALL' if SMALL else 'full'} mode), budget {BUDGET_S:.0f} s")
    rows: list[dict] = []
    failures = 0
    for i, s in enumerate(scenarios, 1):
        entry = {"scenario": dataclasses.asdict(s), "measured": None, "error": None, "seconds": None, "host": host}
        elapsed = time.monotonic() - T0
        if elapsed + estimate_s(s) > BUDGET_S:
            entry["error"] = (f"skipped: time budget ({elapsed:.0f} s gone, about {estimate_s(s):.0f} s more needed, "
                              f"budget {BUDGET_S:g} s)")
            say(f"[{i}/{len(scenarios)}] {s.name:36s} SKIPPED ({entry['error']})")
            rows.append(entry)
            write_json(out_path, rows)
            continue
        t = time.monotonic()
        try:
            res = measure(s, quick=False, tools=tools)
            res["mem_available_gib_after"] = mem_available_gib()
            entry["measured"] = res
            f = res["fork_latency_us"]
            rt = res["roundtrip_latency_us"]
            pl = res.get("placement") or {}
            cpu = res.get("cpu") or {}
            scatter = (res.get("image_layout") or {}).get("scatter")
            say(f"[{i}/{len(scenarios)}] {s.name:36s} {res['throughput_per_s']:10.0f}/s  "
                f"fork p50 {f['p50']:9.1f} us  p99 {f['p99']:9.1f} us  rt p50 {rt['p50']:9.1f} us  "
                f"n {res['samples']}  same-cpu {pl.get('same_cpu_frac', float('nan')):.2f}  "
                f"busy {cpu.get('busy_frac', float('nan')):.2f}  errors {res.get('errors')}"
                + (f"  scatter {scatter:.2f}" if scatter is not None else "")
                + f"  ({time.monotonic() - t:.1f} s)")
        except Exception as exc:  # one failing scenario is recorded, the rest go on
            failures += 1
            entry["error"] = f"{exc.__class__.__name__}: {exc}"
            entry["traceback"] = traceback.format_exc()[-3000:]
            say(f"[{i}/{len(scenarios)}] {s.name:36s} FAILED: {entry['error']}")
        entry["seconds"] = round(time.monotonic() - t, 2)
        rows.append(entry)
        write_json(out_path, rows)
    ok = sum(1 for r in rows if r["measured"] is not None)
    say(f"done: {ok}/{len(rows)} measured, {failures} failed, wrote {out_path} ({time.monotonic() - T0:.0f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
