//! The local HTTP gateway (`--serve ADDR`): what the store holds, over HTTP, for other
//! `ipfs-mount` instances, Helia, browsers and kamu-style gateway clients.
//!
//! Trustless responses (specs: `http-gateways/trustless-gateway.md`):
//! - `GET|HEAD /ipfs/<cid>[/path]?format=raw` (or `Accept: application/vnd.ipld.raw`): the
//!   block, verifiable against its CID. With a path, the block the path ends at.
//! - `?format=car` (or `Accept: application/vnd.ipld.car`, `version=1`, `order=dfs|unk`,
//!   `dups=y|n`, also as `car-version`/`car-order`/`car-dups`): a CARv1 streamed depth-first.
//!   Header root: the path's first CID. Then every block the path crosses (HAMT shards
//!   included), then the `dag-scope` (`block`, `entity`, default `all`) of the element the
//!   path ends at; `entity-bytes=from:to` (`to` may be `*`, negatives count from the end)
//!   keeps only the file blocks holding that range. `dups=n` unless asked; identity CIDs are
//!   never written.
//! - `GET /ipns/<name>?format=ipns-record`: the signed record from [`NameSource::record`].
//!
//! Delegated routing (`routing/http-routing-v1.md`, in [`routing`]): `/routing/v1/ipns/{name}`,
//! `/routing/v1/providers/{cid}` and `/routing/v1/peers/{id}` for what this mount holds.
//!
//! Plain responses (`path-gateway.md`): UnixFS files with single `Range`s (206, 416), a
//! content type from the name's extension; directories redirect to the trailing-slash URL,
//! then serve `index.html` or a generated HTML listing; a symlink answers its target as
//! text (never followed); dag-cbor/dag-json/cbor/json blocks answer as they are, with their
//! codec's content type (and `format=dag-json`/`json` renders dag-cbor as dag-json).
//! `/ipns/<name>/path` resolves through [`NameSource::resolve`] and is cached 60 s.
//! Not supported (501): `format=tar`, other conversions, paths inside dag-cbor documents and
//! through symlinks, codecs other than dag-pb, raw, dag-cbor, dag-json, cbor and json.
//!
//! Status codes: 400 for a malformed CID, path, or parameter; 404 for a missing block when
//! fetching is off (and for names and paths that do not exist); 412 for a block that is not
//! local with `Cache-Control: only-if-cached`; 504 when a fetch through the block service
//! fails or times out; 501 for what is not supported. A CAR or a file body whose DAG breaks
//! midway is cut off (the connection closes before the end of the body), never completed
//! with wrong bytes.
//!
//! Containment: every response says `X-Content-Type-Options: nosniff`; HTML, SVG and XML
//! responses carry `Content-Security-Policy: sandbox` (everything shares this one origin); a
//! `filename` that would make content HTML, SVG or XML answers `attachment` unless
//! `download=false` (other names stay `inline`, as the spec says).
//!
//! Limits: [`MAX_CONNECTIONS`] slots, a new connection evicting the one idle longest when all
//! are taken; [`HEADER_TIMEOUT`] to send a request head of at most [`MAX_HEAD_BYTES`] (else
//! 431); a response write without progress for [`WRITE_STALL`] ends the connection.
//!
//! Blocks: with `allow_fetch` off only [`BlockService::get_local`] is used; with it on,
//! [`BlockService::get`] (memory, store, then the fetchers), with a few blocks fetched ahead
//! of a walk. Every block is one the block service has verified.

mod conns;
mod listing;
mod request;
mod resolve;
mod routing;
mod walk;

pub use routing::Provider;

use std::collections::hash_map::DefaultHasher;
use std::convert::Infallible;
use std::hash::{Hash, Hasher};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cid::Cid;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use ipfs_mount_ipld::unixfs::Node;
use ipfs_mount_ipld::{cids, codec};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::blocks::BlockService;
use request::{ContentPath, Format, Namespace, Query};
use resolve::{Ctx, Resolved};
use walk::{Sink, WalkEnd};

/// Runs the parsers a gateway request's target and headers go through (path, query, content
/// negotiation, `entity-bytes`, `Range`, and the `Content-Disposition` made from `?filename=`)
/// on arbitrary input, and checks what they accept: decoded segments are safe UnixFS names,
/// ranges resolve inside `size`, a disposition is a valid header value. For fuzzing
/// (`fuzz/fuzz_targets/serve_request.rs`); the server itself never calls it.
#[doc(hidden)]
pub fn fuzz_request(
    path: &str,
    query: Option<&str>,
    accept: Option<&str>,
    range: Option<&str>,
    size: u64,
) {
    if let Ok(Some(cp)) = request::parse_path(path) {
        assert!(!cp.root.is_empty());
        for seg in &cp.segments {
            assert!(ipfs_mount_ipld::unixfs::is_safe_name(seg), "{seg:?}");
            let enc = request::percent_encode_segment(seg);
            assert_eq!(request::percent_decode(&enc).ok().as_ref(), Some(seg));
            let _ = listing::content_type(seg);
        }
    }
    let q = Query::parse(query);
    if let Ok((Some(Format::Car(params)), _)) = request::negotiate(&q, accept) {
        if let Some((first, last)) = params.bytes.and_then(|b| b.resolve(size)) {
            assert!(
                first <= last && last < size,
                "{params:?} in {size}: {first}..={last}"
            );
        }
    }
    if let Some((first, last)) = request::parse_range(range).and_then(|r| r.resolve(size)) {
        assert!(
            first <= last && last < size,
            "{range:?} in {size}: {first}..={last}"
        );
    }
    if let Some(name) = &q.filename {
        for kind in ["inline", "attachment"] {
            let cd = listing::content_disposition(kind, name);
            assert!(HeaderValue::from_str(&cd).is_ok(), "{cd:?}");
        }
    }
}

/// Resolves an IPNS name (or DNSLink domain) to a content path `/ipfs/<cid>/optional/path`,
/// and gives the raw signed record bytes for `format=ipns-record`.
#[async_trait::async_trait]
pub trait NameSource: Send + Sync + 'static {
    /// `Err` = not found or invalid (the message says why).
    async fn resolve(&self, name: &str) -> Result<String, String>;
    /// A valid record we hold or got.
    async fn record(&self, name: &str) -> Option<Bytes>;
    /// A record held now (ours, or one resolved earlier and cached), without resolving:
    /// what `/routing/v1/ipns` answers.
    fn held_record(&self, name: &ipfs_mount_ipns::Name) -> Option<Bytes>;
}

/// Configuration of the gateway.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Where to listen (only there: loopback unless the user names another address).
    pub addr: SocketAddr,
    /// Fetch missing blocks through the block service; otherwise only local blocks are served
    /// and a missing one is a 404.
    pub allow_fetch: bool,
    /// This mount as a peer, named by `/routing/v1/providers` for the blocks it holds (and by
    /// `/routing/v1/peers`); `None` when it is not a peer: then no provider is named.
    pub provider: Option<Provider>,
}

/// Connections served at once. When all are taken, a new connection closes the one that has
/// waited longest for a request; only when all are answering does it wait in the listen
/// backlog (see [`conns`]). Each connection costs one file descriptor, and a mount under the
/// usual limit of 1024 needs the rest for its store, FUSE and peers.
const MAX_CONNECTIONS: usize = 512;
/// Time a client has to send the request line and headers once the connection starts reading
/// a request. A real client sends them at once (one packet on loopback); 5 s covers a loaded
/// machine and is all a client that sends nothing, or half a line, holds a slot for.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A response write that makes no progress for this long ends the connection: the client
/// stopped reading. Long enough for a reader that pauses to store what it got (our own
/// gateway client blocks while its ingest queue is full, for well under a second), short
/// enough that clients that ask for large CARs and never read give their slot back soon.
const WRITE_STALL: Duration = Duration::from_secs(10);
/// Largest request line plus headers; past it the answer is 431 and the connection closes.
/// A content path is a CID and UnixFS names (255 bytes each): a few KiB at most, and browsers'
/// headers are smaller still.
const MAX_HEAD_BYTES: usize = 16 << 10;
/// Body chunks queued between a DAG walk and the connection.
const BODY_QUEUE: usize = 16;
/// `Cache-Control` of everything under `/ipfs/`.
const IMMUTABLE: &str = "public, max-age=29030400, immutable";
/// `Cache-Control` of responses under `/ipns/` (names are re-resolved after this).
const MUTABLE: &str = "public, max-age=60";
/// Deepest chain of names resolving to names.
const MAX_NAME_HOPS: usize = 32;

const X_IPFS_PATH: HeaderName = HeaderName::from_static("x-ipfs-path");
const X_IPFS_ROOTS: HeaderName = HeaderName::from_static("x-ipfs-roots");
const NOSNIFF: (HeaderName, &str) = (header::X_CONTENT_TYPE_OPTIONS, "nosniff");
/// `Content-Security-Policy` of every HTML, SVG or XML response. Everything here shares one
/// origin (a path gateway on loopback), and the content is anyone's: `sandbox` gives each
/// such document an opaque origin with no scripts, forms, popups or plugins, so it can neither
/// read other content through this origin nor use it to reach other local services. Sites that
/// need scripts want an origin-isolating (subdomain) gateway.
const SANDBOX: &str = "sandbox";

type Body = UnsyncBoxBody<Bytes, io::Error>;

/// Binds `config.addr` and serves until the runtime stops; returns the bound address (port 0
/// gives the real port) once listening.
pub async fn start(
    config: ServeConfig,
    blocks: Arc<BlockService>,
    names: Option<Arc<dyn NameSource>>,
) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(config.addr).await?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, allow_fetch = config.allow_fetch, "HTTP gateway listening");
    let own_record = config
        .provider
        .as_ref()
        .map(|p| routing::OwnRecord::new(p, local));
    let state = Arc::new(State {
        blocks,
        names,
        allow_fetch: config.allow_fetch,
        own_record,
    });
    tokio::spawn(accept_loop(listener, state));
    Ok(local)
}

struct State {
    blocks: Arc<BlockService>,
    names: Option<Arc<dyn NameSource>>,
    allow_fetch: bool,
    /// What `/routing/v1` names as the provider of local blocks.
    own_record: Option<routing::OwnRecord>,
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    let slots = conns::Slots::new(MAX_CONNECTIONS);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // out of file descriptors and the like: wait instead of spinning
                tracing::warn!("gateway accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let slot = slots.admit().await;
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let in_service = slot.clone();
            let service = service_fn(move |req| {
                let state = state.clone();
                let slot = in_service.clone();
                async move {
                    slot.busy();
                    let resp = handle(&state, req).await;
                    let resp = counted(resp, state.blocks.clone());
                    Ok::<_, Infallible>(idle_once_sent(resp, slot))
                }
            });
            let io = conns::StallGuard::new(stream, WRITE_STALL);
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_header_size(MAX_HEAD_BYTES)
                .serve_connection(TokioIo::new(io), service);
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!(%peer, "gateway connection ended: {e}");
                },
                _ = slot.evicted() => {
                    tracing::debug!(%peer, "gateway connection closed: its slot went to a new one");
                }
            }
        });
    }
}

/// The response, counting its body bytes into the block service's `served_http_bytes` as
/// hyper takes them for the connection.
fn counted(resp: Response<Body>, blocks: Arc<BlockService>) -> Response<Body> {
    resp.map(|body| {
        body.map_frame(move |frame| {
            if let Some(data) = frame.data_ref() {
                blocks
                    .stats
                    .served_http_bytes
                    .fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
            frame
        })
        .boxed_unsync()
    })
}

/// The response, with its slot listed as idle again once the body is sent (or dropped).
fn idle_once_sent(resp: Response<Body>, slot: Arc<conns::Slot>) -> Response<Body> {
    struct IdleOnDrop(Arc<conns::Slot>);
    impl Drop for IdleOnDrop {
        fn drop(&mut self) {
            self.0.idle();
        }
    }
    let guard = IdleOnDrop(slot);
    resp.map(|body| {
        body.map_frame(move |frame| {
            let _keep = &guard;
            frame
        })
        .boxed_unsync()
    })
}

/// An HTTP error response: a status and a message (the body, and the log line).
#[derive(Debug, Clone)]
pub(crate) struct HttpError {
    status: StatusCode,
    msg: String,
}

impl HttpError {
    fn new(status: StatusCode, msg: impl Into<String>) -> Self {
        HttpError {
            status,
            msg: msg.into(),
        }
    }

    fn response(&self) -> Response<Body> {
        let mut r = Resp::new(self.status)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .header(NOSNIFF.0, NOSNIFF.1);
        if self.status == StatusCode::GATEWAY_TIMEOUT {
            r = r.header(header::RETRY_AFTER, "30");
        }
        r.body(full(format!("{}\n", self.msg)))
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.msg)
    }
}

/// A response under construction; header values that are not valid are left out.
struct Resp {
    status: StatusCode,
    headers: HeaderMap,
}

impl Resp {
    fn new(status: StatusCode) -> Self {
        Resp {
            status,
            headers: HeaderMap::new(),
        }
    }

    fn header(mut self, name: HeaderName, value: impl AsRef<str>) -> Self {
        if let Ok(v) = HeaderValue::from_str(value.as_ref()) {
            self.headers.insert(name, v);
        }
        self
    }

    fn body(self, body: Body) -> Response<Body> {
        let mut r = Response::new(body);
        *r.status_mut() = self.status;
        *r.headers_mut() = self.headers;
        r
    }
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|e| match e {}).boxed_unsync()
}

fn empty() -> Body {
    Empty::new().map_err(|e| match e {}).boxed_unsync()
}

/// A streamed body and the [`Sink`] that feeds it.
fn channel() -> (Sink, Body) {
    let (tx, mut rx) = mpsc::channel::<Result<Bytes, io::Error>>(BODY_QUEUE);
    let stream = futures::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|item| item.map(|r| r.map(Frame::data)))
    });
    (Sink::new(tx), StreamBody::new(stream).boxed_unsync())
}

async fn handle(state: &State, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let mut resp = match route(state, &req).await {
        Ok(r) => r,
        Err(e) => {
            if e.status.is_server_error() {
                tracing::warn!(%method, %path, "gateway: {e}");
            } else {
                tracing::debug!(%method, %path, "gateway: {e}");
            }
            e.response()
        }
    };
    contain(resp.headers_mut());
    if method == Method::HEAD {
        *resp.body_mut() = empty();
    }
    tracing::debug!(
        %method,
        %path,
        status = resp.status().as_u16(),
        ms = started.elapsed().as_millis() as u64,
        "gateway request"
    );
    resp
}

/// What every response carries: `nosniff` (the browser keeps to our content type), and the
/// [`SANDBOX`] policy when that type is one a browser would run as a document.
fn contain(headers: &mut HeaderMap) {
    headers
        .entry(header::X_CONTENT_TYPE_OPTIONS)
        .or_insert(HeaderValue::from_static("nosniff"));
    let active = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(listing::is_active);
    if active {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(SANDBOX),
        );
    }
}

/// What every content response carries.
struct Meta {
    /// The request path as sent (`X-Ipfs-Path`).
    path: String,
    query: Option<String>,
    cache: &'static str,
    roots: String,
    head: bool,
    if_none_match: Option<String>,
    /// Set when the format came from `Accept`: the URL with `format=` for
    /// `Content-Location`.
    content_location: Option<String>,
}

impl Meta {
    fn headers(&self, r: Resp, etag: &str) -> Resp {
        let mut r = r
            .header(header::ETAG, etag)
            .header(header::CACHE_CONTROL, self.cache)
            .header(X_IPFS_PATH, &self.path)
            .header(X_IPFS_ROOTS, &self.roots)
            .header(header::VARY, "Accept");
        if let Some(l) = &self.content_location {
            r = r.header(header::CONTENT_LOCATION, l);
        }
        r
    }

    /// A 304 when the client's `If-None-Match` names `etag`.
    fn not_modified(&self, etag: &str) -> Option<Response<Body>> {
        let inm = self.if_none_match.as_deref()?;
        let bare = |t: &str| t.trim().trim_start_matches("W/").to_string();
        let hit = inm
            .split(',')
            .any(|t| t.trim() == "*" || bare(t) == bare(etag));
        hit.then(|| {
            self.headers(Resp::new(StatusCode::NOT_MODIFIED), etag)
                .body(empty())
        })
    }
}

fn header_str(req: &Request<Incoming>, name: HeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

async fn route(state: &State, req: &Request<Incoming>) -> Result<Response<Body>, HttpError> {
    if let Some(rest) = req.uri().path().strip_prefix("/routing/v1/") {
        return Ok(routing::route(state, req.method(), req.headers(), rest));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(Resp::new(StatusCode::METHOD_NOT_ALLOWED)
            .header(header::ALLOW, "GET, HEAD")
            .body(full("only GET and HEAD\n")));
    }
    let raw_path = req.uri().path();
    let Some(cp) = request::parse_path(raw_path)? else {
        return Err(HttpError::new(
            StatusCode::NOT_FOUND,
            "this gateway serves /ipfs/<cid>[/path] and /ipns/<name>[/path]",
        ));
    };
    let query = Query::parse(req.uri().query());
    let (format, from_accept) = request::negotiate(&query, header_str(req, header::ACCEPT))?;
    if header_str(req, HeaderName::from_static("service-worker")) == Some("script")
        && cp.segments.is_empty()
    {
        return Err(HttpError::new(
            StatusCode::BAD_REQUEST,
            "a service worker may not be registered for a whole content root",
        ));
    }
    let only_if_cached = header_str(req, header::CACHE_CONTROL)
        .is_some_and(|v| v.to_ascii_lowercase().contains("only-if-cached"));
    let ctx = Ctx {
        blocks: state.blocks.clone(),
        fetch: state.allow_fetch && !only_if_cached,
        missing: if only_if_cached {
            StatusCode::PRECONDITION_FAILED
        } else {
            StatusCode::NOT_FOUND
        },
    };
    let content_location = match (from_accept, format) {
        (true, Some(f)) => Some(match req.uri().query() {
            Some(q) if !q.is_empty() => format!("{raw_path}?{q}&format={}", f.query_name()),
            _ => format!("{raw_path}?format={}", f.query_name()),
        }),
        _ => None,
    };
    let mut meta = Meta {
        path: raw_path.to_string(),
        query: req.uri().query().map(str::to_string),
        cache: IMMUTABLE,
        roots: String::new(),
        head: req.method() == Method::HEAD,
        if_none_match: header_str(req, header::IF_NONE_MATCH).map(str::to_string),
        content_location,
    };

    let (root, segments) = match cp.namespace {
        Namespace::Ipfs => {
            if format == Some(Format::IpnsRecord) {
                return Err(HttpError::new(
                    StatusCode::BAD_REQUEST,
                    "format=ipns-record is only for /ipns/<name>",
                ));
            }
            let cid = cids::parse(&cp.root).map_err(|e| {
                HttpError::new(
                    StatusCode::BAD_REQUEST,
                    format!("invalid CID {:?}: {e}", cp.root),
                )
            })?;
            (cid, cp.segments.clone())
        }
        Namespace::Ipns => {
            let names = state.names.as_ref().ok_or_else(|| {
                HttpError::new(StatusCode::NOT_IMPLEMENTED, "IPNS is not available here")
            })?;
            if format == Some(Format::IpnsRecord) {
                return ipns_record(names.as_ref(), &cp, &meta).await;
            }
            meta.cache = MUTABLE;
            let (cid, mut segments) = resolve_name(names.as_ref(), &cp.root).await?;
            segments.extend(cp.segments.iter().cloned());
            (cid, segments)
        }
    };

    let resolved = resolve::resolve(&ctx, root, &segments).await?;
    meta.roots = resolved
        .roots
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let range = request::parse_range(header_str(req, header::RANGE));
    match format {
        Some(Format::Raw) => {
            let cid = resolved.cid;
            let etag = format!("\"{cid}.raw\"");
            if let Some(r) = meta.not_modified(&etag) {
                return Ok(r);
            }
            let r = meta
                .headers(Resp::new(StatusCode::OK), &etag)
                .header(header::CONTENT_TYPE, "application/vnd.ipld.raw")
                .header(NOSNIFF.0, NOSNIFF.1)
                .header(
                    header::CONTENT_DISPOSITION,
                    listing::content_disposition(
                        "attachment",
                        query.filename.as_deref().unwrap_or(&format!("{cid}.bin")),
                    ),
                );
            Ok(bytes_response(r, resolved.block, range))
        }
        Some(Format::Car(params)) => Ok(car_response(
            ctx, resolved, params, &segments, &query, &meta,
        )),
        Some(Format::IpnsRecord) => Err(HttpError::new(
            StatusCode::BAD_REQUEST,
            "format=ipns-record is only for /ipns/<name>",
        )),
        Some(Format::Tar) => Err(HttpError::new(
            StatusCode::NOT_IMPLEMENTED,
            "format=tar is not supported",
        )),
        Some(f @ (Format::DagJson | Format::Json | Format::DagCbor | Format::Cbor)) => {
            codec_response(f, resolved, range, &meta)
        }
        None => plain(&ctx, resolved, &cp, &query, range, &meta).await,
    }
}

/// `/ipns/<name>` to the CID and segments it points at, following names to names.
async fn resolve_name(
    names: &dyn NameSource,
    name: &str,
) -> Result<(Cid, Vec<Vec<u8>>), HttpError> {
    let mut name = name.to_string();
    let mut suffix: Vec<Vec<u8>> = Vec::new();
    for _ in 0..MAX_NAME_HOPS {
        let target = names.resolve(&name).await.map_err(|e| {
            HttpError::new(
                StatusCode::NOT_FOUND,
                format!("cannot resolve /ipns/{name}: {e}"),
            )
        })?;
        let bad = |why: &str| {
            HttpError::new(
                StatusCode::BAD_GATEWAY,
                format!("/ipns/{name} resolved to {target:?}: {why}"),
            )
        };
        let (ns, rest) = if let Some(r) = target.strip_prefix("/ipfs/") {
            (Namespace::Ipfs, r)
        } else if let Some(r) = target.strip_prefix("/ipns/") {
            (Namespace::Ipns, r)
        } else {
            return Err(bad("not an /ipfs/ or /ipns/ path"));
        };
        let mut parts = rest.split('/');
        let head = parts.next().unwrap_or_default();
        let mut segs = Vec::new();
        for p in parts.filter(|p| !p.is_empty()) {
            segs.push(
                request::check_segment(p.as_bytes().to_vec(), p)
                    .map_err(|_| bad("bad path segment"))?,
            );
        }
        segs.extend(suffix);
        suffix = segs;
        match ns {
            Namespace::Ipfs => {
                let cid = cids::parse(head).map_err(|_| bad("invalid CID"))?;
                return Ok((cid, suffix));
            }
            Namespace::Ipns => name = head.to_string(),
        }
    }
    Err(HttpError::new(
        StatusCode::NOT_FOUND,
        format!("/ipns/{name}: more than {MAX_NAME_HOPS} names in a chain"),
    ))
}

async fn ipns_record(
    names: &dyn NameSource,
    cp: &ContentPath,
    meta: &Meta,
) -> Result<Response<Body>, HttpError> {
    if !cp.segments.is_empty() {
        return Err(HttpError::new(
            StatusCode::BAD_REQUEST,
            "format=ipns-record takes a bare /ipns/<name>, without a path",
        ));
    }
    let Some(record) = names.record(&cp.root).await else {
        return Err(HttpError::new(
            StatusCode::NOT_FOUND,
            format!("no IPNS record for {}", cp.root),
        ));
    };
    let etag = raw_etag(&record);
    let r = Resp::new(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/vnd.ipfs.ipns-record")
        .header(NOSNIFF.0, NOSNIFF.1)
        .header(header::ETAG, &etag)
        .header(header::CACHE_CONTROL, MUTABLE)
        .header(X_IPFS_PATH, &meta.path)
        .header(header::VARY, "Accept")
        .header(
            header::CONTENT_DISPOSITION,
            listing::content_disposition("attachment", &format!("{}.ipns-record", cp.root)),
        );
    Ok(bytes_response(r, record, None))
}

/// The strong `ETag` of bytes served whole: the quoted CIDv1 (raw, sha2-256) of them.
fn raw_etag(bytes: &[u8]) -> String {
    cids::compute(
        cid::Version::V1,
        codec::RAW,
        ipfs_mount_ipld::mh::SHA2_256,
        bytes,
    )
    .map(|c| format!("\"{c}\""))
    .unwrap_or_default()
}

/// A body held in memory, whole or one range of it.
fn bytes_response(r: Resp, data: Bytes, range: Option<request::ByteRange>) -> Response<Body> {
    let size = data.len() as u64;
    let r = r.header(header::ACCEPT_RANGES, "bytes");
    match range {
        None => r
            .header(header::CONTENT_LENGTH, size.to_string())
            .body(full(data)),
        Some(range) => match range.resolve(size) {
            None => unsatisfiable(r, size),
            Some((a, b)) => r
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_RANGE, format!("bytes {a}-{b}/{size}"))
                .header(header::CONTENT_LENGTH, (b - a + 1).to_string())
                .body(full(data.slice(a as usize..=b as usize))),
        },
    }
}

fn unsatisfiable(r: Resp, size: u64) -> Response<Body> {
    r.status(StatusCode::RANGE_NOT_SATISFIABLE)
        .header(header::CONTENT_RANGE, format!("bytes */{size}"))
        .header(header::CONTENT_LENGTH, "0")
        .body(empty())
}

impl Resp {
    fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }
}

fn car_response(
    ctx: Ctx,
    resolved: Resolved,
    params: request::CarParams,
    segments: &[Vec<u8>],
    query: &Query,
    meta: &Meta,
) -> Response<Body> {
    let mut h = DefaultHasher::new();
    (resolved.root, segments, params).hash(&mut h);
    let etag = format!("\"{}.car.{:016x}\"", resolved.cid, h.finish());
    if let Some(r) = meta.not_modified(&etag) {
        return r;
    }
    let dups = if params.dups { "y" } else { "n" };
    let filename = query
        .filename
        .clone()
        .unwrap_or_else(|| format!("{}.car", resolved.cid));
    let r = meta
        .headers(Resp::new(StatusCode::OK), &etag)
        .header(
            header::CONTENT_TYPE,
            format!("application/vnd.ipld.car; version=1; order=dfs; dups={dups}"),
        )
        .header(NOSNIFF.0, NOSNIFF.1)
        .header(header::ACCEPT_RANGES, "none")
        .header(
            header::CONTENT_DISPOSITION,
            listing::content_disposition("attachment", &filename),
        );
    if meta.head {
        return r.body(empty());
    }
    let (mut sink, body) = channel();
    let path = meta.path.clone();
    tokio::spawn(async move {
        match walk::car(&ctx, &resolved, params, &mut sink).await {
            Ok(blocks) => {
                tracing::debug!(%path, root = %resolved.cid, blocks, bytes = sink.sent, "gateway CAR sent")
            }
            Err(WalkEnd::Closed) => {
                tracing::debug!(%path, root = %resolved.cid, bytes = sink.sent, "gateway CAR: client went away")
            }
            Err(WalkEnd::Failed(e)) => {
                tracing::warn!(%path, root = %resolved.cid, bytes = sink.sent, "gateway CAR cut short: {e}");
                sink.abort(&e.msg).await;
            }
        }
    });
    r.body(body)
}

/// `format=dag-json|json|dag-cbor|cbor`: the block as it is when its codec is the one asked
/// for; dag-cbor/cbor rendered as dag-json for `dag-json`/`json`; anything else is 501.
fn codec_response(
    f: Format,
    resolved: Resolved,
    range: Option<request::ByteRange>,
    meta: &Meta,
) -> Result<Response<Body>, HttpError> {
    let (want, media) = match f {
        Format::DagJson => (codec::DAG_JSON, "application/vnd.ipld.dag-json"),
        Format::Json => (codec::JSON, "application/json"),
        Format::DagCbor => (codec::DAG_CBOR, "application/vnd.ipld.dag-cbor"),
        _ => (codec::CBOR, "application/cbor"),
    };
    let cid = resolved.cid;
    let have = cid.codec();
    let data = if have == want {
        resolved.block
    } else if matches!(f, Format::DagJson | Format::Json)
        && matches!(
            have,
            codec::DAG_CBOR | codec::CBOR | codec::DAG_JSON | codec::JSON
        )
    {
        ipfs_mount_ipld::docjson::render(&cid, &resolved.block)
            .map(Bytes::from)
            .map_err(|e| HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{cid}: {e}")))?
    } else {
        return Err(HttpError::new(
            StatusCode::NOT_IMPLEMENTED,
            format!(
                "{cid} (codec 0x{have:x}) cannot be returned as {}",
                f.query_name()
            ),
        ));
    };
    let etag = format!("\"{cid}.{}\"", f.query_name());
    if let Some(r) = meta.not_modified(&etag) {
        return Ok(r);
    }
    let r = meta
        .headers(Resp::new(StatusCode::OK), &etag)
        .header(header::CONTENT_TYPE, media);
    Ok(bytes_response(r, data, range))
}

/// A deserialized response: file bytes, a directory, a symlink's target or a document.
async fn plain(
    ctx: &Ctx,
    resolved: Resolved,
    cp: &ContentPath,
    query: &Query,
    range: Option<request::ByteRange>,
    meta: &Meta,
) -> Result<Response<Body>, HttpError> {
    let cid = resolved.cid;
    let node = resolve::decode(&cid, &resolved.block)?;
    // `download=true`: attachment (the spec's MUST). A `filename` alone is inline, as the spec
    // has it, unless it would make the bytes HTML, SVG or XML: then attachment, so that no
    // link can have any content run as a page of this origin; `download=false` keeps those
    // inline (under the sandbox policy all such responses get).
    let disposition = |r: Resp, name: Option<&str>, ctype: &str| -> Resp {
        let attach = query
            .download
            .unwrap_or(query.filename.is_some() && listing::is_active(ctype));
        let kind = if attach { "attachment" } else { "inline" };
        match (query.filename.as_deref(), name) {
            (Some(f), _) => r.header(
                header::CONTENT_DISPOSITION,
                listing::content_disposition(kind, f),
            ),
            (None, Some(n)) if attach => r.header(
                header::CONTENT_DISPOSITION,
                listing::content_disposition(kind, n),
            ),
            _ => r,
        }
    };
    match node {
        Node::File(f) => {
            let name = query
                .filename
                .as_ref()
                .map(|s| s.as_bytes().to_vec())
                .or_else(|| resolved.name.clone());
            let ctype = name
                .as_deref()
                .and_then(listing::content_type)
                .unwrap_or("application/octet-stream");
            let shown = name.as_deref().map(String::from_utf8_lossy);
            file_response(
                ctx,
                cid,
                resolved.block,
                f.size,
                f.children.is_empty(),
                ctype,
                range,
                meta,
                |r| disposition(r, shown.as_deref(), ctype),
            )
        }
        Node::Directory(_) | Node::HamtShard(_) => {
            if !cp.trailing_slash {
                let location = match &meta.query {
                    Some(q) if !q.is_empty() => format!("{}/?{q}", meta.path),
                    _ => format!("{}/", meta.path),
                };
                return Ok(Resp::new(StatusCode::MOVED_PERMANENTLY)
                    .header(header::LOCATION, location)
                    .header(header::CACHE_CONTROL, meta.cache)
                    .header(X_IPFS_PATH, &meta.path)
                    .body(empty()));
            }
            let index = resolve::find(ctx, &cid, &resolved.block, b"index.html").await?;
            if let Some(index) = index {
                let block = ctx.get(&index).await?;
                if let Node::File(f) = resolve::decode(&index, &block)? {
                    return file_response(
                        ctx,
                        index,
                        block,
                        f.size,
                        f.children.is_empty(),
                        "text/html; charset=utf-8",
                        range,
                        meta,
                        |r| r,
                    );
                }
            }
            let etag = format!("\"DirIndex-{}_CID-{cid}\"", listing::LISTING_VERSION);
            if let Some(r) = meta.not_modified(&etag) {
                return Ok(r);
            }
            let entries = resolve::list(ctx, &cid, node).await?;
            let html = listing::html(&meta.path, &cid, &entries);
            let r = meta
                .headers(Resp::new(StatusCode::OK), &etag)
                .header(header::CONTENT_TYPE, "text/html; charset=utf-8");
            Ok(bytes_response(r, Bytes::from(html), None))
        }
        Node::Symlink(s) => {
            let etag = format!("\"{cid}\"");
            if let Some(r) = meta.not_modified(&etag) {
                return Ok(r);
            }
            let r = meta
                .headers(Resp::new(StatusCode::OK), &etag)
                .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .header(NOSNIFF.0, NOSNIFF.1);
            Ok(bytes_response(r, Bytes::from(s.target), range))
        }
        Node::Document(_) => {
            let media = match cid.codec() {
                codec::DAG_CBOR => "application/vnd.ipld.dag-cbor",
                codec::DAG_JSON => "application/vnd.ipld.dag-json",
                codec::JSON => "application/json",
                _ => "application/cbor",
            };
            let etag = format!("\"{cid}\"");
            if let Some(r) = meta.not_modified(&etag) {
                return Ok(r);
            }
            let r = meta
                .headers(Resp::new(StatusCode::OK), &etag)
                .header(header::CONTENT_TYPE, media)
                .header(NOSNIFF.0, NOSNIFF.1);
            Ok(bytes_response(r, resolved.block, range))
        }
    }
}

/// The bytes of a UnixFS file (whole, or one range), streamed from its DAG.
#[allow(clippy::too_many_arguments)]
fn file_response(
    ctx: &Ctx,
    cid: Cid,
    block: Bytes,
    size: u64,
    single_block: bool,
    ctype: &str,
    range: Option<request::ByteRange>,
    meta: &Meta,
    extra: impl FnOnce(Resp) -> Resp,
) -> Result<Response<Body>, HttpError> {
    let etag = format!("\"{cid}\"");
    if let Some(r) = meta.not_modified(&etag) {
        return Ok(r);
    }
    let r = extra(meta.headers(Resp::new(StatusCode::OK), &etag))
        .header(header::CONTENT_TYPE, ctype)
        .header(header::ACCEPT_RANGES, "bytes");
    let (first, last, r) = match range {
        None => (0, size.checked_sub(1), r),
        Some(range) => match range.resolve(size) {
            None => return Ok(unsatisfiable(r, size)),
            Some((a, b)) => (
                a,
                Some(b),
                r.status(StatusCode::PARTIAL_CONTENT)
                    .header(header::CONTENT_RANGE, format!("bytes {a}-{b}/{size}")),
            ),
        },
    };
    let Some(last) = last else {
        // an empty file
        return Ok(r.header(header::CONTENT_LENGTH, "0").body(empty()));
    };
    let len = last - first + 1;
    let r = r.header(header::CONTENT_LENGTH, len.to_string());
    if meta.head {
        return Ok(r.body(empty()));
    }
    if single_block {
        // all the bytes are in this block (a raw leaf, or a small dag-pb file)
        return match resolve::decode(&cid, &block)? {
            Node::File(f) if f.inline.len() as u64 == size => {
                Ok(r.body(full(f.inline.slice(first as usize..=last as usize))))
            }
            _ => Err(HttpError::new(
                StatusCode::NOT_FOUND,
                format!("{cid}: file data does not match its size"),
            )),
        };
    }
    let (mut sink, body) = channel();
    let ctx = ctx.clone();
    let path = meta.path.clone();
    tokio::spawn(async move {
        let walk = walk::file_bytes(&ctx, &cid, &block, size, (first, last), &mut sink);
        match walk.await {
            Ok(()) if sink.sent == len => {}
            Ok(()) => {
                tracing::warn!(%path, %cid, sent = sink.sent, expected = len, "gateway file body cut short: the DAG holds fewer bytes than it says");
                sink.abort("short file").await;
            }
            Err(WalkEnd::Closed) => {}
            Err(WalkEnd::Failed(e)) => {
                tracing::warn!(%path, %cid, sent = sink.sent, "gateway file body cut short: {e}");
                sink.abort(&e.msg).await;
            }
        }
    });
    Ok(r.body(body))
}
