//! `ipfs-mount key list|export|import`: the dataset keys, as files in the store, so they work
//! whether or not a mount runs (a running mount notices a replaced key and re-publishes).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

use anyhow::{bail, Context, Result};
use ipfs_mount_ipns::Name;
use libp2p_identity::Keypair;

use crate::cli::{KeyAction, StoreArgs};
use crate::names::{load_or_create_key, write_key, KEY_FILE, RECORD_FILE};

pub fn run(store: &StoreArgs, action: &KeyAction) -> Result<()> {
    let datasets = store.dir().join("datasets");
    match action {
        KeyAction::List => {
            let mut names: Vec<String> = std::fs::read_dir(&datasets)
                .map(|rd| {
                    rd.filter_map(|e| e.ok())
                        .filter(|e| e.path().join("PROFILE").exists())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            names.sort();
            for ds in names {
                let (key, _) = load_or_create_key(&datasets.join(&ds))?;
                println!("{ds}\t{}", Name::from_public_key(&key.public()));
            }
        }
        KeyAction::Export { dataset, output } => {
            let dir = dataset_dir(&datasets, dataset)?;
            let (key, _) = load_or_create_key(&dir)?;
            let bytes = key.to_protobuf_encoding()?;
            match output {
                Some(path) => {
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .mode(0o600)
                        .open(path)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    f.write_all(&bytes)?;
                }
                None => std::io::stdout().write_all(&bytes)?,
            }
        }
        KeyAction::Import { dataset, file } => {
            let dir = dataset_dir(&datasets, dataset)?;
            let bytes =
                std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
            let key = Keypair::from_protobuf_encoding(&bytes)
                .with_context(|| format!("{} is not a libp2p private key", file.display()))?;
            write_key(&dir, &key)?;
            // The old record was signed with the old key.
            let _ = std::fs::remove_file(dir.join(RECORD_FILE));
            println!("{dataset}\t{}", Name::from_public_key(&key.public()));
        }
    }
    Ok(())
}

fn dataset_dir(datasets: &std::path::Path, name: &str) -> Result<std::path::PathBuf> {
    let dir = datasets.join(name);
    if !crate::datasets::valid_name(name) || !dir.join("PROFILE").exists() {
        bail!("no dataset named {name:?}");
    }
    let _ = KEY_FILE;
    Ok(dir)
}
