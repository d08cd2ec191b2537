//! A small control socket, `<store>/control.sock`, so that commands (`import`, `export`, `id`,
//! `dataset …`) work while a mount holds the store. Both ends live here: [`serve`] in the
//! mount, the `remote_*` functions in the commands, sharing one typed [`Request`].
//!
//! The store belongs to one process at a time (it keeps its LRU index in memory and takes an
//! exclusive lock), so a second process asks the owner instead of opening the store itself.
//! Protocol: one request line, tab-separated ([`Request::encode`]). Import answers
//! `root\t<cid>` lines then `ok` or `error\t<message>`. Export answers `ok\n` followed by the
//! CAR bytes, or a single `error\t<message>` line. The others answer `ok\n` and their text, or
//! `error\t<message>`. The socket file is created with mode 0600: only the store's owner may
//! use it.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context as _, Result};
use ipfs_mount_ipld::cids;

use crate::blocks::BlockService;
use crate::datasets::admin::{self, Command};
use crate::datasets::Datasets;
use crate::transfer;

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
            Request::Dataset(c) => match c {
                Command::List { json } => format!("dataset\tlist\t{}", flag(*json)),
                Command::Create { name, profile } => format!("dataset\tcreate\t{name}\t{profile}"),
                Command::Log { name, json } => format!("dataset\tlog\t{name}\t{}", flag(*json)),
                Command::Commit { name, message } => match message {
                    Some(m) => format!("dataset\tcommit\t{name}\t{}", hex_encode(m.as_bytes())),
                    None => format!("dataset\tcommit\t{name}"),
                },
                Command::Publish { name } => format!("dataset\tpublish\t{name}"),
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
    let listener =
        UnixListener::bind(&path).with_context(|| format!("cannot bind {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
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
                        if let Err(e) = handle(conn, &ctx) {
                            tracing::warn!("control request failed: {e:#}");
                        }
                    });
            }
        })?;
    Ok(())
}

struct Context<'a> {
    blocks: &'a Arc<BlockService>,
    datasets: &'a Datasets,
    node: Option<&'a ipfs_mount_p2p::Node>,
    names: Option<&'a Arc<crate::names::Names>>,
    store_dir: &'a Path,
    rt: &'a tokio::runtime::Handle,
}

fn handle(conn: UnixStream, ctx: &Context) -> Result<()> {
    let Context {
        blocks,
        datasets,
        rt,
        ..
    } = *ctx;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut out = conn;
    let fail = |out: &mut UnixStream, e: anyhow::Error| {
        writeln!(out, "error\t{}", format!("{e:#}").replace('\n', " "))
    };
    let Some(request) = Request::parse(line.trim_end_matches('\n')) else {
        writeln!(out, "error\tunknown request")?;
        return Ok(());
    };
    match request {
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
        Request::Dataset(command) => match admin::execute(datasets, blocks, &command) {
            Ok(text) => write!(out, "ok\n{text}")?,
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

    #[test]
    fn requests_round_trip() {
        let all = [
            Request::Import(PathBuf::from("/tmp/a b.car")),
            Request::Export("bafkqaaa".into()),
            Request::Id,
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
