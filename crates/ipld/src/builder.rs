//! UnixFS import: bytes and directory entries into blocks, with the CIDs Kubo and Helia compute
//! for the same settings (IPIP-499 profiles).
//!
//! Files use a fixed-size chunker and the balanced layout:
//!
//! ```text
//!                 root (File: filesize, blocksizes)
//!          ┌────────────┴─────────────┐
//!      node (≤ max_links)         node (the rest)
//!    ┌───┬──┴──┬───┐              ┌───┐
//!   leaf leaf … leaf            leaf leaf        leaves hold the chunks, in order
//! ```
//!
//! Leaves are grouped `max_links` at a time into interior nodes, level after level, until one
//! node remains; that is the shape go-unixfs's balanced builder produces (it fills the leftmost
//! subtrees completely before starting the next). A file of a single chunk is the leaf itself.

use bytes::Bytes;
use cid::{Cid, Version};

use crate::dagpb::{self, PbLink, PbNode};
use crate::unixfs::{DataType, UnixFsData};
use crate::{cids, codec, mh};

/// The settings that decide a file's CID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportProfile {
    pub cid_version: Version,
    /// Leaves as raw blocks (codec raw) instead of dag-pb UnixFS nodes.
    pub raw_leaves: bool,
    pub chunk_size: usize,
    pub max_links: usize,
    /// Multihash code for block CIDs.
    pub hash: u64,
}

impl ImportProfile {
    /// Kubo 0.22's defaults: CIDv0, dag-pb leaves, 256 KiB chunks, 174 links.
    pub fn unixfs_v0_2015() -> Self {
        ImportProfile {
            cid_version: Version::V0,
            raw_leaves: false,
            chunk_size: 256 * 1024,
            max_links: 174,
            hash: mh::SHA2_256,
        }
    }

    /// IPIP-499's modern profile: CIDv1, raw leaves, 1 MiB chunks, 1024 links.
    pub fn unixfs_v1_2025() -> Self {
        ImportProfile {
            cid_version: Version::V1,
            raw_leaves: true,
            chunk_size: 1024 * 1024,
            max_links: 1024,
            hash: mh::SHA2_256,
        }
    }

    fn pb_cid(&self, block: &[u8]) -> Cid {
        cids::compute(self.cid_version, codec::DAG_PB, self.hash, block)
            .expect("profile hash is supported")
    }
}

/// A built DAG: its root and every block, leaves first.
#[derive(Debug, Clone)]
pub struct Built {
    pub root: Cid,
    /// File bytes (0 for directories).
    pub size: u64,
    /// Cumulative DAG size (the `Tsize` a parent link records).
    pub tsize: u64,
    pub blocks: Vec<(Cid, Bytes)>,
}

struct Child {
    cid: Cid,
    file_bytes: u64,
    tsize: u64,
}

/// Builds a file with the profile's chunker and the balanced layout.
pub fn build_file(data: &[u8], profile: &ImportProfile) -> Built {
    let mut blocks = Vec::new();
    let chunk = profile.chunk_size.max(1);
    let mut level: Vec<Child> = if data.is_empty() {
        vec![leaf(&[], profile, &mut blocks)]
    } else {
        data.chunks(chunk)
            .map(|c| leaf(c, profile, &mut blocks))
            .collect()
    };
    while level.len() > 1 {
        level = level
            .chunks(profile.max_links.max(2))
            .map(|group| interior(group, profile, &mut blocks))
            .collect();
    }
    let top = level.pop().expect("at least one leaf");
    Built {
        root: top.cid,
        size: data.len() as u64,
        tsize: top.tsize,
        blocks,
    }
}

fn leaf(chunk: &[u8], profile: &ImportProfile, blocks: &mut Vec<(Cid, Bytes)>) -> Child {
    if profile.raw_leaves {
        let version = Version::V1;
        let cid = cids::compute(version, codec::RAW, profile.hash, chunk)
            .expect("profile hash is supported");
        blocks.push((cid, Bytes::copy_from_slice(chunk)));
        return Child {
            cid,
            file_bytes: chunk.len() as u64,
            tsize: chunk.len() as u64,
        };
    }
    let mut meta = UnixFsData::new(DataType::File);
    meta.filesize = Some(chunk.len() as u64);
    if !chunk.is_empty() {
        meta.data = Some(Bytes::copy_from_slice(chunk));
    }
    let block = dagpb::encode(&PbNode {
        links: Vec::new(),
        data: Some(crate::unixfs::encode_data(&meta).into()),
    });
    let cid = profile.pb_cid(&block);
    let tsize = block.len() as u64;
    blocks.push((cid, block.into()));
    Child {
        cid,
        file_bytes: chunk.len() as u64,
        tsize,
    }
}

fn interior(children: &[Child], profile: &ImportProfile, blocks: &mut Vec<(Cid, Bytes)>) -> Child {
    let mut meta = UnixFsData::new(DataType::File);
    let file_bytes: u64 = children.iter().map(|c| c.file_bytes).sum();
    meta.filesize = Some(file_bytes);
    meta.blocksizes = children.iter().map(|c| c.file_bytes).collect();
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
    let cid = profile.pb_cid(&block);
    let tsize = block.len() as u64 + children.iter().map(|c| c.tsize).sum::<u64>();
    blocks.push((cid, block.into()));
    Child {
        cid,
        file_bytes,
        tsize,
    }
}

/// A plain (unsharded) directory of `(name, cid, tsize)` entries, sorted by name bytes as
/// go-unixfs and js-unixfs sort them.
pub fn build_directory(entries: &[(Vec<u8>, Cid, u64)], profile: &ImportProfile) -> Built {
    let mut sorted: Vec<&(Vec<u8>, Cid, u64)> = entries.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let links = sorted
        .iter()
        .map(|(name, cid, tsize)| PbLink {
            cid: *cid,
            name: Some(name.clone()),
            tsize: Some(*tsize),
        })
        .collect();
    let meta = UnixFsData::new(DataType::Directory);
    let block = dagpb::encode(&PbNode {
        links,
        data: Some(crate::unixfs::encode_data(&meta).into()),
    });
    let cid = profile.pb_cid(&block);
    let tsize = block.len() as u64 + sorted.iter().map(|e| e.2).sum::<u64>();
    Built {
        root: cid,
        size: 0,
        tsize,
        blocks: vec![(cid, block.into())],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unixfs::{decode_node, Node};

    fn reassemble(built: &Built, cid: &Cid, out: &mut Vec<u8>) {
        let block = &built
            .blocks
            .iter()
            .find(|(c, _)| c == cid)
            .expect("block present")
            .1;
        match decode_node(cid, block).unwrap() {
            Node::File(f) => {
                out.extend_from_slice(&f.inline);
                for (child, size) in &f.children {
                    let before = out.len();
                    reassemble(built, child, out);
                    assert_eq!((out.len() - before) as u64, *size);
                }
            }
            other => panic!("unexpected node {other:?}"),
        }
    }

    #[test]
    fn files_reassemble_for_both_profiles_and_odd_settings() {
        let data: Vec<u8> = (0..1_000_003u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
            .collect();
        let mut odd = ImportProfile::unixfs_v1_2025();
        odd.chunk_size = 1000;
        odd.max_links = 11;
        odd.raw_leaves = false;
        for p in [
            ImportProfile::unixfs_v0_2015(),
            ImportProfile::unixfs_v1_2025(),
            odd,
        ] {
            let built = build_file(&data, &p);
            let mut out = Vec::new();
            reassemble(&built, &built.root, &mut out);
            assert_eq!(out, data);
            for (cid, block) in &built.blocks {
                cids::verify(cid, block).unwrap();
            }
        }
    }

    #[test]
    fn known_cids_match_kubo_and_helia() {
        // `echo -n hello | ipfs add` (Kubo, CIDv0 defaults) and the empty file in both profiles.
        let v0 = ImportProfile::unixfs_v0_2015();
        assert_eq!(
            build_file(b"", &v0).root.to_string(),
            "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
        );
        let v1 = ImportProfile::unixfs_v1_2025();
        assert_eq!(
            build_file(b"", &v1).root.to_string(),
            "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
        );
        // The empty directory in CIDv0.
        assert_eq!(
            build_directory(&[], &v0).root.to_string(),
            "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"
        );
    }
}
