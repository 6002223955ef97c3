"""The hand-built seccomp filter: its syscall tables and its decisions, run on a BPF interpreter."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import struct

import pytest

from qwen25_rl.sandboxes import seccomp

CLONE_NEWUSER = 0x10000000
CLONE_THREAD_FLAGS = 0x003D0F00  # what glibc passes for pthread_create
SIGCHLD = 17


def run_bpf(prog: bytes, *, arch: int, nr: int, args=(0, 0, 0, 0, 0, 0)) -> int:
    """A classic-BPF interpreter for the instructions the filter uses (ld abs, jeq/jge/jset, ret)."""
    data = struct.pack("=iIQ6Q", nr, arch, 0, *args)
    insns = [struct.unpack("=HBBI", prog[i : i + 8]) for i in range(0, len(prog), 8)]
    pc, acc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        if code == 0x20:  # ld w abs
            acc = struct.unpack_from("=I", data, k)[0]
            pc += 1
        elif code in (0x15, 0x35, 0x45):
            cond = {0x15: acc == k, 0x35: acc >= k, 0x45: bool(acc & k)}[code]
            pc += 1 + (jt if cond else jf)
        elif code == 0x06:
            return k
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")
        assert pc < len(insns), "jump out of the program"


@pytest.fixture(params=["x86_64", "aarch64"])
def arch(request):
    return request.param


def decide(arch, name, args=(0, 0, 0, 0, 0, 0)):
    prog = seccomp.build_filter(arch)
    return run_bpf(prog, arch=seccomp.AUDIT_ARCH[arch], nr=seccomp.SYSCALL_TABLES[arch][name], args=args)


def test_every_denied_syscall_gets_eperm(arch):
    for name in seccomp.DENIED_SYSCALLS:
        assert decide(arch, name) == seccomp.RET_ERRNO | errno.EPERM, name


def test_ordinary_syscalls_are_allowed(arch):
    prog = seccomp.build_filter(arch)
    denied = {seccomp.SYSCALL_TABLES[arch][n] for n in seccomp.DENIED_SYSCALLS + ("clone3",)}
    # read/write/openat/mmap/exit_group and friends: every number the filter does not name
    for nr in (0, 1, 2, 3, 9, 56 + 1, 60, 63, 64, 93, 94, 202, 222, 231, 257):
        if nr in denied or nr in (seccomp.SYSCALL_TABLES[arch]["socket"], seccomp.SYSCALL_TABLES[arch]["clone"]):
            continue
        assert run_bpf(prog, arch=seccomp.AUDIT_ARCH[arch], nr=nr) == seccomp.RET_ALLOW, nr


def test_socket_is_allowed_only_for_af_unix(arch):
    assert decide(arch, "socket", (1, 1, 0, 0, 0, 0)) == seccomp.RET_ALLOW  # AF_UNIX
    for family in (2, 10, 16, 17):  # AF_INET, AF_INET6, AF_NETLINK, AF_PACKET
        assert decide(arch, "socket", (family, 1, 0, 0, 0, 0)) == seccomp.RET_ERRNO | errno.EAFNOSUPPORT


def test_clone_with_namespace_flags_is_refused_and_thread_clone_allowed(arch):
    assert decide(arch, "clone", (CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0, 0)) == seccomp.RET_ERRNO | errno.EPERM
    assert decide(arch, "clone", (CLONE_THREAD_FLAGS, 0, 0, 0, 0, 0)) == seccomp.RET_ALLOW
    assert decide(arch, "clone", (SIGCHLD, 0, 0, 0, 0, 0)) == seccomp.RET_ALLOW


def test_clone3_gets_enosys_so_libc_falls_back_to_clone(arch):
    assert decide(arch, "clone3") == seccomp.RET_ERRNO | errno.ENOSYS


def test_a_foreign_architecture_is_killed(arch):
    prog = seccomp.build_filter(arch)
    i386 = 0x40000003
    assert run_bpf(prog, arch=i386, nr=1) == seccomp.RET_KILL_PROCESS


def test_x32_syscalls_are_refused_on_x86_64():
    prog = seccomp.build_filter("x86_64")
    assert run_bpf(prog, arch=seccomp.AUDIT_ARCH["x86_64"], nr=0x40000000 | 1) == seccomp.RET_ERRNO | errno.EPERM


def test_unknown_architecture_raises():
    with pytest.raises(seccomp.SeccompUnavailable, match="riscv64"):
        seccomp.build_filter("riscv64")


def test_syscall_numbers_match_libseccomp(arch):
    name = ctypes.util.find_library("seccomp")
    if not name:
        pytest.skip("libseccomp is not installed: nothing to cross-check against")
    lib = ctypes.CDLL(name)
    lib.seccomp_syscall_resolve_name_arch.argtypes = [ctypes.c_uint32, ctypes.c_char_p]
    lib.seccomp_syscall_resolve_name_arch.restype = ctypes.c_int
    for sc, nr in seccomp.SYSCALL_TABLES[arch].items():
        assert lib.seccomp_syscall_resolve_name_arch(seccomp.AUDIT_ARCH[arch], sc.encode()) == nr, sc
