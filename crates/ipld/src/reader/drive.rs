//! Block access for the planners: the [`BlockGetter`] trait callers implement, a sync driver
//! over local blocks ([`run_local`], [`collect_local`]) and an async one that keeps the
//! planner's window of fetches in flight ([`run`], [`collect`], and [`Pull`] for callers that
//! await between items).

use std::future::Future;
use std::ops::ControlFlow;

use bytes::Bytes;
use cid::Cid;
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};

use super::{Planner, ReadError, Step};

/// Where the planners' blocks come from.
pub trait BlockGetter {
    type Error;
    /// The block if it is held locally (no network), `Ok(None)` if not.
    fn get_local(&self, cid: &Cid) -> Result<Option<Bytes>, Self::Error>;
    /// The block, fetched if needed.
    fn get(&self, cid: Cid) -> impl Future<Output = Result<Bytes, Self::Error>> + Send;
}

/// Why a driven walk stopped.
#[derive(Debug, thiserror::Error)]
pub enum DriveError<E> {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("{0}")]
    Get(E),
    /// The planner waits for blocks although none is outstanding (a planner bug).
    #[error("walk stalled")]
    Stalled,
}

/// Runs `planner` over local blocks only, handing each item to `on_item` (which may stop the
/// walk). `Ok(false)` when a block it needs is not local (the walk is left where it stopped).
pub fn run_local<P: Planner, G: BlockGetter>(
    planner: &mut P,
    getter: &G,
    mut on_item: impl FnMut(P::Item) -> ControlFlow<()>,
) -> Result<bool, DriveError<G::Error>> {
    loop {
        match planner.next()? {
            Step::Need(cid) => match getter.get_local(&cid).map_err(DriveError::Get)? {
                Some(block) => planner.provide(&cid, block)?,
                None => return Ok(false),
            },
            Step::Item(item) => {
                if on_item(item).is_break() {
                    return Ok(true);
                }
            }
            // Every block asked for was provided at once: a planner that still waits is stuck.
            Step::Wait => return Err(DriveError::Stalled),
            Step::Done => return Ok(true),
        }
    }
}

/// [`run_local`] collecting the items; `Ok(None)` when a block is not local.
pub fn collect_local<P: Planner, G: BlockGetter>(
    mut planner: P,
    getter: &G,
) -> Result<Option<Vec<P::Item>>, DriveError<G::Error>> {
    let mut items = Vec::new();
    let complete = run_local(&mut planner, getter, |i| {
        items.push(i);
        ControlFlow::Continue(())
    })?;
    Ok(complete.then_some(items))
}

/// Runs `planner`, fetching what it asks for through `getter` with up to the planner's window
/// in flight, handing each item to `on_item` (which may stop the walk).
pub async fn run<P: Planner, G: BlockGetter>(
    planner: &mut P,
    getter: &G,
    mut on_item: impl FnMut(P::Item) -> ControlFlow<()>,
) -> Result<(), DriveError<G::Error>> {
    let mut inflight = FuturesUnordered::new();
    loop {
        match planner.next()? {
            Step::Need(cid) => {
                let fut = getter.get(cid);
                inflight.push(async move { (cid, fut.await) });
            }
            Step::Item(item) => {
                if on_item(item).is_break() {
                    return Ok(());
                }
            }
            Step::Wait => {
                let Some((cid, result)) = inflight.next().await else {
                    return Err(DriveError::Stalled);
                };
                planner.provide(&cid, result.map_err(DriveError::Get)?)?;
            }
            Step::Done => return Ok(()),
        }
    }
}

/// [`run`] collecting the items.
pub async fn collect<P: Planner, G: BlockGetter>(
    mut planner: P,
    getter: &G,
) -> Result<Vec<P::Item>, DriveError<G::Error>> {
    let mut items = Vec::new();
    run(&mut planner, getter, |i| {
        items.push(i);
        ControlFlow::Continue(())
    })
    .await?;
    Ok(items)
}

/// A planner driven one item at a time, with its window of fetches in flight: for callers
/// that await between items (a response body that waits for its reader). Fetches progress
/// while [`Pull::next`] is awaited (and on their own if the getter's futures run elsewhere).
pub struct Pull<'g, P: Planner, G: BlockGetter> {
    planner: P,
    getter: &'g G,
    inflight: FuturesUnordered<Fetch<'g, G::Error>>,
}

/// A fetch in flight: the CID and what the getter answered.
type Fetch<'g, E> = BoxFuture<'g, (Cid, Result<Bytes, E>)>;

impl<'g, P: Planner, G: BlockGetter + Sync> Pull<'g, P, G>
where
    G::Error: Send,
{
    pub fn new(planner: P, getter: &'g G) -> Self {
        Pull {
            planner,
            getter,
            inflight: FuturesUnordered::new(),
        }
    }

    /// The next item; `Ok(None)` when the walk is complete.
    pub async fn next(&mut self) -> Result<Option<P::Item>, DriveError<G::Error>> {
        loop {
            match self.planner.next()? {
                Step::Need(cid) => {
                    let fut = self.getter.get(cid);
                    self.inflight
                        .push(Box::pin(async move { (cid, fut.await) }));
                }
                Step::Item(item) => return Ok(Some(item)),
                Step::Wait => {
                    let Some((cid, result)) = self.inflight.next().await else {
                        return Err(DriveError::Stalled);
                    };
                    self.planner
                        .provide(&cid, result.map_err(DriveError::Get)?)?;
                }
                Step::Done => return Ok(None),
            }
        }
    }

    /// The planner (to ask it what it counted).
    pub fn planner(&self) -> &P {
        &self.planner
    }
}
