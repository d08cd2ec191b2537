//! Shared harness for the integration tests (`tests/interop.rs`, `tests/conformance.rs`, `tests/mount.rs`).
//!
//! # Layout
//! - **Environment**: where `../shared` is ([`shared_dir`]), whether FUSE and the reference peers are usable
//!   ([`require_fuse`], [`require_peers`], [`require_fixtures`]): a test skips with a printed reason when something
//!   is missing, unless `IPFS_MOUNT_REQUIRE_PEERS=1` (set by `.ci/run`), where it fails instead.
//! - **Peers**: [`Kubo`] and [`Helia`] guards start the loopback-only reference peers from `../shared/peers` on free
//!   loopback ports in a fresh temporary directory, import paths ([`Kubo::add_path`], [`Helia::add_path`]) and stop
//!   them in `Drop` (by the PID the scripts record; never by name).
//! - **Mount**: [`Mount`] runs `ipfs-mount -f` as a child with a temporary mountpoint and store, waits until the
//!   mount is live, and in `Drop` unmounts lazily and stops the child (SIGTERM, then SIGKILL after 5 s).
//!   [`import_car`] runs `ipfs-mount import`.
//! - **Data**: [`Rng`] (seeded, deterministic), [`write_random_file`], [`make_tree`] (nested and empty dirs, empty
//!   files, unicode and odd names, chunk-boundary sizes, a big multi-level file, symlinks, a HAMT-sized directory).
//! - **Checks**: [`compare_trees`] (names, types, sizes, bytes, symlink targets), [`ls_l_check`], [`cp_r_diff`],
//!   [`getfattr_cid`], errno assertions, and [`with_timeout`] so a hung mount fails a test instead of hanging CI.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use tempfile::TempDir;

pub mod p2p;

/// The release (or debug) binary cargo built for this test run.
pub const BIN: &str = env!("CARGO_BIN_EXE_ipfs-mount");

// ---------------------------------------------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------------------------------------------

/// `../shared` beside the repository (override with `IPFS_MOUNT_SHARED`).
pub fn shared_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("IPFS_MOUNT_SHARED") {
        return PathBuf::from(d);
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).join("shared")
}

/// True when missing prerequisites must fail the test instead of skipping it (CI).
pub fn strict() -> bool {
    matches!(
        std::env::var("IPFS_MOUNT_REQUIRE_PEERS").as_deref(),
        Ok("1") | Ok("true") | Ok("yes")
    )
}

fn skip_or_fail(test: &str, why: &str) {
    if strict() {
        panic!("{test}: {why} (IPFS_MOUNT_REQUIRE_PEERS=1, so this is a failure, not a skip)");
    }
    eprintln!("SKIPPED {test}: {why}");
}

/// FUSE is usable: `/dev/fuse` and `fusermount3` exist.
pub fn fuse_available() -> Result<(), String> {
    if !Path::new("/dev/fuse").exists() {
        return Err("/dev/fuse does not exist".into());
    }
    if which("fusermount3").is_none() {
        return Err("fusermount3 not found (apt-get install fuse3)".into());
    }
    Ok(())
}

/// Returns false (after printing why) when the test must be skipped because FUSE is unavailable.
pub fn require_fuse(test: &str) -> bool {
    match fuse_available() {
        Ok(()) => true,
        Err(e) => {
            skip_or_fail(test, &e);
            false
        }
    }
}

/// `../shared/peers` when it holds the reference peer scripts, and FUSE works; otherwise prints why the test is
/// skipped and returns None (or panics under `IPFS_MOUNT_REQUIRE_PEERS=1`).
pub fn require_peers(test: &str) -> Option<PathBuf> {
    let dir = shared_dir().join("peers");
    if !dir.join("kubo-up.sh").exists() || !dir.join("helia-up.sh").exists() {
        skip_or_fail(
            test,
            &format!(
                "reference peers not found at {} (set IPFS_MOUNT_SHARED)",
                dir.display()
            ),
        );
        return None;
    }
    if !require_fuse(test) {
        return None;
    }
    Some(dir)
}

/// `../shared/fixtures/gateway-conformance` if present (and FUSE works); else skip as [`require_peers`] does.
pub fn require_fixtures(test: &str) -> Option<PathBuf> {
    let dir = shared_dir().join("fixtures").join("gateway-conformance");
    if !dir.join("INDEX.md").exists() {
        skip_or_fail(
            test,
            &format!("conformance fixtures not found at {}", dir.display()),
        );
        return None;
    }
    if !require_fuse(test) {
        return None;
    }
    Some(dir)
}

pub fn which(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for d in
        std::env::split_paths(&path).chain(["/usr/bin".into(), "/bin".into(), "/usr/sbin".into()])
    {
        let p = d.join(prog);
        if p.is_file() {
            return Some(p);
        }
    }
    None
}

/// A fresh temporary directory (removed on drop unless `IPFS_MOUNT_KEEP_TMP=1`).
pub fn tempdir(prefix: &str) -> TempDir {
    let t = tempfile::Builder::new()
        .prefix(&format!("ipfs-mount-{prefix}-"))
        .tempdir()
        .expect("create temp dir");
    if std::env::var_os("IPFS_MOUNT_KEEP_TMP").is_some() {
        eprintln!("keeping temp dir {}", t.path().display());
    }
    t
}

fn keep_tmp(t: TempDir) {
    if std::env::var_os("IPFS_MOUNT_KEEP_TMP").is_some() {
        let _ = t.keep();
    }
}

/// A loopback TCP port that was free a moment ago and that this process has not handed out before.
pub fn free_port() -> u16 {
    static USED: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let used = USED.get_or_init(|| Mutex::new(HashSet::new()));
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().unwrap().port();
        drop(l);
        if used.lock().unwrap().insert(port) {
            return port;
        }
    }
}

/// Environment variables that could send traffic off loopback or change the binary's defaults.
const SCRUB_ENV: &[&str] = &[
    "IPFS_GATEWAY",
    "IPFS_MOUNT_STORE",
    "RUST_LOG",
    "http_proxy",
    "https_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "all_proxy",
];

fn scrubbed(cmd: &mut Command) -> &mut Command {
    for k in SCRUB_ENV {
        cmd.env_remove(k);
    }
    cmd
}

/// Runs `f` on a helper thread and panics with `what` if it takes longer than `secs` (a hung FUSE request must fail
/// the test, not the whole CI run). The helper thread is left behind on timeout.
pub fn with_timeout<T: Send + 'static>(
    secs: u64,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name(format!("timeout:{what}"))
        .spawn(move || {
            let _ = tx.send(f());
        })
        .expect("spawn");
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("timed out after {secs} s: {what}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: helper thread panicked"),
    }
}

/// Runs a command, returning its output; panics with stderr if it cannot be started.
pub fn run(cmd: &mut Command) -> Output {
    scrubbed(cmd)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a command that must succeed; returns stdout.
pub fn run_ok(cmd: &mut Command) -> Vec<u8> {
    let out = run(cmd);
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out.stdout
}

// ---------------------------------------------------------------------------------------------------------------
// HTTP (loopback only; through curl, which CI installs)
// ---------------------------------------------------------------------------------------------------------------

/// Percent-encodes a query component.
pub fn urlencode(s: &[u8]) -> String {
    let mut out = String::new();
    for &b in s {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn assert_loopback(url: &str) {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("only http:// loopback URLs: {url}"));
    assert!(
        rest.starts_with("127.") || rest.starts_with("localhost:") || rest.starts_with("[::1]"),
        "refusing a non-loopback URL: {url}"
    );
}

/// HTTP request through curl: returns (status, body).
pub fn http(method: &str, url: &str, timeout_secs: u64) -> (u16, Vec<u8>) {
    assert_loopback(url);
    let tmp = tempfile::NamedTempFile::new().unwrap();
    let out = run(Command::new("curl")
        .args([
            "-sS",
            "--noproxy",
            "*",
            "-X",
            method,
            "--max-time",
            &timeout_secs.to_string(),
            "-o",
        ])
        .arg(tmp.path())
        .args(["-w", "%{http_code}", url]));
    let code: u16 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    let body = fs::read(tmp.path()).unwrap_or_default();
    if code == 0 {
        return (0, out.stderr);
    }
    (code, body)
}

fn http_json(method: &str, url: &str, timeout_secs: u64) -> serde_json::Value {
    let (code, body) = http(method, url, timeout_secs);
    if code != 200 {
        panic!(
            "{method} {url}: HTTP {code}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{url}: bad JSON ({e}): {}", String::from_utf8_lossy(&body)))
}

// ---------------------------------------------------------------------------------------------------------------
// Reference peers
// ---------------------------------------------------------------------------------------------------------------

fn peers_cache_env(cmd: &mut Command) -> &mut Command {
    if std::env::var_os("PEERS_CACHE").is_none() {
        // Same default as .ci/run: ../shared may be read-only; installs are reused across runs.
        cmd.env("PEERS_CACHE", "/var/tmp/ipfs-mount-peers");
    }
    cmd
}

fn read_node_json(dir: &Path) -> serde_json::Value {
    let p = dir.join("node.json");
    let s = fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    serde_json::from_slice(&s).unwrap_or_else(|e| panic!("parse {}: {e}", p.display()))
}

fn tail(path: &Path, n: usize) -> String {
    let s = fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs an up-script; retries with fresh ports when it fails (a port picked by [`free_port`] can be taken by
/// someone else before the peer binds it).
fn start_peer(
    what: &str,
    script: &Path,
    dir: &Path,
    mut args: impl FnMut() -> Vec<String>,
    log: &str,
) -> Vec<String> {
    let mut last = String::new();
    for attempt in 0..3 {
        let a = args();
        let out = run(peers_cache_env(Command::new(script).arg(dir).args(&a)).stdin(Stdio::null()));
        if out.status.success() && dir.join("node.json").exists() {
            return a;
        }
        last = format!(
            "attempt {attempt}: {} {}: {}\nstderr: {}\n{log}: {}",
            script.display(),
            a.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            tail(&dir.join(log), 30)
        );
        eprintln!("{what} failed to start, retrying: {last}");
    }
    panic!("{what} did not start:\n{last}");
}

/// A running Kubo 0.22 reference node (loopback only), stopped on drop.
pub struct Kubo {
    tmp: Option<TempDir>,
    pub dir: PathBuf,
    pub info: serde_json::Value,
    pub ctl_url: String,
    pub gateway_url: String,
    pub multiaddr: String,
    args: Vec<String>,
    peers: PathBuf,
    running: bool,
}

impl Kubo {
    /// Kubo with its defaults (= the `unixfs-v0-2015` profile).
    pub fn start(peers: &Path) -> Kubo {
        Self::start_with(peers, None)
    }

    /// Kubo with `Internal.UnixFSShardingSizeThreshold` (e.g. "64KiB"), so large directories become HAMTs.
    pub fn start_with(peers: &Path, shard_threshold: Option<&str>) -> Kubo {
        let tmp = tempdir("kubo");
        let dir = tmp.path().join("node");
        let shard = shard_threshold.map(str::to_owned);
        let args = start_peer(
            "kubo",
            &peers.join("kubo-up.sh"),
            &dir,
            || {
                let mut a = vec![
                    "--swarm-port".to_string(),
                    free_port().to_string(),
                    "--ctl-port".to_string(),
                    free_port().to_string(),
                ];
                if let Some(s) = &shard {
                    a.extend(["--shard-threshold".to_string(), s.clone()]);
                }
                a
            },
            "daemon.log",
        );
        let info = read_node_json(&dir);
        let s = |k: &str| {
            info[k]
                .as_str()
                .unwrap_or_else(|| panic!("kubo node.json lacks {k}: {info}"))
                .to_string()
        };
        Kubo {
            ctl_url: s("ctl_url"),
            gateway_url: s("gateway_url"),
            multiaddr: info["multiaddrs"][0]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            info,
            dir,
            tmp: Some(tmp),
            args,
            peers: peers.to_path_buf(),
            running: true,
        }
    }

    pub fn gateway_url(&self) -> &str {
        &self.gateway_url
    }

    /// Imports a file or directory (recursively, like `ipfs add -r`); returns the root CID.
    pub fn add_path(&self, path: &Path) -> String {
        let path = fs::canonicalize(path).unwrap();
        let url = format!(
            "{}/add?path={}",
            self.ctl_url,
            urlencode(path.as_os_str().as_bytes())
        );
        let v = http_json("POST", &url, 900);
        v["Hash"]
            .as_str()
            .unwrap_or_else(|| panic!("kubo add: no Hash in {v}"))
            .to_string()
    }

    /// Imports bytes as one file; returns its CID.
    pub fn add_bytes(&self, data: &[u8]) -> String {
        let f = tempfile::NamedTempFile::new().unwrap();
        fs::write(f.path(), data).unwrap();
        self.add_path(f.path())
    }

    pub fn stop(&mut self) {
        if self.running {
            let out = run(Command::new(self.peers.join("kubo-down.sh")).arg(&self.dir));
            if !out.status.success() {
                eprintln!("kubo-down.sh: {}", String::from_utf8_lossy(&out.stderr));
            }
            self.running = false;
        }
    }

    /// Starts the same node again (same DIR, same ports).
    pub fn restart(&mut self) {
        self.stop();
        let out = run(peers_cache_env(
            Command::new(self.peers.join("kubo-up.sh"))
                .arg(&self.dir)
                .args(&self.args),
        ));
        assert!(
            out.status.success(),
            "kubo restart failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.info = read_node_json(&self.dir);
        self.running = true;
    }
}

impl Drop for Kubo {
    fn drop(&mut self) {
        self.stop();
        if let Some(t) = self.tmp.take() {
            keep_tmp(t);
        }
    }
}

/// Import settings for [`Helia::add_path`] (the query parameters of its `/add`).
#[derive(Clone, Debug, Default)]
pub struct HeliaAdd {
    /// `unixfs-v0-2015` or `unixfs-v1-2025`; None = the @helia/unixfs defaults.
    pub profile: Option<&'static str>,
    pub chunk_size: Option<u64>,
    pub raw_leaves: Option<bool>,
    pub trickle: bool,
    pub max_children: Option<u32>,
    pub shard_split_threshold: Option<u64>,
    pub cid_version: Option<u8>,
}

impl HeliaAdd {
    pub fn profile(p: &'static str) -> Self {
        HeliaAdd {
            profile: Some(p),
            ..Default::default()
        }
    }

    pub fn query(&self) -> String {
        let mut q = String::new();
        let mut kv = |k: &str, v: String| q.push_str(&format!("&{k}={v}"));
        if let Some(p) = self.profile {
            kv("profile", p.to_string());
        }
        if let Some(c) = self.chunk_size {
            kv("chunk-size", c.to_string());
        }
        if let Some(r) = self.raw_leaves {
            kv("raw-leaves", r.to_string());
        }
        if self.trickle {
            // helia_node.mjs turns trickle on when the parameter is present at all.
            kv("trickle", "true".to_string());
        }
        if let Some(m) = self.max_children {
            kv("max-children", m.to_string());
        }
        if let Some(s) = self.shard_split_threshold {
            kv("shard-split-threshold", s.to_string());
        }
        if let Some(v) = self.cid_version {
            kv("cid-version", v.to_string());
        }
        q
    }
}

/// A running Helia 7 reference peer (loopback only) with its trustless gateway, stopped on drop.
pub struct Helia {
    tmp: Option<TempDir>,
    pub dir: PathBuf,
    pub info: serde_json::Value,
    pub http_url: String,
    pub gateway_url: String,
    pub multiaddr: String,
    args: Vec<String>,
    peers: PathBuf,
    running: bool,
}

impl Helia {
    pub fn start(peers: &Path) -> Helia {
        let tmp = tempdir("helia");
        let dir = tmp.path().join("node");
        let args = start_peer(
            "helia",
            &peers.join("helia-up.sh"),
            &dir,
            || {
                vec![
                    "--port".into(),
                    free_port().to_string(),
                    "--http-port".into(),
                    free_port().to_string(),
                ]
            },
            "daemon.log",
        );
        let info = read_node_json(&dir);
        let s = |k: &str| {
            info[k]
                .as_str()
                .unwrap_or_else(|| panic!("helia node.json lacks {k}: {info}"))
                .to_string()
        };
        Helia {
            http_url: s("http_url"),
            gateway_url: s("gateway_url"),
            multiaddr: info["multiaddrs"][0]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            info,
            dir,
            tmp: Some(tmp),
            args,
            peers: peers.to_path_buf(),
            running: true,
        }
    }

    pub fn gateway_url(&self) -> &str {
        &self.gateway_url
    }

    /// Imports a file or a directory (recursively) with the given settings; returns the root CID.
    /// NB: Helia follows symlinks and treats `\` in names as a path separator.
    pub fn add_path(&self, path: &Path, opts: &HeliaAdd) -> String {
        let path = fs::canonicalize(path).unwrap();
        let url = format!(
            "{}/add?path={}{}",
            self.http_url,
            urlencode(path.as_os_str().as_bytes()),
            opts.query()
        );
        let v = http_json("POST", &url, 900);
        v["Hash"]
            .as_str()
            .unwrap_or_else(|| panic!("helia add: no Hash in {v}"))
            .to_string()
    }

    pub fn stop(&mut self) {
        if self.running {
            let out = run(Command::new(self.peers.join("helia-down.sh")).arg(&self.dir));
            if !out.status.success() {
                eprintln!("helia-down.sh: {}", String::from_utf8_lossy(&out.stderr));
            }
            self.running = false;
        }
    }

    /// Starts the same peer again: same DIR (so the same blockstore and peer id) and the same ports.
    pub fn restart(&mut self) {
        self.stop();
        let mut last = String::new();
        // The HTTP port may linger briefly after the old process exits.
        for _ in 0..20 {
            let out = run(peers_cache_env(
                Command::new(self.peers.join("helia-up.sh"))
                    .arg(&self.dir)
                    .args(&self.args),
            ));
            if out.status.success() {
                self.info = read_node_json(&self.dir);
                self.running = true;
                return;
            }
            last = format!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stderr),
                tail(&self.dir.join("daemon.log"), 20)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("helia restart failed: {last}");
    }
}

impl Drop for Helia {
    fn drop(&mut self) {
        self.stop();
        if let Some(t) = self.tmp.take() {
            keep_tmp(t);
        }
    }
}

/// Fetches one block from a trustless gateway (`?format=raw`); None on 404.
pub fn gateway_block(gateway: &str, cid: &str) -> Option<Vec<u8>> {
    let (code, body) = http("GET", &format!("{gateway}/ipfs/{cid}?format=raw"), 60);
    match code {
        200 => Some(body),
        404 => None,
        _ => panic!(
            "{gateway}/ipfs/{cid}?format=raw: HTTP {code}: {}",
            String::from_utf8_lossy(&body)
        ),
    }
}

fn pb_varint(b: &[u8], pos: &mut usize) -> Option<u64> {
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

/// Minimal protobuf walk: (field number, varint value or length-delimited bytes); stops at anything odd.
fn pb_fields(b: &[u8]) -> Vec<(u64, Result<u64, &[u8]>)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < b.len() {
        let Some(key) = pb_varint(b, &mut pos) else {
            break;
        };
        match key & 7 {
            0 => match pb_varint(b, &mut pos) {
                Some(v) => out.push((key >> 3, Ok(v))),
                None => break,
            },
            2 => {
                let Some(len) = pb_varint(b, &mut pos) else {
                    break;
                };
                let end = pos.saturating_add(len as usize);
                if end > b.len() {
                    break;
                }
                out.push((key >> 3, Err(&b[pos..end])));
                pos = end;
            }
            1 => pos += 8,
            5 => pos += 4,
            _ => break,
        }
    }
    out
}

/// The UnixFS `Type` of a dag-pb block (0 raw, 1 dir, 2 file, 3 metadata, 4 symlink, 5 HAMT shard) and its number
/// of links. Used to check that peer-made content really has the shape a test wants (e.g. a HAMT).
pub fn dagpb_unixfs_type(block: &[u8]) -> (Option<u64>, usize) {
    let top = pb_fields(block);
    let links = top.iter().filter(|(f, _)| *f == 2).count();
    let data = top
        .iter()
        .find_map(|(f, v)| if *f == 1 { v.err() } else { None });
    let ty = data.and_then(|d| {
        pb_fields(d)
            .into_iter()
            .find_map(|(f, v)| if f == 1 { v.ok() } else { None })
    });
    (ty, links)
}

/// The links of a dag-pb block: (name, CID string).
pub fn dagpb_links(block: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (f, v) in pb_fields(block) {
        let (2, Err(link)) = (f, v) else { continue };
        let mut name = String::new();
        let mut cid = String::new();
        for (lf, lv) in pb_fields(link) {
            match (lf, lv) {
                (1, Err(h)) => {
                    cid = cid::Cid::try_from(h)
                        .map(|c| c.to_string())
                        .unwrap_or_default()
                }
                (2, Err(n)) => name = String::from_utf8_lossy(n).into_owned(),
                _ => {}
            }
        }
        out.push((name, cid));
    }
    out
}

// ---------------------------------------------------------------------------------------------------------------
// The mount
// ---------------------------------------------------------------------------------------------------------------

/// Unescapes a /proc/self/mountinfo path (`\040` for space and so on).
fn unescape_mountinfo(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

/// The filesystem type of whatever is mounted at `path` (e.g. "fuse.ipfs-mount"), if anything.
pub fn mount_fstype(path: &Path) -> Option<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut found = None;
    for line in info.lines() {
        let (pre, post) = line.split_once(" - ")?;
        let f: Vec<&str> = pre.split(' ').collect();
        if f.len() >= 5 && unescape_mountinfo(f[4]) == path {
            found = Some(post.split(' ').next().unwrap_or("").to_string());
        }
    }
    found
}

/// Mount IDs (first field of /proc/self/mountinfo) of everything mounted at `path`, oldest first.
pub fn mount_ids(path: &Path) -> Vec<u64> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut ids = Vec::new();
    for line in info.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() >= 5 && unescape_mountinfo(f[4]) == path {
            if let Ok(id) = f[0].parse() {
                ids.push(id);
            }
        }
    }
    ids
}

/// True when a live FUSE filesystem answers at `path`: statfs(2) always reaches the daemon (never cached), so a
/// stale mount gives ENOTCONN, and an unmounted directory reports its parent's filesystem type.
pub fn fuse_answers(path: &Path) -> Result<bool, i32> {
    const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid path and a zeroed statfs buffer for the kernel to fill.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(io::Error::last_os_error().raw_os_error().unwrap_or(-1));
    }
    Ok(st.f_type as i64 == FUSE_SUPER_MAGIC)
}

pub fn is_mounted(path: &Path) -> bool {
    mount_fstype(path).is_some()
}

/// Lazily unmounts `path` if something is mounted there.
pub fn fusermount_u(path: &Path) {
    if is_mounted(path) {
        let out = run(Command::new("fusermount3").args(["-u", "-z"]).arg(path));
        if !out.status.success() {
            eprintln!(
                "fusermount3 -u -z {}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: plain kill(2) on a PID this process spawned and has not reaped yet.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Waits for a child; SIGKILL after `grace`.
fn stop_child(child: &mut Child, grace: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + grace;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                eprintln!(
                    "pid {} did not exit within {grace:?}; sending SIGKILL",
                    child.id()
                );
                let _ = child.kill();
                return child.wait().ok();
            }
        }
    }
}

/// `ipfs-mount -f` on a temporary mountpoint with a temporary store; unmounted and stopped on drop.
pub struct Mount {
    tmp: Option<TempDir>,
    /// The mountpoint.
    pub mnt: PathBuf,
    /// The store directory (kept across [`Mount::restart`]).
    pub store: PathBuf,
    /// The daemon's stderr, appended to on every start.
    pub log_path: PathBuf,
    args: Vec<OsString>,
    child: Option<Child>,
    starts: u32,
}

impl Mount {
    /// Mounts with these extra arguments (e.g. `["--gateway", url]` or `["--offline"]`); `--store` is added unless
    /// given.
    pub fn start<S: AsRef<OsStr>>(args: &[S]) -> Mount {
        let tmp = tempdir("mount");
        let store = tmp.path().join("store");
        fs::create_dir_all(&store).unwrap();
        Self::start_in(tmp, store, args)
    }

    /// Mounts with an existing store directory (e.g. one filled by [`import_car`]).
    pub fn start_with_store<S: AsRef<OsStr>>(store: &Path, args: &[S]) -> Mount {
        Self::start_in(tempdir("mount"), store.to_path_buf(), args)
    }

    fn start_in<S: AsRef<OsStr>>(tmp: TempDir, store: PathBuf, args: &[S]) -> Mount {
        let mnt = tmp.path().join("mnt");
        fs::create_dir_all(&mnt).unwrap();
        let mut m = Mount {
            log_path: tmp.path().join("ipfs-mount.log"),
            mnt,
            store,
            tmp: Some(tmp),
            args: args.iter().map(|a| a.as_ref().to_owned()).collect(),
            child: None,
            starts: 0,
        };
        m.spawn();
        m
    }

    /// The command line used for the daemon (without the mountpoint).
    fn full_args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec!["-f".into()];
        if !self.args.iter().any(|x| x == "--store") {
            a.push("--store".into());
            a.push(self.store.clone().into());
        }
        let v: usize = std::env::var("IPFS_MOUNT_TEST_VERBOSITY")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1);
        if v > 0 && !self.args.iter().any(|x| x.as_bytes().starts_with(b"-v")) {
            a.push(format!("-{}", "v".repeat(v)).into());
        }
        a.extend(self.args.iter().cloned());
        a
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        self.starts += 1;
        let args = self.full_args();
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        writeln!(
            log,
            "=== start #{}: {} {:?} {}",
            self.starts,
            BIN,
            args,
            self.mnt.display()
        )
        .unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(&args)
            .arg(&self.mnt)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .env("RUST_BACKTRACE", "1");
        let child = scrubbed(&mut cmd)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let timeout = Duration::from_secs(30);
        let t0 = Instant::now();
        let mut last;
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!(
                    "ipfs-mount exited before the mount was ready ({st}); log:\n{}",
                    self.log()
                );
            }
            // A live FUSE mount (not a stale one left behind by a killed daemon), ...
            let mnt = self.mnt.clone();
            let live = is_mounted(&self.mnt)
                && matches!(
                    run_with_timeout(20, move || fuse_answers(&mnt)),
                    Some(Ok(true))
                );
            if live {
                // ... whose root answers.
                let ipfs = self.mnt.join("ipfs");
                match run_with_timeout(20, move || fs::metadata(&ipfs).map(|m| m.is_dir())) {
                    Some(Ok(true)) => return,
                    other => last = format!("<mnt>/ipfs: {other:?}"),
                }
            } else {
                last = format!("statfs: {:?}", fuse_answers(&self.mnt));
            }
            if t0.elapsed() > timeout {
                let log = self.log();
                self.stop();
                panic!("mount not ready after {timeout:?} ({last}); log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }

    /// PID of the running daemon.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// `<mnt>/ipfs/<cid>`
    pub fn ipfs(&self, cid: &str) -> PathBuf {
        self.mnt.join("ipfs").join(cid)
    }

    /// Unmounts (lazily) and stops the daemon: it should exit by itself once unmounted; SIGTERM if it has not
    /// after 2 s, SIGKILL 5 s later.
    pub fn stop(&mut self) {
        fusermount_u(&self.mnt);
        if let Some(mut child) = self.child.take() {
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(2) {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if child.try_wait().ok().flatten().is_none() {
                signal(child.id(), libc::SIGTERM);
            }
            stop_child(&mut child, Duration::from_secs(5));
        }
        fusermount_u(&self.mnt);
    }

    /// Stops the daemon with SIGTERM only (no fusermount first) and returns its exit status: the daemon must
    /// unmount by itself.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        signal(child.id(), libc::SIGTERM);
        stop_child(&mut child, Duration::from_secs(10))
    }

    /// SIGKILLs the daemon without unmounting: the mountpoint is left stale (ENOTCONN).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the daemon again on the same mountpoint without unmounting first (e.g. over a stale mount).
    pub fn start_again(&mut self) {
        self.spawn();
    }

    /// Unmounts and mounts again with the same arguments and store.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Unmounts and mounts again with the same store but new arguments (e.g. `--offline`).
    pub fn restart_with<S: AsRef<OsStr>>(&mut self, args: &[S]) {
        self.stop();
        self.args = args.iter().map(|a| a.as_ref().to_owned()).collect();
        self.spawn();
    }

    /// Panics with the log attached.
    pub fn fail(&self, msg: &str) -> ! {
        panic!(
            "{msg}\n--- ipfs-mount log ({}):\n{}",
            self.log_path.display(),
            tail(&self.log_path, 200)
        );
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "--- ipfs-mount log ({}), last lines:\n{}",
                self.log_path.display(),
                tail(&self.log_path, 80)
            );
        }
        if let Some(t) = self.tmp.take() {
            keep_tmp(t);
        }
    }
}

/// Like [`with_timeout`] but returns None instead of panicking.
pub fn run_with_timeout<T: Send + 'static>(
    secs: u64,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs)).ok()
}

/// `ipfs-mount import --store <store> <cars>...`: returns the root CIDs it printed.
pub fn import_car(store: &Path, cars: &[&Path]) -> Vec<String> {
    let out = run(Command::new(BIN)
        .arg("import")
        .arg("--store")
        .arg(store)
        .args(cars));
    if !out.status.success() {
        panic!(
            "ipfs-mount import {:?} failed ({}):\nstdout: {}\nstderr: {}",
            cars,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

// ---------------------------------------------------------------------------------------------------------------
// Deterministic data
// ---------------------------------------------------------------------------------------------------------------

/// SplitMix64: tiny, fast, deterministic.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let v = self.next_u64().to_le_bytes();
        rest.copy_from_slice(&v[..rest.len()]);
    }
}

pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    Rng::new(seed).fill(&mut v);
    v
}

/// Writes `len` pseudo-random bytes (a function of `seed` only) to `path`.
pub fn write_random_file(path: &Path, len: u64, seed: u64) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).unwrap();
    }
    let mut f = io::BufWriter::with_capacity(1 << 20, File::create(path).unwrap());
    let mut rng = Rng::new(seed);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
}

/// What [`make_tree`] writes.
#[derive(Clone, Debug)]
pub struct TreeSpec {
    pub seed: u64,
    /// Size of `big.bin` (0: none). Tens of MiB give multi-level DAGs with 256 KiB chunks and 174 links
    /// (more than 43.5 MiB), or with small chunks and fan-outs.
    pub big_file: u64,
    /// Relative, directory and dangling symlinks (Helia follows symlinks when importing, so not for Helia).
    pub symlinks: bool,
    /// A name with a backslash (Helia treats `\` as a separator, so not for Helia).
    pub backslash: bool,
    /// Number of entries in `many/` (0: none); a few thousand make a HAMT with a lowered shard threshold.
    pub hamt_entries: usize,
}

impl TreeSpec {
    /// Everything Kubo preserves.
    pub fn kubo(seed: u64, big_file: u64) -> Self {
        TreeSpec {
            seed,
            big_file,
            symlinks: true,
            backslash: true,
            hamt_entries: 0,
        }
    }
    /// Everything Helia preserves (no symlinks, no backslashes).
    pub fn helia(seed: u64, big_file: u64) -> Self {
        TreeSpec {
            seed,
            big_file,
            symlinks: false,
            backslash: false,
            hamt_entries: 0,
        }
    }
    /// Only a directory `many/` with `n` small files (for HAMT tests).
    pub fn hamt(seed: u64, n: usize) -> Self {
        TreeSpec {
            seed,
            big_file: 0,
            symlinks: false,
            backslash: false,
            hamt_entries: n,
        }
    }
}

/// Sizes around the chunk sizes in use (256 KiB, 1 MiB, 100000) and page boundaries.
pub const EDGE_SIZES: &[u64] = &[
    1, 2, 1023, 1024, 4095, 4096, 4097, 65_536, 99_999, 100_000, 100_001, 262_143, 262_144,
    262_145, 1_048_575, 1_048_576, 1_048_577, 2_500_000,
];

/// Odd but portable names (no `/`, NUL; backslash separately).
pub const ODD_NAMES: &[&str] = &[
    "name with spaces.txt",
    " leading space",
    "trailing space ",
    "ünïcødé-名前-🎉.txt",
    "Ελληνικά",
    "q?mark",
    "star*",
    "[brackets]",
    "{braces}",
    "it's",
    "quote\"d",
    "pct%20x",
    "hash#x",
    "amp&x=1+2",
    "tab\tx",
    "-dash",
    "~tilde",
    "a:colon",
    "semi;colon",
    "dollar$x",
    "...",
    "..dots",
    ".hidden",
];

/// Writes a test tree into `root` (which must not exist or be empty). Returns `root`.
///
/// Contents: `hello.txt`, `empty.txt` (0 bytes), `empty-dir/`, `a/b/c/d/deep.bin`, `a/empty-inside/`,
/// `sizes/<n>.bin` for [`EDGE_SIZES`], [`ODD_NAMES`] files plus a directory `dir with spaces/ñ/`, `big.bin`,
/// symlinks, and `many/` per the spec.
pub fn make_tree(root: &Path, spec: &TreeSpec) -> PathBuf {
    fs::create_dir_all(root).unwrap();
    let mut seed = spec.seed.wrapping_mul(1_000_003);
    let mut next_seed = || {
        seed = seed.wrapping_add(1);
        seed
    };
    if spec.hamt_entries > 0 {
        let many = root.join("many");
        fs::create_dir_all(&many).unwrap();
        let mut rng = Rng::new(spec.seed);
        for i in 0..spec.hamt_entries {
            // Varied name lengths and a non-ASCII character, to exercise HAMT hashing of UTF-8 names.
            let pad = "x".repeat(rng.below(24) as usize);
            let name = format!("entry-{i:05}-{pad}-ß.txt");
            let len = rng.below(300);
            write_random_file(&many.join(name), len, next_seed());
        }
        return root.to_path_buf();
    }
    fs::write(root.join("hello.txt"), b"hello world\n").unwrap();
    File::create(root.join("empty.txt")).unwrap();
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    fs::create_dir_all(root.join("a/empty-inside")).unwrap();
    write_random_file(&root.join("a/b/c/d/deep.bin"), 5000, next_seed());
    fs::write(root.join("a/b/sibling.txt"), b"sibling\n").unwrap();
    for &n in EDGE_SIZES {
        write_random_file(&root.join("sizes").join(format!("{n}.bin")), n, next_seed());
    }
    for name in ODD_NAMES {
        let len = 1 + (next_seed() % 3000);
        write_random_file(&root.join("odd").join(name), len, next_seed());
    }
    if spec.backslash {
        fs::write(root.join("odd").join("back\\slash"), b"backslash\n").unwrap();
    }
    let deep = root.join("dir with spaces").join("ñ");
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("file.txt"), "ñandú\n").unwrap();
    if spec.big_file > 0 {
        write_random_file(&root.join("big.bin"), spec.big_file, next_seed());
    }
    if spec.symlinks {
        symlink("hello.txt", root.join("link-to-hello")).unwrap();
        symlink("a/b", root.join("link-to-dir")).unwrap();
        symlink("does/not/exist", root.join("dangling")).unwrap();
        symlink("/nonexistent/absolute/target", root.join("abs-dangling")).unwrap();
        symlink("../../hello.txt", root.join("a/b/up-link")).unwrap();
    }
    root.to_path_buf()
}

// ---------------------------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

fn kind_of(m: &fs::Metadata) -> Kind {
    let t = m.file_type();
    if t.is_symlink() {
        Kind::Symlink
    } else if t.is_dir() {
        Kind::Dir
    } else if t.is_file() {
        Kind::File
    } else {
        Kind::Other
    }
}

/// Compares two files' bytes in 1 MiB pieces; Err names the first differing offset.
pub fn compare_file_bytes(a: &Path, b: &Path) -> Result<u64, String> {
    let mut fa = File::open(a).map_err(|e| format!("open {}: {e}", a.display()))?;
    let mut fb = File::open(b).map_err(|e| format!("open {}: {e}", b.display()))?;
    let mut ba = vec![0u8; 1 << 20];
    let mut bb = vec![0u8; 1 << 20];
    let mut off = 0u64;
    loop {
        let na = read_full(&mut fa, &mut ba)
            .map_err(|e| format!("read {} at {off}: {e}", a.display()))?;
        let nb = read_full(&mut fb, &mut bb)
            .map_err(|e| format!("read {} at {off}: {e}", b.display()))?;
        let n = na.min(nb);
        if ba[..n] != bb[..n] {
            let i = (0..n).find(|&i| ba[i] != bb[i]).unwrap();
            return Err(format!(
                "{}: content differs at byte {}",
                b.display(),
                off + i as u64
            ));
        }
        if na != nb {
            return Err(format!(
                "{}: length differs: {} vs {} bytes",
                b.display(),
                off + na as u64,
                off + nb as u64
            ));
        }
        if na == 0 {
            return Ok(off);
        }
        off += na as u64;
    }
}

/// Reads until the buffer is full or EOF.
pub fn read_full(f: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// How [`compare_trees`] treats source symlinks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Symlinks {
    /// The mount must show a symlink with the same target (Kubo keeps symlinks).
    Preserve,
    /// The importer followed them: compare the target's content (Helia).
    Follow,
}

/// Walks `src` and checks that `mounted` has exactly the same names, types, sizes, bytes and symlink targets.
/// Returns the number of entries checked; Err lists (up to 20) differences.
pub fn compare_trees(src: &Path, mounted: &Path, symlinks: Symlinks) -> Result<usize, String> {
    let mut errs = Vec::new();
    let mut count = 0usize;
    let mut stack = vec![PathBuf::new()];
    let meta = |p: &Path, follow: bool| {
        if follow {
            fs::metadata(p)
        } else {
            fs::symlink_metadata(p)
        }
    };
    while let Some(rel) = stack.pop() {
        if errs.len() >= 20 {
            break;
        }
        let s = src.join(&rel);
        let m = if rel.as_os_str().is_empty() {
            mounted.to_path_buf()
        } else {
            mounted.join(&rel)
        };
        count += 1;
        let sm = match meta(&s, symlinks == Symlinks::Follow) {
            Ok(x) => x,
            Err(e) => {
                errs.push(format!("source {}: {e}", s.display()));
                continue;
            }
        };
        let mm = match fs::symlink_metadata(&m) {
            Ok(x) => x,
            Err(e) => {
                errs.push(format!("{}: {e}", m.display()));
                continue;
            }
        };
        let (sk, mk) = (kind_of(&sm), kind_of(&mm));
        if sk != mk {
            errs.push(format!("{}: type {mk:?}, expected {sk:?}", m.display()));
            continue;
        }
        match sk {
            Kind::File => {
                if sm.len() != mm.len() {
                    errs.push(format!(
                        "{}: st_size {}, expected {}",
                        m.display(),
                        mm.len(),
                        sm.len()
                    ));
                    continue;
                }
                if let Err(e) = compare_file_bytes(&s, &m) {
                    errs.push(e);
                }
            }
            Kind::Symlink => {
                let (st, mt) = (fs::read_link(&s), fs::read_link(&m));
                match (st, mt) {
                    (Ok(a), Ok(b)) if a == b => {}
                    (a, b) => errs.push(format!("{}: readlink {b:?}, expected {a:?}", m.display())),
                }
            }
            Kind::Dir => {
                let names = |d: &Path| -> io::Result<BTreeSet<OsString>> {
                    fs::read_dir(d)?.map(|e| e.map(|e| e.file_name())).collect()
                };
                let sn = names(&s).unwrap();
                let mn = match names(&m) {
                    Ok(x) => x,
                    Err(e) => {
                        errs.push(format!("readdir {}: {e}", m.display()));
                        continue;
                    }
                };
                if sn != mn {
                    let missing: Vec<_> = sn.difference(&mn).take(5).collect();
                    let extra: Vec<_> = mn.difference(&sn).take(5).collect();
                    errs.push(format!(
                        "{}: {} entries, expected {}; missing {missing:?}, unexpected {extra:?}",
                        m.display(),
                        mn.len(),
                        sn.len()
                    ));
                }
                for n in sn.intersection(&mn) {
                    stack.push(rel.join(n));
                }
            }
            Kind::Other => errs.push(format!("{}: unexpected file type in source", s.display())),
        }
    }
    if errs.is_empty() {
        Ok(count)
    } else {
        Err(errs.join("\n"))
    }
}

/// `cat <file>` must succeed and print exactly the source's bytes.
pub fn cat_check(src: &Path, mounted: &Path) -> Result<(), String> {
    let out = run(Command::new("cat").arg(mounted));
    if !out.status.success() {
        return Err(format!(
            "cat {}: {}: {}",
            mounted.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let want = fs::read(src).unwrap();
    if out.stdout != want {
        return Err(format!(
            "cat {}: {} bytes, differs from the source ({} bytes)",
            mounted.display(),
            out.stdout.len(),
            want.len()
        ));
    }
    Ok(())
}

/// `(type char, size for regular files, name)` per entry of `ls -lA` output.
fn ls_entries(out: &str) -> BTreeMap<String, (char, Option<u64>)> {
    let mut m = BTreeMap::new();
    for line in out.lines() {
        if line.starts_with("total ") || line.is_empty() {
            continue;
        }
        // perms links uid gid size time name (--time-style=+T keeps the time one field wide); names may hold
        // runs of spaces, so split the first six fields by hand.
        let mut rest = line;
        let mut parts = Vec::new();
        for _ in 0..6 {
            rest = rest.trim_start_matches(' ');
            let end = rest.find(' ').unwrap_or(rest.len());
            parts.push(&rest[..end]);
            rest = &rest[end..];
        }
        parts.push(rest.strip_prefix(' ').unwrap_or(rest));
        let ty = parts[0].chars().next().unwrap_or('?');
        let size = if ty == '-' {
            parts[4].parse().ok()
        } else {
            None
        };
        let mut name = parts[6].to_string();
        if ty == 'l' {
            if let Some(i) = name.find(" -> ") {
                name.truncate(i);
            }
        }
        m.insert(name, (ty, size));
    }
    m
}

/// `ls -lA` of the mounted directory must succeed without complaints and show the same names, types and file sizes
/// as `ls -lA` of the source directory.
pub fn ls_l_check(src: &Path, mounted: &Path, symlinks: Symlinks) -> Result<(), String> {
    let ls = |d: &Path, deref: bool| {
        let mut c = Command::new("ls");
        c.args(["-lAn", "--quoting-style=literal", "--time-style=+T"])
            .env("LC_ALL", "C.UTF-8");
        if deref {
            c.arg("-L");
        }
        run(c.arg(d))
    };
    let so = ls(src, symlinks == Symlinks::Follow);
    let mo = ls(mounted, false);
    if !mo.status.success() || !mo.stderr.is_empty() {
        return Err(format!(
            "ls -l {}: {}: {}",
            mounted.display(),
            mo.status,
            String::from_utf8_lossy(&mo.stderr)
        ));
    }
    let se = ls_entries(&String::from_utf8_lossy(&so.stdout));
    let me = ls_entries(&String::from_utf8_lossy(&mo.stdout));
    if se != me {
        return Err(format!(
            "ls -l {} differs from the source:\n--- source:\n{}\n--- mount:\n{}",
            mounted.display(),
            String::from_utf8_lossy(&so.stdout),
            String::from_utf8_lossy(&mo.stdout)
        ));
    }
    Ok(())
}

/// `cp -r <mounted> <tmp>/copy` then `diff -r --no-dereference <src> <tmp>/copy` (symlinks are copied as symlinks;
/// with [`Symlinks::Follow`] the source is compared dereferenced).
pub fn cp_r_diff(src: &Path, mounted: &Path, symlinks: Symlinks) -> Result<(), String> {
    let tmp = tempdir("cp");
    let dst = tmp.path().join("copy");
    let out = run(Command::new("cp").arg("-r").arg(mounted).arg(&dst));
    if !out.status.success() {
        return Err(format!(
            "cp -r {}: {}: {}",
            mounted.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut diff = Command::new("diff");
    diff.arg("-r");
    if symlinks == Symlinks::Preserve {
        diff.arg("--no-dereference");
    }
    let out = run(diff.arg(src).arg(&dst));
    if !out.status.success() {
        let s = String::from_utf8_lossy(&out.stdout);
        let head: String = s.lines().take(30).collect::<Vec<_>>().join("\n");
        return Err(format!(
            "diff -r {} <copy of {}>: {}\n{head}\n{}",
            src.display(),
            mounted.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    // The copy keeps the read-only modes; make it removable for non-root users.
    let _ = run(Command::new("chmod").args(["-R", "u+w"]).arg(&dst));
    Ok(())
}

/// The `user.ipfs.cid` xattr through `getfattr` (the tool users run).
pub fn getfattr_cid(path: &Path) -> Result<String, String> {
    let out = run(Command::new("getfattr")
        .args(["--absolute-names", "--only-values", "-n", "user.ipfs.cid"])
        .arg(path));
    if !out.status.success() {
        return Err(format!(
            "getfattr -n user.ipfs.cid {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .trim_end_matches(['\n', '\0'])
        .to_string())
}

/// lgetxattr(2) directly: the value, or the errno.
pub fn lgetxattr(path: &Path, name: &str) -> Result<Vec<u8>, i32> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return Err(io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    buf.truncate(r as usize);
    Ok(buf)
}

/// The errno of an io::Result (None when it succeeded).
pub fn errno_of<T>(r: &io::Result<T>) -> Option<i32> {
    r.as_ref().err().map(|e| e.raw_os_error().unwrap_or(-1))
}

pub fn errno_name(e: i32) -> String {
    let n = match e {
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::EROFS => "EROFS",
        libc::EACCES => "EACCES",
        libc::EPERM => "EPERM",
        libc::ENOTSUP => "ENOTSUP",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENOTCONN => "ENOTCONN",
        libc::ENODATA => "ENODATA",
        libc::ENOSYS => "ENOSYS",
        libc::EXDEV => "EXDEV",
        libc::ETIMEDOUT => "ETIMEDOUT",
        _ => "",
    };
    format!("{n}({e})")
}

/// Asserts that `r` failed with `want`.
#[track_caller]
pub fn assert_errno<T: std::fmt::Debug>(r: io::Result<T>, want: i32, what: &str) {
    match r {
        Ok(v) => panic!("{what}: succeeded ({v:?}), expected {}", errno_name(want)),
        Err(e) => {
            let got = e.raw_os_error().unwrap_or(-1);
            assert_eq!(
                got,
                want,
                "{what}: got {} ({e}), expected {}",
                errno_name(got),
                errno_name(want)
            );
        }
    }
}

/// Reads a whole file on a helper thread, failing the test if it takes longer than `secs`.
pub fn read_timeout(path: &Path, secs: u64) -> io::Result<Vec<u8>> {
    let p = path.to_path_buf();
    with_timeout(secs, &format!("read {}", path.display()), move || {
        fs::read(p)
    })
}

/// `pread` of `len` bytes at `off` (short only at EOF).
pub fn pread(path: &Path, off: u64, len: usize) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let f = File::open(path)?;
    let mut buf = vec![0u8; len];
    let mut n = 0;
    while n < len {
        match f.read_at(&mut buf[n..], off + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(n);
    Ok(buf)
}

/// SHA-256 as lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(data);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// CIDv1 (raw codec, sha2-256) of `data`, as a string.
pub fn raw_cid(data: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(data);
    let mh = multihash::Multihash::<64>::wrap(0x12, &digest).unwrap();
    cid::Cid::new_v1(0x55, mh).to_string()
}

// ---------------------------------------------------------------------------------------------------------------
// A tiny, independent UnixFS + CARv1 writer (raw leaves, one-level files, plain directories), so mount tests can
// make content of any size without the reference peers and without the code under test.
// ---------------------------------------------------------------------------------------------------------------

pub mod car {
    use sha2::Digest;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
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

    /// A block: CID bytes and data.
    #[derive(Clone)]
    pub struct Block {
        pub cid: cid::Cid,
        pub data: Vec<u8>,
    }

    fn cid_of(codec: u64, data: &[u8]) -> cid::Cid {
        let d = sha2::Sha256::digest(data);
        cid::Cid::new_v1(codec, multihash::Multihash::<64>::wrap(0x12, &d).unwrap())
    }

    /// A raw block (codec 0x55).
    pub fn raw(data: &[u8]) -> Block {
        Block {
            cid: cid_of(0x55, data),
            data: data.to_vec(),
        }
    }

    /// A dag-pb node: links (cid, name, tsize), then the UnixFS Data. Fields in canonical order (Links, Data).
    pub fn dagpb(links: &[(cid::Cid, &str, u64)], unixfs: &[u8]) -> Block {
        let mut out = Vec::new();
        for (c, name, tsize) in links {
            let mut l = Vec::new();
            field_bytes(1, &c.to_bytes(), &mut l);
            field_bytes(2, name.as_bytes(), &mut l);
            field_varint(3, *tsize, &mut l);
            field_bytes(2, &l, &mut out);
        }
        field_bytes(1, unixfs, &mut out);
        Block {
            cid: cid_of(0x70, &out),
            data: out,
        }
    }

    /// UnixFS Data for a file with these leaf sizes (no inline data).
    fn unixfs_file(sizes: &[u64]) -> Vec<u8> {
        let mut d = Vec::new();
        field_varint(1, 2, &mut d);
        field_varint(3, sizes.iter().sum(), &mut d);
        for s in sizes {
            field_varint(4, *s, &mut d);
        }
        d
    }

    /// A file as raw leaves of `chunk` bytes under one dag-pb root (or a single raw block if it fits in one).
    /// Returns the root first, then the leaves.
    pub fn file(data: &[u8], chunk: usize) -> Vec<Block> {
        if data.len() <= chunk {
            return vec![raw(data)];
        }
        let leaves: Vec<Block> = data.chunks(chunk).map(raw).collect();
        let links: Vec<_> = leaves
            .iter()
            .map(|b| (b.cid, "", b.data.len() as u64))
            .collect();
        let sizes: Vec<u64> = leaves.iter().map(|b| b.data.len() as u64).collect();
        let root = dagpb(&links, &unixfs_file(&sizes));
        let mut v = vec![root];
        v.extend(leaves);
        v
    }

    /// A plain UnixFS directory over (name, root block of the entry, total size of the entry's DAG).
    pub fn directory(entries: &[(&str, cid::Cid, u64)]) -> Block {
        let mut sorted: Vec<_> = entries.to_vec();
        sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let mut d = Vec::new();
        field_varint(1, 1, &mut d);
        let links: Vec<_> = sorted.iter().map(|(n, c, t)| (*c, *n, *t)).collect();
        dagpb(&links, &d)
    }

    /// Total bytes of a DAG's blocks (for link Tsize).
    pub fn tsize(blocks: &[Block]) -> u64 {
        blocks.iter().map(|b| b.data.len() as u64).sum()
    }

    /// A CARv1 with one root.
    pub fn write(
        root: &cid::Cid,
        blocks: &[Block],
        out: &mut impl std::io::Write,
    ) -> std::io::Result<()> {
        // dag-cbor header {"roots": [CID], "version": 1}; keys in length-first order.
        let cb = root.to_bytes();
        let mut h = vec![0xa2, 0x65];
        h.extend_from_slice(b"roots");
        h.push(0x81);
        h.extend_from_slice(&[0xd8, 0x2a]);
        let n = cb.len() + 1;
        if n < 24 {
            h.push(0x40 | n as u8);
        } else {
            h.extend_from_slice(&[0x58, n as u8]);
        }
        h.push(0x00);
        h.extend_from_slice(&cb);
        h.push(0x67);
        h.extend_from_slice(b"version");
        h.push(0x01);
        let mut buf = Vec::new();
        varint(h.len() as u64, &mut buf);
        buf.extend_from_slice(&h);
        out.write_all(&buf)?;
        for b in blocks {
            let c = b.cid.to_bytes();
            let mut pre = Vec::new();
            varint((c.len() + b.data.len()) as u64, &mut pre);
            out.write_all(&pre)?;
            out.write_all(&c)?;
            out.write_all(&b.data)?;
        }
        Ok(())
    }

    /// Writes a directory of files (name, bytes) as a CAR at `path`; returns the root CID string.
    pub fn write_dir_car(path: &std::path::Path, files: &[(&str, &[u8])], chunk: usize) -> String {
        let mut all = Vec::new();
        let mut entries = Vec::new();
        for (name, data) in files {
            let blocks = file(data, chunk);
            entries.push((*name, blocks[0].cid, tsize(&blocks)));
            all.extend(blocks);
        }
        let dir = directory(&entries);
        let root = dir.cid;
        all.insert(0, dir);
        let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
        write(&root, &all, &mut f).unwrap();
        std::io::Write::flush(&mut f).unwrap();
        root.to_string()
    }
}

/// `pread` through an `O_DIRECT` descriptor: bypasses the page cache, so FUSE sees this exact offset and length.
pub fn pread_direct(path: &Path, off: u64, len: usize) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)?;
    let mut buf = vec![0u8; len];
    let mut n = 0;
    while n < len {
        match f.read_at(&mut buf[n..], off + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(n);
    Ok(buf)
}

// ---------------------------------------------------------------------------------------------------------------
// A size-limited filesystem for full-disk tests (tests/datasets_write.rs)
// ---------------------------------------------------------------------------------------------------------------

/// A tmpfs of a fixed size mounted on a fresh temporary directory (needs root); unmounted (lazily) on drop. Declare
/// it before any [`Mount`] whose store lives on it, so that the mount is stopped first.
pub struct Tmpfs {
    tmp: Option<TempDir>,
    /// Where the tmpfs is mounted.
    pub dir: PathBuf,
}

impl Tmpfs {
    /// `mount -t tmpfs -o size=<size> tmpfs <dir>`; Err says why it cannot (not root, no mount(8), ...).
    pub fn mount(size: &str) -> Result<Tmpfs, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("mounting a tmpfs needs root".into());
        }
        let tmp = tempdir("tmpfs");
        let dir = tmp.path().join("fs");
        fs::create_dir_all(&dir).unwrap();
        let out = run(Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(&dir));
        if !out.status.success() || mount_fstype(&dir).as_deref() != Some("tmpfs") {
            return Err(format!(
                "mount -t tmpfs -o size={size} tmpfs {}: {}: {}",
                dir.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(Tmpfs {
            tmp: Some(tmp),
            dir,
        })
    }

    /// Bytes an unprivileged writer could still write (statvfs `f_bavail * f_frsize`).
    pub fn free_bytes(&self) -> u64 {
        free_bytes(&self.dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if mount_fstype(&self.dir).as_deref() == Some("tmpfs") {
            let out = run(Command::new("umount").arg("-l").arg(&self.dir));
            if !out.status.success() {
                eprintln!(
                    "umount -l {}: {}",
                    self.dir.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        if let Some(t) = self.tmp.take() {
            keep_tmp(t);
        }
    }
}

/// Free bytes on the filesystem holding `path` (statvfs `f_bavail * f_frsize`; 0 if statvfs fails).
pub fn free_bytes(path: &Path) -> u64 {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid path and a zeroed statvfs buffer for the kernel to fill.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return 0;
    }
    st.f_bavail as u64 * st.f_frsize as u64
}

/// CLOCK_MONOTONIC in seconds: the clock Python's `time.monotonic()` reads on Linux, so a test can order a child's
/// timestamped lines against its own events (e.g. a kill -9).
pub fn monotonic_secs() -> f64 {
    // SAFETY: a zeroed timespec for the kernel to fill.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}
