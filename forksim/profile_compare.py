"""Two profiles side by side: each stage's cost terms and its median at reference images, with B/A
(`forksim profiles --compare A B`), and a figure of the same."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .kernel.stages import FORK_PATH
from .profile import STAGES, TERMS, ImageShape, Profile

__all__ = ["REFERENCE_SHAPES", "FORK_PATH", "compare_profiles", "plot_comparison"]

MiB = 1024**2
# The parent images the medians are shown at: an empty image, 256 MiB and 1 GiB of 4 KiB pages
# (40 VMAs, 20 of them anonymous, no THP: the `forksim predict` defaults).
REFERENCE_SHAPES: dict[str, ImageShape] = {
    "RSS 0": ImageShape.from_rss(0, 40, 20, False),
    "RSS 256 MiB": ImageShape.from_rss(256 * MiB, 40, 20, False),
    "RSS 1 GiB": ImageShape.from_rss(1024 * MiB, 40, 20, False),
}
# FORK_PATH: the stages inside the parent's fork() call, in kernel order (their sum is the call's
# median on an idle machine, less lock waits and interruptions): kernel/stages.py marks them.
# Scheduler and machine costs worth putting side by side (fixed_us is their median).
_MACHINE = ("idle_wake", "context_switch", "migration")


def _ratio(a: float, b: float) -> float | None:
    return b / a if a > 0 else None


# The linear terms (with the VMAs' tree insertions, per_vma_log_us) and the cache-miss term of a page walk
# (StageCost.per_pte_miss_us, with its cache curve)
COMPARED_TERMS = (*TERMS, "per_pte_miss_us")


def compare_profiles(a: Profile, b: Profile) -> dict[str, Any]:
    """{"terms": [...], "medians": [...], "machine": [...]}: rows of A's value, B's value and B/A.
    `terms`: every non-zero cost term of every stage (us); `medians`: each stage's median (us) at each
    reference shape, and the fork() call's path summed; `machine`: scheduler, placement, interruptions."""
    terms, medians = [], []
    for stage in STAGES:
        sa, sb = a.stages[stage], b.stages[stage]
        for term in COMPARED_TERMS:
            va, vb = getattr(sa, term), getattr(sb, term)
            if va or vb:
                terms.append({"stage": stage, "term": term, "a": va, "b": vb, "ratio": _ratio(va, vb)})
        row = {"stage": stage}
        for label, shape in REFERENCE_SHAPES.items():
            ma, mb = sa.median_us(shape), sb.median_us(shape)
            row[label] = {"a": ma, "b": mb, "ratio": _ratio(ma, mb)}
        medians.append(row)
    total = {"stage": "fork() call (the path's stages summed)"}
    for label, shape in REFERENCE_SHAPES.items():
        ma = sum(a.stages[s].median_us(shape) for s in FORK_PATH)
        mb = sum(b.stages[s].median_us(shape) for s in FORK_PATH)
        total[label] = {"a": ma, "b": mb, "ratio": _ratio(ma, mb)}
    medians.append(total)
    machine = []
    for name in _MACHINE:
        va, vb = getattr(a.scheduler, name).fixed_us, getattr(b.scheduler, name).fixed_us
        machine.append({"what": f"scheduler.{name} (us)", "a": va, "b": vb, "ratio": _ratio(va, vb)})
    for key in sorted(a.placement.keys() | b.placement.keys()):  # the per-family shares where either measured them
        fa, fb = a.placement.get(key), b.placement.get(key)
        va, vb = (fa.value if fa else None), (fb.value if fb else None)
        machine.append({"what": f"placement.{key} (share)", "a": va, "b": vb,
                        "ratio": _ratio(va, vb) if va is not None and vb is not None else None})
    # optional sections, where either profile has them: (section, row label, the figure of the section)
    optional = (("interruptions", "interruptions.rate_per_s (/s)", lambda x: x.rate_per_s),
                ("interruptions", "interruptions.duration (us)", lambda x: x.duration.fixed_us),
                ("host_speed", "host_speed.slow_share (share of time)", lambda x: x.slow_share),
                ("host_speed", "host_speed.slow_factor p50 (x)",
                 lambda x: float(np.interp(0.5, x.probabilities, x.slow_factor))),
                ("remote_free", "remote_free.fixed_us (us)", lambda x: x.fixed_us),
                ("remote_free", "remote_free.thread_us (us)", lambda x: x.thread_us),
                ("warmth", "warmth.remote.exit_mmap.fixed_us (us)",
                 lambda x: x.remote["exit_mmap"].fixed_us if "exit_mmap" in x.remote else None),
                ("concurrent_creation", "concurrent_creation.fork_us (us)", lambda x: x.fork_us),
                ("concurrent_creation", "concurrent_creation.exit_us (us)", lambda x: x.exit_us))
    for section, what, figure in optional:
        sa, sb = getattr(a, section), getattr(b, section)
        fa, fb = (figure(sa) if sa is not None else None), (figure(sb) if sb is not None else None)
        if fa is None and fb is None:  # neither profile has the section, or the figure within it
            continue
        machine.append({"what": what, "a": fa, "b": fb,
                        "ratio": _ratio(fa, fb) if fa is not None and fb is not None else None})
    ha, hb = a.fingerprint(), b.fingerprint()
    return {"a": a.name, "b": b.name,
            "a_host": ha.describe() if ha else "no host (published figures)",
            "b_host": hb.describe() if hb else "no host (published figures)",
            "shapes": {k: {"ptes": v.ptes, "vmas": v.vmas, "anon_vmas": v.anon_vmas} for k, v in REFERENCE_SHAPES.items()},
            "terms": terms, "medians": medians, "machine": machine}


def plot_comparison(cmp: dict[str, Any], path: str | Path) -> Path:
    """One panel per reference shape: each fork-path stage's median for A and B (log scale), B/A
    written beside each pair."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in cmp["medians"] if r["stage"] in FORK_PATH or r["stage"].startswith("fork()")]
    names = [r["stage"] if not r["stage"].startswith("fork()") else "fork() call" for r in rows]
    fig, axes = plt.subplots(1, len(REFERENCE_SHAPES), figsize=(5 * len(REFERENCE_SHAPES), 4.2), sharey=True)
    y = range(len(rows))
    for ax, label in zip(axes, REFERENCE_SHAPES):
        a = [max(r[label]["a"], 1e-3) for r in rows]
        b = [max(r[label]["b"], 1e-3) for r in rows]
        ax.barh([i - 0.2 for i in y], a, height=0.4, label=f"A: {cmp['a']}", color="#4c72b0")
        ax.barh([i + 0.2 for i in y], b, height=0.4, label=f"B: {cmp['b']}", color="#dd8452")
        for i, r in enumerate(rows):
            ratio = r[label]["ratio"]
            if ratio is not None:
                ax.text(max(a[i], b[i]) * 1.15, i, f"x{ratio:.2f}", va="center", fontsize=8)
        ax.set_xscale("log")
        ax.set_title(label)
        ax.set_xlabel("median (us, log scale)")
        ax.set_xlim(right=max(max(a), max(b)) * 8)
    axes[0].set_yticks(list(y), names)
    axes[0].invert_yaxis()
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=2, fontsize=8)
    fig.suptitle(f"stage medians, B/A beside each pair: A = {cmp['a']} ({cmp['a_host']}), "
                 f"B = {cmp['b']} ({cmp['b_host']})", fontsize=9)
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
