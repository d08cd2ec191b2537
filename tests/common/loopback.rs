//! The project's own network check: every TCP and UDP socket of the given processes is bound to
//! and connected to loopback only, or to an address the test configured ([`check_sockets`]).
//! This is a property of the product (nothing is dialed beyond what the user named), so it needs
//! nothing beside the clone: it reads `/proc/PID/fd` for the processes' socket inodes and
//! `/proc/PID/net/{tcp,tcp6,udp,udp6}` (the processes' own network namespace) for the addresses.
//! [`LoopbackWatch`] repeats the check on a helper thread for the length of a test.

use std::collections::HashSet;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One socket of a checked process, as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketEntry {
    pub proto: &'static str,
    pub local: (IpAddr, u16),
    pub remote: (IpAddr, u16),
    /// The state column: TCP 0A is LISTEN, UDP 07 is unconnected.
    pub state: u8,
}

impl SocketEntry {
    /// A socket that talks to no one yet: listening, or UDP without a peer.
    fn unconnected(&self) -> bool {
        self.remote.0.is_unspecified() && self.remote.1 == 0
    }
}

impl std::fmt::Display for SocketEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}:{} -> {}:{} (state {:02X})",
            self.proto, self.local.0, self.local.1, self.remote.0, self.remote.1, self.state
        )
    }
}

/// Loopback, seen through IPv4-mapped IPv6 too.
fn is_loopback(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// The socket inodes a process holds (`socket:[N]` links in `/proc/PID/fd`). Empty once it
/// is gone.
fn socket_inodes(pid: u32) -> HashSet<u64> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    dir.flatten()
        .filter_map(|e| fs::read_link(e.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            l.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

/// `0100007F:1F90` (IPv4: one little-endian word) or 32 hex digits (IPv6: four words, each in
/// the kernel's byte order) and a hex port.
fn parse_addr(s: &str) -> Option<(IpAddr, u16)> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(ip, 16).ok()?.swap_bytes(),
        )),
        32 => {
            let mut bytes = [0u8; 16];
            for w in 0..4 {
                let word = u32::from_str_radix(&ip[w * 8..w * 8 + 8], 16).ok()?;
                bytes[w * 4..w * 4 + 4].copy_from_slice(&word.to_le_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some((ip, port))
}

/// The sockets of `pid` listed in its network namespace's tables.
pub fn sockets_of(pid: u32) -> Vec<SocketEntry> {
    let inodes = socket_inodes(pid);
    let mut out = Vec::new();
    if inodes.is_empty() {
        return out;
    }
    for proto in ["tcp", "tcp6", "udp", "udp6"] {
        let Ok(table) = fs::read_to_string(format!("/proc/{pid}/net/{proto}")) else {
            continue;
        };
        // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
        for line in table.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(remote), Some(state), Some(inode)) = (
                cols.get(1).and_then(|s| parse_addr(s)),
                cols.get(2).and_then(|s| parse_addr(s)),
                cols.get(3).and_then(|s| u8::from_str_radix(s, 16).ok()),
                cols.get(9).and_then(|s| s.parse::<u64>().ok()),
            ) else {
                continue;
            };
            if inodes.contains(&inode) {
                out.push(SocketEntry {
                    proto,
                    local,
                    remote,
                    state,
                });
            }
        }
    }
    out
}

/// Ok(number of sockets seen) when every socket of these processes is bound to loopback and
/// talks to loopback or to one of `allowed`; Err listing the others.
pub fn check_sockets(pids: &[u32], allowed: &[IpAddr]) -> Result<usize, String> {
    let mut bad = Vec::new();
    let mut seen = 0;
    for &pid in pids {
        for s in sockets_of(pid) {
            seen += 1;
            let local_ok = is_loopback(&s.local.0) || allowed.contains(&s.local.0);
            let remote_ok =
                s.unconnected() || is_loopback(&s.remote.0) || allowed.contains(&s.remote.0);
            if !local_ok || !remote_ok {
                bad.push(format!("pid {pid}: {s}"));
            }
        }
    }
    if bad.is_empty() {
        Ok(seen)
    } else {
        Err(format!(
            "sockets off loopback (allowed besides: {allowed:?}):\n  {}",
            bad.join("\n  ")
        ))
    }
}

/// [`check_sockets`] with nothing allowed beyond loopback.
pub fn check_loopback(pids: &[u32]) -> Result<(), String> {
    check_sockets(pids, &[]).map(|_| ())
}

/// Runs [`check_loopback`] every `every` on a helper thread until [`LoopbackWatch::finish`].
pub struct LoopbackWatch {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<(usize, Vec<String>)>>,
}

impl LoopbackWatch {
    pub fn start(pids: Vec<u32>, every: Duration) -> LoopbackWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut bad = Vec::new();
            let mut n = 0;
            loop {
                let alive: Vec<u32> = pids
                    .iter()
                    .copied()
                    .filter(|p| Path::new(&format!("/proc/{p}")).exists())
                    .collect();
                if !alive.is_empty() {
                    n += 1;
                    if let Err(e) = check_loopback(&alive) {
                        if bad.len() < 5 {
                            bad.push(e);
                        }
                    }
                }
                let t = Instant::now();
                while t.elapsed() < every {
                    if s.load(Ordering::Relaxed) {
                        return (n, bad);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        });
        LoopbackWatch {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops watching; Ok(number of checks) or the violations seen.
    pub fn finish(mut self) -> Result<usize, String> {
        self.stop.store(true, Ordering::Relaxed);
        let (n, bad) = self.handle.take().unwrap().join().unwrap();
        if bad.is_empty() {
            Ok(n)
        } else {
            Err(bad.join("\n"))
        }
    }
}

impl Drop for LoopbackWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
