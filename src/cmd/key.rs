//! `ipfs-mount key list|export|import`: the dataset keys, as files in the store, so they work
//! whether or not a mount runs (a running mount notices a replaced key and re-publishes).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

use anyhow::{bail, Context, Result};
use ipfs_mount_ipns::Name;
use libp2p_identity::Keypair;

use super::output::println;
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
                println(&format!("{ds}\t{}", Name::from_public_key(&key.public())))?;
            }
        }
        KeyAction::Export { dataset, output } => {
            let dir = dataset_dir(&datasets, dataset)?;
            let (key, _) = load_or_create_key(&dir)?;
            let bytes = key.to_protobuf_encoding()?;
            match output {
                Some(path) => write_private(path, &bytes)?,
                None => {
                    let mut out = super::output::Stdout::lock();
                    out.write_all(&bytes)?;
                    out.flush()?;
                }
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
            println(&format!(
                "{dataset}\t{}",
                Name::from_public_key(&key.public())
            ))?;
        }
    }
    Ok(())
}

/// Writes a private key to `path`, which ends up mode 0600 even when it existed with another
/// mode (the mode is set before the key is written). A FIFO or device (`/dev/stdout`) is
/// written as it is.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    if f.metadata()?.is_file() {
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot make {} private", path.display()))?;
    }
    f.write_all(bytes)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `key export -o FILE` over an existing file readable by others leaves it mode 0600.
    #[test]
    fn exported_key_is_private_even_over_an_existing_file() {
        let tmp = tempfile::tempdir().unwrap();
        let ds = tmp.path().join("datasets").join("foo");
        std::fs::create_dir_all(&ds).unwrap();
        std::fs::write(ds.join("PROFILE"), crate::datasets::DEFAULT_PROFILE).unwrap();
        let out = tmp.path().join("exported.key");
        std::fs::write(&out, b"an older export").unwrap();
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).unwrap();
        let store = StoreArgs {
            store: Some(tmp.path().to_path_buf()),
            cache_size: 1 << 20,
        };
        let action = KeyAction::Export {
            dataset: "foo".into(),
            output: Some(out.clone()),
        };
        run(&store, &action).unwrap();
        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let key = Keypair::from_protobuf_encoding(&std::fs::read(&out).unwrap()).unwrap();
        let (stored, _) = load_or_create_key(&ds).unwrap();
        assert_eq!(key.public(), stored.public());
    }
}
