"""`forksim calibrate`: measure this machine and write a profile, then check it on held-out sizes and on
the other creation families."""

from __future__ import annotations

import argparse

from rich.table import Table

from ..kernel.flags import FORK
from ._common import console, fmt


def register(sub) -> None:
    p = sub.add_parser("calibrate", help="measure this machine and write a profile",
                       description="Build and run the C microbenchmarks (and, as root with tracefs, a tracepoint "
                       "stage breakdown), fit every stage cost, and write a profile with provenance and fit "
                       "diagnostics. Then simulate the sizes the fit left out, and the other creation families, and "
                       "compare with their measurements.")
    p.add_argument("--out", help="profile file to write (default: the user's profile store, "
                   "$XDG_DATA_HOME/forksim/profiles/<host>.json, used from then on by every command on a matching "
                   "host; see `forksim profiles --help`)")
    p.add_argument("--quick", action="store_true", help="the short plan (about a minute on a 2-vCPU VM, its report included)")
    p.add_argument("--raw", help="also write every raw sample (.json or .json.gz)")
    p.add_argument("--no-tracefs", action="store_true", help="microbenchmarks only, even as root")
    p.add_argument("--no-compact", action="store_true",
                   help="do not compact the free memory first (/proc/sys/vm/compact_memory, as root: the state "
                   "the shipped profiles were measured in; a freshly touched image's physical layout follows the "
                   "free lists)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=main)


def held_out_check(profile_path: str, held_out: list[dict]) -> list[dict]:
    """forksim's own prediction (one pinned CPU, like the measurement, and as warm: back to back) for
    each held-out size."""
    from ..predict import predict

    rows = []
    for h in held_out:
        res = predict(int(h["rss_bytes"]), vmas=int(h.get("vmas") or 40), anon_vmas=h.get("anon_vmas"),
                      thp=bool(h.get("thp")), profile=profile_path, cpus=1, samples=300, warm=True)
        pred = res["fork_latency_us"]["p50"]
        meas = float(h["fork_p50_us"])
        rows.append({**h, "forksim_p50_us": pred, "rel_error": (pred - meas) / meas})
    return rows


def family_check(profile_path: str, variants: dict[str, dict]) -> list[dict]:
    """The closure of the other creation families: each pinned family's measured call and round trip
    (p50 and p99, empty image) beside forksim's prediction on one CPU from the profile just written. Their
    stages come from fork's split and traced segments, so this is where a stage that is counted twice,
    or a tracing overhead not taken out, shows, and at the p99 a residual that draws a stall too often
    (tools/tail_selfcheck.py puts them beside a simulated closed loop). The p99s are None where the
    measurement has none (profiles before 2026-12-01)."""
    from ..calibration.plan import VARIANTS
    from ..predict import predict

    families = {mode: kind for kind, mode in VARIANTS.items()}  # forkbench's modes as forksim's clone kinds
    rows = []
    for name, v in variants.items():
        mode = v.get("mode")
        if not name.endswith(" pinned") or mode not in families or not v.get("shape"):
            continue
        shape = v["shape"]
        res = predict(int(shape.get("rss_bytes") or 0), vmas=int(shape.get("vmas") or 40),
                      anon_vmas=shape.get("anon_vmas"), clone=families[mode], profile=profile_path, cpus=1,
                      samples=2000, warm=True)  # measured back to back: as warm; 2,000 for the p99
        for what, key in (("call", "fork_latency_us"), ("round trip", "roundtrip_latency_us")):
            got = v["call" if what == "call" else "roundtrip"]
            meas, pred = float(got["p50"]), res[key]["p50"]
            meas99, pred99 = got.get("p99"), res[key].get("p99")
            rows.append({"family": families[mode], "what": what, "measured_p50_us": meas,
                         "forksim_p50_us": pred, "rel_error": (pred - meas) / meas,
                         "measured_p99_us": meas99, "forksim_p99_us": pred99,
                         "rel_error_p99": (pred99 - meas99) / meas99 if meas99 and pred99 is not None else None})
    return rows


class _Bar:
    """calibrate's progress as a rich bar (the library reports to a calibration.calibrate.Reporter; the CLI
    passes this one, which draws it)."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._p = Progress(TextColumn("[bold]calibrate[/]"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                           TimeElapsedColumn(), TextColumn("{task.description}"), transient=False)
        self._p.start()
        self._task = self._p.add_task("", total=1)

    def total(self, n: int) -> None:
        self._p.update(self._task, total=n)

    def step(self, what: str) -> None:
        self._p.update(self._task, description=what)

    def advance(self) -> None:
        self._p.advance(self._task)

    def log(self, msg: str) -> None:
        self._p.console.log(msg)

    def close(self) -> None:
        self._p.stop()


def copies_check(profile_path: str, measured: list[dict]) -> list[dict]:
    """The closure of the fd table, the namespaces and the live children: each pinned clonebench case's
    measured call p50 beside forksim's prediction on one CPU from the profile just written, and each one's
    extra over its base case in the same run (3 fds, a plain clone(), no live children) beside the model's:
    clonebench's parent is not an empty image (libc's pages; glibc's fork() for the fd cases), so the absolute
    figures differ by the base, which the fork path's own fit and the held-out sizes check."""
    from ..predict import predict

    def p50(vmas: int, **kw) -> float:
        # clonebench creates back to back: compared warm (predict's default cools the image for 2 ms)
        return predict(0, vmas=vmas, profile=profile_path, cpus=1, samples=100, warm=True, **kw)["fork_latency_us"]["p50"]

    rows, base_p50 = [], {}  # (vmas, wait) -> the base case's prediction (three bases serve every case)
    for m in measured:
        flag = m.get("flag", "")
        if m["what"] == "fds" and m["fds"] != 3:
            kw, case = {"fds": int(m["fds"])}, f"{m['fds']} fds"
        elif m["what"] == "flag" and flag.startswith("CLONE_NEW"):
            kw, case = {"flags": [flag]}, flag
        elif m["what"] in ("children", "children_any") and m["live_children"] and "after_walk" in m:
            # the fork itself, and the fork right after a waitpid(-1) walk of them (wait = "any")
            walked = bool(m["after_walk"])
            kw = {"live_children": int(m["live_children"]), "wait": "any" if walked else "pid"}
            case = f"{m['live_children']} live children" + (", after a waitpid(-1) walk" if walked else "")
        elif m["what"] == "children" and m["live_children"]:  # profiles before 2026-12-03: the walk not told apart
            kw, case = {"live_children": int(m["live_children"])}, f"{m['live_children']} live children"
        else:
            continue
        vmas = int(m.get("vmas") or 25)
        pred, meas = p50(vmas, **kw), float(m["call_p50_us"])
        row = {"case": case, "measured_p50_us": meas, "forksim_p50_us": pred, "rel_error": (pred - meas) / meas}
        base = _copies_base(m, measured)
        if base is not None:
            wait = kw.get("wait", "pid")
            if (vmas, wait) not in base_p50:
                base_p50[vmas, wait] = p50(vmas, wait=wait)
            row.update(measured_extra_us=meas - float(base["call_p50_us"]), forksim_extra_us=pred - base_p50[vmas, wait])
        rows.append(row)
    return rows


def _copies_base(m: dict, measured: list[dict]) -> dict | None:
    """The base case of a clonebench case in the same run: 3 fds for the fd table, a plain clone() for a clone
    flag, no live children (the same wait style) for the live children."""
    def is_base(b: dict) -> bool:
        if m["what"] == "fds":
            return b["what"] == "fds" and b.get("fds") == 3
        if m["what"] == "flag":
            return b["what"] == "flag" and b.get("flag") == "none"
        return b["what"] == m["what"] and not b.get("live_children") and b.get("after_walk") == m.get("after_walk")
    return next((b for b in measured if is_base(b) and b.get("call_p50_us") is not None), None)


def cold_check(profile_path: str, cold: list[dict]) -> list[dict]:
    """The cold forks measured after a sleep (pinned, and unpinned on every CPU: cond "unpinned") or a
    co-runner's sweep on the parent's CPU (pinned) beside `forksim run` of a closed loop on this machine's
    CPUs, its parent pinned where forkbench's was (workload.pin: not a one-CPU machine, whose kernel would
    scale its base slice down, model.slice_factor), that states only the image and the gap (think time),
    and for a sweep the bytes swept (workload.other_work): the warmth terms at work, and after a sweep the
    scheduler too (the co-runner's wake-up can leave the child running before fork() returns, once the
    fork outlasts the parent's slice: compared by fork() wall time)."""
    import os

    from ..calibration.cold_scatter import is_layout
    from ..config import parse_config
    from ..runner import run_experiment

    rows = []
    for c in sorted(cold, key=lambda c: (c["rss_bytes"], is_layout(c["cond"]), c["cond"], c["x"])):
        work = c.get("cond") == "work" and c.get("fork_wall_p50_us") and c.get("gap_p50_us")
        if c.get("cond") not in ("sleep", "unpinned") and not is_layout(c["cond"]) and not work:
            continue
        think = float(c["gap_p50_us"]) if work else float(c["x"])
        other = {"other_work": int(c["x"])} if work else {}
        meas = float(c["fork_wall_p50_us"]) if work else float(c["fork_p50_us"])
        exp = parse_config({
            "experiment": {"name": "cold-check", "duration": 1e12, "warmup": 0, "replications": 1, "seed": 0,
                           "max_creations": 60 if c["x"] < 100_000 else 15},
            "machine": {"cpus": len(os.sched_getaffinity(0)), "profile": profile_path},
            "workload": {"kind": "closed", "parents": 1, "think_time": think, "pin": c["cond"] != "unpinned", **other,
                         "image": {"rss": int(c["rss_bytes"]), "vmas": int(c.get("vmas") or 26),
                                   **({"anon_vmas": int(c["anon_vmas"])} if c.get("anon_vmas") is not None else {}),
                                   **({"scatter": float(c["scatter"])} if c.get("scatter") is not None else {})},
                         "child": {"clone": FORK, "lifetime": 0.0}}}, source="calibrate", resolved=True)
        pred = run_experiment(exp).summary["fork_latency_us"]["p50"]
        rows.append({**c, "measured_p50_us": meas, "forksim_p50_us": pred, "rel_error": (pred - meas) / meas})
    _cold_extras(rows)
    return rows


def _cold_extras(rows: list[dict]) -> None:
    """Each cold row's extra over the back-to-back fork of its own size, measured (the cold grid's own gap-0
    run) and simulated (forksim's gap 0), and the error on that extra: like with like. The grid runs minutes
    after the fork sweep that gave the back-to-back cost, on a host that drifts by tens of percent between
    them (2026-12-02 quick calibration: 64 MiB back to back 1,158-1,564 us over the sweep's rounds, 1,777 us in
    the grid), so the absolute error of a cold row holds that drift; its extra does not."""
    from ..calibration.cold_scatter import is_layout

    def own(r: dict) -> tuple[int, str]:  # a layout run's reference is its own layout back to back
        return r["rss_bytes"], r["cond"] if is_layout(r["cond"]) else "sleep"

    b2b = {own(r): r for r in rows if (r["cond"] == "sleep" or is_layout(r["cond"])) and r["x"] == 0}
    for r in rows:
        ref = b2b.get(own(r))
        if ref is None or r is ref or r["cond"] == "work":  # a sweep's row is wall time: no like to compare
            continue
        r["extra_us"] = r["fork_p50_us"] - ref["fork_p50_us"]
        r["forksim_extra_us"] = r["forksim_p50_us"] - ref["forksim_p50_us"]
        r["extra_error"] = (r["forksim_extra_us"] - r["extra_us"]) / r["extra_us"] if r["extra_us"] > 0 else None


def _run_checks(profile_path: str, diag: dict) -> dict[str, list[dict]]:
    """The report's simulations of what calibration measured (held-out sizes, other families, copies, cold
    forks), side by side in workers forked from this process (forked_map: they start with its imports, the
    model's modules; executor.LocalPool's forkserver start took ~1.3 s of its own): they are independent, and
    the measurements are over, so the CPUs are free. The family check goes one family a job: its 2,000-sample
    predictions took 1.3 s of the pool's 1.9 s as one job (2026-12-05, quick profile; the other three 1.0 s
    together); the cold and copies checks, ~0.5 s each, go first."""
    from ..calibration.forked import forked_map

    jobs = [("families", family_check, {name: v}) for name, v in diag.get("variants_us", {}).items()]
    jobs += [("cold", cold_check, diag.get("cold_forks", [])),
             ("copies", copies_check, diag.get("copies", {}).get("measured", [])),
             ("held_out", held_out_check, diag.get("held_out", []))]
    done = forked_map(lambda job: job[1](profile_path, job[2]), jobs,
                      cost=lambda job: 2 if job[0] in ("cold", "copies") else 0 if job[0] == "held_out" else 1)
    out: dict[str, list[dict]] = {"families": [], "cold": [], "copies": [], "held_out": []}
    for (name, _fn, _arg), rows in zip(jobs, done):
        out[name] += rows
    return out


def main(args: argparse.Namespace) -> int:
    from ..calibration import calibrate

    from ..host import this_host
    from ..store import store_dir

    out = args.out or str(store_dir() / f"{this_host().slug()}.json")
    if not args.out:  # the user's profile store: made on first use
        store_dir().mkdir(parents=True, exist_ok=True)
    prof = calibrate(out, quick=args.quick, progress=_Bar() if not args.quiet else False, raw_out=args.raw,
                     use_tracefs=False if args.no_tracefs else None, name=None if args.out else this_host().slug(),
                     compact=not args.no_compact)
    prov = prof["provenance"]
    console.print(f"wrote {out} ({prov.get('duration_s')} s; tracepoints: "
                  f"{'yes' if prov.get('tracefs') else 'no — ' + str(prov.get('tracefs_reason'))})")
    if not args.out:
        console.print(f"profile '{prof['name']}' is now used by every forksim command on a host like this one "
                      f"({this_host().describe()}) unless a config or --profile names another")
    diag = prof.get("diagnostics", {})
    checks = _run_checks(out, diag)
    _held_out_table(checks["held_out"])
    _fit_table(diag)
    _family_table(checks["families"])
    _copies_table(checks["copies"])
    _scattered_table(diag)
    _cold_table(checks["cold"], diag)
    _exit_line(prof.get("warmth"), diag.get("warmth_fit", {}).get("exit"))
    _remote_line(prof.get("warmth"), diag.get("warmth_fit", {}).get("remote"))
    fit = diag.get("warmth_fit", {})
    _families_line(prof.get("warmth"), fit.get("families_extra_us"), fit.get("families_rest_extra_us"))
    return 0


def _held_out_table(rows: list[dict]) -> None:
    """The held-out sizes' measured fork() p50 beside forksim's prediction."""
    if not rows:
        return
    t = Table(title="held-out sizes (left out of the fit): measured vs forksim predict, pinned, fork() p50",
              title_justify="left")
    for c in ("RSS", "VMAs", "THP", "measured (us)", "forksim (us)", "error"):
        t.add_column(c, justify="right")
    for r in rows:
        t.add_row(f"{int(r['rss_bytes']) >> 20} MiB", str(r.get("vmas", "-")), "on" if r.get("thp") else "off",
                  fmt(r["fork_p50_us"]), fmt(r["forksim_p50_us"]), f"{100 * r['rel_error']:+.1f}%")
    console.print(t)


def _copies_table(cop: list[dict]) -> None:
    """fds, namespaces and live children: measured call p50 beside forksim's, and each case's extra."""
    if not cop:
        return
    t = Table(title="fds, namespaces, live children (pinned, RSS ~0): measured vs forksim predict, call p50; "
              "extra: over the case's base in the same run (3 fds, a plain clone(), no live children), what the "
              "profile's terms price", title_justify="left")
    for c in ("case", "measured (us)", "forksim (us)", "error", "extra (us)", "forksim extra (us)"):
        t.add_column(c, justify="left" if c == "case" else "right")
    for r in cop:
        t.add_row(r["case"], fmt(r["measured_p50_us"]), fmt(r["forksim_p50_us"]), f"{100 * r['rel_error']:+.1f}%",
                  fmt(r["measured_extra_us"]) if "measured_extra_us" in r else "-",
                  fmt(r["forksim_extra_us"]) if "forksim_extra_us" in r else "-")
    console.print(t)


def _cold_table(cold: list[dict], diag: dict) -> None:
    """The cold forks beside forksim run's, the back-to-back drift between the sweep and the cold grid, and the
    images' spread."""
    if not cold:
        return
    t = Table(title="cold forks (after a sleep or a co-runner's sweep on the same CPU; scatter: an image touched "
              "in a random order or in runs of K pages): measured vs forksim run (closed loop, think time = the "
              "gap), fork() p50 (after a sweep: wall time); extra: over the pinned back-to-back fork of the same "
              "size and layout (gap 0)",
              title_justify="left")
    for c in ("RSS", "before", "gap (ms)", "parent", "measured (us)", "forksim (us)", "error", "extra (us)",
              "forksim extra (us)", "extra error"):
        t.add_column(c, justify="right")
    for r in cold:
        work, ee = r["cond"] == "work", r.get("extra_error")
        gap = r["gap_p50_us"] if work else r["x"]
        layout = r["cond"] not in ("sleep", "unpinned", "work")
        before = f"sweep {int(r['x']) >> 20} MiB" if work else f"sleep, {r['cond']}, scatter {r['scatter']:.2f}" \
            if layout else "sleep"
        t.add_row(f"{int(r['rss_bytes']) >> 20} MiB", before,
                  f"{gap / 1000:.3g}", "unpinned" if r["cond"] == "unpinned" else "pinned",
                  fmt(r["measured_p50_us"]), fmt(r["forksim_p50_us"]), f"{100 * r['rel_error']:+.1f}%",
                  fmt(r["extra_us"]) if "extra_us" in r else "-",
                  fmt(r["forksim_extra_us"]) if "forksim_extra_us" in r else "-",
                  f"{100 * ee:+.1f}%" if ee is not None else "-")
    console.print(t)
    sweep = _sweep_p50(diag)
    pairs = [(int(r["rss_bytes"]), sweep[int(r["rss_bytes"])], r["fork_p50_us"])
             for r in cold if r["cond"] == "sleep" and r["x"] == 0 and int(r["rss_bytes"]) in sweep]
    if pairs:
        console.print("back to back, the fork sweep's p50 (what forksim prices) / the cold grid's, us: "
                      + "; ".join(f"{rss >> 20} MiB {fmt(a)} / {fmt(b)}" for rss, a, b in pairs)
                      + " (the same fork minutes apart: the host's drift)")
        _drift_warning(pairs)
    _spread_line(cold)


def _families_line(warmth: dict | None, points: dict | None, rest: dict | None = None) -> None:
    """The creations that copy no image after sleeps: their extras (the call's, and the rest of the round trip's
    where measured), and the fully cold extras fitted to them."""
    if not points:
        return
    full, rest = (warmth or {}).get("families", {}), rest or {}

    def kind_line(kind: str, pts: list) -> str:
        line = f"{kind} " + ", ".join(f"{e:+,.1f} after {g:g} ms" for g, e in pts)
        if kind in full:
            line += f" -> fully cold +{fmt(full[kind]['full_us'])} over {full[kind]['tau_us'] / 1000:.1f} ms"
            if "before_wakeup" in full[kind]:  # traced: the share of it before wake_up_new_task places the child
                line += f", {full[kind]['before_wakeup']:.0%} of it before the placement"
        if rest.get(kind):
            line += (" (rest of the round trip " + ", ".join(f"{e:+,.1f}" for _, e in rest[kind])
                     + (f" -> +{fmt(full[kind]['rest_full_us'])}" if full.get(kind, {}).get("rest_full_us") is not None
                        else "") + ")")
        return line

    console.print("cold creations that copy no image (pinned, after sleeps): call p50 over back to back, us: "
                  + "; ".join(kind_line(kind, pts) for kind, pts in points.items()))


def _remote_line(warmth: dict | None, points: dict | None) -> None:
    """The forks whose children exit on the other CPU: their extras, and the per-page terms fitted to them."""
    if not points:
        return
    terms = (warmth or {}).get("remote", {})
    slopes = {stage: t for stage, t in terms.items() if t.get("per_pte_us")}
    wake = (points.get("0") or {}).get("exit_wake_us")
    console.print("children exiting on the other CPU (pinned parent, forkbench -R), p50 over exits on its CPU, us: "
                  + "; ".join(f"{int(rss) >> 20} MiB fork {p['fork_extra_us']:+,.0f}, exit {p['exit_extra_us']:+,.0f}"
                              for rss, p in points.items())
                  + ("; priced beyond the empty image's, per page up to a cap: "
                     + ", ".join(f"{stage} {t['per_pte_us'] * 1e3:.1f} ns up to {t['pte_cap']:,.0f} pages"
                                 for stage, t in slopes.items()) if slopes else "; no per-page remote terms")
                  + ("" if wake is None else f"; the empty image's exit over the parent's cross-CPU wake-up ({wake:.1f}"
                     f" us): exit_mmap {terms.get('exit_mmap', {}).get('fixed_us', 0.0):.1f} us"))


def _exit_line(warmth: dict | None, points: dict | None) -> None:
    """The cold exits (the child slept before its exit) and the residual shares the fit took from them."""
    if not points:
        return
    console.print("cold exits (the child slept before its exit, pinned): exit + reap p50 back to back -> fully cold, us: "
                  + "; ".join(f"{int(rss) >> 20} MiB {fmt(p['exit_warm_us'])} -> +{fmt(p['exit_full_us'])}"
                              for rss, p in points.items())
                  + ("; share of a walk's coldness left right after it (pages, share): "
                     + ", ".join(f"({p:,.0f}, {r:.2f})" for p, r in warmth["residual"])
                     if warmth and warmth.get("residual") else ""))


# An in-order image whose struct pages spread over this many times a dense range's vmemmap pages came from
# fragmented free lists (2026-12-02, Intel host: mostly 1.0-1.4; 3-10 for the first images after a fragmenting run)
SPREAD_NOTE = 2.0


def _family_table(rows: list[dict]) -> None:
    """family_check's rows: each other family's measured p50 and p99 beside forksim's."""
    if not rows:
        return
    t = Table(title="other families (pinned, empty image): measured vs forksim predict, p50 and p99",
              title_justify="left")
    for c in ("family", "what", "p50 measured (us)", "forksim (us)", "error", "p99 measured (us)", "forksim (us)",
              "error"):
        t.add_column(c, justify="left" if c in ("family", "what") else "right")
    for r in rows:
        e99 = r["rel_error_p99"]
        t.add_row(r["family"], r["what"], fmt(r["measured_p50_us"]), fmt(r["forksim_p50_us"]),
                  f"{100 * r['rel_error']:+.1f}%", fmt(r["measured_p99_us"]), fmt(r["forksim_p99_us"]),
                  "-" if e99 is None else f"{100 * e99:+.1f}%")
    console.print(t)


def _spread_line(cold: list[dict]) -> None:
    """The in-order images' layout in the cold grid, and a note where their struct pages spread (fragmented free
    lists): the cold terms are fitted per unit of it (warmth per_spread), which rests on the extra growing about
    linearly with the spread (calibration/data/layout-spread-20261202.json, README "spread")."""
    seen = {int(r["rss_bytes"]): (r["scatter"], r["spread"]) for r in cold
            if r["cond"] == "sleep" and r.get("spread") is not None and r.get("scatter") is not None}
    if not seen:
        return
    console.print("in-order images of the cold grid: " + "; ".join(
        f"{rss >> 20} MiB scatter {sc:.3f} spread {sp:.2f}" for rss, (sc, sp) in sorted(seen.items()))
        + " (spread: vmemmap pages x 64 / pages, 1 = one dense range of frames)")
    spread = [rss >> 20 for rss, (_, sp) in sorted(seen.items()) if sp > SPREAD_NOTE]
    if spread:
        console.print(f"[yellow]note: the free lists handed the {', '.join(f'{m} MiB' for m in spread)} image(s) frames "
                      f"spread over more than {SPREAD_NOTE:g}x the struct pages of a dense range; their cold extra is "
                      "larger than a dense image's (4-7x at spread ~10 on this machine kind), and the profile's cold "
                      "terms are fitted per unit of spread (warmth per_spread), which assumes it grows linearly; a "
                      "later calibration may find denser free lists[/yellow]")


# a fitted configuration the profile misses by more than this (validate's fork() p50 target) is named in a warning
FIT_MISS = 0.15


def _fit_table(diag: dict) -> None:
    """The fork sweep's fitted configurations: each one's measured fork() p50 beside the fitted profile's (in sample),
    and a warning naming those it misses by more than FIT_MISS: a fit through a host that drifted between the sizes
    (2026-12-05 14:53, a quick calibration on the Intel host: 256 MiB +14%, 1 GiB -23%, and `forksim predict` at 1 GiB
    22-28% under the pinned forks that followed) is no better at the sizes in between."""
    rows = [r for r in diag.get("fit_in_sample") or [] if r.get("fork_p50_us")]
    if not rows:
        return
    t = Table(title="fitted configurations (in sample): measured vs the fitted profile, pinned, fork() p50",
              title_justify="left")
    for c in ("configuration", "measured (us)", "profile (us)", "error"):
        t.add_column(c, justify="left" if c == "configuration" else "right")
    missed = []
    for r in rows:
        err = (r["profile_predicted_p50_us"] - r["fork_p50_us"]) / r["fork_p50_us"]
        t.add_row(r["config"], fmt(r["fork_p50_us"]), fmt(r["profile_predicted_p50_us"]), f"{100 * err:+.1f}%")
        if abs(err) > FIT_MISS:
            missed.append(f"{r['config']} ({100 * err:+.0f}%)")
    console.print(t)
    if missed:
        console.print(f"[yellow]warning:[/] the fitted profile misses {', '.join(missed)} by more than "
                      f"{100 * FIT_MISS:.0f}% of what calibrate measured there: the fork's cost was not one linear "
                      "function of the image's size and VMAs while it was measured (the host drifting between the "
                      "configurations, or a cost the model lacks), and predictions near them carry that error. "
                      "Calibrating again when the host is quieter, or with the full plan (no --quick), fits more "
                      "rounds.")


def _scattered_table(diag: dict) -> None:
    """The images whose pages were touched in a random order (calibration/layout.py): their fork() p50 beside
    the profile's own prediction at their measured scatter, and the A/B difference from the in-order image."""
    rows = diag.get("scattered_fork") or []
    if not rows:
        return
    t = Table(title="scattered images (pages touched in a random order): measured vs the profile at the image's "
              "scatter, pinned, fork() p50; difference: over the in-order image of the same size and round; spread: "
              "how far the frames lie apart (vmemmap pages x 64 / pages, 1 = one dense range; not priced)",
              title_justify="left")
    for c in ("RSS", "fit", "scatter", "spread", "measured (us)", "profile (us)", "error", "diff (us)",
              "profile diff (us)", "exit diff (us)", "profile exit diff (us)"):
        t.add_column(c, justify="right")
    for r in rows:
        md, pd = r["measured_diff_us"], r["predicted_diff_us"]
        t.add_row(f"{int(r['rss_bytes']) >> 20} MiB", "held out" if r["held_out"] else "fitted", f"{r['scatter']:.2f}",
                  fmt(r.get("spread")), fmt(r["measured_p50_us"]), fmt(r["profile_predicted_p50_us"]), f"{100 * r['rel_error']:+.1f}%",
                  fmt(md["dup_mmap"]), fmt(pd["dup_mmap"]), fmt(md["exit_mmap"]), fmt(pd["exit_mmap"]))
    if not console.is_terminal:
        console.width = max(console.width, 140)
    console.print(t)
    fresh = diag.get("image_layout", {}).get("sweep_scatter")
    if fresh:
        console.print("scatter of the fork sweep's images (touched in address order): "
                      + ", ".join(f"{k} {v:.3f}" for k, v in fresh.items()))
    first = diag.get("image_layout", {}).get("first_images_scatter")
    if first:
        console.print("scatter of the first images this calibration touched (as a process started now meets the free "
                      "lists; fresh_image_scatter's value is the sweep's median, its breaks by size the cold grid's): "
                      + ", ".join(f"{int(rss) >> 20} MiB {s:.3f}" for rss, s in first))


# The same pinned back-to-back fork measured twice in one calibration, further apart than this, says the host's other
# tenants were busy meanwhile (the validation marks rows whose canary moved as far: validation.metrics.DRIFT_NOTE).
_DRIFT_WARN = 0.15


def _drift_warning(pairs: list[tuple[int, float, float]]) -> None:
    """Say so when the fork sweep and the cold grid found the same back-to-back fork far apart: the runs between them
    (the cold grid, the exits, the remote frees) were measured on a host that was moving."""
    moved = [(rss, b / a - 1.0) for rss, a, b in pairs if a > 0 and abs(b / a - 1.0) > _DRIFT_WARN]
    if moved:
        console.print("[yellow]warning: the host moved while this calibration ran (the same back-to-back fork "
                      + ", ".join(f"{rss >> 20} MiB {d:+.0%}" for rss, d in moved)
                      + " between the fork sweep and the cold grid): other tenants were busy, and the cold, exit and "
                      "remote terms measured meanwhile may be theirs; run `forksim calibrate --quick` again when the "
                      "host is quiet[/yellow]")


def _sweep_p50(diag: dict) -> dict[int, float]:
    """The fork sweep's pinned back-to-back p50 per RSS at the base shape (the fitted and held-out sizes)."""
    out = {int(h["rss_bytes"]): float(h["fork_p50_us"]) for h in diag.get("held_out", [])}
    for lab, v in diag.get("fork_p50_us", {}).items():
        if lab.endswith("MiB") and " " not in lab:
            out.setdefault(int(lab[:-3]) << 20, float(v["p50"]))
        elif lab.endswith("GiB") and " " not in lab:
            out.setdefault(int(lab[:-3]) << 30, float(v["p50"]))
    return out
