"""A hand-built seccomp BPF filter for `bwrap --seccomp FD`.

Why hand-built: libseccomp's Python bindings are not on PyPI in a usable form and the filter is
small. It is a deny-list on top of the namespaces, not an allow-list: the sandbox already has no
network namespace routes, a private mount namespace and an unprivileged uid, so the filter's job
is to take away the kernel interfaces that are the usual ways *out* of such a sandbox (creating
namespaces, mounting, ptrace / process_vm to reach the grader process, io_uring, bpf, keyrings,
kernel modules, reboot...) and to refuse every socket family except AF_UNIX (belt and braces
with the network namespace). Anything not listed is allowed, which keeps ordinary Python
(threads, multiprocessing over AF_UNIX, mmap, signals) working.

Syscall numbers are per architecture; x86_64 and aarch64 are supported. On any other machine
`build_filter` raises `SeccompUnavailable` and the sandbox reports the layer as missing.
A unit test cross-checks both tables against libseccomp when its shared library is present.
"""

from __future__ import annotations

import errno
import platform
import struct

# <linux/audit.h>
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}

# Syscalls refused with EPERM. Names are the kernel's.
DENIED_SYSCALLS = (
    # namespaces, mounts, root changes: the ways to rebuild a view of the host
    "unshare",
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "open_tree",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    # reaching into other processes (the grader runs in the same sandbox under the same uid)
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "pidfd_getfd",
    # large kernel attack surface with no use for test programs
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "keyctl",
    "add_key",
    "request_key",
    "open_by_handle_at",
    "name_to_handle_at",
    # host-global state
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "syslog",
    "sethostname",
    "setdomainname",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "quotactl",
    "vhangup",
    "personality",
)

# x86_64: arch/x86/entry/syscalls/syscall_64.tbl
_X86_64 = {
    "socket": 41,
    "clone": 56,
    "clone3": 435,
    "unshare": 272,
    "setns": 308,
    "mount": 165,
    "umount2": 166,
    "pivot_root": 155,
    "chroot": 161,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "mount_setattr": 442,
    "ptrace": 101,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "kcmp": 312,
    "pidfd_getfd": 438,
    "bpf": 321,
    "perf_event_open": 298,
    "userfaultfd": 323,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "keyctl": 250,
    "add_key": 248,
    "request_key": 249,
    "open_by_handle_at": 304,
    "name_to_handle_at": 303,
    "init_module": 175,
    "finit_module": 313,
    "delete_module": 176,
    "kexec_load": 246,
    "kexec_file_load": 320,
    "reboot": 169,
    "swapon": 167,
    "swapoff": 168,
    "acct": 163,
    "syslog": 103,
    "sethostname": 170,
    "setdomainname": 171,
    "settimeofday": 164,
    "clock_settime": 227,
    "clock_adjtime": 305,
    "adjtimex": 159,
    "quotactl": 179,
    "vhangup": 153,
    "personality": 135,
}

# aarch64: include/uapi/asm-generic/unistd.h
_AARCH64 = {
    "socket": 198,
    "clone": 220,
    "clone3": 435,
    "unshare": 97,
    "setns": 268,
    "mount": 40,
    "umount2": 39,
    "pivot_root": 41,
    "chroot": 51,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "mount_setattr": 442,
    "ptrace": 117,
    "process_vm_readv": 270,
    "process_vm_writev": 271,
    "kcmp": 272,
    "pidfd_getfd": 438,
    "bpf": 280,
    "perf_event_open": 241,
    "userfaultfd": 282,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "keyctl": 219,
    "add_key": 217,
    "request_key": 218,
    "open_by_handle_at": 265,
    "name_to_handle_at": 264,
    "init_module": 105,
    "finit_module": 273,
    "delete_module": 106,
    "kexec_load": 104,
    "kexec_file_load": 294,
    "reboot": 142,
    "swapon": 224,
    "swapoff": 225,
    "acct": 89,
    "syslog": 116,
    "sethostname": 161,
    "setdomainname": 162,
    "settimeofday": 170,
    "clock_settime": 112,
    "clock_adjtime": 266,
    "adjtimex": 171,
    "quotactl": 60,
    "vhangup": 58,
    "personality": 92,
}

SYSCALL_TABLES = {"x86_64": _X86_64, "aarch64": _AARCH64}

# clone(2) flags that create namespaces; a clone with any of them is refused.
CLONE_NAMESPACE_FLAGS = (
    0x00020000  # CLONE_NEWNS
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
)
AF_UNIX = 1
X32_SYSCALL_BIT = 0x40000000

# <linux/filter.h>, <linux/seccomp.h>
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06
RET_KILL_PROCESS = 0x80000000
RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000
# struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6];
_OFF_NR = 0
_OFF_ARCH = 4
_OFF_ARG0_LO = 16  # little-endian: the low 32 bits of args[0] come first


class SeccompUnavailable(RuntimeError):
    """No filter can be built for this machine's architecture."""


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k & 0xFFFFFFFF)


def machine_arch() -> str:
    m = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(m, m)


def build_filter(arch: str | None = None) -> bytes:
    """The compiled BPF program (array of `struct sock_filter`) for `bwrap --seccomp`."""
    arch = arch or machine_arch()
    if arch not in SYSCALL_TABLES:
        raise SeccompUnavailable(f"no seccomp syscall table for architecture {arch!r} (have x86_64, aarch64)")
    if struct.pack("=I", 1) != struct.pack("<I", 1):
        raise SeccompUnavailable("the filter reads syscall arguments as little-endian; this machine is big-endian")
    table = SYSCALL_TABLES[arch]
    eperm = RET_ERRNO | errno.EPERM
    prog: list[bytes] = [
        _insn(_LD_W_ABS, 0, 0, _OFF_ARCH),
        # A foreign ABI (i386 via int 0x80 on x86_64) would bypass every number below: kill.
        _insn(_JEQ_K, 1, 0, AUDIT_ARCH[arch]),
        _insn(_RET_K, 0, 0, RET_KILL_PROCESS),
        _insn(_LD_W_ABS, 0, 0, _OFF_NR),
    ]
    if arch == "x86_64":
        # x32 syscalls share the arch value but carry bit 30; refuse them outright.
        prog += [_insn(_JGE_K, 0, 1, X32_SYSCALL_BIT), _insn(_RET_K, 0, 0, eperm)]
    for name in DENIED_SYSCALLS:
        prog += [_insn(_JEQ_K, 0, 1, table[name]), _insn(_RET_K, 0, 0, eperm)]
    # clone3 passes its flags in a struct that BPF cannot read: ENOSYS makes libc fall back
    # to clone(2), whose flags we can check.
    prog += [_insn(_JEQ_K, 0, 1, table["clone3"]), _insn(_RET_K, 0, 0, RET_ERRNO | errno.ENOSYS)]
    # socket(domain, ...): only AF_UNIX.
    prog += [
        _insn(_JEQ_K, 0, 4, table["socket"]),
        _insn(_LD_W_ABS, 0, 0, _OFF_ARG0_LO),
        _insn(_JEQ_K, 1, 0, AF_UNIX),
        _insn(_RET_K, 0, 0, RET_ERRNO | errno.EAFNOSUPPORT),
        _insn(_RET_K, 0, 0, RET_ALLOW),
    ]
    # clone(flags, ...): no namespace flags.
    prog += [
        _insn(_JEQ_K, 0, 3, table["clone"]),
        _insn(_LD_W_ABS, 0, 0, _OFF_ARG0_LO),
        _insn(_JSET_K, 0, 1, CLONE_NAMESPACE_FLAGS),
        _insn(_RET_K, 0, 0, eperm),
    ]
    prog.append(_insn(_RET_K, 0, 0, RET_ALLOW))
    if len(prog) > 4096:  # BPF_MAXINSNS
        raise SeccompUnavailable(f"filter too long ({len(prog)} instructions)")
    return b"".join(prog)
