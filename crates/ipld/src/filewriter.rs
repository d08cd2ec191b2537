//! The streaming file importer, [`FileWriter`] (re-exported as `builder::FileWriter`).
//!
//! # Runs
//!
//! A sparse file is mostly the same leaf over and over: every full chunk of zeros is one
//! block with one CID. The writer therefore keeps its leaves run-length encoded, as
//! `(leaf, count)` pairs in file order, and never hashes that leaf more than once:
//!
//! ```text
//!  bytes:   [data][data][ 0 … 0 ][ 0 … 0 ] … (10⁶ chunks of zeros) … [ 0 … 0 ][dat]
//!  runs:    (A,1) (B,1) (Z, 1 000 000)                                      (C,1)
//! ```
//!
//! [`FileWriter::write_zeros`] appends a hole without touching its bytes: it tops up the
//! partial chunk, adds `n / chunk_size` copies of the zero leaf (hashed once per writer) as a
//! single run and leaves the rest pending. [`FileWriter::write`] recognises a full chunk of
//! zeros too (a scan, no hashing), so zeros written as bytes cost the same.
//!
//! [`FileWriter::finish`] builds the balanced tree level by level, over runs. Groups of
//! `max_links` children are taken from the start of a level exactly as for a flat list; a
//! group that lies inside one run is `max_links` copies of one child, so every such group of
//! the run is the same interior node: it is encoded and hashed once, and the run of `k` full
//! groups becomes the run `(node, k)` of the next level. Only groups straddling a run
//! boundary are built child by child. Each level has at most about twice as many runs as
//! the level below, so a 1 TiB hole is a handful of runs and blocks at every level, and the
//! DAG (CIDs, Tsizes, block bytes) is the one an import of every byte gives.
//!
//! Every block the writer makes is handed out once: [`FileWriter::take_blocks`] never returns
//! a CID it returned before (a set of the CIDs made so far), whether the repeat is the zero
//! leaf, another chunk that occurs twice, or an interior node.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use cid::{Cid, Version};

use super::{ImportProfile, Leaf};
use crate::dagpb::{self, PbLink, PbNode};
use crate::unixfs::{DataType, UnixFsData};
use crate::{cids, codec};

/// Streaming file import: bytes in as they come, fixed-size chunks, balanced DAG out, without
/// holding the file in memory. Full-chunk leaves of an earlier version can be pushed as they
/// are (an append reuses them), and holes are appended without hashing their bytes
/// ([`write_zeros`](Self::write_zeros)); the root CID is the same as importing all the
/// bytes anew. Memory is one chunk plus the distinct runs of leaves (see the
/// [module docs](self)) plus one CID per distinct block made.
pub struct FileWriter<'p> {
    profile: &'p ImportProfile,
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

impl<'p> FileWriter<'p> {
    pub fn new(profile: &'p ImportProfile) -> Self {
        FileWriter {
            profile,
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
        let p = self.profile;
        if p.raw_leaves {
            let cid = cids::compute(Version::V1, codec::RAW, p.hash, chunk)
                .expect("profile hash is supported");
            self.emit(cid, Bytes::copy_from_slice(chunk));
            Leaf {
                cid,
                size: chunk.len() as u64,
                tsize: chunk.len() as u64,
            }
        } else {
            let mut meta = UnixFsData::new(DataType::File);
            meta.filesize = Some(chunk.len() as u64);
            if !chunk.is_empty() {
                meta.data = Some(Bytes::copy_from_slice(chunk));
            }
            let block = dagpb::encode(&PbNode {
                links: Vec::new(),
                data: Some(crate::unixfs::encode_data(&meta).into()),
            });
            let cid = p.pb_cid(&block);
            let tsize = block.len() as u64;
            self.emit(cid, block);
            Leaf {
                cid,
                size: chunk.len() as u64,
                tsize,
            }
        }
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
