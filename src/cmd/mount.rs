//! Mount lifecycle: background serving with a readiness report, clean unmount on signals,
//! stale mounts left by a crash, and `ipfs-mount unmount`.
//!
//! Without `--foreground`, the command re-executes itself as a detached child (a fresh process,
//! not a `fork` of a multi-threaded one) and waits until the child reports over a pipe that the
//! kernel has completed the FUSE handshake, or why it could not; so the exit status says whether
//! the mount worked, as with `sshfs` and `mount-s3`.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use super::init_logging;
use crate::blocks::BlockService;
use crate::cli::{MountArgs, NetArgs, StoreArgs};
use crate::fs::IpfsFs;
use crate::tree::{Tree, TreeConfig};
use ipfs_mount_fetch::{Fetcher, GatewayConfig, GatewayFetcher};
use ipfs_mount_store::{BlockStore, DiskStore, StoreConfig};

pub fn run(args: MountArgs) -> Result<()> {
    let mountpoint = args
        .mountpoint
        .clone()
        .ok_or_else(|| anyhow!("a mount point is required"))?;
    if args.foreground {
        serve(args, &mountpoint)
    } else {
        spawn_background(&args, &mountpoint)
    }
}

/// Opens the store configured on the command line.
pub fn open_store(store: &StoreArgs) -> Result<Arc<DiskStore>> {
    crate::datasets::free_reserve_if_full(&store.dir());
    let dir = store.dir();
    let s = DiskStore::open(StoreConfig {
        dir: dir.clone(),
        cache_capacity: store.cache_size,
        sync_writes: false,
    })
    .map_err(anyhow::Error::new)
    .with_context(|| format!("cannot open the block store at {}", dir.display()))?;
    // The datasets module creates `datasets/` when missing; made here first, it is private.
    let datasets = dir.join("datasets");
    ipfs_mount_store::create_private_dir(&datasets)
        .with_context(|| format!("cannot create {}", datasets.display()))?;
    // We hold the store's lock and no import of ours has started: any import temporary pin is a
    // leftover of an import that did not finish.
    if let Err(e) = crate::transfer::release_leftovers(&s) {
        tracing::warn!("cannot release the temporary pins of unfinished imports: {e}");
    }
    crate::pins::release_leftovers(&s);
    Ok(Arc::new(s))
}

/// The gateway fetchers the command line asks for (none when offline).
pub fn fetchers(net: &NetArgs) -> Result<Vec<Arc<dyn Fetcher>>> {
    gateway_fetchers(net, true)
}

/// Gateways: those named (--gateway, $IPFS_GATEWAY), else the local default when
/// `allow_default` (it is not when the user named peers or routers as sources instead).
fn gateway_fetchers(net: &NetArgs, allow_default: bool) -> Result<Vec<Arc<dyn Fetcher>>> {
    if net.offline || net.no_gateway {
        return Ok(Vec::new());
    }
    let list = match net.named_gateway_urls() {
        Some(l) => l,
        None if allow_default => net.gateway_urls(),
        None => return Ok(Vec::new()),
    };
    let mut urls = Vec::new();
    for u in list {
        let url = url::Url::parse(&u).with_context(|| format!("invalid gateway URL {u:?}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            bail!("gateway URL {u:?} must be http or https");
        }
        urls.push(url);
    }
    let config = GatewayConfig {
        urls,
        request_timeout: Duration::from_secs(net.timeout.max(1)),
        ..GatewayConfig::default()
    };
    let gw = GatewayFetcher::new(config).map_err(|e| anyhow!("gateway set-up failed: {e}"))?;
    Ok(vec![Arc::new(gw)])
}

fn spawn_background(args: &MountArgs, mountpoint: &Path) -> Result<()> {
    let store_dir = args.store.dir();
    ipfs_mount_store::create_private_dir(&store_dir)
        .with_context(|| format!("cannot create {}", store_dir.display()))?;
    let log_path = args
        .log_file
        .clone()
        .unwrap_or_else(|| store_dir.join("ipfs-mount.log"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open log file {}", log_path.display()))?;
    let (read_end, write_end) = pipe()?;
    let write_fd = std::os::fd::AsRawFd::as_raw_fd(&write_end);
    let exe = std::env::current_exe().context("cannot find our own executable")?;
    let mut cmd = Command::new(exe);
    cmd.args(crate::cli::command_line_args())
        .arg("--foreground")
        .arg("--ready-fd")
        .arg(write_fd.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    if args.log_file.is_none() {
        cmd.arg("--log-file").arg(&log_path);
    }
    // Detach from the terminal's session so the shell's signals and hang-ups do not reach it.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("cannot start the background process")?;
    drop(write_end);
    let mut report = String::new();
    let mut reader = std::fs::File::from(read_end);
    let _ = reader.read_to_string(&mut report);
    if report.trim() == "ok" {
        super::output::println(&format!(
            "mounted {} (pid {}, log {})",
            mountpoint.display(),
            child.id(),
            log_path.display()
        ))?;
        return Ok(());
    }
    let status = child.try_wait().ok().flatten();
    if report.trim().is_empty() {
        bail!(
            "the background process exited ({}) before mounting; see {}",
            status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "still running".into()),
            log_path.display()
        );
    }
    bail!("{}", report.trim())
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // Plain pipe(2): the write end must survive exec in the child.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error()).context("pipe");
    }
    unsafe {
        // Our read end should not leak into the child.
        libc::fcntl(fds[0], libc::F_SETFD, libc::FD_CLOEXEC);
        Ok((OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])))
    }
}

/// Reports the outcome of mounting to a waiting parent, if there is one.
struct Readiness(Option<std::fs::File>);

impl Readiness {
    fn from_fd(fd: Option<i32>) -> Self {
        Readiness(fd.map(|fd| unsafe { std::fs::File::from_raw_fd(fd) }))
    }
    fn report(&mut self, message: &str) {
        if let Some(mut f) = self.0.take() {
            let _ = f.write_all(message.as_bytes());
        }
    }
}

fn serve(args: MountArgs, mountpoint: &Path) -> Result<()> {
    let mut ready = Readiness::from_fd(args.ready_fd);
    init_logging(args.verbose, args.log_file.as_deref());
    match mount_and_serve(&args, mountpoint, &mut ready) {
        Ok(()) => Ok(()),
        Err(e) => {
            tracing::error!("{e:#}");
            ready.report(&format!("{e:#}"));
            Err(e)
        }
    }
}

fn mount_and_serve(args: &MountArgs, mountpoint: &Path, ready: &mut Readiness) -> Result<()> {
    prepare_mountpoint(mountpoint)?;
    let store = open_store(&args.store)?;
    // More workers than cores: a bulk fetch may briefly block one while its ingest queue is full.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .thread_name("ipfs-mount")
        .build()
        .context("cannot start the async runtime")?;
    let peer_config = peer_config(args);
    if args.net.offline && (!args.p2p.peers.is_empty() || !args.p2p.routers.is_empty()) {
        tracing::info!(
            peers = args.p2p.peers.len(),
            routers = args.p2p.routers.len(),
            "--offline: no peer is dialed and no router asked"
        );
    }
    let node = crate::peer::start(
        &peer_config,
        &args.store.dir(),
        store.clone() as Arc<dyn BlockStore>,
        &runtime,
    )?;
    let gateways = gateway_fetchers(&args.net, !peer_config.has_peer_sources())?;
    let bitswap: Option<Arc<dyn Fetcher>> = match &node {
        Some(n) if !args.net.offline => Some(Arc::new(
            ipfs_mount_p2p::bitswap::dag::BitswapFetcher::new(n.bitswap().clone()),
        )),
        _ => None,
    };
    // Peers the user named are asked first; otherwise gateways first, peers as fallback.
    let mut fetchers = Vec::new();
    if !args.p2p.peers.is_empty() {
        fetchers.extend(bitswap.clone());
        fetchers.extend(gateways);
    } else {
        fetchers.extend(gateways);
        fetchers.extend(bitswap);
    }
    let block_store: Arc<dyn BlockStore> = match &node {
        Some(n) => crate::peer::AnnouncingStore::wrap(store.clone(), n.clone(), peer_config.dht),
        None => store.clone(),
    };
    let blocks = Arc::new(BlockService::new(
        block_store,
        fetchers,
        args.net.offline,
        args.memory_cache,
    ));
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let policy = crate::datasets::CommitPolicy {
        quiet: args.commit_delay,
        interval: args.commit_interval,
    };
    let datasets = crate::datasets::Datasets::open_with(&args.store.dir(), blocks.clone(), policy)?;
    datasets.start_committer();
    let names = start_names(args, &datasets, node.clone(), &runtime)?;
    datasets.start_follower(blocks.clone(), Arc::new(names.clone()), runtime.handle());
    if let Some(addr) = args.names.serve {
        let config = crate::serve::ServeConfig {
            addr,
            allow_fetch: args.names.serve_fetch,
            provider: node.as_ref().map(|n| crate::serve::Provider {
                peer_id: n.peer_id().to_string(),
                addrs: n
                    .listen_addrs()
                    .iter()
                    .map(|a| match ipfs_mount_p2p::node::split_peer_addr(a) {
                        Some((_, bare)) => bare.to_string(),
                        None => a.to_string(),
                    })
                    .collect(),
            }),
        };
        let source: Arc<dyn crate::serve::NameSource> =
            Arc::new(super::adapters::GatewayNames(names.clone()));
        let bound = runtime
            .block_on(crate::serve::start(config, blocks.clone(), Some(source)))
            .with_context(|| format!("cannot serve the gateway on {addr}"))?;
        tracing::info!("gateway serving the store on http://{bound}");
    }
    if let Some(addr) = args.metrics {
        let sources = crate::metrics::Sources {
            blocks: blocks.clone(),
            datasets: Some(datasets.clone()),
            node: node.clone(),
        };
        let bound = runtime
            .block_on(crate::metrics::serve(addr, sources))
            .with_context(|| format!("cannot serve metrics on {addr}"))?;
        tracing::info!("metrics at http://{bound}/metrics");
    }
    crate::control::serve(
        &args.store.dir(),
        blocks.clone(),
        datasets.clone(),
        node.clone(),
        Some(names.clone()),
        runtime.handle().clone(),
    )?;
    let tree = Tree::with_datasets(
        blocks,
        TreeConfig {
            uid,
            gid,
            ..TreeConfig::default()
        },
        Some(datasets.clone()),
    );
    tree.set_names(Arc::new(super::adapters::TreeNames(names)));
    let fs = IpfsFs::new(tree, runtime.handle().clone());

    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName("ipfs-mount".into()),
        fuser::MountOption::Subtype("ipfs".into()),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::NoAtime,
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
    ];
    if args.allow_other {
        config.acl = fuser::SessionACL::All;
    }
    config.n_threads = Some(2);
    let mut session = fuser::Session::new(fs, mountpoint, &config)
        .with_context(|| format!("cannot mount at {}", mountpoint.display()))?;
    let mut unmounter = session.unmount_callable();
    let mp = mountpoint.to_path_buf();
    runtime.spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        tokio::select! {
            _ = int.recv() => {},
            _ = term.recv() => {},
        }
        tracing::info!("signal received, unmounting {}", mp.display());
        if let Err(e) = unmounter.unmount() {
            tracing::warn!(
                "unmount of {} failed: {e}; trying lazy unmount",
                mp.display()
            );
            let _ = fusermount(&mp, true);
        }
    });
    tracing::info!("mounted at {}", mountpoint.display());
    ready.report("ok");
    let result = session.run();
    tracing::info!("unmounted {}", mountpoint.display());
    // Everything acknowledged becomes a version before the store is released.
    datasets.shutdown();
    if let Err(e) = store.flush() {
        tracing::warn!("flushing the store failed: {e}");
    }
    runtime.shutdown_timeout(Duration::from_secs(2));
    result.context("FUSE session failed")
}

/// The peer's part of the command line. `--offline` contacts nothing: no `--peer` is dialed,
/// no `--routing` router asked, no DHT run; the node only answers peers that connect to it.
fn peer_config(args: &MountArgs) -> crate::peer::PeerConfig {
    let offline = args.net.offline;
    crate::peer::PeerConfig {
        enabled: !args.p2p.no_p2p,
        peers: if offline {
            Vec::new()
        } else {
            args.p2p.peers.clone()
        },
        routers: if offline {
            Vec::new()
        } else {
            args.p2p.routers.clone()
        },
        listen: args.p2p.listen.clone(),
        dht: if offline {
            ipfs_mount_p2p::DhtMode::Off
        } else {
            args.p2p.dht
        },
        fetch_timeout_secs: args.net.timeout,
        offline,
    }
}

/// Names: resolution sources are the named gateways (else the default one, unless peers or
/// routers were named instead), the routers and the DHT; datasets are published at once.
fn start_names(
    args: &MountArgs,
    datasets: &Arc<crate::datasets::Datasets>,
    node: Option<Arc<ipfs_mount_p2p::Node>>,
    runtime: &tokio::runtime::Runtime,
) -> Result<Arc<crate::names::Names>> {
    let net = &args.net;
    let mut gateways = Vec::new();
    if !net.offline && !net.no_gateway {
        let list = match net.named_gateway_urls() {
            Some(l) => l,
            None if !peer_config(args).has_peer_sources() => net.gateway_urls(),
            None => Vec::new(),
        };
        for g in list {
            let mut u =
                url::Url::parse(&g).with_context(|| format!("invalid gateway URL {g:?}"))?;
            if !u.path().ends_with('/') {
                let p = format!("{}/", u.path());
                u.set_path(&p);
            }
            gateways.push(u);
        }
    }
    let mut routers = Vec::new();
    // --offline: records are signed and kept, never sent; names are not looked up.
    for r in args.p2p.routers.iter().filter(|_| !net.offline) {
        let mut u = url::Url::parse(r).with_context(|| format!("invalid --routing URL {r:?}"))?;
        if !u.path().ends_with('/') {
            let p = format!("{}/", u.path());
            u.set_path(&p);
        }
        routers.push(u);
    }
    let config = crate::names::NamesConfig {
        gateways,
        routers,
        dns: args.names.dns,
        lifetime: args.names.ipns_lifetime,
        ttl: args.names.ipns_ttl,
        timeout: Duration::from_secs(net.timeout.clamp(1, 10)),
        offline: net.offline,
    };
    let names = crate::names::Names::new(config, &args.store.dir(), datasets.clone(), node)?;
    names.start_publisher(runtime.handle());
    Ok(names)
}

/// Checks the mount point, replacing a stale mount left by a crashed process.
fn prepare_mountpoint(mountpoint: &Path) -> Result<()> {
    // statfs always reaches a FUSE daemon (stat may be answered from the kernel's cache), so a
    // mount whose process died shows up as ENOTCONN here.
    let stale = match nix::sys::statfs::statfs(mountpoint) {
        Err(nix::errno::Errno::ENOTCONN) => true,
        Err(e) => {
            return Err(std::io::Error::from(e))
                .with_context(|| format!("cannot use {} as a mount point", mountpoint.display()))
        }
        Ok(_) => false,
    };
    if stale {
        tracing::warn!(
            "{}: stale mount (its process is gone); replacing it",
            mountpoint.display()
        );
        fusermount(mountpoint, true)?;
    } else if is_mounted(mountpoint) {
        bail!("{} is already mounted", mountpoint.display());
    }
    let m = std::fs::metadata(mountpoint)
        .with_context(|| format!("cannot use {} as a mount point", mountpoint.display()))?;
    if !m.is_dir() {
        bail!("{} is not a directory", mountpoint.display());
    }
    Ok(())
}

fn is_mounted(mountpoint: &Path) -> bool {
    let Ok(canon) = mountpoint.canonicalize() else {
        return false;
    };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    info.lines()
        .any(|l| l.split(' ').nth(4).map(unescape_mount_path).as_deref() == Some(canon.as_path()))
}

fn unescape_mount_path(s: &str) -> PathBuf {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
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
    PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(out))
}

fn fusermount(mountpoint: &Path, lazy: bool) -> Result<()> {
    let mut cmd = Command::new("fusermount3");
    cmd.arg("-u");
    if lazy {
        cmd.arg("-z");
    }
    let out = cmd
        .arg(mountpoint)
        .output()
        .context("cannot run fusermount3 (install the fuse3 package)")?;
    if !out.status.success() {
        bail!(
            "fusermount3 -u {}: {}",
            mountpoint.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Unmounts, then waits until the daemon that served the mount has exited, so that its store
/// is released when we return (a new mount of the same store works at once).
pub fn unmount(mountpoint: &Path) -> Result<()> {
    // A daemon that does not answer (hung) must not hang the unmount: ask on a helper thread
    // and go on without waiting for it after a while.
    let (tx, rx) = std::sync::mpsc::channel();
    let mp = mountpoint.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(daemon_of(&mp));
    });
    let daemon = rx.recv_timeout(Duration::from_secs(5)).ok().flatten();
    fusermount(mountpoint, false)?;
    if let Some((pid, pidfd)) = daemon {
        wait_for_exit(pid, &pidfd, UNMOUNT_WAIT)?;
    }
    Ok(())
}

/// How long `unmount` waits for the daemon to commit what is pending and release the store.
const UNMOUNT_WAIT: Duration = Duration::from_secs(120);

/// The daemon serving `mountpoint` (its pid, from the root's [`crate::fs::XATTR_DAEMON_PID`])
/// as a pidfd, which stays that process's even if the pid is reused. None for a stale mount
/// or one that is not ours.
fn daemon_of(mountpoint: &Path) -> Option<(u32, OwnedFd)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(mountpoint.as_os_str().as_bytes()).ok()?;
    let name = std::ffi::CString::new(crate::fs::XATTR_DAEMON_PID).ok()?;
    let mut buf = [0u8; 32];
    // SAFETY: both strings are NUL-terminated and `buf` is writable for its length.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = usize::try_from(n).ok()?;
    let pid: u32 = std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel just gave us this descriptor; nothing else owns it.
    Some((pid, unsafe { OwnedFd::from_raw_fd(fd as i32) }))
}

/// Waits until the process behind `pidfd` has exited (a pidfd polls readable then).
fn wait_for_exit(pid: u32, pidfd: &OwnedFd, limit: Duration) -> Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let deadline = std::time::Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            bail!(
                "unmounted, but the daemon (pid {pid}) has not exited after {}s: its store is still held",
                limit.as_secs()
            );
        }
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        let ms = PollTimeout::try_from(left.min(Duration::from_secs(1)).as_millis() as i32)
            .unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, ms) {
            Ok(n) if n > 0 => return Ok(()),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(std::io::Error::from(e)).context("waiting for the daemon"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// The store directory and the `datasets/` made when the store is opened are mode 0700.
    #[test]
    fn opened_store_directories_are_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let store = open_store(&StoreArgs {
            store: Some(dir.clone()),
            cache_size: 1 << 20,
        })
        .unwrap();
        for d in [dir.clone(), dir.join("blocks"), dir.join("datasets")] {
            let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", d.display());
        }
        drop(store);
    }
}
