//! Connection handling shared by the Redis stores: a lazily built, multiplexed connection,
//! a bound on every call, and circuits that make calls fail fast while Redis is failing.
//!
//! - The connection (a [`ConnectionManager`](::redis::aio::ConnectionManager) for one Redis, a
//!   cluster connection for Redis Cluster) is built on first use, so the service starts while
//!   Redis is down; it is shared by every call, which it pipelines.
//! - Every call is bounded by the store's timeout and returns [`StoreError::Timeout`] or
//!   [`StoreError::Redis`] instead of waiting.
//! - A [`Circuit`] covers what can fail independently: the whole Redis for the single-node
//!   store, one hash slot for the cluster store (so one dead master does not fail requests
//!   whose counters live on the others). After a connection-level failure (refused, reset,
//!   Redis loading, read-only, cluster down), or after failures (timeouts included) that have
//!   lasted [`RETRY_EVERY`], calls through that circuit fail at once for [`RETRY_EVERY`]; then
//!   one call goes through as a probe. A dead Redis costs callers no waiting and sees at most
//!   one call per circuit per [`RETRY_EVERY`].
//! - After a circuit has failed for [`STALE_AFTER`], the connection itself is dropped (at most
//!   once per [`STALE_AFTER`]) and the next call builds a new one: this covers what the
//!   connection does not notice, e.g. a peer that vanished without closing the connection
//!   (every call times out) or a failover that left it on a replica or on an old slot map.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ::redis::{ErrorKind, RedisError, ServerErrorKind};
use arc_swap::ArcSwapOption;

use super::StoreError;

/// While Redis is failing, at most one call per circuit per this interval reaches it.
pub const RETRY_EVERY: Duration = Duration::from_millis(250);
/// After failing this long without a success, the connection is rebuilt from scratch.
pub const STALE_AFTER: Duration = Duration::from_secs(2);

type Connect<C> = Box<dyn Fn() -> Result<C, RedisError> + Send + Sync>;

/// A lazily built connection of type `C` (cheap to clone: clones share it) and its timeout.
pub(super) struct Link<C> {
    /// Builds a connection that connects by itself on first use (does not block).
    connect: Connect<C>,
    timeout: Duration,
    /// Created on first use; dropped when stale (see the module docs).
    conn: ArcSwapOption<C>,
    /// Origin of the millisecond clock of this link and its circuits.
    origin: Instant,
    /// When the connection was last dropped as stale (ms since `origin`); 0 never.
    dropped_at: AtomicU64,
}

/// Fail-fast state of one part of Redis that can fail on its own.
#[derive(Debug, Default)]
pub(super) struct Circuit {
    /// Calls fail fast until this instant (ms since the link's origin); 0 when healthy.
    open_until: AtomicU64,
    /// Start of the current run of failures (ms since the link's origin, at least 1); 0 when
    /// the last call succeeded.
    failing_since: AtomicU64,
}

impl<C: Clone> Link<C> {
    pub(super) fn new(
        timeout: Duration,
        connect: impl Fn() -> Result<C, RedisError> + Send + Sync + 'static,
    ) -> Self {
        Link {
            connect: Box::new(connect),
            timeout,
            conn: ArcSwapOption::empty(),
            origin: Instant::now(),
            dropped_at: AtomicU64::new(0),
        }
    }

    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs one call under `circuit` and the timeout.
    pub(super) async fn call<T, F, Fut>(&self, circuit: &Circuit, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(C) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        self.admit(circuit)?;
        let conn = self.conn()?;
        let result = match tokio::time::timeout(self.timeout, f(conn)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(StoreError::Redis(e)),
            Err(_) => Err(StoreError::Timeout(millis(self.timeout))),
        };
        match &result {
            Ok(_) => circuit.succeeded(),
            Err(StoreError::Redis(e)) if !is_unavailable(e) => circuit.succeeded(),
            Err(e) => self.failed(circuit, matches!(e, StoreError::Redis(_))),
        }
        result
    }

    fn now(&self) -> u64 {
        // +1 keeps 0 free to mean "not set".
        millis(self.origin.elapsed()) + 1
    }

    /// Lets a call through unless the circuit is open; the first call after an open interval
    /// is the probe and re-arms the interval for everyone else.
    fn admit(&self, circuit: &Circuit) -> Result<(), StoreError> {
        let until = circuit.open_until.load(Ordering::Acquire);
        if until == 0 {
            return Ok(());
        }
        let now = self.now();
        if now >= until {
            let next = now + millis(RETRY_EVERY);
            if circuit
                .open_until
                .compare_exchange(until, next, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Ok(());
            }
        }
        Err(StoreError::Redis(RedisError::from((
            ErrorKind::Io,
            "redis unavailable",
            format!(
                "failing for {} ms, retrying every {} ms",
                now.saturating_sub(circuit.failing_since.load(Ordering::Acquire)),
                millis(RETRY_EVERY)
            ),
        ))))
    }

    fn conn(&self) -> Result<C, StoreError> {
        let current = self.conn.load();
        if let Some(c) = current.as_ref() {
            return Ok(C::clone(c));
        }
        // Lazy: connects on the first command, inside the call's timeout.
        let fresh = Arc::new((self.connect)()?);
        let previous = self.conn.compare_and_swap(&current, Some(fresh.clone()));
        Ok(match previous.as_ref() {
            // Another call won the race: share its connection.
            Some(c) => C::clone(c),
            None => C::clone(&fresh),
        })
    }

    /// `refused`: Redis said it is not there (as opposed to a timeout, which may be a blip).
    fn failed(&self, circuit: &Circuit, refused: bool) {
        let now = self.now();
        let since = match circuit.failing_since.compare_exchange(
            0,
            now,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => now,
            Err(since) => since,
        };
        let failing_for = now.saturating_sub(since);
        if refused || failing_for >= millis(RETRY_EVERY) {
            circuit
                .open_until
                .fetch_max(now + millis(RETRY_EVERY), Ordering::AcqRel);
        }
        if failing_for >= millis(STALE_AFTER) {
            // Restart the count so this circuit asks again only after another STALE_AFTER.
            circuit.failing_since.store(now, Ordering::Release);
            let dropped = self.dropped_at.load(Ordering::Acquire);
            if (dropped == 0 || now.saturating_sub(dropped) >= millis(STALE_AFTER))
                && self
                    .dropped_at
                    .compare_exchange(dropped, now, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                // The next call builds a new connection; calls in flight keep the old one.
                self.conn.store(None);
            }
        }
    }
}

impl Circuit {
    fn succeeded(&self) {
        if self.failing_since.load(Ordering::Relaxed) != 0 {
            self.failing_since.store(0, Ordering::Release);
        }
        if self.open_until.load(Ordering::Relaxed) != 0 {
            self.open_until.store(0, Ordering::Release);
        }
    }
}

/// Errors that say Redis cannot serve us right now (as opposed to a bad script or reply).
fn is_unavailable(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_unrecoverable_error()
        || matches!(
            e.kind(),
            ErrorKind::ClusterConnectionNotFound
                | ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::ReadOnly
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::ClusterDown
                )
        )
}

pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
