//! A small control socket, `<store>/control.sock`, so that `import` and `export` work while a
//! mount holds the store.
//!
//! The store belongs to one process at a time (it keeps its LRU index in memory and takes an
//! exclusive lock), so a second process asks the owner instead of opening the store itself.
//! Protocol: one request line, tab-separated: `import\t<absolute CAR path>` or
//! `export\t<cid>`. Import answers `root\t<cid>` lines then `ok` or `error\t<message>`.
//! Export answers `ok\n` followed by the CAR bytes, or a single `error\t<message>` line.
//! The socket file is created with mode 0600: only the store's owner may use it.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context as _, Result};
use ipfs_mount_ipld::cids;

use crate::blocks::BlockService;
use crate::cli::DatasetAction;
use crate::datasets::Datasets;
use crate::transfer;

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
    let request = line.trim_end_matches('\n');
    if let Some(name) = request.strip_prefix("dataset\tpublish\t") {
        let result = match ctx.names {
            Some(names) => rt.block_on(names.publish_now(name)),
            None => Err(anyhow!("names are off in this mount")),
        };
        match result {
            Ok(n) => write!(out, "ok\n{name}\t{n}\n")?,
            Err(e) => writeln!(out, "error\t{}", format!("{e:#}").replace('\n', " "))?,
        }
        return Ok(());
    }
    if let Some(rest) = request.strip_prefix("dataset\t") {
        let parts: Vec<&str> = rest.split('\t').collect();
        let result = DatasetAction::from_request(&parts)
            .ok_or_else(|| anyhow!("unknown dataset request"))
            .and_then(|a| crate::cmd::dataset::execute(datasets, blocks, &a));
        match result {
            Ok(text) => write!(out, "ok\n{text}")?,
            Err(e) => writeln!(out, "error\t{}", format!("{e:#}").replace('\n', " "))?,
        }
        return Ok(());
    }
    if request == "id" {
        let peer_id = match ctx.node {
            Some(n) => n.peer_id().to_string(),
            None => ipfs_mount_p2p::identity::load_or_create(ctx.store_dir)?
                .public()
                .to_peer_id()
                .to_string(),
        };
        write!(out, "ok\n{}", crate::peer::id_json(ctx.node, &peer_id))?;
        return Ok(());
    }
    let mut parts = request.splitn(2, '\t');
    match (parts.next(), parts.next()) {
        (Some("import"), Some(path)) => {
            match transfer::import_one(blocks.store().as_ref(), Path::new(path)) {
                Ok(roots) => {
                    for r in roots {
                        writeln!(out, "root\t{r}")?;
                    }
                    writeln!(out, "ok")?;
                }
                Err(e) => writeln!(out, "error\t{}", format!("{e:#}").replace('\n', " "))?,
            }
        }
        (Some("export"), Some(cid)) => {
            let root = match cids::parse(cid) {
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
        _ => writeln!(out, "error\tunknown request")?,
    }
    Ok(())
}

/// Asks the process that owns the store to import a CAR; returns the roots.
pub fn remote_import(store_dir: &Path, car: &Path) -> Result<Vec<String>> {
    let car = car
        .canonicalize()
        .with_context(|| format!("cannot open {}", car.display()))?;
    let mut conn = connect(store_dir)?;
    writeln!(conn, "import\t{}", car.display())?;
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
    writeln!(conn, "export\t{cid}")?;
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

/// Sends one request line; returns the text after `ok`.
pub fn remote_request(store_dir: &Path, request: &str) -> Result<String> {
    let mut conn = connect(store_dir)?;
    writeln!(conn, "{request}")?;
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
