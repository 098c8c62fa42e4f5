"""The seccomp filter: its program, and its effect on system calls inside a job."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import signal
import struct

import pytest

from gristmill.worker.execution import ExecutorSettings
from gristmill.worker.sandbox import seccomp
from tests.sandbox.conftest import DataDir, run

#: (name, number, arguments): calls whose result without the filter is not the one the
#: filter gives (success, EFAULT, EBADF, EINVAL...), so the filter is what answered.
PROBES = [
    ("keyctl", 250, (0, -3, 0)),  # KEYCTL_GET_KEYRING_ID of the session keyring
    ("add_key", 248, (0, 0, 0, 0, 0)),
    ("request_key", 249, (0, 0, 0, 0)),
    ("perf_event_open", 298, (0, 0, -1, -1, 0)),
    ("name_to_handle_at", 303, (-100, 0, 0, 0, 0)),
    ("setns", 308, (-1, 0)),
    ("unshare", 272, (0,)),
    ("process_vm_readv", 310, (0, 0, 0, 0, 0, 0)),  # pid 0: filled in with its own
    ("pidfd_getfd", 438, (-1, 0, 0)),
    ("clone_newuser", 56, (0x10000000 | 0x200, 0, 0, 0, 0)),  # with CLONE_FS: EINVAL
    ("io_uring_setup", 425, (0, 0)),
    ("clone3", 435, (0, 0)),
]
EXPECTED = {name: errno.EPERM for name, _, _ in PROBES}
EXPECTED.update(io_uring_setup=errno.ENOSYS, clone3=errno.ENOSYS)

SCRIPT = """
import ctypes, os, signal, subprocess, sys

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def main(probes):
    found = {}
    for name, number, args in probes:
        if name == "process_vm_readv":
            args = [os.getpid(), *args[1:]]
        ctypes.set_errno(0)
        result = libc.syscall(number, *[ctypes.c_long(a) for a in args])
        found[name] = 0 if result != -1 else ctypes.get_errno()
    # The x32 ABI (getpid with bit 30 set) must kill the process, not slip through.
    child = subprocess.run([sys.executable, "-c",
        "import ctypes; ctypes.CDLL(None).syscall(0x40000000 | 39)"], check=False)
    found["x32"] = child.returncode
    return found
"""


def test_the_program_checks_the_architecture_first() -> None:
    if not seccomp.supported():
        pytest.skip("the filter describes x86_64 only")
    program = seccomp.program()
    assert len(program) % 8 == 0
    instructions = [struct.unpack("=HBBI", program[i : i + 8]) for i in range(0, len(program), 8)]
    assert instructions[0] == (0x20, 0, 0, 4)  # load seccomp_data.arch
    jump_if_x86_64, _, kill_otherwise, arch = instructions[1]
    assert (jump_if_x86_64, arch) == (0x15, 0xC000003E)  # x86_64, or jump to the end ...
    assert 1 + 1 + kill_otherwise == len(instructions) - 1
    assert instructions[-1] == (0x06, 0, 0, 0x80000000)  # ... kill the process
    assert seccomp.program() is program  # assembled once per process


def test_the_syscall_numbers_match_libseccomp() -> None:
    name = ctypes.util.find_library("seccomp")
    if name is None or not seccomp.supported():
        pytest.skip("libseccomp is not installed to cross-check the table")
    library = ctypes.CDLL(name)
    library.seccomp_syscall_resolve_name.restype = ctypes.c_int
    library.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    table = {**seccomp.DENIED, **seccomp.UNAVAILABLE}
    resolved = {call: library.seccomp_syscall_resolve_name(call.encode()) for call in table}
    assert resolved == table


async def test_denied_calls_fail_in_a_job_and_succeed_outside(
    settings: ExecutorSettings, data_dir: DataDir
) -> None:
    probes = [[name, number, list(args)] for name, number, args in PROBES]
    outcome, _ = await run(settings, data_dir.workdir(), SCRIPT, args={"probes": probes})
    assert outcome.error is None, outcome.error
    found = outcome.result
    assert found.pop("x32") == -signal.SIGSYS
    assert found == EXPECTED

    # The same calls outside the sandbox: none gives the filter's answer.
    unsandboxed = ExecutorSettings(sandbox=None, kill_grace_s=0.5)
    outcome, _ = await run(unsandboxed, data_dir.workdir(), SCRIPT, args={"probes": probes})
    assert outcome.error is None, outcome.error
    outside = outcome.result
    for name, expected in EXPECTED.items():
        assert outside[name] != expected, name
