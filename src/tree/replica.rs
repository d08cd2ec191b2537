//! `/datasets/<name>` of a replica (see `datasets/follow.rs`): the content of the last version
//! seen, read-only like `/ipfs` (writes get `EROFS`), a new inode when a new version comes.

use cid::Cid;

use super::error::{Error, Result};
use super::{Entry, Tree, DATASETS_INO, DATASET_TTL};

impl Tree {
    pub(super) fn is_replica(&self, name: &[u8]) -> bool {
        let (Some(sets), Ok(name)) = (self.datasets.as_ref(), std::str::from_utf8(name)) else {
            return false;
        };
        sets.replicas().get(name).is_some()
    }

    pub(super) fn replica_names(&self) -> Vec<String> {
        self.datasets
            .as_ref()
            .map(|d| d.replicas().names())
            .unwrap_or_default()
    }

    /// Drops the table's entry of an unfollowed replica's name (the inode itself lives until
    /// the kernel forgets it).
    pub(super) fn forget_replica_entry(&self, name: &[u8]) {
        let key = (DATASETS_INO, name.to_vec());
        if self.children.read().contains_key(&key) {
            self.children.write().remove(&key);
        }
    }

    fn replica_root(&self, name: &str) -> Option<Cid> {
        self.datasets.as_ref()?.replicas().get(name)?.root
    }

    /// The replica's current version, looked up again each [`DATASET_TTL`].
    pub(super) async fn lookup_replica(&self, name: &[u8]) -> Result<Entry> {
        let text = String::from_utf8_lossy(name);
        let root = self.replica_root(&text).ok_or_else(|| {
            Error::NotFound(format!("/datasets/{text}: the replica has no version yet"))
        })?;
        let (content, meta) = self.resolve(&root).await?;
        Ok(self.insert_moving_child(DATASETS_INO, name, content, meta, DATASET_TTL))
    }
}
