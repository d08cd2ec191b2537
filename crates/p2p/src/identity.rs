//! The node's persistent identity: an Ed25519 key in the store directory.
//!
//! Stored as the libp2p protobuf encoding of the private key (the format Kubo and js-libp2p
//! use in their keystores), in a file created with mode 0600 before any byte is written, so
//! that the key is never readable by others even for a moment.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use libp2p::identity::Keypair;

/// File name of the node key inside the store directory.
pub const KEY_FILE: &str = "identity.key";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a libp2p private key: {cause}")]
    Decode { path: PathBuf, cause: String },
}

/// Loads the node key from `<dir>/identity.key`, creating a new Ed25519 key on first use.
pub fn load_or_create(dir: &Path) -> Result<Keypair, IdentityError> {
    let path = dir.join(KEY_FILE);
    let io = |source| IdentityError::Io {
        path: path.clone(),
        source,
    };
    match std::fs::read(&path) {
        Ok(bytes) => {
            let key =
                Keypair::from_protobuf_encoding(&bytes).map_err(|e| IdentityError::Decode {
                    path: path.clone(),
                    cause: e.to_string(),
                })?;
            // Tighten permissions of a key copied in with a lax mode.
            let mode = std::fs::metadata(&path).map_err(io)?.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "node key was readable by others; setting mode 0600");
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(io)?;
            }
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(io)?;
            let key = Keypair::generate_ed25519();
            let encoded = key
                .to_protobuf_encoding()
                .expect("an Ed25519 key always encodes");
            // Write to a temporary name and rename, so a crash never leaves a torn key.
            let tmp = dir.join(format!("{KEY_FILE}.tmp"));
            let _ = std::fs::remove_file(&tmp);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io)?;
            f.write_all(&encoded).map_err(io)?;
            f.sync_all().map_err(io)?;
            std::fs::rename(&tmp, &path).map_err(io)?;
            tracing::info!(peer_id = %key.public().to_peer_id(), "created a new node identity");
            Ok(key)
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_once_with_mode_0600_and_reloaded() {
        let dir = std::env::temp_dir().join(format!("ipfs-mount-id-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = load_or_create(&dir).unwrap();
        let mode = std::fs::metadata(dir.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = load_or_create(&dir).unwrap();
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
        assert!(a.public().to_peer_id().to_string().starts_with("12D3Koo"));
        std::fs::write(dir.join(KEY_FILE), b"garbage").unwrap();
        assert!(matches!(
            load_or_create(&dir),
            Err(IdentityError::Decode { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
