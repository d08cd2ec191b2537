//! Modes and mtimes of a version's entries: a small dag-cbor tree beside the UnixFS DAG, linked
//! from the commit record (`"attrs"`), so that file and directory CIDs stay exactly those of the
//! import profile (Kubo's `ipfs add` of the same bytes) while every entry keeps its mode and its
//! mtime (nanoseconds, times before 1970 included) across remounts.
//!
//! One node per directory, mirroring the directory tree:
//! ```text
//! dir    = { "m": meta, "e": [[name: bytes, meta | link(dir)], …] }          (≤ 256 entries)
//!        | { "m": meta, "b": [link(bucket) | null; 256] }                    (more)
//! bucket = { "e": [[name, meta | link(dir)], …] }      (the names whose FNV-1a hash starts with its index)
//! meta   = [mode, seconds, nanoseconds]
//! ```
//! A commit re-encodes only the nodes on changed paths, and in a big directory only the changed
//! names' buckets: a change in a directory of 20,000 entries costs one bucket of about 80
//! entries and a node of 256 links, never a map of every path.

use std::collections::BTreeMap;

use anyhow::{anyhow, Result};
use bytes::Bytes;
use cid::Cid;
use ipfs_mount_ipld::{cids, codec, mh};
use ipld_core::ipld::Ipld;

use super::commit::Meta;
use crate::blocks::BlockService;

/// Directories with more entries than this are split into [`BUCKETS`] buckets.
pub const SPLIT_ABOVE: usize = 256;
pub const BUCKETS: usize = 256;

/// A name's bucket: the top byte of its 64-bit FNV-1a hash. Only writers compute it (readers
/// read every bucket); it must stay fixed, since a loaded split directory keeps its buckets.
/// FNV because every commit hashes every name of a changed split directory: it costs a few
/// nanoseconds per name and allocates nothing.
pub fn bucket_of(name: &[u8]) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h >> 56) as usize
}

/// What a directory's node says of one entry.
pub enum Value {
    Leaf(Meta),
    Dir(Cid),
}

fn meta_ipld(m: &Meta) -> Ipld {
    Ipld::List(vec![
        Ipld::Integer(m.mode as i128),
        Ipld::Integer(m.mtime as i128),
        Ipld::Integer(m.nsec as i128),
    ])
}

fn ipld_meta(v: &Ipld) -> Option<Meta> {
    match v {
        Ipld::List(l) => match &l[..] {
            [Ipld::Integer(mode), Ipld::Integer(secs), Ipld::Integer(nsec)] => Some(Meta {
                mode: u32::try_from(*mode).ok()?,
                mtime: i64::try_from(*secs).ok()?,
                nsec: u32::try_from(*nsec).ok().filter(|n| *n < 1_000_000_000)?,
            }),
            _ => None,
        },
        _ => None,
    }
}

fn entries_ipld<'a>(entries: impl Iterator<Item = (&'a [u8], Value)>) -> Ipld {
    Ipld::List(
        entries
            .map(|(name, v)| {
                let v = match v {
                    Value::Leaf(m) => meta_ipld(&m),
                    Value::Dir(c) => Ipld::Link(c),
                };
                Ipld::List(vec![Ipld::Bytes(name.to_vec()), v])
            })
            .collect(),
    )
}

fn encode(node: Ipld) -> (Cid, Bytes) {
    let bytes = serde_ipld_dagcbor::to_vec(&node).expect("plain IPLD encodes");
    let cid = cids::compute(cid::Version::V1, codec::DAG_CBOR, mh::SHA2_256, &bytes)
        .expect("sha2-256 is supported");
    (cid, bytes.into())
}

/// A directory's node with all its entries in it.
pub fn encode_plain<'a>(
    meta: &Meta,
    entries: impl Iterator<Item = (&'a [u8], Value)>,
) -> (Cid, Bytes) {
    let mut m = BTreeMap::new();
    m.insert("m".to_string(), meta_ipld(meta));
    m.insert("e".to_string(), entries_ipld(entries));
    encode(Ipld::Map(m))
}

pub fn encode_bucket<'a>(entries: impl Iterator<Item = (&'a [u8], Value)>) -> (Cid, Bytes) {
    let mut m = BTreeMap::new();
    m.insert("e".to_string(), entries_ipld(entries));
    encode(Ipld::Map(m))
}

/// A split directory's node: its meta and its buckets.
pub fn encode_split(meta: &Meta, buckets: &[Option<Cid>]) -> (Cid, Bytes) {
    let mut m = BTreeMap::new();
    m.insert("m".to_string(), meta_ipld(meta));
    m.insert(
        "b".to_string(),
        Ipld::List(
            buckets
                .iter()
                .map(|b| b.map(Ipld::Link).unwrap_or(Ipld::Null))
                .collect(),
        ),
    );
    encode(Ipld::Map(m))
}

fn get(blocks: &BlockService, cid: &Cid) -> Result<BTreeMap<String, Ipld>> {
    let bytes = blocks
        .get_local(cid)?
        .ok_or_else(|| anyhow!("attributes block {cid} is not in the store"))?;
    cids::verify(cid, &bytes).map_err(|e| anyhow!("attributes block {cid}: {e}"))?;
    match serde_ipld_dagcbor::from_slice::<Ipld>(&bytes) {
        Ok(Ipld::Map(m)) => Ok(m),
        _ => Err(anyhow!("attributes block {cid} is not a dag-cbor map")),
    }
}

/// A path inside a dataset, as its components (the root: none).
pub type Path = Vec<Vec<u8>>;

/// A split directory's buckets, by index.
pub type Buckets = Vec<Option<Cid>>;

/// An attributes tree as read: every entry's meta, and each directory's node (and buckets),
/// by path.
#[derive(Default)]
pub struct ReadAttrs {
    pub metas: Vec<(Path, Meta)>,
    pub dirs: Vec<(Path, Cid, Option<Buckets>)>,
}

/// Reads the attributes tree under `root`. Entries a node cannot say (malformed) are left out
/// and logged: they get defaults.
pub fn read_tree(blocks: &BlockService, root: &Cid) -> Result<ReadAttrs> {
    let mut read = ReadAttrs::default();
    let out = &mut read.metas;
    let mut stack: Vec<(Path, Cid)> = vec![(Vec::new(), *root)];
    let mut seen = std::collections::HashSet::new();
    while let Some((path, cid)) = stack.pop() {
        // A DAG is acyclic, but a crafted one could share nodes: each is read once.
        if !seen.insert((path.clone(), cid)) {
            continue;
        }
        let node = get(blocks, &cid)?;
        match node.get("m").and_then(ipld_meta) {
            Some(m) => out.push((path.clone(), m)),
            None => tracing::warn!(%cid, "attributes node without its meta"),
        }
        let mut lists = Vec::new();
        match (node.get("e"), node.get("b")) {
            (Some(Ipld::List(e)), _) => {
                lists.push(e.clone());
                read.dirs.push((path.clone(), cid, None));
            }
            (_, Some(Ipld::List(b))) if b.len() == BUCKETS => {
                let mut buckets = Vec::with_capacity(BUCKETS);
                for bucket in b {
                    if let Ipld::Link(c) = bucket {
                        if let Some(Ipld::List(e)) = get(blocks, c)?.get("e") {
                            lists.push(e.clone());
                        }
                        buckets.push(Some(*c));
                    } else {
                        buckets.push(None);
                    }
                }
                read.dirs.push((path.clone(), cid, Some(buckets)));
            }
            _ => tracing::warn!(%cid, "attributes node without entries"),
        }
        for list in lists {
            for item in list {
                let Ipld::List(pair) = item else { continue };
                let [Ipld::Bytes(name), v] = &pair[..] else {
                    continue;
                };
                let mut p = path.clone();
                p.push(name.clone());
                match v {
                    Ipld::Link(c) => stack.push((p, *c)),
                    v => match ipld_meta(v) {
                        Some(m) => out.push((p, m)),
                        None => tracing::warn!(%cid, "malformed attributes entry"),
                    },
                }
            }
        }
    }
    Ok(read)
}
