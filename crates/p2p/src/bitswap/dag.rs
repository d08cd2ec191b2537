//! Bitswap as a [`Fetcher`] for the block service, including whole-DAG fetches.
//!
//! A gateway answers `?format=car&dag-scope=…` with one stream; over bitswap we walk the DAG
//! ourselves with the ipld DAG-walk planner ([`ipfs_mount_ipld::reader::dag`]): it decodes
//! each block, names its children, keeps a window of blocks wanted, and hands blocks back in
//! depth-first order (file order for UnixFS files), which is the order a streaming reader
//! needs them; each distinct block is wanted once, however many links reach it.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use cid::Cid;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use ipfs_mount_fetch::{DagScope, FetchError, Fetcher, SinkControl, VerifiedBlock};
use ipfs_mount_ipld::reader::dag::{DagWalk, Scope};
use ipfs_mount_ipld::reader::{Limits, Planner, Step};

use super::Bitswap;

/// Blocks wanted at once by one DAG walk.
const WINDOW_BLOCKS: usize = 64;
/// Estimated bytes wanted at once by one DAG walk (bounds memory with big leaves).
const WINDOW_BYTES: u64 = 32 << 20;
/// Deepest block a walk follows (UnixFS trees are a few levels deep; dag-pb chains may be
/// longer).
const MAX_DAG_DEPTH: u32 = 1024;

/// A block the walk asked for: one we already held, or one fetched (and so verified).
enum Got {
    Held(Bytes),
    Fetched(VerifiedBlock),
}

pub struct BitswapFetcher {
    bitswap: Arc<Bitswap>,
}

impl BitswapFetcher {
    pub fn new(bitswap: Arc<Bitswap>) -> Self {
        BitswapFetcher { bitswap }
    }
}

#[async_trait]
impl Fetcher for BitswapFetcher {
    fn name(&self) -> &str {
        "bitswap"
    }

    fn received(&self) -> Vec<(String, u64)> {
        let bytes = self
            .bitswap
            .stats
            .bytes_received
            .load(std::sync::atomic::Ordering::Relaxed);
        vec![("bitswap".to_string(), bytes)]
    }

    async fn fetch_block(&self, cid: &Cid) -> Result<VerifiedBlock, FetchError> {
        self.bitswap.get(cid).await
    }

    async fn fetch_car(
        &self,
        root: &Cid,
        scope: DagScope,
        sink: &mut (dyn FnMut(VerifiedBlock) -> SinkControl + Send),
    ) -> Result<u64, FetchError> {
        let scope = match scope {
            DagScope::Block => Scope::Block,
            DagScope::All => Scope::All,
            DagScope::Entity { bytes } => Scope::Entity {
                range: bytes.map(|(from, to)| (from, to.unwrap_or(u64::MAX))),
            },
        };
        let limits = Limits::default()
            .with_max_depth(MAX_DAG_DEPTH)
            .with_window(WINDOW_BLOCKS, WINDOW_BYTES);
        // Lenient: a block that does not decode is delivered, its links are not followed
        // (the reader reports it). Each distinct block is wanted and delivered once.
        let mut walk = DagWalk::new(*root, scope, limits).lenient();
        let mut inflight = FuturesUnordered::new();
        // Blocks fetched and not yet yielded by the walk (blocks we already held are walked
        // through, not delivered again).
        let mut fetched: HashMap<Cid, VerifiedBlock> = HashMap::new();
        let mut delivered = 0u64;
        loop {
            match walk
                .next()
                .map_err(|e| FetchError::BadBody(e.to_string()))?
            {
                Step::Need(cid) => {
                    let bitswap = self.bitswap.clone();
                    inflight.push(async move {
                        // `has` is an index lookup; only a block we hold costs a disk read
                        // (off the async workers), so a cold walk makes no thread hops.
                        let held = if bitswap.source.has(&cid) {
                            let source = bitswap.source.clone();
                            tokio::task::spawn_blocking(move || source.get(&cid))
                                .await
                                .ok()
                                .flatten()
                        } else {
                            None
                        };
                        let result = match held {
                            Some(b) => Ok(Got::Held(b)),
                            None => bitswap.get(&cid).await.map(Got::Fetched),
                        };
                        (cid, result)
                    });
                }
                Step::Item(v) => {
                    if let Some(block) = fetched.remove(&v.cid) {
                        delivered += 1;
                        if sink(block) == SinkControl::Stop {
                            return Ok(delivered);
                        }
                    }
                }
                Step::Wait => {
                    let Some((cid, result)) = inflight.next().await else {
                        return Err(FetchError::BadBody(format!("DAG walk from {root} stalled")));
                    };
                    let data = match result? {
                        Got::Fetched(block) => {
                            let data = block.data().clone();
                            fetched.insert(cid, block);
                            data
                        }
                        Got::Held(data) => data,
                    };
                    walk.provide(&cid, data)
                        .map_err(|e| FetchError::BadBody(e.to_string()))?;
                }
                Step::Done => return Ok(delivered),
            }
        }
    }
}
