#!/usr/bin/env python3
"""Where a process's CPU time went, by thread name, between two moments (for the log of
scripts/bench-datasets.sh). Threads that exited in between are counted together.

usage: bench-threads.py snap PID FILE     save per-thread CPU ticks
       bench-threads.py diff PID FILE     print "total 12.3 s: fuser-0 2.1, ds-committer 0.4, ..., exited 3.2"
"""
import json
import os
import sys

HZ = os.sysconf("SC_CLK_TCK")


def ticks(stat_path):
    with open(stat_path) as f:
        s = f.read()
    fields = s[s.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def snap(pid):
    out = {"_proc": ticks(f"/proc/{pid}/stat"), "tasks": {}}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            out["tasks"][tid] = [name, ticks(f"/proc/{pid}/task/{tid}/stat")]
        except OSError:
            pass
    return out


def main():
    mode, pid, path = sys.argv[1], sys.argv[2], sys.argv[3]
    now = snap(pid)
    if mode == "snap":
        json.dump(now, open(path, "w"))
        return
    before = json.load(open(path))
    by_name = {}
    for tid, (name, t) in now["tasks"].items():
        t0 = before["tasks"].get(tid, [name, 0])[1]
        by_name[name] = by_name.get(name, 0) + (t - t0)
    total = now["_proc"] - before["_proc"]
    exited = total - sum(by_name.values())
    parts = [f"{n} {v / HZ:.1f}" for n, v in sorted(by_name.items(), key=lambda x: -x[1]) if v > 0]
    parts.append(f"threads that exited meanwhile {exited / HZ:.1f}")
    print(f"total {total / HZ:.1f} s: " + ", ".join(parts))


if __name__ == "__main__":
    main()
