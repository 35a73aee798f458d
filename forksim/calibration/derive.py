"""From raw measurements to a profile: the stage costs, the scheduler section and the diagnostics.

`build_profile` assembles what the per-family fitters return, each a set of typed stage costs
(`forksim.profile.StageCost`): the fork path (fork_path.py: fork() against the image, the split of its
fixed part, the thread variant, the stack cache), the child's lifetime (lifetime.py: first run, exec,
exit and reap, COW and page faults), the scheduler, placement and do_exit's head share
(scheduling.py) and the cold-fork terms (warmth.py); then each creation family's fixed cost is fitted to
its own untraced loop, the traced segments only apportioning it (families.py). What cannot be separated
is an explicit assumption with its reasoning in `source`.
"""

from __future__ import annotations

from typing import Any

from ..errors import MeasurementError
from ..kernel.stages import DUP_MMAP, EXIT_MMAP, FORK_PATH
from ..profile import STAGES, ImageShape, Profile, StageCost
from .concurrency import fit_concurrent_creation
from .families import fit_families
from .fit import median, stage_json
from .fork_path import (ForkTotals, fit_fork_path, fit_remote_free, fit_stack_vmalloc, fit_thread_setup, fork_split,
                        fork_totals, trace_segments)
from .layout import LayoutFit, scatter_rows, sweep_spread, with_scatter
from .lifetime import fit_child_start, fit_exec, fit_exit, fit_faults, fit_vfork_wait_reap
from .plan import FORK_MODE, FORKEXEC_MODE, VARIANTS, MiB, Plan, Store, label as _label
from .samples import Evidence, group, pct, preempted_share, seg_cfgs, vals
from .scheduling import exit_head_share, fit_placement, fit_scheduler
from .warmth import cross_cpu_wake_us, fit_warmth, grid_scatters, grid_spreads

__all__ = ["build_profile"]

# the profile's exit_head_share when the calibration could not measure it (the model's fallback)
_DEFAULT_HEAD = Profile.model_fields["exit_head_share"].default_factory().value

_ABOUT = ("fits: NNLS on per-configuration medians weighted by 1/median; cross_validation: leave one "
          "configuration out, refit, predict its p50 (a configuration that alone determines a term, e.g. the "
          "only THP or VMA-count size in a traced fit, cannot be predicted without it: errors near -1 there "
          "mean 'unidentifiable', not a bad fit); residual quantiles: sample / median of its configuration "
          "at p = 0.005, 0.05, ..., 0.95, 0.995; held_out: sizes measured in the same rounds but never "
          "fitted, with the fork() p50 the profile predicts (sum of the fork-path stage medians, pinned, so "
          "without ipi_send); fork times: the parent's time inside fork(), pinned, taken as its thread CPU "
          "time over the call (CLOCK_THREAD_CPUTIME_ID), which equals the wall time when nothing preempted "
          "it and stays the intrinsic cost when other load on this shared machine preempts a long copy at "
          "its cond_resched points; only the samples that kept their CPU are used when there are enough, "
          "else each sample's CPU time is taken back to zero time preempted along a Theil-Sen slope "
          "(preempted copies resume with cold caches); fork_wall_p50_us and preempted_share give the "
          "wall-clock view")


def build_profile(store: Store, plan: Plan, facts: dict[str, Any], traced: bool, cpu: int,
                  extra_prov: dict[str, Any]) -> dict[str, Any]:
    """The profile (a dict in the profile file's schema) fitted to one calibration's raw samples."""
    ev = Evidence(store, cpu, traced, diag={"plan": plan.name, "refused": store.refused, "notes": list(store.notes),
                                            "about": _ABOUT})
    totals = fork_totals(ev, plan)
    trace_segments(ev)
    split = fork_split(ev, totals)
    st: dict[str, StageCost] = fit_fork_path(ev, totals, split)
    st.update(fit_thread_setup(ev, split))
    st.update(fit_stack_vmalloc(ev))
    remote_free = fit_remote_free(ev, st)
    concurrent = fit_concurrent_creation(ev)
    st.update(fit_child_start(ev))
    st.update(fit_exec(ev))
    st.update(fit_exit(ev))
    for name in (DUP_MMAP, EXIT_MMAP):  # an image out of physical order (layout.py)
        st[name] = with_scatter(st[name], totals.layout, name)
    st.update(fit_faults(ev))
    from .written import fit_written, with_written  # here: `python -m forksim.calibration.written` runs it as main

    written = fit_written(store)
    st[DUP_MMAP] = with_written(st[DUP_MMAP], written)
    if written is not None:
        ev.diag["written_ptes"] = written["rows"]
    sched, st["ipi_send"] = fit_scheduler(ev, facts)
    exit_head = exit_head_share(store)
    vfork_reap = fit_vfork_wait_reap(store)
    # each family's fixed cost to its own untraced loop (the traced runs only apportion it)
    st, vfork_reap, starts = fit_families(ev, st, sched["context_switch"].fixed_us,
                                          exit_head["value"] if exit_head else _DEFAULT_HEAD, vfork_reap)
    _variant_diagnostics(ev)
    _held_out(ev, totals, st)
    fresh = _fresh_scatter(ev, totals.layout)
    fresh_spread = _fresh_spread(ev)
    placement = fit_placement(store)
    ev.diag["placement_counts"] = {k: v.pop("_counts") for k, v in placement.items()}
    scheduler = {**{k: stage_json(v) for k, v in sched.items()},
                 **{k: c for k in ("idle_wake_curve", "ipi_send_curve") if (c := ev.diag["scheduler"].get(k))}}
    warmth, warmth_diag = fit_warmth(store, cross_cpu_wake_us(scheduler, st["ipi_send"].fixed_us))
    ev.diag.update(warmth_diag)

    missing = [s for s in STAGES if s not in st]
    if missing:
        raise MeasurementError(f"internal: stages not produced: {missing}")
    prov = dict(facts)
    prov.update(extra_prov)
    prov["tracefs"] = ev.traced
    prov["measured_cpu"] = cpu
    return {
        "format": "forksim-profile",
        "version": 1,
        "name": extra_prov.get("profile_name", "calibrated"),
        "description": (f"calibrated on {facts['kernel']} ({facts['cpu_model']}, {facts['cpus']} CPUs), "
                        f"{plan.name} mode, {'with' if ev.traced else 'without'} tracepoints"),
        "provenance": prov,
        "stages": {s: stage_json(st[s]) for s in STAGES},
        "scheduler": scheduler,
        "stack_cache_per_cpu": 2,
        "placement": placement,
        **({"exit_head_share": exit_head} if exit_head else {}),
        **({"wait_reap_vfork": stage_json(vfork_reap)} if vfork_reap else {}),
        **{k: stage_json(v) for k, v in starts.items()},
        **({"warmth": warmth} if warmth else {}),
        **({"remote_free": remote_free} if remote_free else {}),
        **({"concurrent_creation": concurrent} if concurrent else {}),
        **({"fresh_image_scatter": fresh} if fresh else {}),
        **({"fresh_image_spread": fresh_spread} if fresh_spread else {}),
        "diagnostics": ev.diag,
    }


def _pinned_vs_unpinned(store: Store) -> dict[str, Any]:
    """Per fork configuration measured both ways: the call, round trip and child start, pinned or not."""
    cmp_ = {}
    for lab, runs in group(store, FORK_MODE, traced=False, mode=FORK_MODE).items():
        pinned = [r for r in runs if r["key"]["pinned"]]
        unp = [r for r in runs if not r["key"]["pinned"]]
        if unp:
            cmp_[lab] = {"pinned_fork_p50_us": round(median(vals(pinned, "fork_ns")), 2),
                         "unpinned_fork_p50_us": round(median(vals(unp, "fork_ns")), 2),
                         "pinned_rt_p50_us": round(median(vals(pinned, "rt_ns")), 2),
                         "unpinned_rt_p50_us": round(median(vals(unp, "rt_ns")), 2),
                         "pinned_child_start_p50_us": round(median(vals(pinned, "child_ns")), 2),
                         "unpinned_child_start_p50_us": round(median(vals(unp, "child_ns")), 2)}
    return cmp_


# the fork path's stages whose fixed part adds up to the fork() call (dup_mmap adds all its terms)
_FORK_CALL = tuple(s for s in FORK_PATH if s != DUP_MMAP)


def _variant_diagnostics(ev: Evidence) -> None:
    """The other creation kinds' calls and round trips at RSS 0, pinned and not; unpinned traced forks."""
    store = ev.store
    ev.diag["pinned_vs_unpinned"] = _pinned_vs_unpinned(store)
    var = {}
    for mode in VARIANTS.values():
        for pinned in (True, False):
            runs = [r for r in store.select(mode, pinned=pinned, traced=False) if r["key"]["rss"] == 0]
            if runs:
                shape = {k: runs[0]["shape"].get(k) for k in ("rss_bytes", "vmas", "anon_vmas")}
                var[f"{mode} {'pinned' if pinned else 'unpinned'}"] = {"call": pct(vals(runs, "fork_ns")),
                                                                       "roundtrip": pct(vals(runs, "rt_ns")),
                                                                       "mode": mode, "shape": shape}
    fe = [r for r in store.select(FORKEXEC_MODE, pinned=True) if r["key"]["rss"]]
    if fe:
        var[f"forkexec {_label(fe[0]['key'])} pinned"] = {"call": pct(vals(fe, "fork_ns")),
                                                          "roundtrip": pct(vals(fe, "rt_ns"))}
    ev.diag["variants_us"] = var
    if ev.traced:
        un = [s for r in store.select(FORK_MODE, traced=True, pinned=False) for s in r["segments"]]
        cross = [s for s in un if s.get("child_cross_cpu") == 1.0]
        ev.diag["unpinned_traced"] = {
            "forks": len(un), "child_on_other_cpu": len(cross),
            "E_cross_cpu_p50_us": round(median([s["E"] for s in cross if "E" in s]), 3) if cross else None,
            "child_start_cross_cpu_p50_us": round(median([s["child_start"] for s in cross
                                                          if "child_start" in s]), 3) if cross else None}
        ev.diag["thp_traced"] = {c.label: round(c.median, 3) for c in seg_cfgs(store, "B", thp=True)}


def _fresh_scatter(ev: Evidence, layout: LayoutFit | None) -> dict[str, Any] | None:
    """The profile's fresh_image_scatter: the median scatter of the fork sweep's freshly touched images, and by size
    the cold grid's (the images the cold terms and fresh_image_spread's fragments come from) as breaks: Scatter.at."""
    grid = grid_scatters(ev.store) or {}
    if (layout is None or not layout.fresh) and not grid:
        return None
    sweep = list(layout.fresh) if layout is not None else []
    v = round(median(sweep or list(grid.values())), 4)
    breaks = [[pages, round(sc * pages, 1)] for rss, sc in sorted(grid.items()) if (pages := rss // 4096)]
    by_size = ", ".join(f"{rss // MiB} MiB {sc:.3f}" for rss, sc in sorted(grid.items()))
    return {"value": v, **({"breaks": breaks} if breaks else {}), "source": (
        "measured: scatter (forksim.lab.pagemap.image_layout: share of consecutive private anonymous pages whose "
        "frames are not neighbours) of freshly touched images"
        + (f"; value: the {len(sweep)} images of 16 MiB and more that this calibration's pinned fork sweep touched in "
           f"address order, read at forkbench's gate before the first fork, median {v:.3f}, range {min(sweep):.3f} .. "
           f"{max(sweep):.3f}" if sweep else "")
        + (f"; breaks, what a config that does not state its scatter gets (Scatter.at): by size, the cold grid's slept "
           f"in-order images (every round's median: {by_size}) as a count of pages out of order, the images "
           f"fresh_image_spread's fragments come from: a process touching its image after others ran and exited, "
           f"where the sweep's images reuse the large blocks the previous size's exit just freed" if grid else "")
        + "; the buddy allocator's state on this host then: a long-lived or fragmented system hands out frames further "
          "from order")}


def _fresh_spread(ev: Evidence) -> dict[str, Any] | None:
    """The profile's fresh_image_spread: the median spread of the images fresh_image_scatter is read from, and by
    size the cold grid's (what the cold terms were measured at) as fragments: Spread.at."""
    spreads = sweep_spread(ev.store)
    grid = grid_spreads(ev.store) or {}
    if not spreads and not grid:
        return None
    v = round(min(64.0, max(1.0, median(spreads or list(grid.values())))), 3)
    fragments = [[pages, round((sp - 1.0) * pages / 64.0, 1)] for rss, sp in sorted(grid.items()) if (pages := rss // 4096)]
    by_size = ", ".join(f"{rss // MiB} MiB {sp:.2f}" for rss, sp in sorted(grid.items()))
    return {"value": v, **({"fragments": fragments} if fragments else {}), "source": (
        f"measured: spread (forksim.lab.pagemap.spread_of: the distinct 4 KiB vmemmap pages holding the image's "
        f"struct pages x 64 / pages) of freshly touched images"
        + (f"; value: the {len(spreads)} images fresh_image_scatter is read from, median {v:.2f}, range "
           f"{min(spreads):.2f} .. {max(spreads):.2f}" if spreads else "")
        + (f"; fragments, what a config that does not state its spread gets (Spread.at): by size, the cold grid's "
           f"slept in-order images (every round's median: {by_size}) as the vmemmap pages beyond a dense range's, so "
           f"that such a config's cold fork is priced at the spread its cold terms were measured at" if grid else "")
        + "; the buddy allocator's state on this host then: a process started after others exited gets frames among "
          "theirs, 1-10 at 64 MiB on the 2026-12-02/03 hosts, right after compaction about 1")}


def _held_out(ev: Evidence, totals: ForkTotals, st: dict[str, StageCost]) -> None:
    """The profile's own fork() prediction (the fork path's stage medians, pinned, at the image's measured
    scatter) beside the measured p50 of the held-out sizes and of the fitted ones (the fitted ones' measured
    p50 as measured, before their scatter term was taken out); the scattered images' (layout.py)."""
    def at(shape: ImageShape, stage: str = DUP_MMAP) -> float:
        return sum(st[n].fixed_us for n in _FORK_CALL) + st[stage].median_us(shape)

    def predict(shape: dict[str, Any], scatter: float = 0.0) -> float:
        return at(ImageShape(int(shape["vmas"]), int(shape["anon_vmas"]), int(shape["ptes"]), int(shape["pmds"]),
                             scatter=scatter))

    ho = []
    for c, runs in totals.held:
        sh = runs[0]["shape"]
        p = predict(sh, c.scatter)
        ho.append({"rss_bytes": int(runs[0]["key"]["rss"]), "vmas": int(sh["vmas"]), "anon_vmas": int(sh["anon_vmas"]),
                   "thp": False, "scatter": round(c.scatter, 4), "fork_p50_us": round(c.median, 3), "n": len(c.samples),
                   "fork_wall_p50_us": round(median(vals(runs, "fork_ns")), 3),
                   "preempted_share": preempted_share(runs),
                   "profile_predicted_p50_us": round(p, 3), "rel_error": round((p - c.median) / c.median, 4)})
    ev.diag["held_out"] = ho
    taken = ev.diag.get("image_layout", {}).get("dup_mmap_scatter_term_taken_out_us", {})
    ev.diag["fit_in_sample"] = [
        {"config": c.label, "fork_p50_us": round(c.median + taken.get(c.label, 0.0), 3),
         "profile_predicted_p50_us": round(predict(runs[0]["shape"], c.scatter), 3)}
        for c, runs in totals.train]
    shapes = {int(k["rss"]): r[0]["shape"] for _, r in totals.train + totals.held
              if not ((k := r[0]["key"])["thp"] or k["anon_vmas"] or k["file_vmas"])}
    ev.diag["scattered_fork"] = scatter_rows(totals.layout, lambda shape, stage: at(shape, stage), shapes)
