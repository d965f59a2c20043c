"""report.py RAW.tsv: the benchmark table from bench/run's raw measurements."""

import statistics
import sys

COLS = [
    "target", "fs", "rep", "image_bytes", "dump_wall_s", "dump_total_s", "frozen_s",
    "dump_maxrss_kb", "restore_wall_s", "restore_maxrss_kb", "bound_write_s",
    "bound_write_fsync_s", "bound_read_s", "pages_written", "zero_pages_skipped", "vmas",
]
GIB = float(1 << 30)


def ms(s):
    v = s * 1e3
    if v < 10:
        return "%.2f" % v
    if v < 100:
        return "%.1f" % v
    return "%.0f" % v


def spread(xs):
    return "%s (%s-%s)" % (ms(statistics.median(xs)), ms(min(xs)), ms(max(xs)))


def size(b):
    if b >= 1 << 30:
        return "%.2f GiB" % (b / GIB)
    return "%.1f MiB" % (b / float(1 << 20))


def main():
    rows = []
    with open(sys.argv[1]) as f:
        for line in f:
            v = line.rstrip("\n").split("\t")
            if len(v) != len(COLS):
                continue
            r = dict(zip(COLS, v))
            for k in COLS[2:]:
                r[k] = float(r[k])
            rows.append(r)
    groups = {}
    for r in rows:
        groups.setdefault((r["target"], r["fs"]), []).append(r)

    head = [
        ("target", "<"), ("fs", "<"), ("n", ">"), ("image", ">"),
        ("dump ms med (min-max)", ">"), ("GiB/s", ">"), ("bound ms (min-max)", ">"),
        ("x bound", ">"), ("frozen ms", ">"),
        ("restore ms med (min-max)", ">"), ("GiB/s", ">"), ("bound ms (min-max)", ">"),
        ("x bound", ">"), ("peak RSS MiB d/r", ">"),
    ]
    table = []
    for (target, fs), rs in groups.items():
        med = lambda k: statistics.median(r[k] for r in rs)
        b = med("image_bytes")
        dump = [r["dump_wall_s"] for r in rs]
        rest = [r["restore_wall_s"] for r in rs]
        # Ratios are taken per repetition (dump and bound measured back to back), then
        # the median of those.
        dratio = statistics.median(r["dump_wall_s"] / r["bound_write_fsync_s"] for r in rs)
        rratio = statistics.median(r["restore_wall_s"] / r["bound_read_s"] for r in rs)
        table.append([
            target, fs, str(len(rs)), size(b),
            spread(dump), "%.2f" % (b / GIB / statistics.median(dump)),
            spread([r["bound_write_fsync_s"] for r in rs]), "%.2f" % dratio,
            ms(med("frozen_s")),
            spread(rest), "%.2f" % (b / GIB / statistics.median(rest)),
            spread([r["bound_read_s"] for r in rs]), "%.2f" % rratio,
            "%.0f/%.0f" % (max(r["dump_maxrss_kb"] for r in rs) / 1024,
                           max(r["restore_maxrss_kb"] for r in rs) / 1024),
        ])
    widths = [max(len(h[0]), *(len(t[i]) for t in table)) if table else len(h[0])
              for i, h in enumerate(head)]

    def fmt(cells):
        out = []
        for (name, align), w, c in zip(head, widths, cells):
            out.append(c.ljust(w) if align == "<" else c.rjust(w))
        return "  ".join(out)

    print(fmt([h[0] for h in head]))
    print(fmt(["-" * w for w in widths]))
    for t in table:
        print(fmt(t))
    print()
    print("dump: wall time of `ckpt dump --json` (fork to exit: freeze, write, fsync, rename,")
    print("  kill); bound: write(2)+fsync+close of the same bytes from populated memory to a")
    print("  file in the same directory. frozen: the target's stopped time (ckpt's JSON).")
    print("restore: wall time of `ckpt restore --detach` (returns once the process runs);")
    print("  bound: pread(2) of the same bytes (page cache warm) into fresh anonymous memory.")
    print("GiB/s = image bytes / median time; x bound = median over repetitions of time/bound.")
    print("peak RSS: ckpt's maximum resident set (wait4), max over repetitions, dump/restore.")


main()
