//! Command implementations: the outer layer. Each turns parsed arguments into calls on the
//! inner modules (which never import `cli`, `mount` or `control`), on an unmounted store or
//! through a running mount's control socket.

mod adapters;
pub mod car;
pub mod dataset;
pub mod id;
pub mod key;
pub mod mount;
pub mod output;
pub mod pin;
pub mod stats;

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;
use ipfs_mount_store::{DiskStore, StoreError};

use crate::cli::{Cli, Command, StoreArgs};

/// True when opening the store failed because another process (a mount) holds it.
pub fn is_locked(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<StoreError>(),
            Some(StoreError::Locked { .. })
        )
    })
}

/// The store, or None when another process (a mount) holds it: then the command goes through
/// that mount's control socket.
pub fn try_open_store(store_args: &StoreArgs) -> Result<Option<Arc<DiskStore>>> {
    match mount::open_store(store_args) {
        Ok(s) => Ok(Some(s)),
        Err(e) if is_locked(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn init_logging(verbose: u8, log_file: Option<&std::path::Path>) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        // fuser warns about requests we leave to its defaults and about unmounts done by
        // fusermount3; neither is news to the user.
        0 => "warn,fuser=error",
        1 => "info,ipfs_mount=info,fuser=error",
        2 => "info,ipfs_mount=debug,ipfs_mount_fetch=debug,ipfs_mount_store=debug,fuser=error",
        _ => "debug,ipfs_mount=trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let file = log_file.and_then(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .ok()
    });
    let _ = match file {
        Some(f) => builder
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(f))
            .try_init(),
        None => builder.with_writer(std::io::stderr).try_init(),
    };
}

/// The program: parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse_checked();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let store = cli.mount.store.clone();
    let verbose = cli.mount.verbose;
    let result = match cli.command {
        Some(Command::Unmount { mountpoint }) => mount::unmount(&mountpoint),
        Some(Command::Import { cars }) => {
            init_logging(verbose, None);
            car::import(&store, &cars)
        }
        Some(Command::Export { net, cid, output }) => {
            init_logging(verbose, None);
            car::export(&store, &net, &cid, output.as_deref())
        }
        Some(Command::Key { action }) => {
            init_logging(verbose, None);
            key::run(&store, &action)
        }
        Some(Command::Id { json }) => {
            init_logging(verbose, None);
            id::run(&store, json)
        }
        Some(Command::Stats { json }) => {
            init_logging(verbose, None);
            stats::run(&store, json)
        }
        Some(Command::Completions { shell }) => stats::completions(shell),
        Some(Command::Man) => stats::man(),
        Some(Command::Dataset { action }) => {
            init_logging(verbose, None);
            dataset::run(&store, &action)
        }
        Some(Command::Pin { action }) => {
            init_logging(verbose, None);
            pin::run(&store, &action)
        }
        Some(Command::Gc { dry_run }) => {
            init_logging(verbose, None);
            pin::gc(&store, dry_run)
        }
        None => mount::run(cli.mount),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `| head -1`: the reader has what it wanted.
        Err(e) if output::is_output_closed(&e) => ExitCode::from(output::CLOSED_STATUS),
        Err(e) => {
            // Not eprintln!: it panics when standard error is closed too.
            let _ = writeln!(std::io::stderr(), "ipfs-mount: {e:#}");
            ExitCode::FAILURE
        }
    }
}
