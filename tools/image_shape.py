"""A running process's image as a `[workload.image]` block: what to put in a config to model its forks.

    python tools/image_shape.py PID          (root for `scatter`: /proc/PID/pagemap's frame numbers)
    python tools/image_shape.py PID --written 5   (and `write_fraction`: its minor faults over 5 s / its pages)

Reads /proc/PID: the anonymous RSS and threads (status), the mappings and those holding anonymous pages
(smaps), the open descriptors (fd/), and the physical layout of the anonymous pages (pagemap, through
forksim.lab.pagemap.image_layout, the one definition of `scatter`): the share of consecutive pages whose
frames are not neighbours. fork's copy_present_pte and exit's zap_pte_range touch every page's struct page
in virtual order; out of physical order no prefetcher follows them, so a long-lived process (scatter near
1) forks slower than a freshly touched image of the same size; and `spread`, how many vmemmap pages its struct
pages sit on (x 64 / pages: frames among other processes' spread them), which a cold fork's walk pays for.
Without root the kernel reports frame
numbers as 0: the block then leaves `scatter` and `spread` out (the model takes the profile's fresh-image ones) and
says why on stderr. With --written S, also `write_fraction`: the process's minor faults over S seconds (/proc/PID/stat)
per anonymous page. A fork write-protects every PTE, so each page written after it faults once, and each such PTE
is writable again for the next fork to write-protect: for a process that forks about every S seconds (give its
interval between forks), the faults count those pages (an upper bound: read faults on file pages count too). A process that has not forked
since it wrote a page does not fault on it (the soft-dirty bits, /proc/PID/clear_refs, would see those writes, but
kernels without CONFIG_MEM_SOFT_DIRTY, this machine kind's, never set them). Prints TOML; exit status 2 with one
line when the process cannot be read.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import tomli_w

sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]  # the forksim of this tree

from forksim.validation.apps import image_from_proc  # noqa: E402 - after the path


def minor_faults(pid: int) -> int:
    """The process's minor page faults so far, all its threads (/proc/PID/stat's tenth field)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2:].split()[7])


def image_block(pid: int, written_s: float | None = None) -> tuple[str, str | None]:
    """The `[workload.image]` TOML of `pid` (with `write_fraction` from its faults over `written_s` seconds) and,
    where the scatter could not be read, why."""
    faults = None
    if written_s:
        before = minor_faults(pid)
        time.sleep(written_s)
        faults = minor_faults(pid) - before
    img = image_from_proc(pid)
    kib = img["rss_bytes"] // 1024
    image = {"rss": f"{kib}KiB", "vmas": img["vmas"], "anon_vmas": min(img["anon_vmas"], img["vmas"]),
             "threads": img["threads"], "fds": img["fds"]}
    if img["scatter"] is not None:
        image["scatter"] = round(img["scatter"], 3)
    if img.get("spread"):
        image["spread"] = round(min(64.0, max(1.0, img["spread"])), 2)
    pages = img["rss_bytes"] // 4096
    if faults is not None:
        image["write_fraction"] = round(min(1.0, faults / pages), 4) if pages else 0.0
    comm = Path(f"/proc/{pid}/comm").read_text().strip()
    head = (f"# pid {pid} ({comm}) read from /proc/{pid}: RssAnon {kib / 1024:.1f} MiB, "
            + (f"scatter over {img['scatter_pages']} present anonymous pages\n" if img["scatter"] is not None
               else "scatter unreadable (the model takes the profile's fresh_image_scatter)\n")
            + "# threads counts every thread; the model's threads run and fault while the parent forks:\n"
            + "# set it to 1 where the others sleep through the fork (as Redis's do)\n"
            + (f"# write_fraction: {faults} minor faults in {written_s:g} s over its {pages} anonymous pages: the "
               f"pages it writes between forks if it forks about every {written_s:g} s\n" if faults is not None else ""))
    return head + tomli_w.dumps({"workload": {"image": image}}), img.get("scatter_unreadable")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pid", type=int, help="the process whose image to read")
    ap.add_argument("--written", type=float, metavar="SECONDS",
                    help="also write_fraction: its minor faults over this many seconds per anonymous page")
    args = ap.parse_args(argv)
    if args.written is not None and not args.written > 0:
        ap.error("--written: a number of seconds above 0")
    try:
        block, why = image_block(args.pid, args.written)
    except (OSError, AttributeError) as exc:  # gone, not ours (EACCES), a kernel thread without status fields
        print(f"image_shape.py: cannot read /proc/{args.pid}: {getattr(exc, 'strerror', None) or exc}", file=sys.stderr)
        return 2
    print(block, end="")
    if why:
        print(f"image_shape.py: scatter left out: {why}; run as root to read it", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
