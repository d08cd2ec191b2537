//! DNSLink resolution (`src/names/dnslink.rs`) against a small DNS server this test starts on
//! 127.0.0.1 (UDP and TCP on one port), serving TXT (and CNAME) answers from a map and counting
//! every query it gets. Nothing here talks to any other address: each resolver is built with that
//! one server only, and the tests check that every query the server sees comes from loopback.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_resolver::proto::op::{Message, ResponseCode};
use hickory_resolver::proto::rr::rdata::{CNAME, TXT};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use ipfs_mount::names::dnslink::{is_dnslink_candidate, DnsLinkError, DnsLinkResolver, MAX_STEPS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

const CID: &str = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi";
const CID0: &str = "QmWvY6FaqFMS89YAQ9NAPjVP4WZKA1qbHbicc9HeSKQTgt";
const KEY: &str = "k51qzi5uqu5dlvj2baxnqndepeb86cbk3ng7n3i46uzyxzyqj2xjonzllnv0v8";
const TIMEOUT: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------------
// The test DNS server
// ---------------------------------------------------------------------------------------------

/// One TXT record: its character-strings.
type TxtRecord = Vec<Vec<u8>>;

/// What the server answers. Names are lowercase, without the trailing dot.
#[derive(Default, Clone)]
struct Zone {
    /// name → TXT records (each a list of character-strings) and their TTL
    txt: HashMap<String, (u32, Vec<TxtRecord>)>,
    /// name → (TTL, target)
    cname: HashMap<String, (u32, String)>,
    /// names that exist (NOERROR) but hold no TXT record
    empty: HashSet<String>,
    /// names answered with SERVFAIL
    servfail: HashSet<String>,
    /// names whose UDP answer is truncated (TC, no records): the full answer comes over TCP
    truncate_udp: HashSet<String>,
}

impl Zone {
    fn new() -> Self {
        Self::default()
    }
    /// One TXT record per value, one character-string each.
    fn txt(mut self, name: &str, ttl: u32, values: &[&str]) -> Self {
        let records = values.iter().map(|v| vec![v.as_bytes().to_vec()]).collect();
        self.txt.insert(name.to_string(), (ttl, records));
        self
    }
    /// One TXT record made of several character-strings.
    fn txt_split(mut self, name: &str, ttl: u32, parts: &[&str]) -> Self {
        let record = parts.iter().map(|p| p.as_bytes().to_vec()).collect();
        self.txt.insert(name.to_string(), (ttl, vec![record]));
        self
    }
    /// `_dnslink.<domain>` → `dnslink=<value>` (TTL 300)
    fn link(self, domain: &str, value: &str) -> Self {
        self.txt(
            &format!("_dnslink.{domain}"),
            300,
            &[&format!("dnslink={value}")],
        )
    }
}

#[derive(Default)]
struct Log {
    /// query names (lowercase, no trailing dot), in arrival order, UDP and TCP
    names: Vec<String>,
    udp: usize,
    tcp: usize,
    /// source addresses of every datagram or connection
    sources: Vec<SocketAddr>,
}

struct DnsServer {
    addr: SocketAddr,
    log: Arc<Mutex<Log>>,
}

impl DnsServer {
    /// Serves `zone` on 127.0.0.1 (UDP and TCP, same port) until the runtime ends.
    async fn start(zone: Zone) -> Self {
        Self::start_with(Some(zone)).await
    }

    /// A server that reads queries (and counts them) but never answers.
    async fn black_hole() -> Self {
        Self::start_with(None).await
    }

    async fn start_with(zone: Option<Zone>) -> Self {
        let (udp, tcp) = bind_pair().await;
        let addr = udp.local_addr().unwrap();
        assert_eq!(addr.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        let log = Arc::new(Mutex::new(Log::default()));
        let zone = zone.map(Arc::new);

        let (udp_log, udp_zone) = (log.clone(), zone.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65535];
            loop {
                let Ok((n, from)) = udp.recv_from(&mut buf).await else {
                    return;
                };
                let reply = handle(&buf[..n], from, true, udp_zone.as_deref(), &udp_log);
                if let Some(reply) = reply {
                    let _ = udp.send_to(&reply, from).await;
                }
            }
        });

        let (tcp_log, tcp_zone) = (log.clone(), zone);
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, from)) = tcp.accept().await else {
                    return;
                };
                let (log, zone) = (tcp_log.clone(), tcp_zone.clone());
                tokio::spawn(async move {
                    loop {
                        let mut len = [0u8; 2];
                        if stream.read_exact(&mut len).await.is_err() {
                            return;
                        }
                        let mut query = vec![0u8; u16::from_be_bytes(len) as usize];
                        if stream.read_exact(&mut query).await.is_err() {
                            return;
                        }
                        let Some(reply) = handle(&query, from, false, zone.as_deref(), &log) else {
                            continue;
                        };
                        let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
                        framed.extend_from_slice(&reply);
                        if stream.write_all(&framed).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { addr, log }
    }

    fn resolver(&self) -> DnsLinkResolver {
        let r = DnsLinkResolver::new(self.addr, TIMEOUT).unwrap();
        assert_eq!(
            r.server(),
            self.addr,
            "the resolver is bound to our loopback server only"
        );
        r
    }

    fn queries(&self) -> Vec<String> {
        self.log.lock().unwrap().names.clone()
    }

    fn count(&self) -> usize {
        let log = self.log.lock().unwrap();
        log.udp + log.tcp
    }

    fn tcp_count(&self) -> usize {
        self.log.lock().unwrap().tcp
    }

    /// Every query came from loopback.
    fn assert_loopback_only(&self) {
        let log = self.log.lock().unwrap();
        for s in &log.sources {
            assert!(s.ip().is_loopback(), "query from {s}");
        }
    }
}

/// A UDP socket and a TCP listener on the same 127.0.0.1 port.
async fn bind_pair() -> (UdpSocket, TcpListener) {
    for _ in 0..50 {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let port = udp.local_addr().unwrap().port();
        if let Ok(tcp) = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await {
            return (udp, tcp);
        }
    }
    panic!("no free UDP+TCP port pair on 127.0.0.1");
}

fn handle(
    query: &[u8],
    from: SocketAddr,
    udp: bool,
    zone: Option<&Zone>,
    log: &Mutex<Log>,
) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    let q = request.queries.first()?.clone();
    let name = q
        .name()
        .to_ascii()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    {
        let mut log = log.lock().unwrap();
        log.names.push(name.clone());
        log.sources.push(from);
        if udp {
            log.udp += 1;
        } else {
            log.tcp += 1;
        }
    }
    let zone = zone?;

    let mut reply = Message::response(request.metadata.id, request.metadata.op_code);
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.metadata.authoritative = true;
    reply.add_query(q.clone());

    if zone.servfail.contains(&name) {
        reply.metadata.response_code = ResponseCode::ServFail;
        return reply.to_vec().ok();
    }
    if udp && zone.truncate_udp.contains(&name) {
        reply.metadata.truncation = true;
        return reply.to_vec().ok();
    }
    if q.query_type() != RecordType::TXT {
        return reply.to_vec().ok();
    }
    // Follow CNAMEs (bounded), as an authoritative server holding both names would.
    let mut current = name;
    let mut owner = q.name().clone();
    for _ in 0..8 {
        if let Some((ttl, target)) = zone.cname.get(&current) {
            let target_name = Name::from_ascii(format!("{target}.")).unwrap();
            reply.add_answer(Record::from_rdata(
                owner.clone(),
                *ttl,
                RData::CNAME(CNAME(target_name.clone())),
            ));
            owner = target_name;
            current = target.clone();
            continue;
        }
        break;
    }
    if let Some((ttl, records)) = zone.txt.get(&current) {
        for strings in records {
            let parts: Vec<&[u8]> = strings.iter().map(Vec::as_slice).collect();
            reply.add_answer(Record::from_rdata(
                owner.clone(),
                *ttl,
                RData::TXT(TXT::from_bytes(parts)),
            ));
        }
    } else if !zone.empty.contains(&current) && reply.answers.is_empty() {
        reply.metadata.response_code = ResponseCode::NXDomain;
    }
    reply.to_vec().ok()
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn ipfs_record() {
    let dns = DnsServer::start(Zone::new().txt(
        "_dnslink.example.com",
        120,
        &[&format!("dnslink=/ipfs/{CID}")],
    ))
    .await;
    let r = dns.resolver();
    let (path, ttl) = r.resolve("example.com").await.unwrap();
    assert_eq!(path, format!("/ipfs/{CID}"));
    assert_eq!(ttl, Duration::from_secs(120));
    assert_eq!(
        dns.queries(),
        ["_dnslink.example.com"],
        "one query, at _dnslink. only"
    );
    dns.assert_loopback_only();
}

#[tokio::test]
async fn ipfs_record_with_path_and_caller_path() {
    let dns =
        DnsServer::start(Zone::new().link("example.com", &format!("/ipfs/{CID0}/docs/v1/"))).await;
    let r = dns.resolver();
    assert_eq!(
        r.resolve("example.com").await.unwrap().0,
        format!("/ipfs/{CID0}/docs/v1")
    );
    // A path after the domain is appended after the record's own path.
    let r = dns.resolver();
    assert_eq!(
        r.resolve("Example.COM/extra//file.txt").await.unwrap().0,
        format!("/ipfs/{CID0}/docs/v1/extra/file.txt")
    );
    dns.assert_loopback_only();
}

#[tokio::test]
async fn ipns_key_is_returned_as_is() {
    let dns =
        DnsServer::start(Zone::new().link("key.example.org", &format!("/ipns/{KEY}/sub/dir")))
            .await;
    let r = dns.resolver();
    let (path, ttl) = r.resolve("key.example.org/x").await.unwrap();
    assert_eq!(path, format!("/ipns/{KEY}/sub/dir/x"));
    assert_eq!(ttl, Duration::from_secs(300));
    assert_eq!(dns.count(), 1, "an IPNS key is not looked up in DNS");

    let peer = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";
    let dns =
        DnsServer::start(Zone::new().link("peer.example.org", &format!("/ipns/{peer}"))).await;
    assert_eq!(
        dns.resolver().resolve("peer.example.org").await.unwrap().0,
        format!("/ipns/{peer}")
    );
    assert_eq!(dns.count(), 1);
}

#[tokio::test]
async fn ipns_domain_is_followed_with_paths_and_smallest_ttl() {
    let zone = Zone::new()
        .txt("_dnslink.a.test", 300, &["dnslink=/ipns/b.test/x"])
        .txt("_dnslink.b.test", 60, &["dnslink=/ipns/C.Test/y/"])
        .txt("_dnslink.c.test", 600, &[&format!("dnslink=/ipfs/{CID}/z")]);
    let dns = DnsServer::start(zone).await;
    let r = dns.resolver();
    let (path, ttl) = r.resolve("a.test/w").await.unwrap();
    assert_eq!(path, format!("/ipfs/{CID}/z/y/x/w"));
    assert_eq!(ttl, Duration::from_secs(60));
    assert_eq!(
        dns.queries(),
        ["_dnslink.a.test", "_dnslink.b.test", "_dnslink.c.test"]
    );

    // Chained through an IPNS key: the key ends the DNS part.
    let zone = Zone::new()
        .link("a.test", "/ipns/b.test/x")
        .link("b.test", &format!("/ipns/{KEY}/y"));
    let dns = DnsServer::start(zone).await;
    assert_eq!(
        dns.resolver().resolve("a.test").await.unwrap().0,
        format!("/ipns/{KEY}/y/x")
    );
    assert_eq!(dns.count(), 2);
    dns.assert_loopback_only();
}

#[tokio::test]
async fn loops_fail_cleanly() {
    let zone = Zone::new()
        .link("a.test", "/ipns/b.test")
        .link("b.test", "/ipns/A.test/p");
    let dns = DnsServer::start(zone).await;
    let r = dns.resolver();
    assert_eq!(r.resolve("a.test").await, Err(DnsLinkError::Loop));
    assert_eq!(
        dns.queries(),
        ["_dnslink.a.test", "_dnslink.b.test"],
        "no query repeated"
    );

    let dns = DnsServer::start(Zone::new().link("self.test", "/ipns/self.test")).await;
    assert_eq!(
        dns.resolver().resolve("self.test").await,
        Err(DnsLinkError::Loop)
    );
    assert_eq!(dns.count(), 1);
}

#[tokio::test]
async fn chains_longer_than_32_steps_fail_cleanly() {
    // d0 → d1 → … → d{n-1} → /ipfs/CID needs n lookups.
    let chain = |n: usize| {
        let mut zone = Zone::new();
        for i in 0..n - 1 {
            zone = zone.link(
                &format!("d{i}.test"),
                &format!("/ipns/d{}.test/p{i}", i + 1),
            );
        }
        zone.link(&format!("d{}.test", n - 1), &format!("/ipfs/{CID}"))
    };
    assert_eq!(MAX_STEPS, 32);

    let dns = DnsServer::start(chain(MAX_STEPS)).await;
    let (path, _) = dns.resolver().resolve("d0.test").await.unwrap();
    let expected_suffix: String = (0..MAX_STEPS - 1).rev().map(|i| format!("/p{i}")).collect();
    assert_eq!(path, format!("/ipfs/{CID}{expected_suffix}"));
    assert_eq!(dns.count(), MAX_STEPS);

    let dns = DnsServer::start(chain(MAX_STEPS + 1)).await;
    assert_eq!(
        dns.resolver().resolve("d0.test").await,
        Err(DnsLinkError::TooDeep)
    );
    assert_eq!(dns.count(), MAX_STEPS, "stops after {MAX_STEPS} lookups");
    dns.assert_loopback_only();
}

#[tokio::test]
async fn missing_records_are_not_found() {
    let mut zone = Zone::new().link("a.test", "/ipns/missing.test").txt(
        "_dnslink.spf.test",
        300,
        &["v=spf1 -all"],
    );
    zone.empty.insert("_dnslink.nodata.test".into());
    let dns = DnsServer::start(zone).await;
    let r = dns.resolver();
    // NXDOMAIN
    assert_eq!(
        r.resolve("nothing.test").await,
        Err(DnsLinkError::NotFound("nothing.test".into()))
    );
    // NOERROR, no TXT
    assert_eq!(
        r.resolve("nodata.test").await,
        Err(DnsLinkError::NotFound("nodata.test".into()))
    );
    // TXT, but no dnslink=
    assert_eq!(
        r.resolve("spf.test").await,
        Err(DnsLinkError::NotFound("spf.test".into()))
    );
    // the second step is missing
    assert_eq!(
        r.resolve("a.test").await,
        Err(DnsLinkError::NotFound("missing.test".into()))
    );
    // No fallback to a TXT record on the domain itself (deprecated by the spec).
    assert!(
        !dns.queries().iter().any(|q| !q.starts_with("_dnslink.")),
        "{:?}",
        dns.queries()
    );
}

#[tokio::test]
async fn other_txt_records_and_namespaces_are_ignored() {
    let zone = Zone::new()
        .txt(
            "_dnslink.mixed.test",
            300,
            &[
                "v=spf1 -all",
                "google-site-verification=abc",
                "dnslink=/hyper/3a6b9c",
                "dnslink=/ipfs/not-a-cid",
                "DNSLINK=/ipfs/bafkqaaa",
                &format!("dnslink=/ipfs/{CID}"),
            ],
        )
        .txt(
            "_dnslink.bad.test",
            300,
            &[
                "dnslink=/ipfs/not-a-cid",
                "dnslink=ipfs/x",
                "dnslink=/ipns/nodot",
            ],
        )
        .txt("_dnslink.hyper.test", 300, &["dnslink=/hyper/3a6b9c"]);
    let dns = DnsServer::start(zone).await;
    let r = dns.resolver();
    assert_eq!(
        r.resolve("mixed.test").await.unwrap().0,
        format!("/ipfs/{CID}")
    );
    // dnslink= records, none usable: BadRecord (says why), not NotFound
    assert!(matches!(
        r.resolve("bad.test").await,
        Err(DnsLinkError::BadRecord(_))
    ));
    // only another namespace: nothing for us
    assert_eq!(
        r.resolve("hyper.test").await,
        Err(DnsLinkError::NotFound("hyper.test".into()))
    );
}

#[tokio::test]
async fn split_txt_strings_are_concatenated() {
    let (head, tail) = CID.split_at(20);
    let zone = Zone::new().txt_split(
        "_dnslink.split.test",
        300,
        &[
            "dnslink=/ip",
            &format!("fs/{head}"),
            &format!("{tail}/a"),
            "/b",
        ],
    );
    let dns = DnsServer::start(zone).await;
    assert_eq!(
        dns.resolver().resolve("split.test").await.unwrap().0,
        format!("/ipfs/{CID}/a/b")
    );
}

#[tokio::test]
async fn several_records_pick_the_lexicographically_first() {
    let first = format!("dnslink=/ipfs/{CID0}"); // "/ipfs/Q…" < "/ipfs/b…" < "/ipns/…"
    let second = format!("dnslink=/ipfs/{CID}");
    let third = format!("dnslink=/ipns/{KEY}");
    let zone = Zone::new()
        .txt("_dnslink.one.test", 300, &[&third, &second, &first])
        .txt("_dnslink.two.test", 300, &[&first, &third, &second]);
    let dns = DnsServer::start(zone).await;
    let r = dns.resolver();
    assert_eq!(
        r.resolve("one.test").await.unwrap().0,
        format!("/ipfs/{CID0}")
    );
    assert_eq!(
        r.resolve("two.test").await.unwrap().0,
        format!("/ipfs/{CID0}")
    );
}

#[tokio::test]
async fn invalid_names_send_no_query() {
    let dns = DnsServer::start(Zone::new().link("example.com", &format!("/ipfs/{CID}"))).await;
    let r = dns.resolver();
    for name in [
        "",
        ".git",
        ".Trash-0",
        ".Trash-1000",
        "foo",
        "a..b",
        ".example.com",
        "example.com.",
        "-x.com",
        "x-.com",
        "under_score.com",
        "sp ace.com",
        "1.2.3.4",
        "v1.0",
        KEY,
        CID,
        CID0,
        "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA",
        "exämple.com",
        "/example.com",
        "..",
    ] {
        assert!(!is_dnslink_candidate(name), "{name:?}");
        assert!(
            matches!(r.resolve(name).await, Err(DnsLinkError::InvalidDomain(_))),
            "{name:?} must be refused"
        );
    }
    let long_label = format!("{}.com", "a".repeat(64));
    let long_name = format!("{}com", "abcdefghi.".repeat(26));
    for name in [&long_label, &long_name] {
        assert!(!is_dnslink_candidate(name));
        assert!(matches!(
            r.resolve(name).await,
            Err(DnsLinkError::InvalidDomain(_))
        ));
    }
    // a path with `..` after a valid domain is refused too
    assert!(matches!(
        r.resolve("example.com/../x").await,
        Err(DnsLinkError::InvalidDomain(_))
    ));
    assert_eq!(
        dns.count(),
        0,
        "invalid names never reach DNS: {:?}",
        dns.queries()
    );

    assert!(is_dnslink_candidate("example.com"));
    assert!(
        is_dnslink_candidate(&format!("{}com", "abcdefghi.".repeat(25))),
        "253 characters"
    );
    assert!(
        is_dnslink_candidate(&format!("{}.com", "a".repeat(63))),
        "63-character label"
    );
    assert!(r.resolve("example.com").await.is_ok());
    assert_eq!(dns.count(), 1);
}

#[tokio::test]
async fn cname_delegation_is_followed() {
    let mut zone = Zone::new().txt(
        "_dnslink.target.test",
        500,
        &[&format!("dnslink=/ipfs/{CID}")],
    );
    zone.cname.insert(
        "_dnslink.alias.test".into(),
        (30, "_dnslink.target.test".into()),
    );
    let dns = DnsServer::start(zone).await;
    let (path, ttl) = dns.resolver().resolve("alias.test").await.unwrap();
    assert_eq!(path, format!("/ipfs/{CID}"));
    assert_eq!(
        ttl,
        Duration::from_secs(30),
        "the CNAME's shorter TTL bounds the answer"
    );
}

#[tokio::test]
async fn truncated_udp_answers_are_retried_over_tcp() {
    let mut zone = Zone::new().link("big.test", &format!("/ipfs/{CID}/over/tcp"));
    zone.truncate_udp.insert("_dnslink.big.test".into());
    let dns = DnsServer::start(zone).await;
    assert_eq!(
        dns.resolver().resolve("big.test").await.unwrap().0,
        format!("/ipfs/{CID}/over/tcp")
    );
    assert!(dns.tcp_count() >= 1, "the TCP retry reached our server");
    dns.assert_loopback_only();
}

#[tokio::test]
async fn server_failures_and_timeouts_are_dns_errors() {
    let mut zone = Zone::new();
    zone.servfail.insert("_dnslink.broken.test".into());
    let dns = DnsServer::start(zone).await;
    assert!(matches!(
        dns.resolver().resolve("broken.test").await,
        Err(DnsLinkError::Dns(_))
    ));

    // A server that never answers: a Dns error within about twice the timeout, and the queries
    // went to it (and, the resolver having no other server, nowhere else).
    let hole = DnsServer::black_hole().await;
    let timeout = Duration::from_millis(300);
    let r = DnsLinkResolver::new(hole.addr, timeout).unwrap();
    let start = Instant::now();
    let res = r.resolve("example.com").await;
    let elapsed = start.elapsed();
    assert!(matches!(res, Err(DnsLinkError::Dns(_))), "{res:?}");
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    assert!(hole.count() >= 1);
    assert!(
        hole.queries().iter().all(|q| q == "_dnslink.example.com"),
        "{:?}",
        hole.queries()
    );
    hole.assert_loopback_only();

    // Nothing listening at all: an error, not an answer from some other resolver.
    let closed = {
        let s = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        s.local_addr().unwrap()
    };
    let r = DnsLinkResolver::new(closed, timeout).unwrap();
    assert!(matches!(
        r.resolve("example.com").await,
        Err(DnsLinkError::Dns(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_lookups_share_one_resolver() {
    let mut zone = Zone::new();
    for i in 0..20 {
        zone = zone.link(&format!("n{i}.test"), &format!("/ipfs/{CID}/{i}"));
    }
    let dns = DnsServer::start(zone).await;
    let r = dns.resolver();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let r = r.clone();
            tokio::spawn(async move { (i, r.resolve(&format!("n{i}.test")).await) })
        })
        .collect();
    for t in tasks {
        let (i, res) = t.await.unwrap();
        assert_eq!(res.unwrap().0, format!("/ipfs/{CID}/{i}"));
    }
    dns.assert_loopback_only();
}
