//! The embedded store: counters in sharded maps, for one service process.
//!
//! A request locks the shards of its counters in ascending order (no deadlock between requests
//! that share shards), decides, charges, and unlocks: the same all-or-nothing step as the Redis
//! script, without a global lock. A background sweep drops counters whose windows have passed.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, MutexGuard};

use super::{Charge, Correction, Counts, Outcome, REPORT_ID_TTL_MS, Store, StoreError, decide};
use crate::health::{Circuit, Outcomes, Policy};
use crate::window::Algorithm;

const SHARDS: usize = 64;

#[derive(Clone, Copy, Debug)]
struct Slot {
    /// Window index of `curr`.
    index: u64,
    curr: u64,
    prev: u64,
    /// Unix ms after which nothing reads this slot.
    expires_ms: u64,
}

impl Slot {
    /// The counts as seen from window `index`.
    fn at(&self, index: u64) -> Counts {
        if index == self.index {
            Counts {
                prev: self.prev,
                curr: self.curr,
            }
        } else if index == self.index + 1 {
            Counts {
                prev: self.curr,
                curr: 0,
            }
        } else {
            Counts::default()
        }
    }
}

type Shard = HashMap<String, Slot>;

#[derive(Clone)]
pub struct MemoryStore {
    shards: Arc<[Mutex<Shard>]>,
    hasher: RandomState,
    /// Ids of applied usage reports → when they may be forgotten (Unix ms).
    reports: Arc<Mutex<HashMap<String, u64>>>,
    /// Deployments' circuits → when they may be forgotten (Unix ms).
    circuits: Arc<Mutex<HashMap<String, (Circuit, u64)>>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            reports: Arc::new(Mutex::new(HashMap::new())),
            circuits: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn shard_of(&self, key: &str) -> usize {
        (self.hasher.hash_one(key) as usize) % SHARDS
    }

    /// The atomic step, synchronous: no await point while shards are locked.
    pub fn apply(&self, now_ms: u64, charges: &[Charge]) -> Outcome {
        let shard_ids: Vec<usize> = charges.iter().map(|c| self.shard_of(&c.key)).collect();
        let mut order = shard_ids.clone();
        order.sort_unstable();
        order.dedup();
        let mut guards: Vec<(usize, MutexGuard<'_, Shard>)> =
            order.iter().map(|&i| (i, self.shards[i].lock())).collect();
        let shard = |id: usize| -> usize {
            // `order` is sorted, so the guard's position is a binary search away.
            order.binary_search(&id).unwrap_or_default()
        };

        let before: Vec<Counts> = charges
            .iter()
            .zip(&shard_ids)
            .map(|(c, &id)| {
                let map = &guards[shard(id)].1;
                let counts = map
                    .get(&c.key)
                    .map(|s| s.at(c.window.index(now_ms)))
                    .unwrap_or_default();
                match c.window.algorithm {
                    Algorithm::Sliding => counts,
                    // A fixed window never reads the previous one (Redis does not keep it).
                    Algorithm::Fixed => Counts { prev: 0, ..counts },
                }
            })
            .collect();
        let (admitted, charged) = decide(now_ms, charges, &before);
        for ((c, &id), &add) in charges.iter().zip(&shard_ids).zip(&charged) {
            if !add || c.hits == 0 {
                continue;
            }
            let map = &mut guards[shard(id)].1;
            let index = c.window.index(now_ms);
            let expires_ms = now_ms + c.window.ttl_ms(now_ms);
            let slot = map.entry(c.key.clone()).or_insert(Slot {
                index,
                curr: 0,
                prev: 0,
                expires_ms,
            });
            // From the slot, not `before`: two charges of one request may share a counter,
            // and both add (as two INCRBYs do in Redis).
            let now = slot.at(index);
            *slot = Slot {
                index,
                curr: now.curr.saturating_add(c.hits),
                prev: now.prev,
                expires_ms,
            };
        }
        Outcome {
            admitted,
            charged,
            before,
        }
    }

    /// Applies a usage report's corrections once per id: see [`Store::correct`].
    pub fn apply_correction(&self, now_ms: u64, id: &str, corrections: &[Correction]) -> bool {
        {
            let mut seen = self.reports.lock();
            if seen.get(id).is_some_and(|&until| until > now_ms) {
                return false;
            }
            seen.insert(id.to_string(), now_ms + REPORT_ID_TTL_MS);
        }
        for c in corrections.iter().filter(|c| c.live(now_ms)) {
            let mut map = self.shards[self.shard_of(&c.key)].lock();
            let shift = |n: u64| n.saturating_add_signed(c.delta);
            match map.get_mut(&c.key) {
                Some(s) if s.index == c.index => s.curr = shift(s.curr),
                Some(s) if s.index == c.index + 1 => s.prev = shift(s.prev),
                // The counter is older than the reservation's window, or gone: only an extra
                // charge has anything to add to.
                slot if c.delta > 0 => {
                    let base = slot.map(|s| s.at(c.index)).unwrap_or_default();
                    map.insert(
                        c.key.clone(),
                        Slot {
                            index: c.index,
                            curr: shift(base.curr),
                            prev: base.prev,
                            expires_ms: now_ms + c.ttl_ms(now_ms),
                        },
                    );
                }
                _ => {}
            }
        }
        true
    }

    /// Applies provider outcomes: see [`Store::record_outcomes`].
    pub fn apply_outcomes(
        &self,
        now_ms: u64,
        policy: &Policy,
        outcomes: &[(String, Outcomes)],
    ) -> Vec<bool> {
        let mut map = self.circuits.lock();
        outcomes
            .iter()
            .map(|(name, o)| {
                let current = match map.get(name) {
                    Some(&(c, until)) if until > now_ms => c,
                    _ => Circuit::default(),
                };
                let (next, opened) = current.apply(*o, now_ms, policy);
                map.insert(name.clone(), (next, now_ms + policy.keep_ms()));
                opened
            })
            .collect()
    }

    /// Drops every counter no window can read any more, and report ids and circuits past
    /// their time.
    pub fn sweep(&self, now_ms: u64) -> usize {
        self.reports.lock().retain(|_, until| *until > now_ms);
        self.circuits.lock().retain(|_, (_, until)| *until > now_ms);
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut map = shard.lock();
            let len = map.len();
            map.retain(|_, s| s.expires_ms > now_ms);
            removed += len - map.len();
        }
        removed
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs [`sweep`](Self::sweep) every `every` until the process ends.
    pub fn spawn_sweeper(&self, every: Duration, clock: impl Fn() -> u64 + Send + 'static) {
        let store = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                store.sweep(clock());
            }
        });
    }
}

impl Store for MemoryStore {
    async fn check_and_charge(
        &self,
        now_ms: u64,
        charges: &[Charge],
    ) -> Result<Outcome, StoreError> {
        Ok(self.apply(now_ms, charges))
    }

    async fn correct(
        &self,
        now_ms: u64,
        id: &str,
        corrections: &[Correction],
    ) -> Result<bool, StoreError> {
        Ok(self.apply_correction(now_ms, id, corrections))
    }

    async fn record_outcomes(
        &self,
        now_ms: u64,
        policy: &Policy,
        outcomes: &[(String, Outcomes)],
    ) -> Result<Vec<bool>, StoreError> {
        Ok(self.apply_outcomes(now_ms, policy, outcomes))
    }

    async fn circuits(&self, deployments: &[String]) -> Result<Vec<Circuit>, StoreError> {
        // Expired entries read as closed only until the sweep drops them: an expired circuit
        // was last touched `keep_ms` ago, so it is closed already.
        let map = self.circuits.lock();
        Ok(deployments
            .iter()
            .map(|d| map.get(d).map(|(c, _)| *c).unwrap_or_default())
            .collect())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Mode;
    use crate::window::Window;

    const T0: u64 = 1_700_000_040_000;

    fn charge(key: &str, limit: u64, hits: u64) -> Charge {
        Charge {
            key: key.into(),
            window: Window::new(60_000, Algorithm::Sliding),
            limit,
            hits,
            mode: Mode::Enforce,
        }
    }

    #[test]
    fn expired_counters_are_swept() {
        let s = MemoryStore::new();
        s.apply(T0, &[charge("a", 10, 1), charge("b", 10, 1)]);
        assert_eq!(s.len(), 2);
        assert_eq!(
            s.sweep(T0 + 60_000),
            0,
            "a sliding window still reads the previous one"
        );
        assert_eq!(s.sweep(T0 + 120_000), 2);
        assert!(s.is_empty());
    }

    #[test]
    fn a_slot_rolls_into_the_next_window() {
        let s = MemoryStore::new();
        s.apply(T0, &[charge("a", 10, 4)]);
        let out = s.apply(T0 + 60_000, &[charge("a", 10, 1)]);
        assert_eq!(out.before, vec![Counts { prev: 4, curr: 0 }]);
        let out = s.apply(T0 + 180_000, &[charge("a", 10, 1)]);
        assert_eq!(out.before, vec![Counts::default()]);
    }
}
