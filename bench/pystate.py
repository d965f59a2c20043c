"""pystate.py: a python3 benchmark target for ckpt.

Builds some interpreter state (a dict, a list, strings), prints "ready sum=<hex>" and then
sleeps in signal.pause(). On SIGUSR1 it recomputes the checksum of that state and prints
"sum=<hex>", so a benchmark can confirm that a restored interpreter holds the same state.
"""

import os
import signal
import sys

# ckpt refuses targets holding pipes or sockets beyond stdin/out/err; drop anything a
# harness may have leaked into us.
os.closerange(3, 1 << 16)

N = 50000
table = {i: str(i) * (i % 7 + 1) for i in range(N)}
items = [i * i for i in range(N)]
M = (1 << 61) - 1


def checksum():
    h = 0
    for k, v in table.items():
        h = (h * 31 + k + len(v)) % M
    for x in items:
        h = (h * 131 + x) % M
    return h


def on_usr1(_sig, _frame):
    sys.stdout.write("sum=%016x\n" % checksum())
    sys.stdout.flush()


signal.signal(signal.SIGUSR1, on_usr1)
sys.stdout.write("ready sum=%016x\n" % checksum())
sys.stdout.flush()
while True:
    signal.pause()
