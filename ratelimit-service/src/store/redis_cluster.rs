//! Counters in a Redis Cluster: the Redis store's script and admission rule, spread over the
//! cluster's masters by hash slot.
//!
//! # Keys and slots
//!
//! Keys are hash-tagged by the counter's domain and first descriptor entry
//! (`rls:{llm|tenant=acme}|kind=tokens|60000:<index>`, see [`crate::keys`]), so the usual
//! descriptors of one tenant (its requests, its tokens, its models) share one slot. A request
//! whose counters all share a slot, the common case, is exactly what it is on one Redis: one
//! `check.lua` call that checks and charges every counter atomically, in one round trip.
//!
//! # Requests that span slots
//!
//! A request may also carry counters with different first entries (a per-tenant limit and a
//! global per-model one, say), which land in different slots, usually on different nodes. A
//! Lua script can only touch keys of one slot, and cross-slot transactions do not exist, so
//! such a request is checked in two steps that keep it all-or-nothing:
//!
//! 1. The charges are grouped by slot, and every group runs `check.lua` concurrently (one
//!    round trip in total, pipelined per node). Each group checks and charges its own counters
//!    atomically; quota-mode limits are sent as `quota-split`, so a group charges its quota
//!    limits that fit but leaves the "every quota limit is over" verdict to this store.
//! 2. The store applies [`decide`] to the counts every group saw. If it admits, every group
//!    has charged exactly what one script would have, and the answer is final. If it rejects
//!    (or a group failed), the groups that charged run `refund.lua`, which subtracts exactly
//!    what they added (never below 0), before the store answers: a second round trip, bounded
//!    by the timeout like the first.
//!
//! Over-admission stays impossible: every counter was checked and charged atomically in its
//! slot, so two racing requests can never both fit into the same remaining room. The cost is
//! on the other side: between step 1 and the refund (a round trip, well under a millisecond on
//! a LAN), other requests see the rejected request's hits, so a request arriving in that gap
//! at the very edge of a limit can be rejected although it would have fit a moment later. A
//! refund that fails (its node went down in between) leaves those hits counted until the
//! window passes, which errs on the side of rejecting too. A group that times out may have
//! charged without the store knowing; as on one Redis, such a call is an error, answered by
//! the failure mode.
//!
//! # Connection and failures
//!
//! One multiplexed cluster connection (`redis::cluster_async`) per store, built lazily from
//! the seed nodes, which learns the slot map, keeps one connection per master and follows
//! `MOVED`/`ASK` redirections. Timeouts, fail-fast circuits and rebuilding a stale connection
//! are the single-node store's (`link.rs`), with one circuit per hash slot: a dead master
//! fails fast the requests whose counters it holds, while requests on the other masters go
//! on. [`Store::ping`] pings the master of every slot range, so the health probe fails while
//! any master is down.

use std::sync::Arc;
use std::time::Duration;

use ::redis::cluster::{ClusterClient, ClusterConfig};
use ::redis::cluster_async::ClusterConnection;
use ::redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use ::redis::{ErrorKind, RedisError, Value};
use futures_util::future::{join_all, try_join_all};

use super::link::{Circuit, Link, millis};
use super::script::{
    CHECK, CORRECT, Call, HEALTH, Lua, REFUND, check_call, circuits_cmd, correct_call, health_call,
    parse_circuits, parse_correct_reply, parse_health_reply, parse_reply, refund_call,
};
use super::{Charge, Correction, Counts, Outcome, Store, StoreError, decide};
use crate::health::{self, Outcomes, Policy};
use crate::keys::{RedisLayout, health_key, redis_key, report_key};

/// The slot of every deployment's circuit: their keys share the `{health}` hash tag.
fn health_slot() -> u16 {
    key_slot(&health_key(""))
}

/// Hash slots of a Redis Cluster.
pub const SLOTS: u16 = 16_384;

/// Counters in a Redis Cluster. Cheap to clone: clones share the connection.
#[derive(Clone)]
pub struct RedisClusterStore {
    inner: Arc<Inner>,
}

struct Inner {
    seeds: usize,
    link: Link<ClusterConnection>,
    /// One per hash slot.
    slots: Box<[Circuit]>,
    /// For [`Store::ping`], which asks every master.
    all: Circuit,
}

impl std::fmt::Debug for RedisClusterStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Seed URLs may hold passwords: not printed.
        f.debug_struct("RedisClusterStore")
            .field("seeds", &self.inner.seeds)
            .field("timeout", &self.inner.link.timeout())
            .finish_non_exhaustive()
    }
}

impl RedisClusterStore {
    /// A store for the cluster reachable through `urls`, a comma-separated list of seed nodes
    /// (`redis://127.0.0.1:7000,redis://127.0.0.1:7001`; any one that answers is enough).
    /// Does not connect: fails only on invalid URLs. `timeout` bounds every call.
    pub fn new(urls: &str, timeout: Duration) -> Result<RedisClusterStore, StoreError> {
        let seeds: Vec<&str> = urls
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        // One retry, soon, so that a MOVED after a failover or resharding is followed within
        // the call; everything else (backoff, fail-fast) is the link's job, as on one Redis.
        let client = ClusterClient::builder(seeds.iter().copied())
            .retries(1)
            .min_retry_wait(5)
            .max_retry_wait(millis(timeout).max(5))
            .connection_timeout(timeout.max(Duration::from_secs(1)))
            .build()?;
        // Pending: connects to the seeds in the background, on the runtime of the first call.
        let link = Link::new(timeout, move || {
            Ok(client.get_pending_async_connection_with_config(ClusterConfig::new()))
        });
        Ok(RedisClusterStore {
            inner: Arc::new(Inner {
                seeds: seeds.len(),
                link,
                slots: (0..SLOTS).map(|_| Circuit::default()).collect(),
                all: Circuit::default(),
            }),
        })
    }

    /// The bound of every call.
    pub fn timeout(&self) -> Duration {
        self.inner.link.timeout()
    }

    /// The key of `charge`'s counter in window `index`.
    pub fn counter_key(charge: &Charge, index: u64) -> String {
        redis_key(RedisLayout::HashTagged, &charge.key, index)
    }

    /// The hash slot of `charge`'s counters (every window of a counter shares it).
    pub fn slot(charge: &Charge, now_ms: u64) -> u16 {
        key_slot(&Self::counter_key(charge, charge.window.index(now_ms)))
    }

    async fn run(&self, slot: u16, lua: &Lua, call: &Call) -> Result<Value, StoreError> {
        let inner = &*self.inner;
        inner
            .link
            .call(&inner.slots[usize::from(slot)], |mut conn| async move {
                lua.run(&mut conn, call).await
            })
            .await
    }

    /// A request whose counters span several slots: see the module docs.
    async fn check_split(
        &self,
        now_ms: u64,
        charges: &[Charge],
        groups: &[(u16, Vec<usize>)],
    ) -> Result<Outcome, StoreError> {
        let runs = groups.iter().map(|(slot, members)| async move {
            let call = check_call(
                RedisLayout::HashTagged,
                now_ms,
                members.iter().map(|&i| &charges[i]),
                true,
            );
            let reply = self.run(*slot, &CHECK, &call).await?;
            parse_reply(reply, members.len())
        });
        let results = join_all(runs).await;

        let n = charges.len();
        let mut before = vec![Counts::default(); n];
        let mut charged = vec![false; n];
        let mut error = None;
        for ((_, members), result) in groups.iter().zip(results) {
            match result {
                Ok(out) => {
                    for (k, &i) in members.iter().enumerate() {
                        before[i] = out.before[k];
                        charged[i] = out.charged[k];
                    }
                }
                Err(e) => {
                    error.get_or_insert(e);
                }
            }
        }
        if error.is_none() {
            let (admitted, expected) = decide(now_ms, charges, &before);
            if admitted {
                // Admitted means every enforce-mode limit fit in every group, so each group
                // charged exactly what one script would have.
                debug_assert_eq!(charged, expected);
                return Ok(Outcome {
                    admitted,
                    charged,
                    before,
                });
            }
        }
        self.refund(now_ms, charges, groups, &charged).await;
        match error {
            Some(e) => Err(e),
            None => Ok(Outcome {
                admitted: false,
                charged: vec![false; n],
                before,
            }),
        }
    }

    /// Takes back every charge in `charged`, one `refund.lua` call per slot, concurrently.
    async fn refund(
        &self,
        now_ms: u64,
        charges: &[Charge],
        groups: &[(u16, Vec<usize>)],
        charged: &[bool],
    ) {
        let runs = groups.iter().filter_map(|(slot, members)| {
            let call = refund_call(
                RedisLayout::HashTagged,
                now_ms,
                members
                    .iter()
                    .filter(|&&i| charged[i])
                    .map(|&i| &charges[i]),
            );
            // An async block is lazy: nothing runs for the groups filtered out.
            (!call.is_empty())
                .then_some(async move { (*slot, self.run(*slot, &REFUND, &call).await) })
        });
        for (slot, result) in join_all(runs).await {
            if let Err(e) = result {
                tracing::warn!(
                    slot,
                    error = %e,
                    "could not refund a rejected request's hits; they count until their window ends"
                );
            }
        }
    }
}

/// Groups `charges` (by index) by hash slot, in order of first appearance.
fn slot_groups(now_ms: u64, charges: &[Charge]) -> Vec<(u16, Vec<usize>)> {
    let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
    for (i, c) in charges.iter().enumerate() {
        let slot = RedisClusterStore::slot(c, now_ms);
        match groups.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, members)) => members.push(i),
            None => groups.push((slot, vec![i])),
        }
    }
    groups
}

/// The hash slot of a Redis key, as Redis Cluster computes it: CRC16 (XMODEM) of the text
/// between the first `{` and the next `}` if that is not empty, else of the whole key.
pub fn key_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let hashed = bytes
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let tag = &bytes[open + 1..];
            let close = tag.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &tag[..close])
        })
        .unwrap_or(bytes);
    crc16(hashed) % SLOTS
}

fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

impl Store for RedisClusterStore {
    async fn check_and_charge(
        &self,
        now_ms: u64,
        charges: &[Charge],
    ) -> Result<Outcome, StoreError> {
        let groups = slot_groups(now_ms, charges);
        match groups.as_slice() {
            [] => Ok(Outcome {
                admitted: true,
                charged: Vec::new(),
                before: Vec::new(),
            }),
            // The common case: one atomic script, as on one Redis.
            [(slot, _)] => {
                let call = check_call(RedisLayout::HashTagged, now_ms, charges, false);
                let reply = self.run(*slot, &CHECK, &call).await?;
                parse_reply(reply, charges.len())
            }
            _ => self.check_split(now_ms, charges, &groups).await,
        }
    }

    /// One `correct.lua` call per slot that the corrections touch, each with the report id in
    /// its own slot: every slot applies a report at most once, so a retry after a partial
    /// failure applies exactly the slots that missed it. Applied if any slot applied it now.
    async fn correct(
        &self,
        now_ms: u64,
        id: &str,
        corrections: &[Correction],
    ) -> Result<bool, StoreError> {
        let mut groups: Vec<(u16, Vec<&Correction>)> = Vec::new();
        for c in corrections
            .iter()
            .filter(|c| c.live(now_ms) && c.delta != 0)
        {
            let slot = key_slot(&redis_key(RedisLayout::HashTagged, &c.key, c.index));
            match groups.iter_mut().find(|(s, _)| *s == slot) {
                Some((_, members)) => members.push(c),
                None => groups.push((slot, vec![c])),
            }
        }
        if groups.is_empty() {
            let call = correct_call(RedisLayout::HashTagged, now_ms, id, []);
            let slot = key_slot(&report_key(RedisLayout::HashTagged, None, id));
            return parse_correct_reply(self.run(slot, &CORRECT, &call).await?);
        }
        let runs = groups.iter().map(|(slot, members)| async move {
            let call = correct_call(RedisLayout::HashTagged, now_ms, id, members.iter().copied());
            parse_correct_reply(self.run(*slot, &CORRECT, &call).await?)
        });
        let mut applied = false;
        for result in join_all(runs).await {
            applied |= result?;
        }
        Ok(applied)
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
        let call = health_call(now_ms, policy, outcomes);
        let reply = self.run(health_slot(), &HEALTH, &call).await?;
        parse_health_reply(reply, outcomes.len())
    }

    async fn circuits(&self, deployments: &[String]) -> Result<Vec<health::Circuit>, StoreError> {
        if deployments.is_empty() {
            return Ok(Vec::new());
        }
        let cmd = &circuits_cmd(deployments);
        let inner = &*self.inner;
        let slot = &inner.slots[usize::from(health_slot())];
        let values = inner
            .link
            .call(slot, |mut conn| async move {
                cmd.query_async::<Vec<Option<String>>>(&mut conn).await
            })
            .await?;
        Ok(parse_circuits(values))
    }

    /// Pings the master of every slot range the cluster reports, by address: the cluster
    /// connection's own fan-out (and its routing by slot) silently falls back to the masters
    /// it is still connected to, which would hide a dead one.
    async fn ping(&self) -> Result<(), StoreError> {
        let inner = &*self.inner;
        inner
            .link
            .call(&inner.all, |mut conn| async move {
                let slots: Value = ::redis::cmd("CLUSTER")
                    .arg("SLOTS")
                    .query_async(&mut conn)
                    .await?;
                let pings = masters(&slots)?.into_iter().map(|(host, port)| {
                    let mut conn = conn.clone();
                    async move {
                        let to = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                            host,
                            port,
                        });
                        conn.route_command(::redis::cmd("PING"), to).await
                    }
                });
                try_join_all(pings).await.map(drop)
            })
            .await
    }
}

/// The master of every slot range in a `CLUSTER SLOTS` reply, without repeats:
/// `[[first, last, [host, port, id, ...], replicas...], ...]`.
fn masters(reply: &Value) -> Result<Vec<(String, u16)>, RedisError> {
    let bad = || {
        RedisError::from((
            ErrorKind::UnexpectedReturnType,
            "unexpected CLUSTER SLOTS reply",
            format!("{reply:?}"),
        ))
    };
    let Value::Array(ranges) = reply else {
        return Err(bad());
    };
    let mut masters: Vec<(String, u16)> = Vec::new();
    for range in ranges {
        let Value::Array(range) = range else {
            return Err(bad());
        };
        let Some(Value::Array(master)) = range.get(2) else {
            return Err(bad());
        };
        let host = match master.first() {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Value::SimpleString(s)) => s.clone(),
            _ => return Err(bad()),
        };
        let port = match master.get(1) {
            Some(Value::Int(p)) => u16::try_from(*p).map_err(|_| bad())?,
            _ => return Err(bad()),
        };
        if !masters.iter().any(|(h, p)| *h == host && *p == port) {
            masters.push((host, port));
        }
    }
    if masters.is_empty() {
        return Err(RedisError::from((
            ErrorKind::Server(::redis::ServerErrorKind::ClusterDown),
            "the cluster serves no slots",
        )));
    }
    Ok(masters)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::counter_key;
    use crate::store::Mode;
    use crate::window::{Algorithm, Window};

    #[test]
    fn slots_match_redis() {
        // The CRC16 check value of the Redis Cluster spec, and `CLUSTER KEYSLOT` answers.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot("foo"), 12_182);
        assert_eq!(key_slot("{user1000}.following"), key_slot("user1000"));
        assert_eq!(key_slot("foo{}{bar}"), crc16(b"foo{}{bar}") % SLOTS);
        assert_eq!(key_slot("foo{{bar}}zap"), key_slot("{bar"));
    }

    #[test]
    fn one_tenant_is_one_group() {
        let charge = |entries: &[(&str, &str)], len| Charge {
            key: counter_key("llm", entries.iter().copied(), len),
            window: Window::new(len, Algorithm::Sliding),
            limit: 10,
            hits: 1,
            mode: Mode::Enforce,
        };
        let now = 1_700_000_000_000;
        let charges = [
            charge(&[("tenant", "acme")], 60_000),
            charge(&[("tenant", "acme"), ("kind", "tokens")], 60_000),
            charge(&[("tenant", "acme"), ("model", "gpt-4o")], 3_600_000),
            charge(&[("model", "gpt-4o")], 60_000),
            charge(&[("tenant", "acme"), ("model", "o3")], 60_000),
        ];
        let groups = slot_groups(now, &charges);
        assert_eq!(groups.len(), 2, "{groups:?}");
        assert_eq!(groups[0].1, [0, 1, 2, 4]);
        assert_eq!(groups[1].1, [3]);
        // Both windows of a counter share its slot.
        let c = &charges[2];
        let index = c.window.index(now);
        assert_eq!(
            key_slot(&RedisClusterStore::counter_key(c, index)),
            key_slot(&RedisClusterStore::counter_key(c, index - 1))
        );
    }
}
