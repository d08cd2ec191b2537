//! Adapters where the mount is assembled: the names service as the gateway and the tree need
//! it. `names` knows neither `serve` nor `tree`; only this module sees all three.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::names::{self, Names};
use crate::{serve, tree};

/// The gateway's view of the names: resolution and records.
pub(super) struct GatewayNames(pub(super) Arc<Names>);

#[async_trait::async_trait]
impl serve::NameSource for GatewayNames {
    async fn resolve(&self, name: &str) -> Result<String, String> {
        self.0
            .resolve(name)
            .await
            .map(|r| r.path)
            .map_err(|e| e.to_string())
    }
    async fn record(&self, name: &str) -> Option<Bytes> {
        if let Some(b) = self.0.record_bytes(name) {
            return Some(b);
        }
        // Not ours and not cached: resolve (which caches a valid record), then answer.
        let _ = self.0.resolve(name).await;
        self.0.record_bytes(name)
    }
    fn held_record(&self, name: &ipfs_mount_ipns::Name) -> Option<Bytes> {
        self.0.record_bytes(&name.to_string())
    }
}

/// The tree's view of the names.
pub(super) struct TreeNames(pub(super) Arc<Names>);

#[async_trait::async_trait]
impl tree::NameResolver for TreeNames {
    async fn resolve(&self, name: &str) -> Result<(String, Duration), tree::Error> {
        match self.0.resolve(name).await {
            Ok(r) => Ok((r.path, r.ttl)),
            Err(names::NameError::NotFound(m)) => Err(tree::Error::NotFound(m)),
            Err(names::NameError::Unavailable(m)) => Err(tree::Error::Names(m)),
        }
    }
    fn dataset_name(&self, dataset: &str) -> Option<String> {
        self.0.dataset_name(dataset)
    }
    fn own_names(&self) -> Vec<String> {
        self.0.list().into_iter().map(|(_, n)| n).collect()
    }
}
