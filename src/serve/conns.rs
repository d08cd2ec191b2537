//! What one client may hold of the gateway: a bounded number of connection slots, handed out
//! so that clients that never send a request cannot keep a real one out, and writes that
//! cannot end a connection only by never reading.
//!
//! - [`Slots`]: at most `max` connections at once. A connection is *idle* while it waits for a
//!   request head (just accepted, or between keep-alive requests) and *busy* while a response
//!   is under way. When every slot is taken, a new connection evicts the connection that has
//!   been idle the longest; only when all are busy does it wait for one to end. So hundreds of
//!   clients trickling half a request line cannot starve a client that sends a whole one.
//! - [`StallGuard`]: a stream whose writes fail with `TimedOut` once one has made no progress
//!   for a given time (a client that asked for a large body and stopped reading).

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

/// The connection slots of one gateway.
pub(super) struct Slots {
    max: usize,
    inner: Mutex<Inner>,
    /// Signalled whenever a slot is given back or a connection becomes idle.
    changed: Notify,
}

struct Inner {
    open: usize,
    /// Sequence numbers hand out idle order: the smallest key is the longest idle.
    next_seq: u64,
    idle: BTreeMap<u64, Arc<Notify>>,
}

/// One connection's slot; dropping it gives the slot back.
pub(super) struct Slot {
    slots: Arc<Slots>,
    /// Notified when this connection is evicted.
    evict: Arc<Notify>,
    /// The key under which this connection is listed as idle, if it is.
    idle_key: Mutex<Option<u64>>,
}

impl Slots {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Slots {
            max: max.max(1),
            inner: Mutex::new(Inner {
                open: 0,
                next_seq: 0,
                idle: BTreeMap::new(),
            }),
            changed: Notify::new(),
        })
    }

    /// A slot for a connection just accepted (listed as idle): at once when one is free, else
    /// after evicting the longest-idle connection, else once a busy one ends or turns idle.
    pub async fn admit(self: &Arc<Self>) -> Arc<Slot> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
                if inner.open < self.max {
                    inner.open += 1;
                    let slot = Arc::new(Slot {
                        slots: self.clone(),
                        evict: Arc::new(Notify::new()),
                        idle_key: Mutex::new(None),
                    });
                    slot.listed_idle(&mut inner);
                    return slot;
                }
                if let Some((_, evict)) = inner.idle.pop_first() {
                    // `notify_one` keeps a permit: the connection sees it even if it is not
                    // waiting yet. Its slot comes back when its task ends.
                    evict.notify_one();
                    tracing::debug!(
                        "gateway: all connection slots taken, closing the longest idle"
                    );
                }
            }
            changed.await;
        }
    }

    #[cfg(test)]
    fn open(&self) -> usize {
        self.inner.lock().unwrap().open
    }
}

impl Slot {
    /// Lists the connection as idle; false if it already was.
    fn listed_idle(&self, inner: &mut Inner) -> bool {
        let mut key = self.idle_key.lock().unwrap_or_else(|e| e.into_inner());
        if key.is_some() {
            return false;
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.idle.insert(seq, self.evict.clone());
        *key = Some(seq);
        true
    }

    /// The connection waits for a request head: it may be evicted (a connection waiting for
    /// a slot is told).
    pub fn idle(&self) {
        let mut inner = self.slots.inner.lock().unwrap_or_else(|e| e.into_inner());
        if self.listed_idle(&mut inner) {
            drop(inner);
            self.slots.changed.notify_waiters();
        }
    }

    /// A request is being answered: the connection is not evicted.
    pub fn busy(&self) {
        let mut inner = self.slots.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = self
            .idle_key
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            inner.idle.remove(&k);
        }
    }

    /// Resolves when another connection needed this slot.
    pub async fn evicted(&self) {
        self.evict.notified().await
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut inner = self.slots.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = self
            .idle_key
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            inner.idle.remove(&k);
        }
        inner.open -= 1;
        drop(inner);
        self.slots.changed.notify_waiters();
    }
}

/// A stream whose writes (and flushes) fail with `TimedOut` after `limit` without progress.
/// Reads pass through: the time a client has to send its request is hyper's header timeout.
pub(super) struct StallGuard<S> {
    inner: S,
    limit: Duration,
    timer: Pin<Box<Sleep>>,
    armed: bool,
}

impl<S> StallGuard<S> {
    pub fn new(inner: S, limit: Duration) -> Self {
        StallGuard {
            inner,
            limit,
            timer: Box::pin(tokio::time::sleep(limit)),
            armed: false,
        }
    }

    /// Called when a write could not progress: `Ready(err)` once it has not for `limit`.
    fn stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        if !self.armed {
            self.armed = true;
            let deadline = Instant::now() + self.limit;
            self.timer.as_mut().reset(deadline);
        }
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client read nothing for {:?}", self.limit),
            )),
            Poll::Pending => Poll::Pending,
        }
    }

    fn guard<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match r {
            Poll::Pending => self.stalled(cx).map(Err),
            ready => {
                self.armed = false;
                ready
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StallGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StallGuard<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.guard(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.guard(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.guard(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.guard(cx, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn full_slots_evict_the_longest_idle_and_wait_for_busy_ones() {
        let slots = Slots::new(2);
        let a = slots.admit().await;
        let b = slots.admit().await;
        assert_eq!(slots.open(), 2);
        // both idle: the third evicts `a`, the longest idle
        let slots2 = slots.clone();
        let third = tokio::spawn(async move { slots2.admit().await });
        tokio::time::timeout(Duration::from_secs(5), a.evicted())
            .await
            .expect("the longest idle connection is evicted");
        drop(a);
        let c = tokio::time::timeout(Duration::from_secs(5), third)
            .await
            .expect("admitted once the evicted connection ended")
            .unwrap();
        assert_eq!(slots.open(), 2);
        // both busy: a newcomer waits, nobody is evicted
        b.busy();
        c.busy();
        let slots3 = slots.clone();
        let mut fourth = tokio::spawn(async move { slots3.admit().await });
        assert!(
            tokio::time::timeout(Duration::from_millis(200), &mut fourth)
                .await
                .is_err(),
            "no slot while all are busy"
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(50), b.evicted())
                .await
                .is_err(),
            "a busy connection is never evicted"
        );
        // `c` goes back to waiting for a request: it is the one evicted
        c.idle();
        tokio::time::timeout(Duration::from_secs(5), c.evicted())
            .await
            .expect("idle again, so evictable");
        drop(c);
        let d = tokio::time::timeout(Duration::from_secs(5), fourth)
            .await
            .unwrap()
            .unwrap();
        drop((b, d));
        assert_eq!(slots.open(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_without_progress_times_out() {
        // a pipe nobody reads: its buffer fills, then writes make no progress
        let (writer, _reader) = tokio::io::duplex(1024);
        let mut w = StallGuard::new(writer, Duration::from_secs(10));
        w.write_all(&[0u8; 1024]).await.unwrap();
        let started = Instant::now();
        let e = w.write_all(&[0u8; 10]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_secs(10));
    }
}
