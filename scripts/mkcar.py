#!/usr/bin/env python3
"""Write a CARv1 holding one UnixFS file of SIZE pseudo-random bytes (no dependencies; used by scripts/bench.sh).

usage: mkcar.py OUT.car SIZE [--chunk 1048576] [--links 1024] [--seed N]
Prints the root CID (CIDv1, base32). Raw leaves of --chunk bytes (each distinct), balanced dag-pb parents of up to
--links links. Streams: memory stays small for any SIZE (two passes over the generated data).
"""
import argparse
import base64
import hashlib
import random
import sys


def varint(n):
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field_varint(f, v):
    return varint(f << 3) + varint(v)


def field_bytes(f, b):
    return varint((f << 3) | 2) + varint(len(b)) + b


def cid_v1(codec, data):
    return b"\x01" + varint(codec) + b"\x12\x20" + hashlib.sha256(data).digest()


def cid_str(c):
    return "b" + base64.b32encode(c).decode().lower().rstrip("=")


def parse_size(s):
    s = s.strip()
    for suf, mul in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if s.endswith(suf):
            return int(float(s[: -len(suf)]) * mul)
    return int(s)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("size")
    ap.add_argument("--chunk", type=int, default=1 << 20)
    ap.add_argument("--links", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    size = parse_size(a.size)
    rng = random.Random(a.seed)
    pattern = rng.randbytes(a.chunk)

    def chunk(i):
        n = min(a.chunk, size - i * a.chunk)
        # Distinct leaves (no dedup): an 8-byte counter over a random pattern.
        return (i.to_bytes(8, "little") + pattern[8:n])[:n]

    nchunks = max(1, (size + a.chunk - 1) // a.chunk)
    # Pass 1: leaf CIDs. Level entries: (cid bytes, file bytes under it, tsize).
    level = []
    for i in range(nchunks):
        d = chunk(i)
        level.append((cid_v1(0x55, d), len(d), len(d)))
    nodes = []  # (cid, bytes), written root first
    while len(level) > 1:
        nxt = []
        for j in range(0, len(level), a.links):
            group = level[j : j + a.links]
            links = b"".join(field_bytes(2, field_bytes(1, c) + field_bytes(2, b"") + field_varint(3, t)) for c, _, t in group)
            fsize = sum(s for _, s, _ in group)
            ufs = field_varint(1, 2) + field_varint(3, fsize) + b"".join(field_varint(4, s) for _, s, _ in group)
            block = links + field_bytes(1, ufs)
            c = cid_v1(0x70, block)
            nodes.append((c, block))
            nxt.append((c, fsize, len(block) + sum(t for _, _, t in group)))
        level = nxt
    root = level[0][0]
    with open(a.out, "wb") as f:
        hdr = b"\xa2\x65roots\x81\xd8\x2a\x58" + bytes([len(root) + 1]) + b"\x00" + root + b"\x67version\x01"
        f.write(varint(len(hdr)) + hdr)
        for c, b in reversed(nodes):
            f.write(varint(len(c) + len(b)) + c + b)
        # Pass 2: the leaves.
        for i in range(nchunks):
            d = chunk(i)
            c = cid_v1(0x55, d)
            f.write(varint(len(c) + len(d)) + c + d)
    print(cid_str(root))


if __name__ == "__main__":
    sys.exit(main())
