"""The seccomp filter every sandboxed job runs under, as a classic BPF program.

bubblewrap installs the program it reads from ``--seccomp FD`` right before it
executes the job (and in its own pid-1 reaper). The filter allows everything except:

* system calls that administer the machine or reach across process boundaries
  (``DENIED``): they fail with ``EPERM``. Most of them already need a capability the
  job does not have; the filter is the second wall, and it also closes the ones
  that do not (``ptrace`` of a sibling, ``process_vm_readv``, ``userfaultfd``, keys);
* ``clone`` asking for a new namespace, and ``unshare``: ``EPERM``;
* ``clone3`` and ``io_uring_*``: ``ENOSYS``, the answer libraries already handle
  by falling back (``clone3`` hides its flags in memory a filter cannot read, so it
  must go; C libraries then use ``clone``);
* any other architecture, and the x32 ABI: the process is killed. Only x86_64 is
  described here; ``program()`` raises ``UnsupportedArchitecture`` elsewhere.

The program is assembled here (no libseccomp needed) once per worker process.
"""

from __future__ import annotations

import errno
import functools
import platform
import struct

__all__ = ["DENIED", "NAMESPACE_FLAGS", "UnsupportedArchitecture", "program", "supported"]

#: System calls answered with ``EPERM`` (x86_64 numbers).
DENIED: dict[str, int] = {
    "ptrace": 101,
    "syslog": 103,
    "uselib": 134,
    "vhangup": 153,
    "pivot_root": 155,
    "chroot": 161,
    "acct": 163,
    "settimeofday": 164,
    "mount": 165,
    "umount2": 166,
    "swapon": 167,
    "swapoff": 168,
    "reboot": 169,
    "sethostname": 170,
    "setdomainname": 171,
    "iopl": 172,
    "ioperm": 173,
    "init_module": 175,
    "delete_module": 176,
    "quotactl": 179,
    "lookup_dcookie": 212,
    "clock_settime": 227,
    "kexec_load": 246,
    "add_key": 248,
    "request_key": 249,
    "keyctl": 250,
    "unshare": 272,
    "perf_event_open": 298,
    "fanotify_init": 300,
    "name_to_handle_at": 303,
    "open_by_handle_at": 304,
    "clock_adjtime": 305,
    "setns": 308,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "finit_module": 313,
    "kexec_file_load": 320,
    "bpf": 321,
    "userfaultfd": 323,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "pidfd_getfd": 438,
    "mount_setattr": 442,
    "quotactl_fd": 443,
}
#: System calls answered with ``ENOSYS``, as if the kernel lacked them.
UNAVAILABLE: dict[str, int] = {
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "clone3": 435,
}
_CLONE = 56
#: ``clone`` flags that create namespaces (``CLONE_NEWNS`` ... ``CLONE_NEWNET``).
NAMESPACE_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000
NAMESPACE_FLAGS |= 0x40000000

_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_SYSCALL_BIT = 0x40000000

# struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6];
_OFFSET_NR = 0
_OFFSET_ARCH = 4
_OFFSET_ARG0_LOW = 16  # little-endian: the low half of args[0] comes first

# Classic BPF opcodes.
_LD_W_ABS = 0x00 | 0x00 | 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ_K = 0x05 | 0x10  # BPF_JMP | BPF_JEQ | BPF_K
_JGE_K = 0x05 | 0x30  # BPF_JMP | BPF_JGE | BPF_K
_JSET_K = 0x05 | 0x40  # BPF_JMP | BPF_JSET | BPF_K
_RET_K = 0x06  # BPF_RET | BPF_K

_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_RET_KILL_PROCESS = 0x80000000

_INSTRUCTION = struct.Struct("=HBBI")  # struct sock_filter: code, jt, jf, k


class UnsupportedArchitecture(RuntimeError):
    """The filter describes x86_64 system calls only."""


def supported() -> bool:
    """Whether this machine runs the architecture the filter describes."""
    return platform.machine() == "x86_64"


@functools.cache
def program() -> bytes:
    """The filter as bubblewrap reads it: ``struct sock_filter`` entries, native order.

    Raises ``UnsupportedArchitecture`` on anything but x86_64.
    """
    if not supported():
        raise UnsupportedArchitecture(
            f"the seccomp filter describes x86_64 system calls; this machine is "
            f"{platform.machine()}"
        )
    return b"".join(_INSTRUCTION.pack(*instruction) for instruction in _assemble())


def _assemble() -> list[tuple[int, int, int, int]]:
    """Label-resolved instructions; jumps only go forward, to the shared returns."""
    code: list[tuple[int, str | int, str | int, int]] = []  # op, jt, jf, k

    def emit(op: int, k: int, jt: str | int = 0, jf: str | int = 0) -> None:
        code.append((op, jt, jf, k))

    emit(_LD_W_ABS, _OFFSET_ARCH)
    emit(_JEQ_K, _AUDIT_ARCH_X86_64, jf="kill")
    emit(_LD_W_ABS, _OFFSET_NR)
    emit(_JGE_K, _X32_SYSCALL_BIT, jt="kill")
    for number in sorted(DENIED.values()):
        emit(_JEQ_K, number, jt="eperm")
    for number in sorted(UNAVAILABLE.values()):
        emit(_JEQ_K, number, jt="enosys")
    emit(_JEQ_K, _CLONE, jf="allow")
    emit(_LD_W_ABS, _OFFSET_ARG0_LOW)
    emit(_JSET_K, NAMESPACE_FLAGS, jt="eperm", jf="allow")
    returns = {
        "allow": _RET_ALLOW,
        "eperm": _RET_ERRNO | errno.EPERM,
        "enosys": _RET_ERRNO | errno.ENOSYS,
        "kill": _RET_KILL_PROCESS,
    }
    labels = {name: len(code) + index for index, name in enumerate(returns)}

    def offset(at: int, target: str | int) -> int:
        if isinstance(target, int):
            return target
        distance = labels[target] - at - 1
        if not 0 <= distance <= 255:  # a classic BPF jump offset is one byte
            raise AssertionError(f"seccomp jump too long: {distance}")
        return distance

    program = [(op, offset(at, jt), offset(at, jf), k) for at, (op, jt, jf, k) in enumerate(code)]
    program.extend((_RET_K, 0, 0, value) for value in returns.values())
    return program
