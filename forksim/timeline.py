"""The recording run of `forksim trace`: replication 0 of an experiment (the same seed, so the same
timeline as `run_experiment`'s replication 0) as a `forksim.simulation.Simulation` with a
`Timeline` observer, stepped through a bounded window.

`Timeline` keeps, for the window, which task each CPU ran when (and the context switches before),
each task's periods off its CPU (preempted, sleeping, waiting for a halted CPU, a thread's
mmap_lock stall), each task's first run and last schedule, and the creation stages (`on_stage`);
`count` is how many it kept (the trace's event budget). forksim.trace lays them out as lanes.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from .config import Experiment
from .model import ModelParams
from .profile import Profile
from .runner import replication_seeds
from .simulation import Observer, Simulation

__all__ = ["Timeline", "record_window", "STEP_US"]

STEP_US = 1000.0  # how often the event budget is checked while simulating


class Timeline(Observer):
    """Collects CPU segments, task off-CPU periods and stages as the replication's observer."""

    def __init__(self, lo: float):
        self.lo = lo
        self.cpu: dict[int, list[tuple[float, float, str, Any]]] = defaultdict(list)  # (start, end, kind, task)
        self.open_cpu: dict[int, tuple[float, str, Any]] = {}
        self.off: dict[Any, list[tuple[float, float, str]]] = defaultdict(list)  # task -> (start, end, label)
        self.off_since: dict[Any, tuple[float, str]] = {}
        self.first_run: dict[Any, float] = {}
        self.last_leave: dict[Any, float] = {}
        self.tasks: dict[Any, None] = {}  # every task seen, in first-seen order
        self.stages: list[tuple[Any, str, float, float]] = []
        self.count = 0

    def _cpu_seg(self, cpu_id: int, start: float, end: float, kind: str, task) -> None:
        if end > start and end > self.lo:
            self.cpu[cpu_id].append((start, end, kind, task))
            self.count += 1

    def _off_seg(self, task, start: float, end: float, label: str) -> None:
        if end > start and end > self.lo:
            self.off[task].append((start, end, label))
            self.count += 1

    def on_cpu(self, event: str, cpu, task, now: float) -> None:
        cid = cpu.id
        if event == "dispatch":
            self.tasks.setdefault(task, None)
            if not cpu.waking:
                self.open_cpu[cid] = (now, "switch", task)
            since = self.off_since.pop(task, None)
            if since is not None:
                self._off_seg(task, since[0], now, since[1])
            if cpu.waking:
                self.off_since[task] = (now, f"off CPU: CPU {cid} waking from halt")
        elif event == "begin":
            seg = self.open_cpu.pop(cid, None)
            if seg is not None:
                self._cpu_seg(cid, seg[0], now, "switch", task)
            since = self.off_since.pop(task, None)
            if since is not None:
                self._off_seg(task, since[0], now, since[1])
            self.open_cpu[cid] = (now, "run", task)
            self.first_run.setdefault(task, now)
        elif event == "leave":
            seg = self.open_cpu.pop(cid, None)
            if seg is not None:
                self._cpu_seg(cid, seg[0], now, seg[1], seg[2])
            self.last_leave[task] = now
            state = task.state
            if state == "sleeping":
                label = "mmap_lock stall" if _is_thread(task.name) else "off CPU: sleeping"
                self.off_since[task] = (now, label)
            elif state == "runnable":
                self.off_since[task] = (now, "off CPU: preempted (runnable)")

    def on_stage(self, task, name: str, start: float, end: float) -> None:
        if end > self.lo:
            self.stages.append((task, name, start, end))
            self.count += 1

    def on_end(self, sim: Simulation, hi: float) -> None:
        """Close the segments still open at the end of the window."""
        for cid, (start, kind, task) in list(self.open_cpu.items()):
            self._cpu_seg(cid, start, hi, kind, task)
        self.open_cpu.clear()
        for task, (start, label) in list(self.off_since.items()):
            self._off_seg(task, start, hi, label)
        self.off_since.clear()


def _is_thread(name: str) -> bool:
    """A parent's extra (faulting) thread: 'parent3.t2'."""
    head, _, tail = name.rpartition(".")
    return bool(head) and tail[:1] == "t" and tail[1:].isdigit()


def record_window(exp: Experiment, profile: Profile, max_span_us: float, max_events: int):
    """Replication 0 of `exp`, as runner.run_replication builds it, with the recorder attached."""
    seed = replication_seeds(exp.experiment.seed, exp.experiment.replications)[0]
    rec = Timeline(exp.experiment.warmup)
    sim = Simulation(ModelParams.of(exp, profile), seed, [rec])
    sim.start()
    end = sim.end
    lo = _window_start(sim.workload, sim.warmup, end, max_span_us)
    rec.lo = lo  # segments that end before the window are not kept (the event budget counts the kept)
    sim.run_to(lo)
    sim.open_window()
    hi = min(end, lo + max_span_us)
    reason = None
    # Step through the window so that the event budget can end it early (stepping does not change
    # the order of the model's events: the stop events only delimit env.run calls).
    while sim.env.now < hi:
        if sim.advance(min(hi, sim.env.now + STEP_US)):
            reason = "the experiment's max_creations was reached"
            break
        if rec.count >= max_events:
            reason = f"max_events ({max_events}) reached"
            break
    if reason is None and hi < end:
        reason = f"max_span_us ({max_span_us:g} us of simulated time)"
    hi = sim.env.now
    busy = sim.window_busy()
    sim.finish()
    return sim.machine, sim.workload, rec, (lo, hi), busy, reason


def _window_start(workload, warmup: float, end: float, max_span_us: float) -> float:
    """Where the traced window opens: at the end of the warm-up; for a server (snapshots seconds
    apart), a tenth of the span before its first snapshot, when that falls in the measured window."""
    first = getattr(workload, "first_snapshot", None)
    if first is not None and warmup < first < end:
        return max(warmup, first - 0.1 * max_span_us)
    return warmup
