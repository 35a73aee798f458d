"""A real application that forks in production use: Redis BGSAVE, timed by Redis itself.

Redis forks a child to write its snapshot (BGSAVE, or `save` rules every few seconds) and reports
the parent's time in fork() as `latest_fork_usec` in INFO stats (redisFork: ustime() around fork()).
Here a private redis-server (from the distribution's package, `apt-get install redis-server`) is
filled with DEBUG POPULATE to three dataset sizes; at each size it takes BGSAVEs `interval_s` apart
and its own counter is read after each. The model gets what a user of that Redis would know: its
anonymous RSS and thread count (/proc/PID/status; recorded, but its other threads sleep through
a BGSAVE, so the model's parent forks as one thread), its VMA count and how many hold anonymous pages
(/proc/PID/smaps), the physical layout of its anonymous pages (/proc/PID/pagemap as root: `scatter`,
forksim.lab.pagemap.image_layout), and how often it forks: a closed loop of one parent, think time = the
interval. Nothing of the measured fork time goes into the config.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from ..kernel.flags import FORK
from ..lab.pagemap import PagemapUnreadable, image_layout
from ..lab.processes import end_group

__all__ = ["redis_bgsave", "redis_config", "image_from_proc", "REDIS_SIZES"]

MiB = 1024**2
REDIS_SIZES = (64 * MiB, 256 * MiB, 1024 * MiB)
_VALUE = 1000  # bytes per DEBUG POPULATE value


def image_from_proc(pid: int) -> dict[str, Any]:
    """What /proc says about a process's image: anonymous RSS, threads, VMAs and VMAs with anon pages, open
    fds, and the physical layout of its anonymous pages (`scatter`, forksim.lab.pagemap.image_layout: None
    with the reason under `scatter_unreadable` where frame numbers cannot be read, e.g. not as root)."""
    status = Path(f"/proc/{pid}/status").read_text()

    def kb(key: str) -> int:
        m = re.search(rf"^{key}:\s+(\d+) kB", status, re.M)
        return int(m.group(1)) if m else 0

    threads = int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]
    vmas = anon_vmas = 0
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            vmas += 1
        elif line.startswith("Anonymous:") and int(line.split()[1]) > 0:
            anon_vmas += 1
    out: dict[str, Any] = {"rss_bytes": kb("RssAnon") * 1024, "threads": threads, "vmas": vmas,
                           "anon_vmas": anon_vmas, "fds": len(os.listdir(f"/proc/{pid}/fd"))}
    try:
        layout = image_layout(pid)
        out.update(scatter=layout.scatter, scatter_pages=layout.pages, spread=layout.spread,
                   after_break=list(layout.after_break))  # after_break: recorded, not priced (validation/layouts.py)
    except PagemapUnreadable as exc:
        out.update(scatter=None, scatter_unreadable=str(exc))
    return out


class _Redis:
    """A private redis-server on a free port, no persistence rules, its snapshot in a temp dir."""

    def __init__(self, exe: str):
        self.dir = tempfile.mkdtemp(prefix="forksim-redis-")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir, "--enable-debug-command", "local", "--rdbcompression", "no",
             "--daemonize", "no", "--logfile", os.path.join(self.dir, "log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.sock = None
        for _ in range(100):
            try:
                self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=120)
                break
            except OSError:
                time.sleep(0.05)
        if self.sock is None:
            self.close()
            raise OSError("redis-server did not accept connections")
        self._buf = b""

    def cmd(self, *args: str) -> str:
        out = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
        assert self.sock is not None
        self.sock.sendall(out.encode())
        return self._reply()

    def _line(self) -> bytes:
        while b"\r\n" not in self._buf:
            chunk = self.sock.recv(65536)  # type: ignore[union-attr]
            if not chunk:
                raise OSError("redis closed the connection")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\r\n", 1)
        return line

    def _reply(self) -> str:
        line = self._line()
        kind, rest = line[:1], line[1:].decode()
        if kind == b"-":
            raise OSError(f"redis: {rest}")
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return ""
            while len(self._buf) < n + 2:
                self._buf += self.sock.recv(65536)  # type: ignore[union-attr]
            data, self._buf = self._buf[:n], self._buf[n + 2:]
            return data.decode()
        return rest

    def info(self, section: str) -> dict[str, str]:
        return dict(l.split(":", 1) for l in self.cmd("INFO", section).splitlines() if ":" in l)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        end_group(self.proc, grace_s=10)  # redis-server and any snapshot child it left
        shutil.rmtree(self.dir, ignore_errors=True)


def _bgsaves(r: _Redis, n: int, interval_s: float) -> list[float]:
    """n BGSAVEs, each `interval_s` after the previous snapshot's child ended; latest_fork_usec each."""
    out = []
    for _ in range(n):
        time.sleep(interval_s)
        r.cmd("BGSAVE")
        while r.info("persistence").get("rdb_bgsave_in_progress", "0").strip() != "0":
            time.sleep(0.01)
        out.append(float(r.info("stats")["latest_fork_usec"]))
    return out


def redis_config(image: dict[str, Any], interval_s: float, *, cpus: int, profile: str, quick: bool) -> dict[str, Any]:
    """The forksim config of a Redis forking every `interval_s` with this /proc image (its scatter where
    /proc/PID/pagemap gave one: a long-lived Redis's pages are far from address order)."""
    layout = {"scatter": float(image["scatter"])} if image.get("scatter") is not None else {}
    if image.get("spread"):
        layout["spread"] = min(64.0, max(1.0, float(image["spread"])))
    return {
        "experiment": {"name": "validate-redis-bgsave", "duration": 40 * interval_s * 1e6,
                       "warmup": 2 * interval_s * 1e6, "replications": 2 if quick else 3, "seed": 42},
        "machine": {"cpus": cpus, "profile": profile},
        # image.threads stands for threads that run and fault while the parent forks; Redis's other threads
        # (bio_close_file, bio_aof_fsync, bio_lazy_free, jemalloc_bg_thd) sleep on condition variables: none
        # was switched in during 5 traced BGSAVEs (k-fit, 2026-12-02), so the server forks as one thread
        "workload": {"kind": "closed", "parents": 1, "think_time": interval_s * 1e6,
                     "image": {"rss": image["rss_bytes"], "vmas": image["vmas"], "anon_vmas": image["anon_vmas"],
                               "threads": 1, "thp": False, **layout},
                     "child": {"clone": FORK, "lifetime": 0.0}},
        "background": {"cpu_hogs": 0},
    }


def redis_bgsave(simulate: Callable[[dict[str, Any], str | None], dict[str, Any]], profile: str, *,
                 quick: bool = False, interval_s: float = 1.0, say: Callable[[str], None] = lambda m: None
                 ) -> dict[str, Any]:
    """Measure Redis's own fork time at three dataset sizes and predict each; {"skipped": why} without Redis."""
    exe = shutil.which("redis-server")
    if exe is None:
        return {"skipped": "redis-server not installed (apt-get install redis-server): no real-application rows"}
    n = 5 if quick else 9
    rows = []
    r = _Redis(exe)
    try:
        keys = 0
        for target in REDIS_SIZES:
            # DEBUG POPULATE adds keys up to a count: grow the dataset to about `target` bytes
            used = int(r.info("memory")["used_memory"])
            more = max(0, int((target - used) / (_VALUE + 90)))
            keys += more
            r.cmd("DEBUG", "POPULATE", str(keys), "key", str(_VALUE))
            image = image_from_proc(r.proc.pid)
            forks = _bgsaves(r, n, interval_s)
            config = redis_config(image, interval_s, cpus=os.cpu_count() or 1, profile=profile, quick=quick)
            pred = simulate(config, profile)["fork_latency_us"]["p50"]
            meas = statistics.median(forks)
            rows.append({"scenario": f"redis-bgsave-{target // MiB}MiB", "image": image, "interval_s": interval_s,
                         "fork_usec": forks, "measured_p50_us": meas, "predicted_p50_us": pred,
                         "rel_error": (pred - meas) / meas})
            scat = "unreadable" if image["scatter"] is None else f"{image['scatter']:.2f}"
            say(f"  redis BGSAVE {target // MiB:5d} MiB dataset (RSS {image['rss_bytes'] / MiB:.0f} MiB, "
                f"{image['vmas']} VMAs, scatter {scat}): latest_fork_usec p50 {meas:.0f} us, predicted {pred:.0f} us "
                f"({(pred - meas) / meas * 100:+.0f}%)")
    finally:
        r.close()
    return {"app": "redis-server", "version": subprocess.run([exe, "--version"], capture_output=True,
                                                             text=True).stdout.strip(), "rows": rows}
