//! HTTP trustless gateway client (raw blocks and CAR streams).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::BytesMut;
use cid::Cid;
use futures::StreamExt;
use rand::Rng;
use reqwest::header::{HeaderValue, ACCEPT};
use reqwest::StatusCode;
use tokio::sync::Semaphore;
use tracing::{debug, warn};
use url::Url;

use crate::ipld::{CarDecoder, VerifiedBlock};
use crate::{identity_block, DagScope, FetchError, Fetcher, GatewayConfig, SinkControl};

const RAW_ACCEPT: &str = "application/vnd.ipld.raw";
const CAR_ACCEPT: &str = "application/vnd.ipld.car; version=1; order=dfs; dups=y";
/// First penalty after a failure; doubles with consecutive failures up to `MAX_PENALTY`.
const BASE_PENALTY: Duration = Duration::from_millis(500);
const MAX_PENALTY: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

struct Gateway {
    base: Url,
    /// Consecutive failures (transient errors, wrong bytes); reset by a success.
    fails: AtomicU32,
    /// Deprioritized until this many ms after `Inner::epoch`.
    penalized_until_ms: AtomicU64,
    /// Bytes of verified blocks this gateway gave us (raw requests and CAR streams).
    received: AtomicU64,
}

struct Inner {
    client: reqwest::Client,
    gateways: Vec<Gateway>,
    permits: Semaphore,
    cfg: GatewayConfig,
    epoch: Instant,
    name: String,
}

/// Fetches from one or more HTTP trustless gateways.
///
/// Gateways are tried in configured order, healthy ones first: a gateway that failed recently is
/// moved behind the others for a short, growing time. On a gateway, transient failures
/// (timeouts, connection errors, 429, 5xx) are retried with exponential backoff and jitter up to
/// `retries` times; 404/410 moves on to the next gateway at once. All requests share one
/// concurrency limit.
#[derive(Clone)]
pub struct GatewayFetcher {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for GatewayFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayFetcher")
            .field("urls", &self.inner.cfg.urls)
            .finish()
    }
}

/// Outcome of one attempt, decided by the caller loop.
enum Next {
    /// Retry on the same gateway after a pause (if retries are left).
    Retry,
    /// Give up on this gateway and try the next one.
    NextGateway,
}

fn classify(e: &FetchError) -> Next {
    if e.is_transient() {
        Next::Retry
    } else {
        Next::NextGateway
    }
}

fn map_reqwest(e: reqwest::Error) -> FetchError {
    if e.is_timeout() {
        return FetchError::Timeout;
    }
    // Include the source chain: reqwest's top-level message is terse.
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    if e.is_connect() {
        FetchError::Transport(format!("connect: {msg}"))
    } else {
        FetchError::Transport(msg)
    }
}

fn status_error(status: StatusCode) -> FetchError {
    match status {
        StatusCode::NOT_FOUND | StatusCode::GONE => FetchError::NotFound,
        s => FetchError::Status(s.as_u16()),
    }
}

/// The error to report when every gateway failed: NotFound only if all said not found.
fn rank(e: &FetchError) -> u8 {
    match e {
        FetchError::NotFound => 0,
        FetchError::Timeout | FetchError::Transport(_) => 1,
        FetchError::Status(_) => 2,
        _ => 3,
    }
}

impl GatewayFetcher {
    pub fn new(cfg: GatewayConfig) -> Result<Self, FetchError> {
        if cfg.urls.is_empty() {
            return Err(FetchError::Config("no gateway URL configured".into()));
        }
        if cfg.max_concurrency == 0 {
            return Err(FetchError::Config(
                "max_concurrency must be at least 1".into(),
            ));
        }
        let mut gateways = Vec::with_capacity(cfg.urls.len());
        for u in &cfg.urls {
            if u.scheme() != "http" && u.scheme() != "https" {
                return Err(FetchError::Config(format!(
                    "gateway URL {u}: scheme must be http or https"
                )));
            }
            if u.host_str().is_none() || u.cannot_be_a_base() {
                return Err(FetchError::Config(format!("gateway URL {u}: no host")));
            }
            if u.query().is_some() || u.fragment().is_some() {
                return Err(FetchError::Config(format!(
                    "gateway URL {u}: must not have a query or fragment"
                )));
            }
            gateways.push(Gateway {
                base: u.clone(),
                fails: AtomicU32::new(0),
                penalized_until_ms: AtomicU64::new(0),
                received: AtomicU64::new(0),
            });
        }

        // reqwest panics when building a client without a rustls crypto provider; the binary
        // installs ring at start-up, do the same here if nobody did (tests, other embedders).
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }

        // Only ever contact the configured URLs: no system proxies, no redirects (a 3xx is that
        // gateway's failure, and the next one is asked; trustless responses never redirect).
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .referer(false)
            .connect_timeout(cfg.connect_timeout)
            .tcp_nodelay(true)
            .pool_max_idle_per_host(cfg.max_concurrency.max(32))
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("ipfs-mount/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| FetchError::Config(format!("HTTP client: {e}")))?;

        let name = format!(
            "gateway[{}]",
            cfg.urls
                .iter()
                .map(|u| u.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(GatewayFetcher {
            inner: Arc::new(Inner {
                client,
                gateways,
                permits: Semaphore::new(cfg.max_concurrency),
                cfg,
                epoch: Instant::now(),
                name,
            }),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &GatewayConfig {
        &self.inner.cfg
    }
}

impl Inner {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Gateway indices in the order to try: configured order, penalized ones last.
    fn order(&self) -> Vec<usize> {
        let now = self.now_ms();
        let mut idx: Vec<usize> = (0..self.gateways.len()).collect();
        idx.sort_by_key(|&i| self.gateways[i].penalized_until_ms.load(Ordering::Relaxed) > now);
        idx
    }

    fn record_success(&self, gw: &Gateway) {
        if gw.fails.load(Ordering::Relaxed) != 0 {
            gw.fails.store(0, Ordering::Relaxed);
            gw.penalized_until_ms.store(0, Ordering::Relaxed);
        }
    }

    fn record_failure(&self, gw: &Gateway) {
        let fails = gw.fails.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        let penalty = BASE_PENALTY
            .saturating_mul(1u32 << (fails - 1).min(16))
            .min(MAX_PENALTY);
        gw.penalized_until_ms.store(
            self.now_ms() + penalty.as_millis() as u64,
            Ordering::Relaxed,
        );
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let d = self
            .cfg
            .backoff
            .saturating_mul(1u32 << attempt.min(16))
            .min(MAX_BACKOFF);
        // Jitter: uniformly in [d/2, d].
        let half = d / 2;
        half + half.mul_f64(rand::rng().random::<f64>())
    }

    fn url(&self, gw: &Gateway, cid: &Cid, query: &str) -> Url {
        let mut u = gw.base.clone();
        if let Ok(mut segs) = u.path_segments_mut() {
            segs.pop_if_empty().push("ipfs").push(&cid.to_string());
        }
        u.set_query(Some(query));
        u
    }

    async fn send(&self, url: Url, accept: &'static str) -> Result<reqwest::Response, FetchError> {
        let req = self
            .client
            .get(url)
            .header(ACCEPT, HeaderValue::from_static(accept))
            .send();
        match tokio::time::timeout(self.cfg.request_timeout, req).await {
            Err(_) => Err(FetchError::Timeout),
            Ok(Err(e)) => Err(map_reqwest(e)),
            Ok(Ok(resp)) => Ok(resp),
        }
    }

    /// One raw-block request to one gateway; verifies the bytes.
    async fn block_attempt(&self, gw: &Gateway, cid: &Cid) -> Result<VerifiedBlock, FetchError> {
        let url = self.url(gw, cid, "format=raw");
        let started = Instant::now();
        let mut resp = self.send(url.clone(), RAW_ACCEPT).await?;
        let status = resp.status();
        if !status.is_success() {
            debug!(%url, status = status.as_u16(), ms = started.elapsed().as_millis() as u64, "gateway block request");
            return Err(status_error(status));
        }
        let max = self.cfg.max_block_bytes;
        if resp.content_length().is_some_and(|n| n > max as u64) {
            return Err(FetchError::BadBody(format!(
                "block of {} bytes exceeds the limit of {max}",
                resp.content_length().unwrap_or_default()
            )));
        }
        let mut buf =
            BytesMut::with_capacity(resp.content_length().unwrap_or(0).min(max as u64) as usize);
        loop {
            let chunk = match tokio::time::timeout(self.cfg.request_timeout, resp.chunk()).await {
                Err(_) => return Err(FetchError::Timeout),
                Ok(Err(e)) => return Err(map_reqwest(e)),
                Ok(Ok(None)) => break,
                Ok(Ok(Some(c))) => c,
            };
            if buf.len() + chunk.len() > max {
                return Err(FetchError::BadBody(format!(
                    "block exceeds the limit of {max} bytes"
                )));
            }
            buf.extend_from_slice(&chunk);
        }
        let data = buf.freeze();
        debug!(%url, status = status.as_u16(), bytes = data.len(), ms = started.elapsed().as_millis() as u64, "gateway block request");
        let block = VerifiedBlock::check(*cid, data).map_err(|e| FetchError::unverified(cid, e))?;
        gw.received
            .fetch_add(block.data().len() as u64, Ordering::Relaxed);
        Ok(block)
    }

    /// One CAR request to one gateway; `delivered` counts blocks passed to the sink.
    async fn car_attempt(
        &self,
        gw: &Gateway,
        root: &Cid,
        scope: DagScope,
        sink: &mut (dyn FnMut(VerifiedBlock) -> SinkControl + Send),
        delivered: &mut u64,
    ) -> Result<u64, FetchError> {
        let url = self.url(gw, root, &format!("format=car&{}", scope.query()));
        let started = Instant::now();
        let resp = self.send(url.clone(), CAR_ACCEPT).await?;
        let status = resp.status();
        if !status.is_success() {
            debug!(%url, status = status.as_u16(), ms = started.elapsed().as_millis() as u64, "gateway CAR request");
            return Err(status_error(status));
        }
        let mut stream = resp.bytes_stream();
        let mut decoder = CarDecoder::new();
        let mut bytes: u64 = 0;
        let mut count: u64 = 0;
        let done = |count: u64, bytes: u64, how: &str| {
            debug!(%url, status = status.as_u16(), bytes, blocks = count, ms = started.elapsed().as_millis() as u64, end = how, "gateway CAR request");
        };
        loop {
            let chunk = match tokio::time::timeout(self.cfg.request_timeout, stream.next()).await {
                Err(_) => {
                    done(count, bytes, "idle timeout");
                    return Err(FetchError::Timeout);
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    done(count, bytes, "transport error");
                    return Err(map_reqwest(e));
                }
                Ok(Some(Ok(c))) => c,
            };
            bytes += chunk.len() as u64;
            decoder.push(&chunk);
            loop {
                let (cid, data) = match decoder.next_block() {
                    Ok(Some(b)) => b,
                    Ok(None) => break,
                    Err(e) => {
                        done(count, bytes, "bad CAR");
                        return Err(FetchError::BadBody(format!("CAR: {e}")));
                    }
                };
                let block = match VerifiedBlock::check(cid, data) {
                    Ok(b) => b,
                    Err(e) => {
                        done(count, bytes, "block failed verification");
                        return Err(FetchError::unverified(&cid, e));
                    }
                };
                count += 1;
                *delivered += 1;
                gw.received
                    .fetch_add(block.data().len() as u64, Ordering::Relaxed);
                if sink(block) == SinkControl::Stop {
                    // Dropping the stream closes the connection.
                    done(count, bytes, "stopped by caller");
                    return Ok(count);
                }
            }
        }
        if let Err(e) = decoder.finish() {
            done(count, bytes, "truncated");
            return Err(FetchError::BadBody(format!("CAR stream ended early: {e}")));
        }
        done(count, bytes, "complete");
        Ok(count)
    }
}

#[async_trait]
impl Fetcher for GatewayFetcher {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn received(&self) -> Vec<(String, u64)> {
        self.inner
            .gateways
            .iter()
            .map(|g| (g.base.to_string(), g.received.load(Ordering::Relaxed)))
            .collect()
    }

    async fn fetch_block(&self, cid: &Cid) -> Result<VerifiedBlock, FetchError> {
        if let Some(block) = identity_block(cid) {
            return Ok(block);
        }
        // No gateway could give bytes we can verify: do not ask.
        VerifiedBlock::checkable(cid).map_err(|e| FetchError::unverified(cid, e))?;
        let inner = &*self.inner;
        let mut last: Option<FetchError> = None;
        let mut tried = 0;
        for gi in inner.order() {
            let gw = &inner.gateways[gi];
            tried += 1;
            let mut attempt = 0;
            loop {
                let res = {
                    let _permit = inner
                        .permits
                        .acquire()
                        .await
                        .expect("semaphore never closed");
                    inner.block_attempt(gw, cid).await
                };
                let err = match res {
                    Ok(block) => {
                        inner.record_success(gw);
                        return Ok(block);
                    }
                    Err(e) => e,
                };
                let next = classify(&err);
                if err != FetchError::NotFound {
                    inner.record_failure(gw);
                    warn!(%cid, gateway = %gw.base, attempt, cause = %err, "block fetch failed");
                }
                if last.as_ref().is_none_or(|l| rank(&err) >= rank(l)) {
                    last = Some(err);
                }
                match next {
                    Next::Retry if attempt < inner.cfg.retries => {
                        tokio::time::sleep(inner.backoff(attempt)).await;
                        attempt += 1;
                    }
                    _ => break,
                }
            }
        }
        match last {
            Some(FetchError::NotFound) | None => Err(FetchError::NotFound),
            Some(e) => Err(FetchError::Exhausted {
                tried,
                last: Box::new(e),
            }),
        }
    }

    async fn fetch_car(
        &self,
        root: &Cid,
        scope: DagScope,
        sink: &mut (dyn FnMut(VerifiedBlock) -> SinkControl + Send),
    ) -> Result<u64, FetchError> {
        VerifiedBlock::checkable(root).map_err(|e| FetchError::unverified(root, e))?;
        let inner = &*self.inner;
        let mut last: Option<FetchError> = None;
        let mut tried = 0;
        for gi in inner.order() {
            let gw = &inner.gateways[gi];
            tried += 1;
            let mut attempt = 0;
            loop {
                let mut delivered = 0;
                let res = {
                    let _permit = inner
                        .permits
                        .acquire()
                        .await
                        .expect("semaphore never closed");
                    inner
                        .car_attempt(gw, root, scope, sink, &mut delivered)
                        .await
                };
                let err = match res {
                    Ok(n) => {
                        inner.record_success(gw);
                        return Ok(n);
                    }
                    Err(e) => e,
                };
                // A stream that broke after blocks arrived most likely hit a block the gateway
                // lacks (the spec lets it end the stream there): do not ask it again.
                let next = if delivered > 0 {
                    Next::NextGateway
                } else {
                    classify(&err)
                };
                if err != FetchError::NotFound {
                    inner.record_failure(gw);
                    warn!(%root, gateway = %gw.base, attempt, delivered, cause = %err, "CAR fetch failed");
                }
                if last.as_ref().is_none_or(|l| rank(&err) >= rank(l)) {
                    last = Some(err);
                }
                match next {
                    Next::Retry if attempt < inner.cfg.retries => {
                        tokio::time::sleep(inner.backoff(attempt)).await;
                        attempt += 1;
                    }
                    _ => break,
                }
            }
        }
        match last {
            Some(FetchError::NotFound) | None => Err(FetchError::NotFound),
            Some(e) => Err(FetchError::Exhausted {
                tried,
                last: Box::new(e),
            }),
        }
    }
}
