//! A small control socket, `<store>/control.sock`, so that commands (`import`, `export`, `id`,
//! `dataset …`) work while a mount holds the store. Both ends live here: [`serve`] in the
//! mount, the `remote_*` functions in the commands, sharing one typed [`Request`].
//!
//! The store belongs to one process at a time (it keeps its LRU index in memory and takes an
//! exclusive lock), so a second process asks the owner instead of opening the store itself.
//! Protocol: one request line, tab-separated ([`Request::encode`]). Import answers
//! `root\t<cid>` lines then `ok` or `error\t<message>`. Export answers `ok\n` followed by the
//! CAR bytes, or a single `error\t<message>` line. The others answer `ok\n` and their text, or
//! `error\t<message>`.
//!
//! Only the store's owner gets in: the socket file is mode 0600 before the socket listens (so
//! there is no moment at which others can connect), a peer whose uid (`SO_PEERCRED`) is
//! neither ours nor root's is answered `error` and logged, and a request line longer than
//! [`MAX_REQUEST_LINE`] is refused without being read further.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use ipfs_mount_ipld::cids;

use crate::blocks::BlockService;
use crate::datasets::admin::{self, Command};
use crate::datasets::prune::Keep;
use crate::datasets::Datasets;
use crate::transfer;

mod pins;
pub use pins::{remote as remote_with_progress, PinCommand};

/// What a command asks of the mount that holds the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Import the CAR at this absolute path.
    Import(PathBuf),
    /// Export the DAG below this CID as a CAR.
    Export(String),
    /// The node's peer id and addresses (JSON).
    Id,
    Dataset(Command),
    /// `pin add|ls|rm` (see `control/pins.rs`).
    Pin(PinCommand),
    /// Garbage collection.
    Gc {
        dry_run: bool,
    },
    /// The mount's statistics ([`crate::metrics::Snapshot`] as JSON).
    Stats,
}

impl Request {
    /// The request line (without its newline). A commit message is hex-encoded, so it may
    /// hold tabs and newlines.
    pub fn encode(&self) -> String {
        let flag = |b: bool| if b { "json" } else { "text" };
        match self {
            Request::Import(path) => format!("import\t{}", path.display()),
            Request::Export(cid) => format!("export\t{cid}"),
            Request::Id => "id".into(),
            Request::Pin(_) | Request::Gc { .. } => pins::encode(self).unwrap_or_default(),
            Request::Stats => "stats".into(),
            Request::Dataset(c) => match c {
                Command::List { json } => format!("dataset\tlist\t{}", flag(*json)),
                Command::Create { name, profile } => format!("dataset\tcreate\t{name}\t{profile}"),
                Command::Log { name, json } => format!("dataset\tlog\t{name}\t{}", flag(*json)),
                Command::Commit { name, message } => match message {
                    Some(m) => format!("dataset\tcommit\t{name}\t{}", hex_encode(m.as_bytes())),
                    None => format!("dataset\tcommit\t{name}"),
                },
                Command::Publish { name } => format!("dataset\tpublish\t{name}"),
                Command::Follow { source, name } => format!(
                    "dataset\tfollow\t{}\t{}",
                    hex_encode(source.as_bytes()),
                    name.as_deref().unwrap_or("")
                ),
                Command::Unfollow { name } => format!("dataset\tunfollow\t{name}"),
                Command::Prune { name, keep } => match keep {
                    Keep::Last(n) => format!("dataset\tprune\t{name}\tlast\t{n}"),
                    Keep::Within(d) => {
                        format!("dataset\tprune\t{name}\twithin\t{}", d.as_millis())
                    }
                },
            },
        }
    }

    /// Parses a request line; None for anything malformed.
    pub fn parse(line: &str) -> Option<Self> {
        let parts: Vec<&str> = line.split('\t').collect();
        let s = |x: &&str| x.to_string();
        Some(match parts.as_slice() {
            ["import", path] => Request::Import(PathBuf::from(path)),
            ["export", cid] => Request::Export(s(cid)),
            ["id"] => Request::Id,
            ["pin", ..] | ["gc", ..] => return pins::parse(parts.as_slice()),
            ["stats"] => Request::Stats,
            ["dataset", rest @ ..] => Request::Dataset(match rest {
                ["list", f] => Command::List { json: *f == "json" },
                ["create", name, profile] => Command::Create {
                    name: s(name),
                    profile: s(profile),
                },
                ["log", name, f] => Command::Log {
                    name: s(name),
                    json: *f == "json",
                },
                ["commit", name] => Command::Commit {
                    name: s(name),
                    message: None,
                },
                ["commit", name, m] => Command::Commit {
                    name: s(name),
                    message: Some(String::from_utf8(hex_decode(m)?).ok()?),
                },
                ["publish", name] => Command::Publish { name: s(name) },
                ["follow", source, name] => Command::Follow {
                    source: String::from_utf8(hex_decode(source)?).ok()?,
                    name: (!name.is_empty()).then(|| s(name)),
                },
                ["unfollow", name] => Command::Unfollow { name: s(name) },
                ["prune", name, "last", n] => Command::Prune {
                    name: s(name),
                    keep: Keep::Last(n.parse().ok()?),
                },
                ["prune", name, "within", ms] => Command::Prune {
                    name: s(name),
                    keep: Keep::Within(Duration::from_millis(ms.parse().ok()?)),
                },
                _ => return None,
            }),
            _ => return None,
        })
    }
}

fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

pub fn socket_path(store_dir: &Path) -> PathBuf {
    store_dir.join("control.sock")
}

/// Longest request line accepted, newline excluded. Requests are a command, a CAR's path or a
/// dataset name and a hex-encoded commit message: a few KiB at most.
pub const MAX_REQUEST_LINE: usize = 64 << 10;
/// Time a client has to send its request line (our commands send it at once).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves control requests on a background thread until the process exits.
pub fn serve(
    store_dir: &Path,
    blocks: Arc<BlockService>,
    datasets: Arc<Datasets>,
    node: Option<Arc<ipfs_mount_p2p::Node>>,
    names: Option<Arc<crate::names::Names>>,
    rt: tokio::runtime::Handle,
) -> Result<()> {
    let path = socket_path(store_dir);
    let store_dir = store_dir.to_path_buf();
    // We hold the store lock, so a socket file left here belongs to a dead process.
    let _ = std::fs::remove_file(&path);
    let listener = listen_private(&path)?;
    std::thread::Builder::new()
        .name("ipfs-mount-control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let blocks = blocks.clone();
                let datasets = datasets.clone();
                let rt = rt.clone();
                let node = node.clone();
                let names = names.clone();
                let store_dir = store_dir.clone();
                let _ = std::thread::Builder::new()
                    .name("ipfs-mount-control-conn".into())
                    .spawn(move || {
                        let ctx = Context {
                            blocks: &blocks,
                            datasets: &datasets,
                            node: node.as_deref(),
                            names: names.as_ref(),
                            store_dir: &store_dir,
                            rt: &rt,
                        };
                        if let Err(e) = admit_and_handle(conn, &ctx) {
                            tracing::warn!("control request failed: {e:#}");
                        }
                    });
            }
        })?;
    Ok(())
}

/// A listening Unix socket at `path` that only this user can connect to: created, bound and
/// made mode 0600 before `listen`, so that no connection can come in while the mode is still
/// the umask's.
fn listen_private(path: &Path) -> Result<UnixListener> {
    let fd = bind_private(path)?;
    nix::sys::socket::listen(&fd, nix::sys::socket::Backlog::MAXCONN)
        .with_context(|| format!("cannot listen on {}", path.display()))?;
    Ok(UnixListener::from(fd))
}

/// The socket bound at `path` with mode 0600, not listening yet.
fn bind_private(path: &Path) -> Result<OwnedFd> {
    use nix::sys::socket::{bind, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .context("cannot create the control socket")?;
    let addr =
        UnixAddr::new(path).with_context(|| format!("bad socket path {}", path.display()))?;
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr)
        .with_context(|| format!("cannot bind {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot make {} private", path.display()))?;
    Ok(fd)
}

struct Context<'a> {
    blocks: &'a Arc<BlockService>,
    datasets: &'a Datasets,
    node: Option<&'a ipfs_mount_p2p::Node>,
    names: Option<&'a Arc<crate::names::Names>>,
    store_dir: &'a Path,
    rt: &'a tokio::runtime::Handle,
}

/// Whether a peer running as `peer` may use the control socket of a process running as `own`:
/// the same user, or root.
fn peer_allowed(peer: u32, own: u32) -> bool {
    peer == own || peer == 0
}

/// Checks the peer's uid, reads the request line (bounded), then answers it.
fn admit_and_handle(mut conn: UnixStream, ctx: &Context) -> Result<()> {
    let cred = nix::sys::socket::getsockopt(&conn, nix::sys::socket::sockopt::PeerCredentials)
        .context("cannot read the control peer's credentials")?;
    let own = nix::unistd::geteuid().as_raw();
    if !peer_allowed(cred.uid(), own) {
        tracing::warn!(
            uid = cred.uid(),
            pid = cred.pid(),
            "control socket: refused a connection from uid {}: only uid {own} (and root) may use this store",
            cred.uid()
        );
        writeln!(
            conn,
            "error\tpermission denied: uid {} does not own this store",
            cred.uid()
        )?;
        return Ok(());
    }
    conn.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    let line = match read_request_line(&mut BufReader::new(&conn)) {
        Ok(l) => l,
        Err(e) => {
            writeln!(conn, "error\t{}", format!("{e:#}").replace('\n', " "))?;
            return Err(e);
        }
    };
    conn.set_read_timeout(None)?;
    handle(conn, &line, ctx)
}

/// One request line, without its newline (a last line may end at EOF instead). Refused,
/// without reading on, past [`MAX_REQUEST_LINE`] bytes or when it is not UTF-8.
fn read_request_line(r: &mut impl BufRead) -> Result<String> {
    let mut buf = Vec::new();
    r.take(MAX_REQUEST_LINE as u64 + 1)
        .read_until(b'\n', &mut buf)
        .context("cannot read the request")?;
    if buf.last() == Some(&b'\n') {
        buf.pop();
    } else if buf.len() > MAX_REQUEST_LINE {
        bail!("request line longer than {MAX_REQUEST_LINE} bytes");
    }
    String::from_utf8(buf).map_err(|_| anyhow!("request line is not UTF-8"))
}

/// What the control server does with the bytes a client sends before acting on them: the
/// capped line read ([`MAX_REQUEST_LINE`]), then [`Request::parse`]; checks that an accepted
/// request encodes back to itself. For fuzzing (`fuzz/fuzz_targets/control_request.rs`); the
/// server itself never calls it.
#[doc(hidden)]
pub fn fuzz_request(bytes: &[u8]) {
    let mut r = std::io::Cursor::new(bytes);
    let Ok(line) = read_request_line(&mut r) else {
        return;
    };
    assert!(line.len() <= MAX_REQUEST_LINE && !line.contains('\n'));
    if let Some(req) = Request::parse(&line) {
        assert_eq!(
            Request::parse(&req.encode()).as_ref(),
            Some(&req),
            "{line:?}"
        );
    }
}

fn handle(conn: UnixStream, line: &str, ctx: &Context) -> Result<()> {
    let Context {
        blocks,
        datasets,
        rt,
        ..
    } = *ctx;
    let mut out = conn;
    let fail = |out: &mut UnixStream, e: anyhow::Error| {
        writeln!(out, "error\t{}", format!("{e:#}").replace('\n', " "))
    };
    let Some(request) = Request::parse(line) else {
        writeln!(out, "error\tunknown request")?;
        return Ok(());
    };
    match request {
        request @ (Request::Pin(_) | Request::Gc { .. }) => pins::handle(&mut out, request, ctx)?,
        Request::Dataset(Command::Publish { name }) => {
            let result = match ctx.names {
                Some(names) => rt.block_on(names.publish_now(&name)),
                None => Err(anyhow!("names are off in this mount")),
            };
            match result {
                Ok(n) => write!(out, "ok\n{name}\t{n}\n")?,
                Err(e) => fail(&mut out, e)?,
            }
        }
        Request::Dataset(Command::Follow { source, name }) => {
            let result = match ctx.names {
                Some(names) => {
                    rt.block_on(datasets.follow_now(blocks, names, &source, name.as_deref()))
                }
                None => Err(anyhow!("names are off in this mount")),
            };
            match result {
                Ok(text) => write!(out, "ok\n{text}")?,
                Err(e) => fail(&mut out, e)?,
            }
        }
        Request::Dataset(command) => match admin::execute(datasets, blocks, &command) {
            Ok(text) => write!(out, "ok\n{text}")?,
            Err(e) => fail(&mut out, e)?,
        },
        Request::Stats => match crate::metrics::Snapshot::read(blocks, Some(datasets), ctx.node) {
            Ok(s) => write!(out, "ok\n{}", s.to_json())?,
            Err(e) => fail(&mut out, e)?,
        },
        Request::Id => {
            let peer_id = match ctx.node {
                Some(n) => n.peer_id().to_string(),
                None => ipfs_mount_p2p::identity::load_or_create(ctx.store_dir)?
                    .public()
                    .to_peer_id()
                    .to_string(),
            };
            write!(out, "ok\n{}", crate::peer::id_json(ctx.node, &peer_id))?;
        }
        Request::Import(path) => match transfer::import_one(blocks, &path) {
            Ok(roots) => {
                for r in roots {
                    writeln!(out, "root\t{r}")?;
                }
                writeln!(out, "ok")?;
            }
            Err(e) => fail(&mut out, e)?,
        },
        Request::Export(cid) => {
            let root = match cids::parse(&cid) {
                Ok(c) => c,
                Err(e) => {
                    writeln!(out, "error\t{cid:?} is not a CID: {e}")?;
                    return Ok(());
                }
            };
            // Check the root first so that a missing CID gives a clean error line.
            if let Err(e) = rt.block_on(blocks.get(&root)) {
                writeln!(out, "error\t{e}")?;
                return Ok(());
            }
            writeln!(out, "ok")?;
            transfer::write_car(
                blocks,
                rt,
                &root,
                &mut out,
                &indicatif::ProgressBar::hidden(),
            )?;
        }
    }
    Ok(())
}

/// Asks the process that owns the store to import a CAR; returns the roots.
pub fn remote_import(store_dir: &Path, car: &Path) -> Result<Vec<String>> {
    let car = car
        .canonicalize()
        .with_context(|| format!("cannot open {}", car.display()))?;
    let mut conn = connect(store_dir)?;
    writeln!(conn, "{}", Request::Import(car).encode())?;
    let mut roots = Vec::new();
    for line in BufReader::new(conn).lines() {
        let line = line?;
        let mut parts = line.splitn(2, '\t');
        match (parts.next(), parts.next()) {
            (Some("root"), Some(r)) => roots.push(r.to_string()),
            (Some("ok"), None) => return Ok(roots),
            (Some("error"), Some(m)) => bail!("{m}"),
            _ => bail!("unexpected answer from the mount: {line:?}"),
        }
    }
    bail!("the mount closed the control connection early")
}

/// Asks the process that owns the store to export a DAG as a CAR into `out`.
pub fn remote_export(store_dir: &Path, cid: &str, out: &mut dyn Write) -> Result<()> {
    let mut conn = connect(store_dir)?;
    writeln!(conn, "{}", Request::Export(cid.to_string()).encode())?;
    let mut reader = BufReader::new(conn);
    let mut status = String::new();
    reader.read_line(&mut status)?;
    match status.trim_end() {
        "ok" => {}
        s => bail!("{}", s.strip_prefix("error\t").unwrap_or(s)),
    }
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
    }
    Ok(())
}

/// Sends one request; returns the text after `ok`.
pub fn remote_request(store_dir: &Path, request: &Request) -> Result<String> {
    let mut conn = connect(store_dir)?;
    writeln!(conn, "{}", request.encode())?;
    let mut reader = BufReader::new(conn);
    let mut status = String::new();
    reader.read_line(&mut status)?;
    match status.trim_end() {
        "ok" => {
            let mut text = String::new();
            reader.read_to_string(&mut text)?;
            Ok(text)
        }
        s => bail!("{}", s.strip_prefix("error\t").unwrap_or(s)),
    }
}

fn connect(store_dir: &Path) -> Result<UnixStream> {
    let path = socket_path(store_dir);
    UnixStream::connect(&path).map_err(|e| {
        anyhow!("the store {} is in use by another process and its control socket does not answer ({e})", store_dir.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::FromRawFd;

    /// A control socket served over an empty store in `dir`; the runtime must outlive the test.
    fn served(dir: &Path) -> tokio::runtime::Runtime {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let store = Arc::new(ipfs_mount_store::MemoryStore::new(1 << 20));
        let blocks = Arc::new(BlockService::new(store, vec![], true, 1 << 20));
        let datasets = Datasets::open(dir, blocks.clone()).unwrap();
        serve(dir, blocks, datasets, None, None, rt.handle().clone()).unwrap();
        rt
    }

    /// Sends `request` and reads the answer until EOF or 5 s.
    fn ask(sock: &Path, request: &[u8]) -> String {
        let mut c = UnixStream::connect(sock).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // the server may refuse (and close) before reading everything
        let _ = c.write_all(request);
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Connects to `sock` from a child process running as `uid`, sends `request` and returns
    /// the child's exit code (0: answered, 13: connect refused with EACCES) and the answer.
    fn ask_as(uid: u32, sock: &Path, request: &[u8]) -> (i32, String) {
        use std::os::unix::ffi::OsStrExt;
        // everything the child needs is made before the fork: it only makes system calls
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let p = sock.as_os_str().as_bytes();
        assert!(p.len() < addr.sun_path.len());
        for (d, s) in addr.sun_path.iter_mut().zip(p) {
            *d = *s as libc::c_char;
        }
        let mut fds = [0; 2];
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        let mut buf = [0u8; 4096];
        // SAFETY: the child runs only async-signal-safe system calls on memory made above,
        // then `_exit`s.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            unsafe {
                libc::alarm(10);
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(uid) != 0
                    || libc::setuid(uid) != 0
                {
                    libc::_exit(20);
                }
                let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                if fd < 0 {
                    libc::_exit(21);
                }
                let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
                if libc::connect(fd, (&addr as *const libc::sockaddr_un).cast(), len) != 0 {
                    let e = *libc::__errno_location();
                    libc::_exit(if e == libc::EACCES { 13 } else { 22 });
                }
                libc::write(fd, request.as_ptr().cast(), request.len());
                loop {
                    let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
                    if n <= 0 {
                        break;
                    }
                    libc::write(fds[1], buf.as_ptr().cast(), n as usize);
                }
                libc::_exit(0);
            }
        }
        unsafe { libc::close(fds[1]) };
        let mut answer = String::new();
        let mut r = unsafe { std::fs::File::from_raw_fd(fds[0]) };
        r.read_to_string(&mut answer).unwrap();
        let mut status = 0;
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status), "child status {status:#x}");
        (libc::WEXITSTATUS(status), answer)
    }

    /// The socket file is mode 0600 (another user cannot connect), and when its mode lets
    /// others in anyway, a peer whose uid is neither ours nor root's is refused.
    #[test]
    fn only_the_owner_uses_the_control_socket() {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: acting as another user needs root");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let _rt = served(tmp.path());
        let sock = socket_path(tmp.path());
        let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let list = b"dataset\tlist\ttext\n";
        assert!(
            ask(&sock, list).starts_with("ok\n"),
            "the owner is answered"
        );
        let (code, _) = ask_as(65534, &sock, list);
        assert_eq!(code, 13, "uid 65534 cannot connect to a 0600 socket");

        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
        let (code, answer) = ask_as(65534, &sock, list);
        assert_eq!(code, 0);
        assert!(
            answer.starts_with("error\t") && answer.contains("uid 65534"),
            "uid 65534 got {answer:?}"
        );
        assert!(ask(&sock, list).starts_with("ok\n"), "the owner still is");
    }

    /// The socket file is already 0600 while the socket is bound and not yet listening (no
    /// connection can come in before).
    #[test]
    fn socket_is_private_before_it_listens() {
        let tmp = tempfile::tempdir().unwrap();
        let sock = tmp.path().join("s.sock");
        let fd = bind_private(&sock).unwrap();
        let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let e = UnixStream::connect(&sock).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
        nix::sys::socket::listen(&fd, nix::sys::socket::Backlog::MAXCONN).unwrap();
        UnixStream::connect(&sock).unwrap();
    }

    #[test]
    fn peers_allowed_are_the_owner_and_root() {
        assert!(peer_allowed(1000, 1000));
        assert!(peer_allowed(0, 1000));
        assert!(peer_allowed(0, 0));
        assert!(!peer_allowed(1001, 1000));
        assert!(!peer_allowed(65534, 0));
    }

    /// A request line over 64 KiB is refused at once, without waiting for its end; a long one
    /// under the limit is read and parsed.
    #[test]
    fn long_request_lines_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let _rt = served(tmp.path());
        let sock = socket_path(tmp.path());
        let answer = ask(&sock, &vec![b'a'; 100 << 10]);
        assert_eq!(answer, "error\trequest line longer than 65536 bytes\n");
        let mut line = vec![b'a'; 60 << 10];
        line.push(b'\n');
        assert_eq!(ask(&sock, &line), "error\tunknown request\n");
    }

    #[test]
    fn requests_round_trip() {
        let all = [
            Request::Import(PathBuf::from("/tmp/a b.car")),
            Request::Export("bafkqaaa".into()),
            Request::Id,
            Request::Stats,
            Request::Dataset(Command::List { json: true }),
            Request::Dataset(Command::Create {
                name: "sales".into(),
                profile: "unixfs-v1-2025".into(),
            }),
            Request::Dataset(Command::Log {
                name: "sales".into(),
                json: false,
            }),
            Request::Dataset(Command::Commit {
                name: "sales".into(),
                message: None,
            }),
            Request::Dataset(Command::Commit {
                name: "sales".into(),
                message: Some("two\tlines\nwith tabs é".into()),
            }),
            Request::Dataset(Command::Publish {
                name: "sales".into(),
            }),
            Request::Pin(PinCommand::Add {
                target: "/ipfs/bafkqaaa/a\tb".into(),
                name: Some("data".into()),
            }),
            Request::Pin(PinCommand::Add {
                target: "bafkqaaa".into(),
                name: None,
            }),
            Request::Pin(PinCommand::Ls { json: true }),
            Request::Pin(PinCommand::Rm {
                what: "data".into(),
            }),
            Request::Gc { dry_run: true },
            Request::Gc { dry_run: false },
            Request::Dataset(Command::Prune {
                name: "sales".into(),
                keep: Keep::Last(3),
            }),
            Request::Dataset(Command::Follow {
                source: "/ipns/example.org".into(),
                name: Some("copy".into()),
            }),
            Request::Dataset(Command::Follow {
                source: "k51qzi5uqu5d".into(),
                name: None,
            }),
            Request::Dataset(Command::Unfollow {
                name: "copy".into(),
            }),
            Request::Dataset(Command::Prune {
                name: "sales".into(),
                keep: Keep::Within(Duration::from_secs(86400)),
            }),
        ];
        for r in all {
            let line = r.encode();
            assert!(!line.contains('\n'), "{line:?}");
            assert_eq!(Request::parse(&line), Some(r));
        }
        for bad in ["", "dataset", "dataset\tcommit\tx\tzz", "export", "nope\tx"] {
            assert_eq!(Request::parse(bad), None, "{bad:?}");
        }
    }
}
