#!/usr/bin/env python3
"""usage: ptyrun.py [-i] CMD [ARGS...]

Runs CMD as the leader of a new session whose controlling terminal is a fresh
pseudo-terminal (its 0-2 are the pty), copies everything it writes there to our
stdout, and exits with its status (128+N when it was killed by signal N).

The tests' own script(1): it never reads our stdin (unless -i: then what comes on our
stdin is typed into the terminal, until its end), so its behaviour does not depend on
what stdin is or how a given util-linux version treats its end.
"""
import errno
import fcntl
import os
import select
import sys
import termios


def main():
    args = sys.argv[1:]
    typing = bool(args) and args[0] == "-i"
    if typing:
        args = args[1:]
    if not args:
        sys.exit("usage: ptyrun.py [-i] CMD [ARGS...]")
    master, slave = os.openpty()
    pid = os.fork()
    if pid == 0:
        os.close(master)
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
        for fd in (0, 1, 2):
            os.dup2(slave, fd)
        if slave > 2:
            os.close(slave)
        try:
            os.execvp(args[0], args)
        except OSError as e:
            os.write(2, f"ptyrun: {args[0]}: {e}\n".encode())
            os._exit(127)
    os.close(slave)
    out = sys.stdout.buffer
    while True:
        if typing:
            ready, _, _ = select.select([master, 0], [], [])
            if 0 in ready:
                line = os.read(0, 65536)
                if line:
                    os.write(master, line)
                else:
                    typing = False
            if master not in ready:
                continue
        try:
            data = os.read(master, 65536)
        except OSError as e:
            if e.errno == errno.EIO:  # every slave descriptor is closed
                break
            raise
        if not data:
            break
        out.write(data)
        out.flush()
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        sys.exit(128 + os.WTERMSIG(status))
    sys.exit(os.WEXITSTATUS(status))


main()
