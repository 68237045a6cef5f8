//! The shared store: counters in Redis, so every service process enforces the same limits.
//!
//! # One script per request
//!
//! [`RedisStore::check_and_charge`] is a single `EVALSHA` of `check.lua`. A request charges
//! several counters (e.g. requests per minute and tokens per minute of a tenant and of its
//! model), and they must be checked and charged all or none. A Lua script runs atomically in
//! Redis (no other command runs in between), so it can read every counter, apply the admission
//! rule and write, in one round trip. The alternatives are worse: `MULTI`/`EXEC` cannot make
//! its writes depend on the values it reads, so it would need `WATCH` + read + `MULTI` (three
//! round trips), and under contention on a hot counter (every request of a tenant touches it)
//! `EXEC` fails and retries, so latency grows with load; a script never retries. The script is
//! sent by hash; [`redis::Script`] reloads it by itself when Redis answers `NOSCRIPT` (after a
//! restart or `SCRIPT FLUSH`), which is safe because a `NOSCRIPT` reply wrote nothing.
//!
//! Keys are `rls:<counter key>:<window index>`. Each charge passes its current- and
//! previous-window keys as `KEYS` (never built inside the script), so the script is
//! cluster-ready once the keys of a request share a hash tag.
//!
//! # Numbers
//!
//! Lua numbers are doubles, exact for integers below 2^53; the script rejects (with an error,
//! before writing anything) a charge that would take a counter past that, and the sliding
//! estimate is the same sequence of double operations as [`Window::estimate`], so both stores
//! reach bit-identical decisions. Counts are `u64` in Rust but stay below 2^53 in practice
//! (2^53 tokens is 9 * 10^15).
//!
//! # Connection and failures
//!
//! One multiplexed [`ConnectionManager`] per store: concurrent checks are pipelined on one
//! connection. Every call is bounded by the store's timeout and returns
//! [`StoreError::Timeout`] or [`StoreError::Redis`] instead of waiting. The manager is created
//! lazily (the service starts while Redis is down) and reconnects by itself after a dropped
//! connection. On top of it this store keeps a small circuit:
//!
//! - after a connection-level failure (refused, reset, Redis loading or read-only), or after
//!   failures (timeouts included) that have lasted [`RETRY_EVERY`], calls fail at once for
//!   [`RETRY_EVERY`]; then one call goes through as a probe. A dead Redis costs callers no
//!   waiting and sees at most one connection attempt per [`RETRY_EVERY`];
//! - after failures that have lasted [`STALE_AFTER`], the manager itself is dropped and the
//!   next probe builds a new one: this covers what the manager does not notice, e.g. a peer
//!   that vanished without closing the connection (every call times out) or a failover that
//!   left the connection on a replica.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, ErrorKind, RedisError, Script, ServerErrorKind, Value};
use arc_swap::ArcSwapOption;

use super::{Charge, Counts, Mode, Outcome, Store, StoreError};
use crate::window::Algorithm;

/// While Redis is failing, at most one call per this interval reaches it.
pub const RETRY_EVERY: Duration = Duration::from_millis(250);
/// After failing this long without a success, the connection is rebuilt from scratch.
pub const STALE_AFTER: Duration = Duration::from_secs(2);
/// Prefix of every key this store writes.
pub const KEY_PREFIX: &str = "rls:";

/// Layout of its arguments and reply: see the header of the file.
const CHECK_LUA: &str = include_str!("check.lua");

/// Counters in Redis. Cheap to clone: clones share the connection.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    config: ConnectionManagerConfig,
    timeout: Duration,
    script: Script,
    /// Created on first use; dropped when stale (see the module docs).
    manager: ArcSwapOption<ConnectionManager>,
    /// Origin of the millisecond clock below.
    origin: Instant,
    /// Calls fail fast until this instant (ms since `origin`); 0 when Redis is healthy.
    open_until: AtomicU64,
    /// Start of the current run of failures (ms since `origin`, at least 1); 0 when the last
    /// call succeeded.
    failing_since: AtomicU64,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("client", &self.inner.client)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store for the Redis at `url` (`redis://host:port/db`, `rediss://` for TLS if built
    /// with it). Does not connect: fails only on an invalid URL. `timeout` bounds every call.
    pub fn new(url: &str, timeout: Duration) -> Result<RedisStore, StoreError> {
        let client = Client::open(url)?;
        // The manager makes a single attempt per (re)connection: waiting and retrying is this
        // store's job, so a call never queues behind a backoff it cannot see.
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(0)
            .set_connection_timeout(Some(timeout.max(Duration::from_secs(1))))
            .set_response_timeout(None);
        Ok(RedisStore {
            inner: Arc::new(Inner {
                client,
                config,
                timeout,
                script: Script::new(CHECK_LUA),
                manager: ArcSwapOption::empty(),
                origin: Instant::now(),
                open_until: AtomicU64::new(0),
                failing_since: AtomicU64::new(0),
            }),
        })
    }

    /// The bound of every call.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// The key of `charge`'s counter in window `index`.
    pub fn counter_key(charge: &Charge, index: u64) -> String {
        format!("{KEY_PREFIX}{}:{index}", charge.key)
    }

    /// The previous-window key; window -1 only exists for clocks near the epoch (tests).
    fn previous_key(charge: &Charge, index: u64) -> String {
        match index.checked_sub(1) {
            Some(prev) => Self::counter_key(charge, prev),
            None => format!("{KEY_PREFIX}{}:-1", charge.key),
        }
    }

    /// Runs one call against Redis under the circuit and the timeout.
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let inner = &*self.inner;
        inner.admit()?;
        let manager = inner.manager()?;
        let result = match tokio::time::timeout(inner.timeout, f(manager)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(StoreError::Redis(e)),
            Err(_) => Err(StoreError::Timeout(millis(inner.timeout))),
        };
        match &result {
            Ok(_) => inner.succeeded(),
            Err(StoreError::Redis(e)) if !is_unavailable(e) => inner.succeeded(),
            Err(e) => inner.failed(matches!(e, StoreError::Redis(_))),
        }
        result
    }
}

impl Inner {
    fn now(&self) -> u64 {
        // +1 keeps 0 free to mean "not set".
        millis(self.origin.elapsed()) + 1
    }

    /// Lets a call through unless the circuit is open; the first call after an open interval
    /// is the probe and re-arms the interval for everyone else.
    fn admit(&self) -> Result<(), StoreError> {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return Ok(());
        }
        let now = self.now();
        if now >= until {
            let next = now + millis(RETRY_EVERY);
            if self
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
                now.saturating_sub(self.failing_since.load(Ordering::Acquire)),
                millis(RETRY_EVERY)
            ),
        ))))
    }

    fn manager(&self) -> Result<ConnectionManager, StoreError> {
        let current = self.manager.load();
        if let Some(m) = current.as_ref() {
            return Ok(ConnectionManager::clone(m));
        }
        // Lazy: connects on the first command, inside the call's timeout.
        let fresh = Arc::new(ConnectionManager::new_lazy_with_config(
            self.client.clone(),
            self.config.clone(),
        )?);
        let previous = self.manager.compare_and_swap(&current, Some(fresh.clone()));
        Ok(match previous.as_ref() {
            // Another call won the race: share its manager.
            Some(m) => ConnectionManager::clone(m),
            None => ConnectionManager::clone(&fresh),
        })
    }

    fn succeeded(&self) {
        if self.failing_since.load(Ordering::Relaxed) != 0 {
            self.failing_since.store(0, Ordering::Release);
        }
        if self.open_until.load(Ordering::Relaxed) != 0 {
            self.open_until.store(0, Ordering::Release);
        }
    }

    /// `refused`: Redis said it is not there (as opposed to a timeout, which may be a blip).
    fn failed(&self, refused: bool) {
        let now = self.now();
        let since =
            match self
                .failing_since
                .compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => now,
                Err(since) => since,
            };
        let failing_for = now.saturating_sub(since);
        if refused || failing_for >= millis(RETRY_EVERY) {
            self.open_until
                .fetch_max(now + millis(RETRY_EVERY), Ordering::AcqRel);
        }
        if failing_for >= millis(STALE_AFTER) {
            // Next call builds a new manager; restart the count so this happens once per
            // STALE_AFTER at most.
            self.manager.store(None);
            self.failing_since.store(now, Ordering::Release);
        }
    }
}

/// Errors that say Redis cannot serve us right now (as opposed to a bad script or reply).
fn is_unavailable(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_unrecoverable_error()
        || matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::ReadOnly
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
            )
        )
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn algorithm_arg(a: Algorithm) -> &'static str {
    match a {
        Algorithm::Sliding => "sliding",
        Algorithm::Fixed => "fixed",
    }
}

fn mode_arg(m: Mode) -> &'static str {
    match m {
        Mode::Enforce => "enforce",
        Mode::Shadow => "shadow",
        Mode::Quota => "quota",
    }
}

/// Parses the script's reply: `[admitted, prev_1, curr_1, charged_1, ...]`.
fn parse_reply(reply: Value, n: usize) -> Result<Outcome, StoreError> {
    let bad = |what: String| StoreError::Protocol(format!("check script: {what}"));
    let Value::Array(items) = reply else {
        return Err(bad(format!("expected an array, got {reply:?}")));
    };
    if items.len() != 1 + 3 * n {
        return Err(bad(format!(
            "expected {} items for {n} charges, got {}",
            1 + 3 * n,
            items.len()
        )));
    }
    let int = |v: &Value| match v {
        Value::Int(i) => u64::try_from(*i).map_err(|_| bad(format!("negative count {i}"))),
        other => Err(bad(format!("expected an integer, got {other:?}"))),
    };
    let flag = |v: &Value| match int(v)? {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(bad(format!("expected 0 or 1, got {other}"))),
    };
    let admitted = flag(&items[0])?;
    let mut charged = Vec::with_capacity(n);
    let mut before = Vec::with_capacity(n);
    for chunk in items[1..].chunks_exact(3) {
        before.push(Counts {
            prev: int(&chunk[0])?,
            curr: int(&chunk[1])?,
        });
        charged.push(flag(&chunk[2])?);
    }
    Ok(Outcome {
        admitted,
        charged,
        before,
    })
}

impl Store for RedisStore {
    async fn check_and_charge(
        &self,
        now_ms: u64,
        charges: &[Charge],
    ) -> Result<Outcome, StoreError> {
        if charges.is_empty() {
            return Ok(Outcome {
                admitted: true,
                charged: Vec::new(),
                before: Vec::new(),
            });
        }
        let mut invocation = self.inner.script.prepare_invoke();
        // Two keys and seven arguments per charge, in the order `check.lua` reads them.
        for c in charges {
            let w = c.window;
            let index = w.index(now_ms);
            invocation
                .key(Self::counter_key(c, index))
                .key(Self::previous_key(c, index))
                .arg(c.limit)
                .arg(c.hits)
                .arg(w.len_ms)
                .arg(algorithm_arg(w.algorithm))
                .arg(mode_arg(c.mode))
                .arg(w.elapsed(now_ms))
                .arg(w.ttl_ms(now_ms));
        }
        let invocation = &invocation;
        let reply = self
            .call(|mut conn| async move { invocation.invoke_async::<Value>(&mut conn).await })
            .await?;
        parse_reply(reply, charges.len())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.call(|mut conn| async move {
            ::redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .map(drop)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_layout() {
        let reply = Value::Array(vec![
            Value::Int(1),
            Value::Int(4),
            Value::Int(2),
            Value::Int(1),
            Value::Int(0),
            Value::Int(9),
            Value::Int(0),
        ]);
        assert_eq!(
            parse_reply(reply, 2).ok(),
            Some(Outcome {
                admitted: true,
                charged: vec![true, false],
                before: vec![Counts { prev: 4, curr: 2 }, Counts { prev: 0, curr: 9 }],
            })
        );
        assert!(parse_reply(Value::Array(vec![Value::Int(1)]), 1).is_err());
        assert!(parse_reply(Value::Array(vec![Value::Int(-1)]), 0).is_err());
    }
}
