//! An in-memory [`Fetcher`] for tests (feature `mock`).
//!
//! It serves blocks from a map, counts calls, and can misbehave on demand: fail the next N calls,
//! serve wrong bytes for chosen CIDs, truncate CAR streams after K blocks, and add latency.
//! Like every fetcher it verifies what it serves, so wrong bytes come out as an error naming
//! the CID (a CAR stream ends there), never as a block.
//!
//! CAR responses: for a root with an explicit block list ([`MockFetcher::set_car`]) that list is
//! streamed as is (any order, duplicates and extra blocks allowed). Otherwise the mock walks the
//! DAG depth-first with the link function given to [`MockFetcher::set_links`] (by default no
//! links, so only the root): `DagScope::Block` yields the root only, `Entity` and `All` the whole
//! walk (the mock ignores `entity-bytes`). A block missing from the map ends the stream with an
//! error after the blocks before it, like a gateway that lacks a child block.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use cid::Cid;

use crate::{identity_block, DagScope, FetchError, Fetcher, SinkControl, VerifiedBlock};

/// Extracts the links of a block (for the mock's DAG walk).
pub type LinkFn = Arc<dyn Fn(&Cid, &Bytes) -> Vec<Cid> + Send + Sync>;

#[derive(Default)]
struct State {
    blocks: HashMap<Cid, Bytes>,
    cars: HashMap<Cid, Vec<Cid>>,
    links: Option<LinkFn>,
    fail_next: u32,
    fail_with: Option<FetchError>,
    wrong: HashSet<Cid>,
    truncate_after: Option<u64>,
    latency: Option<Duration>,
}

/// In-memory fetcher with counters and injectable failures.
#[derive(Default)]
pub struct MockFetcher {
    state: Mutex<State>,
    block_calls: AtomicU64,
    car_calls: AtomicU64,
    blocks_served: AtomicU64,
}

impl std::fmt::Debug for MockFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockFetcher")
            .field("block_calls", &self.block_calls())
            .field("car_calls", &self.car_calls())
            .finish_non_exhaustive()
    }
}

impl MockFetcher {
    pub fn new() -> Self {
        Self::default()
    }

    /// A mock holding these blocks.
    pub fn with_blocks(blocks: impl IntoIterator<Item = (Cid, Bytes)>) -> Self {
        let m = Self::new();
        m.state.lock().unwrap().blocks.extend(blocks);
        m
    }

    pub fn insert(&self, cid: Cid, data: impl Into<Bytes>) {
        self.state.lock().unwrap().blocks.insert(cid, data.into());
    }

    pub fn remove(&self, cid: &Cid) -> Option<Bytes> {
        self.state.lock().unwrap().blocks.remove(cid)
    }

    pub fn contains(&self, cid: &Cid) -> bool {
        self.state.lock().unwrap().blocks.contains_key(cid)
    }

    /// The CAR for `root` streams exactly these blocks (whatever the scope).
    pub fn set_car(&self, root: Cid, blocks: Vec<Cid>) {
        self.state.lock().unwrap().cars.insert(root, blocks);
    }

    /// How to find a block's links for the DAG walk of CAR requests.
    pub fn set_links(&self, f: impl Fn(&Cid, &Bytes) -> Vec<Cid> + Send + Sync + 'static) {
        self.state.lock().unwrap().links = Some(Arc::new(f));
    }

    /// The next `n` calls (either operation) fail with `err` (default a transport error).
    pub fn fail_next(&self, n: u32, err: Option<FetchError>) {
        let mut s = self.state.lock().unwrap();
        s.fail_next = n;
        s.fail_with = err;
    }

    /// Serve corrupted bytes for `cid` (in raw and CAR responses) until cleared.
    pub fn set_wrong_bytes(&self, cid: Cid, wrong: bool) {
        let mut s = self.state.lock().unwrap();
        if wrong {
            s.wrong.insert(cid);
        } else {
            s.wrong.remove(&cid);
        }
    }

    /// End every CAR stream with an error after `k` blocks (`None`: never).
    pub fn truncate_cars_after(&self, k: Option<u64>) {
        self.state.lock().unwrap().truncate_after = k;
    }

    /// Sleep this long at the start of every call (`None`: no latency).
    pub fn set_latency(&self, latency: Option<Duration>) {
        self.state.lock().unwrap().latency = latency;
    }

    /// Number of `fetch_block` calls so far.
    pub fn block_calls(&self) -> u64 {
        self.block_calls.load(Ordering::Relaxed)
    }

    /// Number of `fetch_car` calls so far.
    pub fn car_calls(&self) -> u64 {
        self.car_calls.load(Ordering::Relaxed)
    }

    /// Blocks served so far, verified or not (raw responses plus CAR sections).
    pub fn blocks_served(&self) -> u64 {
        self.blocks_served.load(Ordering::Relaxed)
    }

    pub fn reset_counters(&self) {
        self.block_calls.store(0, Ordering::Relaxed);
        self.car_calls.store(0, Ordering::Relaxed);
        self.blocks_served.store(0, Ordering::Relaxed);
    }

    /// Common start of a call: latency, then an injected failure if one is due.
    async fn begin(&self) -> Result<(), FetchError> {
        let latency = self.state.lock().unwrap().latency;
        if let Some(d) = latency {
            tokio::time::sleep(d).await;
        }
        let mut s = self.state.lock().unwrap();
        if s.fail_next > 0 {
            s.fail_next -= 1;
            return Err(s
                .fail_with
                .clone()
                .unwrap_or_else(|| FetchError::Transport("injected failure".into())));
        }
        Ok(())
    }

    fn serve(s: &State, cid: &Cid) -> Option<Bytes> {
        let data = s.blocks.get(cid)?.clone();
        if s.wrong.contains(cid) {
            let mut v = data.to_vec();
            match v.first_mut() {
                Some(b) => *b ^= 0xff,
                None => v.push(0),
            }
            return Some(Bytes::from(v));
        }
        Some(data)
    }

    /// The blocks of a CAR response, and whether the stream is complete.
    fn plan_car(
        s: &State,
        root: &Cid,
        scope: DagScope,
    ) -> Result<(Vec<(Cid, Bytes)>, bool), FetchError> {
        if !s.blocks.contains_key(root) {
            return Err(FetchError::NotFound);
        }
        let mut out = Vec::new();
        if let Some(list) = s.cars.get(root) {
            for c in list {
                match Self::serve(s, c) {
                    Some(d) => out.push((*c, d)),
                    None => return Ok((out, false)),
                }
            }
            return Ok((out, true));
        }
        let mut stack = vec![*root];
        while let Some(c) = stack.pop() {
            let Some(d) = Self::serve(s, &c) else {
                return Ok((out, false));
            };
            if scope != DagScope::Block {
                if let (Some(links), Some(orig)) = (&s.links, s.blocks.get(&c)) {
                    let mut children = links(&c, orig);
                    children.reverse();
                    stack.extend(children);
                }
            }
            out.push((c, d));
        }
        Ok((out, true))
    }
}

#[async_trait]
impl Fetcher for MockFetcher {
    fn name(&self) -> &str {
        "mock"
    }

    async fn fetch_block(&self, cid: &Cid) -> Result<VerifiedBlock, FetchError> {
        self.block_calls.fetch_add(1, Ordering::Relaxed);
        self.begin().await?;
        if let Some(b) = identity_block(cid) {
            return Ok(b);
        }
        let d = {
            let s = self.state.lock().unwrap();
            Self::serve(&s, cid).ok_or(FetchError::NotFound)?
        };
        self.blocks_served.fetch_add(1, Ordering::Relaxed);
        VerifiedBlock::check(*cid, d).map_err(|e| FetchError::unverified(cid, e))
    }

    async fn fetch_car(
        &self,
        root: &Cid,
        scope: DagScope,
        sink: &mut (dyn FnMut(VerifiedBlock) -> SinkControl + Send),
    ) -> Result<u64, FetchError> {
        self.car_calls.fetch_add(1, Ordering::Relaxed);
        self.begin().await?;
        let (blocks, mut complete, truncate) = {
            let s = self.state.lock().unwrap();
            let (b, c) = Self::plan_car(&s, root, scope)?;
            (b, c, s.truncate_after)
        };
        let mut count = 0;
        for (cid, data) in blocks {
            if truncate.is_some_and(|k| count >= k) {
                complete = false;
                break;
            }
            self.blocks_served.fetch_add(1, Ordering::Relaxed);
            let block =
                VerifiedBlock::check(cid, data).map_err(|e| FetchError::unverified(&cid, e))?;
            count += 1;
            if sink(block) == SinkControl::Stop {
                return Ok(count);
            }
        }
        if complete {
            Ok(count)
        } else {
            Err(FetchError::BadBody(format!(
                "CAR stream ended early after {count} blocks"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cid::Version;
    use ipfs_mount_ipld::cids::compute;

    fn blk(s: &str) -> (Cid, Bytes) {
        let d = Bytes::copy_from_slice(s.as_bytes());
        (compute(Version::V1, 0x55, 0x12, &d).unwrap(), d)
    }

    #[tokio::test]
    async fn blocks_counters_and_failures() {
        let (a, b) = (blk("a"), blk("b"));
        let m = MockFetcher::with_blocks([a.clone()]);
        assert_eq!(m.fetch_block(&a.0).await.unwrap().data(), &a.1);
        assert_eq!(m.fetch_block(&b.0).await, Err(FetchError::NotFound));
        m.fail_next(2, None);
        assert!(matches!(
            m.fetch_block(&a.0).await,
            Err(FetchError::Transport(_))
        ));
        assert!(matches!(
            m.fetch_block(&a.0).await,
            Err(FetchError::Transport(_))
        ));
        assert_eq!(m.fetch_block(&a.0).await.unwrap().data(), &a.1);
        m.fail_next(1, Some(FetchError::Timeout));
        assert_eq!(m.fetch_block(&a.0).await, Err(FetchError::Timeout));
        // Wrong bytes never come out as a block: an error naming the CID.
        m.set_wrong_bytes(a.0, true);
        match m.fetch_block(&a.0).await {
            Err(FetchError::BadBody(msg)) => assert!(msg.contains(&a.0.to_string()), "{msg}"),
            other => panic!("unexpected {other:?}"),
        }
        let mut got = Vec::new();
        let mut sink = |b: VerifiedBlock| {
            got.push(b);
            SinkControl::Continue
        };
        assert!(matches!(
            m.fetch_car(&a.0, DagScope::All, &mut sink).await,
            Err(FetchError::BadBody(_))
        ));
        assert!(got.is_empty());
        m.set_wrong_bytes(a.0, false);
        assert_eq!(m.block_calls(), 7);
        assert_eq!(m.car_calls(), 1);
        assert_eq!(m.blocks_served(), 4);
        m.reset_counters();
        assert_eq!(m.block_calls(), 0);
    }

    #[tokio::test]
    async fn car_walk_stop_and_truncation() {
        // root links to c1, c2 ("links" are the block's text after the first line).
        let (c1, c2) = (blk("c1"), blk("c2"));
        let root_text = format!("root\n{}\n{}", c1.0, c2.0);
        let root = blk(&root_text);
        let m = MockFetcher::with_blocks([root.clone(), c1.clone(), c2.clone()]);
        m.set_links(|_, b| {
            std::str::from_utf8(b)
                .unwrap()
                .lines()
                .skip(1)
                .map(|l| l.parse().unwrap())
                .collect()
        });
        let run = |scope| {
            let m = &m;
            let root = root.0;
            async move {
                let mut got = Vec::new();
                let mut sink = |b: VerifiedBlock| {
                    got.push(*b.cid());
                    SinkControl::Continue
                };
                let r = m.fetch_car(&root, scope, &mut sink).await;
                (r, got)
            }
        };
        assert_eq!(run(DagScope::All).await, (Ok(3), vec![root.0, c1.0, c2.0]));
        assert_eq!(run(DagScope::Block).await, (Ok(1), vec![root.0]));
        m.truncate_cars_after(Some(2));
        let (r, got) = run(DagScope::All).await;
        assert!(matches!(r, Err(FetchError::BadBody(_))));
        assert_eq!(got, vec![root.0, c1.0]);
        m.truncate_cars_after(None);
        m.remove(&c2.0);
        let (r, got) = run(DagScope::All).await;
        assert!(r.is_err());
        assert_eq!(got, vec![root.0, c1.0]);

        let mut n = 0;
        let mut stop = |_b: VerifiedBlock| {
            n += 1;
            SinkControl::Stop
        };
        assert_eq!(m.fetch_car(&root.0, DagScope::All, &mut stop).await, Ok(1));
        assert_eq!(n, 1);

        m.set_car(c1.0, vec![c1.0, c1.0, root.0]);
        assert_eq!(run_list(&m, c1.0).await, vec![c1.0, c1.0, root.0]);
        assert_eq!(m.car_calls(), 6);
        let missing = blk("missing").0;
        assert_eq!(run_list(&m, missing).await, Vec::<Cid>::new());
    }

    async fn run_list(m: &MockFetcher, root: Cid) -> Vec<Cid> {
        let mut got = Vec::new();
        let mut sink = |b: VerifiedBlock| {
            got.push(*b.cid());
            SinkControl::Continue
        };
        let _ = m
            .fetch_car(&root, DagScope::Entity { bytes: None }, &mut sink)
            .await;
        got
    }

    #[tokio::test]
    async fn latency() {
        let a = blk("slow");
        let m = MockFetcher::with_blocks([a.clone()]);
        m.set_latency(Some(Duration::from_millis(50)));
        let t = std::time::Instant::now();
        m.fetch_block(&a.0).await.unwrap();
        assert!(t.elapsed() >= Duration::from_millis(50));
    }
}
