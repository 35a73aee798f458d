"""Cache warmth of a process's image: how cold a fork finds the parent's page tables and struct pages.

The stage costs are fitted from back-to-back loops, where each fork finds what the previous fork and
the child's exit walked still in the caches. copy_page_range (mm/memory.c) reads every parent PTE,
write-protects it and bumps the folio's mapcount and refcount (folio_try_dup_anon_rmap_ptes), and
writes the child's PTE: per 4 KiB page a PTE and a 64-byte struct page. After an idle gap (other
tenants of the host's shared cache, or the host itself, evict them), after other work on the same
CPU, or on another CPU, those lines come from memory instead, and the same walk costs more.

State kept here, per simulated machine: per mm, when and on which CPU its image was last walked
(fork, the exit of a child that shared its pages, COW), how many bytes that CPU's walks had
touched by then, and how cold that walk left it; per CPU, the running total of bytes walked on it (other
processes' images, and the memory a co-runner touches there: workload.other_work).

One walk does not make a cold image warm: a walk right after a cold one still pays a share of its cold
extra (Warmth.residual; on the 2026-12-03 Intel host, pinned, 1 s asleep: the exit right after a cold fork
and the fork right after a cold exit paid 0.2-0.4 of their fully cold extras at 0-64 MiB, 0.5-0.65 at 256 MiB;
calibration/data/exit-warmth-20261203.json). Passes over a buffer after 1 s asleep show the same: 64 MiB, one
byte a page, 555 / 230 / 148 / 113 us for the first four passes against 115 us warm. So a child's exit
(exit_mmap's zap of the struct pages it shares with the parent) has cold terms of its own, and its coldness is
the image's: the fork's residual right after the fork, the time since for a child that lived.
The profile's `warmth` curve turns that state into a coldness 0..1, and `ColdTerms` into microseconds.

A creation that copies no image (vfork, posix_spawn, a thread: CLONE_VM) cools too: the parent's task, mm,
files and signal structs, the slabs they come from, the kernel's code. Pinned on the 2026-12-04 zen4 host, a
pthread_create took 7 us back to back, 16-17 us after 1 ms and 40 us after 5 ms, asleep or spinning alike (time,
the host's other work, not the halt), 50-77 us from 30 ms on. The same state per mm for its last such creation
(MM.created_at), the image curve's footprint and migration terms and each kind's own curve (Warmth.families:
FamilyCold, calibration/cold_families.py) price it.

Where a walk's lines go matters as much as when: the lines a walk wrote stay in its CPU's private caches, and a walk
on the other CPU fetches them from there (Warmth.remote). Pinned, forkbench -R (each child pins itself to the other
CPU before it exits), the 2026-12-03 Intel host: the parent's next fork pays +190 / +500 / +500 us at 16 / 64 /
256 MiB over a child exiting on the parent's CPU (+17 us at 0 MiB: remote_free's slab objects), flat beyond
64 MiB (the other core's 2 MiB L2 holds the last lines the zap wrote); the child's exit pays +145 / +260 / +320 us
when its fork ran on the other CPU; a parent that moved pays about the same (forkbench -M: +280 us at 64 MiB). The
empty image's exit pays +26 us there (Intel model 207 host, 2026-12-05), 5 us of it the parent's wake-up on its
halted CPU, which the scheduler prices: the rest is exit_mmap's fixed remote term (the task, mm, files and signal
structs the fork wrote on the parent's CPU).
Unpinned, a closed loop's children exit on the other CPU 40-50% of the time (64 / 256 MiB), and those forks cost
1.8x / 1.3x the others (calibration/data/remote-exit-20261203.json).

The image's physical layout (ImageShape.scatter) enters twice. StageCost.scatter_us prices the struct pages
that miss even back to back, out of order. ColdTerms.per_scattered_pte_us prices what a cold walk adds per
page out of physical order on top of the in-order cold extra: walked in order, the struct pages stream in
behind the hardware prefetcher even cold; out of order each one is a demand miss to memory (measured by
calibrate's cold grid with images touched in a random order: on the 2026-12-02 Intel host 19-28 ns a page
at 64 MiB .. 1 GiB, 2.2-2.5x the in-order cold extra of the same image). Not only the page after a break
misses: the prefetcher's stream starts again, so the pages within ColdTerms.scatter_window after one do
too, and a few breaks cool the walk nearly as much as a random order (256 MiB on that host, after 100 ms
asleep: a break every 64 / 16 / 8 pages added 15% / 50% / 85% of the random order's extra; calibrate's grid
measures images touched in runs of K pages, forkbench -L runs:K). The in-order terms hold the breaks of the
in-order images they were measured on (ColdTerms.reference_scatter): only the share beyond theirs is priced again.
ImageShape.spread enters the in-order per-page term (ColdTerms.per_spread): a cold walk misses per 4 KiB vmemmap
page of struct pages, and frames handed out among other processes' put the image's struct pages on more of them
(64 MiB after 1 s asleep, the 2026-12-03 Intel host: 250 / 550 / 830 us over back to back at spread 1 / 3.6 / 5.9),
and the breaks' term, measured on dense images, is divided by the spread (the two overlap on a fragmented image).
Both stop where every struct page is a demand miss (ColdTerms.saturated_per_pte_us, the random-order images'
extra a page): images made spread 8, 16 and 32 paid the same 37-47 ns a page at 64 and 256 MiB after 100 ms asleep
(the 2026-12-06 Intel host, calibration/data/spread-saturation-20261206.json).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..profile import ColdTerms, ImageShape, Warmth

if TYPE_CHECKING:
    from collections.abc import Callable

    from .mm import MM

__all__ = ["WarmthTracker"]


_NO_TERMS = (None, None)
_exp = math.exp


class _ImageTerms:
    """What the profile's warmth makes of one image shape, fixed for a run: the bytes one walk of it touches, the
    share of a walk's coldness it keeps (Warmth.residual_at), and per stage its fully cold extra and its remote
    terms' extra (None where the profile has none; a stage in neither: _NO_TERMS)."""

    __slots__ = ("shape", "walk_bytes", "residual", "stages")

    def __init__(self, curve: Warmth, shape: ImageShape):
        self.shape = shape
        self.walk_bytes = curve.walk_bytes_per_pte * (shape.ptes + shape.pmds)
        self.residual = curve.residual_at(shape.ptes + shape.pmds)

        def extra(terms: ColdTerms | None) -> float | None:
            return None if terms is None else terms.extra_us(shape.ptes, shape.scatter, shape.spread)

        self.stages = {stage: (extra(curve.stages.get(stage)), extra(curve.remote.get(stage)))
                       for stage in (*curve.stages, *curve.remote)}


class WarmthTracker:
    """Per-CPU walk footprints and per-mm last walks of one simulated machine."""

    __slots__ = ("curve", "cpu_bytes", "_by_shape", "_last", "_tau", "_beta", "_footprint", "_migration", "_remote")

    def __init__(self, curve: Warmth | None, ncpu: int):
        self.curve = curve
        # the curve's figures every walk reads, as plain attributes (a pydantic model's cost three times as much)
        c = curve
        self._tau, self._beta = (c.tau_us, c.beta) if c is not None else (1.0, 1.0)
        self._remote = c is not None and bool(c.remote)  # the curve prices lines another CPU wrote (Warmth.remote)
        # `migration` is the image walks' price of a move for a profile without remote terms (calibration fits it
        # for those alone, from forks whose parent moved); with remote terms nothing pays it: the image walks price
        # the other CPU's lines, and a family's own moves were never measured (the unpinned vfork loop's fork() p50
        # measured 16.5 us, as pinned; a migration share of 0.157 put it at 27.2, 2026-12-05)
        self._footprint = c.footprint_bytes if c is not None else 1.0
        self._migration = c.migration if c is not None and not self._remote else 0.0
        self.cpu_bytes = [0.0] * ncpu  # bytes of image walks done on each CPU so far
        # each image shape's terms (ColdTerms.extra_us is four Python calls for a figure fixed by the shape), keyed
        # by the shape's identity (a process keeps one shape object; the shape is kept in the entry so its id is
        # not reused), and the last shape's looked up first: a run's walks are nearly all of one image
        self._by_shape: dict[int, _ImageTerms] = {}
        self._last: _ImageTerms | None = None

    def _terms(self, shape: ImageShape) -> _ImageTerms:
        """The terms of `shape` (the profile must have a warmth curve)."""
        terms = self._last
        if terms is None or terms.shape is not shape:
            terms = self._by_shape.get(id(shape))
            if terms is None or terms.shape is not shape:
                terms = self._by_shape[id(shape)] = _ImageTerms(self.curve, shape)
            self._last = terms
        return terms

    def coldness(self, mm: "MM", cpu: int, now: float) -> float:
        """0 (as warm as a back-to-back fork) .. 1 (fully cold) for a walk of `mm` on `cpu` now."""
        w = self.curve
        if w is None:
            return 0.0
        if mm.walked_at is None:
            return 1.0  # never walked in this run: nothing of it is in the caches
        warm = (1.0 - mm.walk_residual) * math.exp(-(max(0.0, now - mm.walked_at) / w.tau_us) ** w.beta)
        if mm.walked_cpu == cpu:
            warm *= math.exp(-max(0.0, self.cpu_bytes[cpu] - mm.walked_mark) / w.footprint_bytes)
        elif not w.remote:
            # another CPU's private caches held it; the other CPU's walks since do not count here
            warm *= 1.0 - w.migration
        return 1.0 - warm

    def creation_extras_us(self, kind: str, mm: "MM", cpu: int, now: float,
                           spread: "Callable[[], float] | None" = None) -> tuple[float, float, float]:
        """What a creation of `kind` that copies no image (Warmth.families) costs on top of its warm median now
        (us), from `mm`'s last such creation: (the call's extra before wake_up_new_task, the call's extra after it:
        FamilyCold.before_wakeup, the rest of the round trip's: FamilyCold.rest_full_us); records this one. Zeros for
        a kind the profile does not price. `spread`: a draw of FamilyCold.residual, taken where anything cooled."""
        w = self.curve
        cold = w.families.get(kind) if w is not None else None
        if cold is None:
            return 0.0, 0.0, 0.0
        if mm.created_at is None:  # nothing of its creation path is in the caches
            share = 1.0
        else:
            if mm.created_cpu != cpu:  # another CPU's private caches held it (0 with remote terms: see __init__)
                evicted = self._migration
            else:
                evicted = 1.0 - math.exp(-max(0.0, self.cpu_bytes[cpu] - mm.created_mark) / self._footprint)
            share = cold.coldness(max(0.0, now - mm.created_at), evicted)
        mm.created_at, mm.created_cpu, mm.created_mark = now, cpu, self.cpu_bytes[cpu]
        if spread is not None and share > 0.0:
            share *= spread()
        call = cold.full_us * share
        before = call * cold.before_wakeup
        return before, call - before, cold.rest_full_us * share

    def extra_us(self, stage: str, coldness: float, shape: ImageShape) -> float:
        """What `stage` costs on top of its warm median at this coldness (microseconds)."""
        if coldness <= 0.0 or self.curve is None:
            return 0.0
        full = self._terms(shape).stages.get(stage, _NO_TERMS)[0]
        return 0.0 if full is None else coldness * full

    def cold_walk(self, stage: str, mm: "MM", cpu: int, now: float, shape: ImageShape) -> tuple[float, float]:
        """A walk of `mm`'s image by `stage` on `cpu` now (`shape`: the walking mm's, the image or the child's copy of
        it): what it costs on top of its warm median (microseconds) and the coldness it found. Where the profile
        prices lines another CPU last wrote (Warmth.remote) and the image's are there, the part of the image still
        cached (1 - coldness) pays those terms instead of nothing."""
        # self.coldness(mm, cpu, now) and self._terms(shape)'s hit, written out (two calls fewer a walk: a fork
        # walks its image twice, at dup_mmap and at the child's exit)
        if mm.walked_at is None:
            coldness = 1.0  # never walked in this run: nothing of it is in the caches
        else:
            gap = now - mm.walked_at
            warm = (1.0 - mm.walk_residual) * _exp(-((gap if gap > 0.0 else 0.0) / self._tau) ** self._beta)
            if mm.walked_cpu == cpu:
                gone = self.cpu_bytes[cpu] - mm.walked_mark
                warm *= _exp(-(gone if gone > 0.0 else 0.0) / self._footprint)
            else:  # a move (0 with remote terms: see __init__)
                warm *= 1.0 - self._migration
            coldness = 1.0 - warm
        terms = self._last
        if terms is None or terms.shape is not shape:
            terms = self._terms(shape)
        full, remote = terms.stages.get(stage, _NO_TERMS)
        extra = 0.0  # self.extra_us(stage, coldness, shape), written out
        if coldness > 0.0 and full is not None:
            extra = coldness * full
        if remote is not None and mm.walked_cpu != cpu and coldness < 1.0:  # (remote: the curve has such terms)
            extra += (1.0 - coldness) * remote
        return extra, coldness

    def touched(self, cpu: int, nbytes: float) -> None:
        """Another process touched `nbytes` of its own memory on `cpu` (workload.other_work): lines the
        images last walked there may have lost to it, like another image's walk."""
        if self.curve is not None and nbytes > 0:
            self.cpu_bytes[cpu] += float(nbytes)

    def walked(self, mm: "MM", cpu: int, now: float, coldness: float = 0.0) -> None:
        """`mm`'s image was walked on `cpu`, ending now, a walk that began at `coldness`: it is warm there,
        but for the profile's residual share of that coldness."""
        if self.curve is None:
            return
        terms = self._last
        if terms is None or terms.shape is not mm.shape:
            terms = self._terms(mm.shape)
        marks = self.cpu_bytes
        mark = marks[cpu] = marks[cpu] + terms.walk_bytes
        mm.walked_at = now
        mm.walked_cpu = cpu
        mm.walked_mark = mark
        mm.walk_residual = 0.0 if coldness <= 0.0 else terms.residual * coldness

    def exit_walked(self, mm: "MM", cpu: int, now: float, coldness: float = 0.0) -> None:
        """A child that shared `mm`'s pages exited on `cpu`, ending now: zap_pte_range touched the
        struct pages (their mapcounts), not the parent's page tables. On the image's own CPU that is a
        walk. On another CPU, where the profile prices lines another CPU wrote (Warmth.remote), it is a walk there
        too: the lines it wrote stay in that CPU's private caches, and the parent's next fork pays for them
        (forkbench -R: 64 MiB, +500 us over a child exiting on the parent's CPU, 2026-12-03 Intel host). Without
        those terms the image stays where it was (the assumption before that measurement: the lines moved to a
        core that shares the last-level cache) and only its time is refreshed; the bytes count against that other
        CPU's own images."""
        if self.curve is None:
            return
        if mm.walked_at is None or mm.walked_cpu == cpu or self._remote:
            # with Warmth.remote: the lines it wrote are that CPU's now (measured: the parent's next fork pays the
            # remote terms, forkbench -R)
            self.walked(mm, cpu, now, coldness)
            return
        terms = self._terms(mm.shape)
        self.cpu_bytes[cpu] += terms.walk_bytes
        mm.walked_at = now
        mm.walk_residual = 0.0 if coldness <= 0.0 else terms.residual * coldness
