//! The leaves of a file, in file order, as runs: what a writer appending to the file can keep
//! of it (its leading full chunks), or anything else that needs the shape of a file's DAG
//! rather than its bytes.
//!
//! A leaf is a raw block or a dag-pb node without children; each comes with the size and the
//! `Tsize` its parent's link gave it. Identical subtrees (the holes of a sparse file, where
//! every level links to one node of zeros) are expanded once: each distinct block is asked
//! for once and a subtree's leaves are kept run-length encoded, so a terabyte of holes costs
//! its few distinct blocks, not a run per leaf. Raw leaves are not fetched (their length is
//! checked when they are read); every dag-pb node's size is checked against what its parent
//! declared, and depth and block counts are bounded as in every planner.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use cid::Cid;

use super::{Limits, Planner, ReadError, Step};
use crate::unixfs::{self, FileNode, Node};
use crate::{codec, dagpb};

/// A leaf as its parent links to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileLeaf {
    pub cid: Cid,
    /// File bytes it holds (its parent's `blocksizes` entry; the file size for a root).
    pub size: u64,
    /// Its parent link's cumulative size (`None` when the link has none, and for the root
    /// unless given).
    pub tsize: Option<u64>,
}

/// Consecutive parts of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Run {
    /// `count` times the same leaf.
    Leaf { leaf: FileLeaf, count: u64 },
    /// Bytes held inside an interior node (before its children).
    Inline(u64),
}

impl Run {
    /// File bytes of the run.
    pub fn len(&self) -> u64 {
        match self {
            Run::Leaf { leaf, count } => leaf.size.saturating_mul(*count),
            Run::Inline(n) => *n,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Appends `run` to `runs`, merging it into the last run when both are the same leaf.
fn push_run(runs: &mut Vec<Run>, run: &Run) {
    if let (Some(Run::Leaf { leaf: l, count: c }), Run::Leaf { leaf, count }) =
        (runs.last_mut(), run)
    {
        if l == leaf {
            *c = c.saturating_add(*count);
            return;
        }
    }
    runs.push(run.clone());
}

#[derive(Debug, Clone, Copy)]
struct Visit {
    leaf: FileLeaf,
    depth: u32,
}

enum Frame {
    /// A node to look at.
    Enter(Visit),
    /// A node whose children have been entered: compose their runs.
    Leave {
        cid: Cid,
        size: u64,
        inline: u64,
        children: Vec<Cid>,
    },
}

/// Lists a file's leaves; see the [module docs](self).
pub struct Leaves {
    limits: Limits,
    root: Cid,
    stack: Vec<Frame>,
    /// Subtrees done: the file bytes they hold, and their runs.
    done: HashMap<Cid, (u64, Arc<Vec<Run>>)>,
    /// The block asked for, and then the node decoded from it (with its links' Tsizes).
    asked_for: Option<Cid>,
    got: Option<(Cid, FileNode, Vec<Option<u64>>)>,
    asked: u64,
    out: Option<std::vec::IntoIter<Run>>,
}

impl Leaves {
    /// The leaves of the file `root` of `size` bytes; `tsize` is the root's own, if known.
    pub fn new(root: Cid, size: u64, tsize: Option<u64>, limits: Limits) -> Self {
        let leaf = FileLeaf {
            cid: root,
            size,
            tsize,
        };
        Leaves {
            limits,
            root,
            stack: vec![Frame::Enter(Visit { leaf, depth: 0 })],
            done: HashMap::new(),
            asked_for: None,
            got: None,
            asked: 0,
            out: None,
        }
    }

    fn finish(&mut self, cid: Cid, size: u64, runs: Vec<Run>) {
        self.done.insert(cid, (size, Arc::new(runs)));
    }

    /// Takes the decoded node of `visit` (popped from the stack): a leaf, or children to enter.
    fn expand(&mut self, visit: Visit, node: FileNode, tsizes: Vec<Option<u64>>) {
        let cid = visit.leaf.cid;
        if node.children.is_empty() {
            let run = Run::Leaf {
                leaf: visit.leaf,
                count: 1,
            };
            self.finish(cid, node.size, vec![run]);
            return;
        }
        let children: Vec<Visit> = node
            .children
            .iter()
            .zip(tsizes)
            .map(|(&(cid, size), tsize)| Visit {
                leaf: FileLeaf { cid, size, tsize },
                depth: visit.depth + 1,
            })
            .collect();
        self.stack.push(Frame::Leave {
            cid,
            size: node.size,
            inline: node.inline.len() as u64,
            children: children.iter().map(|v| v.leaf.cid).collect(),
        });
        self.stack
            .extend(children.into_iter().rev().map(Frame::Enter));
    }
}

impl Planner for Leaves {
    type Item = Run;

    fn next(&mut self) -> Result<Step<Run>, ReadError> {
        loop {
            if let Some(out) = &mut self.out {
                return Ok(out.next().map_or(Step::Done, Step::Item));
            }
            let Some(frame) = self.stack.last() else {
                let runs = self
                    .done
                    .get(&self.root)
                    .map(|(_, r)| r.as_ref().clone())
                    .unwrap_or_default();
                self.done.clear();
                self.out = Some(runs.into_iter());
                continue;
            };
            match frame {
                Frame::Enter(visit) => {
                    let visit = *visit;
                    let cid = visit.leaf.cid;
                    if visit.depth > self.limits.max_depth {
                        return Err(ReadError::TooDeep {
                            cid,
                            depth: visit.depth,
                            limit: self.limits.max_depth,
                        });
                    }
                    if let Some(&(size, _)) = self.done.get(&cid) {
                        // a subtree met before: its runs are known; only its size is checked
                        if size != visit.leaf.size {
                            return Err(ReadError::SizeMismatch {
                                cid,
                                declared: visit.leaf.size,
                                actual: size,
                            });
                        }
                        self.stack.pop();
                        continue;
                    }
                    if cid.codec() == codec::RAW {
                        self.stack.pop();
                        let run = Run::Leaf {
                            leaf: visit.leaf,
                            count: 1,
                        };
                        self.finish(cid, visit.leaf.size, vec![run]);
                        continue;
                    }
                    match self.got.take() {
                        Some((c, node, tsizes)) if c == cid => {
                            self.stack.pop();
                            if node.size != visit.leaf.size {
                                return Err(ReadError::SizeMismatch {
                                    cid,
                                    declared: visit.leaf.size,
                                    actual: node.size,
                                });
                            }
                            self.expand(visit, node, tsizes);
                        }
                        got => {
                            self.got = got;
                            if self.asked_for.is_some() {
                                return Ok(Step::Wait);
                            }
                            self.asked += 1;
                            if self.asked > self.limits.max_blocks {
                                return Err(ReadError::TooManyBlocks {
                                    cid: self.root,
                                    limit: self.limits.max_blocks,
                                });
                            }
                            self.asked_for = Some(cid);
                            return Ok(Step::Need(cid));
                        }
                    }
                }
                Frame::Leave { .. } => {
                    let Some(Frame::Leave {
                        cid,
                        size,
                        inline,
                        children,
                    }) = self.stack.pop()
                    else {
                        unreachable!("the top frame is a Leave");
                    };
                    let mut runs = Vec::new();
                    if inline > 0 {
                        runs.push(Run::Inline(inline));
                    }
                    for child in &children {
                        if let Some((_, child_runs)) = self.done.get(child) {
                            for r in child_runs.iter() {
                                push_run(&mut runs, r);
                            }
                        }
                    }
                    self.finish(cid, size, runs);
                }
            }
        }
    }

    fn provide(&mut self, cid: &Cid, block: Bytes) -> Result<(), ReadError> {
        if self.asked_for != Some(*cid) {
            return Ok(()); // never asked for
        }
        self.asked_for = None;
        if cid.codec() != codec::DAG_PB {
            return match unixfs::decode_node_shared(cid, &block) {
                Err(e) => Err(ReadError::decode(cid, e)),
                Ok(_) => Err(ReadError::NotFile { cid: *cid }),
            };
        }
        let pb = dagpb::decode_shared(&block).map_err(|e| ReadError::decode(cid, e.into()))?;
        let tsizes = pb.links.iter().map(|l| l.tsize).collect();
        match unixfs::from_pb(pb) {
            Ok(Node::File(f)) => {
                self.got = Some((*cid, f, tsizes));
                Ok(())
            }
            Ok(_) => Err(ReadError::NotFile { cid: *cid }),
            Err(e) => Err(ReadError::decode(cid, e)),
        }
    }
}
