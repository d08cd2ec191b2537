//! Streaming DAG walks: a CARv1 of a path and a `dag-scope`, and the bytes of a UnixFS file
//! range. Both walk depth-first with an explicit stack (children in link order), hold one
//! block at a time and push into a bounded channel, so memory stays flat whatever the DAG's
//! size and a slow client slows the walk down instead of filling memory.
//!
//! A DAG may reach one block through many links. With `dups=n` a block goes out once and its
//! subtree is not walked again; where the answer itself repeats (`dups=y`, or the bytes of a
//! file whose leaves are one block) a block met again is taken from a small per-walk memo,
//! read and decoded once, so the work is the output's, never a store read per path.

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use cid::Cid;
use hyper::StatusCode;
use ipfs_mount_ipld::cids;
use ipfs_mount_ipld::unixfs::{FileNode, Node};
use tokio::sync::mpsc;

use super::request::{CarParams, Scope};
use super::resolve::{self, Ctx, Prefetch, Resolved};
use super::HttpError;

/// How a walk ended early.
#[derive(Debug)]
pub(super) enum WalkEnd {
    /// The client went away: stop quietly.
    Closed,
    /// The DAG could not be walked (missing or malformed block): the response is cut short so
    /// that the client sees an incomplete body, never a complete-looking wrong one.
    Failed(HttpError),
}

impl From<HttpError> for WalkEnd {
    fn from(e: HttpError) -> Self {
        WalkEnd::Failed(e)
    }
}

/// The body side of a streamed response.
pub(super) struct Sink {
    tx: mpsc::Sender<Result<Bytes, io::Error>>,
    pub sent: u64,
}

impl Sink {
    pub fn new(tx: mpsc::Sender<Result<Bytes, io::Error>>) -> Self {
        Sink { tx, sent: 0 }
    }

    pub async fn send(&mut self, b: Bytes) -> Result<(), WalkEnd> {
        if b.is_empty() {
            return Ok(());
        }
        self.sent += b.len() as u64;
        self.tx.send(Ok(b)).await.map_err(|_| WalkEnd::Closed)
    }

    /// Aborts the response (the connection is closed without a proper end of body).
    pub async fn abort(&mut self, why: &str) {
        let _ = self.tx.send(Err(io::Error::other(why.to_string()))).await;
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Bytes of blocks one walk keeps for a second visit (dropped whole when full: a DAG that
/// repeats blocks repeats few of them).
const MEMO_BYTES: usize = 8 << 20;

/// Blocks met in one walk, with what the walk decoded from them.
struct Memo<T> {
    map: HashMap<Cid, (Bytes, Arc<T>)>,
    bytes: usize,
}

impl<T> Memo<T> {
    fn new() -> Self {
        Memo {
            map: HashMap::new(),
            bytes: 0,
        }
    }

    fn get(&self, cid: &Cid) -> Option<(Bytes, Arc<T>)> {
        self.map.get(cid).cloned()
    }

    fn insert(&mut self, cid: Cid, block: Bytes, value: Arc<T>) {
        let cost = block.len() + 128;
        if self.bytes + cost > MEMO_BYTES {
            self.map.clear();
            self.bytes = 0;
        }
        if self.map.insert(cid, (block, value)).is_none() {
            self.bytes += cost;
        }
    }
}

/// CARv1 output with the `dups` rule and the identity-CID exclusion of the trustless gateway
/// spec.
pub(super) struct CarOut<'a> {
    sink: &'a mut Sink,
    sent: HashSet<Cid>,
    dups: bool,
    blocks: u64,
}

impl CarOut<'_> {
    /// Writes one block unless it was already sent (with `dups=n`) or is an identity CID.
    /// Returns whether its children still need to be walked: false only for a block already
    /// sent with `dups=n` (its whole subtree went out with it).
    async fn block(&mut self, cid: &Cid, data: &Bytes) -> Result<bool, WalkEnd> {
        if !self.dups && !self.sent.insert(*cid) {
            return Ok(false);
        }
        if cids::identity_data(cid).is_some() {
            return Ok(true);
        }
        let c = cid.to_bytes();
        let mut prefix = Vec::with_capacity(c.len() + 10);
        put_varint(&mut prefix, (c.len() + data.len()) as u64);
        prefix.extend_from_slice(&c);
        self.sink.send(Bytes::from(prefix)).await?;
        self.sink.send(data.clone()).await?;
        self.blocks += 1;
        Ok(true)
    }
}

/// Streams the CAR of a resolved path: header (root = the path's first CID), the blocks
/// crossed by the path, then the terminal element's scope. Returns the number of blocks.
pub(super) async fn car(
    ctx: &Ctx,
    resolved: &Resolved,
    params: CarParams,
    sink: &mut Sink,
) -> Result<u64, WalkEnd> {
    sink.send(Bytes::from(ipfs_mount_ipld::car::encode_header_v1(&[
        resolved.root,
    ])))
    .await?;
    let mut out = CarOut {
        sink,
        sent: HashSet::new(),
        dups: params.dups,
        blocks: 0,
    };
    for (cid, data) in &resolved.path_blocks {
        out.block(cid, data).await?;
    }
    let (cid, block) = (&resolved.cid, &resolved.block);
    match params.scope {
        Scope::Block => {
            out.block(cid, block).await?;
        }
        Scope::All => walk_all(ctx, &mut out, cid, block, false).await?,
        Scope::Entity => match resolve::decode(cid, block) {
            Ok(Node::File(f)) => match params.bytes {
                None => walk_all(ctx, &mut out, cid, block, false).await?,
                Some(eb) => match eb.resolve(f.size) {
                    // empty or outside the file: the root block alone tells the client why
                    None => {
                        out.block(cid, block).await?;
                    }
                    Some(range) => {
                        walk_file(ctx, cid, block, range, FileOut::Car(&mut out)).await?;
                    }
                },
            },
            Ok(Node::HamtShard(_)) => walk_all(ctx, &mut out, cid, block, true).await?,
            // plain directories, symlinks, documents, and blocks we cannot interpret: the
            // block is the entity
            _ => {
                out.block(cid, block).await?;
            }
        },
    }
    Ok(out.blocks)
}

/// Depth-first walk from `root` over every link (or, with `shards_only`, over the shard
/// links of a HAMT: what enumerating the directory needs).
async fn walk_all(
    ctx: &Ctx,
    out: &mut CarOut<'_>,
    root: &Cid,
    root_block: &Bytes,
    shards_only: bool,
) -> Result<(), WalkEnd> {
    let mut prefetch = Prefetch::new();
    // with dups=n a block is never met twice: only dups=y needs the memo
    let mut memo: Option<Memo<Vec<Cid>>> = out.dups.then(Memo::new);
    let mut stack: Vec<Cid> = Vec::new();
    let mut first = Some(root_block.clone());
    let mut next = Some(*root);
    while let Some(cid) = next.take().or_else(|| stack.pop()) {
        if !out.dups && out.sent.contains(&cid) {
            continue; // sent with its whole subtree: not even read again
        }
        let seen = memo.as_ref().and_then(|m| m.get(&cid));
        let block = match (first.take(), &seen) {
            (Some(b), _) => b,
            (None, Some((b, _))) => b.clone(),
            (None, None) => ctx.get(&cid).await?,
        };
        if !out.block(&cid, &block).await? {
            continue;
        }
        let children = match seen {
            Some((_, children)) => children,
            None => {
                let children = Arc::new(if shards_only {
                    match resolve::decode(&cid, &block) {
                        Ok(Node::HamtShard(h)) => h.shards().copied().collect(),
                        _ => Vec::new(),
                    }
                } else {
                    resolve::links(&cid, &block)?
                });
                if let Some(m) = memo.as_mut() {
                    m.insert(cid, block, children.clone());
                }
                children
            }
        };
        stack.extend(children.iter().rev().copied());
        prefetch.ahead(ctx, stack.iter().rev());
    }
    Ok(())
}

/// Where a file walk puts what it finds.
pub(super) enum FileOut<'a, 'b> {
    /// The blocks (a CAR with `entity-bytes`).
    Car(&'a mut CarOut<'b>),
    /// The file bytes in the range (a plain response).
    Bytes(&'a mut Sink),
}

/// Walks the blocks of the UnixFS file `root` that hold bytes `first..=last`, in file order.
/// Every node's size is checked against what its parent says, so a short or inconsistent DAG
/// ends the stream instead of shifting bytes.
pub(super) async fn walk_file(
    ctx: &Ctx,
    root: &Cid,
    root_block: &Bytes,
    (first, last): (u64, u64),
    mut out: FileOut<'_, '_>,
) -> Result<(), WalkEnd> {
    struct Item {
        cid: Cid,
        offset: u64,
        size: Option<u64>,
    }
    let mut prefetch = Prefetch::new();
    // (cid, window) pairs already walked, with `dups=n`: the window is None when the node is
    // wholly inside the range (the common case; only the range's two edges are partial)
    let mut walked: HashSet<(Cid, Option<(u64, u64)>)> = HashSet::new();
    let mut stack: Vec<Item> = Vec::new();
    let mut first_block = Some(root_block.clone());
    let mut next = Some(Item {
        cid: *root,
        offset: 0,
        size: None,
    });
    // blocks met again (a file of repeated chunks) are neither read nor decoded again
    let mut memo: Memo<FileNode> = Memo::new();
    while let Some(item) = next.take().or_else(|| stack.pop()) {
        let (block, file) = match memo.get(&item.cid) {
            Some(hit) => hit,
            None => {
                let block = match first_block.take() {
                    Some(b) => b,
                    None => ctx.get(&item.cid).await?,
                };
                let file = match resolve::decode(&item.cid, &block)? {
                    Node::File(f) => Arc::new(f),
                    _ => {
                        return Err(WalkEnd::Failed(HttpError::new(
                            StatusCode::NOT_FOUND,
                            format!("block {} inside a file is not file data", item.cid),
                        )))
                    }
                };
                memo.insert(item.cid, block.clone(), file.clone());
                (block, file)
            }
        };
        if item.size.is_some_and(|s| s != file.size) {
            return Err(WalkEnd::Failed(HttpError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "block {} holds {} file bytes, its parent says {}",
                    item.cid,
                    file.size,
                    item.size.unwrap_or_default()
                ),
            )));
        }
        let node_end = item.offset + file.size; // exclusive
        match &mut out {
            FileOut::Car(car) => {
                car.block(&item.cid, &block).await?;
                if !car.dups {
                    let lo = first.max(item.offset);
                    let hi = last.min(node_end.saturating_sub(1));
                    let whole = lo == item.offset && hi + 1 == node_end;
                    if walked.contains(&(item.cid, None)) {
                        continue;
                    }
                    let key = if whole {
                        None
                    } else {
                        Some((lo - item.offset, hi - item.offset))
                    };
                    if !walked.insert((item.cid, key)) {
                        continue;
                    }
                }
            }
            FileOut::Bytes(sink) => {
                let inline_end = item.offset + file.inline.len() as u64;
                let lo = first.max(item.offset);
                let hi = (last + 1).min(inline_end);
                if lo < hi {
                    let a = (lo - item.offset) as usize;
                    let b = (hi - item.offset) as usize;
                    sink.send(file.inline.slice(a..b)).await?;
                }
            }
        }
        let mut off = item.offset + file.inline.len() as u64;
        let mut children = Vec::new();
        for (cid, size) in &file.children {
            if *size > 0 && off <= last && off + size > first {
                children.push(Item {
                    cid: *cid,
                    offset: off,
                    size: Some(*size),
                });
            }
            off += size;
        }
        stack.extend(children.into_iter().rev());
        prefetch.ahead(ctx, stack.iter().rev().map(|i| &i.cid));
    }
    Ok(())
}
