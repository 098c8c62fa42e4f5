"""Job groups in cgroup v2, on this host's real unified hierarchy.

What runs here even where v2 holds neither ``memory`` nor ``pids`` (a hybrid host
whose v1 hierarchies have them): a job's group is made under this process's parent,
a real process tree enters it as a job's first process does, ``cgroup.kill`` (or the
pid-by-pid fallback) ends all of it, the group is removed once empty, groups of dead
workers are swept. Delegation (enabling a controller along the path, moving the
worker into a leaf when its own group holds it) is shown with ``hugetlb``, the
controller v2 holds on such a host, in a scratch group of its own.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest

from gristmill.worker.execution import ExecutorSettings
from gristmill.worker.sandbox import Sandbox, cgroup_v1, cgroup_v2, cgroupfs
from gristmill.worker.sandbox.limits import CgroupRoots, JobCgroup, find_cgroup_roots
from tests.sandbox.conftest import LIMITS, DataDir, policy, run

#: Serializes the tests that change the hierarchy's root (several test runs may share a host).
_LOCK = "/run/lock/gristmill-tests-cgroup-v2.lock"
#: Enters the cgroup.procs file given first, then becomes the rest: what a job's first
#: process does (``sandbox/job.py``).
_ENTER = 'echo 0 >"$1" && shift && exec "$@"'
#: A tree that forks three sleepers and one orphan that leaves it (setsid, double
#: fork: reparented away, outside the job's process group and session).
_TREE = """
import os, sys, time
for _ in range(3):
    if os.fork() == 0:
        time.sleep(300)
        os._exit(0)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(300)
        os._exit(0)
    os._exit(0)
print("ready", flush=True)
time.sleep(300)
"""


@pytest.fixture(scope="module")
def mount() -> cgroupfs.Mount:
    found = cgroup_v2.hierarchy()
    if found is None:
        pytest.fail("no cgroup v2 hierarchy mounted here (cgroup2 in /proc/self/mountinfo)")
    return found


@pytest.fixture(scope="module")
def parent(mount: cgroupfs.Mount) -> Iterator[str]:
    """This process's parent of v2 job groups, with no controller enabled."""
    path, why = cgroup_v2.job_parent(())
    if path is None:
        pytest.fail(f"cannot make v2 job groups here: {why}")
    yield path
    cgroupfs.remove_tree(path)


def _start_in(group: str, argv: list[str]) -> subprocess.Popen[str]:
    procs = os.path.join(group, "cgroup.procs")
    return subprocess.Popen(
        ["/bin/sh", "-c", _ENTER, "enter", procs, *argv], stdout=subprocess.PIPE, text=True
    )


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()
    if process.stdout is not None:
        process.stdout.close()


def _wait_for(condition: Callable[[], object], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _exited(pidfds: list[int], timeout_s: float = 10.0) -> bool:
    """Whether every process behind ``pidfds`` exited (a pidfd polls readable then)."""
    deadline = time.monotonic() + timeout_s
    waiting = list(pidfds)
    while waiting:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        ready, _, _ = select.select(waiting, [], [], remaining)
        waiting = [fd for fd in waiting if fd not in ready]
    return True


def test_a_job_group_is_entered_killed_whole_and_removed(parent: str) -> None:
    cgroup = JobCgroup(CgroupRoots(unified=parent), f"job-{uuid.uuid4()}", LIMITS)
    path = cgroup.paths["unified"]
    assert os.path.dirname(path) == parent
    assert cgroup.procs_files == [os.path.join(path, "cgroup.procs")]
    tree = _start_in(path, [sys.executable, "-c", _TREE])
    pidfds: list[int] = []
    try:
        assert tree.stdout is not None
        assert tree.stdout.readline() == "ready\n"
        # The first process, three sleepers, the orphan (its parent exits at once).
        _wait_for(lambda: len(cgroupfs.read_pids(path)) == 5, "the tree in its group")
        members = cgroupfs.read_pids(path)
        assert tree.pid in members
        pidfds = [os.pidfd_open(pid) for pid in members]
        assert cgroupfs.read_key(path, "cgroup.events", "populated") == 1
        assert not cgroup.remove()  # still populated: kept
        assert os.path.isdir(path)
        assert cgroup.usage() == (None, 0, 0)  # no controller here

        assert os.path.exists(os.path.join(path, "cgroup.kill"))
        cgroup.kill_all()

        assert tree.wait(timeout=10) == -signal.SIGKILL
        assert _exited(pidfds), "a member of the group survived cgroup.kill"
        _wait_for(cgroup.remove, "the group's removal")
        assert not os.path.exists(path)
        assert cgroup.paths == {}
    finally:
        for fd in pidfds:
            os.close(fd)
        _stop(tree)
        cgroup.kill_all()
        cgroup.remove()


def test_without_cgroup_kill_members_are_killed_one_by_one(parent: str) -> None:
    """The fallback for kernels before 5.14, on a real v2 group."""
    group = cgroup_v2.Group.create(parent, f"job-{uuid.uuid4()}", ())
    tree = _start_in(group.path, [sys.executable, "-c", _TREE])
    try:
        assert tree.stdout is not None
        assert tree.stdout.readline() == "ready\n"
        _wait_for(lambda: len(cgroupfs.read_pids(group.path)) == 5, "the tree in its group")
        cgroupfs.kill_members(group.path, wait_s=5.0)
        assert cgroupfs.read_pids(group.path) == []
        assert tree.wait(timeout=10) == -signal.SIGKILL
        _wait_for(group.remove, "the group's removal")
    finally:
        _stop(tree)
        group.kill_all()
        group.remove()


def _relative(mount: cgroupfs.Mount, path: str) -> str:
    """``path`` (a directory of the mount) as /proc/<pid>/cgroup names it."""
    return os.path.join(mount.root, os.path.relpath(path, mount.point)).rstrip("/")


def _in_jobs_of(prefix: str) -> set[int]:
    """Live processes whose v2 group is a job group under ``prefix``."""
    found = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cgroup") as f:
                    lines = f.read().splitlines()
                with open(f"/proc/{name}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if state not in ("Z", "X") and any(
                line.startswith(f"0::{prefix}/job-") for line in lines
            ):
                found.add(int(name))
    return found


async def test_a_sandboxed_job_runs_in_its_v2_group_which_is_removed_after(
    sandbox: Sandbox, data_dir: DataDir, mount: cgroupfs.Mount, parent: str
) -> None:
    """Through the executor and the real sandbox: the job's first process enters the
    v2 group, everything the job starts is in it, nothing is left after."""
    v2_only = msgspec.structs.replace(sandbox, cgroups=CgroupRoots(unified=parent))
    # The ordinary start (a pre-started launcher enters its group ahead: test_launcher.py).
    settings = ExecutorSettings(sandbox=v2_only, kill_grace_s=0.5, prestarted_launchers=0)
    prefix = _relative(mount, parent)
    seen: set[int] = set()

    async def watch() -> None:
        while True:
            seen.update(_in_jobs_of(prefix))
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    try:
        _, logs = await run(
            settings,
            data_dir.workdir(),
            "sleep 30 & sleep 30 & echo started; wait\n",
            language="bash",
            timeout_s=2,
        )
    finally:
        watcher.cancel()
    assert "started" in logs.text
    # sh, setpriv -> bwrap, bwrap's child, bash, two sleepers (some briefly).
    assert len(seen) >= 4, seen
    for _ in range(100):
        if not _in_jobs_of(prefix) and not any(n.startswith("job-") for n in os.listdir(parent)):
            break
        await asyncio.sleep(0.05)
    assert _in_jobs_of(prefix) == set()
    assert [n for n in os.listdir(parent) if n.startswith("job-")] == []


def test_groups_left_by_a_dead_worker_are_swept(mount: cgroupfs.Mount, parent: str) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid no worker has any more
    base = os.path.dirname(parent)
    stale = os.path.join(base, f"{cgroupfs.PARENT_PREFIX}{gone.pid}")
    group = os.path.join(stale, "job-left-behind")
    leaf = os.path.join(base, f"{cgroup_v2.WORKER_LEAF_PREFIX}{gone.pid}")
    os.makedirs(group)
    os.mkdir(leaf)
    stuck = _start_in(group, ["sleep", "60"])
    try:
        _wait_for(lambda: stuck.pid in cgroupfs.read_pids(group), "the process in the group")
        assert cgroup_v2.job_parent(())[0] == parent  # what a starting worker does
        assert stuck.wait(timeout=10) == -signal.SIGKILL
        assert not os.path.exists(stale)
        assert not os.path.exists(leaf)
    finally:
        _stop(stuck)
        cgroupfs.remove_tree(stale)
        cgroupfs.remove_tree(leaf)


def _hierarchy_ids() -> dict[str, int]:
    """controller -> its hierarchy id in /proc/cgroups (0: not bound to a v1 one)."""
    ids = {}
    with open("/proc/cgroups") as f:
        for line in f:
            if not line.startswith("#"):
                name, hierarchy, *_ = line.split()
                ids[name] = int(hierarchy)
    return ids


def test_each_controller_is_limited_through_the_hierarchy_holding_it(
    mount: cgroupfs.Mount,
) -> None:
    roots, why = find_cgroup_roots(("memory", "pids"))
    ids = _hierarchy_ids()
    v1 = cgroup_v1.hierarchies()
    in_v2 = cgroup_v2.held(mount)
    assert roots is not None, why
    for controller in ("memory", "pids"):
        expected = 1 if ids.get(controller) and controller in v1 else None
        if controller in in_v2:
            expected = 2
        assert roots.version(controller) == expected, (controller, why)
    assert (roots.unified is not None) == (2 in (roots.version("memory"), roots.version("pids")))


def test_the_sandbox_line_names_each_controllers_source(sandbox: Sandbox) -> None:
    both = policy(cgroups=("memory", "pids"))
    mixed = CgroupRoots(memory="/v1/memory/p", pids="/v2/p", unified="/v2/p")
    line = msgspec.structs.replace(sandbox, policy=both, cgroups=mixed).describe()
    assert "cgroups=memory(v1)+pids(v2);" in line
    only_memory = CgroupRoots(memory="/v1/memory/p")
    line = msgspec.structs.replace(sandbox, policy=both, cgroups=only_memory).describe()
    assert "cgroups=memory(v1)+pids(missing);" in line
    line = msgspec.structs.replace(sandbox, policy=both, cgroups=None).describe()
    assert "cgroups=memory(missing)+pids(missing);" in line
    line = msgspec.structs.replace(sandbox, policy=policy(cgroups=()), cgroups=None).describe()
    assert "cgroups=none;" in line


# -- delegation, with the controller v2 holds here ------------------------------------

_DELEGATE = """
import json, os
from gristmill.worker.sandbox import cgroup_v2, cgroupfs
parent, why = cgroup_v2.job_parent(("hugetlb",))
files = []
if parent is not None:
    group = cgroup_v2.Group.create(parent, "job-probe", ("hugetlb",))
    files = sorted(os.listdir(group.path))
    assert group.remove()
own = cgroupfs.own_groups()[1]
again = cgroup_v2.job_parent(("hugetlb",))[0]  # as a second detection in one process does
report = {"parent": parent, "why": why, "own": own, "files": files, "again": again}
print(json.dumps({**report, "own_after": cgroupfs.own_groups()[1]}))
"""


@pytest.fixture
def scratch(mount: cgroupfs.Mount) -> Iterator[str]:
    """A group of its own under the hierarchy's root, with ``hugetlb`` held by v2 and
    disabled again in the root afterwards unless it was enabled before."""
    if "hugetlb" not in cgroup_v2.held(mount):
        pytest.skip(f"the cgroup v2 hierarchy at {mount.point} holds no hugetlb controller")
    with open(_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        enabled_before = "hugetlb" in cgroupfs.read_words(mount.point, "cgroup.subtree_control")
        path = os.path.join(mount.point, f"gristmill-test-{uuid.uuid4().hex[:12]}")
        os.mkdir(path)
        try:
            yield path
        finally:
            cgroupfs.remove_tree(path)
            if not enabled_before:
                cgroupfs.write(mount.point, "cgroup.subtree_control", "-hugetlb")


def _delegate_from(group: str, *, companions: int = 0) -> dict[str, object]:
    """Run ``job_parent(("hugetlb",))`` in a process started in ``group``, with
    ``companions`` other processes there; what it reported."""
    sleepers = [_start_in(group, ["sleep", "60"]) for _ in range(companions)]
    try:
        _wait_for(
            lambda: all(s.pid in cgroupfs.read_pids(group) for s in sleepers), "the companions"
        )
        worker = _start_in(group, [sys.executable, "-c", textwrap.dedent(_DELEGATE)])
        output, _ = worker.communicate(timeout=60)
        assert worker.returncode == 0, output
        *logged, last = output.splitlines()  # its log lines, then its report
        reported: dict[str, object] = json.loads(last)
        reported["pid"] = worker.pid
        reported["logged"] = "\n".join(logged)
        return reported
    finally:
        for sleeper in sleepers:
            _stop(sleeper)


def test_a_worker_alone_in_its_group_moves_into_a_leaf_to_delegate(
    mount: cgroupfs.Mount, scratch: str
) -> None:
    reported = _delegate_from(scratch)
    pid = reported["pid"]
    assert reported["why"] == ""
    assert reported["parent"] == os.path.join(scratch, f"gristmill.{pid}")
    # Moved out of its own group into a leaf beside its jobs' groups.
    assert reported["own"] == _relative(mount, scratch) + f"/gristmill-worker.{pid}"
    assert reported["again"] == reported["parent"]  # not a leaf in the leaf
    assert reported["own_after"] == reported["own"]
    # Enabled along the path: in the root (for the scratch group), then the scratch
    # group (now without processes), then the worker's parent of job groups.
    assert "hugetlb" in cgroupfs.read_words(mount.point, "cgroup.subtree_control")
    assert "hugetlb" in cgroupfs.read_words(scratch, "cgroup.subtree_control")
    files = reported["files"]
    assert isinstance(files, list)
    assert any(name.startswith("hugetlb.") and name.endswith(".max") for name in files), files
    assert "worker moved into a leaf group" in str(reported["logged"])
    # The worker's parent went with it (at exit); its empty leaf is for the next to sweep.
    assert not os.path.exists(str(reported["parent"]))


def test_a_worker_sharing_its_group_falls_back_and_says_why(
    mount: cgroupfs.Mount, scratch: str
) -> None:
    reported = _delegate_from(scratch, companions=1)
    assert reported["parent"] is None
    why = str(reported["why"])
    assert f"{scratch} also holds other processes" in why
    assert "no process itself" in why
    assert reported["own"] == _relative(mount, scratch)  # not moved
    assert "hugetlb" not in cgroupfs.read_words(scratch, "cgroup.subtree_control")
    assert [name for name in os.listdir(scratch) if name.startswith("gristmill")] == []


def test_the_per_process_parent_is_removed_at_exit(mount: cgroupfs.Mount) -> None:
    """A worker process's parent of job groups goes with it (``atexit``)."""
    code = "from gristmill.worker.sandbox import cgroup_v2; print(cgroup_v2.job_parent(())[0])"
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    assert Path(output).parent == Path(mount.point)
    assert not Path(output).exists()
