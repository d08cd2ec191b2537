//! File reads: which pieces make up bytes `[from, to)` of a UnixFS file.
//!
//! A file is a tree: each node holds some bytes of its own first, then children whose byte
//! counts come from `blocksizes`. The planner walks from the root down only the children that
//! overlap the range, in file order, and yields [`Piece`]s: bytes held inside dag-pb nodes, and
//! ranges of raw leaves, which it does not fetch (the caller fetches them, in parallel if it
//! likes, and checks each with [`super::check_leaf`]). Every dag-pb node's size is checked
//! against what its parent declared (the root's against the file size), so a lying DAG is an
//! error, never short or shifted data. A node reached several times (a file of repeated
//! chunks) is asked for once.
//!
//! A caller that keeps decoded interior nodes between reads hands the planner its cache
//! ([`FileRange::with_cache`], a [`NodeCache`]): a node found there is not asked for, and a
//! node with children the planner decodes is put there. A caller that wants the blocks and
//! not the bytes (read-ahead) may [`FileRange::skip`] a node it asked for: the planner then
//! takes it for a leaf it need not look into.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use cid::Cid;

use super::{Limits, Planner, ReadError, Step};
use crate::codec;
use crate::unixfs::{self, FileNode, Node};

/// A part of the requested range, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Bytes held inside a dag-pb node.
    Inline(Bytes),
    /// Bytes `[start, end)` of the raw leaf `cid`, whose whole content is `size` bytes.
    Leaf {
        cid: Cid,
        size: u64,
        start: u64,
        end: u64,
    },
}

impl Piece {
    /// Bytes of the file this piece covers.
    pub fn len(&self) -> u64 {
        match self {
            Piece::Inline(b) => b.len() as u64,
            Piece::Leaf { start, end, .. } => end - start,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Decoded file nodes a caller keeps between reads (interior nodes: few, and on the path of
/// every read of their part of the file).
pub trait NodeCache: Sync {
    /// The decoded node, if the cache holds it.
    fn get(&self, cid: &Cid) -> Option<Arc<FileNode>>;
    /// A node with children that the planner decoded.
    fn insert(&self, cid: Cid, node: Arc<FileNode>);
}

/// A dag-pb node of the walk.
enum Slot {
    /// Asked for, not provided yet.
    Asked,
    Decoded(Arc<FileNode>),
    /// The caller skipped it ([`FileRange::skip`]).
    Skipped,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    cid: Cid,
    /// Offset of the node in the file.
    start: u64,
    /// File bytes its parent declared.
    declared: u64,
    depth: u32,
}

/// Plans a read; see the [module docs](self).
pub struct FileRange<'c> {
    limits: Limits,
    from: u64,
    to: u64,
    /// Nodes still to visit; the top is next in file order.
    stack: Vec<Pending>,
    /// dag-pb nodes asked for or handed over.
    nodes: HashMap<Cid, Slot>,
    cache: Option<&'c dyn NodeCache>,
    outstanding: usize,
    asked: u64,
}

impl<'c> FileRange<'c> {
    /// Bytes `[from, to)` (clamped to `file_size`) of the file `root` of `file_size` bytes.
    pub fn new(root: Cid, file_size: u64, from: u64, to: u64, limits: Limits) -> Self {
        let to = to.min(file_size);
        let stack = if from < to {
            vec![Pending {
                cid: root,
                start: 0,
                declared: file_size,
                depth: 0,
            }]
        } else {
            Vec::new()
        };
        FileRange {
            limits,
            from,
            to,
            stack,
            nodes: HashMap::new(),
            cache: None,
            outstanding: 0,
            asked: 0,
        }
    }

    /// Hands over a node already decoded: it is not asked for.
    pub fn with_node(mut self, cid: Cid, node: Arc<FileNode>) -> Self {
        self.nodes.insert(cid, Slot::Decoded(node));
        self
    }

    /// Looks nodes up in `cache` before asking for them, and puts the nodes with children it
    /// decodes there. Only what the walk reaches is looked up.
    pub fn with_cache(mut self, cache: &'c dyn NodeCache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The caller will not provide `cid`, asked for and not yet provided: the walk goes on as
    /// if it were a leaf whose bytes nobody needs (no piece comes out for it). For callers that
    /// want blocks, not bytes: a node already held need not be read to be prefetched.
    pub fn skip(&mut self, cid: &Cid) {
        if let Some(slot @ Slot::Asked) = self.nodes.get_mut(cid) {
            *slot = Slot::Skipped;
            self.outstanding -= 1;
        }
    }

    /// The dag-pb nodes decoded so far that have children (for a cache of interior nodes).
    pub fn interior_nodes(&self) -> impl Iterator<Item = (&Cid, &Arc<FileNode>)> {
        self.nodes.iter().filter_map(|(c, n)| match n {
            Slot::Decoded(n) if !n.children.is_empty() => Some((c, n)),
            _ => None,
        })
    }

    fn cached(&self, cid: &Cid) -> Option<Arc<FileNode>> {
        self.cache.and_then(|c| c.get(cid))
    }

    fn ask(&mut self, cid: Cid) -> Result<Step<Piece>, ReadError> {
        self.asked += 1;
        if self.asked > self.limits.max_blocks {
            return Err(ReadError::TooManyBlocks {
                cid,
                limit: self.limits.max_blocks,
            });
        }
        self.nodes.insert(cid, Slot::Asked);
        self.outstanding += 1;
        Ok(Step::Need(cid))
    }

    /// While the top of the stack is awaited: ask for a node further along.
    fn lookahead(&mut self) -> Result<Step<Piece>, ReadError> {
        if self.outstanding >= self.limits.window_blocks {
            return Ok(Step::Wait);
        }
        let window = self.limits.window_blocks;
        let next = self
            .stack
            .iter()
            .rev()
            .take(window.saturating_mul(4))
            .find(|p| {
                p.cid.codec() != codec::RAW
                    && !self.nodes.contains_key(&p.cid)
                    && self.cached(&p.cid).is_none()
            })
            .map(|p| p.cid);
        match next {
            Some(cid) => self.ask(cid),
            None => Ok(Step::Wait),
        }
    }
}

impl Planner for FileRange<'_> {
    type Item = Piece;

    fn next(&mut self) -> Result<Step<Piece>, ReadError> {
        loop {
            let Some(&top) = self.stack.last() else {
                return Ok(Step::Done);
            };
            if top.depth > self.limits.max_depth {
                return Err(ReadError::TooDeep {
                    cid: top.cid,
                    depth: top.depth,
                    limit: self.limits.max_depth,
                });
            }
            let end = top.start.saturating_add(top.declared);
            if top.cid.codec() == codec::RAW {
                self.stack.pop();
                return Ok(Step::Item(Piece::Leaf {
                    cid: top.cid,
                    size: top.declared,
                    start: self.from.max(top.start) - top.start,
                    end: self.to.min(end) - top.start,
                }));
            }
            let node = match self.nodes.get(&top.cid) {
                Some(Slot::Decoded(n)) => n.clone(),
                Some(Slot::Asked) => return self.lookahead(),
                Some(Slot::Skipped) => {
                    self.stack.pop();
                    continue;
                }
                None => match self.cached(&top.cid) {
                    Some(n) => n,
                    None => return self.ask(top.cid),
                },
            };
            self.stack.pop();
            if node.size != top.declared {
                return Err(ReadError::SizeMismatch {
                    cid: top.cid,
                    declared: top.declared,
                    actual: node.size,
                });
            }
            let inline_end = top.start + node.inline.len() as u64;
            let mut child_start = inline_end;
            let at = self.stack.len();
            for &(child, size) in &node.children {
                if child_start >= self.to {
                    break;
                }
                let child_end = child_start + size;
                if child_end > self.from && size > 0 {
                    self.stack.push(Pending {
                        cid: child,
                        start: child_start,
                        declared: size,
                        depth: top.depth + 1,
                    });
                }
                child_start = child_end;
            }
            self.stack[at..].reverse();
            if self.from < inline_end && self.to > top.start {
                let s = (self.from.max(top.start) - top.start) as usize;
                let e = (self.to.min(inline_end) - top.start) as usize;
                return Ok(Step::Item(Piece::Inline(node.inline.slice(s..e))));
            }
        }
    }

    fn provide(&mut self, cid: &Cid, block: Bytes) -> Result<(), ReadError> {
        let Some(slot @ Slot::Asked) = self.nodes.get_mut(cid) else {
            return Ok(());
        };
        self.outstanding -= 1;
        match unixfs::decode_node_shared(cid, &block) {
            Ok(Node::File(f)) => {
                let node = Arc::new(f);
                if let Some(cache) = self.cache.filter(|_| !node.children.is_empty()) {
                    cache.insert(*cid, node.clone());
                }
                *slot = Slot::Decoded(node);
                Ok(())
            }
            Ok(_) => Err(ReadError::NotFile { cid: *cid }),
            Err(e) => Err(ReadError::decode(cid, e)),
        }
    }
}
