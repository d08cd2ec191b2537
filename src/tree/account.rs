//! Fetch accounting: per file (by CID), the bytes its readers asked for and the bytes fetched
//! from outside on their behalf (by the reads themselves and by their read-ahead), shown as
//! the xattrs `user.ipfs.read` and `user.ipfs.fetched` (decimal byte counts).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use cid::Cid;

use crate::blocks::{BlockError, BlockService};

/// The counters of one file.
#[derive(Debug, Default)]
pub struct Account {
    read: AtomicU64,
    /// Shared with CAR streams, which count in the block service's ingest worker.
    fetched: Arc<AtomicU64>,
}

impl Account {
    pub fn charge_read(&self, bytes: u64) {
        self.read.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn charge_fetched(&self, bytes: u64) {
        self.fetched.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    pub fn fetched(&self) -> u64 {
        self.fetched.load(Ordering::Relaxed)
    }

    /// The counter a CAR stream adds its blocks' bytes to.
    pub fn fetched_counter(&self) -> Arc<AtomicU64> {
        self.fetched.clone()
    }
}

/// Files whose counters are kept; the least recently used beyond this are forgotten.
const ACCOUNTS_KEPT: usize = 1 << 16;

/// The accounts of the files read since the mount started.
pub struct Accounts(quick_cache::sync::Cache<Cid, Arc<Account>>);

impl Default for Accounts {
    fn default() -> Self {
        Accounts(quick_cache::sync::Cache::new(ACCOUNTS_KEPT))
    }
}

impl Accounts {
    /// The account of `cid`, created on first use.
    pub fn of(&self, cid: &Cid) -> Arc<Account> {
        self.0
            .get_or_insert_with(cid, || Ok::<_, ()>(Arc::default()))
            .unwrap_or_default()
    }

    /// The account of `cid` if it has one (no read yet: none).
    pub fn get(&self, cid: &Cid) -> Option<Arc<Account>> {
        self.0.get(cid)
    }
}

/// The block service as a planner's block source, charging what it fetches to an account.
pub struct Charged<'a> {
    pub blocks: &'a BlockService,
    pub account: &'a Account,
}

impl ipfs_mount_ipld::reader::BlockGetter for Charged<'_> {
    type Error = BlockError;

    fn get_local(&self, cid: &Cid) -> Result<Option<Bytes>, BlockError> {
        self.blocks.get_local(cid)
    }

    fn get(&self, cid: Cid) -> impl std::future::Future<Output = Result<Bytes, BlockError>> + Send {
        charged_get(self.blocks, self.account, cid)
    }
}

/// A block, fetched if it is not local; the bytes of a block this call fetched are charged to
/// `account` (a block another reader's fetch brought is not charged twice).
pub async fn charged_get(
    blocks: &BlockService,
    account: &Account,
    cid: Cid,
) -> Result<Bytes, BlockError> {
    let (b, fetched) = blocks.get_reporting(&cid).await?;
    if fetched {
        account.charge_fetched(b.len() as u64);
    }
    Ok(b)
}
