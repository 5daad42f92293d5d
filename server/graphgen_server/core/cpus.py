"""How many CPUs this process may use, and how many onnxruntime threads each instance gets from them.

``os.cpu_count()`` counts the machine's cores, and onnxruntime's default (one intra-op thread per
core) follows it: in a Kubernetes pod limited to 4 CPUs on a 64-core node, each session would
start 64 threads, which the CFS quota then throttles in turns (every thread waits for the slowest,
so latency grows with the quota's period). The CPUs that count are the fewest of the affinity mask
(cpusets) and the cgroup's CPU quota: cgroup v2's ``cpu.max`` or v1's ``cpu.cfs_quota_us`` ÷
``cpu.cfs_period_us``, the smallest along the path from the process's cgroup to its mount's root
(a parent's limit binds its children). The mounts are found in ``/proc/self/mountinfo`` and the
process's cgroup in ``/proc/self/cgroup``, as Go's runtime and the JVM do.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

PROC_SELF = Path("/proc/self")


def available_cpus(proc_self: Path = PROC_SELF) -> float:
    """The CPUs this process may use: its affinity, or its cgroup's CPU quota where that is fewer."""
    cpus = float(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    quota = cgroup_cpu_quota(proc_self)
    return min(cpus, quota) if quota is not None else cpus


def threads_per_instance(cpus: float, instances: int) -> int:
    """Intra-op threads for each of ``instances`` sessions that run at once: together no more than
    ``cpus`` (at least one each, so below one CPU per instance they share)."""
    return max(1, math.floor(cpus / max(1, instances)))


def cgroup_cpu_quota(proc_self: Path = PROC_SELF) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (1.5: 150 ms per 100 ms), or None without one."""
    try:
        mounts = (proc_self / "mountinfo").read_text().splitlines()
        groups = (proc_self / "cgroup").read_text().splitlines()
    except OSError:  # not Linux, or /proc not mounted: no quota can be read
        return None
    quotas = []
    for fstype, mount_root, mount_point in _cgroup_mounts(mounts):
        path = _cgroup_path(groups, fstype)
        if path is None:
            continue
        directory = _directory_of(path, mount_root, Path(mount_point))
        quotas += [q for q in (_quota(d, fstype) for d in _up_to(directory, Path(mount_point))) if q is not None]
    return min(quotas) if quotas else None


def _cgroup_mounts(mountinfo: list[str]) -> list[tuple[str, str, str]]:
    """(fstype, root, mount point) of the cgroup v2 mounts and the v1 mounts with the cpu controller."""
    found = []
    for line in mountinfo:
        before, _, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        fstype, super_options = tail[0], tail[2].split(",")
        if fstype == "cgroup2" or (fstype == "cgroup" and "cpu" in super_options):
            found.append((fstype, _unescape(fields[3]), _unescape(fields[4])))
    return found


def _cgroup_path(groups: list[str], fstype: str) -> str | None:
    """The process's cgroup in that hierarchy: ``0::PATH`` for v2, ``N:...cpu...:PATH`` for v1."""
    for line in groups:
        number, controllers, path = [*line.split(":", 2), "", ""][:3]
        if fstype == "cgroup2" and number == "0" and controllers == "":
            return path
        if fstype == "cgroup" and "cpu" in controllers.split(","):
            return path
    return None


def _directory_of(path: str, mount_root: str, mount_point: Path) -> Path:
    """Where the cgroup ``path`` is under a mount of ``mount_root`` (the mount point itself if it is
    not below: a container that sees its own cgroup as the mount's root)."""
    relative = os.path.relpath(path, mount_root)
    if relative.startswith(".."):
        return mount_point
    directory = mount_point / relative
    return directory if directory.is_dir() else mount_point


def _up_to(directory: Path, mount_point: Path) -> list[Path]:
    chain = [directory]
    while chain[-1] != mount_point and mount_point in chain[-1].parents:
        chain.append(chain[-1].parent)
    return chain


def _quota(directory: Path, fstype: str) -> float | None:
    try:
        if fstype == "cgroup2":
            quota, period = (directory / "cpu.max").read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        quota = (directory / "cpu.cfs_quota_us").read_text().strip()
        period = (directory / "cpu.cfs_period_us").read_text().strip()
        return None if int(quota) < 0 else int(quota) / int(period)
    except (OSError, ValueError, ZeroDivisionError):  # no such file at this level, or unreadable
        return None


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (\\040 ...)."""
    return field.encode().decode("unicode_escape") if "\\" in field else field
