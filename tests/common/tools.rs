//! Running things: commands with a scrubbed environment ([`run`], [`run_ok`]), timeouts so that a hung FUSE request
//! fails a test instead of hanging CI ([`with_timeout`], [`run_with_timeout`]), [`which`], temporary directories,
//! free loopback ports and the monotonic clock.

use super::*;

use std::collections::HashSet;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::Duration;

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

pub(super) fn keep_tmp(t: TempDir) {
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

pub(super) fn scrubbed(cmd: &mut Command) -> &mut Command {
    for k in SCRUB_ENV {
        cmd.env_remove(k);
    }
    // The binary reads `$XDG_CONFIG_HOME/ipfs-mount/config.toml` when present: a config file of
    // the machine's user must not change what the tests run.
    if cmd.get_program() == std::ffi::OsStr::new(BIN) {
        cmd.env("XDG_CONFIG_HOME", "/nonexistent/ipfs-mount-tests");
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

pub(super) fn tail(path: &Path, n: usize) -> String {
    let s = fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// CLOCK_MONOTONIC in seconds: the clock Python's `time.monotonic()` reads on Linux, so a test can order a child's
/// timestamped lines against its own events (e.g. a kill -9).
pub fn monotonic_secs() -> f64 {
    // SAFETY: a zeroed timespec for the kernel to fill.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}
