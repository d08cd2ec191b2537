#!/usr/bin/env python3
"""Figure 2 of scripts/bench-datasets.sh: what committing one new small file costs in a large
dataset directory, as the difference between a commit with that file pending and the same
commit with nothing pending (the baseline), pair by pair.

Two ways, both printed:
  socket: the request `dataset commit` sent straight to the mount's control socket
          (<store>/control.sock, the one `ipfs-mount dataset commit` uses), timed in this
          process: no process start-up in the figure, so the difference is resolvable
  cli:    `ipfs-mount dataset commit NAME -m x --store STORE` wall time (start-up included)
Every answer is checked: `ok`, a new version each time, a new root after a write and the same
root after an idle commit.

usage: bench-commit-one.py BIN STORE DATASET_DIR NAME SOCKET_PAIRS CLI_PAIRS
prints: commit_one_ms commit_idle_ms write_ms commit_one_cli_ms commit_idle_cli_ms latency_ms (medians;
        latency: from the start of the write to the commit's answer, over the socket)
"""
import os
import socket
import statistics
import subprocess
import sys
import time

binary, store, dsdir, name = sys.argv[1:5]
pairs, cli_pairs = int(sys.argv[5]), int(sys.argv[6])
sock_path = os.path.join(store, "control.sock")


def commit_socket(msg):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock_path)
    s.sendall(f"dataset\tcommit\t{name}\t{msg.encode().hex()}\n".encode())
    chunks = []
    while True:
        b = s.recv(65536)
        if not b:
            break
        chunks.append(b)
    s.close()
    return b"".join(chunks).decode()


def commit_cli(msg):
    r = subprocess.run([binary, "dataset", "commit", name, "-m", msg, "--store", store],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"FAIL: dataset commit exited {r.returncode}: {r.stderr.strip()}")
    return "ok\n" + r.stdout


def parse(answer):
    lines = answer.split("\n")
    if lines[0] != "ok" or len(lines) < 2:
        raise SystemExit(f"FAIL: commit answered {answer!r}")
    f = lines[1].split("\t")
    if "(nothing to commit)" in lines[1]:
        raise SystemExit(f"FAIL: a commit with a message made no version: {lines[1]!r}")
    return int(f[0].lstrip("v")), f[1]


def measure(commit, n, tag):
    _v, root = parse(commit("warm-up"))
    one, idle, wr, lat = [], [], [], []
    for j in range(n):
        t0 = time.perf_counter()
        v1, r1 = parse(commit("idle"))
        t1 = time.perf_counter()
        if r1 != root:
            raise SystemExit("FAIL: a commit with nothing pending changed the root")
        path = os.path.join(dsdir, f"one-{tag}-{j}.txt")
        t2 = time.perf_counter()
        with open(path, "w") as f:
            f.write(f"one more file {tag} {j}\n")
        t3 = time.perf_counter()
        v2, r2 = parse(commit("x"))
        t4 = time.perf_counter()
        if r2 == root or v2 != v1 + 1:
            raise SystemExit(f"FAIL: the commit after writing {path} made no new root (v{v1}->v{v2})")
        root = r2
        idle.append((t1 - t0) * 1000)
        wr.append((t3 - t2) * 1000)
        one.append((t4 - t3) * 1000)
        lat.append((t4 - t2) * 1000)
    diffs = [o - i for o, i in zip(one, idle)]
    return statistics.median(diffs), statistics.median(idle), statistics.median(wr), statistics.median(lat)


d, i, w, lat = measure(commit_socket, pairs, "s")
dc, ic, _, _ = measure(commit_cli, cli_pairs, "c")
print(f"{d:.4f} {i:.4f} {w:.4f} {dc:.4f} {ic:.4f} {lat:.4f}")
