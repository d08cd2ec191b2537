//! GatewayFetcher against local axum "gateways" that serve blocks and CARs from maps and
//! misbehave on demand.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use cid::{Cid, Version};
use ipfs_mount_fetch::{
    DagScope, FetchError, Fetcher, GatewayConfig, GatewayFetcher, SinkControl, VerifiedBlock,
};
use ipfs_mount_ipld::car::{encode_header_v1, encode_section};
use ipfs_mount_ipld::cids::{compute, VerifyError};

const RAW: u64 = 0x55;
const DAG_PB: u64 = 0x70;
const SHA2_256: u64 = 0x12;

fn raw_block(data: &[u8]) -> (Cid, Bytes) {
    (
        compute(Version::V1, RAW, SHA2_256, data).unwrap(),
        Bytes::copy_from_slice(data),
    )
}

#[derive(Clone, Debug, PartialEq)]
enum Mode {
    Normal,
    /// 404 for everything.
    NotFound,
    /// 500 for the next `n` requests, then normal.
    Fail500(u32),
    /// Wait this long before sending the response headers.
    SlowHeaders(Duration),
    /// Raw blocks come back with a flipped first byte.
    WrongBytes,
    /// Raw blocks are streamed (no Content-Length).
    StreamRaw,
    /// CAR: after `k` sections, half a section, then a clean end of body.
    CarTruncate(usize),
    /// CAR: after `k` sections, half a section, then the connection is dropped.
    CarDrop(usize),
    /// CAR: after `k` sections, nothing more (but the connection stays open).
    CarStall(usize),
    /// 302 to this absolute URL.
    Redirect(String),
}

#[derive(Default)]
struct Srv {
    blocks: Mutex<HashMap<Cid, Bytes>>,
    /// Explicit CAR bodies: root → sections in order.
    cars: Mutex<HashMap<Cid, Vec<(Cid, Bytes)>>>,
    mode: Mutex<Option<Mode>>,
    /// Every request waits this long (after headers are checked) — for the concurrency test.
    hold: Mutex<Duration>,
    requests: AtomicU32,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    bad_requests: AtomicU32,
    seen: Mutex<Vec<String>>,
}

impl Srv {
    fn mode(&self) -> Mode {
        self.mode.lock().unwrap().clone().unwrap_or(Mode::Normal)
    }
    fn set_mode(&self, m: Mode) {
        *self.mode.lock().unwrap() = Some(m);
    }
    fn put(&self, (cid, data): (Cid, Bytes)) {
        self.blocks.lock().unwrap().insert(cid, data);
    }
    fn requests(&self) -> u32 {
        self.requests.load(Ordering::SeqCst)
    }
}

struct Gw {
    srv: Arc<Srv>,
    url: url::Url,
}

async fn spawn_gw() -> Gw {
    let srv = Arc::new(Srv::default());
    let app = Router::new()
        .route("/ipfs/{cid}", get(handle))
        .with_state(srv.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Gw {
        srv,
        url: format!("http://{addr}/").parse().unwrap(),
    }
}

struct InFlight<'a>(&'a Srv);
impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

fn car_body(root: &Cid, sections: &[(Cid, Bytes)]) -> Vec<Vec<u8>> {
    let mut parts = vec![encode_header_v1(&[*root])];
    parts.extend(sections.iter().map(|(c, d)| encode_section(c, d)));
    parts
}

async fn handle(
    State(s): State<Arc<Srv>>,
    Path(cid_str): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    s.requests.fetch_add(1, Ordering::SeqCst);
    let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    s.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let _guard = InFlight(&s);
    let query = query.unwrap_or_default();
    s.seen.lock().unwrap().push(format!("{cid_str}?{query}"));

    // The trustless gateway request shape.
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let params: Vec<&str> = query.split('&').collect();
    let is_raw = params.contains(&"format=raw");
    let is_car = params.contains(&"format=car");
    let ok = if is_raw {
        accept == "application/vnd.ipld.raw" && params.len() == 1
    } else if is_car {
        accept.starts_with("application/vnd.ipld.car")
            && accept.contains("version=1")
            && accept.contains("order=dfs")
            && accept.contains("dups=y")
            && params.iter().any(|p| p.starts_with("dag-scope="))
    } else {
        false
    };
    if !ok {
        s.bad_requests.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::BAD_REQUEST, "bad trustless request").into_response();
    }

    let hold = *s.hold.lock().unwrap();
    if !hold.is_zero() {
        tokio::time::sleep(hold).await;
    }
    let mode = s.mode();
    match &mode {
        Mode::NotFound => return StatusCode::NOT_FOUND.into_response(),
        Mode::Fail500(n) if *n > 0 => {
            s.set_mode(Mode::Fail500(n - 1));
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        Mode::SlowHeaders(d) => tokio::time::sleep(*d).await,
        Mode::Redirect(to) => {
            return (StatusCode::FOUND, [(header::LOCATION, to.clone())]).into_response()
        }
        _ => {}
    }
    let Ok(cid) = cid_str.parse::<Cid>() else {
        return StatusCode::BAD_REQUEST.into_response();
    };

    if is_raw {
        let Some(data) = s.blocks.lock().unwrap().get(&cid).cloned() else {
            return StatusCode::NOT_FOUND.into_response();
        };
        let data = if mode == Mode::WrongBytes {
            let mut v = data.to_vec();
            v[0] ^= 0xff;
            Bytes::from(v)
        } else {
            data
        };
        let body = if mode == Mode::StreamRaw {
            let chunks: Vec<Result<Bytes, std::io::Error>> = data
                .chunks(64 << 10)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            Body::from_stream(futures::stream::iter(chunks))
        } else {
            Body::from(data)
        };
        return ([(header::CONTENT_TYPE, "application/vnd.ipld.raw")], body).into_response();
    }

    // CAR
    let sections = match s.cars.lock().unwrap().get(&cid).cloned() {
        Some(list) => list,
        None => match s.blocks.lock().unwrap().get(&cid).cloned() {
            Some(d) => vec![(cid, d)],
            None => return StatusCode::NOT_FOUND.into_response(),
        },
    };
    let parts = car_body(&cid, &sections);
    let ct = [(
        header::CONTENT_TYPE,
        "application/vnd.ipld.car; version=1; order=dfs; dups=y",
    )];
    type Item = Result<Bytes, std::io::Error>;
    let cut = |k: usize| -> Vec<u8> {
        let mut b: Vec<u8> = parts[..=k].concat();
        let next = &parts[k + 1];
        b.extend_from_slice(&next[..next.len() / 2]);
        b
    };
    match mode {
        Mode::CarTruncate(k) => (ct, Body::from(cut(k))).into_response(),
        Mode::CarDrop(k) => {
            // Let the first part reach the client before the connection is torn down.
            let first: Item = Ok(Bytes::from(cut(k)));
            let stream = futures::StreamExt::chain(
                futures::stream::iter(vec![first]),
                futures::stream::once(async {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Err::<Bytes, _>(std::io::Error::other("drop the connection"))
                }),
            );
            (ct, Body::from_stream(stream)).into_response()
        }
        Mode::CarStall(k) => {
            let first: Item = Ok(Bytes::from(parts[..=k].concat()));
            let stream = futures::StreamExt::chain(
                futures::stream::iter(vec![first]),
                futures::stream::pending::<Item>(),
            );
            (ct, Body::from_stream(stream)).into_response()
        }
        _ => {
            // One chunk per section, to exercise the incremental decoder.
            let items: Vec<Item> = parts.into_iter().map(|p| Ok(Bytes::from(p))).collect();
            (ct, Body::from_stream(futures::stream::iter(items))).into_response()
        }
    }
}

fn cfg(gws: &[&Gw]) -> GatewayConfig {
    GatewayConfig {
        urls: gws.iter().map(|g| g.url.clone()).collect(),
        request_timeout: Duration::from_secs(5),
        backoff: Duration::from_millis(5),
        ..Default::default()
    }
}

fn fetcher(c: GatewayConfig) -> GatewayFetcher {
    GatewayFetcher::new(c).unwrap()
}

fn collect_sink(
    out: &mut Vec<(Cid, Bytes)>,
) -> impl FnMut(VerifiedBlock) -> SinkControl + Send + '_ {
    move |b| {
        out.push(b.into_parts());
        SinkControl::Continue
    }
}

#[tokio::test]
async fn raw_block_ok_with_trustless_headers() {
    let a = spawn_gw().await;
    let blk = raw_block(b"hello gateway");
    a.srv.put(blk.clone());
    let f = fetcher(cfg(&[&a]));
    assert_eq!(f.fetch_block(&blk.0).await.unwrap().data(), &blk.1);
    assert_eq!(a.srv.requests(), 1);
    assert_eq!(a.srv.bad_requests.load(Ordering::SeqCst), 0);
    assert_eq!(
        a.srv.seen.lock().unwrap()[0],
        format!("{}?format=raw", blk.0)
    );
}

#[tokio::test]
async fn cidv0_sent_as_is() {
    let a = spawn_gw().await;
    let data = Bytes::from_static(b"\x0a\x02\x08\x01");
    let cid = compute(Version::V0, DAG_PB, SHA2_256, &data).unwrap();
    a.srv.put((cid, data.clone()));
    let f = fetcher(cfg(&[&a]));
    assert_eq!(f.fetch_block(&cid).await.unwrap().data(), &data);
    assert!(a.srv.seen.lock().unwrap()[0].starts_with("Qm"));
}

#[tokio::test]
async fn base_url_with_path_prefix() {
    let a = spawn_gw().await;
    let blk = raw_block(b"prefixed");
    a.srv.put(blk.clone());
    // A base without a trailing slash and with an empty path still yields /ipfs/{cid}.
    let mut c = cfg(&[&a]);
    c.urls = vec![a.url.as_str().trim_end_matches('/').parse().unwrap()];
    assert_eq!(fetcher(c).fetch_block(&blk.0).await.unwrap().data(), &blk.1);
}

#[tokio::test]
async fn identity_cid_needs_no_request() {
    let a = spawn_gw().await;
    let cid = compute(Version::V1, RAW, 0x00, b"inline").unwrap();
    let f = fetcher(cfg(&[&a]));
    assert_eq!(&f.fetch_block(&cid).await.unwrap().data()[..], b"inline");
    assert_eq!(a.srv.requests(), 0);
}

#[tokio::test]
async fn not_found_on_first_gateway_uses_second() {
    let (a, b) = (spawn_gw().await, spawn_gw().await);
    let blk = raw_block(b"only on b");
    b.srv.put(blk.clone());
    let f = fetcher(cfg(&[&a, &b]));
    assert_eq!(f.fetch_block(&blk.0).await.unwrap().data(), &blk.1);
    assert_eq!(a.srv.requests(), 1, "404 is not retried");
    assert_eq!(b.srv.requests(), 1);
}

#[tokio::test]
async fn not_found_everywhere_is_not_found() {
    let (a, b) = (spawn_gw().await, spawn_gw().await);
    b.srv.set_mode(Mode::NotFound);
    let f = fetcher(cfg(&[&a, &b]));
    let cid = raw_block(b"nowhere").0;
    assert_eq!(f.fetch_block(&cid).await, Err(FetchError::NotFound));
    let mut got = Vec::new();
    let r = f
        .fetch_car(&cid, DagScope::All, &mut collect_sink(&mut got))
        .await;
    assert_eq!(r, Err(FetchError::NotFound));
}

#[tokio::test]
async fn server_error_then_success_is_retried() {
    let a = spawn_gw().await;
    let blk = raw_block(b"flaky");
    a.srv.put(blk.clone());
    a.srv.set_mode(Mode::Fail500(2));
    let f = fetcher(cfg(&[&a])); // retries = 2: three attempts
    assert_eq!(f.fetch_block(&blk.0).await.unwrap().data(), &blk.1);
    assert_eq!(a.srv.requests(), 3);
}

#[tokio::test]
async fn persistent_server_error_exhausts_retries_then_next_gateway() {
    let (a, b) = (spawn_gw().await, spawn_gw().await);
    let blk = raw_block(b"a is broken");
    a.srv.set_mode(Mode::Fail500(u32::MAX));
    let f = fetcher(cfg(&[&a, &b]));
    // Not on b either: the result names the server error, not NotFound.
    match f.fetch_block(&blk.0).await {
        Err(FetchError::Exhausted { tried: 2, last }) => assert_eq!(*last, FetchError::Status(500)),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(a.srv.requests(), 3);
    assert_eq!(b.srv.requests(), 1);

    // a is now deprioritized: the next request goes to b first.
    b.srv.put(blk.clone());
    assert_eq!(f.fetch_block(&blk.0).await.unwrap().data(), &blk.1);
    assert_eq!(a.srv.requests(), 3);
    assert_eq!(b.srv.requests(), 2);
}

#[tokio::test]
async fn slow_gateway_times_out_then_next() {
    let (a, b) = (spawn_gw().await, spawn_gw().await);
    let blk = raw_block(b"b is fast");
    a.srv.put(blk.clone());
    b.srv.put(blk.clone());
    a.srv.set_mode(Mode::SlowHeaders(Duration::from_secs(10)));
    let mut c = cfg(&[&a, &b]);
    c.request_timeout = Duration::from_millis(200);
    c.retries = 1;
    let f = fetcher(c);
    let t = Instant::now();
    assert_eq!(f.fetch_block(&blk.0).await.unwrap().data(), &blk.1);
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(
        a.srv.requests(),
        2,
        "a timeout is retried on the same gateway"
    );
    assert_eq!(b.srv.requests(), 1);
}

#[tokio::test]
async fn unreachable_gateway_then_next() {
    // A port with nobody listening.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let b = spawn_gw().await;
    let blk = raw_block(b"after a dead gateway");
    b.srv.put(blk.clone());
    let mut c = cfg(&[&b]);
    c.urls.insert(0, format!("http://{dead}/").parse().unwrap());
    let f = fetcher(c);
    assert_eq!(f.fetch_block(&blk.0).await.unwrap().data(), &blk.1);
}

#[tokio::test]
async fn wrong_bytes_count_as_failure_and_next_gateway_is_used() {
    let (a, b) = (spawn_gw().await, spawn_gw().await);
    let blk = raw_block(b"the real bytes");
    a.srv.put(blk.clone());
    b.srv.put(blk.clone());
    a.srv.set_mode(Mode::WrongBytes);
    let f = fetcher(cfg(&[&a, &b]));
    assert_eq!(f.fetch_block(&blk.0).await.unwrap().data(), &blk.1);
    assert_eq!(
        a.srv.requests(),
        1,
        "wrong bytes are not retried on the same gateway"
    );
    assert_eq!(b.srv.requests(), 1);

    // Only a liar left: an error naming bad bytes.
    let f = fetcher(cfg(&[&a]));
    match f.fetch_block(&blk.0).await {
        Err(FetchError::Exhausted { tried: 1, last }) => {
            assert!(matches!(*last, FetchError::BadBody(_)), "{last:?}")
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// The right bytes under a sha2-256 CID whose digest is cut to 20 bytes.
fn truncated_block(data: &[u8]) -> (Cid, Bytes) {
    let full = raw_block(data).0;
    let short = cid::multihash::Multihash::wrap(SHA2_256, &full.hash().digest()[..20]).unwrap();
    (Cid::new_v1(RAW, short), Bytes::copy_from_slice(data))
}

#[tokio::test]
async fn truncated_digest_is_refused_on_raw_and_car_paths() {
    let a = spawn_gw().await;
    let short = truncated_block(b"cut short");
    a.srv.put(short.clone());
    let f = fetcher(cfg(&[&a]));
    // The same error bitswap gives (crates/p2p/tests/exchange.rs), before any request.
    let why = VerifyError::BadDigestLength {
        code: SHA2_256,
        len: 20,
        expected: 32,
    };
    assert_eq!(
        f.fetch_block(&short.0).await,
        Err(FetchError::unverified(&short.0, why.clone()))
    );
    let mut got = Vec::new();
    assert_eq!(
        f.fetch_car(&short.0, DagScope::All, &mut collect_sink(&mut got))
            .await,
        Err(FetchError::unverified(&short.0, why.clone()))
    );
    assert_eq!(a.srv.requests(), 0);
    // Inside a CAR: the blocks before it are delivered, then the stream is an error naming it.
    let root = raw_block(b"a root");
    a.srv.cars.lock().unwrap().insert(
        root.0,
        vec![root.clone(), short.clone(), raw_block(b"after")],
    );
    match f
        .fetch_car(&root.0, DagScope::All, &mut collect_sink(&mut got))
        .await
    {
        Err(FetchError::Exhausted { last, .. }) => {
            assert_eq!(*last, FetchError::unverified(&short.0, why))
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(got, vec![root]);
}

#[tokio::test]
async fn unsupported_hash_is_refused_without_a_request() {
    let a = spawn_gw().await;
    let cid = Cid::new_v1(
        RAW,
        cid::multihash::Multihash::wrap(0x14, &[1; 64]).unwrap(),
    );
    a.srv
        .put((cid, Bytes::from_static(b"sha3? we cannot tell")));
    let f = fetcher(cfg(&[&a]));
    assert_eq!(
        f.fetch_block(&cid).await,
        Err(FetchError::unverified(
            &cid,
            VerifyError::UnsupportedHash(0x14)
        ))
    );
    assert_eq!(a.srv.requests(), 0);
}

#[tokio::test]
async fn wrong_bytes_in_a_car_end_the_stream_and_the_next_gateway_is_used() {
    let (a, b) = (spawn_gw().await, spawn_gw().await);
    let (root, sections) = messy_car(&a);
    b.srv.cars.lock().unwrap().insert(root, sections.clone());
    // On a, the third section carries wrong bytes for its CID.
    let mut bad = sections.clone();
    let mut v = bad[2].1.to_vec();
    v[0] ^= 0xff;
    bad[2].1 = Bytes::from(v);
    a.srv.cars.lock().unwrap().insert(root, bad);
    let mut got = Vec::new();
    let only_a = fetcher(cfg(&[&a]));
    match only_a
        .fetch_car(&root, DagScope::All, &mut collect_sink(&mut got))
        .await
    {
        Err(FetchError::Exhausted { last, .. }) => assert_eq!(
            *last,
            FetchError::unverified(&sections[2].0, VerifyError::Mismatch(sections[2].0))
        ),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(got, sections[..2].to_vec());
    got.clear();
    let f = fetcher(cfg(&[&a, &b]));
    let n = f
        .fetch_car(&root, DagScope::All, &mut collect_sink(&mut got))
        .await
        .unwrap();
    assert_eq!(n, sections.len() as u64);
    assert_eq!(got[2..], sections[..]);
}

#[tokio::test]
async fn block_over_the_limit_is_refused() {
    let a = spawn_gw().await;
    let big = vec![7u8; 5 << 20];
    let blk = raw_block(&big);
    a.srv.put(blk.clone());
    let f = fetcher(cfg(&[&a]));
    for mode in [Mode::Normal, Mode::StreamRaw] {
        a.srv.set_mode(mode.clone());
        match f.fetch_block(&blk.0).await {
            Err(FetchError::Exhausted { last, .. }) => {
                assert!(
                    matches!(*last, FetchError::BadBody(ref m) if m.contains("limit")),
                    "{mode:?}: {last:?}"
                )
            }
            other => panic!("{mode:?}: unexpected {other:?}"),
        }
    }
    // A 4 MiB block (the usual maximum) is fine, streamed or not.
    let ok = raw_block(&vec![9u8; 4 << 20]);
    a.srv.put(ok.clone());
    for mode in [Mode::Normal, Mode::StreamRaw] {
        a.srv.set_mode(mode);
        assert_eq!(f.fetch_block(&ok.0).await.unwrap().data().len(), 4 << 20);
    }
}

#[tokio::test]
async fn cross_host_redirect_is_not_followed() {
    let (a, b) = (spawn_gw().await, spawn_gw().await);
    let blk = raw_block(b"redirected");
    b.srv.put(blk.clone());
    // b is "another host" (another origin: different port).
    a.srv.set_mode(Mode::Redirect(format!(
        "{}ipfs/{}?format=raw",
        b.url, blk.0
    )));
    let f = fetcher(cfg(&[&a]));
    match f.fetch_block(&blk.0).await {
        Err(FetchError::Exhausted { last, .. }) => assert_eq!(*last, FetchError::Status(302)),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(b.srv.requests(), 0);
}

/// No redirect is followed, not even to the same origin: the gateway's 302 is its failure and
/// the next gateway is asked; the URL redirected to is never requested.
#[tokio::test]
async fn same_origin_redirect_is_not_followed() {
    let (a, b) = (spawn_gw().await, spawn_gw().await);
    let blk = raw_block(b"redirected within the origin");
    a.srv.put(blk.clone());
    b.srv.put(blk.clone());
    a.srv.set_mode(Mode::Redirect(format!(
        "{}ipfs/{}?format=raw&redirected=1",
        a.url, blk.0
    )));
    let f = fetcher(cfg(&[&a]));
    match f.fetch_block(&blk.0).await {
        Err(FetchError::Exhausted { last, .. }) => assert_eq!(*last, FetchError::Status(302)),
        other => panic!("unexpected {other:?}"),
    }
    let seen = a.srv.seen.lock().unwrap().clone();
    assert!(
        seen.iter().all(|u| !u.contains("redirected=1")),
        "the redirect was followed: {seen:?}"
    );
    // With a second gateway, the block comes from there.
    let f = fetcher(cfg(&[&a, &b]));
    assert_eq!(f.fetch_block(&blk.0).await.unwrap().data(), &blk.1);
    assert_eq!(b.srv.requests(), 1);
    assert!(a
        .srv
        .seen
        .lock()
        .unwrap()
        .iter()
        .all(|u| !u.contains("redirected=1")));
}

#[tokio::test]
async fn concurrency_limit_is_respected() {
    let a = spawn_gw().await;
    *a.srv.hold.lock().unwrap() = Duration::from_millis(50);
    let blocks: Vec<_> = (0..24u32)
        .map(|i| raw_block(format!("block {i}").as_bytes()))
        .collect();
    for b in &blocks {
        a.srv.put(b.clone());
    }
    let mut c = cfg(&[&a]);
    c.max_concurrency = 3;
    let f = Arc::new(fetcher(c));
    let tasks: Vec<_> = blocks
        .iter()
        .map(|(cid, data)| {
            let (f, cid, data) = (f.clone(), *cid, data.clone());
            tokio::spawn(
                async move { assert_eq!(f.fetch_block(&cid).await.unwrap().data(), &data) },
            )
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(a.srv.requests(), 24);
    assert_eq!(a.srv.max_in_flight.load(Ordering::SeqCst), 3);
}

/// A root and children; the CAR lists them shuffled, with duplicates and a stranger.
fn messy_car(g: &Gw) -> (Cid, Vec<(Cid, Bytes)>) {
    let kids: Vec<_> = (0..5u32)
        .map(|i| raw_block(format!("child {i}").as_bytes()))
        .collect();
    let root = raw_block(b"root (pretend it links the children)");
    let extra = raw_block(b"a block nobody asked for");
    let sections = vec![
        kids[3].clone(),
        root.clone(),
        kids[0].clone(),
        kids[3].clone(),
        extra.clone(),
        kids[4].clone(),
        kids[1].clone(),
        kids[2].clone(),
        root.clone(),
    ];
    g.srv.cars.lock().unwrap().insert(root.0, sections.clone());
    (root.0, sections)
}

#[tokio::test]
async fn car_any_order_with_duplicates_and_extras_all_delivered() {
    let a = spawn_gw().await;
    let (root, sections) = messy_car(&a);
    let f = fetcher(cfg(&[&a]));
    let mut got = Vec::new();
    let n = f
        .fetch_car(
            &root,
            DagScope::Entity { bytes: None },
            &mut collect_sink(&mut got),
        )
        .await
        .unwrap();
    assert_eq!(n, sections.len() as u64);
    assert_eq!(got, sections);
    assert_eq!(a.srv.bad_requests.load(Ordering::SeqCst), 0);
    assert_eq!(
        a.srv.seen.lock().unwrap()[0],
        format!("{root}?format=car&dag-scope=entity")
    );
}

#[tokio::test]
async fn car_scope_parameters() {
    let a = spawn_gw().await;
    let blk = raw_block(b"scoped root");
    a.srv.put(blk.clone());
    let f = fetcher(cfg(&[&a]));
    let scopes = [
        (DagScope::Block, "dag-scope=block"),
        (DagScope::All, "dag-scope=all"),
        (
            DagScope::Entity {
                bytes: Some((100, None)),
            },
            "dag-scope=entity&entity-bytes=100:*",
        ),
        (
            DagScope::Entity {
                bytes: Some((0, Some(4095))),
            },
            "dag-scope=entity&entity-bytes=0:4095",
        ),
    ];
    for (scope, q) in scopes {
        let mut got = Vec::new();
        assert_eq!(
            f.fetch_car(&blk.0, scope, &mut collect_sink(&mut got))
                .await
                .unwrap(),
            1
        );
        assert_eq!(got, vec![blk.clone()]);
        assert_eq!(
            a.srv.seen.lock().unwrap().last().unwrap(),
            &format!("{}?format=car&{q}", blk.0)
        );
    }
    assert_eq!(a.srv.bad_requests.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn truncated_car_is_an_error_after_delivering_earlier_blocks() {
    for mode in [Mode::CarTruncate(3), Mode::CarDrop(3)] {
        let a = spawn_gw().await;
        let (root, sections) = messy_car(&a);
        a.srv.set_mode(mode.clone());
        let f = fetcher(cfg(&[&a]));
        let mut got = Vec::new();
        let r = f
            .fetch_car(&root, DagScope::All, &mut collect_sink(&mut got))
            .await;
        assert!(
            matches!(r, Err(FetchError::Exhausted { tried: 1, .. })),
            "{mode:?}: {r:?}"
        );
        assert_eq!(got, sections[..3].to_vec(), "{mode:?}");
        assert_eq!(
            a.srv.requests(),
            1,
            "{mode:?}: a broken stream is not asked again"
        );
    }
}

#[tokio::test]
async fn truncated_car_falls_back_to_next_gateway() {
    let (a, b) = (spawn_gw().await, spawn_gw().await);
    let (root, sections) = messy_car(&a);
    b.srv.cars.lock().unwrap().insert(root, sections.clone());
    a.srv.set_mode(Mode::CarDrop(2));
    let f = fetcher(cfg(&[&a, &b]));
    let mut got = Vec::new();
    let n = f
        .fetch_car(&root, DagScope::All, &mut collect_sink(&mut got))
        .await
        .unwrap();
    assert_eq!(n, sections.len() as u64);
    assert_eq!(got.len(), 2 + sections.len());
    assert_eq!(got[2..], sections[..]);
}

#[tokio::test]
async fn stalled_car_stream_hits_idle_timeout() {
    let a = spawn_gw().await;
    let (root, sections) = messy_car(&a);
    a.srv.set_mode(Mode::CarStall(4));
    let mut c = cfg(&[&a]);
    c.request_timeout = Duration::from_millis(300);
    let f = fetcher(c);
    let mut got = Vec::new();
    let t = Instant::now();
    match f
        .fetch_car(&root, DagScope::All, &mut collect_sink(&mut got))
        .await
    {
        Err(FetchError::Exhausted { last, .. }) => assert_eq!(*last, FetchError::Timeout),
        other => panic!("unexpected {other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(3));
    assert_eq!(got, sections[..4].to_vec());
}

#[tokio::test]
async fn sink_stop_is_honoured() {
    let a = spawn_gw().await;
    let (root, sections) = messy_car(&a);
    let f = fetcher(cfg(&[&a]));
    let mut got = Vec::new();
    let mut sink = |b: VerifiedBlock| {
        got.push(b.into_parts());
        if got.len() == 2 {
            SinkControl::Stop
        } else {
            SinkControl::Continue
        }
    };
    assert_eq!(
        f.fetch_car(&root, DagScope::All, &mut sink).await.unwrap(),
        2
    );
    assert_eq!(got, sections[..2].to_vec());
    assert_eq!(a.srv.requests(), 1);
}

#[tokio::test]
async fn car_server_error_is_retried() {
    let a = spawn_gw().await;
    let (root, sections) = messy_car(&a);
    a.srv.set_mode(Mode::Fail500(1));
    let f = fetcher(cfg(&[&a]));
    let mut got = Vec::new();
    let n = f
        .fetch_car(&root, DagScope::All, &mut collect_sink(&mut got))
        .await
        .unwrap();
    assert_eq!(n, sections.len() as u64);
    assert_eq!(a.srv.requests(), 2);
}

#[test]
fn config_is_validated() {
    let bad =
        |u: &str| GatewayFetcher::new(GatewayConfig::new(vec![u.parse().unwrap()])).unwrap_err();
    assert!(matches!(
        bad("ftp://example.invalid/"),
        FetchError::Config(_)
    ));
    assert!(matches!(
        bad("http://127.0.0.1/?x=1"),
        FetchError::Config(_)
    ));
    assert!(matches!(
        GatewayFetcher::new(GatewayConfig::default()),
        Err(FetchError::Config(_))
    ));
    let f = GatewayFetcher::new(GatewayConfig::new(vec!["http://127.0.0.1:1/"
        .parse()
        .unwrap()]))
    .unwrap();
    assert!(f.name().contains("127.0.0.1:1"));
}
