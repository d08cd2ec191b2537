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
//! [`FileWriter`] streams bytes into this layout. It keeps the leaves run-length encoded and
//! builds every level over runs: a run of identical chunks (a hole, see
//! [`FileWriter::write_zeros`]) is one leaf hashed once, and `max_links` identical children are
//! one interior node hashed once, so a sparse file costs its distinct blocks, not its size.
//!
//! Directories ([`build_directory_auto`]) are plain UnixFS directories while their size
//! estimate stays under the profile's threshold, and HAMT-sharded directories above it:
//!
//! ```text
//!          root shard (HAMTShard: bitfield, fanout 256, hashType murmur3-x64-64)
//!      ┌────────────┼─────────────────────┐
//!  "0Ahello.txt"  "3F" (sub-shard)     "F1photos"      names: 2 hex digits (bucket) + entry name,
//!    entry      ┌────┴─────┐             entry         or just the 2 digits for a sub-shard
//!           "07a.txt"  "C2b.txt"
//! ```
//!
//! Facts this follows (boxo v0.11 `ipld/unixfs/hamt` and `io/directory.go` as used by Kubo
//! 0.22; ipfs-unixfs-importer 17.1 `dir-flat`/`dir-sharded`/`flat-to-shard` as used by
//! Helia; both agree on the block bytes):
//! - A shard node's `Data` is a UnixFS message with Type HAMTShard, `Data` = the occupancy
//!   bitfield as a big-endian integer with leading zero bytes dropped (Go's
//!   `bitfield.Bytes()`, js's `bitField()` with trailing zeros popped then reversed), and
//!   `hashType` 0x22 and `fanout` set on every shard, root or not; no `filesize`, no
//!   `blocksizes`, no mode/mtime (neither peer sets them when importing paths).
//! - Links are in ascending bucket order. An entry's link name is the bucket index as
//!   uppercase hex zero-padded to the width of `fanout - 1`, then the entry name; its Tsize
//!   is the entry's own. A bucket holding two or more names becomes a sub-shard one level
//!   down (recursively, until the names part); its link name is the padded index alone and
//!   its Tsize is the sub-shard's block length plus its links' Tsizes.
//! - Whether to shard: Kubo 0.22 (boxo ≤ v0.2x) estimates Σ(len(name) + len(CID bytes)) over
//!   the links and shards when the estimate is **≥** the threshold (256 KiB by default);
//!   js `links-bytes` is the same sum compared with **>**; js `block-bytes` (what Helia's
//!   `unixfs-v1-2025` profile selects, as IPIP-499 does) estimates the exact encoded size of
//!   the plain directory block, compared with **>**. See [`ShardEstimate`].

use bytes::Bytes;
use cid::{Cid, Version};

use crate::dagpb::{self, PbLink, PbNode};
use crate::unixfs::{DataType, UnixFsData};
use crate::{cids, codec, hamt, mh};

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
    /// Directories whose size estimate passes this many bytes become HAMT-sharded (see
    /// [`ImportProfile::needs_sharding`]); `None` = never shard.
    pub shard_threshold: Option<u64>,
    /// How the size of a would-be plain directory is estimated for that decision.
    pub shard_estimate: ShardEstimate,
    /// Shard also when the estimate *equals* the threshold (`>=`, Kubo 0.22 / boxo v0.11);
    /// false = only when it is larger (`>`, js importer, IPIP-499, current boxo).
    pub shard_at_threshold: bool,
    /// HAMT fanout: a power of two in `8..=1024` (256 in both profiles).
    pub fanout: u32,
}

/// How a directory's size is estimated when deciding whether to shard it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShardEstimate {
    /// Σ over the links of (name bytes + CID bytes): a CIDv0 link counts 34 + name, a
    /// sha2-256 CIDv1 link 36 + name. Kubo/boxo's only estimate before IPIP-499, and js's
    /// `links-bytes` (Helia's default and its `unixfs-v0-2015` profile).
    LinksBytes,
    /// The exact encoded length of the plain directory block (links with names and Tsizes
    /// plus the 4-byte `Data` field): js `block-bytes`, IPIP-499's `unixfs-v1-2025`.
    BlockBytes,
}

impl ImportProfile {
    /// Kubo 0.22's defaults: CIDv0, dag-pb leaves, 256 KiB chunks, 174 links; directories
    /// shard at a links-bytes estimate ≥ 256 KiB, fanout 256. (Helia's `unixfs-v0-2015`
    /// profile differs only in sharding at > 256 KiB: set `shard_at_threshold = false`.)
    pub fn unixfs_v0_2015() -> Self {
        ImportProfile {
            cid_version: Version::V0,
            raw_leaves: false,
            chunk_size: 256 * 1024,
            max_links: 174,
            hash: mh::SHA2_256,
            shard_threshold: Some(256 * 1024),
            shard_estimate: ShardEstimate::LinksBytes,
            shard_at_threshold: true,
            fanout: 256,
        }
    }

    /// IPIP-499's modern profile: CIDv1, raw leaves, 1 MiB chunks, 1024 links; directories
    /// shard when the plain directory block would exceed 256 KiB (block-bytes), fanout 256.
    pub fn unixfs_v1_2025() -> Self {
        ImportProfile {
            cid_version: Version::V1,
            raw_leaves: true,
            chunk_size: 1024 * 1024,
            max_links: 1024,
            hash: mh::SHA2_256,
            shard_threshold: Some(256 * 1024),
            shard_estimate: ShardEstimate::BlockBytes,
            shard_at_threshold: false,
            fanout: 256,
        }
    }

    /// The size estimate of a plain directory holding `entries` (`(name, cid, tsize)`), by
    /// this profile's [`ShardEstimate`].
    pub fn directory_estimate(&self, entries: &[(Vec<u8>, Cid, u64)]) -> u64 {
        match self.shard_estimate {
            ShardEstimate::LinksBytes => entries
                .iter()
                .map(|(name, cid, _)| (name.len() + cid.encoded_len()) as u64)
                .sum(),
            ShardEstimate::BlockBytes => {
                let node = plain_directory_node(entries.iter());
                dagpb::encoded_len(&node) as u64
            }
        }
    }

    /// Whether a directory of `entries` is built as a HAMT under this profile: its
    /// [estimate](Self::directory_estimate) is above the threshold (or equal to it, when
    /// `shard_at_threshold`). An empty directory is never sharded.
    pub fn needs_sharding(&self, entries: &[(Vec<u8>, Cid, u64)]) -> bool {
        let Some(threshold) = self.shard_threshold else {
            return false;
        };
        if entries.is_empty() {
            // both peers decide when an entry is added: an empty directory stays plain
            return false;
        }
        let estimate = self.directory_estimate(entries);
        if self.shard_at_threshold {
            estimate >= threshold
        } else {
            estimate > threshold
        }
    }

    pub(crate) fn pb_cid(&self, block: &[u8]) -> Cid {
        cids::compute(self.cid_version, codec::DAG_PB, self.hash, block)
            .expect("profile hash is supported")
    }
}

/// Why a directory entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirError {
    /// Empty, `.`, `..`, or containing `/` or NUL.
    #[error("invalid directory entry name {:?}", String::from_utf8_lossy(.0))]
    BadName(Vec<u8>),
    /// `name`'s murmur3 hash equals `other`'s (in every bit a HAMT can use), so a sharded
    /// directory cannot hold both.
    #[error(
        "directory entry {:?} has the HAMT hash of {:?}",
        String::from_utf8_lossy(.name),
        String::from_utf8_lossy(.other)
    )]
    HashCollision { name: Vec<u8>, other: Vec<u8> },
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

/// A leaf or subtree as its parent links to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Leaf {
    pub cid: Cid,
    /// File bytes it holds.
    pub size: u64,
    /// Cumulative DAG size (the parent link's Tsize).
    pub tsize: u64,
}

/// Builds a file with the profile's chunker and the balanced layout. `blocks` holds every
/// block of the DAG once (a block used several times, like a chunk of zeros, appears once),
/// in the order they were made: leaves first, the root last.
pub fn build_file(data: &[u8], profile: &ImportProfile) -> Built {
    let mut w = FileWriter::new(profile);
    w.write(data);
    let root = w.finish();
    Built {
        root: root.cid,
        size: root.size,
        tsize: root.tsize,
        blocks: w.take_blocks(),
    }
}

// The streaming writer lives in its own file (src/filewriter.rs), as a child of this module.
#[path = "filewriter.rs"]
mod filewriter;
pub use filewriter::{leaf_of, FileWriter};

/// A plain (unsharded) directory of `(name, cid, tsize)` entries, sorted by name bytes as
/// go-unixfs and js-unixfs sort them.
pub fn build_directory(entries: &[(Vec<u8>, Cid, u64)], profile: &ImportProfile) -> Built {
    let mut sorted: Vec<&(Vec<u8>, Cid, u64)> = entries.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let block = dagpb::encode(&plain_directory_node(sorted.iter().copied()));
    let cid = profile.pb_cid(&block);
    let tsize = block.len() as u64 + sorted.iter().map(|e| e.2).sum::<u64>();
    Built {
        root: cid,
        size: 0,
        tsize,
        blocks: vec![(cid, block.into())],
    }
}

/// A directory entry: name bytes, CID, Tsize.
type Entry = (Vec<u8>, Cid, u64);

/// The dag-pb node of a plain directory with these links, in the given order.
fn plain_directory_node<'a>(entries: impl Iterator<Item = &'a (Vec<u8>, Cid, u64)>) -> PbNode {
    let links = entries
        .map(|(name, cid, tsize)| PbLink {
            cid: *cid,
            name: Some(name.clone()),
            tsize: Some(*tsize),
        })
        .collect();
    let meta = UnixFsData::new(DataType::Directory);
    PbNode {
        links,
        data: Some(crate::unixfs::encode_data(&meta).into()),
    }
}

/// Entries by name, duplicates resolved as Kubo and Helia resolve a second `put` of the same
/// name: the later entry replaces the earlier one.
fn dedup_entries(entries: &[(Vec<u8>, Cid, u64)]) -> Vec<(Vec<u8>, Cid, u64)> {
    let mut map = std::collections::BTreeMap::new();
    for (name, cid, tsize) in entries {
        map.insert(name.clone(), (*cid, *tsize));
    }
    map.into_iter()
        .map(|(name, (cid, tsize))| (name, cid, tsize))
        .collect()
}

/// A directory of `(name, cid, tsize)` entries as Kubo 0.22 and Helia build it for this
/// profile: a plain directory ([`build_directory`]) unless
/// [`ImportProfile::needs_sharding`] says so, else a HAMT ([`build_hamt`]). A name given
/// twice keeps its last entry.
///
/// `blocks` holds every block of the directory itself (one, or every shard node), never the
/// entries' blocks; the **root is last**, each sub-shard comes before its parent.
///
/// The decision counts every entry, as Kubo does. Helia's importer decides each time a path
/// is added and counts only entries whose CID is known then: files, and subdirectories while
/// they are still empty. Its glob source lists a directory's own entries before descending,
/// so the peak estimate includes every subdirectory too (checked against Helia 7 in
/// `tests/import_parity.rs`) and the choice is the same, with one caveat for block-bytes:
/// Helia sizes a subdirectory's link with the Tsize of an empty directory, a byte or two
/// smaller than the final one, so within a few bytes per subdirectory of the threshold Helia
/// may stay plain where this shards. [`build_directory_auto_counting`] lets a caller choose
/// the counted entries.
///
/// # Panics
/// If two names cannot be told apart by the HAMT (see [`try_build_directory_auto`], which
/// reports that as an error instead: use it for names from untrusted content).
pub fn build_directory_auto(entries: &[(Vec<u8>, Cid, u64)], profile: &ImportProfile) -> Built {
    try_build_directory_auto(entries, profile).unwrap_or_else(|e| panic!("{e}"))
}

/// [`build_directory_auto`] without the panic: a sharded directory in which two names share
/// every hash bit the fanout can use (all 64 bits of their murmur3 hash at fanout 16 or
/// 256) cannot be built, by us or by Kubo ("sharded directory too deep"), and is reported as
/// [`DirError::HashCollision`] with two of those
/// names.
pub fn try_build_directory_auto(
    entries: &[(Vec<u8>, Cid, u64)],
    profile: &ImportProfile,
) -> Result<Built, DirError> {
    let entries = dedup_entries(entries);
    if profile.needs_sharding(&entries) {
        build_hamt_sorted(&entries, profile, hamt::murmur_hash)
    } else {
        Ok(build_directory(&entries, profile))
    }
}

/// Like [`build_directory_auto`], but only the entries for which `counted` is true enter
/// the sharding estimate (all entries are in the directory either way). Panics as
/// [`build_directory_auto`] does; [`try_build_directory_auto_counting`] does not.
pub fn build_directory_auto_counting(
    entries: &[(Vec<u8>, Cid, u64)],
    profile: &ImportProfile,
    counted: impl Fn(&(Vec<u8>, Cid, u64)) -> bool,
) -> Built {
    try_build_directory_auto_counting(entries, profile, counted).unwrap_or_else(|e| panic!("{e}"))
}

/// [`build_directory_auto_counting`] with names the HAMT cannot separate reported as
/// [`DirError::HashCollision`] instead of a panic.
pub fn try_build_directory_auto_counting(
    entries: &[(Vec<u8>, Cid, u64)],
    profile: &ImportProfile,
    counted: impl Fn(&(Vec<u8>, Cid, u64)) -> bool,
) -> Result<Built, DirError> {
    let entries = dedup_entries(entries);
    let in_estimate: Vec<(Vec<u8>, Cid, u64)> =
        entries.iter().filter(|e| counted(e)).cloned().collect();
    if profile.needs_sharding(&in_estimate) {
        build_hamt_sorted(&entries, profile, hamt::murmur_hash)
    } else {
        Ok(build_directory(&entries, profile))
    }
}

/// A HAMT-sharded directory of these entries, whatever their number (an empty list gives
/// a root shard with no links). Blocks: sub-shards before their parents, root last.
/// Names must be non-empty (an empty name would read back as a sub-shard link).
///
/// # Panics
/// If `profile.fanout` is not a power of two in `8..=1024`, or if two different names share
/// all 64 bits of their murmur3 hash (the HAMT cannot separate them; neither can Kubo):
/// [`try_build_hamt`] reports the latter as an error.
pub fn build_hamt(entries: &[(Vec<u8>, Cid, u64)], profile: &ImportProfile) -> Built {
    try_build_hamt(entries, profile).unwrap_or_else(|e| panic!("{e}"))
}

/// [`build_hamt`], with names the HAMT cannot separate reported as
/// [`DirError::HashCollision`] instead of a panic.
///
/// # Panics
/// If `profile.fanout` is not a power of two in `8..=1024`.
pub fn try_build_hamt(
    entries: &[(Vec<u8>, Cid, u64)],
    profile: &ImportProfile,
) -> Result<Built, DirError> {
    build_hamt_sorted(&dedup_entries(entries), profile, hamt::murmur_hash)
}

/// [`try_build_hamt`] with another name hash (tests force collisions with it).
#[cfg(test)]
pub(crate) fn try_build_hamt_with_hash(
    entries: &[(Vec<u8>, Cid, u64)],
    profile: &ImportProfile,
    hash: hamt::NameHash,
) -> Result<Built, DirError> {
    build_hamt_sorted(&dedup_entries(entries), profile, hash)
}

fn build_hamt_sorted(
    entries: &[(Vec<u8>, Cid, u64)],
    profile: &ImportProfile,
    hash: hamt::NameHash,
) -> Result<Built, DirError> {
    let fanout = profile.fanout;
    assert!(
        fanout.is_power_of_two() && (hamt::MIN_FANOUT..=hamt::MAX_FANOUT).contains(&fanout),
        "HAMT fanout {fanout} must be a power of two in {}..={}",
        hamt::MIN_FANOUT,
        hamt::MAX_FANOUT
    );
    let items: Vec<&(Vec<u8>, Cid, u64)> = entries.iter().collect();
    let mut blocks = Vec::new();
    let (root, tsize) = shard_node(&items, 0, profile, hash, &mut blocks)?;
    Ok(Built {
        root,
        size: 0,
        tsize,
        blocks,
    })
}

/// Builds the shard at `depth` holding `items`; returns its CID and Tsize.
///
/// A shard below the root holds two or more names that share every hash bit above
/// `depth`; when the hash has no bits left for `depth` (64 bits = 8 levels at fanout 256),
/// those names cannot be separated: an error, as boxo's "sharded directory too deep".
fn shard_node(
    items: &[&(Vec<u8>, Cid, u64)],
    depth: u32,
    profile: &ImportProfile,
    hash: hamt::NameHash,
    blocks: &mut Vec<(Cid, Bytes)>,
) -> Result<(Cid, u64), DirError> {
    let fanout = profile.fanout;
    let bits = hamt::bits_per_level(fanout);
    let mut buckets: Vec<(u32, &Entry)> = Vec::with_capacity(items.len());
    for e in items {
        let Some(index) = hamt::bucket_at(hash(&e.0), depth, bits) else {
            // depth > 0, so `items` holds 2+ names sharing all the hash bits there are
            return Err(DirError::HashCollision {
                name: e.0.clone(),
                other: items
                    .iter()
                    .find(|o| o.0 != e.0)
                    .map_or_else(Vec::new, |o| o.0.clone()),
            });
        };
        buckets.push((index, *e));
    }
    buckets.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1 .0.cmp(&b.1 .0)));

    let width = hamt::prefix_width(fanout);
    let mut bitfield = vec![0u8; (fanout / 8) as usize];
    let mut links = Vec::new();
    let mut children_tsize = 0u64;
    for group in buckets.chunk_by(|a, b| a.0 == b.0) {
        let index = group[0].0;
        let last = bitfield.len() - 1;
        bitfield[last - (index / 8) as usize] |= 1 << (index % 8);
        let mut name = format!("{index:0width$X}").into_bytes();
        if let [(_, (entry_name, cid, tsize))] = group {
            name.extend_from_slice(entry_name);
            links.push(PbLink {
                cid: *cid,
                name: Some(name),
                tsize: Some(*tsize),
            });
            children_tsize = children_tsize.wrapping_add(*tsize);
        } else {
            let sub: Vec<&(Vec<u8>, Cid, u64)> = group.iter().map(|(_, e)| *e).collect();
            let (cid, tsize) = shard_node(&sub, depth + 1, profile, hash, blocks)?;
            links.push(PbLink {
                cid,
                name: Some(name),
                tsize: Some(tsize),
            });
            children_tsize = children_tsize.wrapping_add(tsize);
        }
    }
    // big-endian integer without leading zero bytes (an empty shard has no Data bytes)
    let first = bitfield
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(bitfield.len());
    let mut meta = UnixFsData::new(DataType::HamtShard);
    if first < bitfield.len() {
        meta.data = Some(Bytes::copy_from_slice(&bitfield[first..]));
    }
    meta.hash_type = Some(mh::MURMUR3_X64_64);
    meta.fanout = Some(u64::from(fanout));
    let block = dagpb::encode(&PbNode {
        links,
        data: Some(crate::unixfs::encode_data(&meta).into()),
    });
    let cid = profile.pb_cid(&block);
    let tsize = (block.len() as u64).wrapping_add(children_tsize);
    blocks.push((cid, block.into()));
    Ok((cid, tsize))
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

    fn entry(name: &str, seed: u64) -> (Vec<u8>, Cid, u64) {
        let f = build_file(&seed.to_le_bytes(), &ImportProfile::unixfs_v0_2015());
        (name.as_bytes().to_vec(), f.root, f.tsize)
    }

    /// Looks every name up from the root and walks the whole HAMT; returns the listing.
    fn check_hamt(built: &Built, names: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let get = |cid: &Cid| -> crate::hamt::HamtNode {
            let block = &built
                .blocks
                .iter()
                .find(|(c, _)| c == cid)
                .expect("shard block")
                .1;
            cids::verify(cid, block).unwrap();
            match decode_node(cid, block).unwrap() {
                Node::HamtShard(h) => h,
                other => panic!("not a shard: {other:?}"),
            }
        };
        assert_eq!(built.blocks.last().unwrap().0, built.root, "root is last");
        for name in names {
            let mut cid = built.root;
            let mut depth = 0;
            loop {
                match hamt::lookup_step(&get(&cid), name, depth).unwrap() {
                    hamt::Step::Found { .. } => break,
                    hamt::Step::Descend { cid: c } => {
                        cid = c;
                        depth += 1;
                    }
                    hamt::Step::NotFound => {
                        panic!("{:?} not found", String::from_utf8_lossy(name))
                    }
                }
            }
        }
        let mut listing = Vec::new();
        let mut stack = vec![built.root];
        let mut visited = 0;
        while let Some(cid) = stack.pop() {
            visited += 1;
            let node = get(&cid);
            // every shard carries fanout and hash type; the bitfield has no leading zero byte
            assert_eq!(node.bitfield.first().map(|&b| b != 0), Some(true));
            let block = &built.blocks.iter().find(|(c, _)| *c == cid).unwrap().1;
            let d =
                crate::unixfs::decode_data(dagpb::decode(block).unwrap().data.as_deref().unwrap())
                    .unwrap();
            assert_eq!(d.hash_type, Some(0x22));
            assert_eq!(d.fanout, Some(u64::from(node.fanout)));
            assert_eq!(d.filesize, None);
            listing.extend(node.entries().map(|(n, _, _)| n.to_vec()));
            stack.extend(node.shards().copied());
        }
        assert_eq!(
            visited,
            built.blocks.len(),
            "every block is a reachable shard"
        );
        listing.sort();
        listing
    }

    #[test]
    fn hamt_lookups_and_listing() {
        let mut p = ImportProfile::unixfs_v1_2025();
        p.shard_threshold = Some(0);
        let entries: Vec<_> = (0..3000)
            .map(|i| entry(&format!("file-{i:05}-ünï.txt"), i))
            .collect();
        let built = build_directory_auto(&entries, &p);
        assert!(
            built.blocks.len() > 1,
            "3000 names at fanout 256 need sub-shards"
        );
        let mut names: Vec<Vec<u8>> = entries.iter().map(|e| e.0.clone()).collect();
        assert_eq!(check_hamt(&built, &names), {
            names.sort();
            names.clone()
        });
        // Tsize = blocks + entries
        let blocks: u64 = built.blocks.iter().map(|(_, b)| b.len() as u64).sum();
        let entries_tsize: u64 = entries.iter().map(|e| e.2).sum();
        assert_eq!(built.tsize, blocks + entries_tsize);
        // a small fanout gives deeper trees and stays readable
        p.fanout = 8;
        let built = build_directory_auto(&entries[..200], &p);
        check_hamt(&built, &names[..0]);
        let mut some: Vec<_> = entries[..200].iter().map(|e| e.0.clone()).collect();
        some.sort();
        assert_eq!(check_hamt(&built, &some), some);
        // names not present are not found
        let root = match decode_node(&built.root, &built.blocks.last().unwrap().1).unwrap() {
            Node::HamtShard(h) => h,
            _ => unreachable!(),
        };
        let step = hamt::lookup_step(&root, b"absent", 0).unwrap();
        assert_ne!(
            std::mem::discriminant(&step),
            std::mem::discriminant(&hamt::Step::Found {
                cid: built.root,
                tsize: None
            })
        );
    }

    #[test]
    fn link_layout() {
        let mut p = ImportProfile::unixfs_v0_2015();
        p.shard_threshold = Some(1);
        let entries = vec![entry("a", 1), entry("b", 2), entry("c", 3)];
        let built = build_directory_auto(&entries, &p);
        let node = dagpb::decode(&built.blocks.last().unwrap().1).unwrap();
        for (l, e) in node.links.iter().zip({
            let mut e = entries.clone();
            e.sort_by_key(|e| hamt::bucket_index(&e.0, 0, 256).unwrap());
            e
        }) {
            let idx = hamt::bucket_index(&e.0, 0, 256).unwrap();
            let mut want = format!("{idx:02X}").into_bytes();
            want.extend_from_slice(&e.0);
            assert_eq!(l.name.as_deref(), Some(&want[..]));
            assert_eq!(l.tsize, Some(e.2));
        }
        // Data: Type 5, Data = bitfield, hashType 0x22, fanout 256 (field order 1, 2, 5, 6)
        let data = node.data.unwrap();
        assert_eq!(&data[..2], &[0x08, 0x05]);
        assert_eq!(&data[data.len() - 5..], &[0x28, 0x22, 0x30, 0x80, 0x02]);
    }

    #[test]
    fn threshold_boundary() {
        // v0: each link counts name + 34
        let entries: Vec<_> = (0..10).map(|i| entry(&format!("n{i}"), i)).collect();
        let v0 = ImportProfile::unixfs_v0_2015();
        let est = v0.directory_estimate(&entries);
        assert_eq!(est, 10 * (2 + 34));
        let mut kubo = v0.clone();
        kubo.shard_threshold = Some(est);
        assert!(kubo.needs_sharding(&entries), "Kubo 0.22 shards at >=");
        let mut js = kubo.clone();
        js.shard_at_threshold = false;
        assert!(!js.needs_sharding(&entries), "js shards at >");
        js.shard_threshold = Some(est - 1);
        assert!(js.needs_sharding(&entries));
        kubo.shard_threshold = Some(est + 1);
        assert!(!kubo.needs_sharding(&entries));
        kubo.shard_threshold = None;
        assert!(!kubo.needs_sharding(&entries));
        // the plain/HAMT choice follows the decision
        kubo.shard_threshold = Some(est);
        let hamt_dir = build_directory_auto(&entries, &kubo);
        assert!(matches!(
            decode_node(&hamt_dir.root, &hamt_dir.blocks.last().unwrap().1).unwrap(),
            Node::HamtShard(_)
        ));
        kubo.shard_threshold = Some(est + 1);
        let plain = build_directory_auto(&entries, &kubo);
        assert_eq!(plain.root, build_directory(&entries, &kubo).root);
        // an empty directory never shards
        kubo.shard_threshold = Some(0);
        assert_eq!(
            build_directory_auto(&[], &kubo).root.to_string(),
            "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"
        );

        // block-bytes: the exact encoded size of the plain directory block
        let v1 = ImportProfile::unixfs_v1_2025();
        let v1_entries: Vec<_> = (0..10u64)
            .map(|i| {
                let f = build_file(&i.to_le_bytes(), &v1);
                (format!("n{i}").into_bytes(), f.root, f.tsize)
            })
            .collect();
        let plain = build_directory(&v1_entries, &v1);
        let est = v1.directory_estimate(&v1_entries);
        assert_eq!(est, plain.blocks[0].1.len() as u64);
        let mut p = v1.clone();
        p.shard_threshold = Some(est);
        assert!(!p.needs_sharding(&v1_entries));
        p.shard_threshold = Some(est - 1);
        assert!(p.needs_sharding(&v1_entries));
        // links-bytes with CIDv1: 36 bytes per CID
        p.shard_estimate = ShardEstimate::LinksBytes;
        assert_eq!(p.directory_estimate(&v1_entries), 10 * (2 + 36));
    }

    #[test]
    fn duplicates_keep_the_last_entry() {
        let mut p = ImportProfile::unixfs_v1_2025();
        p.shard_threshold = Some(0);
        let a = entry("same", 1);
        let b = entry("same", 2);
        let built = build_directory_auto(&[a, b.clone()], &p);
        assert_eq!(
            check_hamt(&built, std::slice::from_ref(&b.0)),
            vec![b.0.clone()]
        );
        let node = dagpb::decode(&built.blocks[0].1).unwrap();
        assert_eq!(node.links.len(), 1);
        assert_eq!(node.links[0].cid, b.1);
    }

    #[test]
    fn counting_only_some_entries() {
        let entries: Vec<_> = (0..10).map(|i| entry(&format!("n{i}"), i)).collect();
        let mut p = ImportProfile::unixfs_v0_2015();
        p.shard_threshold = Some(5 * 36);
        let all = build_directory_auto(&entries, &p);
        let few = build_directory_auto_counting(&entries, &p, |e| e.0 < b"n3".to_vec());
        assert_eq!(all.root, build_hamt(&entries, &p).root);
        assert_eq!(few.root, build_directory(&entries, &p).root);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]
            #[test]
            fn any_names_are_all_found(
                names in proptest::collection::btree_set(
                    proptest::collection::vec(any::<u8>(), 1..12), 0..300),
                fanout_bits in 3u32..=10,
            ) {
                let mut p = ImportProfile::unixfs_v0_2015();
                p.shard_threshold = Some(0);
                p.fanout = 1 << fanout_bits;
                let file = build_file(b"x", &p);
                let entries: Vec<_> =
                    names.iter().map(|n| (n.clone(), file.root, file.tsize)).collect();
                let built = build_hamt(&entries, &p);
                let names: Vec<Vec<u8>> = names.into_iter().collect();
                if names.is_empty() {
                    prop_assert_eq!(built.blocks.len(), 1);
                } else {
                    prop_assert_eq!(check_hamt(&built, &names), names);
                }
            }
        }
    }
}
