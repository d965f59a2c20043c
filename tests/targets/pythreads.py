"""pythreads.py ROUNDS [SLEEP_S]: python3 threads taking strict turns under a Condition.

Four worker threads share a state dict guarded by one threading.Condition. Worker k waits
until `turn % 4 == k`, mixes the shared accumulator with its own private state, appends
to a shared list, prints one line, advances the turn and notifies everyone. The main
thread joins the workers and prints a summary. The turns fix the order of every line,
so the output is deterministic.
"""

import sys
import threading
import time

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 30
PAUSE = float(sys.argv[2]) if len(sys.argv) > 2 else 0.005
WORKERS = 4

cond = threading.Condition()
state = {"turn": 0, "acc": 1, "log": []}


def worker(k):
    mine = k * 1000
    for r in range(ROUNDS):
        with cond:
            while state["turn"] % WORKERS != k:
                cond.wait()
            mine += r + k + 1
            state["acc"] = (state["acc"] * 1000003 + mine + len(state["log"])) % 2147483647
            state["log"].append(state["acc"] % 97)
            print(
                f"round {r} worker {k} turn {state['turn']} acc {state['acc']} "
                f"mine {mine} log {sum(state['log'])}",
                flush=True,
            )
            state["turn"] += 1
            cond.notify_all()
        time.sleep(PAUSE)


def main():
    threads = [threading.Thread(target=worker, args=(k,), name=f"w{k}") for k in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"done: turns {state['turn']} acc {state['acc']} log {len(state['log'])}", flush=True)


if __name__ == "__main__":
    main()
