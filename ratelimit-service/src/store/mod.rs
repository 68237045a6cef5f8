//! Counter stores. A store does one thing: atomically check a request's counters and charge
//! them all or none. Every admission rule lives in [`decide`], which the in-memory store calls
//! directly and the Redis script mirrors line for line.
//!
//! Stores: [`memory`] (one process), [`redis`] (one Redis shared by every process),
//! [`redis_cluster`] (a Redis Cluster; the same script per hash slot). The Redis stores share
//! their connection handling (`link.rs`) and scripts (`script.rs`, `check.lua`, `refund.lua`,
//! `correct.lua`).
//!
//! Besides admission, a store applies usage reports' corrections ([`Store::correct`]): tokens
//! and spend are reserved on an estimate and corrected once the real usage is known. And it
//! keeps the deployments' circuits ([`Store::record_outcomes`], [`Store::circuits`]), so every
//! gateway sees the provider failures the others saw.

mod link;
pub mod memory;
pub mod redis;
pub mod redis_cluster;
mod script;

use std::future::Future;

use crate::health::{Circuit, Outcomes, Policy};
use crate::window::Window;

/// How a limit takes part in admission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Over the limit rejects the request.
    Enforce,
    /// Counted and reported, never rejects.
    Shadow,
    /// Rejects only when every quota-mode limit of the request is over (reference `quota_mode`).
    Quota,
}

/// One counter of one request, fully resolved by the limiter.
#[derive(Clone, Debug)]
pub struct Charge {
    /// Counter identity without the window index (see `keys::counter_key`).
    pub key: String,
    pub window: Window,
    pub limit: u64,
    /// What this request adds; 0 only checks.
    pub hits: u64,
    pub mode: Mode,
}

/// A counter's state as the store found it, before this request's hits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Hits in the previous window (only read by sliding windows; 0 for fixed ones).
    pub prev: u64,
    /// Hits in the current window.
    pub curr: u64,
}

/// What a store did with a request's charges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub admitted: bool,
    /// Per charge: whether its hits were added.
    pub charged: Vec<bool>,
    /// Per charge: the counts before this request.
    pub before: Vec<Counts>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("store timed out after {0} ms")]
    Timeout(u64),
    #[error("unexpected reply from store: {0}")]
    Protocol(String),
}

impl StoreError {
    /// Transient errors are worth retrying later; every store error today is.
    pub fn is_transient(&self) -> bool {
        !matches!(self, StoreError::Protocol(_))
    }
}

/// One counter's correction once a request's real usage is known: real minus reserved,
/// applied to the window the reservation went into (never taking a counter below zero).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Correction {
    /// Counter identity without the window index (see `keys::counter_key`).
    pub key: String,
    pub window: Window,
    /// Window index of the reservation.
    pub index: u64,
    pub delta: i64,
}

impl Correction {
    /// Whether any window still reads the reservation's counter at `now_ms`: the current one,
    /// or for a sliding window also the previous one. Older corrections are dropped.
    pub fn live(&self, now_ms: u64) -> bool {
        let current = self.window.index(now_ms);
        self.index == current
            || (self.window.algorithm == crate::window::Algorithm::Sliding
                && self.index + 1 == current)
    }

    /// How long a counter this correction creates must be kept, from `now_ms`.
    pub fn ttl_ms(&self, now_ms: u64) -> u64 {
        let end = (self.index + 1).saturating_mul(self.window.len_ms);
        let read_after = match self.window.algorithm {
            crate::window::Algorithm::Sliding => self.window.len_ms,
            crate::window::Algorithm::Fixed => 0,
        };
        (end + read_after).saturating_sub(now_ms).max(1)
    }
}

/// How long a usage report's id is remembered: a report retried within this time is applied
/// once. The filter gives up on a report well before: at most 10 attempts of at most 10 s each,
/// at most 8 s apart (about 2.5 minutes), 5 with 1 s and 250 ms doubling by default (~9 s).
pub const REPORT_ID_TTL_MS: u64 = 5 * 60 * 1000;

pub trait Store: Send + Sync + 'static {
    /// Checks every charge at `now_ms` (Unix milliseconds) and adds the hits of all of them
    /// only if [`decide`] admits the request: one atomic step.
    fn check_and_charge(
        &self,
        now_ms: u64,
        charges: &[Charge],
    ) -> impl Future<Output = Result<Outcome, StoreError>> + Send;

    /// Applies the live `corrections` of usage report `id` unless a report with this id was
    /// applied in the last [`REPORT_ID_TTL_MS`]. `Ok(true)`: applied now; `Ok(false)`: a
    /// duplicate, nothing changed.
    fn correct(
        &self,
        now_ms: u64,
        id: &str,
        corrections: &[Correction],
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Applies a batch's provider outcomes to their deployments' circuits under `policy`
    /// ([`Circuit::apply`], atomically per deployment); per deployment, whether this opened its
    /// circuit.
    fn record_outcomes(
        &self,
        now_ms: u64,
        policy: &Policy,
        outcomes: &[(String, Outcomes)],
    ) -> impl Future<Output = Result<Vec<bool>, StoreError>> + Send;

    /// The circuits of `deployments`, in order (closed for one never reported or forgotten).
    fn circuits(
        &self,
        deployments: &[String],
    ) -> impl Future<Output = Result<Vec<Circuit>, StoreError>> + Send;

    /// Cheap reachability probe for health reporting.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The store chosen at startup: one concrete type for the service to be generic over.
pub enum AnyStore {
    Memory(memory::MemoryStore),
    Redis(redis::RedisStore),
    RedisCluster(redis_cluster::RedisClusterStore),
}

impl AnyStore {
    pub fn name(&self) -> &'static str {
        match self {
            AnyStore::Memory(_) => "memory",
            AnyStore::Redis(_) => "redis",
            AnyStore::RedisCluster(_) => "redis-cluster",
        }
    }
}

impl Store for AnyStore {
    async fn check_and_charge(
        &self,
        now_ms: u64,
        charges: &[Charge],
    ) -> Result<Outcome, StoreError> {
        match self {
            AnyStore::Memory(s) => s.check_and_charge(now_ms, charges).await,
            AnyStore::Redis(s) => s.check_and_charge(now_ms, charges).await,
            AnyStore::RedisCluster(s) => s.check_and_charge(now_ms, charges).await,
        }
    }

    async fn correct(
        &self,
        now_ms: u64,
        id: &str,
        corrections: &[Correction],
    ) -> Result<bool, StoreError> {
        match self {
            AnyStore::Memory(s) => s.correct(now_ms, id, corrections).await,
            AnyStore::Redis(s) => s.correct(now_ms, id, corrections).await,
            AnyStore::RedisCluster(s) => s.correct(now_ms, id, corrections).await,
        }
    }

    async fn record_outcomes(
        &self,
        now_ms: u64,
        policy: &Policy,
        outcomes: &[(String, Outcomes)],
    ) -> Result<Vec<bool>, StoreError> {
        match self {
            AnyStore::Memory(s) => s.record_outcomes(now_ms, policy, outcomes).await,
            AnyStore::Redis(s) => s.record_outcomes(now_ms, policy, outcomes).await,
            AnyStore::RedisCluster(s) => s.record_outcomes(now_ms, policy, outcomes).await,
        }
    }

    async fn circuits(&self, deployments: &[String]) -> Result<Vec<Circuit>, StoreError> {
        match self {
            AnyStore::Memory(s) => s.circuits(deployments).await,
            AnyStore::Redis(s) => s.circuits(deployments).await,
            AnyStore::RedisCluster(s) => s.circuits(deployments).await,
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        match self {
            AnyStore::Memory(s) => s.ping().await,
            AnyStore::Redis(s) => s.ping().await,
            AnyStore::RedisCluster(s) => s.ping().await,
        }
    }
}

/// The admission rule shared by every store: enforce-mode limits must all fit; quota-mode
/// limits reject only when all of them are over; shadow-mode limits never reject. An admitted
/// request charges every limit except quota-mode ones that are over; a rejected one charges none.
pub fn decide(now_ms: u64, charges: &[Charge], before: &[Counts]) -> (bool, Vec<bool>) {
    let fits: Vec<bool> = charges
        .iter()
        .zip(before)
        .map(|(c, b)| c.window.estimate(*b, now_ms).saturating_add(c.hits) <= c.limit)
        .collect();
    let mut quota_total = 0;
    let mut quota_fit = 0;
    let mut enforce_ok = true;
    for (c, &fit) in charges.iter().zip(&fits) {
        match c.mode {
            Mode::Enforce => enforce_ok &= fit,
            Mode::Quota => {
                quota_total += 1;
                quota_fit += usize::from(fit);
            }
            Mode::Shadow => {}
        }
    }
    let admitted = enforce_ok && (quota_total == 0 || quota_fit > 0);
    let charged = charges
        .iter()
        .zip(&fits)
        .map(|(c, &fit)| admitted && (c.mode != Mode::Quota || fit))
        .collect();
    (admitted, charged)
}
