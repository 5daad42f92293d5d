"""The CPUs a process may use (affinity, cgroup v1/v2 CPU quota) and the onnxruntime threads each
instance gets from them: read from fake /proc/self and cgroup trees laid out as Linux lays them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from graphgen_server.core import loaded
from graphgen_server.core.cpus import available_cpus, cgroup_cpu_quota, threads_per_instance
from tests.support.server import InProcessServer, add_tiny_model


def _proc(tmp_path: Path, mounts: list[tuple[str, str, str, str]], cgroups: list[str]) -> Path:
    """/proc/self with ``mounts`` as (root, mount point, fstype, super options) and ``cgroups`` lines."""
    proc = tmp_path / "proc"
    proc.mkdir()
    lines = [
        f"{30 + i} 23 0:{40 + i} {root} {point} rw,relatime - {fstype} {fstype} {options}"
        for i, (root, point, fstype, options) in enumerate(mounts)
    ]
    (proc / "mountinfo").write_text("\n".join(["23 1 0:21 / / rw - overlay overlay rw", *lines]) + "\n")
    (proc / "cgroup").write_text("\n".join(cgroups) + "\n")
    return proc


def _write(directory: Path, **files: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name.replace("__", ".")).write_text(text + "\n")


def test_cgroup_v2_in_its_own_namespace_a_4_cpu_limit(tmp_path):
    mount = tmp_path / "sys/fs/cgroup"
    _write(mount, cpu__max="400000 100000")  # what Kubernetes writes for limits.cpu: "4"
    proc = _proc(tmp_path, [("/", str(mount), "cgroup2", "rw")], ["0::/"])
    assert cgroup_cpu_quota(proc) == 4.0


def test_cgroup_v2_the_smallest_limit_on_the_way_up_binds(tmp_path):
    mount = tmp_path / "sys/fs/cgroup"
    _write(mount / "kubepods/pod1", cpu__max="250000 100000")  # the pod: 2.5 CPUs
    _write(mount / "kubepods/pod1/ctr", cpu__max="max 100000")  # the container: no limit of its own
    proc = _proc(tmp_path, [("/", str(mount), "cgroup2", "rw")], ["0::/kubepods/pod1/ctr"])
    assert cgroup_cpu_quota(proc) == 2.5


def test_cgroup_v2_without_a_limit_is_none(tmp_path):
    mount = tmp_path / "sys/fs/cgroup"
    _write(mount, cpu__max="max 100000")
    assert cgroup_cpu_quota(_proc(tmp_path, [("/", str(mount), "cgroup2", "rw")], ["0::/"])) is None


def test_cgroup_v1_container_that_sees_its_own_cgroup_as_the_mount_root(tmp_path):
    mount = tmp_path / "sys/fs/cgroup/cpu,cpuacct"
    _write(mount, cpu__cfs_quota_us="150000", cpu__cfs_period_us="100000")
    proc = _proc(
        tmp_path,
        [("/docker/abc", str(mount), "cgroup", "rw,cpu,cpuacct"), ("/docker/abc", "/x/memory", "cgroup", "rw,memory")],
        ["5:memory:/docker/abc", "3:cpu,cpuacct:/docker/abc", "0::/"],
    )
    assert cgroup_cpu_quota(proc) == 1.5


def test_cgroup_v1_quota_minus_one_and_hybrid_without_cpu_max_are_none(tmp_path):
    """This machine's layout: v1 cpu controller without a quota, a v2 'unified' mount without cpu.max."""
    cpu, unified = tmp_path / "sys/fs/cgroup/cpu", tmp_path / "sys/fs/cgroup/unified"
    _write(cpu, cpu__cfs_quota_us="-1", cpu__cfs_period_us="100000")
    _write(unified, cgroup__controllers="")
    mounts = [("/", str(cpu), "cgroup", "rw,cpu"), ("/", str(unified), "cgroup2", "rw")]
    assert cgroup_cpu_quota(_proc(tmp_path, mounts, ["1:cpu:/", "0::/"])) is None


def test_no_proc_means_no_quota(tmp_path):
    assert cgroup_cpu_quota(tmp_path / "missing") is None


@pytest.mark.parametrize(("quota", "expected"), [("50000 100000", 0.5), ("max 100000", None)])
def test_available_cpus_is_the_fewer_of_affinity_and_quota(tmp_path, quota, expected):
    mount = tmp_path / "sys/fs/cgroup"
    _write(mount, cpu__max=quota)
    proc = _proc(tmp_path, [("/", str(mount), "cgroup2", "rw")], ["0::/"])
    affinity = len(os.sched_getaffinity(0))
    assert available_cpus(proc) == (expected if expected is not None else affinity)


@pytest.mark.parametrize(
    ("cpus", "instances", "threads"),
    [(4, 2, 2), (4, 1, 4), (3, 2, 1), (1.5, 2, 1), (0.5, 1, 1), (16, 3, 5), (8, 0, 8)],
)
def test_threads_per_instance_keep_instances_times_threads_within_the_cpus(cpus, instances, threads):
    assert threads_per_instance(cpus, instances) == threads
    assert threads * max(instances, 1) <= max(cpus, max(instances, 1))  # below 1 CPU each: one thread each


# -- the sessions a model version gets -------------------------------------------------------------
def _session_threads(repository: Path, **settings) -> list[int]:
    server = InProcessServer(repository, **settings)
    try:
        (model,) = server.runtime.all()
        return [i.session.get_session_options().intra_op_num_threads for i in model.served().instances]
    finally:
        server.close()


@pytest.fixture(scope="module")
def tiny_repository(tmp_path_factory) -> Path:
    repository = tmp_path_factory.mktemp("repository")
    add_tiny_model(repository)
    return repository


def test_each_instance_gets_the_cpus_divided_among_the_instances(tiny_repository, monkeypatch, caplog):
    monkeypatch.setattr(loaded, "available_cpus", lambda: 8.0)  # a pod limited to 8 CPUs
    with caplog.at_level("INFO", logger="graphgen_server"):
        threads = _session_threads(tiny_repository)
    assert threads == [4, 4]  # Triton's default on CPU: two instances
    assert "4 intra-op thread(s) per instance (8 CPUs / 2 instance(s))" in caplog.text


def test_the_flag_and_config_pbtxt_set_the_threads_themselves(tmp_path, monkeypatch):
    monkeypatch.setattr(loaded, "available_cpus", lambda: 8.0)
    add_tiny_model(tmp_path)
    assert _session_threads(tmp_path, intra_op_threads=3) == [3, 3]
    (tmp_path / "tiny" / "config.pbtxt").write_text(
        'instance_group { count: 3 kind: KIND_CPU }\nparameters { key: "intra_op_thread_count" value { string_value: "1" } }\n'
    )
    assert _session_threads(tmp_path) == [1, 1, 1]
    (tmp_path / "tiny" / "config.pbtxt").write_text("instance_group { count: 3 kind: KIND_CPU }\n")
    assert _session_threads(tmp_path) == [2, 2, 2]  # 8 CPUs / 3 instances, rounded down


@pytest.mark.parametrize(
    ("run_limit_s", "threads", "note"), [(1.0, 4, "/ 2 front-ends /"), (0.0, 8, "each front-end's")]
)
def test_a_front_end_divides_the_cpus_only_for_runs_too_short_to_use_them(
    tiny_repository, monkeypatch, caplog, run_limit_s, threads, note
):
    """One connection's calls all reach one front-end: a model slower than INLINE_RUN_S gets every CPU
    in each (here 0 s: every model is slow); a faster one gets its share of the front-ends'."""
    monkeypatch.setattr(loaded, "available_cpus", lambda: 8.0)
    monkeypatch.setattr(loaded, "INLINE_RUN_S", run_limit_s)
    with caplog.at_level("INFO", logger="graphgen_server"):
        found = _session_threads(tiny_repository, frontends=2, frontend_index=0)
    assert found == [threads]  # Triton's two CPU instances dealt out: one in this front-end
    assert f"{threads} intra-op thread(s) per instance" in caplog.text and note in caplog.text
