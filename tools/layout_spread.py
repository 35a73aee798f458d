"""What a cold fork costs against the image's physical layout, and how fast images of each size cool: the
measurements behind calibration/data/layout-spread-20261202.json. Needs root (pagemap's frame numbers).

    python tools/layout_spread.py layouts --sizes 32,64,128,256,512,1024 [--rounds 2] [--json OUT]
    python tools/layout_spread.py coldness --sizes 32,64,128,256,512 [--rounds 2] [--json OUT]
    python tools/layout_spread.py spreads --sizes 64,256 [--layouts order,spread:4,spread:16,random] [--rounds 2]

`layouts`: per round, per size (MiB), per layout (forkbench -L order and -L random), a pinned back-to-back fork
(12 forks, 3 warm-up) and a fork after 100 ms asleep (8 forks), each in a fresh process; the image's layout read
at forkbench's gate (forksim.lab.pagemap.image_layout): scatter, sp_pages (distinct 4 KiB vmemmap pages holding
its struct pages; pages / 64 for one dense range) and pages. Run it after other large images were freed, then
again: the first round's in-order images take the fragmented free lists' frames (spread ~10 at 32-64 MiB on the
2026-12-02 Intel host), the next round's are dense. `coldness`: in-order images, per size and gap (0 .. 100 ms),
in one shuffled order per round. `spreads`: per round, size and layout (forkbench -L, spread:K included: frames
interleaved with another buffer's, struct pages spread K), back to back and after 100 ms asleep, in one shuffled
order; before each run a buffer pinned to forkbench's CPU takes the free lists' small blocks (orders 0-8, from
/proc/buddyinfo) and holds them until the image is touched, so that the image's frames come from large blocks
and its spread is the one asked for, also on a box whose free lists fragmented
(calibration/data/spread-saturation-20261206.json). Each row printed as a JSON line as it is measured; p50_us:
fork()'s wall-time p50 (pinned, nothing else on the CPU).
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import random
import statistics
import subprocess
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]  # the forksim of this tree

from forksim.calibration.bench import build  # noqa: E402 - after the path
from forksim.lab.pagemap import image_layout  # noqa: E402

GAPS_US = (0, 1000, 3000, 10_000, 30_000, 100_000)
COLD_US = 100_000


def _small_free_pages() -> int:
    """4 KiB pages free in blocks of order 0..8 (/proc/buddyinfo, DMA32 and Normal zones)."""
    pages = 0
    with open("/proc/buddyinfo") as f:
        for line in f:
            fields = line.split()
            if fields[3] in ("DMA32", "Normal"):
                pages += sum(int(c) << order for order, c in enumerate(fields[4:]) if order <= 8)
    return pages


def _take_small_blocks(cpu: int, margin_pages: int = 100_000) -> mmap.mmap:
    """A buffer written on `cpu` (its per-CPU lists first) as large as the free small blocks and a margin: held, the
    next allocations there come from large blocks."""
    os.sched_setaffinity(0, {cpu})
    size = (_small_free_pages() + margin_pages) * 4096
    buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    buf.madvise(mmap.MADV_NOHUGEPAGE)
    for off in range(0, size, 4096):
        buf[off] = 1
    os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    return buf


def fork_p50(fb: str, rss: int, layout: str, gap_us: int, large_blocks: bool = False) -> dict:
    """One forkbench run, pinned to CPU 1: the fork() p50 and the image's layout at the gate; `large_blocks`: the
    image touched while the free lists' small blocks are held (_take_small_blocks)."""
    held = _take_small_blocks(1) if large_blocks else None
    args = [fb, "cold" if gap_us else "fork", "-r", str(rss), "-c", "1", "-n", "8" if gap_us else "12",
            "-w", "1" if gap_us >= 10_000 else "3", "-g", "-L", layout] + (["-s", str(gap_us)] if gap_us else [])
    p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    while "ready" not in (line := json.loads(p.stdout.readline())):
        pass
    lay = image_layout(line["ready"])
    if held is not None:
        held.close()
    p.stdin.write("g")
    p.stdin.flush()
    out, _ = p.communicate()
    forks = [json.loads(x)["fork_ns"] / 1e3 for x in out.splitlines() if '"fork_ns"' in x]
    return {"scatter": round(lay.scatter, 3), "sp_pages": lay.struct_page_pages, "pages": lay.pages,
            "spread": round(lay.struct_page_pages * 64 / lay.pages, 2) if lay.pages else None,
            "p50_us": round(statistics.median(forks), 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("layouts", "coldness", "spreads"))
    ap.add_argument("--layouts", default="order,spread:2,spread:4,spread:8,spread:16,spread:32,random",
                    help="spreads: forkbench -L values, comma-separated")
    ap.add_argument("--sizes", required=True, help="image sizes in MiB, comma-separated")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", metavar="OUT", help="also write every row to OUT")
    a = ap.parse_args()
    fb = str(build().forkbench)
    sizes = [int(x) << 20 for x in a.sizes.split(",")]
    if a.what == "layouts":
        jobs = [(r, rss, lay, g) for r in range(a.rounds) for rss in sizes for lay in ("order", "random")
                for g in (0, COLD_US)]
    elif a.what == "spreads":
        jobs = [(r, rss, lay, g) for r in range(a.rounds) for rss in sizes for lay in a.layouts.split(",")
                for g in (0, COLD_US)]
        random.Random(1).shuffle(jobs)
    else:
        jobs = [(r, rss, "order", g) for r in range(a.rounds) for rss in sizes for g in GAPS_US]
        random.Random(7).shuffle(jobs)
    rows = []
    for rnd, rss, lay, gap in jobs:
        row = {"rss": rss >> 20, "round": rnd, "layout": lay, "gap_ms": gap / 1e3,
               **fork_p50(fb, rss, lay, gap, large_blocks=a.what == "spreads")}
        print(json.dumps(row), flush=True)
        rows.append(row)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
