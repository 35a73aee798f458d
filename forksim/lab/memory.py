"""The state of the kernel's free lists before a calibration: compacting them, and how fragmented they were.

A freshly touched image takes its frames from the free lists (the per-CPU page lists first, then the buddy
allocator), so its physical layout (scatter, spread: forksim.lab.pagemap) follows whatever ran and exited
before it. On the 2026-12-05 Intel host a 64 MiB image touched in address order came out at scatter 0.84
after three hours of other runs and at 0.03 right after `echo 1 > /proc/sys/vm/compact_memory`
(mm/compaction.c: sysctl_compaction_handler -> compact_nodes), and a calibration's fork sweep is fitted
on such images. The shipped profiles were measured right after such a
compaction, so `forksim calibrate` starts from the same state; this module does the compaction and reads
/proc/buddyinfo before and after, for the profile's provenance.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

__all__ = ["COMPACT_PATH", "BUDDYINFO_PATH", "LARGE_ORDER", "large_block_share", "compact_memory"]

COMPACT_PATH = Path("/proc/sys/vm/compact_memory")
BUDDYINFO_PATH = Path("/proc/buddyinfo")
# the order of a 2 MiB block with 4 KiB pages: a free block this large hands out 512 frames in address order
LARGE_ORDER = 9


def large_block_share(buddyinfo: str) -> float | None:
    """The share of the free 4 KiB pages that sit in free blocks of order LARGE_ORDER or more, over every
    zone of /proc/buddyinfo's text (one line a zone: the free block counts per order 0..MAX_ORDER)."""
    total = large = 0
    for line in buddyinfo.splitlines():
        _, _, counts = line.partition("zone")
        fields = counts.split()[1:]  # after the zone's name
        for order, count in enumerate(int(f) for f in fields):
            pages = count << order
            total += pages
            large += pages if order >= LARGE_ORDER else 0
    return round(large / total, 4) if total else None


def _share(path: Path) -> float | None:
    try:
        return large_block_share(path.read_text())
    except (OSError, ValueError):
        return None


def compact_memory(compact: Path = COMPACT_PATH, buddyinfo: Path = BUDDYINFO_PATH) -> dict[str, Any]:
    """Compact every zone's free memory (needs root); never raises. Returns what was done, for provenance:
    {"compacted": bool, "seconds": wall seconds of the write, "large_free_share_before"/"_after": the free pages'
    share in blocks of 2 MiB or more (large_block_share; None where /proc/buddyinfo is unreadable), and
    "reason" where nothing was compacted}."""
    before = _share(buddyinfo)
    t0 = time.monotonic()
    try:
        compact.write_text("1\n")
    except OSError as exc:
        return {"compacted": False, "reason": f"{compact} not writable ({exc.strerror or exc}): the free lists are "
                                              f"as this host's past runs left them", "large_free_share_before": before}
    return {"compacted": True, "seconds": round(time.monotonic() - t0, 3), "large_free_share_before": before,
            "large_free_share_after": _share(buddyinfo)}
