//! `ipfs-mount id`: this node's peer id and addresses, from the running mount if any.

use anyhow::{Context, Result};

use super::output::println;
use crate::cli::StoreArgs;
use crate::control::{self, Request};
use crate::peer::id_json;

/// `ipfs-mount id`: asks the running mount, else reads (or creates) the key.
pub fn run(store: &StoreArgs, json: bool) -> Result<()> {
    let dir = store.dir();
    let text = match control::remote_request(&dir, &Request::Id) {
        Ok(t) => t,
        Err(_) => {
            let key = ipfs_mount_p2p::identity::load_or_create(&dir)?;
            id_json(None, &key.public().to_peer_id().to_string())
        }
    };
    if json {
        println(text.trim_end())?;
        return Ok(());
    }
    let v: serde_json::Value = serde_json::from_str(&text).context("bad answer from the mount")?;
    println(v["ID"].as_str().unwrap_or_default())?;
    for a in v["Addresses"].as_array().into_iter().flatten() {
        println(a.as_str().unwrap_or_default())?;
    }
    Ok(())
}
