"""What `forksim validate` compares, and the targets it holds the model to."""

from __future__ import annotations

from ..summary import path as _summary_path

__all__ = ["METRICS", "EXTRA_METRICS", "TARGETS", "NOISY_FOREIGN_FRAC", "DRIFT_NOTE", "STEAL_NOTE"]

# (column key, label, path in the measured result, path in summary.json (checked against its schema,
# forksim.summary), target key)
METRICS: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...], str], ...] = (
    ("throughput", "throughput (/s)", ("throughput_per_s",), _summary_path("throughput_per_s.mean"), "throughput"),
    ("fork_p50", "fork() p50 (us)", ("fork_latency_us", "p50"), _summary_path("fork_latency_us.p50"), "p50"),
    ("fork_p99", "fork() p99 (us)", ("fork_latency_us", "p99"), _summary_path("fork_latency_us.p99"), "p99"),
    ("rt_p50", "round trip p50 (us)", ("roundtrip_latency_us", "p50"), _summary_path("roundtrip_latency_us.p50"), "p50"),
    ("rt_p99", "round trip p99 (us)", ("roundtrip_latency_us", "p99"), _summary_path("roundtrip_latency_us.p99"), "p99"),
)
# Extra comparisons made where both sides have them (not in the main table's columns).
EXTRA_METRICS: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...], str], ...] = (
    ("stall_p50", "mmap stall p50 (us)", ("stalls_us", "p50"), _summary_path("mmap_stall_us.p50"), "p50"),
    ("stall_p99", "mmap stall p99 (us)", ("stalls_us", "p99"), _summary_path("mmap_stall_us.p99"), "p99"),
    ("response_p50", "response p50 (us)", ("response_latency_us", "p50"), _summary_path("response_latency_us.p50"), "p50"),
    ("response_p99", "response p99 (us)", ("response_latency_us", "p99"), _summary_path("response_latency_us.p99"), "p99"),
)
# Median |relative error| targets, and the largest factor any single number may be off by.
TARGETS = {"throughput": 0.10, "p50": 0.15, "p99": 0.25, "max_factor": 2.0}
# A measurement during which other processes (not ours) kept more than this share of the machine's
# CPUs busy is marked noisy in the table: the simulation does not know about that load.
NOISY_FOREIGN_FRAC = 0.10
# A row whose canary (forksim.validation.canary: the same small load measured before it) was off the model
# by more than this is marked: the host had drifted that far from the profile when the row ran.
DRIFT_NOTE = 0.15
# A row measured while the host took more than this share of the vCPUs' time (/proc/stat steal over the
# run) is marked "host steal": a short unpinned loop crosses a halt exit per hand-off, each waiting for
# the host to run the vCPU. In the 2026-12-02 03:21 window the five rows with 13-29% steal were the
# five short loops over-predicted by 44-212%, all others had under 4% (p-place's analysis).
STEAL_NOTE = 0.05
