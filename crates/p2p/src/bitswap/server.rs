//! The serving side: each remote peer's wantlist, answered in order from the local store.
//!
//! A peer can make us hold at most `max_wantlist_per_peer` entries,
//! `max_queued_bytes_per_peer` bytes of blocks and `max_queued_presences_per_peer`
//! HAVE/DONT_HAVE answers waiting to be written to it (semaphores: the serving task waits for
//! room before it even reads the next block from disk, so the wants of a peer that does not
//! read wait in its bounded wantlist, and wants past that are dropped and counted).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use cid::Cid;
use libp2p::PeerId;
use parking_lot::Mutex;
use tokio::sync::{mpsc, Notify, Semaphore};

use super::message::{Presence, WantEntry, WantType};
use super::{Bitswap, Outbound};

/// Blocks at most this big answer a want-have directly (as boxo does): cheaper than a
/// HAVE followed by a want-block round trip.
const SEND_BLOCK_FOR_HAVE_MAX: usize = 1024;

#[derive(Clone)]
struct Want {
    cid: Cid,
    want_type: WantType,
    send_dont_have: bool,
}

/// A peer's wantlist: `(order, index, seq)`. `order` holds `(seq, multihash)` in arrival
/// order, `index` maps multihash → its current `(seq, want)`, and `seq` is the last number given.
type WantQueue = (VecDeque<(u64, Vec<u8>)>, HashMap<Vec<u8>, (u64, Want)>, u64);

pub(crate) struct Ledger {
    /// Entries in arrival order; `index` maps multihash → current entry (a re-sent want
    /// replaces the older one; a cancel removes it).
    queue: Mutex<WantQueue>,
    max_entries: usize,
    budget: Arc<Semaphore>,
    /// Presence answers queued for the writer.
    presences: Arc<Semaphore>,
    notify: Notify,
    closed: AtomicBool,
}

impl Ledger {
    pub(crate) fn new(
        max_entries: usize,
        budget: Arc<Semaphore>,
        presences: Arc<Semaphore>,
    ) -> Self {
        Ledger {
            queue: Mutex::new((VecDeque::new(), HashMap::new(), 0)),
            max_entries,
            budget,
            presences,
            notify: Notify::new(),
            closed: AtomicBool::new(false),
        }
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.budget.close();
        self.presences.close();
        self.notify.notify_one();
    }

    /// Wantlist entries, presences queued and block bytes queued, given the budgets' sizes.
    pub(crate) fn held(&self, max_presences: usize, max_bytes: usize) -> (usize, usize, usize) {
        let wantlist = self.queue.lock().1.len();
        (
            wantlist,
            max_presences.saturating_sub(self.presences.available_permits()),
            max_bytes.saturating_sub(self.budget.available_permits()),
        )
    }

    /// Applies a peer's wantlist message; returns the number of new entries dropped because
    /// the wantlist was full.
    pub(crate) fn update(&self, full: bool, entries: Vec<WantEntry>) -> usize {
        let mut guard = self.queue.lock();
        let (order, index, seq) = &mut *guard;
        if full {
            order.clear();
            index.clear();
        }
        let mut dropped = 0usize;
        for e in entries {
            let key = ipfs_mount_ipld::cids::multihash_key(&e.cid);
            if e.cancel {
                index.remove(&key);
                continue;
            }
            if !index.contains_key(&key) && index.len() >= self.max_entries {
                dropped += 1;
                continue;
            }
            *seq += 1;
            index.insert(
                key.clone(),
                (
                    *seq,
                    Want {
                        cid: e.cid,
                        want_type: e.want_type,
                        send_dont_have: e.send_dont_have,
                    },
                ),
            );
            order.push_back((*seq, key));
        }
        // Stale order entries (cancelled or replaced) are skipped when popped; compact
        // when they dominate so a peer cannot grow the queue with want/cancel churn.
        if order.len() > 2 * self.max_entries {
            order.retain(|(s, k)| index.get(k).is_some_and(|(cur, _)| cur == s));
        }
        drop(guard);
        if dropped > 0 {
            tracing::debug!(dropped, "peer wantlist over its limit; entries ignored");
        }
        self.notify.notify_one();
        dropped
    }

    fn pop(&self) -> Option<Want> {
        let mut guard = self.queue.lock();
        let (order, index, _) = &mut *guard;
        while let Some((s, key)) = order.pop_front() {
            if let Some((cur, _)) = index.get(&key) {
                if *cur == s {
                    let (_, want) = index.remove(&key).expect("present");
                    return Some(want);
                }
            }
        }
        None
    }
}

/// Answers one peer's wants until the peer goes away.
pub(crate) async fn serve_peer(
    bitswap: Arc<Bitswap>,
    peer: PeerId,
    ledger: Arc<Ledger>,
    out: mpsc::UnboundedSender<Outbound>,
) {
    loop {
        if ledger.closed.load(Ordering::Acquire) {
            return;
        }
        let Some(want) = ledger.pop() else {
            ledger.notify.notified().await;
            continue;
        };
        // Reading from the store may touch the disk: keep it off the async workers.
        let source = bitswap.source.clone();
        let cid = want.cid;
        let block = match want.want_type {
            WantType::Block => tokio::task::spawn_blocking(move || source.get(&cid))
                .await
                .ok()
                .flatten(),
            WantType::Have => {
                let small = tokio::task::spawn_blocking(move || {
                    if source.has(&cid) {
                        Some(
                            source
                                .get(&cid)
                                .filter(|b| b.len() <= SEND_BLOCK_FOR_HAVE_MAX),
                        )
                    } else {
                        None
                    }
                })
                .await
                .ok()
                .flatten();
                match small {
                    Some(Some(b)) => Some(b),
                    Some(None) => {
                        let Ok(permit) = ledger.presences.clone().acquire_owned().await else {
                            return; // closed: the peer went away
                        };
                        if out
                            .send(Outbound::Presence(cid, Presence::Have, permit))
                            .is_err()
                        {
                            return;
                        }
                        continue;
                    }
                    None => None,
                }
            }
        };
        match block {
            Some(data) => {
                let need = data
                    .len()
                    .clamp(1, bitswap.config.max_queued_bytes_per_peer)
                    as u32;
                let permit = match ledger.budget.clone().acquire_many_owned(need).await {
                    Ok(p) => p,
                    Err(_) => return, // closed: the peer went away
                };
                if out.send(Outbound::Block(cid, data, permit)).is_err() {
                    return;
                }
            }
            None => {
                tracing::trace!(%peer, %cid, "wanted block not in store");
                if want.send_dont_have {
                    let Ok(permit) = ledger.presences.clone().acquire_owned().await else {
                        return;
                    };
                    if out
                        .send(Outbound::Presence(cid, Presence::DontHave, permit))
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    }
}
