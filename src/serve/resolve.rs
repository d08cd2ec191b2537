//! Blocks for one request (local only, or through the block service), and content path
//! resolution through UnixFS directories and HAMT shards, keeping every block it crossed.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cid::Cid;
use hyper::StatusCode;
use ipfs_mount_ipld::hamt::{self, Step};
use ipfs_mount_ipld::unixfs::{self, Node, UnixFsError};
use ipfs_mount_ipld::{codec, dagpb, docjson};
use ipld_core::ipld::Ipld;
use tokio::task::JoinSet;

use super::HttpError;
use crate::blocks::{BlockError, BlockService};

/// Longest wait for one block fetched through the block service.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);
/// Status of a block that hashes right but is not the node its place in the DAG needs: the
/// path gateway spec's 404 for a path that cannot be traversed.
const MALFORMED: StatusCode = StatusCode::NOT_FOUND;
/// Blocks fetched ahead of a DAG walk (only when fetching is allowed).
const PREFETCH_WINDOW: usize = 16;

/// Where one request gets its blocks.
#[derive(Clone)]
pub(super) struct Ctx {
    pub blocks: Arc<BlockService>,
    /// Missing blocks may be fetched through the block service (`allow_fetch` and no
    /// `Cache-Control: only-if-cached`).
    pub fetch: bool,
    /// Status for a block that is not local when fetching is off: 404, or 412 for
    /// `only-if-cached`.
    pub missing: StatusCode,
}

impl Ctx {
    /// The verified bytes of a block, or the HTTP error that says why not.
    pub async fn get(&self, cid: &Cid) -> Result<Bytes, HttpError> {
        if !self.fetch {
            return match self.blocks.get_local(cid) {
                Ok(Some(b)) => Ok(b),
                Ok(None) => Err(HttpError::new(
                    self.missing,
                    format!("block {cid} is not in the local store"),
                )),
                Err(e) => Err(block_error(e)),
            };
        }
        match tokio::time::timeout(FETCH_TIMEOUT, self.blocks.get(cid)).await {
            Ok(Ok(b)) => Ok(b),
            Ok(Err(e)) => Err(block_error(e)),
            Err(_) => Err(HttpError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!("block {cid}: no answer within {}s", FETCH_TIMEOUT.as_secs()),
            )),
        }
    }
}

/// The HTTP status of a block service failure.
fn block_error(e: BlockError) -> HttpError {
    let status = match &e {
        BlockError::NotFound { .. } | BlockError::Offline { .. } => StatusCode::NOT_FOUND,
        BlockError::Unavailable { .. } => StatusCode::GATEWAY_TIMEOUT,
        BlockError::Invalid { .. } => StatusCode::BAD_GATEWAY,
        BlockError::Unsupported { .. } => StatusCode::NOT_IMPLEMENTED,
        BlockError::Store { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    };
    HttpError::new(status, e.to_string())
}

/// Interprets a block as UnixFS (or raw, or a dag-cbor/dag-json document).
pub(super) fn decode(cid: &Cid, block: &Bytes) -> Result<Node, HttpError> {
    unixfs::decode_node_shared(cid, block).map_err(|e| match e {
        UnixFsError::UnsupportedCodec(c) => HttpError::new(
            StatusCode::NOT_IMPLEMENTED,
            format!("block {cid} has codec 0x{c:x}, which this gateway cannot interpret"),
        ),
        e => HttpError::new(MALFORMED, format!("block {cid} is not valid UnixFS: {e}")),
    })
}

/// A content path resolved to its last element.
pub(super) struct Resolved {
    /// The CID the path starts at.
    pub root: Cid,
    /// Every block crossed on the way, in order (root first; HAMT shards included), without
    /// the terminal block.
    pub path_blocks: Vec<(Cid, Bytes)>,
    /// One CID per logical path element: the root, then each segment's target.
    pub roots: Vec<Cid>,
    /// The terminal element.
    pub cid: Cid,
    pub block: Bytes,
    /// The last segment's name, if the path has segments.
    pub name: Option<Vec<u8>>,
}

/// Resolves `segments` below `root`, fetching each block as needed.
pub(super) async fn resolve(
    ctx: &Ctx,
    root: Cid,
    segments: &[Vec<u8>],
) -> Result<Resolved, HttpError> {
    let mut cid = root;
    let mut block = ctx.get(&root).await?;
    let mut path_blocks = Vec::new();
    let mut roots = vec![root];
    for seg in segments {
        let node = decode(&cid, &block)?;
        let shown = String::from_utf8_lossy(seg);
        let next = lookup(ctx, &cid, &block, &node, seg, &mut path_blocks).await?;
        let Some(next) = next else {
            return Err(HttpError::new(
                StatusCode::NOT_FOUND,
                format!("no link named {shown:?} under {cid}"),
            ));
        };
        cid = next;
        block = ctx.get(&cid).await?;
        roots.push(cid);
    }
    Ok(Resolved {
        root,
        path_blocks,
        roots,
        cid,
        block,
        name: segments.last().cloned(),
    })
}

/// One name in a directory (plain or HAMT). Pushes `dir` and any shard blocks crossed onto
/// `crossed`. `Ok(None)`: no such entry.
pub(super) async fn lookup(
    ctx: &Ctx,
    dir: &Cid,
    block: &Bytes,
    node: &Node,
    name: &[u8],
    crossed: &mut Vec<(Cid, Bytes)>,
) -> Result<Option<Cid>, HttpError> {
    let shown = String::from_utf8_lossy(name);
    match node {
        Node::Directory(d) => {
            crossed.push((*dir, block.clone()));
            Ok(d.entries.iter().find(|e| e.name == name).map(|e| e.cid))
        }
        Node::HamtShard(h) => {
            crossed.push((*dir, block.clone()));
            let mut shard = h.clone();
            let mut depth = 0u32;
            loop {
                let step = hamt::lookup_step(&shard, name, depth)
                    .map_err(|e| HttpError::new(MALFORMED, format!("HAMT under {dir}: {e}")))?;
                match step {
                    Step::Found { cid, .. } => return Ok(Some(cid)),
                    Step::NotFound => return Ok(None),
                    Step::Descend { cid } => {
                        let b = ctx.get(&cid).await?;
                        match decode(&cid, &b)? {
                            Node::HamtShard(child) => shard = child,
                            _ => {
                                return Err(HttpError::new(
                                    MALFORMED,
                                    format!("HAMT {dir}: child {cid} is not a shard"),
                                ))
                            }
                        }
                        crossed.push((cid, b));
                        depth += 1;
                    }
                }
            }
        }
        Node::File(_) => Err(HttpError::new(
            StatusCode::NOT_FOUND,
            format!("{dir} is a file: no {shown:?} below it"),
        )),
        Node::Symlink(_) => Err(HttpError::new(
            StatusCode::NOT_IMPLEMENTED,
            format!("{dir} is a symlink: paths through symlinks are not followed"),
        )),
        Node::Document(_) => Err(HttpError::new(
            StatusCode::NOT_IMPLEMENTED,
            format!(
                "{dir} is a dag-cbor/dag-json document: paths inside documents are not supported"
            ),
        )),
    }
}

/// Every entry of a directory (plain, or every shard of a HAMT), sorted by name.
pub(super) async fn list(
    ctx: &Ctx,
    dir: &Cid,
    node: &Node,
) -> Result<Vec<(Vec<u8>, Cid, Option<u64>)>, HttpError> {
    let mut out = Vec::new();
    match node {
        Node::Directory(d) => {
            for e in &d.entries {
                out.push((e.name.clone(), e.cid, e.tsize));
            }
        }
        Node::HamtShard(h) => {
            let mut stack = vec![h.clone()];
            let mut seen = HashSet::new();
            while let Some(shard) = stack.pop() {
                for (name, cid, tsize) in shard.entries() {
                    out.push((name.to_vec(), *cid, tsize));
                }
                for c in shard.shards() {
                    if !seen.insert(*c) {
                        continue;
                    }
                    let b = ctx.get(c).await?;
                    match decode(c, &b)? {
                        Node::HamtShard(child) => stack.push(child),
                        _ => {
                            return Err(HttpError::new(
                                MALFORMED,
                                format!("HAMT {dir}: child {c} is not a shard"),
                            ))
                        }
                    }
                }
            }
        }
        _ => {}
    }
    out.retain(|e| unixfs::is_safe_name(&e.0));
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The links of a block, in the order a DFS walk follows them: dag-pb links in link order,
/// dag-cbor/dag-json links in the order of the canonical encoding. Raw, cbor and json blocks
/// (and codecs we do not know) have none.
pub(super) fn links(cid: &Cid, block: &Bytes) -> Result<Vec<Cid>, HttpError> {
    let broken =
        |e: String| HttpError::new(MALFORMED, format!("block {cid} cannot be decoded: {e}"));
    match cid.codec() {
        codec::DAG_PB => Ok(dagpb::decode_shared(block)
            .map_err(|e| broken(e.to_string()))?
            .links
            .into_iter()
            .map(|l| l.cid)
            .collect()),
        codec::DAG_CBOR | codec::DAG_JSON => {
            let ipld = docjson::decode(cid.codec(), block).map_err(|e| broken(e.to_string()))?;
            let mut out = Vec::new();
            collect_links(&ipld, cid.codec() == codec::DAG_CBOR, &mut out);
            Ok(out)
        }
        _ => Ok(Vec::new()),
    }
}

fn collect_links(ipld: &Ipld, cbor_order: bool, out: &mut Vec<Cid>) {
    match ipld {
        Ipld::Link(c) => out.push(*c),
        Ipld::List(l) => l.iter().for_each(|i| collect_links(i, cbor_order, out)),
        Ipld::Map(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            if cbor_order {
                // dag-cbor's canonical map order: shorter keys first, then bytewise
                keys.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
            }
            for k in keys {
                collect_links(&m[k], cbor_order, out);
            }
        }
        _ => {}
    }
}

/// Fetches the next few blocks of a walk in the background, so that a walk over blocks that
/// are not local does not pay one round trip per block. Does nothing when fetching is off.
/// Dropping it cancels what is still under way.
pub(super) struct Prefetch {
    tasks: JoinSet<()>,
    asked: HashSet<Cid>,
}

impl Prefetch {
    pub fn new() -> Self {
        Prefetch {
            tasks: JoinSet::new(),
            asked: HashSet::new(),
        }
    }

    /// Starts fetches for the first blocks of `next` (the walk's upcoming order).
    pub fn ahead<'a>(&mut self, ctx: &Ctx, next: impl Iterator<Item = &'a Cid>) {
        if !ctx.fetch {
            return;
        }
        while self.tasks.try_join_next().is_some() {}
        for cid in next.take(PREFETCH_WINDOW) {
            if self.tasks.len() >= PREFETCH_WINDOW {
                break;
            }
            if !self.asked.insert(*cid) || ctx.blocks.has_local(cid) {
                continue;
            }
            let blocks = ctx.blocks.clone();
            let cid = *cid;
            self.tasks.spawn(async move {
                let _ = tokio::time::timeout(FETCH_TIMEOUT, blocks.get(&cid)).await;
            });
        }
    }
}
