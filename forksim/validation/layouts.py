"""The physical layout of the load generator's images, read as a user would read their own process's.

A fork's per-page cost depends on how far the parent's anonymous pages are from physical order
(forksim.lab.pagemap: copy_present_pte and zap_pte_range walk the struct pages in virtual order), and a
freshly touched image's layout depends on the allocator's state at the time. So each load generator run
states its parents' layout: `ParentLayouts` watches the load generator's children while it runs, and once
`parents` of them hold the whole image (smaps_rollup `Anonymous` >= the image's bytes: the touch loop is
done; the hogs hold none) it reads each one's `image_layout` once, before the measured window (the
parents start forking 20 ms after the last is ready and measure after the warm-up, 0.2 s or more).
The model of that row is then configured with the scatter read here (`workload.image.scatter`), never
with anything of the measured fork time.
"""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path
from typing import Any

from ..lab.pagemap import PagemapUnreadable, image_layout

__all__ = ["ParentLayouts", "pooled_layout"]

_POLL_S = 0.02


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def _anon_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Anonymous:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


class ParentLayouts(threading.Thread):
    """Reads the layout of the images of `parents` children of `loadgen_pid` once each holds `rss` bytes
    of anonymous memory; `result()` after the run: {"scatter": median over the parents, "parents": [each
    one's scatter], "pages": [each one's present anonymous pages], "spread": [each one's], "after_break": [each
    one's]} or {"scatter": None, "why": ...}."""

    def __init__(self, loadgen_pid: int, rss: int, parents: int, *, limit_s: float = 600.0):
        super().__init__(name="forksim-parent-layouts", daemon=True)
        self.pid, self.rss, self.parents, self.limit_s = loadgen_pid, rss, parents, limit_s
        self._stop_at = threading.Event()
        self._out: dict[str, Any] = {"scatter": None, "why": "the parents' images were not seen complete"}

    def run(self) -> None:
        end = time.monotonic() + self.limit_s
        while not self._stop_at.is_set() and time.monotonic() < end:
            full = [c for c in _children(self.pid) if _anon_bytes(c) >= self.rss]
            if len(full) >= self.parents:
                self._read(full[:self.parents])
                return
            self._stop_at.wait(_POLL_S)

    def _read(self, pids: list[int]) -> None:
        try:
            layouts = [image_layout(p) for p in pids]
        except PagemapUnreadable as exc:
            self._out = {"scatter": None, "why": str(exc)}
            return
        except OSError as exc:  # a parent that died between the two reads
            self._out = {"scatter": None, "why": f"a parent's pagemap: {exc.strerror}"}
            return
        self._out = {"scatter": statistics.median(l.scatter for l in layouts),
                     "parents": [l.scatter for l in layouts], "pages": [l.pages for l in layouts],
                     # how far the struct pages spread (priced by the cold terms: ColdTerms.per_spread) and how the
                     # breaks fall (recorded, not priced) (lab.pagemap)
                     "spread": [l.spread for l in layouts], "after_break": [list(l.after_break) for l in layouts]}

    def result(self) -> dict[str, Any]:
        """The layout read (call after the load generator exited)."""
        self._stop_at.set()
        self.join(timeout=30)
        return dict(self._out)


def pooled_layout(layouts: list[dict[str, Any]]) -> dict[str, Any]:
    """One layout for a row measured over several runs (repeats, interleaved rounds): the median of the
    runs' scatters, each run's kept under "runs" (and every parent's spread and after_break, where read)."""
    read = [l for l in layouts if l.get("scatter") is not None]
    if not read:
        return layouts[0] if layouts else {"scatter": None, "why": "no run"}
    out: dict[str, Any] = {"scatter": statistics.median(l["scatter"] for l in read), "runs": [l["scatter"] for l in read]}
    for key in ("spread", "after_break"):  # every parent's of every run
        if all(key in l for l in read):
            out[key] = [v for l in read for v in l[key]]
    return out
