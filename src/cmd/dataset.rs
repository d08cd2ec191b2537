//! `ipfs-mount dataset …`: on an unmounted store directly, or through the control socket of
//! the mount that holds the store.

use std::sync::Arc;

use anyhow::Result;
use ipfs_mount_store::BlockStore;

use crate::blocks::BlockService;
use crate::cli::{DatasetAction, StoreArgs};
use crate::control::{self, Request};
use crate::datasets::admin::{execute, Command};
use crate::datasets::prune::Keep;
use crate::datasets::Datasets;

pub fn run(store_args: &StoreArgs, action: &DatasetAction) -> Result<()> {
    let command = Command::from(action.clone());
    let text = match super::try_open_store(store_args)? {
        Some(store) => {
            let blocks = Arc::new(BlockService::new(store.clone(), Vec::new(), true, 16 << 20));
            let sets = Datasets::open(&store_args.dir(), blocks.clone())?;
            let out = execute(&sets, &blocks, &command);
            store.flush().ok();
            out?
        }
        None => control::remote_request(&store_args.dir(), &Request::Dataset(command))?,
    };
    super::output::print(&text)?;
    Ok(())
}

impl From<DatasetAction> for Command {
    fn from(a: DatasetAction) -> Self {
        match a {
            DatasetAction::List { json } => Command::List { json },
            DatasetAction::Create { name, profile } => Command::Create { name, profile },
            DatasetAction::Log { name, json } => Command::Log { name, json },
            DatasetAction::Commit { name, message } => Command::Commit { name, message },
            DatasetAction::Publish { name } => Command::Publish { name },
            DatasetAction::Follow { source, name } => Command::Follow { source, name },
            DatasetAction::Unfollow { name } => Command::Unfollow { name },
            DatasetAction::Prune {
                name,
                keep_last,
                keep_within,
            } => Command::Prune {
                name,
                keep: match (keep_last, keep_within) {
                    (Some(n), _) => Keep::Last(n),
                    (None, Some(d)) => Keep::Within(d),
                    // clap requires one of the two
                    (None, None) => Keep::Last(u64::MAX),
                },
            },
        }
    }
}
