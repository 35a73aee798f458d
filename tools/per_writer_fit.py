#!/usr/bin/env python3
"""Fit concurrent_creation.per_writer from pinned fork loops of 2..N parents on one many-CPU machine.

    python tools/per_writer_fit.py PROFILE.json OUT.json PINNED.json [LOCKS.json ...]

PINNED.json: tools/many_cpus_measure.py's list (FORKSIM_MANY_PLAN=pinned; its RSS-0 pinned rows are used);
LOCKS.json: tools/lock_contention.py's list (pinned, RSS 0). Each run gives fork() p50 at K parents, each on its
own CPU; past two, the growth over the run's own K=2 against K - 2 is fitted as one line through the origin
(least squares over every run's K > 2), and per_writer = that slope / the profile's concurrent_creation.fork_us
(what one extra writer adds, as a share of the two-CPU extra). Writes PROFILE with the term set and its source.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def series(path: Path) -> dict[int, float]:
    """K -> fork() p50 (us) of one run's pinned RSS-0 loads."""
    out = {}
    for row in json.loads(path.read_text()):
        if "parents" in row and "fork_p50_us" in row:  # lock_contention.py
            if row.get("pinned", True) and row.get("rss", 0) == 0:
                out[int(row["parents"])] = float(row["fork_p50_us"])
        elif row.get("measured") and row["scenario"].get("pin") and row["scenario"].get("rss") == 0:
            out[int(row["scenario"]["parents"])] = float(row["measured"]["fork_latency_us"]["p50"])
    return out


def main(argv: list[str]) -> int:
    if len(argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    prof_path, out_path, runs = Path(argv[1]), Path(argv[2]), [Path(a) for a in argv[3:]]
    prof = json.loads(prof_path.read_text())
    cc = prof["concurrent_creation"]
    sxy = sxx = 0.0
    seen = []
    for path in runs:
        s = series(path)
        seen.append(f"{path.name}: " + ", ".join(f"K{k} {v:.1f}" for k, v in sorted(s.items())))
        for k, p50 in s.items():
            if k > 2 and 2 in s:
                sxy += (k - 2) * (p50 - s[2])
                sxx += (k - 2) ** 2
    slope = sxy / sxx
    per_writer = round(slope / cc["fork_us"], 3)
    cc["per_writer"] = per_writer
    cc["per_writer_source"] = (
        f"measured: pinned fork loops at RSS 0, fork() p50 (us) by parents K, each on its own CPU ({'; '.join(seen)}); "
        f"the growth over K=2 fitted against K - 2 through the origin: {slope:.2f} us per further writer, "
        f"/ fork_us {cc['fork_us']} = {per_writer} (tools/per_writer_fit.py), applied to the creations and exits of a copied mm (kernel/shared.py). Lock waits are not it "
        f"(lock:contention_begin/end: ~3 us a fork at K16). window_us 1000: assumption (a creating CPU writes "
        f"the state every ~100-200 us in these loops)")
    out_path.write_text(json.dumps(prof, indent=1, ensure_ascii=False) + "\n")
    print(f"per_writer {per_writer} ({slope:.2f} us per writer past two; fork_us {cc['fork_us']})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
