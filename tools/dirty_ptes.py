"""What a fork costs more when the parent wrote its image since its last fork: the measurement behind
calibration/data/dirty-ptes-20261206.json.

    python tools/dirty_ptes.py --sizes 16,64,256 [--forks 40] [--rounds 2] [--json OUT]

The calibration's fork loops fork an image nobody writes between forks, so from the second fork on its PTEs are
read-only and copy_present_pte copies them as they are. A parent that wrote a page since its last fork has that
PTE writable again (the write fault reused the page once the child was gone), and the next fork write-protects it
(ptep_set_wrprotect in copy_present_pte, an atomic update of the parent's PTE) as well as copying it. Per size, per
round, in a fresh process pinned to CPU 1: forkbench -D alternates forks after a pass that writes one byte of
every page of the image with forks after a pass that only reads it (the same pass over the data, no fault, PTEs
left read-only), so both halves share the host's drift. Printed and written: fork()'s CPU time p50 of each half
and the difference per page of the image.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]  # the forksim of this tree

from forksim.calibration.bench import build  # noqa: E402 - after the path
from forksim.calibration.written import halves  # noqa: E402
from forksim.host import this_host  # noqa: E402

PAGE = 4096


def measure(fb: str, mib: int, forks: int) -> dict:
    """One forkbench -D run: p50 of fork()'s CPU time (us) after a write pass and after a read pass."""
    out = subprocess.run([fb, "fork", "-r", str(mib << 20), "-n", str(2 * forks), "-w", "4", "-c", "1", "-D"],
                         capture_output=True, text=True, check=True).stdout
    samples = [json.loads(line) for line in out.splitlines() if line.startswith('{"b"')]
    clean, dirty = halves({"samples": samples})
    return {"mib": mib, "forks": len(samples), "clean_p50_us": round(clean, 1), "dirty_p50_us": round(dirty, 1),
            "extra_per_page_ns": round((dirty - clean) * 1e3 / ((mib << 20) // PAGE), 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="16,64,256", help="image sizes in MiB, comma-separated")
    ap.add_argument("--forks", type=int, default=40, help="forks of each half per run (default 40)")
    ap.add_argument("--rounds", type=int, default=2, help="runs per size, the sizes alternating (default 2)")
    ap.add_argument("--json", help="write the rows and their host here")
    args = ap.parse_args()
    fb = str(build().forkbench)
    rows = []
    for rnd in range(args.rounds):
        for mib in (int(s) for s in args.sizes.split(",")):
            row = {"round": rnd, **measure(fb, mib, args.forks)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    per_page = {m: statistics.median(r["extra_per_page_ns"] for r in rows if r["mib"] == m)
                for m in sorted({r["mib"] for r in rows})}
    print("fork()'s extra per written page (ns), median over rounds:", per_page)
    if args.json:
        host = this_host()
        Path(args.json).write_text(json.dumps({
            "what": "tools/dirty_ptes.py: fork() after the parent wrote (dirty 1) or read (dirty 0) one byte of every "
                    "page of its image, alternating in one pinned process (forkbench -D); fork()'s CPU time",
            "started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "cpu_model": host.cpu_model, "kernel": host.kernel, "rows": rows,
            "extra_per_page_ns_median": per_page}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
