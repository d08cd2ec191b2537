//! Directory listings: the entries of a plain directory, or of a HAMT-sharded one in the order
//! the shards store them (depth-first, links in bucket order).
//!
//! Each shard is asked for once and listed once, however many links reach it (a shard reached
//! a second time is skipped), so a listing costs what its distinct shards cost. While the
//! depth-first cursor waits for a shard, sub-shards already discovered are asked for too (up to
//! the window), breadth-first. Entries whose names cannot be file names, and second entries of
//! a name already listed, come out as [`Listed::Hidden`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use cid::Cid;

use super::{Limits, Planner, ReadError, Step};
use crate::hamt::{HamtLink, HamtNode};
use crate::unixfs::{self, DirEntry, Node};

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: Vec<u8>,
    pub cid: Cid,
    /// The link's cumulative DAG size, when the link has one.
    pub tsize: Option<u64>,
}

/// Why an entry is not listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hidden {
    /// Empty, `.`, `..`, or containing `/` or NUL.
    UnsafeName,
    /// A name already listed.
    Duplicate,
}

/// One result of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listed {
    Entry(Entry),
    Hidden { name: Vec<u8>, why: Hidden },
}

struct Frame {
    node: Arc<HamtNode>,
    next: usize,
    depth: u32,
}

enum State {
    /// The directory's own block is not here yet.
    Root {
        asked: bool,
    },
    Plain(std::vec::IntoIter<DirEntry>),
    Hamt(Vec<Frame>),
    Done,
}

/// Lists a directory; see the [module docs](self).
pub struct Listing {
    dir: Cid,
    limits: Limits,
    state: State,
    /// Shards asked for: `None` while in flight, then the decoded node until it is listed.
    shards: HashMap<Cid, Option<Arc<HamtNode>>>,
    /// Shards discovered and not yet asked for (breadth-first prefetch).
    queue: VecDeque<Cid>,
    /// Every shard queued, asked for or listed.
    known: HashSet<Cid>,
    /// Shards listed (or being listed).
    entered: HashSet<Cid>,
    names: HashSet<Vec<u8>>,
    items: u64,
    blocks: u64,
    outstanding: usize,
}

impl Listing {
    /// Lists the directory `dir`; its block is the first one asked for.
    pub fn new(dir: Cid, limits: Limits) -> Self {
        Listing {
            dir,
            limits,
            state: State::Root { asked: false },
            shards: HashMap::new(),
            queue: VecDeque::new(),
            known: HashSet::new(),
            entered: HashSet::new(),
            names: HashSet::new(),
            items: 0,
            blocks: 0,
            outstanding: 0,
        }
    }

    /// Lists the sharded directory `dir` whose root shard is already decoded.
    pub fn from_hamt_root(dir: Cid, root: HamtNode, limits: Limits) -> Self {
        let mut l = Listing::new(dir, limits);
        l.start(Node::HamtShard(root));
        l
    }

    /// Lists the plain directory `dir`, already decoded.
    pub fn from_directory(dir: Cid, node: unixfs::DirNode, limits: Limits) -> Self {
        let mut l = Listing::new(dir, limits);
        l.start(Node::Directory(node));
        l
    }

    fn start(&mut self, node: Node) -> Option<Cid> {
        match node {
            Node::Directory(d) => {
                self.state = State::Plain(d.entries.into_iter());
                None
            }
            Node::HamtShard(h) => {
                self.entered.insert(self.dir);
                self.known.insert(self.dir);
                let node = Arc::new(h);
                self.discover(&node);
                self.state = State::Hamt(vec![Frame {
                    node,
                    next: 0,
                    depth: 0,
                }]);
                None
            }
            _ => Some(self.dir),
        }
    }

    /// Queues the sub-shards of `node` for prefetching. Depth is not checked here: the cursor
    /// reports a too deep shard when it gets there, and prefetching runs only while the cursor
    /// waits, at most a window ahead.
    fn discover(&mut self, node: &HamtNode) {
        for l in &node.links {
            if let HamtLink::Shard { cid, .. } = l {
                if self.known.insert(*cid) {
                    self.queue.push_back(*cid);
                }
            }
        }
    }

    fn ask(&mut self, cid: Cid) -> Result<Step<Listed>, ReadError> {
        self.blocks += 1;
        if self.blocks > self.limits.max_blocks {
            return Err(ReadError::TooManyBlocks {
                cid: self.dir,
                limit: self.limits.max_blocks,
            });
        }
        self.known.insert(cid);
        self.shards.insert(cid, None);
        self.outstanding += 1;
        Ok(Step::Need(cid))
    }

    fn item(
        &mut self,
        name: Vec<u8>,
        cid: Cid,
        tsize: Option<u64>,
    ) -> Result<Step<Listed>, ReadError> {
        self.items += 1;
        if self.items > self.limits.max_entries {
            return Err(ReadError::TooManyEntries {
                cid: self.dir,
                limit: self.limits.max_entries,
            });
        }
        let listed = if !unixfs::is_safe_name(&name) {
            Listed::Hidden {
                name,
                why: Hidden::UnsafeName,
            }
        } else if !self.names.insert(name.clone()) {
            Listed::Hidden {
                name,
                why: Hidden::Duplicate,
            }
        } else {
            Listed::Entry(Entry { name, cid, tsize })
        };
        Ok(Step::Item(listed))
    }

    /// While the cursor waits for `waiting`: ask for a queued shard if the window allows.
    fn prefetch(&mut self) -> Result<Step<Listed>, ReadError> {
        while self.outstanding < self.limits.window_blocks {
            let Some(cid) = self.queue.pop_front() else {
                break;
            };
            if self.shards.contains_key(&cid) || self.entered.contains(&cid) {
                continue;
            }
            return self.ask(cid);
        }
        Ok(Step::Wait)
    }
}

impl Planner for Listing {
    type Item = Listed;

    fn next(&mut self) -> Result<Step<Listed>, ReadError> {
        loop {
            match &mut self.state {
                State::Done => return Ok(Step::Done),
                State::Root { asked } => {
                    if *asked {
                        return Ok(Step::Wait);
                    }
                    *asked = true;
                    let dir = self.dir;
                    self.blocks += 1;
                    self.outstanding += 1;
                    return Ok(Step::Need(dir));
                }
                State::Plain(it) => match it.next() {
                    Some(e) => return self.item(e.name, e.cid, e.tsize),
                    None => self.state = State::Done,
                },
                State::Hamt(stack) => {
                    let Some(top) = stack.last_mut() else {
                        self.state = State::Done;
                        continue;
                    };
                    let Some(link) = top.node.links.get(top.next) else {
                        stack.pop();
                        continue;
                    };
                    match link {
                        HamtLink::Entry {
                            name, cid, tsize, ..
                        } => {
                            let (name, cid, tsize) = (name.clone(), *cid, *tsize);
                            top.next += 1;
                            return self.item(name, cid, tsize);
                        }
                        HamtLink::Shard { cid, .. } => {
                            let cid = *cid;
                            let depth = top.depth + 1;
                            if self.entered.contains(&cid) {
                                top.next += 1; // listed already: once is enough
                                continue;
                            }
                            if depth > self.limits.max_depth {
                                return Err(ReadError::TooDeep {
                                    cid,
                                    depth,
                                    limit: self.limits.max_depth,
                                });
                            }
                            match self.shards.remove(&cid) {
                                Some(Some(node)) => {
                                    top.next += 1;
                                    self.entered.insert(cid);
                                    stack.push(Frame {
                                        node,
                                        next: 0,
                                        depth,
                                    });
                                }
                                Some(None) => {
                                    self.shards.insert(cid, None);
                                    return self.prefetch();
                                }
                                None => return self.ask(cid),
                            }
                        }
                    }
                }
            }
        }
    }

    fn provide(&mut self, cid: &Cid, block: Bytes) -> Result<(), ReadError> {
        if let State::Root { asked: true } = self.state {
            if *cid == self.dir {
                self.outstanding -= 1;
                let node = unixfs::decode_node_shared(cid, &block)
                    .map_err(|e| ReadError::decode(cid, e))?;
                if let Some(bad) = self.start(node) {
                    self.state = State::Done;
                    return Err(ReadError::NotDirectory { cid: bad });
                }
                return Ok(());
            }
        }
        let Some(slot) = self.shards.get(cid) else {
            return Ok(()); // never asked for
        };
        if slot.is_some() {
            return Ok(()); // provided twice
        }
        self.outstanding -= 1;
        let node = match unixfs::decode_node_shared(cid, &block) {
            Ok(Node::HamtShard(h)) => Arc::new(h),
            Ok(_) => return Err(ReadError::NotShard { cid: *cid }),
            Err(e) => return Err(ReadError::decode(cid, e)),
        };
        self.discover(&node);
        self.shards.insert(*cid, Some(node));
        Ok(())
    }
}
