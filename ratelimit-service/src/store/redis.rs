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
//! `EXEC` fails and retries, so latency grows with load; a script never retries. How scripts
//! are sent (by hash, with the source after `NOSCRIPT`) is in `script.rs`.
//!
//! Keys are `rls:<counter key>:<window index>` (see [`crate::keys`]). Each charge passes its
//! current- and previous-window keys as `KEYS` (never built inside the script), which is what
//! lets the Redis Cluster store ([`super::redis_cluster`]) run the same script.
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
//! connection, which is built lazily (the service starts while Redis is down) and reconnects by
//! itself after a dropped connection. Every call is bounded by the store's timeout, and one
//! circuit for the whole Redis makes calls fail fast while it is down; both are shared with the
//! cluster store and described in `link.rs`.
//!
//! [`Window::estimate`]: crate::window::Window::estimate

use std::sync::Arc;
use std::time::Duration;

use ::redis::Client;
use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::link::{Circuit, Link};
pub use super::link::{RETRY_EVERY, STALE_AFTER};
use super::script::{
    CHECK, CORRECT, HEALTH, check_call, circuits_cmd, correct_call, health_call, parse_circuits,
    parse_correct_reply, parse_health_reply, parse_reply,
};
use super::{Charge, Correction, Outcome, Store, StoreError};
use crate::health::{self, Outcomes, Policy};
pub use crate::keys::REDIS_PREFIX as KEY_PREFIX;
use crate::keys::{RedisLayout, redis_key};

/// Counters in Redis. Cheap to clone: clones share the connection.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    link: Link<ConnectionManager>,
    circuit: Circuit,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("client", &self.inner.client)
            .field("timeout", &self.inner.link.timeout())
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
        let for_link = client.clone();
        let link = Link::new(timeout, move || {
            ConnectionManager::new_lazy_with_config(for_link.clone(), config.clone())
        });
        Ok(RedisStore {
            inner: Arc::new(Inner {
                client,
                link,
                circuit: Circuit::default(),
            }),
        })
    }

    /// The bound of every call.
    pub fn timeout(&self) -> Duration {
        self.inner.link.timeout()
    }

    /// The key of `charge`'s counter in window `index`.
    pub fn counter_key(charge: &Charge, index: u64) -> String {
        redis_key(RedisLayout::Plain, &charge.key, index)
    }
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
        let call = &check_call(RedisLayout::Plain, now_ms, charges, false);
        let inner = &*self.inner;
        let reply = inner
            .link
            .call(&inner.circuit, |mut conn| async move {
                CHECK.run(&mut conn, call).await
            })
            .await?;
        parse_reply(reply, charges.len())
    }

    async fn correct(
        &self,
        now_ms: u64,
        id: &str,
        corrections: &[Correction],
    ) -> Result<bool, StoreError> {
        let call = &correct_call(RedisLayout::Plain, now_ms, id, corrections);
        let inner = &*self.inner;
        let reply = inner
            .link
            .call(&inner.circuit, |mut conn| async move {
                CORRECT.run(&mut conn, call).await
            })
            .await?;
        parse_correct_reply(reply)
    }

    async fn record_outcomes(
        &self,
        now_ms: u64,
        policy: &Policy,
        outcomes: &[(String, Outcomes)],
    ) -> Result<Vec<bool>, StoreError> {
        if outcomes.is_empty() {
            return Ok(Vec::new());
        }
        let call = &health_call(now_ms, policy, outcomes);
        let inner = &*self.inner;
        let reply = inner
            .link
            .call(&inner.circuit, |mut conn| async move {
                HEALTH.run(&mut conn, call).await
            })
            .await?;
        parse_health_reply(reply, outcomes.len())
    }

    async fn circuits(&self, deployments: &[String]) -> Result<Vec<health::Circuit>, StoreError> {
        if deployments.is_empty() {
            return Ok(Vec::new());
        }
        let cmd = &circuits_cmd(deployments);
        let inner = &*self.inner;
        let values = inner
            .link
            .call(&inner.circuit, |mut conn| async move {
                cmd.query_async::<Vec<Option<String>>>(&mut conn).await
            })
            .await?;
        Ok(parse_circuits(values))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let inner = &*self.inner;
        inner
            .link
            .call(&inner.circuit, |mut conn| async move {
                ::redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .map(drop)
            })
            .await
    }
}
