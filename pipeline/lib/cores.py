"""How many cores this process may use, and threads from the cores other processes leave free,
chosen again before every epoch.

Two trainings with a thread per core each, on one machine, make every parallel region wait: an
OpenMP thread that finishes its part spins for a partner thread that the other run holds off its
core. Spinning less (OMP_WAIT_POLICY=PASSIVE) slows a run alone instead. So the training loop
looks, before each epoch, at how much of its cores other processes used since the last look
(Linux's /proc/stat, less this process's own CPU time) and takes the rest: at least one thread, at
most torch's own count (OMP_NUM_THREADS, or the cores it may run on) capped by `available_cores`.
A run alone keeps every thread; two runs take one each; a run that outlives the other takes its
cores back. Where the OS has no /proc/stat (macOS, Windows) the count stays as it started. The
numerics do not depend on the thread count (docs/reproducibility.md): the model's bytes are the same.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

STAT = Path("/proc/stat")
BUSY_FIELDS = (0, 1, 2, 5, 6)  # user, nice, system, irq, softirq: not idle, iowait or steal
TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
# A container's --cpus or a Kubernetes pod's CPU limit, which the affinity does not show.
CGROUP_V2_QUOTA = Path("/sys/fs/cgroup/cpu.max")  # "<quota> <period>" or "max <period>"
CGROUP_V1_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")  # "<quota>" or "-1", beside cpu.cfs_period_us


def affinity() -> set[int] | None:
    """The ids of the cores this process may run on, where the OS tells (Linux); else None."""
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None


def quota_cores() -> int | None:
    """The cgroup's CPU quota in whole cores (rounded up), or None where there is none or no cgroup."""
    try:
        quota, period = CGROUP_V2_QUOTA.read_text().split()
    except (OSError, ValueError):
        try:
            quota = CGROUP_V1_QUOTA.read_text().strip()
            period = (CGROUP_V1_QUOTA.parent / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    if quota in ("max", "-1"):
        return None
    try:
        return max(1, math.ceil(int(quota) / int(period)))
    except (ValueError, ZeroDivisionError):
        return None


def available_cores() -> int:
    """The cores this process may use: its CPU affinity where the OS has one, else the count the OS
    gives this process (Python 3.13's os.process_cpu_count, else os.cpu_count), capped by the
    cgroup CPU quota where there is one."""
    cores = affinity()
    count = len(cores) if cores is not None else (getattr(os, "process_cpu_count", os.cpu_count)() or 1)
    quota = quota_cores()
    return count if quota is None else min(count, quota)


@dataclass(frozen=True)
class Sample:
    wall: float  # seconds
    busy: float  # CPU seconds used by every process on our cores
    own: float  # CPU seconds used by this process


def busy_seconds(cores: set[int], stat: Path = STAT) -> float | None:
    """CPU seconds spent busy on `cores` since boot, or None where /proc/stat is not there."""
    try:
        lines = stat.read_text().splitlines()
    except OSError:
        return None
    ticks = 0
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cores:
            ticks += sum(int(fields[index]) for index in BUSY_FIELDS)
    return ticks / TICKS_PER_SECOND


def take_sample(cores: set[int]) -> Sample | None:
    busy = busy_seconds(cores)
    if busy is None:
        return None
    own = os.times()
    return Sample(wall=time.monotonic(), busy=busy, own=own.user + own.system)


class CoreShare:
    """Call `rebalance()` between epochs; the first look covers the time since construction.
    Used as a context manager, it gives torch back all its threads on the way out."""

    def __init__(
        self,
        report: Callable[[str], None],
        sample: Callable[[set[int]], Sample | None] = take_sample,
        cores: set[int] | None = None,
    ):
        self.cores = cores if cores is not None else affinity()  # None: the load cannot be read
        self.capacity = len(cores) if cores is not None else available_cores()  # the cgroup quota included
        self.limit = min(torch.get_num_threads(), self.capacity)
        torch.set_num_threads(self.limit)
        self.report, self.sample = report, sample
        self.last = sample(self.cores) if self.cores is not None else None

    def __enter__(self) -> CoreShare:
        return self

    def __exit__(self, *exception) -> None:
        torch.set_num_threads(self.limit)

    def free_cores(self) -> float | None:
        """Cores not used by other processes since the last look, or None if it cannot be told."""
        if self.cores is None:
            return None
        now = self.sample(self.cores)
        last, self.last = self.last, now
        if now is None or last is None or now.wall - last.wall < 0.05:
            return None
        others = (now.busy - last.busy) - (now.own - last.own)
        return min(self.capacity, len(self.cores) - max(0.0, others) / (now.wall - last.wall))

    def rebalance(self) -> None:
        """Take the free cores' worth of threads; keep the count where the load cannot be read."""
        free = self.free_cores()
        if free is None:
            return
        threads = max(1, min(self.limit, round(free)))
        if threads != torch.get_num_threads():
            self.report(
                f"cores: {threads} of {self.limit} threads, other processes left {max(free, 0):.1f} of "
                f"{self.capacity} cores free"
            )
            torch.set_num_threads(threads)
