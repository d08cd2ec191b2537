//! `ipfs-mount import` and `ipfs-mount export`: on an unmounted store directly, or through the
//! control socket of the mount that holds the store.

use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use ipfs_mount_ipld::cids;
use ipfs_mount_store::BlockStore;

use super::mount::fetchers;
use super::output;
use super::try_open_store;
use crate::blocks::BlockService;
use crate::cli::{NetArgs, StoreArgs};
use crate::control;
use crate::transfer::{import_one, progress, write_car};

pub fn import(store_args: &StoreArgs, cars: &[PathBuf]) -> Result<()> {
    let store = match try_open_store(store_args)? {
        Some(store) => store,
        None => {
            // A mount owns the store: it imports on our behalf.
            for path in cars {
                let roots = control::remote_import(&store_args.dir(), path)
                    .with_context(|| format!("import of {} failed", path.display()))?;
                for r in roots {
                    output::println(&r.to_string())?;
                }
            }
            return Ok(());
        }
    };
    let blocks = BlockService::new(store.clone(), Vec::new(), true, 16 << 20);
    for path in cars {
        let roots = import_one(&blocks, path)
            .with_context(|| format!("import of {} failed", path.display()))?;
        for r in roots {
            output::println(&r.to_string())?;
        }
    }
    store.flush().context("flushing the store")?;
    Ok(())
}

pub fn export(
    store_args: &StoreArgs,
    net: &NetArgs,
    cid_text: &str,
    output: Option<&Path>,
) -> Result<()> {
    let root = cids::parse(cid_text).map_err(|e| anyhow!("{cid_text:?} is not a CID: {e}"))?;
    let out: Box<dyn Write> = match output {
        Some(p) => Box::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        ),
        None => {
            if std::io::stdout().is_terminal() {
                bail!("refusing to write a CAR to a terminal; use -o FILE or a redirect");
            }
            Box::new(output::Stdout::lock())
        }
    };
    let mut out = BufWriter::with_capacity(1 << 20, out);
    let Some(store) = try_open_store(store_args)? else {
        control::remote_export(&store_args.dir(), &root.to_string(), &mut out)?;
        out.flush()?;
        return Ok(());
    };
    let fetchers = fetchers(net)?;
    let blocks = Arc::new(BlockService::new(
        store.clone(),
        fetchers,
        net.offline,
        64 << 20,
    ));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let pb = progress(None, "exporting");
    let result = write_car(&blocks, runtime.handle(), &root, &mut out, &pb);
    pb.finish_and_clear();
    store.flush().ok();
    result?;
    out.flush()?;
    Ok(())
}
