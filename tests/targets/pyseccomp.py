"""pyseccomp: a python3 program that sandboxes itself with seccomp through ctypes.

usage: python3 pyseccomp.py STEPS SLEEP

It sets no_new_privs (prctl) and installs a classic BPF filter (seccomp(2)) that makes
mkdir fail with EACCES and kills the process on uselib, then at every step tries a mkdir
(reporting the error it gets), reports its Seccomp, Seccomp_filters and NoNewPrivs
status lines and sleeps. Exits with status 0."""

import ctypes
import os
import struct
import sys
import time

PR_SET_NO_NEW_PRIVS = 38
SYS_SECCOMP = 317
SYS_MKDIR = 83
SYS_MKDIRAT = 258
SYS_USELIB = 134
AUDIT_ARCH_X86_64 = 0xC000003E
RET_KILL_PROCESS = 0x80000000
RET_ERRNO = 0x00050000
RET_ALLOW = 0x7FFF0000
EACCES = 13


def insn(code, jt, jf, k):
    return struct.pack("HBBI", code, jt, jf, k)


def install():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        sys.exit("prctl failed")
    prog = b"".join(
        [
            insn(0x20, 0, 0, 4),  # ld arch
            insn(0x15, 1, 0, AUDIT_ARCH_X86_64),
            insn(0x06, 0, 0, RET_KILL_PROCESS),
            insn(0x20, 0, 0, 0),  # ld nr
            insn(0x15, 1, 0, SYS_MKDIR),
            insn(0x15, 0, 1, SYS_MKDIRAT),
            insn(0x06, 0, 0, RET_ERRNO | EACCES),
            insn(0x15, 0, 1, SYS_USELIB),
            insn(0x06, 0, 0, RET_KILL_PROCESS),
            insn(0x06, 0, 0, RET_ALLOW),
        ]
    )
    buf = ctypes.create_string_buffer(prog)
    fprog = struct.pack("HxxxxxxQ", len(prog) // 8, ctypes.addressof(buf))
    fbuf = ctypes.create_string_buffer(fprog)
    libc.syscall.restype = ctypes.c_long
    r = libc.syscall(SYS_SECCOMP, 1, 0, fbuf)
    if r != 0:
        sys.exit("seccomp failed: errno %d" % ctypes.get_errno())


def status():
    with open("/proc/self/status") as f:
        keep = ("Seccomp:", "Seccomp_filters:", "NoNewPrivs:")
        return " ".join(
            "".join(l.replace(":", "=").split())
            for l in f.read().splitlines()
            if l.startswith(keep)
        )


def main():
    steps, sleep = int(sys.argv[1]), float(sys.argv[2])
    install()
    for step in range(1, steps + 1):
        try:
            os.mkdir("/nonexistent-ckpt-pyseccomp/x")
            got = "created"
        except OSError as e:
            got = "errno %d" % e.errno
        sys.stdout.write("step %d/%d mkdir: %s %s\n" % (step, steps, got, status()))
        sys.stdout.flush()
        time.sleep(sleep)
    sys.stdout.write("done\n")
    sys.stdout.flush()


main()
