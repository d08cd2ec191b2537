//! Bitswap as a [`Fetcher`] for the block service, including whole-DAG fetches.
//!
//! A gateway answers `?format=car&dag-scope=…` with one stream; over bitswap we walk the DAG
//! ourselves: decode each block as it arrives, want its children, keep a window of blocks in
//! flight, and hand blocks to the sink in depth-first order (file order for UnixFS files),
//! which is the order a streaming reader needs them.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use cid::Cid;
use futures::stream::FuturesOrdered;
use futures::StreamExt;
use ipfs_mount_fetch::{DagScope, FetchError, Fetcher, SinkControl};
use ipfs_mount_ipld::{dagpb, hamt, unixfs};

use super::Bitswap;

/// Blocks wanted at once by one DAG walk.
const WINDOW_BLOCKS: usize = 64;
/// Estimated bytes wanted at once by one DAG walk (bounds memory with big leaves).
const WINDOW_BYTES: u64 = 32 << 20;
/// Size assumed for a block whose size no parent told us.
const UNKNOWN_BLOCK_BYTES: u64 = 256 << 10;
const DAG_PB: u64 = 0x70;

pub struct BitswapFetcher {
    bitswap: Arc<Bitswap>,
}

impl BitswapFetcher {
    pub fn new(bitswap: Arc<Bitswap>) -> Self {
        BitswapFetcher { bitswap }
    }
}

/// One node to visit: its CID, the byte range of it we need (files, inclusive), and its
/// expected size.
#[derive(Clone)]
struct Visit {
    cid: Cid,
    range: Option<(u64, u64)>,
    estimate: u64,
}

#[async_trait]
impl Fetcher for BitswapFetcher {
    fn name(&self) -> &str {
        "bitswap"
    }

    fn verifies_blocks(&self) -> bool {
        true
    }

    async fn fetch_block(&self, cid: &Cid) -> Result<Bytes, FetchError> {
        self.bitswap.get(cid).await
    }

    async fn fetch_car(
        &self,
        root: &Cid,
        scope: DagScope,
        sink: &mut (dyn FnMut(Cid, Bytes) -> SinkControl + Send),
    ) -> Result<u64, FetchError> {
        let root_range = match scope {
            DagScope::Entity {
                bytes: Some((from, to)),
            } => Some((from, to.unwrap_or(u64::MAX))),
            _ => None,
        };
        // Pending visits keyed by their path of child indexes: lexicographic order of the
        // paths is depth-first pre-order.
        let mut pending: BTreeMap<Vec<u32>, Visit> = BTreeMap::new();
        pending.insert(
            Vec::new(),
            Visit {
                cid: *root,
                range: root_range,
                estimate: UNKNOWN_BLOCK_BYTES,
            },
        );
        let mut inflight = FuturesOrdered::new();
        let mut inflight_bytes = 0u64;
        let mut delivered = 0u64;
        loop {
            while inflight.len() < WINDOW_BLOCKS
                && (inflight_bytes < WINDOW_BYTES || inflight.is_empty())
            {
                let Some((path, visit)) = pending.pop_first() else { break };
                inflight_bytes += visit.estimate;
                let bitswap = self.bitswap.clone();
                inflight.push_back(async move {
                    // `has` is an index lookup; only a block we hold costs a disk read
                    // (off the async workers), so a cold walk makes no thread hops.
                    let local = if bitswap.source.has(&visit.cid) {
                        let source = bitswap.source.clone();
                        let cid = visit.cid;
                        tokio::task::spawn_blocking(move || source.get(&cid))
                            .await
                            .ok()
                            .flatten()
                    } else {
                        None
                    };
                    let result = match local {
                        Some(b) => Ok((b, true)),
                        None => bitswap.get(&visit.cid).await.map(|b| (b, false)),
                    };
                    (path, visit, result)
                });
            }
            let Some((path, visit, result)) = inflight.next().await else {
                return Ok(delivered);
            };
            inflight_bytes = inflight_bytes.saturating_sub(visit.estimate);
            let (data, was_local) = result?;
            if !was_local {
                delivered += 1;
                if sink(visit.cid, data.clone()) == SinkControl::Stop {
                    return Ok(delivered);
                }
            }
            if scope == DagScope::Block {
                continue;
            }
            for (i, child) in children(&visit, &data, scope).into_iter().enumerate() {
                let mut p = path.clone();
                p.push(i as u32);
                pending.insert(p, child);
            }
        }
    }
}

/// The children of a visited node that the scope needs.
fn children(visit: &Visit, data: &Bytes, scope: DagScope) -> Vec<Visit> {
    let cid = &visit.cid;
    if cid.codec() != DAG_PB {
        return Vec::new(); // raw leaves and documents have no children we follow
    }
    if scope == DagScope::All {
        return match dagpb::decode_shared(data) {
            Ok(node) => node
                .links
                .into_iter()
                .map(|l| Visit {
                    cid: l.cid,
                    range: None,
                    estimate: UNKNOWN_BLOCK_BYTES,
                })
                .collect(),
            Err(e) => {
                tracing::debug!(%cid, "not following links of an undecodable block: {e}");
                Vec::new()
            }
        };
    }
    let node = match unixfs::decode_node_shared(cid, data) {
        Ok(n) => n,
        Err(e) => {
            tracing::debug!(%cid, "not following links of a block that is not UnixFS: {e}");
            return Vec::new();
        }
    };
    match node {
        unixfs::Node::File(f) => {
            let (from, to) = visit.range.unwrap_or((0, u64::MAX));
            let mut offset = f.inline.len() as u64;
            let mut out = Vec::new();
            for (child, size) in f.children {
                let start = offset;
                let end = offset + size; // exclusive
                offset = end;
                if size == 0 || end <= from || start > to {
                    continue;
                }
                let sub_from = from.saturating_sub(start);
                let sub_to = to.min(end - 1) - start;
                out.push(Visit {
                    cid: child,
                    range: Some((sub_from, sub_to)),
                    estimate: size.min(4 << 20),
                });
            }
            out
        }
        // The entity of a sharded directory is all its shard nodes (not the entries).
        unixfs::Node::HamtShard(h) => h
            .links
            .into_iter()
            .filter_map(|l| match l {
                hamt::HamtLink::Shard { cid, .. } => Some(Visit {
                    cid,
                    range: None,
                    estimate: UNKNOWN_BLOCK_BYTES,
                }),
                hamt::HamtLink::Entry { .. } => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}
