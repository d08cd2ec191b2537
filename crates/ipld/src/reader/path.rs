//! Path walks: resolve names one by one from a root, through plain directories and HAMT
//! shards (only the shards on each name's hash path are asked for). Symlinks are reported, not
//! followed; the block the last name leads to is not fetched.

use bytes::Bytes;
use cid::Cid;

use super::{Limits, Planner, ReadError, Step};
use crate::hamt::{self, HamtNode};
use crate::unixfs::{self, Node};

/// How a path walk ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// Every name was found: the last one leads to `cid` (the root when there are no names).
    /// `tsize` is the last link's cumulative size, when it has one.
    Found { cid: Cid, tsize: Option<u64> },
    /// Name `at` (0-based) is not in the directory `dir`.
    NotFound { dir: Cid, at: usize },
    /// Name `at` was asked of `cid`, which is not a directory (a file or a document).
    NotDirectory { cid: Cid, at: usize },
    /// The node reached after `at` names is the symlink `cid` to `target`; names `at..` remain.
    Symlink {
        cid: Cid,
        target: Vec<u8>,
        at: usize,
    },
}

enum State {
    Ask,
    Asked,
    Result(Resolved),
    Done,
}

/// Resolves a path; see the [module docs](self).
pub struct PathWalk {
    limits: Limits,
    names: Vec<Vec<u8>>,
    at: usize,
    cur: Cid,
    tsize: Option<u64>,
    /// Inside a sharded directory: the directory and the depth of `cur` in it.
    hamt: Option<(Cid, u32)>,
    state: State,
    asked: u64,
}

impl PathWalk {
    /// Resolves `names` from `root`.
    pub fn new(root: Cid, names: Vec<Vec<u8>>, limits: Limits) -> Self {
        PathWalk {
            limits,
            names,
            at: 0,
            cur: root,
            tsize: None,
            hamt: None,
            state: State::Ask,
            asked: 0,
        }
    }

    /// Resolves `names` from the sharded directory `dir`, whose root shard is already decoded:
    /// only the shards below it on the first name's hash path are asked for.
    pub fn from_hamt_root(
        dir: Cid,
        root: &HamtNode,
        names: Vec<Vec<u8>>,
        limits: Limits,
    ) -> Result<Self, ReadError> {
        let mut w = PathWalk::new(dir, names, limits);
        match w.names.first() {
            None => {}
            Some(name) if !unixfs::is_safe_name(name) => {
                w.state = State::Result(Resolved::NotFound { dir, at: 0 });
            }
            Some(_) => w.step_hamt(dir, root, 0)?,
        }
        Ok(w)
    }

    fn found(&mut self, cid: Cid, tsize: Option<u64>) {
        self.at += 1;
        self.cur = cid;
        self.tsize = tsize;
        self.hamt = None;
        self.state = State::Ask;
    }

    fn step_hamt(&mut self, dir: Cid, node: &HamtNode, depth: u32) -> Result<(), ReadError> {
        let name = &self.names[self.at];
        let step =
            hamt::lookup_step(node, name, depth).map_err(|e| ReadError::decode(&self.cur, e))?;
        match step {
            hamt::Step::Found { cid, tsize } => self.found(cid, tsize),
            hamt::Step::NotFound => {
                self.state = State::Result(Resolved::NotFound { dir, at: self.at });
            }
            hamt::Step::Descend { cid } => {
                let depth = depth + 1;
                if depth > self.limits.max_depth {
                    return Err(ReadError::TooDeep {
                        cid,
                        depth,
                        limit: self.limits.max_depth,
                    });
                }
                self.cur = cid;
                self.hamt = Some((dir, depth));
                self.state = State::Ask;
            }
        }
        Ok(())
    }
}

impl Planner for PathWalk {
    type Item = Resolved;

    fn next(&mut self) -> Result<Step<Resolved>, ReadError> {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Done => Ok(Step::Done),
            State::Result(r) => Ok(Step::Item(r)),
            State::Asked => {
                self.state = State::Asked;
                Ok(Step::Wait)
            }
            State::Ask if self.at >= self.names.len() => Ok(Step::Item(Resolved::Found {
                cid: self.cur,
                tsize: self.tsize,
            })),
            State::Ask if !unixfs::is_safe_name(&self.names[self.at]) && self.hamt.is_none() => {
                // no listed entry can have this name; the block is not needed to say so
                self.state = State::Result(Resolved::NotFound {
                    dir: self.cur,
                    at: self.at,
                });
                self.next()
            }
            State::Ask => {
                self.asked += 1;
                if self.asked > self.limits.max_blocks {
                    return Err(ReadError::TooManyBlocks {
                        cid: self.cur,
                        limit: self.limits.max_blocks,
                    });
                }
                self.state = State::Asked;
                Ok(Step::Need(self.cur))
            }
        }
    }

    fn provide(&mut self, cid: &Cid, block: Bytes) -> Result<(), ReadError> {
        if !matches!(self.state, State::Asked) || *cid != self.cur {
            return Ok(());
        }
        self.state = State::Done;
        let node =
            unixfs::decode_node_shared(cid, &block).map_err(|e| ReadError::decode(cid, e))?;
        if let Some((dir, depth)) = self.hamt {
            let Node::HamtShard(h) = node else {
                return Err(ReadError::NotShard { cid: *cid });
            };
            return self.step_hamt(dir, &h, depth);
        }
        match node {
            Node::Directory(d) => {
                let name = &self.names[self.at];
                match d.entries.iter().find(|e| &e.name == name) {
                    Some(e) => {
                        let (c, t) = (e.cid, e.tsize);
                        self.found(c, t);
                    }
                    None => {
                        self.state = State::Result(Resolved::NotFound {
                            dir: *cid,
                            at: self.at,
                        })
                    }
                }
                Ok(())
            }
            Node::HamtShard(h) => self.step_hamt(*cid, &h, 0),
            Node::Symlink(s) => {
                self.state = State::Result(Resolved::Symlink {
                    cid: *cid,
                    target: s.target,
                    at: self.at,
                });
                Ok(())
            }
            Node::File(_) | Node::Document(_) => {
                self.state = State::Result(Resolved::NotDirectory {
                    cid: *cid,
                    at: self.at,
                });
                Ok(())
            }
        }
    }
}
