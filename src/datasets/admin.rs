//! Dataset administration (`ipfs-mount dataset list|create|log|commit|publish`): the commands
//! and the text they answer, the same whether run on an unmounted store or inside the mount
//! that holds it (through its control socket).

use std::fmt::Write as _;

use anyhow::{anyhow, Result};

use super::{history, Datasets};
use crate::blocks::BlockService;

/// One dataset command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    List {
        json: bool,
    },
    Create {
        name: String,
        profile: String,
    },
    Log {
        name: String,
        json: bool,
    },
    Commit {
        name: String,
        message: Option<String>,
    },
    Publish {
        name: String,
    },
    /// Follow another machine's dataset as a read-only replica (see `follow.rs`).
    Follow {
        source: String,
        name: Option<String>,
    },
    /// Stop following a replica.
    Unfollow {
        name: String,
    },
    /// Release older versions' trees (see `prune.rs`).
    Prune {
        name: String,
        keep: super::prune::Keep,
    },
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(|c| c.to_string()).unwrap_or_default()
}

fn time_text(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    ipfs_mount_ipns::format_rfc3339(t).unwrap_or_else(|| ms.to_string())
}

/// Runs an action and returns what it prints.
pub fn execute(sets: &Datasets, blocks: &BlockService, command: &Command) -> Result<String> {
    let mut out = String::new();
    match command {
        Command::List { json } => {
            for d in sets.list() {
                let state = if d.damaged.is_some() { "damaged" } else { "ok" };
                if *json {
                    let v = serde_json::json!({
                        "name": d.name,
                        "version": d.version,
                        "root": d.root.map(|c| c.to_string()),
                        "head": d.head.map(|c| c.to_string()),
                        "profile": d.profile,
                        "state": state,
                        "reason": d.damaged,
                        "pending": d.pending,
                    });
                    writeln!(out, "{v}")?;
                } else {
                    let version = d
                        .version
                        .map(|v| format!("v{v}"))
                        .unwrap_or_else(|| "-".into());
                    write!(
                        out,
                        "{}\t{version}\t{}\t{}\t{}\t{state}",
                        d.name,
                        opt(&d.root),
                        opt(&d.head),
                        d.profile
                    )?;
                    match &d.damaged {
                        Some(reason) => writeln!(out, "\t{reason}")?,
                        None => writeln!(out)?,
                    }
                }
            }
        }
        Command::Create { name, profile } => {
            let ds = sets
                .create(name, profile)
                .map_err(|e| anyhow!("cannot create dataset {name}: {e}"))?;
            writeln!(out, "{}", opt(&ds.root_cid()))?;
        }
        Command::Log { name, json } => {
            let head = match (sets.get(name), sets.replicas().get(name)) {
                (Some(ds), _) => ds.head(),
                (None, Some(replica)) => replica.head,
                (None, None) => {
                    return Err(match sets.damaged(name) {
                        Some(reason) => anyhow!("dataset {name:?} is damaged: {reason}"),
                        None => anyhow!("no dataset named {name:?}"),
                    })
                }
            };
            let pruned = super::prune::pruned_versions(blocks, name)?;
            for (cid, c) in history(blocks, head)? {
                let is_pruned = pruned.contains(&cid);
                let time = time_text(c.time_ms);
                let message = c.message.clone().unwrap_or_default();
                if *json {
                    let v = serde_json::json!({
                        "version": c.seq,
                        "root": c.root.to_string(),
                        "commit": cid.to_string(),
                        "prev": c.prev.map(|p| p.to_string()),
                        "time": time,
                        "message": message,
                        "pruned": is_pruned,
                    });
                    writeln!(out, "{v}")?;
                } else {
                    // One line per version: a message's own line breaks are shown as spaces.
                    let message = message.replace(['\n', '\t', '\r'], " ");
                    write!(out, "v{}\t{}\t{}\t{time}\t{message}", c.seq, c.root, cid)?;
                    // A pruned version's tree is released: only its record is kept.
                    writeln!(out, "{}", if is_pruned { "\tpruned" } else { "" })?;
                }
            }
        }
        Command::Commit { name, message } => {
            let ds = sets
                .get(name)
                .ok_or_else(|| anyhow!("no dataset named {name:?}"))?;
            let made = ds
                .commit(message.as_deref())
                .map_err(|e| anyhow!("cannot commit {name}: {e}"))?;
            match made {
                Some(_) => writeln!(
                    out,
                    "v{}\t{}\t{}",
                    ds.version(),
                    opt(&ds.root_cid()),
                    opt(&ds.head())
                )?,
                None => writeln!(
                    out,
                    "v{}\t{}\t{}\t(nothing to commit)",
                    ds.version(),
                    opt(&ds.root_cid()),
                    opt(&ds.head())
                )?,
            }
        }
        Command::Follow { source, name } => {
            let name = name
                .clone()
                .unwrap_or_else(|| super::follow::default_name(source));
            sets.add_replica(source, &name)?;
            writeln!(
                out,
                "{name}\tfollows {source}\t(versions are fetched by a mount of this store)"
            )?;
        }
        Command::Unfollow { name } => {
            let n = sets.remove_replica(blocks, name)?;
            writeln!(out, "{name}\tunfollowed\treleased {n} version(s)")?;
        }
        Command::Prune { name, keep } => {
            let done = super::prune::prune(sets, blocks, name, *keep)
                .map_err(|e| anyhow!("cannot prune {name}: {e:#}"))?;
            for (seq, cid) in &done.released {
                writeln!(out, "pruned\tv{seq}\t{cid}")?;
            }
            writeln!(
                out,
                "kept {} version(s), released {}",
                done.kept,
                done.released.len()
            )?;
        }
        // Records go out through a running mount (its DHT node, routers and gateway).
        Command::Publish { name } => {
            anyhow::bail!("publishing {name} needs a running mount of this store (it signs and sends the records)")
        }
    }
    Ok(out)
}
