//! Streaming UnixFS file import: fixed-size chunks in, balanced DAG out, without holding the
//! file in memory.
//!
//! Leaves are produced as bytes arrive; existing leaves of an earlier version can be pushed as
//! they are (an append reuses every full chunk of the old file). Interior nodes are built at the
//! end by grouping `max_links` children per level, which is the shape of the balanced layout, so
//! the root CID equals [`ipfs_mount_ipld::builder::build_file`]'s for the same bytes.

use bytes::Bytes;
use cid::Cid;
use ipfs_mount_ipld::builder::ImportProfile;
use ipfs_mount_ipld::dagpb::{self, PbLink, PbNode};
use ipfs_mount_ipld::unixfs::{self, DataType, UnixFsData};
use ipfs_mount_ipld::{cids, codec};

/// A leaf or subtree as its parent links to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leaf {
    pub cid: Cid,
    /// File bytes it holds.
    pub size: u64,
    /// Cumulative DAG size (the parent link's Tsize).
    pub tsize: u64,
}

pub struct FileWriter<'p> {
    profile: &'p ImportProfile,
    pending: Vec<u8>,
    leaves: Vec<Leaf>,
    /// New blocks not yet handed out by [`FileWriter::take_blocks`].
    blocks: Vec<(Cid, Bytes)>,
}

impl<'p> FileWriter<'p> {
    pub fn new(profile: &'p ImportProfile) -> Self {
        FileWriter {
            profile,
            pending: Vec::with_capacity(profile.chunk_size),
            leaves: Vec::new(),
            blocks: Vec::new(),
        }
    }

    /// Reuses a full-chunk leaf of an earlier version. Only valid before any bytes were written.
    pub fn push_leaf(&mut self, leaf: Leaf) {
        debug_assert!(self.pending.is_empty());
        self.leaves.push(leaf);
    }

    pub fn write(&mut self, mut data: &[u8]) {
        let chunk = self.profile.chunk_size.max(1);
        while !data.is_empty() {
            let room = chunk - self.pending.len();
            let n = room.min(data.len());
            self.pending.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.pending.len() == chunk {
                let full = std::mem::replace(&mut self.pending, Vec::with_capacity(chunk));
                self.emit_leaf(&full);
            }
        }
    }

    /// Blocks made so far, to be stored while the import continues (keeps memory flat).
    pub fn take_blocks(&mut self) -> Vec<(Cid, Bytes)> {
        std::mem::take(&mut self.blocks)
    }

    fn emit_leaf(&mut self, chunk: &[u8]) {
        let p = self.profile;
        let leaf = if p.raw_leaves {
            let cid = cids::compute(cid::Version::V1, codec::RAW, p.hash, chunk)
                .expect("profile hash is supported");
            self.blocks.push((cid, Bytes::copy_from_slice(chunk)));
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
                data: Some(unixfs::encode_data(&meta).into()),
            });
            let cid = pb_cid(p, &block);
            let tsize = block.len() as u64;
            self.blocks.push((cid, block.into()));
            Leaf {
                cid,
                size: chunk.len() as u64,
                tsize,
            }
        };
        self.leaves.push(leaf);
    }

    /// Ends the file: the root, and the remaining new blocks via `take_blocks`.
    pub fn finish(&mut self) -> Leaf {
        if !self.pending.is_empty() || self.leaves.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            self.emit_leaf(&rest);
        }
        let mut level = std::mem::take(&mut self.leaves);
        while level.len() > 1 {
            let groups: Vec<Vec<Leaf>> = level
                .chunks(self.profile.max_links.max(2))
                .map(|g| g.to_vec())
                .collect();
            level = groups.iter().map(|g| self.interior(g)).collect();
        }
        level[0]
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
            data: Some(unixfs::encode_data(&meta).into()),
        });
        let cid = pb_cid(self.profile, &block);
        let tsize = block.len() as u64 + children.iter().map(|c| c.tsize).sum::<u64>();
        self.blocks.push((cid, block.into()));
        Leaf { cid, size, tsize }
    }
}

fn pb_cid(p: &ImportProfile, block: &[u8]) -> Cid {
    cids::compute(p.cid_version, codec::DAG_PB, p.hash, block).expect("profile hash is supported")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipfs_mount_ipld::builder::build_file;

    #[test]
    fn streaming_matches_whole_file_builder() {
        let data: Vec<u8> = (0..3_333_333u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let mut odd = ImportProfile::unixfs_v0_2015();
        odd.chunk_size = 100_000;
        odd.max_links = 7;
        for p in [
            ImportProfile::unixfs_v0_2015(),
            ImportProfile::unixfs_v1_2025(),
            odd,
        ] {
            for len in [0usize, 1, 100_000, 262_144, 3_333_333] {
                let mut w = FileWriter::new(&p);
                for piece in data[..len].chunks(77_777) {
                    w.write(piece);
                }
                let root = w.finish();
                let whole = build_file(&data[..len], &p);
                assert_eq!(root.cid, whole.root, "len {len}");
                assert_eq!(root.tsize, whole.tsize);
                assert_eq!(root.size, len as u64);
            }
        }
    }

    #[test]
    fn appending_with_reused_leaves_gives_the_same_cid() {
        let mut p = ImportProfile::unixfs_v1_2025();
        p.chunk_size = 1000;
        p.max_links = 4;
        let data: Vec<u8> = (0..25_500u32).map(|i| i as u8).collect();
        let mut w = FileWriter::new(&p);
        w.write(&data[..20_000]);
        let _ = w.finish();
        // The old version's 20 full leaves, then the appended bytes.
        let mut old = FileWriter::new(&p);
        old.write(&data[..20_000]);
        let leaves: Vec<Leaf> = old.leaves.clone();
        let mut again = FileWriter::new(&p);
        for l in leaves {
            again.push_leaf(l);
        }
        again.write(&data[20_000..]);
        assert_eq!(again.finish().cid, build_file(&data, &p).root);
    }
}
