"""loop.py STEPS [SLEEP_S]: a python3 loop with growing state, one line per step.

State grows in a dict, a list, a set and a closure; output is deterministic (no hash
ordering, addresses or times are printed), so an uninterrupted run and a checkpointed and
restored run print the same bytes.
"""

import sys
import time


def make_counter():
    count = 0

    def bump(by):
        nonlocal count
        count += by
        return count

    return bump


def main():
    steps = int(sys.argv[1])
    pause = float(sys.argv[2]) if len(sys.argv) > 2 else 0.02
    table = {}
    items = []
    seen = set()
    bump = make_counter()
    acc = 0
    x = 1.0
    for i in range(1, steps + 1):
        table["k%d" % i] = i * i
        items.append(str(i) * (i % 7 + 1))
        seen.add(i % 13)
        total = bump(i)
        acc = (acc * 31 + sum(len(s) for s in items) + table["k%d" % i]) % (2**61 - 1)
        x = x * 1.0001 + i / 3.0
        sys.stdout.write(
            "step %d dict=%d list=%d set=%d total=%d acc=%d x=%.4f\n"
            % (i, len(table), len(items), len(seen), total, acc, x)
        )
        sys.stdout.flush()
        time.sleep(pause)
    sys.stdout.write("done sum=%d\n" % sum(table.values()))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
