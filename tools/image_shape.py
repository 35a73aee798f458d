"""A running process's image as a `[workload.image]` block: what to put in a config to model its forks.

    python tools/image_shape.py PID          (root for `scatter`: /proc/PID/pagemap's frame numbers)

Reads /proc/PID: the anonymous RSS and threads (status), the mappings and those holding anonymous pages
(smaps), the open descriptors (fd/), and the physical layout of the anonymous pages (pagemap, through
forksim.lab.pagemap.image_layout, the one definition of `scatter`): the share of consecutive pages whose
frames are not neighbours. fork's copy_present_pte and exit's zap_pte_range touch every page's struct page
in virtual order; out of physical order no prefetcher follows them, so a long-lived process (scatter near
1) forks slower than a freshly touched image of the same size; and `spread`, how many vmemmap pages its struct
pages sit on (x 64 / pages: frames among other processes' spread them), which a cold fork's walk pays for.
Without root the kernel reports frame
numbers as 0: the block then leaves `scatter` and `spread` out (the model takes the profile's fresh-image ones) and
says why on stderr. Prints TOML; exit status 2 with one line when the process cannot be read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import tomli_w

sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]  # the forksim of this tree

from forksim.validation.apps import image_from_proc  # noqa: E402 - after the path


def image_block(pid: int) -> tuple[str, str | None]:
    """The `[workload.image]` TOML of `pid` and, where the scatter could not be read, why."""
    img = image_from_proc(pid)
    kib = img["rss_bytes"] // 1024
    image = {"rss": f"{kib}KiB", "vmas": img["vmas"], "anon_vmas": min(img["anon_vmas"], img["vmas"]),
             "threads": img["threads"], "fds": img["fds"]}
    if img["scatter"] is not None:
        image["scatter"] = round(img["scatter"], 3)
    if img.get("spread"):
        image["spread"] = round(min(64.0, max(1.0, img["spread"])), 2)
    comm = Path(f"/proc/{pid}/comm").read_text().strip()
    head = (f"# pid {pid} ({comm}) read from /proc/{pid}: RssAnon {kib / 1024:.1f} MiB, "
            + (f"scatter over {img['scatter_pages']} present anonymous pages\n" if img["scatter"] is not None
               else "scatter unreadable (the model takes the profile's fresh_image_scatter)\n")
            + "# threads counts every thread; the model's threads run and fault while the parent forks:\n"
            + "# set it to 1 where the others sleep through the fork (as Redis's do)\n")
    return head + tomli_w.dumps({"workload": {"image": image}}), img.get("scatter_unreadable")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pid", type=int, help="the process whose image to read")
    args = ap.parse_args(argv)
    try:
        block, why = image_block(args.pid)
    except (OSError, AttributeError) as exc:  # gone, not ours (EACCES), a kernel thread without status fields
        print(f"image_shape.py: cannot read /proc/{args.pid}: {getattr(exc, 'strerror', None) or exc}", file=sys.stderr)
        return 2
    print(block, end="")
    if why:
        print(f"image_shape.py: scatter left out: {why}; run as root to read it", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
