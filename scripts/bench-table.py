#!/usr/bin/env python3
"""The table of scripts/bench-datasets.sh: per-run ratios from samples.tsv (run, key, value), then
the median and min-max over the runs whose commands all succeeded.

usage: bench-table.py SAMPLES RUNS FILES BIG_MIB ROWS
"""
import collections
import statistics
import sys

samples, runs, files, big_mib, rows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
per = collections.defaultdict(dict)
fails = []
for line in open(samples):
    parts = line.rstrip("\n").split("\t")
    if len(parts) != 3:
        continue
    run, key, val = parts
    if key == "FAIL":
        fails.append(f"run {run}: {val}")
        continue
    per[int(run)][key] = float(val)


def k(n):
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def size(mib):
    return f"{mib // 1024} GiB" if mib % 1024 == 0 else f"{mib} MiB"


B = size(big_mib)
# name, f(run) -> value, op, target (None: information only), unit, context: [(label, f(run), fmt)]
FIGS = [
    (f"1 cp {k(files)}x1KiB +commit / Kubo add -r", lambda s: s["cp_total"] / s["kubo_tree"], "<=", 1.0, "x",
     [("ours s", lambda s: s["cp_total"], "{:.1f}"), ("Kubo s", lambda s: s["kubo_tree"], "{:.1f}"),
      ("final commit s", lambda s: s["cp_commit_wait"], "{:.2f}")]),
    ("1 CPU s: ours (mount+cp) / Kubo (info)", lambda s: s["cpu_tree"] / s["kubo_cpu_tree"], None, None, "x",
     [("ours CPU s", lambda s: s["cpu_tree"], "{:.1f}"), ("Kubo CPU s", lambda s: s["kubo_cpu_tree"], "{:.1f}")]),
    ("1 last/first tenth of the copy", lambda s: s["batch_10"] / s["batch_1"], "<=", 1.5, "x",
     [("first s", lambda s: s["batch_1"], "{:.2f}"), ("last s", lambda s: s["batch_10"], "{:.2f}")]),
    ("1 store bytes (du -sb blocks) / data", lambda s: s["store_ratio"], "<=", 2.5, "x",
     [("block files", lambda s: s["store_files_ratio"], "{:.2f}"), ("allocated", lambda s: s["store_alloc_ratio"], "{:.2f}"),
      ("index.sqlite*", lambda s: s["index_ratio"], "{:.2f}"), ("Kubo du -sb", lambda s: s["kubo_store_ratio"], "{:.2f}")]),
    ("1 versions made by the copy", lambda s: s["versions"], None, None, "",
     [("blocks", lambda s: s["store_blocks"], "{:.0f}")]),
    ("1 peak RSS of the mount (VmHWM)", lambda s: s["rss1_mib"], None, None, "MiB", []),
    (f"2 commit +1 file in {k(files)} dir - idle", lambda s: s["commit_one_ms"], "<", 10.0, "ms",
     [("idle commit ms", lambda s: s["commit_idle_ms"], "{:.2f}"), ("write ms", lambda s: s["write_one_ms"], "{:.2f}"),
      ("via CLI: diff ms", lambda s: s["commit_one_cli_ms"], "{:.1f}"), ("idle CLI ms", lambda s: s["commit_idle_cli_ms"], "{:.1f}")]),
    ("2 write -> committed, absolute (info)", lambda s: s["write_commit_ms"], None, None, "ms", []),
    (f"3 cp {B}, to close: speed / Kubo add", lambda s: s["kubo_big"] / s["cp_big_close"], ">=", 1.0, "x",
     [("ours MiB/s", lambda s: big_mib / s["cp_big_close"], "{:.0f}"), ("Kubo MiB/s", lambda s: big_mib / s["kubo_big"], "{:.0f}")]),
    (f"3 cp {B}, to commit: speed / Kubo add", lambda s: s["kubo_big"] / s["cp_big_commit"], ">=", 1.0, "x",
     [("ours MiB/s", lambda s: big_mib / s["cp_big_commit"], "{:.0f}")]),
    (f"3 CPU s: ours (mount+cp) / Kubo (info)", lambda s: s["cpu_big"] / s["kubo_cpu_big"], None, None, "x",
     [("ours CPU s", lambda s: s["cpu_big"], "{:.2f}"), ("Kubo CPU s", lambda s: s["kubo_cpu_big"], "{:.2f}")]),
    (f"3 cp {B} +commit: time / local cp", lambda s: s["cp_big_commit"] / s["localcp_big"], None, None, "x",
     [("local cp MiB/s", lambda s: big_mib / s["localcp_big"], "{:.0f}")]),
    (f"3 cp {B} +commit: time / sha256sum", lambda s: s["cp_big_commit"] / s["sha_big"], None, None, "x",
     [("sha256sum MiB/s", lambda s: big_mib / s["sha_big"], "{:.0f}")]),
    ("3 peak RSS of the mount (VmHWM)", lambda s: s["rss3_mib"], None, None, "MiB", []),
    (f"4 append 1 MiB +commit / cp {B} +commit", lambda s: s["append_commit"] / s["cp_big_commit"], "<=", 0.05, "x",
     [("append s", lambda s: s["append_commit"], "{:.3f}"), ("new blocks", lambda s: s["append_blocks"], "{:.0f}")]),
    (f"5 DuckDB {rows / 1e6:g}M rows write+scan / local", lambda s: (s["duck_ds_write"] + s["duck_ds_scan"]) / (s["duck_local_write"] + s["duck_local_scan"]), "<=", 1.1, "x",
     [("write", lambda s: s["duck_ds_write"] / s["duck_local_write"], "{:.2f}x"), ("scan", lambda s: s["duck_ds_scan"] / s["duck_local_scan"], "{:.2f}x"),
      ("local s", lambda s: s["duck_local_write"] + s["duck_local_scan"], "{:.1f}"), ("MiB", lambda s: s["duck_mib"], "{:.0f}"),
      ("commit after s", lambda s: s["duck_commit"], "{:.2f}")]),
    ("6 truncate -s 1T of a dataset file", lambda s: s["trunc_ds"] * 1000, "<", 1000.0, "ms",
     [("local ms", lambda s: s["trunc_local"] * 1000, "{:.2f}"), ("commit after ms", lambda s: s["trunc_commit"] * 1000, "{:.0f}")]),
]


def vals(f):
    out = []
    for r in range(1, runs + 1):
        try:
            out.append(f(per[r]))
        except (KeyError, ZeroDivisionError):
            pass
    return out


def fmt(x):
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if abs(x) >= 0.1:
        return f"{x:.2f}"
    return f"{x:.3f}"


hdr = f"{'figure':<42} {'median':>8} {'min-max':>15} {'target':>8} {'':<5}  runs  context (medians)"
print(hdr)
print("-" * len(hdr))
misses = 0
for name, f, op, target, unit, ctx in FIGS:
    v = vals(f)
    if not v:
        print(f"{name:<42} {'--':>8} {'':>15} {'':>8} {'NONE':<5}  0/{runs}  (no run succeeded or the figure was not run)")
        continue
    med = statistics.median(v)
    spread = f"{fmt(min(v))}-{fmt(max(v))}"
    tgt = f"{op} {fmt(target)}" if op else ""
    if op:
        good = {"<=": med <= target, "<": med < target, ">=": med >= target}[op]
        verdict = "PASS" if good else "MISS"
        misses += not good
    else:
        verdict = "info"
    c = []
    for label, cf, cfmt in ctx:
        cv = vals(cf)
        if cv:
            c.append(f"{label} {cfmt.format(statistics.median(cv))}")
    print(f"{name:<42} {fmt(med) + unit:>8} {spread:>15} {tgt:>8} {verdict:<5}  {len(v)}/{runs}  {'; '.join(c)}")

bt = [vals(lambda s, b=b: s[f"batch_{b}"]) for b in range(1, 11)]
if all(bt):
    print("\nfigure 1, seconds per tenth of the copy (median): " + " ".join(f"{statistics.median(x):.2f}" for x in bt))
if fails:
    print("\nFAILED (their runs are left out of the figures above):")
    for x in fails:
        print("  " + x)
