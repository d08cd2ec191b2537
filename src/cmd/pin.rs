//! `ipfs-mount pin …` and `ipfs-mount gc`: on an unmounted store directly, or through the
//! control socket of the mount that holds the store.

use std::sync::Arc;

use anyhow::{Context, Result};
use ipfs_mount_store::BlockStore;

use super::mount::fetchers;
use super::output;
use super::try_open_store;
use crate::blocks::BlockService;
use crate::cli::{PinAction, StoreArgs};
use crate::control::{self, PinCommand, Request};
use crate::pins::{self, Progress};
use crate::transfer::progress;

/// A spinner on a terminal (hidden otherwise) fed with a walk's progress.
fn reporter(what: &'static str) -> (indicatif::ProgressBar, impl FnMut(Progress) + Send) {
    let pb = progress(None, what);
    pb.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    let shown = pb.clone();
    let report = move |p: Progress| {
        shown.set_message(format!(
            "{what}: {} blocks, {} ({} blocks fetched)",
            p.blocks,
            bytesize::ByteSize(p.bytes),
            p.fetched
        ));
        shown.tick();
    };
    (pb, report)
}

pub fn run(store_args: &StoreArgs, action: &PinAction) -> Result<()> {
    let text = match try_open_store(store_args)? {
        Some(store) => {
            let result = local(&store, action);
            store.flush().ok();
            result?
        }
        None => {
            let request = Request::Pin(match action.clone() {
                PinAction::Add { target, name, .. } => PinCommand::Add { target, name },
                PinAction::Ls { json } => PinCommand::Ls { json },
                PinAction::Rm { what } => PinCommand::Rm { what },
            });
            let (pb, mut report) = reporter("pinning");
            let text = control::remote_with_progress(&store_args.dir(), &request, &mut report);
            pb.finish_and_clear();
            text?
        }
    };
    output::print(&text)?;
    Ok(())
}

/// A pin command on the store this process opened.
fn local(store: &Arc<ipfs_mount_store::DiskStore>, action: &PinAction) -> Result<String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match action {
        PinAction::Add { net, target, name } => {
            let blocks = Arc::new(BlockService::new(
                store.clone(),
                fetchers(net)?,
                net.offline,
                64 << 20,
            ));
            let (pb, mut report) = reporter("pinning");
            let added = runtime.block_on(pins::add(
                &blocks,
                None,
                target,
                name.as_deref(),
                &mut report,
            ));
            pb.finish_and_clear();
            Ok(pins::added_text(&added?))
        }
        PinAction::Ls { json } => pins::list_text(
            &BlockService::new(store.clone(), Vec::new(), true, 1 << 20),
            *json,
        ),
        PinAction::Rm { what } => {
            let blocks = Arc::new(BlockService::new(store.clone(), Vec::new(), true, 16 << 20));
            let removed = runtime.block_on(pins::remove(&blocks, what))?;
            Ok(pins::removed_text(what, removed))
        }
    }
}

pub fn gc(store_args: &StoreArgs, dry_run: bool) -> Result<()> {
    let pb = progress(None, "collecting garbage");
    pb.tick();
    let text = match try_open_store(store_args)? {
        Some(store) => {
            let blocks = BlockService::new(store.clone(), Vec::new(), true, 1 << 20);
            let freed = blocks
                .collect_garbage(dry_run)
                .context("garbage collection failed")?;
            store.flush().ok();
            pins::gc_text(&freed, dry_run)
        }
        None => {
            control::remote_with_progress(&store_args.dir(), &Request::Gc { dry_run }, &mut |_| {})?
        }
    };
    pb.finish_and_clear();
    output::print(&text)?;
    Ok(())
}
