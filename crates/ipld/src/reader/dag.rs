//! Whole-DAG walks: every distinct block reachable from a root (or the blocks of a UnixFS
//! entity, or of a byte range of a file) once, in depth-first pre-order (file order for
//! files), which is the order a streaming reader of a CAR needs them.
//!
//! A block is asked for once and yielded once, however many links reach it: a DAG whose
//! levels all point at one child costs its distinct blocks. Items come out in the same order
//! whatever order blocks are provided in: pending visits are keyed by their path of child
//! indexes, whose lexicographic order is pre-order, and an item is yielded only when it is the
//! first pending visit. Blocks further along are asked for while the first one is awaited, up
//! to the window.
//!
//! [`DagWalk::with_repeats`] yields a block again wherever another link reaches it (the
//! trustless gateway's `dups=y`), from a small memo of blocks: the answer repeats, the reads
//! do not (while the memo holds the block).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use cid::Cid;

use super::{Limits, Planner, ReadError, Step};
use crate::unixfs::{self, FileNode, Node};
use crate::{codec, dagpb, docjson, hamt};
use ipld_core::ipld::Ipld;

/// Bytes assumed for a block whose size no parent told us.
pub const UNKNOWN_BLOCK_BYTES: u64 = 256 << 10;
/// Largest estimate for one block.
const MAX_BLOCK_ESTIMATE: u64 = 4 << 20;
/// Pending visits looked at to find the next block to ask for.
const SCAN: usize = 4096;
/// Bytes of blocks a walk with repeats keeps for their next visit (dropped whole when full: a
/// DAG that repeats blocks repeats few of them).
const REPEAT_MEMO_BYTES: usize = 8 << 20;

/// The links of a dag-cbor/dag-json document in the order of its canonical encoding: dag-cbor
/// map keys shorter first, then bytewise; dag-json keys bytewise. Nesting deeper than the
/// decoder allows cannot occur; `depth` bounds the recursion anyway.
fn document_links(ipld: &Ipld, cbor_order: bool, out: &mut Vec<Cid>, depth: u32) {
    if depth > 4096 {
        return;
    }
    match ipld {
        Ipld::Link(c) => out.push(*c),
        Ipld::List(l) => l
            .iter()
            .for_each(|i| document_links(i, cbor_order, out, depth + 1)),
        Ipld::Map(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            if cbor_order {
                keys.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
            }
            for k in keys {
                document_links(&m[k], cbor_order, out, depth + 1);
            }
        }
        _ => {}
    }
}

/// Which blocks a walk visits (the trustless gateway's `dag-scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The root block only.
    Block,
    /// Every block reachable through dag-pb, dag-cbor and dag-json links.
    All,
    /// What is needed to read the root as a UnixFS entity: a file's blocks (those overlapping
    /// `range`, inclusive byte offsets, when given), a HAMT directory's shards, any other
    /// node's own block.
    Entity { range: Option<(u64, u64)> },
}

/// One block of the walk, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Visited {
    pub cid: Cid,
    pub block: Bytes,
    /// Links from the root (the root is 0).
    pub depth: u32,
}

#[derive(Debug, Clone)]
struct Visit {
    cid: Cid,
    /// Inclusive byte range of the file node needed; `None` = all of it.
    range: Option<(u64, u64)>,
    /// File bytes the parent declared for this node.
    declared: Option<u64>,
    estimate: u64,
}

/// Walks a DAG; see the [module docs](self).
pub struct DagWalk {
    root: Cid,
    scope: Scope,
    limits: Limits,
    strict: bool,
    pending: BTreeMap<Vec<u32>, Visit>,
    /// Blocks asked for and not yet yielded: estimate, and the bytes once provided.
    blocks: HashMap<Cid, (u64, Option<Bytes>)>,
    window_bytes: u64,
    yielded: HashSet<Cid>,
    /// Ranged entity walks: file nodes with children, by CID, and the ranges expanded.
    files: HashMap<Cid, Arc<FileNode>>,
    expanded: HashSet<(Cid, Option<(u64, u64)>)>,
    asked: u64,
    not_followed: u64,
    /// With repeats: the blocks yielded, for their next visit (every yielded CID is here).
    repeats: Option<HashMap<Cid, Bytes>>,
    repeat_bytes: usize,
}

impl DagWalk {
    /// A strict walk: a block that cannot be decoded as its scope requires, or a file node
    /// whose size is not what its parent declared, is an error.
    pub fn new(root: Cid, scope: Scope, limits: Limits) -> Self {
        let mut pending = BTreeMap::new();
        let range = match scope {
            Scope::Entity { range } => range,
            _ => None,
        };
        pending.insert(
            Vec::new(),
            Visit {
                cid: root,
                range,
                declared: None,
                estimate: UNKNOWN_BLOCK_BYTES,
            },
        );
        DagWalk {
            root,
            scope,
            limits,
            strict: true,
            pending,
            blocks: HashMap::new(),
            window_bytes: 0,
            yielded: HashSet::new(),
            files: HashMap::new(),
            expanded: HashSet::new(),
            asked: 0,
            not_followed: 0,
            repeats: None,
            repeat_bytes: 0,
        }
    }

    /// Yields a block again each time a link reaches it, in pre-order (with its subtree
    /// walked again), instead of once. A block is asked for once while a memo of 8 MiB of
    /// blocks holds it; when the memo is full it is emptied, and a block
    /// reached again after that is asked for again (the one exception to "asked once").
    /// [`Limits::max_blocks`] bounds the blocks yielded, repeats included.
    pub fn with_repeats(mut self) -> Self {
        self.repeats = Some(HashMap::new());
        self
    }

    /// Notes a block just yielded, for a walk with repeats.
    fn remember(&mut self, cid: Cid, block: &Bytes) {
        let Some(memo) = self.repeats.as_mut() else {
            return;
        };
        let cost = block.len() + 128;
        if self.repeat_bytes + cost > REPEAT_MEMO_BYTES {
            memo.clear();
            self.yielded.clear();
            self.repeat_bytes = 0;
        }
        if memo.insert(cid, block.clone()).is_none() {
            self.repeat_bytes += cost;
        }
    }

    /// Lenient: such a block is yielded and its links are not followed (counted in
    /// [`DagWalk::not_followed`]). Depth and block limits are still errors.
    pub fn lenient(mut self) -> Self {
        self.strict = false;
        self
    }

    /// Blocks whose links were not followed (lenient walks).
    pub fn not_followed(&self) -> u64 {
        self.not_followed
    }

    fn ranged(&self) -> bool {
        matches!(self.scope, Scope::Entity { range: Some(_) })
    }

    /// Inserts the children of the visit at `path`, given its decoded file node.
    fn expand_file(&mut self, path: &[u32], visit: &Visit, f: &FileNode) -> Result<(), ReadError> {
        if let Some(declared) = visit.declared {
            if f.size != declared {
                return self.refuse(ReadError::SizeMismatch {
                    cid: visit.cid,
                    declared,
                    actual: f.size,
                });
            }
        }
        if self.ranged()
            && self.repeats.is_none()
            && !self.expanded.insert((visit.cid, visit.range))
        {
            return Ok(());
        }
        let (from, to) = visit.range.unwrap_or((0, u64::MAX));
        let mut offset = f.inline.len() as u64;
        let mut children = Vec::new();
        for (i, &(child, size)) in f.children.iter().enumerate() {
            let start = offset;
            let Some(end) = offset.checked_add(size) else {
                break;
            }; // exclusive
            offset = end;
            if size == 0 || end <= from || start > to {
                continue;
            }
            let sub = (from.saturating_sub(start), to.min(end - 1) - start);
            let range = (sub != (0, size - 1)).then_some(sub);
            children.push((
                i as u32,
                Visit {
                    cid: child,
                    range,
                    declared: Some(size),
                    estimate: size.clamp(1, MAX_BLOCK_ESTIMATE),
                },
            ));
        }
        self.insert_children(path, children)
    }

    fn insert_children(
        &mut self,
        path: &[u32],
        children: Vec<(u32, Visit)>,
    ) -> Result<(), ReadError> {
        let depth = path.len() as u32 + 1;
        if depth > self.limits.max_depth {
            if let Some((_, v)) = children.first() {
                return Err(ReadError::TooDeep {
                    cid: v.cid,
                    depth,
                    limit: self.limits.max_depth,
                });
            }
        }
        for (i, v) in children {
            let mut p = Vec::with_capacity(path.len() + 1);
            p.extend_from_slice(path);
            p.push(i);
            self.pending.insert(p, v);
        }
        Ok(())
    }

    fn refuse(&mut self, e: ReadError) -> Result<(), ReadError> {
        if self.strict {
            Err(e)
        } else {
            self.not_followed += 1;
            Ok(())
        }
    }

    /// Inserts the children of a block just yielded.
    fn expand(&mut self, path: &[u32], visit: &Visit, block: &Bytes) -> Result<(), ReadError> {
        let cid = visit.cid;
        match self.scope {
            Scope::Block => Ok(()),
            Scope::All if matches!(cid.codec(), codec::DAG_CBOR | codec::DAG_JSON) => {
                let ipld = match docjson::decode(cid.codec(), block) {
                    Ok(i) => i,
                    Err(e) => return self.refuse(ReadError::decode(&cid, e)),
                };
                let mut links = Vec::new();
                document_links(&ipld, cid.codec() == codec::DAG_CBOR, &mut links, 0);
                let children = links
                    .into_iter()
                    .enumerate()
                    .map(|(i, c)| {
                        (
                            i as u32,
                            Visit {
                                cid: c,
                                range: None,
                                declared: None,
                                estimate: UNKNOWN_BLOCK_BYTES,
                            },
                        )
                    })
                    .collect();
                self.insert_children(path, children)
            }
            Scope::All => {
                if cid.codec() != codec::DAG_PB {
                    return Ok(());
                }
                match dagpb::decode_shared(block) {
                    Ok(node) => {
                        let children = node
                            .links
                            .into_iter()
                            .enumerate()
                            .map(|(i, l)| {
                                (
                                    i as u32,
                                    Visit {
                                        cid: l.cid,
                                        range: None,
                                        declared: None,
                                        estimate: UNKNOWN_BLOCK_BYTES,
                                    },
                                )
                            })
                            .collect();
                        self.insert_children(path, children)
                    }
                    Err(e) => self.refuse(ReadError::decode(&cid, e.into())),
                }
            }
            Scope::Entity { .. } => {
                if cid.codec() == codec::RAW {
                    if let Some(declared) = visit.declared {
                        if block.len() as u64 != declared {
                            return self.refuse(ReadError::SizeMismatch {
                                cid,
                                declared,
                                actual: block.len() as u64,
                            });
                        }
                    }
                    return Ok(());
                }
                let node = match unixfs::decode_node_shared(&cid, block) {
                    Ok(n) => n,
                    Err(e) => return self.refuse(ReadError::decode(&cid, e)),
                };
                match node {
                    Node::File(f) => {
                        if self.ranged() && !f.children.is_empty() {
                            let f = Arc::new(f);
                            self.files.insert(cid, f.clone());
                            self.expand_file(path, visit, &f)
                        } else {
                            self.expand_file(path, visit, &f)
                        }
                    }
                    Node::HamtShard(h) => {
                        let children = h
                            .links
                            .iter()
                            .enumerate()
                            .filter_map(|(i, l)| match l {
                                hamt::HamtLink::Shard { cid, .. } => Some((
                                    i as u32,
                                    Visit {
                                        cid: *cid,
                                        range: None,
                                        declared: None,
                                        estimate: UNKNOWN_BLOCK_BYTES,
                                    },
                                )),
                                hamt::HamtLink::Entry { .. } => None,
                            })
                            .collect();
                        self.insert_children(path, children)
                    }
                    _ if visit.declared.is_some() => {
                        // a file's child that is not a file
                        self.refuse(ReadError::NotFile { cid })
                    }
                    _ => Ok(()),
                }
            }
        }
    }

    /// The next block to ask for: the first pending visit whose block is neither yielded nor
    /// asked for, within the window (the first pending visit is always allowed).
    fn pick(&self) -> Option<(Cid, u64)> {
        for (n, visit) in self.pending.values().enumerate() {
            if n >= SCAN {
                break;
            }
            if self.yielded.contains(&visit.cid) || self.blocks.contains_key(&visit.cid) {
                continue;
            }
            let first = n == 0;
            if !first
                && (self.blocks.len() >= self.limits.window_blocks
                    || self.window_bytes.saturating_add(visit.estimate) > self.limits.window_bytes)
            {
                return None;
            }
            return Some((visit.cid, visit.estimate));
        }
        None
    }
}

impl Planner for DagWalk {
    type Item = Visited;

    fn next(&mut self) -> Result<Step<Visited>, ReadError> {
        loop {
            let Some(entry) = self.pending.first_entry() else {
                return Ok(Step::Done);
            };
            let cid = entry.get().cid;
            if self.yielded.contains(&cid) {
                let (path, visit) = entry.remove_entry();
                if let Some(block) = self.repeats.as_ref().and_then(|m| m.get(&cid)).cloned() {
                    // a repeat counts as a block: a few blocks can name each other
                    // exponentially often
                    self.asked += 1;
                    if self.asked > self.limits.max_blocks {
                        return Err(ReadError::TooManyBlocks {
                            cid: self.root,
                            limit: self.limits.max_blocks,
                        });
                    }
                    self.expand(&path, &visit, &block)?;
                    return Ok(Step::Item(Visited {
                        cid,
                        block,
                        depth: path.len() as u32,
                    }));
                }
                // A ranged walk may need other children of a file node seen before.
                if self.ranged()
                    && visit.range.is_some()
                    && !self.expanded.contains(&(cid, None))
                    && !self.expanded.contains(&(cid, visit.range))
                {
                    if let Some(f) = self.files.get(&cid).cloned() {
                        self.expand_file(&path, &visit, &f)?;
                    }
                }
                continue;
            }
            let ready = matches!(self.blocks.get(&cid), Some((_, Some(_))));
            if !ready {
                break;
            }
            let (path, visit) = entry.remove_entry();
            let Some((estimate, Some(block))) = self.blocks.remove(&cid) else {
                continue;
            };
            self.window_bytes = self.window_bytes.saturating_sub(estimate);
            self.remember(cid, &block);
            self.yielded.insert(cid);
            self.expand(&path, &visit, &block)?;
            return Ok(Step::Item(Visited {
                cid,
                block,
                depth: path.len() as u32,
            }));
        }
        match self.pick() {
            Some((cid, estimate)) => {
                self.asked += 1;
                if self.asked > self.limits.max_blocks {
                    return Err(ReadError::TooManyBlocks {
                        cid: self.root,
                        limit: self.limits.max_blocks,
                    });
                }
                self.blocks.insert(cid, (estimate, None));
                self.window_bytes = self.window_bytes.saturating_add(estimate);
                Ok(Step::Need(cid))
            }
            None => Ok(Step::Wait),
        }
    }

    fn provide(&mut self, cid: &Cid, block: Bytes) -> Result<(), ReadError> {
        if let Some((_, slot @ None)) = self.blocks.get_mut(cid) {
            *slot = Some(block);
        }
        Ok(())
    }
}
