#!/usr/bin/env python3
"""Independent check of what scripts/bench-datasets.sh wrote: reads the blocks straight from the
store's flatfs directory (not through the mount), verifies every block's hash against its CID
with ../shared/peers/lib/ipfsmini.py (a separate UnixFS decoder), and compares the result with
the source bytes.

usage: bench-verify.py tree STORE ROOT SRCDIR          every entry of SRCDIR, same names, same bytes, nothing else
       bench-verify.py file STORE ROOT NAME SRC [TAIL]  ROOT/NAME == SRC (followed by TAIL, if given)
Prints one line of counts; exits 1 on any mismatch.
env: IPFS_MOUNT_SHARED (default ../shared beside the repository)
"""
import hashlib
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.environ.get("IPFS_MOUNT_SHARED") or os.path.join(os.path.dirname(os.path.dirname(HERE)), "shared")
sys.path.insert(0, os.path.join(SHARED, "peers", "lib"))
import ipfsmini as m  # noqa: E402


class Store:
    def __init__(self, path):
        self.fs = m.FlatfsBlockstore(path)
        self.reads = 0

    def get(self, cid):
        data = self.fs.get(cid)
        if data is None:
            raise SystemExit(f"FAIL: block {cid} missing from the store")
        if not m.verify_block(cid, data):
            raise SystemExit(f"FAIL: block {cid} does not hash to its CID")
        self.reads += 1
        return data


def file_chunks(st, cid):
    """Yields the bytes of a UnixFS file in order, block by block (streaming)."""
    data = st.get(cid)
    if cid.codec == m.RAW:
        yield data
        return
    u = m.unixfs_decode(m.pb_data(data) or b"")
    if u["type"] not in ("file", "raw"):
        raise SystemExit(f"FAIL: {cid} is a {u['type']}, not a file")
    if u["data"]:
        yield u["data"]
    for c, _n, _s in m.pb_links(data):
        yield from file_chunks(st, c)


def entries(st, root):
    """name -> cid of a (possibly HAMT-sharded) UnixFS directory."""
    data = st.get(root)
    u = m.unixfs_decode(m.pb_data(data) or b"")
    if u["type"] == "directory":
        return {n: c for c, n, _s in m.pb_links(data)}
    if u["type"] == "hamt-shard":
        out = {}
        stack = [(data, u)]
        while stack:
            d, uu = stack.pop()
            pad = len("%X" % (uu["fanout"] - 1))
            for c, name, _s in m.pb_links(d):
                if len(name) == pad:
                    sub = st.get(c)
                    stack.append((sub, m.unixfs_decode(m.pb_data(sub) or b"")))
                else:
                    out[name[pad:]] = c
        return out
    raise SystemExit(f"FAIL: root {root} is a {u['type']}, not a directory")


def sha_of_cid(st, cid):
    h, n = hashlib.sha256(), 0
    for b in file_chunks(st, cid):
        h.update(b)
        n += len(b)
    return h.hexdigest(), n


def sha_of_files(*paths):
    h, n = hashlib.sha256(), 0
    for p in paths:
        with open(p, "rb") as f:
            while True:
                b = f.read(1 << 20)
                if not b:
                    break
                h.update(b)
                n += len(b)
    return h.hexdigest(), n


def main():
    if len(sys.argv) < 5 or sys.argv[1] not in ("tree", "file"):
        print(__doc__, file=sys.stderr)
        return 2
    mode, store, root = sys.argv[1], sys.argv[2], m.CID.parse(sys.argv[3])
    st = Store(store)
    if mode == "tree":
        src = sys.argv[4]
        ents = entries(st, root)
        want = sorted(os.listdir(src))
        if sorted(ents) != want:
            extra = set(ents) - set(want)
            missing = set(want) - set(ents)
            print(f"FAIL: names differ: {len(missing)} missing, {len(extra)} extra "
                  f"(e.g. {sorted(missing)[:3]} {sorted(extra)[:3]})")
            return 1
        total = 0
        for name in want:
            with open(os.path.join(src, name), "rb") as f:
                expect = f.read()
            got = b"".join(file_chunks(st, ents[name]))
            if got != expect:
                print(f"FAIL: {name}: {len(got)} bytes differ from the source's {len(expect)}")
                return 1
            total += len(got)
        print(f"OK {len(want)} files, {total} bytes, {st.reads} blocks hash-verified")
        return 0
    name, src = sys.argv[4], sys.argv[5]
    tail = sys.argv[6:7]
    ents = entries(st, root)
    if name not in ents:
        print(f"FAIL: {name} not in {root}")
        return 1
    got = sha_of_cid(st, ents[name])
    want = sha_of_files(src, *tail)
    if got != want:
        print(f"FAIL: {name}: sha256/size {got} != source {want}")
        return 1
    print(f"OK {name}: {got[1]} bytes, sha256 {got[0][:16]}…, {st.reads} blocks hash-verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
