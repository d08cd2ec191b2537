//! The fetching side: one want per CID, driven by the task that asked for it.
//!
//! Strategy (after boxo's sessions, simplified for a handful of peers): the block is asked
//! with want-block from the peer most likely to have it (peers that delivered blocks lately,
//! least loaded first), and with want-have from up to `max_have_peers` others. A HAVE makes
//! that peer the next one to ask; a DONT_HAVE or silence past `hedge_after` moves the
//! want-block on. When every peer said DONT_HAVE, providers are looked up (delegated routing,
//! DHT) and asked as they connect. The first matching block wins; the others get a cancel.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use cid::Cid;
use ipfs_mount_fetch::{FetchError, VerifiedBlock};
use libp2p::PeerId;
use tokio::sync::{mpsc, oneshot};

use super::message::{WantEntry, WantType};
use super::{Bitswap, Outbound};

#[derive(Debug, Clone)]
pub(crate) enum WantEvent {
    Have(PeerId),
    DontHave(PeerId),
    PeerConnected(PeerId),
    PeerGone(PeerId),
    /// The peer sent bytes matching none of the CIDs we asked it for.
    PeerBanned(PeerId),
    DiscoveryDone,
}

pub(crate) struct WantSlot {
    pub(crate) events: mpsc::UnboundedSender<WantEvent>,
    waiters: Vec<oneshot::Sender<VerifiedBlock>>,
}

impl WantSlot {
    pub(crate) fn complete(self, _from: PeerId, block: VerifiedBlock) {
        for w in self.waiters {
            let _ = w.send(block.clone());
        }
    }
}

/// Per-want bookkeeping of who was asked and what they said.
struct WantRun {
    cid: Cid,
    asked_block: HashSet<PeerId>,
    asked_have: HashSet<PeerId>,
    haves: VecDeque<PeerId>,
    dont_haves: HashSet<PeerId>,
    last_block_ask: Option<Instant>,
    discovery: Discovery,
    /// A peer answered this want with bytes that were not the block.
    saw_bad_bytes: bool,
}

#[derive(PartialEq, Eq)]
enum Discovery {
    NotStarted,
    Running,
    Done,
}

impl WantRun {
    /// The error when nobody can give the block: bad bytes seen make it a verification failure.
    fn gave_up(&self) -> FetchError {
        if self.saw_bad_bytes {
            FetchError::BadBody(format!(
                "a peer sent bytes that do not hash to {}; it was dropped",
                self.cid
            ))
        } else {
            FetchError::NotFound
        }
    }
}

impl Bitswap {
    /// The block `cid` names, from whichever peer has it. A CID whose bytes could not be
    /// verified (unsupported or truncated hash) is refused before anything is sent.
    pub async fn get(self: &Arc<Self>, cid: &Cid) -> Result<VerifiedBlock, FetchError> {
        VerifiedBlock::checkable(cid).map_err(|e| FetchError::unverified(cid, e))?;
        let block = self.want(cid).await?;
        // Wants are matched by multihash, so the peer may have named another codec.
        let got = *block.cid();
        block
            .relabel(*cid)
            .ok_or_else(|| FetchError::BadBody(format!("block {got} delivered for {cid}")))
    }

    async fn want(self: &Arc<Self>, cid: &Cid) -> Result<VerifiedBlock, FetchError> {
        let key = ipfs_mount_ipld::cids::multihash_key(cid);
        let (done_tx, done_rx) = oneshot::channel();
        let events_rx = {
            let mut wants = self.wants.lock();
            match wants.get_mut(&key) {
                Some(slot) => {
                    // Someone is already fetching it: wait for their result.
                    slot.waiters.push(done_tx);
                    None
                }
                None => {
                    let (tx, rx) = mpsc::unbounded_channel();
                    wants.insert(
                        key.clone(),
                        WantSlot {
                            events: tx,
                            waiters: vec![done_tx],
                        },
                    );
                    Some(rx)
                }
            }
        };
        let Some(events) = events_rx else {
            return match tokio::time::timeout(self.config.fetch_timeout, done_rx).await {
                Ok(Ok(b)) => Ok(b),
                Ok(Err(_)) => Err(FetchError::NotFound),
                Err(_) => Err(FetchError::Timeout),
            };
        };
        let mut run = WantRun {
            cid: *cid,
            asked_block: HashSet::new(),
            asked_have: HashSet::new(),
            haves: VecDeque::new(),
            dont_haves: HashSet::new(),
            last_block_ask: None,
            discovery: Discovery::NotStarted,
            saw_bad_bytes: false,
        };
        let guard = WantGuard {
            bitswap: self.clone(),
            key,
            cid: *cid,
            asked: Vec::new(),
            block_asked: Vec::new(),
        };
        self.drive(&mut run, events, done_rx, guard).await
    }

    async fn drive(
        self: &Arc<Self>,
        run: &mut WantRun,
        mut events: mpsc::UnboundedReceiver<WantEvent>,
        mut done: oneshot::Receiver<VerifiedBlock>,
        mut guard: WantGuard,
    ) -> Result<VerifiedBlock, FetchError> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + self.config.fetch_timeout;
        self.ask_initial(run, &mut guard);
        if run.last_block_ask.is_none() {
            // Nobody to ask yet: look again after `hedge_after` (peers may be connecting).
            run.last_block_ask = Some(Instant::now());
        }
        loop {
            let hedge_at = run
                .last_block_ask
                .map(|t| tokio::time::Instant::from_std(t + self.config.hedge_after))
                .unwrap_or(deadline)
                .min(deadline);
            tokio::select! {
                biased;
                r = &mut done => {
                    return r.map_err(|_| FetchError::NotFound);
                }
                ev = events.recv() => {
                    // The slot is gone: the block arrived (or the want was dropped); `done` says which.
                    let Some(ev) = ev else { return (&mut done).await.map_err(|_| FetchError::NotFound) };
                    match ev {
                        WantEvent::Have(p) => {
                            run.dont_haves.remove(&p);
                            if !run.asked_block.contains(&p) && !run.haves.contains(&p) {
                                run.haves.push_back(p);
                            }
                            if run.last_block_ask.is_none() {
                                self.ask_next_block(run, &mut guard);
                            }
                        }
                        WantEvent::DontHave(p) => {
                            run.dont_haves.insert(p);
                            run.haves.retain(|h| *h != p);
                            if run.asked_block.contains(&p) && self.all_asked_block_refused(run) {
                                run.last_block_ask = None;
                                self.ask_next_block(run, &mut guard);
                            }
                        }
                        WantEvent::PeerConnected(p) => {
                            // A new peer, one discovery found, or one back after a reconnect:
                            // whatever it said before its connection dropped no longer counts.
                            run.dont_haves.remove(&p);
                            run.asked_block.remove(&p);
                            run.asked_have.remove(&p);
                            if run.last_block_ask.is_none() || self.all_asked_block_refused(run) {
                                self.ask_block(run, &mut guard, p);
                            } else {
                                self.ask_have(run, &mut guard, p);
                            }
                        }
                        WantEvent::PeerBanned(p) | WantEvent::PeerGone(p) => {
                            if matches!(ev, WantEvent::PeerBanned(_)) && run.asked_block.contains(&p) {
                                run.saw_bad_bytes = true;
                            }
                            run.haves.retain(|h| *h != p);
                            run.dont_haves.insert(p);
                            if run.asked_block.contains(&p) && self.all_asked_block_refused(run) {
                                run.last_block_ask = None;
                                self.ask_next_block(run, &mut guard);
                            }
                        }
                        WantEvent::DiscoveryDone => {
                            run.discovery = Discovery::Done;
                            if run.last_block_ask.is_none() {
                                self.ask_next_block(run, &mut guard);
                            }
                        }
                    }
                    if self.hopeless(run) {
                        tracing::debug!(cid = %run.cid, "no peer has the block");
                        return Err(run.gave_up());
                    }
                }
                _ = tokio::time::sleep_until(hedge_at) => {
                    if tokio::time::Instant::now() >= deadline {
                        tracing::debug!(cid = %run.cid, "bitswap want timed out");
                        return Err(if run.saw_bad_bytes { run.gave_up() } else { FetchError::Timeout });
                    }
                    // The chosen peer is slow: ask another one too (first block wins).
                    run.last_block_ask = None;
                    self.ask_next_block(run, &mut guard);
                    if run.last_block_ask.is_none() {
                        // Nobody new: say it again to those asked (a message can be lost
                        // when a stream resets), as boxo rebroadcasts its wantlist.
                        let again: Vec<PeerId> = run
                            .asked_block
                            .iter()
                            .filter(|p| !run.dont_haves.contains(p))
                            .copied()
                            .collect();
                        for p in again {
                            self.resend_block(run, p);
                        }
                    }
                    if run.last_block_ask.is_none() {
                        if self.candidates().is_empty()
                            && run.discovery == Discovery::Done
                            && started.elapsed() >= 2 * self.config.hedge_after
                        {
                            tracing::debug!(cid = %run.cid, "no bitswap peer to ask");
                            return Err(run.gave_up());
                        }
                        // Nobody left to ask now: look again later (or on an event).
                        run.last_block_ask = Some(Instant::now());
                    }
                }
            }
        }
    }

    fn all_asked_block_refused(&self, run: &WantRun) -> bool {
        run.asked_block.iter().all(|p| run.dont_haves.contains(p))
    }

    /// Nothing more can come: every peer said no and discovery found nobody new.
    fn hopeless(&self, run: &WantRun) -> bool {
        if run.discovery != Discovery::Done && self.discovery.get().is_some() {
            return false;
        }
        // No peer at all is not hopeless yet: a peer may be reconnecting (the timer decides).
        let candidates = self.candidates();
        !candidates.is_empty() && candidates.iter().all(|p| run.dont_haves.contains(p))
    }

    /// Connected peers worth asking, best first: those that delivered most, least loaded.
    fn candidates(&self) -> Vec<PeerId> {
        let banned = self.banned.lock().clone();
        let peers = self.peers.lock();
        let mut list: Vec<(PeerId, u64, u64)> = peers
            .iter()
            .filter(|(id, p)| !p.no_bitswap && !banned.contains(id))
            .map(|(id, p)| (*id, p.delivered, p.inflight))
            .collect();
        // Load per unit of demonstrated usefulness; ties broken by deliveries.
        list.sort_by(|a, b| {
            let la = (a.2 + 1) as f64 / (a.1 + 1) as f64;
            let lb = (b.2 + 1) as f64 / (b.1 + 1) as f64;
            la.partial_cmp(&lb)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(b.1.cmp(&a.1))
        });
        list.into_iter().map(|(id, _, _)| id).collect()
    }

    fn ask_initial(self: &Arc<Self>, run: &mut WantRun, guard: &mut WantGuard) {
        let candidates = self.candidates();
        let Some(first) = candidates.first().copied() else {
            self.start_discovery(run);
            return;
        };
        self.ask_block(run, guard, first);
        for p in candidates.iter().skip(1).take(self.config.max_have_peers) {
            self.ask_have(run, guard, *p);
        }
    }

    /// Moves the want-block on: a peer that said HAVE, else one not yet asked, else discovery.
    fn ask_next_block(self: &Arc<Self>, run: &mut WantRun, guard: &mut WantGuard) {
        while let Some(p) = run.haves.pop_front() {
            if !run.asked_block.contains(&p) && self.is_usable(&p) {
                self.ask_block(run, guard, p);
                return;
            }
        }
        let next = self
            .candidates()
            .into_iter()
            .find(|p| !run.asked_block.contains(p) && !run.dont_haves.contains(p));
        match next {
            Some(p) => self.ask_block(run, guard, p),
            None => self.start_discovery(run),
        }
    }

    fn is_usable(&self, p: &PeerId) -> bool {
        !self.banned.lock().contains(p) && self.peers.lock().get(p).is_some_and(|s| !s.no_bitswap)
    }

    fn ask_block(self: &Arc<Self>, run: &mut WantRun, guard: &mut WantGuard, p: PeerId) {
        let entry = WantEntry {
            cid: run.cid,
            priority: 1,
            cancel: false,
            want_type: WantType::Block,
            send_dont_have: true,
        };
        if self.send(&p, Outbound::Want(entry)) {
            run.asked_block.insert(p);
            run.last_block_ask = Some(Instant::now());
            if let Some(s) = self.peers.lock().get_mut(&p) {
                s.inflight += 1;
            }
            guard.block_asked.push(p);
            guard.asked.push(p);
        }
    }

    fn resend_block(self: &Arc<Self>, run: &mut WantRun, p: PeerId) {
        let entry = WantEntry {
            cid: run.cid,
            priority: 1,
            cancel: false,
            want_type: WantType::Block,
            send_dont_have: true,
        };
        if self.send(&p, Outbound::Want(entry)) {
            run.last_block_ask = Some(Instant::now());
        }
    }

    fn ask_have(self: &Arc<Self>, run: &mut WantRun, guard: &mut WantGuard, p: PeerId) {
        let entry = WantEntry {
            cid: run.cid,
            priority: 1,
            cancel: false,
            want_type: WantType::Have,
            send_dont_have: true,
        };
        if self.send(&p, Outbound::Want(entry)) {
            run.asked_have.insert(p);
            guard.asked.push(p);
        }
    }

    fn start_discovery(self: &Arc<Self>, run: &mut WantRun) {
        if run.discovery != Discovery::NotStarted {
            return;
        }
        let Some(discovery) = self.discovery.get().cloned() else {
            run.discovery = Discovery::Done;
            return;
        };
        run.discovery = Discovery::Running;
        let cid = run.cid;
        let this = self.clone();
        tokio::spawn(async move {
            let found = discovery.connect_providers(&cid).await;
            tracing::debug!(%cid, providers = found.len(), "provider discovery finished");
            let key = ipfs_mount_ipld::cids::multihash_key(&cid);
            if let Some(slot) = this.wants.lock().get(&key) {
                for p in found {
                    let _ = slot.events.send(WantEvent::PeerConnected(p));
                }
                let _ = slot.events.send(WantEvent::DiscoveryDone);
            }
        });
    }
}

/// Removes the want when its fetch ends (or is dropped) and cancels it at every peer asked.
struct WantGuard {
    bitswap: Arc<Bitswap>,
    key: Vec<u8>,
    cid: Cid,
    asked: Vec<PeerId>,
    block_asked: Vec<PeerId>,
}

impl Drop for WantGuard {
    fn drop(&mut self) {
        self.bitswap.wants.lock().remove(&self.key);
        {
            let mut peers = self.bitswap.peers.lock();
            for p in &self.block_asked {
                if let Some(s) = peers.get_mut(p) {
                    s.inflight = s.inflight.saturating_sub(1);
                }
            }
        }
        let mut seen = HashSet::new();
        for p in &self.asked {
            if seen.insert(*p) {
                let cancel = WantEntry {
                    cid: self.cid,
                    priority: 0,
                    cancel: true,
                    want_type: WantType::Block,
                    send_dont_have: false,
                };
                self.bitswap.send(p, Outbound::Want(cancel));
            }
        }
    }
}
