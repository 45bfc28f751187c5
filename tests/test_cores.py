"""How many cores a process may use, on every OS; training takes the cores other processes leave
free, looked at again before every epoch."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pipeline.lib import cores
from pipeline.lib.cores import TICKS_PER_SECOND, CoreShare, Sample, available_cores, busy_seconds, quota_cores

needs_two_cores = pytest.mark.skipif(available_cores() < 2, reason="one core here")
needs_proc_stat = pytest.mark.skipif(busy_seconds({0}) is None, reason="no /proc/stat: the load cannot be read")


@pytest.fixture
def no_cgroup(tmp_path, monkeypatch):
    monkeypatch.setattr(cores, "CGROUP_V2_QUOTA", tmp_path / "v2" / "cpu.max")
    monkeypatch.setattr(cores, "CGROUP_V1_QUOTA", tmp_path / "v1" / "cpu.cfs_quota_us")


def test_the_affinity_decides_where_the_os_has_one(monkeypatch, no_cgroup):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert available_cores() == 3


def test_without_an_affinity_the_os_count_for_this_process_decides(monkeypatch, no_cgroup):
    """macOS and Windows: Python 3.13's os.process_cpu_count where there is one, else os.cpu_count."""
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.delattr(os, "process_cpu_count", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert available_cores() == 8
    monkeypatch.setattr(os, "process_cpu_count", lambda: 6, raising=False)
    assert available_cores() == 6


@pytest.mark.parametrize(
    ("version", "files", "expected"),
    [
        ("v2", {"cpu.max": "max 100000"}, 16),
        ("v2", {"cpu.max": "150000 100000"}, 2),
        ("v2", {"cpu.max": "50000 100000"}, 1),
        ("v1", {"cpu.cfs_quota_us": "-1", "cpu.cfs_period_us": "100000"}, 16),
        ("v1", {"cpu.cfs_quota_us": "400000", "cpu.cfs_period_us": "100000"}, 4),
        ("v1", {"cpu.cfs_quota_us": "250000", "cpu.cfs_period_us": "100000"}, 3),
    ],
)
def test_a_cgroup_cpu_quota_caps_the_cores(tmp_path, monkeypatch, no_cgroup, version, files, expected):
    """A container's --cpus or a Kubernetes pod's CPU limit is a cgroup quota (v2's cpu.max, v1's CFS
    files): the node's cores stay in the affinity."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    for name, text in files.items():
        (tmp_path / version).mkdir(exist_ok=True)
        (tmp_path / version / name).write_text(text + "\n")
    assert available_cores() == expected


def test_an_unreadable_quota_is_no_quota(tmp_path, no_cgroup):
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "cpu.max").write_text("garbage\n")
    assert quota_cores() is None


class Machine:
    """A two-core machine whose other processes use what the test says."""

    def __init__(self):
        self.wall = self.busy = self.own = 0.0
        self.readable = True

    def run(self, seconds: float, ours: float, others: float) -> None:
        self.wall += seconds
        self.own += ours * seconds
        self.busy += (ours + others) * seconds

    def sample(self, cores: set[int]) -> Sample | None:
        return Sample(self.wall, self.busy, self.own) if self.readable else None


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_a_busy_neighbour_leaves_one_thread_and_its_end_gives_both_back(two_threads):
    machine, said = Machine(), []
    with CoreShare(said.append, machine.sample, cores={0, 1}) as share:
        machine.run(5.0, ours=1.0, others=1.0)  # another training, while this one loads its data
        share.rebalance()
        assert torch.get_num_threads() == 1
        machine.run(5.0, ours=1.0, others=0.9)
        share.rebalance()
        assert torch.get_num_threads() == 1
        machine.run(5.0, ours=1.0, others=0.1)  # the other one finished
        share.rebalance()
        assert torch.get_num_threads() == 2
    assert said == [
        "cores: 1 of 2 threads, other processes left 1.0 of 2 cores free",
        "cores: 2 of 2 threads, other processes left 1.9 of 2 cores free",
    ]


def test_without_proc_stat_or_time_between_looks_torch_keeps_its_threads(two_threads):
    machine = Machine()
    share = CoreShare(print, machine.sample, cores={0, 1})
    share.rebalance()  # no time has passed
    machine.readable = False
    machine.run(5.0, ours=1.0, others=2.0)
    share.rebalance()
    assert torch.get_num_threads() == 2


def test_leaving_the_share_gives_torch_all_its_threads_back(two_threads):
    machine = Machine()
    with CoreShare(print, machine.sample, cores={0, 1}) as share:
        machine.run(1.0, ours=1.0, others=2.0)
        share.rebalance()
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2


def test_busy_seconds_reads_only_the_given_cores(tmp_path: Path):
    stat = tmp_path / "stat"
    stat.write_text(
        "cpu  900 0 900 900 0 0 0 0 0 0\n"
        "cpu0 100 10 20 500 7 1 2 300 0 0\n"  # user nice system idle iowait irq softirq steal guest guest_nice
        "cpu1 400 0 50 100 0 0 0 0 0 0\n"
        "intr 12345\n"
    )
    assert busy_seconds({0}, stat) == pytest.approx(133 / TICKS_PER_SECOND)  # not idle, iowait or steal
    assert busy_seconds({0, 1}, stat) == pytest.approx((133 + 450) / TICKS_PER_SECOND)
    assert busy_seconds({0}, tmp_path / "missing") is None


@pytest.mark.slow  # keeps cores busy in child processes
@needs_two_cores
@needs_proc_stat
def test_cores_kept_busy_by_other_processes_are_left_to_them(two_threads):
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(available_cores() - 1)]
    try:
        time.sleep(0.5)
        share = CoreShare(print)
        time.sleep(1.0)
        share.rebalance()
        assert torch.get_num_threads() == 1
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
