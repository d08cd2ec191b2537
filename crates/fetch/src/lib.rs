//! Block sources for ipfs-mount.
//!
//! Nothing in ipfs-mount reaches the network except through a [`Fetcher`]. This crate provides:
//! - [`GatewayFetcher`]: HTTP trustless gateways (raw blocks and CAR streams), with retries,
//!   exponential backoff, a simple per-gateway health score and bounded concurrency;
//! - [`OfflineFetcher`]: never fetches (offline mode);
//! - `MockFetcher` (feature `mock`, and in this crate's tests): an in-memory fetcher with
//!   counters and injectable failures for the filesystem tests.
//!
//! Fetchers hand over [`VerifiedBlock`]s, which only hashing can make: each fetcher verifies
//! once, where the bytes enter, and the block service stores them without hashing again. A
//! gateway returning wrong bytes is thereby a failure of that gateway (the next one is tried).

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use cid::Cid;

mod gateway;
mod ipld;
#[cfg(any(test, feature = "mock"))]
pub mod mock;

pub use gateway::GatewayFetcher;
pub use ipld::VerifiedBlock;
#[cfg(any(test, feature = "mock"))]
pub use mock::MockFetcher;

/// Largest raw block accepted from a gateway: 4 MiB plus a little slack.
pub const DEFAULT_MAX_BLOCK_BYTES: usize = (4 << 20) + (16 << 10);

/// What a CAR sink wants after receiving a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkControl {
    /// Keep streaming.
    Continue,
    /// The caller has what it needs: close the stream and return `Ok`.
    Stop,
}

/// The `dag-scope` of a CAR request (trustless gateway spec, IPIP-402).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DagScope {
    /// Only the root block (after the blocks needed to verify the path).
    Block,
    /// The blocks needed to read the entity (a whole UnixFS file, or enumerate a directory);
    /// `bytes: Some((from, to))` sends `entity-bytes=from:to` (`to` inclusive, `None` = `*`).
    Entity { bytes: Option<(u64, Option<u64>)> },
    /// The whole DAG below the root.
    All,
}

impl DagScope {
    /// The query string parameters for this scope (without `format=car`).
    pub fn query(&self) -> String {
        match self {
            DagScope::Block => "dag-scope=block".to_string(),
            DagScope::All => "dag-scope=all".to_string(),
            DagScope::Entity { bytes: None } => "dag-scope=entity".to_string(),
            DagScope::Entity {
                bytes: Some((from, to)),
            } => {
                let to = match to {
                    Some(t) => t.to_string(),
                    None => "*".to_string(),
                };
                format!("dag-scope=entity&entity-bytes={from}:{to}")
            }
        }
    }
}

/// Why a fetch failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// Every source tried said the content does not exist there (404/410).
    #[error("not found")]
    NotFound,
    /// No response (or no further body bytes) within the configured time.
    #[error("timed out")]
    Timeout,
    /// An HTTP status that is neither success nor "not found".
    #[error("HTTP status {0}")]
    Status(u16),
    /// Connection, TLS or protocol failure.
    #[error("transport error: {0}")]
    Transport(String),
    /// The response body is unusable: too large, wrong bytes, broken or truncated CAR.
    #[error("bad response body: {0}")]
    BadBody(String),
    /// All sources failed; `last` is the most informative failure seen.
    #[error("all {tried} source(s) failed; last error: {last}")]
    Exhausted { tried: usize, last: Box<FetchError> },
    /// Network fetching is disabled.
    #[error("offline: network fetching is disabled")]
    Offline,
    /// The fetcher could not be built from its configuration.
    #[error("invalid fetcher configuration: {0}")]
    Config(String),
}

impl FetchError {
    /// Bytes (or a CID) that failed [`VerifiedBlock`]'s check, naming the CID.
    pub fn unverified(cid: &Cid, e: ipld::VerifyError) -> Self {
        FetchError::BadBody(format!("block {cid} failed verification: {e}"))
    }

    /// Worth retrying on the same source after a pause (timeouts, transport errors, 429, 5xx).
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Timeout | FetchError::Transport(_) => true,
            FetchError::Status(s) => *s == 429 || (500..600).contains(s),
            _ => false,
        }
    }
}

/// A source of blocks.
#[async_trait]
pub trait Fetcher: Send + Sync + 'static {
    /// A short name for logs.
    fn name(&self) -> &str;

    /// Bytes of verified blocks received so far from each source behind this fetcher (a
    /// gateway fetcher has one per URL), for statistics. Default: none counted.
    fn received(&self) -> Vec<(String, u64)> {
        Vec::new()
    }

    /// The block `cid` names (`cid()` of the result is `cid`); bytes that fail verification
    /// are an error.
    async fn fetch_block(&self, cid: &Cid) -> Result<VerifiedBlock, FetchError>;

    /// Many blocks in one request: a CAR of `root` with `scope`. Each block is passed to `sink`
    /// as soon as it is verified (any order; duplicates and extra blocks possible). A block
    /// that fails verification ends the stream with an error naming it.
    /// Returns `Ok(count)` only if the CAR stream ended cleanly, or the sink said
    /// [`SinkControl::Stop`]. A truncated or broken stream is an error even after HTTP 200;
    /// blocks already delivered stay valid.
    async fn fetch_car(
        &self,
        root: &Cid,
        scope: DagScope,
        sink: &mut (dyn FnMut(VerifiedBlock) -> SinkControl + Send),
    ) -> Result<u64, FetchError>;
}

/// Configuration of a [`GatewayFetcher`].
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Gateway base URLs (`http` or `https`), in order of preference. Requests go to
    /// `{base}/ipfs/{cid}`; a base may carry a path prefix.
    pub urls: Vec<url::Url>,
    /// Total number of requests in flight across all gateways.
    pub max_concurrency: usize,
    /// TCP (and TLS) connect timeout.
    pub connect_timeout: Duration,
    /// Time allowed until the response headers, and between two body chunks (idle timeout).
    pub request_timeout: Duration,
    /// Retries per gateway after a transient failure (so `retries + 1` attempts).
    pub retries: u32,
    /// First backoff pause; doubles on each retry, with jitter.
    pub backoff: Duration,
    /// Largest raw block accepted.
    pub max_block_bytes: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            urls: Vec::new(),
            max_concurrency: 16,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            retries: 2,
            backoff: Duration::from_millis(100),
            max_block_bytes: DEFAULT_MAX_BLOCK_BYTES,
        }
    }
}

impl GatewayConfig {
    /// Defaults with these gateway URLs.
    pub fn new(urls: Vec<url::Url>) -> Self {
        GatewayConfig {
            urls,
            ..Default::default()
        }
    }
}

/// A fetcher that never fetches (offline mode): always [`FetchError::Offline`].
#[derive(Debug, Clone, Copy, Default)]
pub struct OfflineFetcher;

#[async_trait]
impl Fetcher for OfflineFetcher {
    fn name(&self) -> &str {
        "offline"
    }

    async fn fetch_block(&self, _cid: &Cid) -> Result<VerifiedBlock, FetchError> {
        Err(FetchError::Offline)
    }

    async fn fetch_car(
        &self,
        _root: &Cid,
        _scope: DagScope,
        _sink: &mut (dyn FnMut(VerifiedBlock) -> SinkControl + Send),
    ) -> Result<u64, FetchError> {
        Err(FetchError::Offline)
    }
}

/// Identity CIDs (multihash code 0x00) carry their data inline: no network needed.
pub(crate) fn identity_block(cid: &Cid) -> Option<VerifiedBlock> {
    let data = ipld::identity_data(cid)?;
    VerifiedBlock::check(*cid, Bytes::copy_from_slice(data)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_query() {
        assert_eq!(DagScope::Block.query(), "dag-scope=block");
        assert_eq!(DagScope::All.query(), "dag-scope=all");
        assert_eq!(DagScope::Entity { bytes: None }.query(), "dag-scope=entity");
        assert_eq!(
            DagScope::Entity {
                bytes: Some((10, None))
            }
            .query(),
            "dag-scope=entity&entity-bytes=10:*"
        );
        assert_eq!(
            DagScope::Entity {
                bytes: Some((0, Some(1023)))
            }
            .query(),
            "dag-scope=entity&entity-bytes=0:1023"
        );
    }

    #[tokio::test]
    async fn offline_never_fetches() {
        let f = OfflineFetcher;
        let cid: Cid = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
            .parse()
            .unwrap();
        assert_eq!(f.fetch_block(&cid).await, Err(FetchError::Offline));
        let mut sink = |_b: VerifiedBlock| SinkControl::Continue;
        assert_eq!(
            f.fetch_car(&cid, DagScope::All, &mut sink).await,
            Err(FetchError::Offline)
        );
    }
}
