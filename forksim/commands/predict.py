"""`forksim predict`: the latency of one creation on an otherwise idle machine."""

from __future__ import annotations

import argparse
import json

from rich.table import Table

from ..config import CLONE_KINDS, MAX_FDS, MAX_LIVE_CHILDREN, MAX_RSS_BYTES, MAX_VMAS
from ..errors import ConfigError
from ..kernel.flags import DEFAULT_KIND, UNSHARE_FLAGS, USER_FLAGS, check, check_unshare
from ..predict import predict
from ..summary import latency_label
from ..units import UnitError, format_size, parse_size, parse_time_us
from ._common import call_label, console, fmt


def register(sub) -> None:
    p = sub.add_parser("predict", help="latency of one creation on an idle machine")
    p.add_argument("--rss", required=True, help="the parent's touched anonymous memory, e.g. 256MiB")
    p.add_argument("--vmas", type=int, default=40, help="mappings in the parent (default 40)")
    p.add_argument("--anon-vmas", type=int, help="mappings with anonymous pages (default: half of --vmas)")
    p.add_argument("--thp", choices=("on", "off"), default="off", help="transparent huge pages for the RSS")
    p.add_argument("--scatter", type=float, metavar="F",
                   help="physical layout of the parent's image, 0..1: the share of consecutive anonymous pages whose "
                   "frames are not neighbours (tools/image_shape.py PID reads it; default: the profile's "
                   "fresh_image_scatter at this image's size, else 0)")
    p.add_argument("--spread", type=float, metavar="S",
                   help="how far the image's struct pages spread, 1..64: distinct vmemmap pages holding them x 64 / "
                   "pages (1 = one dense range of frames; tools/image_shape.py PID reads it; default: the profile's "
                   "fresh_image_spread at this image's size, else 1); a cold fork's walk grows with it")
    p.add_argument("--gap", default="2ms", help="time from each reap to the next creation (default 2ms): the longer, "
                   "the colder the parent's image when the fork walks it, by the profile's warmth terms (1s: fully "
                   "cold, a process that forks now and then)")
    p.add_argument("--child-life", default="0us", help="the child's CPU time before it exits (default 0): its exit "
                   "then finds the image cooled that long (warmth exit_mmap terms)")
    p.add_argument("--clone", choices=CLONE_KINDS, default=DEFAULT_KIND)
    p.add_argument("--fds", type=int, default=3, help="open file descriptors in the parent (default 3)")
    p.add_argument("--flags", default="", help="clone flags beyond the kind's preset, comma-separated, e.g. "
                   "CLONE_NEWNET,CLONE_NEWPID (" + ", ".join(USER_FLAGS) + ")")
    p.add_argument("--live-children", type=int, default=0,
                   help="other children the parent keeps alive (a prefork master; default 0)")
    p.add_argument("--wait", choices=("pid", "any"), default="pid",
                   help="how the parent reaps: pid (waitpid(pid), the default) or any (waitpid(-1): do_wait walks "
                   "the parent's children list, as shells and prefork masters do)")
    p.add_argument("--unshare", default="", help="the child first calls unshare(2) with these flags, "
                   "comma-separated (" + ", ".join(UNSHARE_FLAGS) + "): shows in the round trip")
    p.add_argument("--profile", default="auto", help="profile name or file (default: auto, the profile "
                   "`forksim calibrate` stored for this host, else the shipped default)")
    p.add_argument("--cpus", type=int, help="CPUs of the machine (default: the profile's)")
    p.add_argument("--samples", type=int, default=1200,
                   help="creations simulated (default 1200; a p99 needs about 1,000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    try:
        rss = parse_size(args.rss)
    except UnitError as exc:
        raise ConfigError(str(exc), source="--rss") from None
    if rss > MAX_RSS_BYTES:
        raise ConfigError(f"{args.rss} is more than 64 TiB: more memory than an x86-64 machine with 4-level page "
                          "tables can hold (46-bit physical addresses)", source="--rss")
    for flag, value, low, high in (("--vmas", args.vmas, 1, MAX_VMAS), ("--samples", args.samples, 1, 100_000),
                                   ("--cpus", args.cpus, 1, 4096), ("--seed", args.seed, 0, None),
                                   ("--fds", args.fds, 0, MAX_FDS), ("--live-children", args.live_children, 0,
                                                                     MAX_LIVE_CHILDREN)):
        if value is not None and (value < low or (high is not None and value > high)):
            allowed = f"between {low} and {high}" if high is not None else f"at least {low}"
            why = {"--vmas": " (vm.max_map_count: 65530 by default, 1048576 where distributions raise it)",
                   }.get(flag, "")
            raise ConfigError(f"must be {allowed}{why} (got {value})", source=flag)
    if args.scatter is not None and not 0.0 <= args.scatter <= 1.0:  # NaN fails too
        raise ConfigError(f"must be a fraction between 0 and 1 (got {args.scatter:g})", source="--scatter")
    if args.spread is not None and not 1.0 <= args.spread <= 64.0:  # NaN fails too
        raise ConfigError(f"must be between 1 (one dense range of frames) and 64 (got {args.spread:g})",
                          source="--spread")
    times = {}
    for flag, value in (("--gap", args.gap), ("--child-life", args.child_life)):
        try:
            times[flag] = parse_time_us(value)
        except UnitError as exc:
            raise ConfigError(str(exc), source=flag) from None
        if not 0.0 <= times[flag] <= 3600e6:  # NaN fails too
            raise ConfigError(f"must be between 0 and 1h (got {value})", source=flag)
    if args.anon_vmas is not None and not 0 <= args.anon_vmas <= args.vmas:
        raise ConfigError("must be between 0 and --vmas", source="--anon-vmas")
    flags = [f.strip() for f in args.flags.split(",") if f.strip()]
    why = check(args.clone, flags)
    if why:
        raise ConfigError(why, source="--flags")
    unshare = [f.strip() for f in args.unshare.split(",") if f.strip()]
    why = check_unshare(args.clone, unshare)
    if why:
        raise ConfigError(why, source="--unshare")
    res = predict(rss, vmas=args.vmas, anon_vmas=args.anon_vmas, thp=args.thp == "on", clone=args.clone,
                  fds=args.fds, flags=flags, live_children=args.live_children, wait=args.wait, unshare=unshare, profile=args.profile, cpus=args.cpus, samples=args.samples, seed=args.seed,
                  scatter=args.scatter, spread=args.spread, gap_us=times["--gap"], child_life_us=times["--child-life"])
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    t = Table(title=f"{args.clone} from a parent of {format_size(rss)} RSS, {args.vmas} VMAs, THP {args.thp}, "
              f"{res['cpus']} idle CPUs, profile {res['profile']}"
              + f", scatter {res['scatter']['value']:.2f} ({res['scatter']['from']})"
              + f", spread {res['spread']['value']:.2f} ({res['spread']['from']})"
              + (f", {args.gap} between creations" if times["--gap"] != 2000.0 else "")
              + (f", the child lives {args.child_life}" if times["--child-life"] > 0 else "")
              + (f", {args.fds} fds" if args.fds != 3 else "")
              + (f", {args.live_children} live children" if args.live_children else "")
              + (", reaped with waitpid(-1)" if args.wait == "any" else "")
              + (f", {'|'.join(flags)}" if flags else "")
              + (f", child unshares {'|'.join(unshare)}" if unshare else ""), title_justify="left")
    t.add_column("latency (us)")
    for c in ("mean", "p50", "p90", "p99"):
        t.add_column(c, justify="right")
    for key in ("fork_latency_us", "child_start_latency_us", "roundtrip_latency_us"):  # what predict gives
        label = call_label(args.clone) if key == "fork_latency_us" else latency_label(key)
        t.add_row(label, *(fmt(res[key][c]) for c in ("mean", "p50", "p90", "p99")))
    console.print(t)
    used = res["profile_used"]
    console.print(f"profile {used['name']} (measured on {used['host']}; sha256 {str(used['sha256'])[:12]})")
    console.print("mean us per stage: " + ", ".join(f"{k} {fmt(v)}" for k, v in res["stage_us"].items()))
    return 0
