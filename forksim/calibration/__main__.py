"""`python -m forksim.calibration [--quick] [--out FILE] [--raw FILE] [--no-tracefs]`: the calibration
without the forksim CLI (the CLI's `forksim calibrate` calls the same `calibrate()`)."""

from __future__ import annotations

import argparse
import sys

from ..errors import ForksimError
from . import calibrate


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m forksim.calibration", description=__doc__)
    ap.add_argument("--out", default="profile.json", help="profile file to write (default: profile.json)")
    ap.add_argument("--quick", action="store_true", help="the short plan (about a minute on a 2-vCPU VM)")
    ap.add_argument("--smoke", action="store_true", help="a seconds-long subset (tests)")
    ap.add_argument("--raw", default=None, help="also write every raw sample here (.json or .json.gz)")
    ap.add_argument("--no-tracefs", action="store_true", help="do not use tracepoints even as root")
    ap.add_argument("--quiet", action="store_true", help="no progress display")
    ap.add_argument("--refit", metavar="RAW", default=None, help="redo the fits from a raw file; measure nothing")
    a = ap.parse_args(argv)
    try:
        if a.refit:
            from . import refit

            prof = refit(a.refit, a.out)
            print(f"wrote {a.out} (refit of {a.refit})")
            return 0
        prof = calibrate(a.out, quick=a.quick, progress=not a.quiet, smoke=a.smoke, raw_out=a.raw,
                         use_tracefs=False if a.no_tracefs else None)
    except ForksimError as exc:
        print(f"forksim calibrate: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("forksim calibrate: interrupted; nothing written", file=sys.stderr)
        return 130
    ho = prof["diagnostics"].get("held_out", [])
    print(f"wrote {a.out} ({prof['provenance'].get('duration_s')} s, tracefs={prof['provenance']['tracefs']}); "
          + "; ".join(f"held-out {h['rss_bytes'] >> 20} MiB: fork p50 {h['fork_p50_us']:.1f} us measured, "
                      f"{h['profile_predicted_p50_us']:.1f} us from the profile" for h in ho))
    return 0


if __name__ == "__main__":
    sys.exit(main())
