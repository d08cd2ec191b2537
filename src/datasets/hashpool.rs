//! A process-wide pool that turns file chunks into leaves, so that a sequential writer's
//! chunks are hashed on every core instead of one (hashing is most of a big write's cost).

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use ipfs_mount_ipld::builder::{leaf_of, ImportProfile, Leaf};

struct Job {
    profile: Arc<ImportProfile>,
    chunk: Bytes,
    reply: SyncSender<(Leaf, Bytes)>,
}

/// The pool's queue, `None` if no worker could start; workers start with the first job.
fn queue() -> Option<&'static SyncSender<Job>> {
    static QUEUE: OnceLock<Option<SyncSender<Job>>> = OnceLock::new();
    QUEUE
        .get_or_init(|| {
            let (tx, rx) = sync_channel::<Job>(64);
            let rx = Arc::new(Mutex::new(rx));
            let mut started = 0;
            for i in 0..workers() {
                let rx = rx.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("leaf-hash-{i}"))
                    .spawn(move || loop {
                        // The lock is held only to take a job (each is a whole chunk to hash).
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        let _ = job.reply.send(leaf_of(&job.profile, job.chunk));
                    });
                match spawned {
                    Ok(_) => started += 1,
                    Err(e) => tracing::warn!("cannot start a leaf hashing thread: {e}"),
                }
            }
            (started > 0).then_some(tx)
        })
        .as_ref()
}

/// As many workers as cores (at least two, so one waits on memory while one hashes).
pub fn workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .max(2)
}

/// Queues one chunk; its leaf and block arrive on the returned receiver (hashed on this
/// thread if the pool has no worker).
pub fn hash(profile: &Arc<ImportProfile>, chunk: Bytes) -> Receiver<(Leaf, Bytes)> {
    let (reply, rx) = sync_channel(1);
    match queue() {
        Some(q) => {
            let _ = q.send(Job {
                profile: profile.clone(),
                chunk,
                reply,
            });
        }
        None => {
            let _ = reply.send(leaf_of(profile, chunk));
        }
    }
    rx
}
