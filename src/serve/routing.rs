//! `--serve` as a delegated router for what this mount holds (spec:
//! `routing/http-routing-v1.md`), so that stock clients (Helia, @helia/verified-fetch, boxo)
//! resolve our names and find our blocks with nothing but this address:
//! - `GET|HEAD /routing/v1/ipns/{name}`: the signed record of one of our names, or of a name
//!   we resolved and still hold a valid record for. Never resolved on a client's behalf: a
//!   router answers from what it holds, and a miss must not make us query others.
//! - `GET|HEAD /routing/v1/providers/{cid}`: this peer, when the block is in the store.
//! - `GET|HEAD /routing/v1/peers/{peer-id}`: this peer's record, when asked for it.
//! - `PUT` (records or announcements from others) is not taken: 501.
//!
//! The peer record names the libp2p addresses (`transport-bitswap`) and this gateway's own
//! HTTP address (`transport-ipfs-gateway-http`), so a client can fetch over either.
//! JSON by default, NDJSON on `Accept: application/x-ndjson`; CORS is open, as the spec asks
//! (the answers are public and carry no credentials).

use std::time::SystemTime;

use cid::Cid;
use hyper::header;
use hyper::{HeaderMap, Method, StatusCode};
use ipfs_mount_ipns::{validate, Name};

use super::{full, NameSource, Resp, State};
use super::{Body, Response};

const IPNS_RECORD: &str = "application/vnd.ipfs.ipns-record";
const NDJSON: &str = "application/x-ndjson";
const JSON: &str = "application/json";
/// `Cache-Control` of a name or peer we do not hold, and of a record without a TTL (the spec's
/// default).
const MISS_CACHE: &str = "public, max-age=60";
/// `Cache-Control` of a provider answer: the store's contents change (eviction, gc), so
/// clients should ask again soon.
const PROVIDERS_CACHE: &str = "public, max-age=60";

/// Who this mount is on the network: its peer id and the libp2p addresses it listens on.
#[derive(Debug, Clone)]
pub struct Provider {
    /// The peer id, as a base58 multihash (`12D3Koo…`).
    pub peer_id: String,
    /// Multiaddrs without the `/p2p/` suffix.
    pub addrs: Vec<String>,
}

/// The peer record this router gives out: the libp2p addresses and the gateway's own.
pub(super) struct OwnRecord {
    peer_id: String,
    json: serde_json::Value,
}

impl OwnRecord {
    pub(super) fn new(provider: &Provider, gateway: std::net::SocketAddr) -> Self {
        let mut addrs = provider.addrs.clone();
        let ip = match gateway.ip() {
            std::net::IpAddr::V4(v4) => format!("/ip4/{v4}"),
            std::net::IpAddr::V6(v6) => format!("/ip6/{v6}"),
        };
        addrs.push(format!("{ip}/tcp/{}/http", gateway.port()));
        let mut protocols = vec!["transport-ipfs-gateway-http"];
        if !provider.addrs.is_empty() {
            protocols.insert(0, "transport-bitswap");
        }
        OwnRecord {
            peer_id: provider.peer_id.clone(),
            json: serde_json::json!({
                "Schema": "peer",
                "ID": provider.peer_id,
                "Addrs": addrs,
                "Protocols": protocols,
            }),
        }
    }
}

/// Answers a request under `/routing/v1/`; `rest` is the path after that prefix.
pub(super) fn route(
    state: &State,
    method: &Method,
    headers: &HeaderMap,
    rest: &str,
) -> Response<Body> {
    if method == Method::OPTIONS {
        return cors(Resp::new(StatusCode::NO_CONTENT))
            .header(header::ACCESS_CONTROL_ALLOW_HEADERS, "Accept, Content-Type")
            .header(header::ACCESS_CONTROL_MAX_AGE, "86400")
            .body(super::empty());
    }
    let (kind, arg) = rest.split_once('/').unwrap_or((rest, ""));
    if !matches!(kind, "ipns" | "providers" | "peers") || arg.is_empty() || arg.contains('/') {
        return fail(
            StatusCode::BAD_REQUEST,
            format!("unknown routing path /routing/v1/{rest}: this router answers ipns/{{name}}, providers/{{cid}} and peers/{{peer-id}}"),
        );
    }
    if method != Method::GET && method != Method::HEAD {
        return fail(
            StatusCode::NOT_IMPLEMENTED,
            format!(
                "{method} /routing/v1/{kind}: this router only answers for what it holds (GET)"
            ),
        );
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match kind {
        "ipns" => ipns(state.names.as_deref(), arg, accept),
        "providers" => providers(state, arg, accept),
        _ => peers(state, arg, accept),
    }
}

/// Every routing answer may be read by any origin (spec: "CORS and Web Browsers").
fn cors(r: Resp) -> Resp {
    r.header(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")
        .header(header::ACCESS_CONTROL_ALLOW_METHODS, "GET, HEAD, OPTIONS")
}

fn ipns(names: Option<&dyn NameSource>, arg: &str, accept: &str) -> Response<Body> {
    // As boxo's server does: no Accept (or a wildcard) means the record; anything else must name
    // it, since a record is all this endpoint returns.
    if !(accept.is_empty() || accept.contains("*/*") || accept.contains(IPNS_RECORD)) {
        return fail(
            StatusCode::NOT_ACCEPTABLE,
            format!("retry with Accept: {IPNS_RECORD}"),
        );
    }
    let name = match Name::parse(arg) {
        Ok(n) => n,
        Err(e) => {
            return fail(
                StatusCode::BAD_REQUEST,
                format!("/routing/v1/ipns/{arg}: {e}"),
            )
        }
    };
    let held = names.and_then(|n| n.held_record(&name));
    // What we hold was valid when stored; check again so an expired record is a miss, and to
    // read the TTL the answer's Cache-Control follows.
    let valid = held.and_then(|raw| {
        validate(&name, &raw, SystemTime::now())
            .ok()
            .map(|r| (raw, r.ttl))
    });
    let Some((raw, ttl)) = valid else {
        return fail(
            StatusCode::NOT_FOUND,
            format!("no valid IPNS record held for {name}"),
        );
    };
    let etag = super::raw_etag(&raw);
    let cache = if ttl.as_secs() > 0 {
        format!("public, max-age={}", ttl.as_secs())
    } else {
        MISS_CACHE.to_string()
    };
    cors(Resp::new(StatusCode::OK))
        .header(header::CONTENT_TYPE, IPNS_RECORD)
        .header(header::ETAG, etag)
        .header(header::CACHE_CONTROL, cache)
        .header(header::VARY, "Accept")
        .body(full(raw))
}

fn providers(state: &State, arg: &str, accept: &str) -> Response<Body> {
    let cid = match Cid::try_from(arg) {
        Ok(c) => c,
        Err(e) => {
            return fail(
                StatusCode::BAD_REQUEST,
                format!("/routing/v1/providers/{arg}: not a CID: {e}"),
            )
        }
    };
    let own = state
        .own_record
        .as_ref()
        .filter(|_| state.blocks.has_local(&cid));
    let Some(own) = own else {
        return fail(
            StatusCode::NOT_FOUND,
            format!("no provider known for {cid}: the block is not held here"),
        );
    };
    records(own, "Providers", accept, PROVIDERS_CACHE)
}

fn peers(state: &State, arg: &str, accept: &str) -> Response<Body> {
    let asked = match Name::parse(arg) {
        Ok(n) => n,
        Err(e) => {
            return fail(
                StatusCode::BAD_REQUEST,
                format!("/routing/v1/peers/{arg}: {e}"),
            )
        }
    };
    let own = state
        .own_record
        .as_ref()
        .filter(|o| Name::parse(&o.peer_id).is_ok_and(|me| me == asked));
    let Some(own) = own else {
        return fail(
            StatusCode::NOT_FOUND,
            format!("no record of peer {arg}: this router knows only itself"),
        );
    };
    records(own, "Peers", accept, MISS_CACHE)
}

/// One record, as `{"<list>": [record]}` or as one NDJSON line when the client asked for a
/// stream.
fn records(own: &OwnRecord, list: &str, accept: &str, cache: &str) -> Response<Body> {
    let (content_type, body) = if accept.contains(NDJSON) {
        (NDJSON, format!("{}\n", own.json))
    } else {
        (JSON, serde_json::json!({ list: [&own.json] }).to_string())
    };
    cors(Resp::new(StatusCode::OK))
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, cache)
        .header(header::VARY, "Accept")
        .body(full(body))
}

/// An error answer: plain text, readable cross-origin, cached briefly (a miss may become a
/// hit once the block or record arrives).
fn fail(status: StatusCode, msg: String) -> Response<Body> {
    tracing::debug!(status = status.as_u16(), "routing: {msg}");
    cors(Resp::new(status))
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::CACHE_CONTROL, MISS_CACHE)
        .body(full(format!("{msg}\n")))
}
