//! DNSLink: `/ipns/<domain>` resolved through DNS `TXT` records.
//!
//! Rules (dnslink.dev, "Specification"):
//! - the records live at `_dnslink.<domain>` only. A `TXT` record on `<domain>` itself is
//!   deprecated by the spec ("resolved by some software only for legacy reasons"), so it is never
//!   queried: one lookup per step, and names we only probe cause one query, not two;
//! - a record is `dnslink=/<namespace>/<identifier>[/path]`; the character-strings of one `TXT`
//!   record are concatenated first; `TXT` records without the `dnslink=` prefix are ignored, and so
//!   are entries for namespaces other than `ipfs` and `ipns` and malformed entries ("never error
//!   on invalid record, ignore it and move to the next one");
//! - several usable entries: they are sorted lexicographically and the first one wins (the
//!   spec's suggestion for deterministic results), and the choice is logged;
//! - `CNAME` delegation of `_dnslink.<domain>` is followed by the DNS resolver itself.
//!
//! `/ipns/<domain>` targets are followed here (at most [`MAX_STEPS`] lookups, a domain seen twice
//! is a loop); `/ipfs/<cid>` and `/ipns/<key>` targets end the resolution: IPNS keys are the
//! caller's business. The path after the identifier of every step is kept: the path of a later
//! step comes first, e.g. `a.com → /ipns/b.com/x` and `b.com → /ipfs/<cid>/y` give
//! `/ipfs/<cid>/y/x`.
//!
//! DNS traffic goes only to the one server given to [`DnsLinkResolver::new`] (UDP, then TCP when
//! an answer is truncated): no `resolv.conf`, no hosts file, no DNS-over-HTTPS, no search
//! domains. Answers are cached by hickory for at most their TTL (the TTL returned is what remains
//! of it).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::Message;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use hickory_resolver::TokioResolver;

/// At most this many DNS lookups for one name (chains of `/ipns/<domain>` records).
pub const MAX_STEPS: usize = 32;

/// Answers kept by the DNS client, each for at most its TTL.
const CACHE_ENTRIES: u64 = 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsLinkError {
    /// Not a name we look up (see [`is_dnslink_candidate`]); no DNS query was made.
    #[error("not a DNSLink domain name: {0:?}")]
    InvalidDomain(String),
    /// The domain does not exist, or has no `dnslink=` record at `_dnslink.<domain>`.
    #[error("no DNSLink record for {0}")]
    NotFound(String),
    /// More than [`MAX_STEPS`] lookups.
    #[error("DNSLink chain longer than {MAX_STEPS} steps")]
    TooDeep,
    /// A chain of `/ipns/<domain>` records came back to a domain it had already visited.
    #[error("DNSLink loop")]
    Loop,
    /// The DNS query failed: timeout, SERVFAIL, REFUSED, network error.
    #[error("DNS error: {0}")]
    Dns(String),
    /// `dnslink=` records exist but none of them is usable (e.g. `/ipfs/` with no valid CID).
    #[error("bad DNSLink record: {0}")]
    BadRecord(String),
}

/// A DNSLink resolver bound to one DNS server.
#[derive(Clone)]
pub struct DnsLinkResolver {
    resolver: TokioResolver,
    server: SocketAddr,
    /// Bound on one lookup, retries and truncation fallback included.
    step_timeout: Duration,
}

impl std::fmt::Debug for DnsLinkResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsLinkResolver")
            .field("server", &self.server)
            .finish()
    }
}

impl DnsLinkResolver {
    /// A resolver that sends every query to `server` (UDP, and TCP for truncated answers) and
    /// nowhere else. `timeout` bounds each query attempt; a query that times out is sent once
    /// more, so one lookup takes at most about twice `timeout`.
    ///
    /// Builds no connection yet (sockets are opened by the first lookup, on the tokio runtime
    /// that runs it).
    pub fn new(server: SocketAddr, timeout: Duration) -> Result<Self, DnsLinkError> {
        let timeout = timeout.max(Duration::from_millis(1));
        let connection = |mut c: ConnectionConfig| {
            c.port = server.port();
            c
        };
        let name_server = NameServerConfig::new(
            server.ip(),
            true,
            vec![
                connection(ConnectionConfig::udp()),
                connection(ConnectionConfig::tcp()),
            ],
        );
        // No domain, no search list: every query name is absolute (ends with a dot).
        let config = ResolverConfig::from_parts(None, Vec::new(), vec![name_server]);
        let mut opts = ResolverOpts::default();
        opts.timeout = timeout;
        opts.attempts = 1;
        opts.use_hosts_file = ResolveHosts::Never;
        opts.cache_size = CACHE_ENTRIES;
        opts.num_concurrent_reqs = 1;
        opts.try_tcp_on_error = false;
        opts.ndots = 0;
        let resolver = hickory_resolver::Resolver::builder_with_config(
            config,
            TokioRuntimeProvider::default(),
        )
        .with_options(opts)
        .build()
        .map_err(|e| DnsLinkError::Dns(format!("DNS client for {server}: {e}")))?;
        Ok(Self {
            resolver,
            server,
            step_timeout: timeout
                .saturating_mul(2)
                .saturating_add(Duration::from_millis(250)),
        })
    }

    /// The only DNS server this resolver ever sends queries to.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// Resolves `domain` (optionally followed by `/path`) to `/ipfs/<cid>[/path]` or
    /// `/ipns/<key>[/path]`, with the smallest TTL of the records used along the way.
    ///
    /// A `/ipns/<key>` result (libp2p-key CID or peer id) is returned as is for the caller to
    /// resolve; `/ipns/<domain>` results are followed here, up to [`MAX_STEPS`] lookups in all.
    /// Path suffixes of every step are kept, the innermost first.
    pub async fn resolve(&self, domain: &str) -> Result<(String, Duration), DnsLinkError> {
        let (first, rest) = match domain.find('/') {
            Some(i) => (&domain[..i], &domain[i..]),
            None => (domain, ""),
        };
        if !is_dnslink_candidate(first) {
            return Err(DnsLinkError::InvalidDomain(domain.to_string()));
        }
        let mut suffix =
            clean_path(rest).ok_or_else(|| DnsLinkError::InvalidDomain(domain.to_string()))?;
        let mut current = first.to_ascii_lowercase();
        let mut seen = HashSet::new();
        let mut ttl = Duration::MAX;
        for _ in 0..MAX_STEPS {
            seen.insert(current.clone());
            let (link, step_ttl) = self.lookup(&current).await?;
            ttl = ttl.min(step_ttl);
            match link.target {
                Target::Ipfs(cid) => {
                    return Ok((format!("/ipfs/{cid}{}{suffix}", link.path), ttl));
                }
                Target::IpnsKey(key) => {
                    return Ok((format!("/ipns/{key}{}{suffix}", link.path), ttl));
                }
                Target::IpnsDomain(next) => {
                    suffix = format!("{}{suffix}", link.path);
                    if seen.contains(&next) {
                        tracing::warn!(domain = first, at = %current, next = %next, "DNSLink loop");
                        return Err(DnsLinkError::Loop);
                    }
                    tracing::debug!(from = %current, to = %next, "DNSLink: following /ipns/ domain");
                    current = next;
                }
            }
        }
        tracing::warn!(
            domain = first,
            "DNSLink chain longer than {MAX_STEPS} steps"
        );
        Err(DnsLinkError::TooDeep)
    }

    /// One step: the `TXT` records at `_dnslink.<domain>`, reduced to the entry that wins.
    async fn lookup(&self, domain: &str) -> Result<(Link, Duration), DnsLinkError> {
        let query = format!("_dnslink.{domain}.");
        let name = Name::from_ascii(&query)
            .map_err(|_| DnsLinkError::InvalidDomain(domain.to_string()))?;
        let lookup = match tokio::time::timeout(
            self.step_timeout,
            self.resolver.lookup(name, RecordType::TXT),
        )
        .await
        {
            Err(_) => return Err(DnsLinkError::Dns(format!("{query}: timed out"))),
            Ok(Err(e)) => return Err(map_error(domain, &query, e)),
            Ok(Ok(lookup)) => lookup,
        };
        reduce(domain, lookup.answers())
    }
}

/// The answer records of one `_dnslink.<domain>` TXT lookup, reduced to the entry that wins
/// (the lexicographically first usable `dnslink=` value) and the smallest TTL. Pure: what a DNS
/// server sends is untrusted input, fuzzed through [`fuzz_dns_answer`].
fn reduce(domain: &str, answers: &[Record]) -> Result<(Link, Duration), DnsLinkError> {
    let mut ttl = u32::MAX;
    let mut entries = Vec::new();
    for record in answers {
        match &record.data {
            RData::TXT(txt) => {
                ttl = ttl.min(record.ttl);
                let bytes: Vec<u8> = txt
                    .txt_data
                    .iter()
                    .flat_map(|s| s.iter().copied())
                    .collect();
                if let Some(value) = bytes.strip_prefix(b"dnslink=") {
                    entries.push(value.to_vec());
                }
            }
            RData::CNAME(_) => ttl = ttl.min(record.ttl),
            _ => {}
        }
    }
    if entries.is_empty() {
        return Err(DnsLinkError::NotFound(domain.to_string()));
    }
    entries.sort();
    entries.dedup();
    let mut chosen = None;
    let mut usable = 0usize;
    let mut last_reason = String::new();
    for entry in &entries {
        match parse_entry(entry) {
            Ok(Some(link)) => {
                usable += 1;
                if chosen.is_none() {
                    chosen = Some(link);
                }
            }
            Ok(None) => {
                tracing::debug!(domain, entry = %String::from_utf8_lossy(entry), "DNSLink: namespace not ours, ignored");
            }
            Err(reason) => {
                tracing::debug!(domain, entry = %String::from_utf8_lossy(entry), reason, "DNSLink: invalid entry, ignored");
                last_reason = format!("{domain}: {reason}: {:?}", String::from_utf8_lossy(entry));
            }
        }
    }
    let Some(link) = chosen else {
        return Err(if last_reason.is_empty() {
            // Only entries for other namespaces (/hyper/, /foo/…): nothing for us.
            DnsLinkError::NotFound(domain.to_string())
        } else {
            DnsLinkError::BadRecord(last_reason)
        });
    };
    if usable > 1 {
        tracing::info!(domain, chosen = %link, usable, "several DNSLink records: the lexicographically first one is used");
    }
    tracing::debug!(domain, link = %link, ttl, "DNSLink record");
    Ok((link, Duration::from_secs(u64::from(ttl))))
}

/// A DNS response message (wire format, as a `--dns` server could send it) for a DNSLink
/// lookup of `domain`: decoded, its answers reduced as a lookup does, and what is accepted
/// checked (a link path has no empty, `.` or `..` segment; the resolved text is a content
/// path). Also the domain checks and path cleaning of [`DnsLinkResolver::resolve`] on `domain`.
/// For fuzzing (`fuzz/fuzz_targets/dnslink_txt.rs`); the mount never calls it.
#[doc(hidden)]
pub fn fuzz_dns_answer(domain: &str, message: &[u8]) {
    let _ = is_dnslink_candidate(domain);
    if let Some(p) = clean_path(domain) {
        assert!(p.is_empty() || p.starts_with('/'), "{p:?}");
        assert!(
            p.split('/')
                .skip(1)
                .all(|s| !s.is_empty() && s != "." && s != ".."),
            "{p:?}"
        );
    }
    let Ok(msg) = Message::from_vec(message) else {
        return;
    };
    if let Ok((link, _ttl)) = reduce(domain, &msg.answers) {
        assert!(
            link.path.is_empty()
                || link
                    .path
                    .split('/')
                    .skip(1)
                    .all(|s| !s.is_empty() && s != "." && s != ".."),
            "{:?}",
            link.path
        );
        let shown = link.to_string();
        assert!(
            shown.starts_with("/ipfs/") || shown.starts_with("/ipns/"),
            "{shown:?}"
        );
    }
}

fn map_error(domain: &str, query: &str, e: NetError) -> DnsLinkError {
    match e {
        NetError::Dns(DnsError::NoRecordsFound(no)) => match no.response_code {
            ResponseCode::NXDomain | ResponseCode::NoError => {
                DnsLinkError::NotFound(domain.to_string())
            }
            code => DnsLinkError::Dns(format!("{query}: {code}")),
        },
        NetError::Timeout => DnsLinkError::Dns(format!("{query}: timed out")),
        e => DnsLinkError::Dns(format!("{query}: {e}")),
    }
}

/// What one `dnslink=` entry points at.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Ipfs(String),
    IpnsKey(String),
    IpnsDomain(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Link {
    target: Target,
    /// `""` or `/seg/seg…` (no empty, `.` or `..` segments).
    path: String,
}

impl std::fmt::Display for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.target {
            Target::Ipfs(c) => write!(f, "/ipfs/{c}{}", self.path),
            Target::IpnsKey(k) | Target::IpnsDomain(k) => write!(f, "/ipns/{k}{}", self.path),
        }
    }
}

/// Parses the value after `dnslink=`: `Ok(None)` for a namespace other than `ipfs`/`ipns`,
/// `Err(reason)` for a malformed entry.
fn parse_entry(value: &[u8]) -> Result<Option<Link>, &'static str> {
    let value = std::str::from_utf8(value).map_err(|_| "not UTF-8")?;
    let value = value.trim_matches(|c: char| c.is_ascii_whitespace());
    let rest = value.strip_prefix('/').ok_or("does not start with /")?;
    let (namespace, rest) = rest.split_once('/').ok_or("no identifier")?;
    let (id, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let target = match namespace {
        "ipfs" => {
            cid::Cid::try_from(id).map_err(|_| "/ipfs/ identifier is not a CID")?;
            Target::Ipfs(id.to_string())
        }
        "ipns" => {
            if is_dnslink_candidate(id) {
                Target::IpnsDomain(id.to_ascii_lowercase())
            } else if is_ipns_key(id) {
                Target::IpnsKey(id.to_string())
            } else {
                return Err("/ipns/ identifier is neither a domain name nor a key");
            }
        }
        "" => return Err("empty namespace"),
        _ => return Ok(None),
    };
    let path = clean_path(path).ok_or("bad path")?;
    Ok(Some(Link { target, path }))
}

/// `""` or `/a/b` from a path that starts with `/` (or is empty): empty segments dropped;
/// `None` for `.`/`..` segments or control characters.
fn clean_path(path: &str) -> Option<String> {
    let mut out = String::new();
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        if segment == "." || segment == ".." || segment.chars().any(char::is_control) {
            return None;
        }
        out.push('/');
        out.push_str(segment);
    }
    Some(out)
}

/// A libp2p-key CID (`k51…`, `bafz…`), any CID, or a base58btc peer id (`12D3Koo…`, `Qm…`,
/// `16Uiu2…`). The caller checks it for real when it resolves the IPNS name.
fn is_ipns_key(s: &str) -> bool {
    const BASE58: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    cid::Cid::try_from(s).is_ok()
        || (s.starts_with('1')
            && (40..=128).contains(&s.len())
            && s.bytes().all(|b| BASE58.contains(&b)))
}

/// Whether `name` may be looked up as a DNSLink domain: checked before any DNS traffic.
///
/// A valid host name with at least one dot: labels of 1 to 63 characters from `[A-Za-z0-9-]`,
/// not starting or ending with `-`, at most 253 characters in all, no empty label (so never a
/// leading dot as in `.git` or `.Trash-0`, no trailing dot, no `a..b`), and a last label that is
/// not all digits (no top-level domain is, so `1.2`, `v1.0` or an IPv4 address cause no query).
pub fn is_dnslink_candidate(name: &str) -> bool {
    if name.len() > 253 || !name.contains('.') {
        return false;
    }
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if !name.split('.').all(label_ok) {
        return false;
    }
    let last = name.rsplit('.').next().unwrap_or("");
    !last.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates() {
        for ok in [
            "example.com",
            "a.b",
            "en.wikipedia-on-ipfs.org",
            "xn--bcher-kva.example",
            "A-1.b2.COM",
        ] {
            assert!(is_dnslink_candidate(ok), "{ok}");
        }
        let long_label = format!("{}.com", "a".repeat(64));
        let long_name = format!("{}com", "abcdefghi.".repeat(26));
        for bad in [
            "",
            ".",
            ".git",
            ".Trash-0",
            ".Trash-1000",
            "foo",
            "a..b",
            "example.com.",
            "-a.com",
            "a-.com",
            "a_b.com",
            "a b.com",
            "1.2.3.4",
            "v1.0",
            "k51qzi5uqu5dlvj2baxnqndepeb86cbk3ng7n3i46uzyxzyqj2xjonzllnv0v8",
            "QmWvY6FaqFMS89YAQ9NAPjVP4WZKA1qbHbicc9HeSKQTgt",
            "exämple.com",
            &long_label,
            &long_name,
        ] {
            assert!(!is_dnslink_candidate(bad), "{bad}");
        }
        assert!(is_dnslink_candidate(&format!("{}.com", "a".repeat(63))));
        assert!(is_dnslink_candidate(&format!(
            "{}com",
            "abcdefghi.".repeat(25)
        )));
    }

    #[test]
    fn entries() {
        let cid = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi";
        let link = |s: &str| parse_entry(s.as_bytes());
        assert_eq!(
            link(&format!("/ipfs/{cid}")).unwrap().unwrap(),
            Link {
                target: Target::Ipfs(cid.into()),
                path: String::new()
            }
        );
        assert_eq!(
            link(&format!(" /ipfs/{cid}//a/b/ ")).unwrap().unwrap().path,
            "/a/b"
        );
        let key = "k51qzi5uqu5dlvj2baxnqndepeb86cbk3ng7n3i46uzyxzyqj2xjonzllnv0v8";
        assert_eq!(
            link(&format!("/ipns/{key}/x")).unwrap().unwrap().target,
            Target::IpnsKey(key.into())
        );
        let peer = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";
        assert_eq!(
            link(&format!("/ipns/{peer}")).unwrap().unwrap().target,
            Target::IpnsKey(peer.into())
        );
        assert_eq!(
            link("/ipns/Docs.IPFS.tech/a").unwrap().unwrap(),
            Link {
                target: Target::IpnsDomain("docs.ipfs.tech".into()),
                path: "/a".into()
            }
        );
        assert_eq!(link("/hyper/abc"), Ok(None));
        assert!(link("/ipfs/notacid").is_err());
        assert!(link("ipfs/x").is_err());
        assert!(link("/ipns/foo").is_err());
        assert!(link(&format!("/ipfs/{cid}/../x")).is_err());
        assert!(parse_entry(b"/ipfs/\xff").is_err());
    }
}
