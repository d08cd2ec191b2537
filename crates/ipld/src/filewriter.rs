//! The streaming file importer, [`FileWriter`] (re-exported as `builder::FileWriter`).

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use cid::{Cid, Version};

use super::{ImportProfile, Leaf};
use crate::dagpb::{self, PbLink, PbNode};
use crate::unixfs::{DataType, UnixFsData};
use crate::{cids, codec};

/// The leaf of one chunk under `profile`, and its block (for raw leaves, the chunk itself,
/// not copied): the same leaf [`FileWriter`] makes of these bytes. Pure, so chunks can be
/// hashed on several threads and pushed in order with [`FileWriter::push_made_leaf`].
pub fn leaf_of(profile: &ImportProfile, chunk: Bytes) -> (Leaf, Bytes) {
    if profile.raw_leaves {
        let cid = cids::compute(Version::V1, codec::RAW, profile.hash, &chunk)
            .expect("profile hash is supported");
        let size = chunk.len() as u64;
        return (
            Leaf {
                cid,
                size,
                tsize: size,
            },
            chunk,
        );
    }
    let mut meta = UnixFsData::new(DataType::File);
    meta.filesize = Some(chunk.len() as u64);
    let size = chunk.len() as u64;
    if !chunk.is_empty() {
        meta.data = Some(chunk);
    }
    let block = dagpb::encode(&PbNode {
        links: Vec::new(),
        data: Some(crate::unixfs::encode_data(&meta).into()),
    });
    let cid = profile.pb_cid(&block);
    let tsize = block.len() as u64;
    (Leaf { cid, size, tsize }, block.into())
}

/// Streaming file import: bytes in as they come, fixed-size chunks, balanced DAG out, without
/// holding the file in memory. Full-chunk leaves of an earlier version can be pushed as they
/// are (an append reuses them), and holes are appended without hashing their bytes
/// ([`write_zeros`](Self::write_zeros)); the root CID is the same as importing all the
/// bytes anew.
///
/// # Runs
///
/// A sparse file is mostly the same leaf over and over: every full chunk of zeros is one
/// block with one CID. The writer therefore keeps its leaves run-length encoded, as
/// `(leaf, count)` pairs in file order ([`runs`](Self::runs)), and never hashes that leaf
/// more than once:
///
/// ```text
///  bytes:   [data][data][ 0 … 0 ][ 0 … 0 ] … (10⁶ chunks of zeros) … [ 0 … 0 ][dat]
///  runs:    (A,1) (B,1) (Z, 1 000 000)                                      (C,1)
/// ```
///
/// [`write_zeros`](Self::write_zeros) appends a hole without touching its bytes: it tops up
/// the partial chunk, adds `n / chunk_size` copies of the zero leaf (hashed once per writer)
/// as a single run and leaves the rest pending. [`write`](Self::write) recognises a full
/// chunk of zeros too (a scan, no hashing), so zeros written as bytes cost about the same.
///
/// [`finish`](Self::finish) builds the balanced tree level by level, over runs. Groups of
/// `max_links` children are taken from the start of a level exactly as from a flat list; a
/// group that lies inside one run is `max_links` copies of one child, so every such group
/// of the run is the same interior node: it is encoded and hashed once, and the run's `k`
/// full groups become the run `(node, k)` of the next level. Only groups straddling a run
/// boundary are built child by child. A run gives at most two runs of the next level (its
/// full groups and the group it ends in), so a 1 TiB hole is a handful of runs and blocks at
/// every level, and the DAG (CIDs, Tsizes, block bytes) is the one an import of every byte
/// gives.
///
/// Every block is handed out once: [`take_blocks`](Self::take_blocks) never returns a CID
/// this writer returned before, whether the repeat is the zero leaf, another chunk that
/// occurs twice or an interior node. Memory is one chunk, the runs, and one CID per
/// distinct block made.
pub struct FileWriter {
    /// Owned (a small copy), so a writer can live inside long-lived state.
    profile: ImportProfile,
    pending: Vec<u8>,
    /// The full leaves so far, in file order: `(leaf, count)`, `count ≥ 1`, neighbours differ.
    runs: Vec<(Leaf, u64)>,
    /// New blocks not yet handed out by [`FileWriter::take_blocks`].
    blocks: Vec<(Cid, Bytes)>,
    /// Every block made by this writer, handed out or not: none is made twice.
    made: HashSet<Cid>,
    /// The leaf of one full chunk of zeros, once computed.
    zero_leaf: Option<Leaf>,
    /// The interior node over `max_links` copies of a child, by child.
    uniform: HashMap<Leaf, Leaf>,
}

impl FileWriter {
    pub fn new(profile: &ImportProfile) -> Self {
        FileWriter {
            profile: profile.clone(),
            pending: Vec::new(),
            runs: Vec::new(),
            blocks: Vec::new(),
            made: HashSet::new(),
            zero_leaf: None,
            uniform: HashMap::new(),
        }
    }

    fn chunk_size(&self) -> usize {
        self.profile.chunk_size.max(1)
    }

    /// Reuses a full-chunk leaf of an earlier version. Only valid before any bytes were written
    /// (or while the written bytes end on a chunk boundary).
    pub fn push_leaf(&mut self, leaf: Leaf) {
        self.push_leaf_run(leaf, 1);
    }

    /// Reuses `count` consecutive copies of a full-chunk leaf of an earlier version (a run of
    /// [`runs`](Self::runs)), in O(1). Same conditions as [`push_leaf`](Self::push_leaf).
    pub fn push_leaf_run(&mut self, leaf: Leaf, count: u64) {
        debug_assert!(self.pending.is_empty());
        push_run(&mut self.runs, leaf, count);
    }

    /// Appends a full-chunk leaf made elsewhere with [`leaf_of`] (say on another thread, so that
    /// chunks are hashed in parallel), with its block. Same conditions as
    /// [`push_leaf`](Self::push_leaf): no pending bytes, and `leaf` is a whole chunk.
    pub fn push_made_leaf(&mut self, leaf: Leaf, block: Bytes) {
        debug_assert!(self.pending.is_empty());
        debug_assert_eq!(leaf.size, self.chunk_size() as u64);
        self.emit(leaf.cid, block);
        push_run(&mut self.runs, leaf, 1);
    }

    /// Appends bytes.
    pub fn write(&mut self, mut data: &[u8]) {
        let chunk = self.chunk_size();
        while !data.is_empty() {
            if self.pending.is_empty() && data.len() >= chunk {
                // whole chunks straight from the input, without copying
                let (full, rest) = data.split_at(chunk);
                self.emit_leaf(full);
                data = rest;
                continue;
            }
            let n = (chunk - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.pending.len() == chunk {
                let full = std::mem::take(&mut self.pending);
                self.emit_leaf(&full);
                self.pending = full;
                self.pending.clear();
            }
        }
    }

    /// Appends `n` zero bytes (a hole) without hashing them: the bytes that complete the
    /// current partial chunk are written as usual, every whole chunk after them is the zero
    /// leaf (hashed and handed out once per writer) added as one run, and the rest stays
    /// pending. O(1) in `n` once the zero leaf is known.
    pub fn write_zeros(&mut self, mut n: u64) {
        let chunk = self.chunk_size();
        if !self.pending.is_empty() {
            let t = ((chunk - self.pending.len()) as u64).min(n) as usize;
            self.pending.resize(self.pending.len() + t, 0);
            n -= t as u64;
            if self.pending.len() == chunk {
                let full = std::mem::take(&mut self.pending);
                self.emit_leaf(&full);
                self.pending = full;
                self.pending.clear();
            }
        }
        if n == 0 {
            return;
        }
        // `pending` is empty here: either it was, or the chunk it held was completed
        let whole = n / chunk as u64;
        if whole > 0 {
            let zero = self.zero_leaf(None);
            push_run(&mut self.runs, zero, whole);
        }
        let rest = (n % chunk as u64) as usize;
        self.pending.resize(rest, 0);
    }

    /// Blocks made so far, to be stored while the import continues (keeps memory flat). A block
    /// is returned once per writer, however often the file uses it.
    pub fn take_blocks(&mut self) -> Vec<(Cid, Bytes)> {
        std::mem::take(&mut self.blocks)
    }

    /// The full leaves so far, in file order, one item per chunk (a run of `k` yields `k`
    /// items: prefer [`runs`](Self::runs) for files that may hold large holes).
    pub fn leaves(&self) -> impl Iterator<Item = Leaf> + '_ {
        self.runs
            .iter()
            .flat_map(|&(leaf, count)| (0..count).map(move |_| leaf))
    }

    /// The full leaves so far, run-length encoded: `(leaf, count)` in file order, `count ≥ 1`,
    /// no two neighbours equal. Feed them to [`push_leaf_run`](Self::push_leaf_run) to reuse.
    pub fn runs(&self) -> &[(Leaf, u64)] {
        &self.runs
    }

    /// The bytes after the last full leaf, not yet made into a block (less than a chunk).
    pub fn pending(&self) -> &[u8] {
        &self.pending
    }

    /// File bytes written so far (leaves and pending bytes).
    pub fn len(&self) -> u64 {
        self.runs.iter().map(|(l, c)| l.size * c).sum::<u64>() + self.pending.len() as u64
    }

    /// Whether no byte was written (nor leaf pushed) yet.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty() && self.pending.is_empty()
    }

    /// Hands out a block unless this writer made it before.
    fn emit(&mut self, cid: Cid, block: impl Into<Bytes>) {
        if self.made.insert(cid) {
            self.blocks.push((cid, block.into()));
        }
    }

    /// The leaf of a full chunk of zeros (`zeros`, when the caller has one at hand).
    fn zero_leaf(&mut self, zeros: Option<&[u8]>) -> Leaf {
        if let Some(leaf) = self.zero_leaf {
            return leaf;
        }
        let leaf = match zeros {
            Some(z) => self.make_leaf(z),
            None => self.make_leaf(&vec![0u8; self.chunk_size()]),
        };
        self.zero_leaf = Some(leaf);
        leaf
    }

    /// Appends the leaf of `chunk`; a full chunk of zeros is the cached zero leaf.
    fn emit_leaf(&mut self, chunk: &[u8]) {
        let leaf = if chunk.len() == self.chunk_size() && is_zero(chunk) {
            self.zero_leaf(Some(chunk))
        } else {
            self.make_leaf(chunk)
        };
        push_run(&mut self.runs, leaf, 1);
    }

    /// Encodes and hashes the leaf of `chunk` and hands its block out.
    fn make_leaf(&mut self, chunk: &[u8]) -> Leaf {
        let (leaf, block) = leaf_of(&self.profile, Bytes::copy_from_slice(chunk));
        self.emit(leaf.cid, block);
        leaf
    }

    /// Ends the file: the root (the remaining new blocks come from `take_blocks`). A file of one
    /// chunk is that leaf itself.
    pub fn finish(&mut self) -> Leaf {
        if !self.pending.is_empty() || self.runs.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            self.emit_leaf(&rest);
        }
        let mut level = std::mem::take(&mut self.runs);
        while !matches!(level[..], [(_, 1)]) {
            level = self.next_level(&level);
        }
        level[0].0
    }

    /// The interior nodes over one level, as runs: children grouped `max_links` at a time from
    /// the start of the level (the last group may be smaller).
    fn next_level(&mut self, level: &[(Leaf, u64)]) -> Vec<(Leaf, u64)> {
        let m = self.profile.max_links.max(2);
        let mut out = Vec::new();
        let mut group: Vec<Leaf> = Vec::with_capacity(m);
        for &(child, mut count) in level {
            if !group.is_empty() {
                // top up the group that straddles the boundary into this run
                let t = count.min((m - group.len()) as u64);
                group.extend((0..t).map(|_| child));
                count -= t;
                if group.len() == m {
                    let node = self.interior(&group);
                    push_run(&mut out, node, 1);
                    group.clear();
                }
            }
            // `group` is empty whenever `count` is still > 0
            let full = count / m as u64;
            if full > 0 {
                let node = self.uniform(child);
                push_run(&mut out, node, full);
            }
            group.extend((0..count % m as u64).map(|_| child));
        }
        if !group.is_empty() {
            let node = self.interior(&group);
            push_run(&mut out, node, 1);
        }
        out
    }

    /// The interior node over `max_links` copies of `child`, built once per writer.
    fn uniform(&mut self, child: Leaf) -> Leaf {
        if let Some(node) = self.uniform.get(&child) {
            return *node;
        }
        let m = self.profile.max_links.max(2);
        let node = self.interior(&vec![child; m]);
        self.uniform.insert(child, node);
        node
    }

    fn interior(&mut self, children: &[Leaf]) -> Leaf {
        let mut meta = UnixFsData::new(DataType::File);
        let size: u64 = children.iter().map(|c| c.size).sum();
        meta.filesize = Some(size);
        meta.blocksizes = children.iter().map(|c| c.size).collect();
        let links = children
            .iter()
            .map(|c| PbLink {
                cid: c.cid,
                name: Some(Vec::new()),
                tsize: Some(c.tsize),
            })
            .collect();
        let block = dagpb::encode(&PbNode {
            links,
            data: Some(crate::unixfs::encode_data(&meta).into()),
        });
        let cid = self.profile.pb_cid(&block);
        let tsize = block.len() as u64 + children.iter().map(|c| c.tsize).sum::<u64>();
        self.emit(cid, block);
        Leaf { cid, size, tsize }
    }
}

/// Appends `count` copies of `leaf` to run-length encoded `runs`.
fn push_run(runs: &mut Vec<(Leaf, u64)>, leaf: Leaf, count: u64) {
    if count == 0 {
        return;
    }
    match runs.last_mut() {
        Some((last, n)) if *last == leaf => *n += count,
        _ => runs.push((leaf, count)),
    }
}

/// Whether every byte is zero: a branch-free OR per 4 KiB (vectorised), stopping at the first
/// block that is not zero.
fn is_zero(bytes: &[u8]) -> bool {
    bytes
        .chunks(4096)
        .all(|c| c.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::build_file;
    use crate::unixfs::{decode_node, Node};
    use std::time::Instant;

    /// The plain import the writer must agree with, written independently of it: every chunk
    /// hashed on its own, every leaf kept in a flat list, levels built as flat lists of
    /// `max_links` groups. With `memo`, a chunk byte-equal to the previous one reuses its leaf
    /// (nothing else is shared), which keeps GiB of zeros affordable.
    struct Reference<'p> {
        p: &'p ImportProfile,
        memo: bool,
        pending: Vec<u8>,
        leaves: Vec<Leaf>,
        last: Option<(Vec<u8>, Leaf)>,
        blocks: HashMap<Cid, Bytes>,
    }

    impl<'p> Reference<'p> {
        fn new(p: &'p ImportProfile, memo: bool) -> Self {
            Reference {
                p,
                memo,
                pending: Vec::new(),
                leaves: Vec::new(),
                last: None,
                blocks: HashMap::new(),
            }
        }

        fn feed(&mut self, mut data: &[u8]) {
            while !data.is_empty() {
                let n = (self.p.chunk_size - self.pending.len()).min(data.len());
                self.pending.extend_from_slice(&data[..n]);
                data = &data[n..];
                if self.pending.len() == self.p.chunk_size {
                    let chunk = std::mem::take(&mut self.pending);
                    self.leaf(chunk);
                }
            }
        }

        fn feed_zeros(&mut self, mut n: u64) {
            let zeros = vec![0u8; self.p.chunk_size];
            while n > 0 {
                let k = n.min(zeros.len() as u64) as usize;
                self.feed(&zeros[..k]);
                n -= k as u64;
            }
        }

        fn block(&mut self, cid: Cid, bytes: Vec<u8>) {
            cids::verify(&cid, &bytes).unwrap();
            self.blocks.insert(cid, bytes.into());
        }

        fn leaf(&mut self, chunk: Vec<u8>) {
            if self.memo {
                if let Some((bytes, leaf)) = &self.last {
                    if *bytes == chunk {
                        self.leaves.push(*leaf);
                        return;
                    }
                }
            }
            let size = chunk.len() as u64;
            let leaf = if self.p.raw_leaves {
                let cid = cids::compute(Version::V1, codec::RAW, self.p.hash, &chunk).unwrap();
                self.block(cid, chunk.clone());
                Leaf {
                    cid,
                    size,
                    tsize: size,
                }
            } else {
                let mut meta = UnixFsData::new(DataType::File);
                meta.filesize = Some(size);
                meta.data = (!chunk.is_empty()).then(|| Bytes::copy_from_slice(&chunk));
                let block = dagpb::encode(&PbNode {
                    links: vec![],
                    data: Some(crate::unixfs::encode_data(&meta).into()),
                });
                let cid =
                    cids::compute(self.p.cid_version, codec::DAG_PB, self.p.hash, &block).unwrap();
                let tsize = block.len() as u64;
                self.block(cid, block);
                Leaf { cid, size, tsize }
            };
            self.leaves.push(leaf);
            if self.memo {
                self.last = Some((chunk, leaf));
            }
        }

        fn finish(mut self) -> (Leaf, HashMap<Cid, Bytes>) {
            if !self.pending.is_empty() || self.leaves.is_empty() {
                let rest = std::mem::take(&mut self.pending);
                self.memo = false;
                self.leaf(rest);
            }
            let mut level = std::mem::take(&mut self.leaves);
            while level.len() > 1 {
                let mut next = Vec::new();
                for group in level.chunks(self.p.max_links) {
                    let mut meta = UnixFsData::new(DataType::File);
                    meta.filesize = Some(group.iter().map(|c| c.size).sum());
                    meta.blocksizes = group.iter().map(|c| c.size).collect();
                    let block = dagpb::encode(&PbNode {
                        links: group
                            .iter()
                            .map(|c| PbLink {
                                cid: c.cid,
                                name: Some(vec![]),
                                tsize: Some(c.tsize),
                            })
                            .collect(),
                        data: Some(crate::unixfs::encode_data(&meta).into()),
                    });
                    let cid = cids::compute(self.p.cid_version, codec::DAG_PB, self.p.hash, &block)
                        .unwrap();
                    let tsize = block.len() as u64 + group.iter().map(|c| c.tsize).sum::<u64>();
                    self.block(cid, block);
                    next.push(Leaf {
                        cid,
                        size: meta.filesize.unwrap(),
                        tsize,
                    });
                }
                level = next;
            }
            (level[0], self.blocks)
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// `write` of these bytes.
        Data(Vec<u8>),
        /// `write` of this many zero bytes, as bytes.
        ZeroBytes(usize),
        /// `write_zeros`.
        Hole(u64),
    }

    fn total(ops: &[Op]) -> u64 {
        ops.iter()
            .map(|op| match op {
                Op::Data(d) => d.len() as u64,
                Op::ZeroBytes(n) => *n as u64,
                Op::Hole(n) => *n,
            })
            .sum()
    }

    fn materialize(ops: &[Op]) -> Vec<u8> {
        let mut out = Vec::new();
        for op in ops {
            match op {
                Op::Data(d) => out.extend_from_slice(d),
                Op::ZeroBytes(n) => out.resize(out.len() + n, 0),
                Op::Hole(n) => out.resize(out.len() + *n as usize, 0),
            }
        }
        out
    }

    fn apply(w: &mut FileWriter, op: &Op) {
        match op {
            Op::Data(d) => w.write(d),
            Op::ZeroBytes(n) => w.write(&vec![0; *n]),
            Op::Hole(n) => w.write_zeros(*n),
        }
    }

    /// Collects a writer's blocks, checking that none comes twice and each verifies.
    #[derive(Default)]
    struct Sink(HashMap<Cid, Bytes>, usize);

    impl Sink {
        fn take(&mut self, w: &mut FileWriter) {
            for (cid, block) in w.take_blocks() {
                cids::verify(&cid, &block).unwrap();
                assert!(
                    self.0.insert(cid, block).is_none(),
                    "{cid} handed out twice"
                );
                self.1 += 1;
            }
        }
    }

    fn via_writer(p: &ImportProfile, ops: &[Op]) -> (Leaf, HashMap<Cid, Bytes>) {
        let mut w = FileWriter::new(p);
        let mut sink = Sink::default();
        for op in ops {
            apply(&mut w, op);
            sink.take(&mut w);
        }
        assert_eq!(w.len(), total(ops));
        let root = w.finish();
        sink.take(&mut w);
        (root, sink.0)
    }

    fn via_reference(p: &ImportProfile, ops: &[Op], memo: bool) -> (Leaf, HashMap<Cid, Bytes>) {
        let mut r = Reference::new(p, memo);
        for op in ops {
            match op {
                Op::Data(d) => r.feed(d),
                Op::ZeroBytes(n) => r.feed_zeros(*n as u64),
                Op::Hole(n) => r.feed_zeros(*n),
            }
        }
        r.finish()
    }

    /// The writer, the reference and (for sizes that fit in memory) `build_file` over the
    /// materialized bytes agree on the root, its sizes and the set of blocks.
    fn check(p: &ImportProfile, ops: &[Op]) {
        let (root, blocks) = via_writer(p, ops);
        let n = total(ops);
        assert_eq!(root.size, n);
        let (want, want_blocks) = via_reference(p, ops, n > 8 << 20);
        assert_eq!(root, want, "{n} bytes, {ops:?}");
        assert_eq!(blocks.len(), want_blocks.len(), "{n} bytes");
        assert!(blocks == want_blocks, "{n} bytes: other blocks");
        if n <= 64 << 20 {
            let built = build_file(&materialize(ops), p);
            assert_eq!(
                (built.root, built.size, built.tsize),
                (root.cid, n, root.tsize)
            );
            let set: HashMap<Cid, Bytes> = built.blocks.iter().cloned().collect();
            assert_eq!(set.len(), built.blocks.len(), "build_file repeats a block");
            assert!(set == blocks);
            assert_eq!(built.blocks.last().unwrap().0, root.cid, "root last");
        }
    }

    fn odd(chunk: usize, links: usize, raw: bool, v1: bool) -> ImportProfile {
        let mut p = ImportProfile::unixfs_v0_2015();
        p.chunk_size = chunk;
        p.max_links = links;
        p.raw_leaves = raw;
        if v1 || raw {
            p.cid_version = Version::V1;
        }
        p
    }

    fn profiles() -> Vec<ImportProfile> {
        vec![
            ImportProfile::unixfs_v0_2015(),
            ImportProfile::unixfs_v1_2025(),
            odd(1000, 4, true, true),
            odd(1000, 7, false, false),
            odd(1000, 7, false, true),
        ]
    }

    /// Sizes around every chunk and level boundary up to `limit`.
    fn sizes(p: &ImportProfile, limit: u64) -> Vec<u64> {
        let (c, m) = (p.chunk_size as u64, p.max_links as u64);
        let mut out = vec![0, 1, 2];
        let mut span = c;
        while span <= limit {
            for base in [span, 2 * span, m * span, (m + 1) * span + c] {
                out.extend([base - 1, base, base + 1]);
            }
            span *= m;
        }
        out.retain(|&n| n <= limit);
        out.sort();
        out.dedup();
        out
    }

    #[test]
    fn holes_match_zero_bytes_for_many_sizes() {
        for p in profiles() {
            let limit = if p.chunk_size == 1000 {
                1 << 21
            } else {
                (1 << 30) + (3 << 20)
            };
            for n in sizes(&p, limit) {
                check(&p, &[Op::Hole(n)]);
            }
        }
    }

    #[test]
    fn mixed_data_and_holes() {
        let data = |len: usize, seed: u32| -> Vec<u8> {
            (0..len as u32)
                .map(|i| ((i ^ seed).wrapping_mul(2654435761) >> 23) as u8 | 1)
                .collect()
        };
        for p in profiles() {
            let (c, m) = (p.chunk_size, p.max_links);
            let patterns: Vec<Vec<Op>> = vec![
                vec![
                    Op::Data(data(10, 1)),
                    Op::Hole(3 * c as u64),
                    Op::Data(data(5, 2)),
                ],
                vec![
                    Op::Data(data(c + 7, 3)),
                    Op::Hole((m * c) as u64 + 11),
                    Op::Data(data(2 * c, 4)),
                    Op::Hole((m * c) as u64 - 3),
                ],
                vec![
                    Op::Hole(c as u64 - 1),
                    Op::ZeroBytes(2 * c + 1),
                    Op::Data(data(c, 5)),
                    Op::Hole(5 * c as u64),
                    Op::Data(data(c, 5)),
                    Op::Hole(5 * c as u64),
                    Op::Hole(0),
                    Op::Data(data(1, 6)),
                ],
                vec![
                    Op::Hole((m * c) as u64),
                    Op::Data(data(c, 7)),
                    Op::Hole((m * c) as u64),
                ],
            ];
            for ops in patterns {
                check(&p, &ops);
            }
            if c == 1000 {
                // several levels, holes starting and ending mid-group and mid-chunk
                let ops = vec![
                    Op::Data(data(3 * c + 3, 8)),
                    Op::Hole((m * m * m * c + 17) as u64),
                    Op::Data(data(c, 9)),
                    Op::Hole((m * m * c * 2 + c / 2) as u64),
                    Op::Data(data(c - 1, 10)),
                ];
                check(&p, &ops);
            }
        }
    }

    /// The same chunk written again is handed out once, and so are equal interior nodes.
    #[test]
    fn repeated_blocks_are_handed_out_once() {
        let p = odd(1000, 4, false, false);
        let chunk: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 1) as u8).collect();
        let mut w = FileWriter::new(&p);
        let mut sink = Sink::default();
        for _ in 0..64 {
            w.write(&chunk);
            sink.take(&mut w);
        }
        w.write_zeros(64 * 1000);
        w.write(&vec![0; 64 * 1000]);
        let root = w.finish();
        sink.take(&mut w);
        // one data leaf, one zero leaf; levels: 32 → 8 → 2 → 1 distinct
        assert_eq!(sink.1, 2 + 2 + 2 + 2 + 1, "blocks");
        let mut ops = vec![Op::Data(chunk.clone()); 64];
        ops.push(Op::Hole(128 * 1000));
        assert_eq!(root, via_reference(&p, &ops, false).0);
    }

    #[test]
    fn reused_runs_append_like_a_fresh_import() {
        let p = odd(1000, 4, true, true);
        let ops = vec![
            Op::Data(vec![7; 2500]),
            Op::Hole(100_000),
            Op::Data(vec![9; 1700]),
        ];
        let bytes = materialize(&ops);
        let mut old = FileWriter::new(&p);
        for op in &ops {
            apply(&mut old, op);
        }
        let runs = old.runs().to_vec();
        assert!(runs.len() <= 5, "{runs:?}");
        assert_eq!(old.leaves().count(), bytes.len() / 1000);
        assert!(old.leaves().eq(runs
            .iter()
            .flat_map(|&(l, n)| std::iter::repeat_n(l, n as usize))));
        let full: u64 = runs.iter().map(|(l, n)| l.size * n).sum();
        let mut new = FileWriter::new(&p);
        for &(leaf, n) in &runs {
            new.push_leaf_run(leaf, n);
        }
        new.write(&bytes[full as usize..]);
        new.write(b"appended");
        new.write_zeros(12_345);
        let mut all = bytes.clone();
        all.extend_from_slice(b"appended");
        all.resize(all.len() + 12_345, 0);
        let root = new.finish();
        let built = build_file(&all, &p);
        assert_eq!(
            (root.cid, root.size, root.tsize),
            (built.root, built.size, built.tsize)
        );
        // push_leaf one at a time is the same
        let mut one = FileWriter::new(&p);
        for leaf in old.leaves() {
            one.push_leaf(leaf);
        }
        assert_eq!(one.runs(), &runs[..]);
    }

    /// Walks a DAG whose blocks are all in `blocks`, once per distinct node: checks every block
    /// decodes as a file node, blocksizes and Tsizes add up, all leaves are at the same depth;
    /// returns (file size, Tsize, depth).
    fn walk(
        cid: &Cid,
        blocks: &HashMap<Cid, Bytes>,
        seen: &mut HashMap<Cid, (u64, u64, u32)>,
    ) -> (u64, u64, u32) {
        if let Some(v) = seen.get(cid) {
            return *v;
        }
        let block = blocks.get(cid).expect("block handed out");
        let v = match decode_node(cid, block).unwrap() {
            Node::File(f) if f.children.is_empty() => {
                (f.inline.len() as u64, block.len() as u64, 0)
            }
            Node::File(f) => {
                let links = dagpb::decode(block).unwrap().links;
                let (mut size, mut tsize, mut depth) = (0, block.len() as u64, None);
                for ((child, bs), link) in f.children.iter().zip(&links) {
                    let (s, t, d) = walk(child, blocks, seen);
                    assert_eq!(s, *bs);
                    assert_eq!(link.tsize, Some(t));
                    assert!(depth.is_none() || depth == Some(d + 1), "unbalanced");
                    depth = Some(d + 1);
                    size += s;
                    tsize += t;
                }
                (size, tsize, depth.unwrap())
            }
            other => panic!("not a file: {other:?}"),
        };
        seen.insert(*cid, v);
        v
    }

    #[test]
    fn a_tebibyte_hole_is_instant() {
        for p in [
            ImportProfile::unixfs_v1_2025(),
            ImportProfile::unixfs_v0_2015(),
        ] {
            let start = Instant::now();
            let mut w = FileWriter::new(&p);
            w.write_zeros(1 << 40);
            // one run, whatever the size
            assert_eq!(w.runs().len(), 1);
            assert_eq!(w.len(), 1 << 40);
            let root = w.finish();
            let blocks = w.take_blocks();
            let took = start.elapsed();
            println!(
                "1 TiB of zeros ({}): {took:?}, {} blocks, root {}",
                if p.raw_leaves {
                    "unixfs-v1-2025"
                } else {
                    "unixfs-v0-2015"
                },
                blocks.len(),
                root.cid
            );
            assert!(took.as_millis() < 1000, "took {took:?}");
            assert!(blocks.len() < 16, "{} blocks", blocks.len());
            assert_eq!(root.size, 1 << 40);
            let map: HashMap<Cid, Bytes> = blocks.into_iter().collect();
            let (size, tsize, depth) = walk(&root.cid, &map, &mut HashMap::new());
            assert_eq!((size, tsize), (1 << 40, root.tsize));
            let leaves = (1u64 << 40) / p.chunk_size as u64;
            let mut want_depth = 0;
            let mut n = leaves;
            while n > 1 {
                n = n.div_ceil(p.max_links as u64);
                want_depth += 1;
            }
            assert_eq!(depth, want_depth);
        }
    }

    /// 4 GiB of zeros, as computed by [`four_gib_of_zeros_slow_path`]. The CIDv0 value is also
    /// what Kubo 0.22 gives for a `truncate -s 4G` file (`AddFile` with `only_hash`, on the
    /// loopback Kubo of shared/peers: 25 s).
    const FOUR_GIB_V0: &str = "QmPCeAaPPMtTcoik9wjDpwPgYw9NStZ1AzpEz7nJQQPi3C";
    const FOUR_GIB_V1: &str = "bafybeidtxqruzlcsoiwzdbhebsfnif67v3r2r73etp6cvchma4xftr7izu";

    #[test]
    fn four_gib_of_zeros_known_cids() {
        for (p, want) in [
            (ImportProfile::unixfs_v0_2015(), FOUR_GIB_V0),
            (ImportProfile::unixfs_v1_2025(), FOUR_GIB_V1),
        ] {
            let mut w = FileWriter::new(&p);
            w.write_zeros(4 << 30);
            assert_eq!(w.finish().cid.to_string(), want);
        }
    }

    /// The same from every zero byte hashed, chunk after chunk (slow: release builds only).
    #[test]
    #[cfg_attr(debug_assertions, ignore = "hashes 8 GiB; run with --release")]
    fn four_gib_of_zeros_slow_path() {
        for (p, want) in [
            (ImportProfile::unixfs_v0_2015(), FOUR_GIB_V0),
            (ImportProfile::unixfs_v1_2025(), FOUR_GIB_V1),
        ] {
            let start = Instant::now();
            let (root, _) = via_reference(&p, &[Op::Hole(4 << 30)], false);
            println!(
                "4 GiB of zeros hashed in {:?}: {}",
                start.elapsed(),
                root.cid
            );
            assert_eq!(root.cid.to_string(), want);
            let mut w = FileWriter::new(&p);
            w.write_zeros(4 << 30);
            assert_eq!(w.finish(), root);
        }
    }

    /// A sparse file Kubo 0.22 imported (`AddFile`, `only_hash`, CIDv0 defaults): data, a hole
    /// one byte longer than a full level-1 group, data, a hole, one byte.
    #[test]
    fn sparse_file_matches_kubo() {
        let data = |n: u32, seed: u32| -> Vec<u8> {
            (0..n)
                .map(|i| ((i ^ seed).wrapping_mul(2654435761) >> 24) as u8)
                .collect()
        };
        let ops = [
            Op::Data(data(100_003, 0)),
            Op::Hole(174 * 262_144 + 5),
            Op::Data(data(1000, 77)),
            Op::Hole(3_000_000),
            Op::Data(vec![0x2a]),
        ];
        let p = ImportProfile::unixfs_v0_2015();
        let (root, _) = via_writer(&p, &ops);
        assert_eq!(root.size, 48_714_065);
        assert_eq!(
            root.cid.to_string(),
            "QmUtPtgkSAcQEZj62sUfxij1DUxumyrueCQ47HvrtVKWvM"
        );
        check(&p, &ops);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                3 => proptest::collection::vec(any::<u8>(), 0..2500).prop_map(Op::Data),
                1 => (0usize..3000).prop_map(Op::ZeroBytes),
                3 => (0u64..12_000).prop_map(Op::Hole),
                1 => (0u64..150_000).prop_map(Op::Hole),
            ]
        }

        fn profile() -> impl Strategy<Value = ImportProfile> {
            prop_oneof![
                Just(odd(1000, 4, true, true)),
                Just(odd(1000, 7, false, false)),
                Just(odd(1000, 7, false, true)),
                Just(odd(3, 2, true, true)),
                Just(odd(1, 3, false, false)),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(96))]
            #[test]
            fn writes_and_holes_equal_the_bytes(
                p in profile(),
                ops in proptest::collection::vec(op(), 0..8),
                split in 0usize..8,
            ) {
                // tiny chunks: keep the byte count small
                let ops: Vec<Op> = if p.chunk_size < 10 {
                    ops.into_iter().map(|op| match op {
                        Op::Data(d) => Op::Data(d[..d.len().min(40)].to_vec()),
                        Op::ZeroBytes(n) => Op::ZeroBytes(n % 50),
                        Op::Hole(n) => Op::Hole(n % 200),
                    }).collect()
                } else {
                    ops
                };
                check(&p, &ops);

                // an append: the first ops' full leaves reused as runs, the rest written
                let split = split.min(ops.len());
                let mut old = FileWriter::new(&p);
                for op in &ops[..split] {
                    apply(&mut old, op);
                }
                let bytes = materialize(&ops);
                let full: u64 = old.runs().iter().map(|(l, n)| l.size * n).sum();
                let mut new = FileWriter::new(&p);
                for &(leaf, n) in old.runs() {
                    new.push_leaf_run(leaf, n);
                }
                new.write(&bytes[full as usize..]);
                let root = new.finish();
                let built = build_file(&bytes, &p);
                prop_assert_eq!((root.cid, root.size, root.tsize),
                    (built.root, built.size, built.tsize));
            }
        }
    }
}
