"""The validation's load generator run under a tracefs instance of its own, and the trace text read back:
shared by the tracing tools beside it (place_trace.py, vfork_trace.py). Needs root and tracefs."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path

LINE = re.compile(r"^\s*(.+?)-(\d+)\s+\[(\d+)\]\s+\S+\s+([\d.]+):\s+(\w+):\s*(.*)$")
KV = re.compile(r"(\w+)=(\S+)")


def record(instance: Path, events: Iterable[str], loadgen_args: list[str], out: Path, buffer_kb: int = 32768,
           filters: dict[str, str] | None = None) -> Path:
    """Run the load generator with `events` on in the tracefs `instance` (each event of `filters` with its
    filter); returns the path of the trace text written under `out`."""
    from forksim.calibration.tracefs import mount_tracefs
    from forksim.validation.measure import build_tools

    tools = build_tools()
    mount_tracefs()  # a fresh VM boots without tracefs
    instance.mkdir(exist_ok=True)
    (instance / "tracing_on").write_text("0")
    (instance / "buffer_size_kb").write_text(str(buffer_kb))
    (instance / "trace_clock").write_text("mono")
    for ev in events:
        if filters and ev in filters:
            (instance / "events" / ev / "filter").write_text(filters[ev])
        (instance / "events" / ev / "enable").write_text("1")
    (instance / "trace").write_text("")
    out.mkdir(parents=True, exist_ok=True)
    (instance / "tracing_on").write_text("1")
    try:
        subprocess.run([str(tools.loadgen), *loadgen_args, "--helper", str(tools.helper), "--out", str(out / "lg")],
                       check=True, stdout=subprocess.DEVNULL)
    finally:
        (instance / "tracing_on").write_text("0")
        path = out / "trace.txt"
        path.write_text((instance / "trace").read_text())
        (instance / "events" / "enable").write_text("0")
    return path


def lines(path: Path) -> Iterator[tuple[float, int, int, str, str]]:
    """(time us, cpu, pid, event, the rest of the line) per trace line, in file order."""
    with open(path) as f:
        for ln in f:
            m = LINE.match(ln)
            if m:
                _comm, pid, cpu, ts, ev, rest = m.groups()
                yield float(ts) * 1e6, int(cpu), int(pid), ev, rest


def closed_loop(kind: str, duration: float, rss: str, *extra: str) -> list[str]:
    """The load generator's arguments for the validation's closed loop: one unpinned parent, no hogs."""
    return ["--mode", "closed", "--kind", kind, "--parents", "1", "--duration", f"{duration:g}", "--warmup", "0.05",
            "--hogs", "0", "--rss", rss, *extra]


def emit(summary: dict, trace: Path, json_out: Path | None) -> int:
    """Print the summary (with its trace's path) as JSON, and write it to `json_out` too if given."""
    summary["trace"] = str(trace)
    text = json.dumps(summary, indent=1)
    print(text)
    if json_out:
        json_out.write_text(text)
    return 0
