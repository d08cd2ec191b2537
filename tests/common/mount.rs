//! The mount: [`Mount`] runs `ipfs-mount -f` as a child with a temporary mountpoint and store, waits until the
//! mount is live, and in `Drop` unmounts lazily and stops the child (SIGTERM, then SIGKILL after 5 s).
//! [`import_car`] runs `ipfs-mount import`; [`mount_fstype`], [`mount_ids`], [`fuse_answers`] read the mount table
//! and probe a mountpoint.

use super::*;

use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
