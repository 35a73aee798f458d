"""Which free memory a freshly touched image takes, and the layout it then has: the measurements behind
calibration/data/fresh-layout-20261203.json. Needs root (pagemap's frame numbers, /proc/pagetypeinfo).

    python tools/free_blocks.py [--sizes 64,256,64,256] [--json OUT]

Per size (MiB, in the order given), a forkbench image (forksim/calibration/csrc: `fork`, pinned -c 1, touched in
address order, held at its -g gate) is touched while the free memory is read before and at the gate: the Normal
zone's movable free blocks per order (/proc/pagetypeinfo) and every per-CPU page list's count (/proc/zoneinfo
`count:`). Their difference is what the image (and the per-CPU lists' refills) took. Beside it the image's layout
(forksim.lab.pagemap.image_layout): scatter and spread. Each row printed as a JSON line as it is measured.

What it showed on the 2026-12-03 AMD host: an image takes the per-CPU list's pages first (recently freed: the last
exited image's frames, so a 256 MiB image touched after another came out at its layout exactly), then the smallest
buddy blocks (64 MiB from order-2 blocks: scatter 0.244, one break per 4 pages). A fresh image's layout is the free
lists' state when it is touched, which drifts over minutes.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]  # the forksim of this tree

from forksim.calibration.bench import build  # noqa: E402 - after the path
from forksim.lab.pagemap import image_layout  # noqa: E402


def movable_free_blocks() -> list[int]:
    """Free blocks of the Normal zone's movable free lists, per order 0..10 (/proc/pagetypeinfo)."""
    for line in Path("/proc/pagetypeinfo").read_text().splitlines():
        if re.search(r"zone\s+Normal, type\s+Movable", line):
            return [int(x) for x in line.split()[-11:]]
    raise SystemExit("no Normal zone's movable free lists in /proc/pagetypeinfo")


def per_cpu_counts() -> list[int]:
    """The pages on every per-CPU page list (/proc/zoneinfo `count:`, zone by zone, CPU by CPU)."""
    return [int(m) for m in re.findall(r"count:\s+(\d+)", Path("/proc/zoneinfo").read_text())]


def touch(fb: str, rss: int) -> dict:
    """One image of `rss` bytes touched and held at its gate: the free memory it took and its layout."""
    before, pcp_before = movable_free_blocks(), per_cpu_counts()
    p = subprocess.Popen([fb, "fork", "-r", str(rss), "-n", "1", "-w", "0", "-c", "1", "-g"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    row: dict = {}
    for line in p.stdout:
        if '"ready"' in line:
            after, pcp_after = movable_free_blocks(), per_cpu_counts()
            lay = image_layout(json.loads(line)["ready"])
            taken = [b - a for b, a in zip(before, after)]
            row = {"rss_mib": rss >> 20, "scatter": round(lay.scatter, 4), "spread": round(lay.spread or 0.0, 3),
                   "free_blocks_before": before, "free_blocks_taken": taken,
                   "buddy_pages_taken": sum(t << order for order, t in enumerate(taken)),
                   "per_cpu_before": pcp_before, "per_cpu_at_gate": pcp_after}
            p.stdin.write("g")
            p.stdin.flush()
            break
    p.stdout.read()
    p.wait()
    if not row:
        raise SystemExit(f"forkbench exited before its gate ({rss >> 20} MiB)")
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="64,256,64,256", help="image sizes in MiB, touched in this order")
    ap.add_argument("--json", type=Path, help="also write the rows to this file")
    args = ap.parse_args()
    fb = str(build().forkbench)
    rows = []
    for mib in (int(s) for s in args.sizes.split(",")):
        rows.append(touch(fb, mib << 20))
        print(json.dumps(rows[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
