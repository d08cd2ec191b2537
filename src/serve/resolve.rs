//! Blocks for one request (local only, or through the block service), and what the gateway
//! reads through the ipld reader's planners: content paths resolved name by name
//! ([`PathWalk`], keeping every block crossed for a CAR), and directory listings
//! ([`Listing`]). The planners hold the checks (depth, HAMT shape, safe names, each shard
//! once); this module only turns their answers into HTTP statuses.

use std::future::Future;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cid::Cid;
use hyper::StatusCode;
use ipfs_mount_ipld::codec;
use ipfs_mount_ipld::reader::listing::{Listed, Listing};
use ipfs_mount_ipld::reader::path::{self, PathWalk};
use ipfs_mount_ipld::reader::{self, BlockGetter, DriveError, Limits, Planner, ReadError, Step};
use ipfs_mount_ipld::unixfs::{self, Node, UnixFsError};

use super::HttpError;
use crate::blocks::{BlockError, BlockService};

/// Longest wait for one block fetched through the block service.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);
/// Status of a block that hashes right but is not the node its place in the DAG needs: the
/// path gateway spec's 404 for a path that cannot be traversed.
const MALFORMED: StatusCode = StatusCode::NOT_FOUND;

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

/// Cancels a spawned fetch when the request that wanted it is gone.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Ctx {
    /// The verified bytes of a block, or the HTTP error that says why not. A fetch runs as
    /// a task of its own, so the blocks a walk asks for ahead arrive while it writes.
    pub async fn get(&self, cid: &Cid) -> Result<Bytes, HttpError> {
        let local = self.blocks.get_local(cid).map_err(block_error)?;
        if let Some(b) = local {
            return Ok(b);
        }
        if !self.fetch {
            return Err(HttpError::new(
                self.missing,
                format!("block {cid} is not in the local store"),
            ));
        }
        let blocks = self.blocks.clone();
        let cid = *cid;
        let mut task = AbortOnDrop(tokio::spawn(async move {
            tokio::time::timeout(FETCH_TIMEOUT, blocks.get_owned(cid)).await
        }));
        match (&mut task.0).await {
            Ok(Ok(Ok(b))) => Ok(b),
            Ok(Ok(Err(e))) => Err(block_error(e)),
            Ok(Err(_)) => Err(HttpError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!("block {cid}: no answer within {}s", FETCH_TIMEOUT.as_secs()),
            )),
            Err(e) => Err(HttpError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("block {cid}: fetch task failed: {e}"),
            )),
        }
    }
}

/// The request's blocks as the planners' block source.
impl BlockGetter for Ctx {
    type Error = HttpError;

    fn get_local(&self, cid: &Cid) -> Result<Option<Bytes>, HttpError> {
        self.blocks.get_local(cid).map_err(block_error)
    }

    async fn get(&self, cid: Cid) -> Result<Bytes, HttpError> {
        Ctx::get(self, &cid).await
    }
}

/// The request's blocks, with some already at hand (the block a walk starts from).
pub(super) struct AtHand<'a> {
    ctx: &'a Ctx,
    held: Vec<(Cid, Bytes)>,
}

impl<'a> AtHand<'a> {
    pub fn new(ctx: &'a Ctx, cid: Cid, block: Bytes) -> Self {
        AtHand {
            ctx,
            held: vec![(cid, block)],
        }
    }

    fn held(&self, cid: &Cid) -> Option<Bytes> {
        self.held
            .iter()
            .find(|(c, _)| c == cid)
            .map(|(_, b)| b.clone())
    }
}

impl BlockGetter for AtHand<'_> {
    type Error = HttpError;

    fn get_local(&self, cid: &Cid) -> Result<Option<Bytes>, HttpError> {
        match self.held(cid) {
            Some(b) => Ok(Some(b)),
            None => BlockGetter::get_local(self.ctx, cid),
        }
    }

    fn get(&self, cid: Cid) -> impl Future<Output = Result<Bytes, HttpError>> + Send {
        let held = self.held(&cid);
        async move {
            match held {
                Some(b) => Ok(b),
                None => self.ctx.get(&cid).await,
            }
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

fn unsupported_codec(cid: &Cid, c: u64) -> HttpError {
    HttpError::new(
        StatusCode::NOT_IMPLEMENTED,
        format!("block {cid} has codec 0x{c:x}, which this gateway cannot interpret"),
    )
}

/// The HTTP status of a planner's refusal: 501 for a codec we cannot read, else the 404 of a
/// DAG that cannot be traversed.
pub(super) fn read_error(e: ReadError) -> HttpError {
    match e {
        ReadError::Decode { cid, source } => match *source {
            UnixFsError::UnsupportedCodec(c) => unsupported_codec(&cid, c),
            e => HttpError::new(MALFORMED, format!("block {cid} is not valid UnixFS: {e}")),
        },
        e => HttpError::new(MALFORMED, e.to_string()),
    }
}

/// [`read_error`], or the block error a driven walk met.
pub(super) fn drive_error(e: DriveError<HttpError>) -> HttpError {
    match e {
        DriveError::Read(e) => read_error(e),
        DriveError::Get(e) => e,
        DriveError::Stalled => HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, "walk stalled"),
    }
}

/// Interprets a block as UnixFS (or raw, or a dag-cbor/dag-json document).
pub(super) fn decode(cid: &Cid, block: &Bytes) -> Result<Node, HttpError> {
    unixfs::decode_node_shared(cid, block).map_err(|e| match e {
        UnixFsError::UnsupportedCodec(c) => unsupported_codec(cid, c),
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
    let mut path_blocks = Vec::new();
    let mut roots = vec![root];
    // one walk per name, so that each element's CID is known (the roots of the response)
    for seg in segments {
        let found = step(ctx, cid, None, seg, &mut path_blocks).await?;
        cid = found_or_error(cid, seg, found)?;
        roots.push(cid);
    }
    let block = ctx.get(&cid).await?;
    Ok(Resolved {
        root,
        path_blocks,
        roots,
        cid,
        block,
        name: segments.last().cloned(),
    })
}

/// The entry `name` of the directory `dir` (plain or HAMT; its block at hand): `Ok(None)`
/// when there is none.
pub(super) async fn find(
    ctx: &Ctx,
    dir: &Cid,
    block: &Bytes,
    name: &[u8],
) -> Result<Option<Cid>, HttpError> {
    match step(ctx, *dir, Some(block.clone()), name, &mut Vec::new()).await? {
        path::Resolved::NotFound { .. } => Ok(None),
        other => found_or_error(*dir, name, other).map(Some),
    }
}

/// Resolves one name below `dir` through the path planner, pushing every block it reads
/// (the directory, then the HAMT shards on the name's path) onto `crossed`.
async fn step(
    ctx: &Ctx,
    dir: Cid,
    mut at_hand: Option<Bytes>,
    name: &[u8],
    crossed: &mut Vec<(Cid, Bytes)>,
) -> Result<path::Resolved, HttpError> {
    let mut walk = PathWalk::new(dir, vec![name.to_vec()], Limits::default());
    loop {
        match walk.next().map_err(read_error)? {
            Step::Need(cid) => {
                let block = match at_hand.take() {
                    Some(b) if cid == dir => b,
                    _ => ctx.get(&cid).await?,
                };
                crossed.push((cid, block.clone()));
                walk.provide(&cid, block).map_err(read_error)?;
            }
            Step::Item(r) => return Ok(r),
            Step::Wait | Step::Done => return Err(drive_error(DriveError::Stalled)),
        }
    }
}

/// The CID a name led to, or the HTTP error that says why it led nowhere.
fn found_or_error(dir: Cid, name: &[u8], r: path::Resolved) -> Result<Cid, HttpError> {
    let shown = String::from_utf8_lossy(name);
    match r {
        path::Resolved::Found { cid, .. } => Ok(cid),
        path::Resolved::NotFound { .. } => Err(HttpError::new(
            StatusCode::NOT_FOUND,
            format!("no link named {shown:?} under {dir}"),
        )),
        path::Resolved::NotDirectory { cid, .. }
            if matches!(
                cid.codec(),
                codec::DAG_CBOR | codec::DAG_JSON | codec::CBOR | codec::JSON
            ) =>
        {
            Err(HttpError::new(
                StatusCode::NOT_IMPLEMENTED,
                format!(
                    "{cid} is a dag-cbor/dag-json document: paths inside documents are not supported"
                ),
            ))
        }
        path::Resolved::NotDirectory { cid, .. } => Err(HttpError::new(
            StatusCode::NOT_FOUND,
            format!("{cid} is a file: no {shown:?} below it"),
        )),
        path::Resolved::Symlink { cid, .. } => Err(HttpError::new(
            StatusCode::NOT_IMPLEMENTED,
            format!("{cid} is a symlink: paths through symlinks are not followed"),
        )),
    }
}

/// Every entry of a directory (plain, or every shard of a HAMT, each once), sorted by name.
/// Entries whose names cannot be file names, and second entries of a name, are left out.
pub(super) async fn list(
    ctx: &Ctx,
    dir: &Cid,
    node: Node,
) -> Result<Vec<(Vec<u8>, Cid, Option<u64>)>, HttpError> {
    let mut planner = match node {
        Node::Directory(d) => Listing::from_directory(*dir, d, Limits::default()),
        Node::HamtShard(h) => Listing::from_hamt_root(*dir, h, Limits::default()),
        _ => return Ok(Vec::new()),
    };
    let mut out = Vec::new();
    reader::drive::run(&mut planner, ctx, |item| {
        match item {
            Listed::Entry(e) => out.push((e.name, e.cid, e.tsize)),
            Listed::Hidden { name, why } => tracing::debug!(
                %dir,
                name = %String::from_utf8_lossy(&name),
                "listing leaves out an entry: {why:?}"
            ),
        }
        ControlFlow::Continue(())
    })
    .await
    .map_err(drive_error)?;
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}
