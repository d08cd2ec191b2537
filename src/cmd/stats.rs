//! `ipfs-mount stats`, `completions` and `man`: what a mount is doing, and the command line
//! described for shells and for `man`.

use std::sync::Arc;

use anyhow::{Context, Result};
use clap::CommandFactory;

use super::output;
use crate::blocks::BlockService;
use crate::cli::{Cli, StoreArgs};
use crate::control::{self, Request};
use crate::datasets::Datasets;
use crate::metrics::{Snapshot, Sources};

/// Asks the mount that holds the store; without one, reads the store itself (its counters of
/// traffic are then zero: nothing is moving).
pub fn run(store_args: &StoreArgs, json: bool) -> Result<()> {
    let snapshot = match super::try_open_store(store_args)? {
        Some(store) => {
            let blocks = Arc::new(BlockService::new(store, Vec::new(), true, 1 << 20));
            let datasets = Datasets::open(&store_args.dir(), blocks.clone())?;
            Snapshot::collect(&Sources {
                blocks,
                datasets: Some(datasets),
                node: None,
            })?
        }
        None => {
            let text = control::remote_request(&store_args.dir(), &Request::Stats)?;
            let v: serde_json::Value =
                serde_json::from_str(&text).context("bad stats answer from the mount")?;
            Snapshot::from_json(&v)
        }
    };
    if json {
        output::println(&snapshot.to_json().to_string())?;
    } else {
        output::print(&snapshot.to_text())?;
    }
    Ok(())
}

/// The completion script for `shell` on standard output.
pub fn completions(shell: clap_complete::Shell) -> Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "ipfs-mount", &mut script);
    let mut script = String::from_utf8_lossy(&script).into_owned();
    if shell == clap_complete::Shell::Bash {
        // clap_complete 4.6 names the per-subcommand cases of a hyphenated program
        // `ipfs__subcmd__mount__…` but dispatches to `ipfs__mount__…`, so nothing below
        // the first word would complete: give the cases the name they are reached by.
        script = script.replace("ipfs__subcmd__mount", "ipfs__mount");
    }
    output::print(&script)?;
    Ok(())
}

/// The man page (roff) on standard output.
pub fn man() -> Result<()> {
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut page)
        .context("cannot render the man page")?;
    output::print(&String::from_utf8_lossy(&page))?;
    Ok(())
}
