"""The physical layout of a process's anonymous memory, read from /proc/PID/pagemap (Documentation/admin-guide/
mm/pagemap.rst): fork's copy_present_pte and exit's zap_pte_range touch each page's struct page in the
image's virtual order, and where the frames are out of that order no prefetcher follows the walk.

`ImageLayout.scatter` is the share of consecutive present private pages (in address order, within a VMA)
whose frame numbers are not neighbours (|pfn difference| != 1): 0 for one physically contiguous run, 1 for
a random placement. `ImageLayout.after_break` says how the breaks fall: per window m of AFTER_BREAK_PAGES,
the share of pages within m pages after a break (a page whose frame does not follow the previous present
page's, or the first of its VMA): the pages a walk reaches before the prefetcher's stream is running again.
The same scatter gives a larger share where the breaks are spread evenly than where they come in clusters. Frame numbers need CAP_SYS_ADMIN; without it the kernel reports them as 0 and
`image_layout` says so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["ImageLayout", "PagemapUnreadable", "image_layout", "AFTER_BREAK_PAGES", "within_window", "spread_of"]

_PAGE = os.sysconf("SC_PAGE_SIZE")
_PRESENT = np.uint64(1 << 63)
_FILE_OR_SHARED = np.uint64(1 << 61)
_PFN_MASK = np.uint64((1 << 55) - 1)
_CHUNK_PAGES = 1 << 17  # 1 MiB of pagemap entries per read
_STRUCT_PAGES_SHIFT = 6  # 64 struct pages (64 B each) per 4 KiB page of vmemmap
AFTER_BREAK_PAGES = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class PagemapUnreadable(RuntimeError):
    """The process's pagemap (or its frame numbers) cannot be read here."""


@dataclass(frozen=True)
class ImageLayout:
    """The present private anonymous pages of a process and how far their frames are from address order."""

    pages: int  # present private anonymous 4 KiB pages (PTE-mapped; a THP counts its 512 pages)
    pairs: int  # consecutive pairs of such pages within a VMA
    scatter: float  # share of those pairs whose frames are not neighbours (0 when there is no pair)
    # distinct 4 KiB pages of struct pages (vmemmap, 64 frames each) holding these pages' struct pages: how far
    # the walk's struct pages spread (pages / 64 when the frames are one dense range, up to pages when each
    # frame is 64 or more from every other); 0 where not counted
    struct_page_pages: int = 0
    # per window of AFTER_BREAK_PAGES, the share of pages within that many pages after a break; () where not read
    after_break: tuple[float, ...] = ()

    @property
    def spread(self) -> float | None:
        return spread_of(self.pages, self.struct_page_pages)


def spread_of(pages: int | None, struct_page_pages: int | None) -> float | None:
    """How far an image's struct pages spread: distinct vmemmap pages x 64 / pages (1: one dense range of frames,
    up to 64 when no two frames share a vmemmap page); None where not counted."""
    return struct_page_pages * 64 / pages if pages and struct_page_pages else None


def within_window(after_break: tuple[float, ...] | list[float], window: float) -> float:
    """The share of pages within `window` pages after a break, from ImageLayout.after_break (linear in log2 of the
    window between the measured ones; 1 page .. 256)."""
    return float(np.interp(np.log2(max(window, 1.0)), np.log2(AFTER_BREAK_PAGES), after_break))


class _Distances:
    """Per present page, how many pages since the last break in the frame order (0: the page right after one),
    kept as a histogram up to the largest window."""

    def __init__(self) -> None:
        self.hist = np.zeros(AFTER_BREAK_PAGES[-1] + 1, dtype=np.int64)
        self.since = 0

    def add(self, follows: np.ndarray) -> None:
        """One VMA chunk's pages in address order; `follows`: each page's frame follows the previous page's."""
        pos = np.arange(follows.size)
        last = np.maximum.accumulate(np.where(follows, -1, pos))
        d = np.where(last >= 0, pos - last, self.since + 1 + pos)
        self.since = int(d[-1])
        self.hist += np.bincount(np.minimum(d, AFTER_BREAK_PAGES[-1]), minlength=self.hist.size)

    def shares(self, pages: int) -> tuple[float, ...]:
        upto = np.cumsum(self.hist)
        return tuple(round(float(upto[m - 1]) / pages, 5) for m in AFTER_BREAK_PAGES) if pages else ()


def _anon_ranges(pid: int | str) -> list[tuple[int, int]]:
    """Address ranges of the VMAs holding resident anonymous memory (/proc/PID/smaps)."""
    ranges, current = [], None
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split(None, 1)[0]
        if "-" in head and not head.endswith(":"):
            lo, hi = (int(x, 16) for x in head.split("-"))
            current = (lo, hi)
        elif head == "Anonymous:" and current is not None and int(line.split()[1]) > 0:
            ranges.append(current)
    return ranges


def image_layout(pid: int | str = "self") -> ImageLayout:
    """The layout of `pid`'s private anonymous pages (root: frame numbers need CAP_SYS_ADMIN)."""
    try:
        ranges = _anon_ranges(pid)
        fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
    except OSError as e:
        raise PagemapUnreadable(f"/proc/{pid}/pagemap: {e.strerror}") from None
    pages = pairs = apart = 0
    groups: set[int] = set()
    dist = _Distances()
    try:
        for lo, hi in ranges:
            prev = None  # the last present page's (index, pfn) in this VMA
            for start in range(lo // _PAGE, hi // _PAGE, _CHUNK_PAGES):
                n = min(_CHUNK_PAGES, hi // _PAGE - start)
                raw = os.pread(fd, n * 8, start * 8)
                e = np.frombuffer(raw, dtype=np.uint64)
                idx = np.flatnonzero((e & _PRESENT).astype(bool) & ~(e & _FILE_OR_SHARED).astype(bool))
                if not idx.size:
                    continue
                pfn = (e[idx] & _PFN_MASK).astype(np.int64)
                if not pfn.any():
                    raise PagemapUnreadable(f"/proc/{pid}/pagemap: frame numbers read as 0 (needs CAP_SYS_ADMIN)")
                groups.update(np.unique(pfn >> _STRUCT_PAGES_SHIFT).tolist())
                gi, gp = idx + start, pfn
                if prev is not None:
                    gi, gp = np.concatenate(([prev[0]], gi)), np.concatenate(([prev[1]], gp))
                adjacent = np.diff(gi) == 1
                follows = adjacent & (np.abs(np.diff(gp)) == 1)
                pages += idx.size
                pairs += int(adjacent.sum())
                apart += int((adjacent & ~follows).sum())
                # this chunk's pages: the first of the VMA starts a stream; a hole in the image breaks one too
                dist.add(follows if prev is not None else np.concatenate(([False], follows)))
                prev = (int(gi[-1]), int(gp[-1]))
    finally:
        os.close(fd)
    return ImageLayout(pages, pairs, apart / pairs if pairs else 0.0, len(groups), dist.shares(pages))
