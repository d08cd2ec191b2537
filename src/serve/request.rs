//! What a request asks for: the content path, the response format (from `format=` or
//! `Accept`), CAR parameters (`dag-scope`, `entity-bytes`, `car-*`), and `Range`.
//!
//! Everything here is pure parsing; malformed input becomes an [`HttpError`] (400), never a
//! panic.

use hyper::StatusCode;

use super::HttpError;

/// The namespace of a content path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Namespace {
    Ipfs,
    Ipns,
}

/// `/ipfs/<root>/<segments…>` or `/ipns/<root>/<segments…>`, percent-decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ContentPath {
    pub namespace: Namespace,
    /// The CID string (`/ipfs`) or the name (`/ipns`), decoded.
    pub root: String,
    /// Path segments below the root: UnixFS names, each non-empty, never `.` or `..`, no `/`
    /// or NUL.
    pub segments: Vec<Vec<u8>>,
    /// The path ended with `/` (a directory listing needs it; see the 301 in the path spec).
    pub trailing_slash: bool,
}

fn bad(msg: impl Into<String>) -> HttpError {
    HttpError::new(StatusCode::BAD_REQUEST, msg)
}

/// Percent-decodes one path segment. `%` must be followed by two hex digits.
pub(super) fn percent_decode(s: &str) -> Result<Vec<u8>, HttpError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |c: u8| (c as char).to_digit(16);
            match (
                b.get(i + 1).and_then(|&c| hex(c)),
                b.get(i + 2).and_then(|&c| hex(c)),
            ) {
                (Some(h), Some(l)) => out.push((h * 16 + l) as u8),
                _ => {
                    return Err(bad(format!(
                        "invalid percent-encoding in path segment {s:?}"
                    )))
                }
            }
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Percent-encodes bytes for use as one URL path segment (unreserved characters kept).
pub(super) fn percent_encode_segment(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    for &c in b {
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

/// Checks a decoded segment: a UnixFS name (non-empty, not `.`/`..`, no `/` or NUL).
pub(super) fn check_segment(seg: Vec<u8>, shown: &str) -> Result<Vec<u8>, HttpError> {
    if ipfs_mount_ipld::unixfs::is_safe_name(&seg) {
        Ok(seg)
    } else {
        Err(bad(format!(
            "path segment {shown:?} is not a valid UnixFS name"
        )))
    }
}

/// Splits a request path (as sent, still percent-encoded) into a [`ContentPath`].
/// `Ok(None)`: not under `/ipfs/` or `/ipns/` at all.
pub(super) fn parse_path(raw: &str) -> Result<Option<ContentPath>, HttpError> {
    let (namespace, rest) = if let Some(r) = raw.strip_prefix("/ipfs/") {
        (Namespace::Ipfs, r)
    } else if let Some(r) = raw.strip_prefix("/ipns/") {
        (Namespace::Ipns, r)
    } else if raw == "/ipfs" || raw == "/ipns" {
        return Err(bad("missing CID or name after the namespace"));
    } else {
        return Ok(None);
    };
    let mut parts = rest.split('/');
    let root_raw = parts.next().unwrap_or_default();
    if root_raw.is_empty() {
        return Err(bad("missing CID or name after the namespace"));
    }
    let root = String::from_utf8(percent_decode(root_raw)?)
        .map_err(|_| bad("the CID or name is not valid UTF-8"))?;
    let mut segments = Vec::new();
    let mut trailing_slash = false;
    let rest: Vec<&str> = parts.collect();
    for (i, p) in rest.iter().enumerate() {
        if p.is_empty() {
            // `a//b` is tolerated as `a/b`; a final empty segment is the trailing slash
            trailing_slash = i + 1 == rest.len();
            continue;
        }
        segments.push(check_segment(percent_decode(p)?, p)?);
    }
    Ok(Some(ContentPath {
        namespace,
        root,
        segments,
        trailing_slash,
    }))
}

/// `dag-scope` of a CAR request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Scope {
    Block,
    Entity,
    All,
}

/// `entity-bytes=from:to` as sent: `to = None` is `*`; negative values count from the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct EntityBytes {
    pub from: i64,
    pub to: Option<i64>,
}

impl EntityBytes {
    /// The inclusive byte range `[first, last]` of an entity of `size` bytes, or `None` when
    /// the range is empty or entirely outside the entity (the response is then
    /// `dag-scope=block`, as the trustless gateway spec says).
    pub fn resolve(&self, size: u64) -> Option<(u64, u64)> {
        if size == 0 {
            return None;
        }
        let size_i = i128::from(size);
        let from = i128::from(self.from);
        let from = if from < 0 {
            (size_i + from).max(0)
        } else {
            from
        };
        let to = match self.to {
            None => size_i - 1,
            Some(t) if t < 0 => size_i + i128::from(t),
            Some(t) => i128::from(t).min(size_i - 1),
        };
        if from >= size_i || to < 0 || from > to {
            return None;
        }
        Some((from as u64, to as u64))
    }
}

/// Parameters of a CAR response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct CarParams {
    pub scope: Scope,
    pub bytes: Option<EntityBytes>,
    /// `dups=y`: a block is sent every time the walk meets it; else once.
    pub dups: bool,
}

/// The response format asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    Raw,
    Car(CarParams),
    IpnsRecord,
    Tar,
    DagJson,
    DagCbor,
    Json,
    Cbor,
}

impl Format {
    /// The `format=` value naming this format (for `Content-Location`).
    pub fn query_name(&self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Car(_) => "car",
            Format::IpnsRecord => "ipns-record",
            Format::Tar => "tar",
            Format::DagJson => "dag-json",
            Format::DagCbor => "dag-cbor",
            Format::Json => "json",
            Format::Cbor => "cbor",
        }
    }
}

/// Query parameters the gateway understands; others are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Query {
    pub format: Option<String>,
    pub dag_scope: Option<String>,
    pub entity_bytes: Option<String>,
    pub car_version: Option<String>,
    pub car_order: Option<String>,
    pub car_dups: Option<String>,
    pub filename: Option<String>,
    /// `download=true` / `download=false` as sent; any other value counts as absent.
    pub download: Option<bool>,
}

impl Query {
    pub fn parse(q: Option<&str>) -> Query {
        let mut out = Query::default();
        let Some(q) = q else { return out };
        for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
            let v = Some(v.into_owned());
            match &*k {
                "format" => out.format = v,
                "dag-scope" => out.dag_scope = v,
                "entity-bytes" => out.entity_bytes = v,
                "car-version" => out.car_version = v,
                "car-order" => out.car_order = v,
                "car-dups" => out.car_dups = v,
                "filename" => out.filename = v,
                "download" => {
                    out.download = match v.as_deref() {
                        Some("true") => Some(true),
                        Some("false") => Some(false),
                        _ => None,
                    }
                }
                _ => {}
            }
        }
        out
    }
}

/// One media range of an `Accept` header.
struct MediaRange {
    essence: String,
    params: Vec<(String, String)>,
    q: f32,
}

fn parse_accept(accept: &str) -> Vec<MediaRange> {
    let mut out: Vec<MediaRange> = accept
        .split(',')
        .filter_map(|item| {
            let mut parts = item.split(';');
            let essence = parts.next()?.trim().to_ascii_lowercase();
            if essence.is_empty() {
                return None;
            }
            let mut params = Vec::new();
            let mut q = 1.0f32;
            for p in parts {
                let Some((k, v)) = p.split_once('=') else {
                    continue;
                };
                let k = k.trim().to_ascii_lowercase();
                let v = v.trim().trim_matches('"').to_string();
                if k == "q" {
                    // A weight is 0 to 1 (RFC 9110 §12.4.2): others are clamped, and what is
                    // not a number (NaN included) weighs 0, so the sort compares numbers only.
                    q = v
                        .parse::<f32>()
                        .ok()
                        .filter(|q| !q.is_nan())
                        .map_or(0.0, |q| q.clamp(0.0, 1.0));
                } else {
                    params.push((k, v));
                }
            }
            Some(MediaRange { essence, params, q })
        })
        .collect();
    // stable: equal weights keep the client's order
    out.sort_by(|a, b| b.q.total_cmp(&a.q));
    out
}

fn format_named(name: &str) -> Option<Format> {
    Some(match name {
        "raw" => Format::Raw,
        "car" => Format::Car(CarParams {
            scope: Scope::All,
            bytes: None,
            dups: false,
        }),
        "ipns-record" => Format::IpnsRecord,
        "tar" => Format::Tar,
        "dag-json" => Format::DagJson,
        "dag-cbor" => Format::DagCbor,
        "json" => Format::Json,
        "cbor" => Format::Cbor,
        _ => return None,
    })
}

fn format_of_media(essence: &str) -> Option<&'static str> {
    Some(match essence {
        "application/vnd.ipld.raw" => "raw",
        "application/vnd.ipld.car" => "car",
        "application/vnd.ipfs.ipns-record" => "ipns-record",
        "application/x-tar" => "tar",
        "application/vnd.ipld.dag-json" => "dag-json",
        "application/vnd.ipld.dag-cbor" => "dag-cbor",
        "application/json" => "json",
        "application/cbor" => "cbor",
        _ => return None,
    })
}

/// The negotiated format: `None` = a plain (deserialized) response. The flag says the format
/// came from `Accept` rather than `format=` (the response then names its `Content-Location`).
pub(super) fn negotiate(
    query: &Query,
    accept: Option<&str>,
) -> Result<(Option<Format>, bool), HttpError> {
    let mut car_media: Vec<(String, String)> = Vec::new();
    let (mut format, from_accept) = match query.format.as_deref() {
        Some(name) => (
            Some(format_named(name).ok_or_else(|| bad(format!("unsupported format={name}")))?),
            false,
        ),
        None => {
            let mut found = None;
            for m in parse_accept(accept.unwrap_or_default()) {
                if m.q <= 0.0 {
                    continue;
                }
                if let Some(name) = format_of_media(&m.essence) {
                    found = format_named(name);
                    if name == "car" {
                        car_media = m.params;
                    }
                    break;
                }
            }
            let accepted = found.is_some();
            (found, accepted)
        }
    };
    if let Some(Format::Car(params)) = &mut format {
        // Accept parameters, then the query parameters, which take precedence.
        let mut version = None;
        let mut order = None;
        let mut dups = None;
        for (k, v) in car_media {
            match k.as_str() {
                "version" => version = Some(v),
                "order" => order = Some(v),
                "dups" => dups = Some(v),
                _ => {}
            }
        }
        version = query.car_version.clone().or(version);
        order = query.car_order.clone().or(order);
        dups = query.car_dups.clone().or(dups);
        if let Some(v) = version.as_deref() {
            if v != "1" {
                return Err(bad(format!("CAR version {v} is not supported (only 1)")));
            }
        }
        if let Some(o) = order.as_deref() {
            if !matches!(o, "dfs" | "unk" | "") {
                return Err(bad(format!("CAR order {o:?} is not supported (dfs)")));
            }
        }
        params.dups = match dups.as_deref() {
            None | Some("n") | Some("") => false,
            Some("y") => true,
            Some(d) => return Err(bad(format!("invalid CAR dups {d:?} (y or n)"))),
        };
        params.scope = match query.dag_scope.as_deref() {
            None | Some("all") => Scope::All,
            Some("entity") => Scope::Entity,
            Some("block") => Scope::Block,
            Some(s) => {
                return Err(bad(format!(
                    "invalid dag-scope {s:?} (block, entity or all)"
                )))
            }
        };
        if let Some(eb) = query.entity_bytes.as_deref() {
            params.bytes = Some(parse_entity_bytes(eb)?);
            // entity-bytes implies dag-scope=entity
            params.scope = Scope::Entity;
        }
    }
    Ok((format, from_accept))
}

/// Parses `from:to` (`to` may be `*`; either may be negative).
pub(super) fn parse_entity_bytes(s: &str) -> Result<EntityBytes, HttpError> {
    let err = || bad(format!("invalid entity-bytes {s:?} (from:to, to may be *)"));
    let (f, t) = s.split_once(':').ok_or_else(err)?;
    let from: i64 = f.parse().map_err(|_| err())?;
    let to = if t == "*" {
        None
    } else {
        Some(t.parse::<i64>().map_err(|_| err())?)
    };
    if let Some(t) = to {
        if from >= 0 && t >= 0 && from > t {
            return Err(err());
        }
    }
    Ok(EntityBytes { from, to })
}

/// A single HTTP byte range as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ByteRange {
    /// `first-` or `first-last` (inclusive).
    From(u64, Option<u64>),
    /// `-n`: the last `n` bytes.
    Suffix(u64),
}

/// The `Range` header: `Ok(None)` when absent, malformed, not in bytes or asking for several
/// ranges (all of which a server may ignore and answer with the whole content, RFC 9110
/// §14.2).
pub(super) fn parse_range(h: Option<&str>) -> Option<ByteRange> {
    let spec = h?.trim().strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    if a.is_empty() {
        return Some(ByteRange::Suffix(num(b)?));
    }
    let first = num(a)?;
    if b.is_empty() {
        return Some(ByteRange::From(first, None));
    }
    let last = num(b)?;
    if last < first {
        return None;
    }
    Some(ByteRange::From(first, Some(last)))
}

impl ByteRange {
    /// The inclusive range within `size` bytes, or `None` when unsatisfiable (416).
    pub fn resolve(&self, size: u64) -> Option<(u64, u64)> {
        match *self {
            ByteRange::From(first, last) => {
                if first >= size {
                    return None;
                }
                Some((first, last.unwrap_or(u64::MAX).min(size - 1)))
            }
            ByteRange::Suffix(n) => {
                if n == 0 || size == 0 {
                    return None;
                }
                Some((size - n.min(size), size - 1))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `q=NaN` (and other non-numbers) weigh 0, others are clamped to 0..=1; many media ranges
    /// with them never break the sort (a comparison that is not a total order may panic in
    /// `sort_by`).
    #[test]
    fn odd_q_values_sort_without_panicking() {
        let mut accept: Vec<String> = (0..64)
            .map(|i| match i % 4 {
                0 => format!("text/x{i};q=NaN"),
                1 => format!("text/x{i};q=0.{i}"),
                2 => format!("text/x{i};q=inf"),
                _ => format!("text/x{i};q=-1"),
            })
            .collect();
        accept.push("application/vnd.ipld.raw;q=0.5".into());
        let ranges = parse_accept(&accept.join(", "));
        assert!(ranges.iter().all(|m| (0.0..=1.0).contains(&m.q)));
        assert!(ranges.windows(2).all(|w| w[0].q >= w[1].q));
        let (format, _) = negotiate(&Query::default(), Some(&accept.join(", "))).unwrap();
        assert_eq!(format, Some(Format::Raw));
    }

    #[test]
    fn paths() {
        assert_eq!(parse_path("/").unwrap(), None);
        assert_eq!(parse_path("/foo/bar").unwrap(), None);
        assert!(parse_path("/ipfs/").is_err());
        assert!(parse_path("/ipfs").is_err());
        let p = parse_path("/ipfs/bafy/a%20b/c/").unwrap().unwrap();
        assert_eq!(p.namespace, Namespace::Ipfs);
        assert_eq!(p.root, "bafy");
        assert_eq!(p.segments, vec![b"a b".to_vec(), b"c".to_vec()]);
        assert!(p.trailing_slash);
        let p = parse_path("/ipns/example.com//x").unwrap().unwrap();
        assert_eq!(p.segments, vec![b"x".to_vec()]);
        assert!(!p.trailing_slash);
        for bad in [
            "/ipfs/bafy/..",
            "/ipfs/bafy/.",
            "/ipfs/bafy/%2e%2e",
            "/ipfs/bafy/a%2Fb",
            "/ipfs/bafy/a%00",
            "/ipfs/bafy/%zz",
            "/ipfs/bafy/%4",
        ] {
            assert!(parse_path(bad).is_err(), "{bad}");
        }
        assert_eq!(percent_encode_segment(b"a b/\xff"), "a%20b%2F%FF");
    }

    #[test]
    fn entity_bytes() {
        let eb = parse_entity_bytes("0:*").unwrap();
        assert_eq!(eb.resolve(10), Some((0, 9)));
        assert_eq!(eb.resolve(0), None);
        assert_eq!(
            parse_entity_bytes("-3:*").unwrap().resolve(10),
            Some((7, 9))
        );
        assert_eq!(
            parse_entity_bytes("-30:*").unwrap().resolve(10),
            Some((0, 9))
        );
        assert_eq!(
            parse_entity_bytes("2:-3").unwrap().resolve(10),
            Some((2, 7))
        );
        assert_eq!(
            parse_entity_bytes("2:100").unwrap().resolve(10),
            Some((2, 9))
        );
        assert_eq!(parse_entity_bytes("20:30").unwrap().resolve(10), None);
        assert_eq!(parse_entity_bytes("5:-8").unwrap().resolve(10), None);
        for bad in ["", "1", "a:b", "5:2", "1:2:3", "1:*x"] {
            assert!(parse_entity_bytes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ranges() {
        assert_eq!(
            parse_range(Some("bytes=0-9")),
            Some(ByteRange::From(0, Some(9)))
        );
        assert_eq!(
            parse_range(Some("bytes=5-")),
            Some(ByteRange::From(5, None))
        );
        assert_eq!(parse_range(Some("bytes=-5")), Some(ByteRange::Suffix(5)));
        assert_eq!(parse_range(Some("bytes=0-1,4-5")), None);
        assert_eq!(parse_range(Some("items=0-1")), None);
        assert_eq!(parse_range(Some("bytes=9-1")), None);
        assert_eq!(parse_range(Some("bytes=+1-2")), None);
        assert_eq!(ByteRange::From(5, None).resolve(10), Some((5, 9)));
        assert_eq!(ByteRange::From(10, None).resolve(10), None);
        assert_eq!(ByteRange::From(2, Some(100)).resolve(10), Some((2, 9)));
        assert_eq!(ByteRange::Suffix(3).resolve(10), Some((7, 9)));
        assert_eq!(ByteRange::Suffix(30).resolve(10), Some((0, 9)));
        assert_eq!(ByteRange::Suffix(0).resolve(10), None);
        assert_eq!(ByteRange::From(0, None).resolve(0), None);
    }

    #[test]
    fn negotiation() {
        let q = |s: &str| Query::parse(Some(s));
        let (f, acc) = negotiate(&q("format=raw"), Some("application/vnd.ipld.car")).unwrap();
        assert_eq!((f, acc), (Some(Format::Raw), false));
        let (f, acc) = negotiate(
            &Query::default(),
            Some("text/html, application/vnd.ipld.car; version=1; order=dfs; dups=y"),
        )
        .unwrap();
        assert!(acc);
        assert_eq!(
            f,
            Some(Format::Car(CarParams {
                scope: Scope::All,
                bytes: None,
                dups: true
            }))
        );
        let (f, _) = negotiate(
            &q("format=car&dag-scope=block&car-dups=n"),
            Some("application/vnd.ipld.car;dups=y"),
        )
        .unwrap();
        assert_eq!(
            f,
            Some(Format::Car(CarParams {
                scope: Scope::Block,
                bytes: None,
                dups: false
            }))
        );
        let (f, _) = negotiate(&q("format=car&entity-bytes=1:*"), None).unwrap();
        assert!(matches!(
            f,
            Some(Format::Car(CarParams {
                scope: Scope::Entity,
                bytes: Some(EntityBytes { from: 1, to: None }),
                ..
            }))
        ));
        assert_eq!(
            negotiate(&Query::default(), Some("*/*")).unwrap(),
            (None, false)
        );
        assert_eq!(
            negotiate(
                &Query::default(),
                Some("application/vnd.ipld.raw;q=0.5, application/vnd.ipld.car;q=0.9")
            )
            .unwrap()
            .0
            .map(|f| f.query_name()),
            Some("car")
        );
        assert!(negotiate(&q("format=bogus"), None).is_err());
        assert!(negotiate(&q("format=car&car-version=2"), None).is_err());
        assert!(negotiate(&q("format=car&dag-scope=most"), None).is_err());
        assert!(negotiate(&q("format=car&car-order=bfs"), None).is_err());
        assert!(negotiate(&q("format=car&entity-bytes=x"), None).is_err());
    }
}
