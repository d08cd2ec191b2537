//! Delegated content routing over HTTP: the Routing V1 API (IPIP-337,
//! `specs.ipfs.tech/routing/http-routing-v1`), provider lookups only.
//!
//! `GET {base}/routing/v1/providers/{cid}` answers either JSON
//! (`{"Providers":[{"Schema":"peer","ID":"12D3…","Addrs":["/ip4/…"],"Protocols":["transport-bitswap"]}]}`)
//! or, when asked with `Accept: application/x-ndjson`, one such record per line. The answer is
//! only a hint about whom to dial: nothing from a router is trusted beyond that, since every
//! block is verified against its CID when it arrives. So parsing is lenient per record (a bad
//! record or address is skipped) and strict about size (the body is capped).

use std::collections::HashMap;
use std::str::FromStr as _;
use std::time::Duration;

use cid::Cid;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use url::Url;

/// Largest response body read from a router.
pub const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// The transport name routers use for bitswap providers.
pub const TRANSPORT_BITSWAP: &str = "transport-bitswap";

/// Longest time spent connecting to a router (the overall timeout still applies).
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A peer a router says provides the content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    pub peer_id: PeerId,
    /// Addresses to dial, without a trailing `/p2p/<peer_id>`. May be empty: the router did
    /// not know them (look the peer up elsewhere).
    pub addrs: Vec<Multiaddr>,
    /// Transports the router says the peer supports (`transport-bitswap`, …); empty when
    /// the router did not say.
    pub protocols: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    #[error("routing: invalid router URL {url}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("routing: HTTP client: {0}")]
    Client(String),
    #[error("routing: {url}: HTTP status {status}")]
    Status { url: String, status: u16 },
    #[error("routing: {url}: response body exceeds {max} bytes")]
    TooLarge { url: String, max: usize },
    #[error("routing: {url}: invalid response: {reason}")]
    BadResponse { url: String, reason: String },
    #[error("routing: {url}: {reason}")]
    Http { url: String, reason: String },
    /// Every router failed; one line per router.
    #[error("routing: every router failed: {}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    AllFailed(Vec<RoutingError>),
}

/// A client for one or more delegated routers, all asked at once.
#[derive(Debug, Clone)]
pub struct DelegatedRouting {
    client: reqwest::Client,
    urls: Vec<Url>,
}

impl DelegatedRouting {
    /// `urls` are router base URLs (`https://delegated-ipfs.dev`, or with a path prefix);
    /// `timeout` bounds each whole request, body included.
    pub fn new(urls: Vec<Url>, timeout: Duration) -> Result<Self, RoutingError> {
        for u in &urls {
            let bad = |reason: &str| RoutingError::BadUrl {
                url: u.to_string(),
                reason: reason.to_string(),
            };
            if u.scheme() != "http" && u.scheme() != "https" {
                return Err(bad("only http and https are supported"));
            }
            if u.host().is_none() || u.cannot_be_a_base() {
                return Err(bad("no host"));
            }
            if u.query().is_some() || u.fragment().is_some() {
                return Err(bad("a base URL takes no query or fragment"));
            }
        }

        // reqwest panics when building a client without a rustls crypto provider; the binary
        // installs ring at start-up, do the same here if nobody did (tests, other embedders).
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        // Only ever contact the routers we were given: no system proxies, no redirects.
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .referer(false)
            .connect_timeout(timeout.min(MAX_CONNECT_TIMEOUT))
            .timeout(timeout)
            .user_agent(concat!("ipfs-mount/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| RoutingError::Client(e.to_string()))?;
        Ok(DelegatedRouting { client, urls })
    }

    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }

    /// Providers of `cid` that may speak bitswap, from every router at once, merged by peer
    /// (addresses and protocols combined). A 404 is an empty answer. Fails only when every
    /// router fails; with no routers the answer is empty.
    pub async fn find_providers(&self, cid: &Cid) -> Result<Vec<Provider>, RoutingError> {
        // Routers index by multihash, but the API takes a CIDv1 string; base32 is what
        // Display gives a CIDv1. A CIDv0 becomes the equivalent dag-pb CIDv1.
        let key = Cid::new_v1(cid.codec(), *cid.hash()).to_string();
        let answers =
            futures::future::join_all(self.urls.iter().map(|base| self.ask(base, &key))).await;

        let mut merged: Vec<Provider> = Vec::new();
        let mut index: HashMap<PeerId, usize> = HashMap::new();
        let mut errors = Vec::new();
        let mut any_ok = false;
        for answer in answers {
            match answer {
                Ok(providers) => {
                    any_ok = true;
                    for p in providers {
                        merge(&mut merged, &mut index, p);
                    }
                }
                Err(e) => {
                    tracing::debug!("{e}");
                    errors.push(e);
                }
            }
        }
        if any_ok || errors.is_empty() {
            Ok(merged)
        } else {
            Err(RoutingError::AllFailed(errors))
        }
    }

    /// One router's answer for the CIDv1 string `key`.
    async fn ask(&self, base: &Url, key: &str) -> Result<Vec<Provider>, RoutingError> {
        let url = providers_url(base, key);
        let http = |e: reqwest::Error| RoutingError::Http {
            url: url.to_string(),
            reason: error_chain(&e),
        };
        let mut resp = self
            .client
            .get(url.clone())
            .header(
                reqwest::header::ACCEPT,
                "application/x-ndjson, application/json",
            )
            .send()
            .await
            .map_err(http)?;

        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        if !status.is_success() {
            return Err(RoutingError::Status {
                url: url.to_string(),
                status: status.as_u16(),
            });
        }
        let too_large = || RoutingError::TooLarge {
            url: url.to_string(),
            max: MAX_RESPONSE_BYTES,
        };
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
        {
            return Err(too_large());
        }
        // A legacy server may answer JSON even when asked for NDJSON: the spec says to go by
        // Content-Type.
        let ndjson = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/x-ndjson"))
            });

        // Read by chunks so a body without (or lying about) Content-Length is still capped.
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(http)? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }

        let records = if ndjson {
            parse_ndjson(&body)
        } else {
            parse_json(&body).map_err(|reason| RoutingError::BadResponse {
                url: url.to_string(),
                reason,
            })?
        };
        Ok(records
            .iter()
            .filter_map(|r| match parse_record(r) {
                Ok(p) => p,
                Err(why) => {
                    tracing::debug!("routing: {url}: skipping provider record: {why}");
                    None
                }
            })
            .collect())
    }
}

/// `{base}/routing/v1/providers/{key}`, keeping any path prefix of `base`.
fn providers_url(base: &Url, key: &str) -> Url {
    let mut url = base.clone();
    // `new` rejected cannot-be-a-base URLs, so path_segments_mut succeeds.
    if let Ok(mut segs) = url.path_segments_mut() {
        segs.pop_if_empty()
            .extend(["routing", "v1", "providers", key]);
    }
    url
}

/// The whole `source()` chain: reqwest's top-level message alone rarely says what failed.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

/// `{"Providers": [...]}`; `null` or a missing list is no providers.
fn parse_json(body: &[u8]) -> Result<Vec<serde_json::Value>, String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let obj = v.as_object().ok_or("top level is not an object")?;
    match obj.get("Providers") {
        None | Some(serde_json::Value::Null) => Ok(Vec::new()),
        Some(serde_json::Value::Array(list)) => Ok(list.clone()),
        Some(_) => Err("\"Providers\" is not a list".into()),
    }
}

/// One record per line; blank lines are allowed and a line that is not JSON is skipped.
fn parse_ndjson(body: &[u8]) -> Vec<serde_json::Value> {
    body.split(|&b| b == b'\n')
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
        .filter_map(|line| match serde_json::from_slice(line) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::debug!("routing: skipping an NDJSON line that is not JSON: {e}");
                None
            }
        })
        .collect()
}

/// A provider from one record: `Ok(None)` for records to ignore (another schema, or no
/// bitswap among the protocols), `Err` for malformed ones.
fn parse_record(v: &serde_json::Value) -> Result<Option<Provider>, String> {
    let obj = v.as_object().ok_or("not an object")?;
    let schema = obj.get("Schema").and_then(|s| s.as_str()).unwrap_or("");
    let protocols: Vec<String> = match schema {
        "peer" => match obj.get("Protocols") {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect(),
            Some(_) => return Err("\"Protocols\" is not a list".into()),
        },
        // The legacy `bitswap` schema (same ID/Addrs as `peer`) says bitswap by its name.
        "bitswap" => vec![TRANSPORT_BITSWAP.to_owned()],
        other => {
            tracing::debug!("routing: ignoring a record of schema {other:?}");
            return Ok(None);
        }
    };
    if !protocols.is_empty() && !protocols.iter().any(|p| p == TRANSPORT_BITSWAP) {
        return Ok(None);
    }

    let id = obj
        .get("ID")
        .and_then(|s| s.as_str())
        .ok_or("no \"ID\" string")?;
    let peer_id = parse_peer_id(id)?;

    let addrs = match obj.get("Addrs") {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::Array(list)) => list
            .iter()
            .filter_map(|a| {
                let s = a.as_str()?;
                match Multiaddr::from_str(s) {
                    Ok(ma) => Some(strip_own_p2p(ma, &peer_id)),
                    Err(e) => {
                        tracing::debug!("routing: {peer_id}: skipping address {s:?}: {e}");
                        None
                    }
                }
            })
            .collect(),
        Some(_) => return Err(format!("{peer_id}: \"Addrs\" is not a list")),
    };
    let mut p = Provider {
        peer_id,
        addrs: Vec::new(),
        protocols: Vec::new(),
    };
    extend_unique(&mut p.addrs, addrs);
    extend_unique(&mut p.protocols, protocols);
    Ok(Some(p))
}

/// A peer ID string: base58btc multihash (`12D3Koo…`, `Qm…`) or a CIDv1 with the
/// `libp2p-key` codec (`bafz…`, `k51…`).
fn parse_peer_id(s: &str) -> Result<PeerId, String> {
    if let Ok(p) = PeerId::from_str(s) {
        return Ok(p);
    }
    let cid = ipfs_mount_ipld::cids::parse(s).map_err(|e| format!("bad peer ID {s:?}: {e}"))?;
    if cid.codec() != ipfs_mount_ipld::codec::LIBP2P_KEY {
        return Err(format!("peer ID CID {s:?} is not libp2p-key"));
    }
    PeerId::from_bytes(&cid.hash().to_bytes()).map_err(|e| format!("bad peer ID {s:?}: {e}"))
}

/// Drop a trailing `/p2p/<peer_id>` naming the provider itself, so the same address from two
/// routers, with and without it, is one address. Other `/p2p/` parts (relays) stay.
fn strip_own_p2p(mut ma: Multiaddr, peer: &PeerId) -> Multiaddr {
    if matches!(ma.iter().last(), Some(Protocol::P2p(p)) if p == *peer) {
        ma.pop();
    }
    ma
}

fn extend_unique<T: PartialEq>(dst: &mut Vec<T>, src: Vec<T>) {
    for x in src {
        if !dst.contains(&x) {
            dst.push(x);
        }
    }
}

/// Add `p` to `merged`, combining it with an earlier record of the same peer.
fn merge(merged: &mut Vec<Provider>, index: &mut HashMap<PeerId, usize>, p: Provider) {
    match index.get(&p.peer_id) {
        Some(&i) => {
            let existing = &mut merged[i];
            extend_unique(&mut existing.addrs, p.addrs);
            extend_unique(&mut existing.protocols, p.protocols);
        }
        None => {
            index.insert(p.peer_id, merged.len());
            merged.push(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipfs_mount_ipld::{cids, codec, mh};
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    /// What the test server answers: status, content type, body, and whether to send a
    /// Content-Length (without one the body ends when the connection closes).
    #[derive(Clone)]
    struct Reply {
        status: u16,
        content_type: &'static str,
        body: Vec<u8>,
        content_length: bool,
    }

    fn reply(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            content_type,
            body: body.into(),
            content_length: true,
        }
    }

    /// A one-route HTTP/1.1 server on 127.0.0.1 answering every request with `r`; returns
    /// its base URL and the request heads it saw.
    async fn serve(r: Reply) -> (Url, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let r = r.clone();
                let seen = seen2.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    seen.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&head).into_owned());
                    let mut out = format!(
                        "HTTP/1.1 {} X\r\nContent-Type: {}\r\nConnection: close\r\n",
                        r.status, r.content_type
                    );
                    if r.content_length {
                        out.push_str(&format!("Content-Length: {}\r\n", r.body.len()));
                    }
                    out.push_str("\r\n");
                    let _ = sock.write_all(out.as_bytes()).await;
                    let _ = sock.write_all(&r.body).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        (Url::parse(&format!("http://{addr}/")).unwrap(), seen)
    }

    fn peer(n: u8) -> PeerId {
        let mut b = vec![0x12, 0x20];
        b.extend_from_slice(&[n; 32]);
        PeerId::from_bytes(&b).unwrap()
    }

    fn ma(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    fn cid() -> Cid {
        cids::compute(cid::Version::V0, codec::DAG_PB, mh::SHA2_256, b"content").unwrap()
    }

    fn routing(urls: Vec<Url>) -> DelegatedRouting {
        DelegatedRouting::new(urls, Duration::from_secs(10)).unwrap()
    }

    #[tokio::test]
    async fn json_response_and_request_shape() {
        let body = format!(
            r#"{{"Providers":[
                {{"Schema":"peer","ID":"{}","Addrs":["/ip4/10.0.0.1/tcp/4001","/ip4/10.0.0.1/udp/4001/quic-v1"],"Protocols":["transport-bitswap"],"Extra":{{"x":1}}}},
                {{"Schema":"peer","ID":"{}","Addrs":null}},
                {{"Schema":"bitswap","Protocol":"transport-bitswap","ID":"{}","Addrs":["/dns4/example.org/tcp/4001/p2p/{}"]}}
            ]}}"#,
            peer(1),
            peer(2),
            peer(3),
            peer(3)
        );
        let (url, seen) = serve(reply(200, "application/json", body)).await;
        let r = routing(vec![url]);
        let got = r.find_providers(&cid()).await.unwrap();
        assert_eq!(
            got,
            vec![
                Provider {
                    peer_id: peer(1),
                    addrs: vec![
                        ma("/ip4/10.0.0.1/tcp/4001"),
                        ma("/ip4/10.0.0.1/udp/4001/quic-v1")
                    ],
                    protocols: vec!["transport-bitswap".into()],
                },
                Provider {
                    peer_id: peer(2),
                    addrs: vec![],
                    protocols: vec![],
                },
                Provider {
                    peer_id: peer(3),
                    addrs: vec![ma("/dns4/example.org/tcp/4001")],
                    protocols: vec!["transport-bitswap".into()],
                },
            ]
        );
        let seen = seen.lock().unwrap();
        let head = seen[0].to_ascii_lowercase();
        let v1 = Cid::new_v1(codec::DAG_PB, *cid().hash()).to_string();
        assert!(v1.starts_with("bafybei"), "{v1}");
        assert!(
            head.starts_with(&format!("get /routing/v1/providers/{v1} http/1.1\r\n")),
            "{head}"
        );
        assert!(
            head.contains("accept: application/x-ndjson, application/json\r\n"),
            "{head}"
        );
    }

    #[tokio::test]
    async fn ndjson_response_and_base_path() {
        let key = Cid::new_v1(0x72, *peer(5).as_ref()).to_string();
        let body = format!(
            "{{\"Schema\":\"peer\",\"ID\":\"{}\",\"Addrs\":[\"/ip4/10.0.0.4/tcp/1\"],\"Protocols\":[\"transport-ipfs-gateway-http\",\"transport-bitswap\"]}}\n\
             \n\
             not json at all\n\
             {{\"Schema\":\"peer\",\"ID\":\"{key}\"}}\r\n\
             {{\"Schema\":\"peer\",\"ID\":\"{}\",\"Addrs\":[\"/ip4/10.0.0.6/tcp/1\"]}}",
            peer(4),
            peer(6)
        );
        let (url, seen) = serve(reply(200, "application/x-ndjson; charset=utf-8", body)).await;
        let base = url.join("prefix/").unwrap();
        let got = routing(vec![base]).find_providers(&cid()).await.unwrap();
        let ids: Vec<PeerId> = got.iter().map(|p| p.peer_id).collect();
        assert_eq!(ids, vec![peer(4), peer(5), peer(6)]);
        assert_eq!(got[0].protocols.len(), 2);
        assert_eq!(got[2].addrs, vec![ma("/ip4/10.0.0.6/tcp/1")]);
        assert!(seen.lock().unwrap()[0].starts_with("GET /prefix/routing/v1/providers/bafy"));
    }

    #[tokio::test]
    async fn not_found_is_no_providers() {
        let (url, _) = serve(reply(404, "text/plain", "not found")).await;
        let got = routing(vec![url]).find_providers(&cid()).await.unwrap();
        assert!(got.is_empty());
    }

    #[tokio::test]
    async fn one_router_fails_another_answers_and_merge() {
        let (bad, _) = serve(reply(500, "text/plain", "boom")).await;
        let a = format!(
            r#"{{"Providers":[{{"Schema":"peer","ID":"{}","Addrs":["/ip4/10.0.0.1/tcp/1"],"Protocols":["transport-bitswap"]}}]}}"#,
            peer(1)
        );
        let b = format!(
            "{{\"Schema\":\"peer\",\"ID\":\"{p}\",\"Addrs\":[\"/ip4/10.0.0.1/tcp/1/p2p/{p}\",\"/ip4/10.0.0.2/tcp/1\"]}}\n\
             {{\"Schema\":\"peer\",\"ID\":\"{q}\"}}\n",
            p = peer(1),
            q = peer(2)
        );
        let (ua, _) = serve(reply(200, "application/json", a)).await;
        let (ub, _) = serve(reply(200, "application/x-ndjson", b)).await;
        let got = routing(vec![bad.clone(), ua, ub])
            .find_providers(&cid())
            .await
            .unwrap();
        assert_eq!(
            got,
            vec![
                Provider {
                    peer_id: peer(1),
                    addrs: vec![ma("/ip4/10.0.0.1/tcp/1"), ma("/ip4/10.0.0.2/tcp/1")],
                    protocols: vec!["transport-bitswap".into()],
                },
                Provider {
                    peer_id: peer(2),
                    addrs: vec![],
                    protocols: vec![],
                },
            ]
        );

        // With only failing routers the lookup fails, naming each.
        let (bad2, _) = serve(reply(503, "text/plain", "")).await;
        let err = routing(vec![bad, bad2])
            .find_providers(&cid())
            .await
            .unwrap_err();
        match &err {
            RoutingError::AllFailed(v) => {
                assert_eq!(v.len(), 2);
                assert!(matches!(v[0], RoutingError::Status { status: 500, .. }));
                assert!(matches!(v[1], RoutingError::Status { status: 503, .. }));
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("503"), "{err}");
    }

    #[tokio::test]
    async fn malformed_and_foreign_records_are_skipped() {
        let body = format!(
            r#"{{"Providers":[
                "a string",
                {{"Schema":"peer"}},
                {{"Schema":"peer","ID":"not-a-peer-id"}},
                {{"Schema":"peer","ID":"{cid}"}},
                {{"Schema":"peer","ID":17}},
                {{"Schema":"peer","ID":"{p1}","Addrs":"/ip4/1.2.3.4/tcp/1"}},
                {{"Schema":"peer","ID":"{p1}","Protocols":"transport-bitswap"}},
                {{"Schema":"peer","ID":"{p2}","Protocols":["transport-graphsync-filecoinv1"]}},
                {{"Schema":"graphsync-filecoinv1","ID":"{p3}","Addrs":[]}},
                {{"Schema":"announcement","Payload":{{}}}},
                {{"ID":"{p3}"}},
                {{"Schema":"peer","ID":"{p4}","Addrs":["/ip4/999.0.0.1/tcp/1","garbage",7,"/ip6/::1/tcp/5"],"Protocols":[1,"transport-bitswap"]}}
            ]}}"#,
            // A CIDv1 of another codec is no peer ID. (A CIDv0 string would be: it is a
            // base58 sha2-256 multihash, just like an RSA peer ID.)
            cid = Cid::new_v1(codec::RAW, *cid().hash()),
            p1 = peer(1),
            p2 = peer(2),
            p3 = peer(3),
            p4 = peer(4),
        );
        let (url, _) = serve(reply(200, "application/json", body)).await;
        let got = routing(vec![url]).find_providers(&cid()).await.unwrap();
        assert_eq!(
            got,
            vec![Provider {
                peer_id: peer(4),
                addrs: vec![ma("/ip6/::1/tcp/5")],
                protocols: vec!["transport-bitswap".into()],
            }]
        );

        // A JSON answer that is not the expected shape fails that router.
        for body in ["[]", "{\"Providers\":{}}", "{not json"] {
            let (url, _) = serve(reply(200, "application/json", body)).await;
            let err = routing(vec![url]).find_providers(&cid()).await.unwrap_err();
            assert!(
                matches!(&err, RoutingError::AllFailed(v) if matches!(v[0], RoutingError::BadResponse { .. })),
                "{body}: {err:?}"
            );
        }
        // `null` providers is an empty answer.
        let (url, _) = serve(reply(200, "application/json", "{\"Providers\":null}")).await;
        assert!(routing(vec![url])
            .find_providers(&cid())
            .await
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn oversized_body_is_rejected() {
        // One valid record padded past the cap with blank lines: rejected, not half-read.
        let mut body = format!("{{\"Schema\":\"peer\",\"ID\":\"{}\"}}\n", peer(1)).into_bytes();
        body.resize(MAX_RESPONSE_BYTES + 1, b'\n');
        for content_length in [true, false] {
            let (url, _) = serve(Reply {
                content_length,
                ..reply(200, "application/x-ndjson", body.clone())
            })
            .await;
            let err = routing(vec![url]).find_providers(&cid()).await.unwrap_err();
            assert!(
                matches!(&err, RoutingError::AllFailed(v) if matches!(v[0], RoutingError::TooLarge { .. })),
                "content_length={content_length}: {err:?}"
            );
        }
        // Exactly at the cap is fine.
        body.truncate(MAX_RESPONSE_BYTES);
        let (url, _) = serve(Reply {
            content_length: false,
            ..reply(200, "application/x-ndjson", body)
        })
        .await;
        let got = routing(vec![url]).find_providers(&cid()).await.unwrap();
        assert_eq!(got.len(), 1);
    }

    #[tokio::test]
    async fn unreachable_router_and_timeout() {
        // A port nobody listens on (bound, then closed).
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead = Url::parse(&format!("http://{}/", l.local_addr().unwrap())).unwrap();
        drop(l);
        // A server that accepts and never answers.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_url = Url::parse(&format!("http://{}/", silent.local_addr().unwrap())).unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = silent.accept().await {
                held.push(s);
            }
        });
        let r = DelegatedRouting::new(vec![dead, silent_url], Duration::from_millis(500)).unwrap();
        let start = std::time::Instant::now();
        let err = r.find_providers(&cid()).await.unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(
            matches!(&err, RoutingError::AllFailed(v) if v.len() == 2 && v.iter().all(|e| matches!(e, RoutingError::Http { .. }))),
            "{err:?}"
        );
    }

    #[test]
    fn constructor_checks() {
        let ok =
            |s: &str| DelegatedRouting::new(vec![Url::parse(s).unwrap()], Duration::from_secs(1));
        assert!(ok("http://127.0.0.1:1/").is_ok());
        assert!(ok("https://router.example/some/prefix").is_ok());
        assert!(matches!(
            ok("ftp://127.0.0.1/"),
            Err(RoutingError::BadUrl { .. })
        ));
        assert!(matches!(
            ok("http://127.0.0.1/?x=1"),
            Err(RoutingError::BadUrl { .. })
        ));
        assert!(matches!(ok("mailto:a@b"), Err(RoutingError::BadUrl { .. })));
        let none = DelegatedRouting::new(vec![], Duration::from_secs(1)).unwrap();
        assert!(none.is_empty());
        assert!(!ok("http://127.0.0.1:1/").unwrap().is_empty());
    }

    #[tokio::test]
    async fn no_routers_is_an_empty_answer() {
        let none = DelegatedRouting::new(vec![], Duration::from_secs(1)).unwrap();
        assert!(none.find_providers(&cid()).await.unwrap().is_empty());
    }

    #[test]
    fn urls_and_peer_ids() {
        let key = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi";
        let cases = [
            ("http://h/", "http://h/routing/v1/providers/"),
            ("http://h", "http://h/routing/v1/providers/"),
            ("http://h/p", "http://h/p/routing/v1/providers/"),
            ("http://h/p/", "http://h/p/routing/v1/providers/"),
        ];
        for (base, want) in cases {
            let got = providers_url(&Url::parse(base).unwrap(), key);
            assert_eq!(got.as_str(), format!("{want}{key}"), "{base}");
        }
        // Base58 multihash and libp2p-key CIDv1 (any base) name the same peer.
        let p = peer(9);
        let as_cid = Cid::new_v1(codec::LIBP2P_KEY, *p.as_ref());
        assert_eq!(parse_peer_id(&p.to_string()).unwrap(), p);
        assert_eq!(parse_peer_id(&as_cid.to_string()).unwrap(), p);
        let b36 = as_cid.to_string_of_base(multibase_base36()).unwrap();
        assert_eq!(parse_peer_id(&b36).unwrap(), p);
        // A CID of another codec is not a peer ID.
        assert!(parse_peer_id(&Cid::new_v1(codec::RAW, *p.as_ref()).to_string()).is_err());
        // Our own /p2p suffix goes, a relay's stays.
        let relay = peer(10);
        let a = ma(&format!(
            "/ip4/1.2.3.4/tcp/1/p2p/{relay}/p2p-circuit/p2p/{p}"
        ));
        assert_eq!(
            strip_own_p2p(a, &p),
            ma(&format!("/ip4/1.2.3.4/tcp/1/p2p/{relay}/p2p-circuit"))
        );
        let other = ma(&format!("/ip4/1.2.3.4/tcp/1/p2p/{relay}"));
        assert_eq!(strip_own_p2p(other.clone(), &p), other);
    }

    fn multibase_base36() -> cid::multibase::Base {
        cid::multibase::Base::Base36Lower
    }
}
