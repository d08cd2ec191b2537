//! Streaming DAG walks: a CARv1 of a path and a `dag-scope`, and the bytes of a UnixFS file
//! range, both planned by the ipld reader ([`DagWalk`], [`FileRange`]) and pulled one item at
//! a time into a bounded channel, so memory stays flat whatever the DAG's size and a slow
//! client slows the walk down instead of filling memory.
//!
//! A DAG may reach one block through many links. With `dups=n` a block goes out once and its
//! subtree is not walked again; where the answer itself repeats (`dups=y`, or the bytes of a
//! file whose leaves are one block) a block met again comes from a small memo, read once, so
//! the work is the output's, never a store read per path.

use std::collections::{HashMap, HashSet};
use std::io;

use bytes::Bytes;
use cid::Cid;
use futures::future::{self, BoxFuture, FutureExt, Shared};
use futures::stream::{FuturesOrdered, StreamExt};
use ipfs_mount_ipld::cids;
use ipfs_mount_ipld::reader::dag::{self, DagWalk};
use ipfs_mount_ipld::reader::file::{FileRange, Piece};
use ipfs_mount_ipld::reader::{self, BlockGetter, Limits, Pull};
use ipfs_mount_ipld::unixfs::Node;
use tokio::sync::mpsc;

use super::request::{CarParams, Scope};
use super::resolve::{self, AtHand, Ctx, Resolved};
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
    let entity = |range| dag::Scope::Entity { range };
    match params.scope {
        Scope::Block => {
            out.block(cid, block).await?;
        }
        Scope::All => dag_walk(ctx, &mut out, cid, block, dag::Scope::All).await?,
        Scope::Entity => match resolve::decode(cid, block) {
            Ok(Node::File(f)) => match params.bytes {
                None => dag_walk(ctx, &mut out, cid, block, entity(None)).await?,
                Some(eb) => match eb.resolve(f.size) {
                    // empty or outside the file: the root block alone tells the client why
                    None => {
                        out.block(cid, block).await?;
                    }
                    Some(range) => dag_walk(ctx, &mut out, cid, block, entity(Some(range))).await?,
                },
            },
            Ok(Node::HamtShard(_)) => dag_walk(ctx, &mut out, cid, block, entity(None)).await?,
            // plain directories, symlinks, documents, and blocks we cannot interpret: the
            // block is the entity
            _ => {
                out.block(cid, block).await?;
            }
        },
    }
    Ok(out.blocks)
}

/// Blocks a walk asks for ahead of the one it writes.
const WALK_WINDOW: usize = 16;
/// Deepest block a `dag-scope=all` walk follows (dag-cbor chains can be long; UnixFS is a
/// few levels, and entity walks keep the planner's UnixFS bound).
const ALL_MAX_DEPTH: u32 = 4096;

/// Writes the blocks of `scope` from `root` in depth-first pre-order through the DAG-walk
/// planner: each block once (`dups=n`), or wherever a link reaches it (`dups=y`, still read
/// once while the planner's memo holds it).
async fn dag_walk(
    ctx: &Ctx,
    out: &mut CarOut<'_>,
    root: &Cid,
    root_block: &Bytes,
    scope: dag::Scope,
) -> Result<(), WalkEnd> {
    let mut limits = Limits::default().with_window(WALK_WINDOW, 32 << 20);
    if scope == dag::Scope::All {
        limits = limits.with_max_depth(ALL_MAX_DEPTH);
    }
    let mut walk = DagWalk::new(*root, scope, limits);
    if out.dups {
        walk = walk.with_repeats();
    }
    let getter = AtHand::new(ctx, *root, root_block.clone());
    let mut pull = Pull::new(walk, &getter);
    while let Some(v) = pull.next().await.map_err(resolve::drive_error)? {
        out.block(&v.cid, &v.block).await?;
    }
    Ok(())
}

/// Leaves fetched ahead of the bytes being written.
const LEAF_WINDOW: usize = 16;

type Leaf<'a> = BoxFuture<'a, Result<Bytes, HttpError>>;

/// Writes bytes `first..=last` of the UnixFS file `root` (of `size` bytes), planned by the
/// file-range planner: every node's size is checked against what its parent declared and
/// every leaf's length against its parent's, so a short or inconsistent DAG ends the stream
/// instead of shifting bytes. A leaf named by many links (a file of repeated chunks) is read
/// once while it is among the last few read.
pub(super) async fn file_bytes(
    ctx: &Ctx,
    root: &Cid,
    root_block: &Bytes,
    size: u64,
    (first, last): (u64, u64),
    sink: &mut Sink,
) -> Result<(), WalkEnd> {
    let getter = AtHand::new(ctx, *root, root_block.clone());
    let limits = Limits::default().with_window(WALK_WINDOW, 32 << 20);
    let planner = FileRange::new(*root, size, first, last.saturating_add(1), limits);
    let mut pull = Pull::new(planner, &getter);
    let mut ahead: FuturesOrdered<Leaf<'_>> = FuturesOrdered::new();
    let mut recent: HashMap<Cid, Shared<Leaf<'_>>> = HashMap::new();
    loop {
        if ahead.len() >= LEAF_WINDOW {
            if let Some(b) = ahead.next().await {
                sink.send(b?).await?;
            }
            continue;
        }
        match pull.next().await.map_err(resolve::drive_error)? {
            Some(Piece::Inline(b)) => ahead.push_back(future::ready(Ok(b)).boxed()),
            Some(Piece::Leaf {
                cid,
                size,
                start,
                end,
            }) => {
                if recent.len() >= LEAF_WINDOW * 2 && !recent.contains_key(&cid) {
                    recent.clear();
                }
                let getter = &getter;
                let leaf = recent
                    .entry(cid)
                    .or_insert_with(|| BlockGetter::get(getter, cid).boxed().shared())
                    .clone();
                ahead.push_back(
                    async move {
                        let data = leaf.await?;
                        reader::check_leaf(&cid, &data, size).map_err(resolve::read_error)?;
                        Ok(data.slice(start as usize..end as usize))
                    }
                    .boxed(),
                );
            }
            None => break,
        }
    }
    while let Some(b) = ahead.next().await {
        sink.send(b?).await?;
    }
    Ok(())
}
