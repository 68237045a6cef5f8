//! One behaviour suite, run against every store: the in-memory store, the Redis store (each
//! Redis test starts its own `redis-server` on a free loopback port) and the Redis Cluster store
//! (a real 3-master cluster on loopback, shared by the tests that run at the same time, each
//! under its own key prefix; the failure test starts its own). The clock is injected, so
//! window logic needs no sleeps; only the failure tests wait, for a real server to die or come
//! back.
//!
//! Instants are chosen at least a few seconds before their window's end: Redis expires keys in
//! real time by the TTL computed from the injected clock, so a fake instant near a window end
//! would let a key vanish under the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ::redis::Value;
use ratelimit_service::health::{Circuit, Outcomes, Policy};
use ratelimit_service::keys::counter_key;
use ratelimit_service::store::memory::MemoryStore;
use ratelimit_service::store::redis::{RETRY_EVERY, RedisStore};
use ratelimit_service::store::redis_cluster::{RedisClusterStore, key_slot};
use ratelimit_service::store::{Charge, Correction, Counts, Mode, Outcome, Store, StoreError};
use ratelimit_service::window::{Algorithm, Window};

const MIN: u64 = 60_000;
/// A whole minute: window index `T0 / MIN` starts here.
const T0: u64 = 1_700_000_040_000;
/// Generous, so a loaded test machine does not fail the functional tests.
const TIMEOUT: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------------
// Charges

fn sliding(key: &str, limit: u64, hits: u64) -> Charge {
    Charge {
        key: key.into(),
        window: Window::new(MIN, Algorithm::Sliding),
        limit,
        hits,
        mode: Mode::Enforce,
    }
}

fn fixed(key: &str, limit: u64, hits: u64) -> Charge {
    Charge {
        window: Window::new(MIN, Algorithm::Fixed),
        ..sliding(key, limit, hits)
    }
}

fn mode(c: Charge, mode: Mode) -> Charge {
    Charge { mode, ..c }
}

fn counts(prev: u64, curr: u64) -> Counts {
    Counts { prev, curr }
}

async fn run<S: Store>(s: &S, now: u64, charges: &[Charge]) -> Outcome {
    s.check_and_charge(now, charges).await.unwrap()
}

/// Sends `n` copies of `request` at once, spread over `stores` in turn: how many were admitted.
async fn admitted_of<S: Store>(stores: &[Arc<S>], n: usize, now: u64, request: &[Charge]) -> usize {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let s = Arc::clone(&stores[i % stores.len()]);
            let request = request.to_vec();
            tokio::spawn(async move { s.check_and_charge(now, &request).await.unwrap().admitted })
        })
        .collect();
    let mut admitted = 0;
    for t in tasks {
        admitted += usize::from(t.await.unwrap());
    }
    admitted
}

/// The counter of `c` at `now`, read with a hits=0 check.
async fn count<S: Store>(s: &S, now: u64, c: &Charge) -> Counts {
    let probe = Charge {
        hits: 0,
        ..c.clone()
    };
    run(s, now, &[probe]).await.before[0]
}

// ---------------------------------------------------------------------------------------------
// The cases, generic over the store

mod cases {
    use super::*;

    pub async fn at_limit_admitted_one_over_rejected<S: Store>(s: S) {
        let out = run(&s, T0 + 1_000, &[sliding("a", 10, 10)]).await;
        assert!(out.admitted, "exactly at the limit is admitted");
        assert_eq!(out.charged, vec![true]);
        assert_eq!(out.before, vec![counts(0, 0)]);

        let out = run(&s, T0 + 1_000, &[sliding("a", 10, 1)]).await;
        assert!(!out.admitted, "one over is rejected");
        assert_eq!(out.charged, vec![false]);
        assert_eq!(out.before, vec![counts(0, 10)]);

        // A request bigger than the limit on its own never fits.
        let out = run(&s, T0 + 1_000, &[sliding("b", 10, 11)]).await;
        assert!(!out.admitted);
        assert_eq!(
            count(&s, T0 + 1_000, &sliding("b", 10, 0)).await,
            counts(0, 0)
        );
    }

    pub async fn zero_hits_checks_without_charging<S: Store>(s: S) {
        run(&s, T0 + 1_000, &[sliding("a", 5, 5)]).await;
        for _ in 0..3 {
            let out = run(&s, T0 + 2_000, &[sliding("a", 5, 0)]).await;
            assert!(out.admitted, "estimate 5 + 0 <= 5");
            assert_eq!(out.charged, vec![true]);
            assert_eq!(out.before, vec![counts(0, 5)]);
        }
        // Over the limit already: a check reports it without changing anything.
        run(&s, T0 + 2_000, &[mode(sliding("a", 5, 3), Mode::Shadow)]).await;
        let out = run(&s, T0 + 3_000, &[sliding("a", 5, 0)]).await;
        assert!(!out.admitted);
        assert_eq!(out.before, vec![counts(0, 8)]);
        assert_eq!(
            count(&s, T0 + 3_000, &sliding("a", 5, 0)).await,
            counts(0, 8)
        );
    }

    pub async fn all_or_nothing<S: Store>(s: S) {
        let now = T0 + 5_000;
        let request = [
            sliding("ok-1", 100, 5),
            fixed("ok-2", 100, 5),
            sliding("over", 3, 5),
            mode(sliding("shadow", 1, 5), Mode::Shadow),
            mode(sliding("quota", 100, 5), Mode::Quota),
        ];
        let out = run(&s, now, &request).await;
        assert!(!out.admitted);
        assert_eq!(out.charged, vec![false; 5]);
        for c in &request {
            assert_eq!(
                count(&s, now, c).await,
                counts(0, 0),
                "{} was charged",
                c.key
            );
        }

        // Without the over-limit charge the same request charges everything.
        let out = run(&s, now, &[&request[..2], &request[3..]].concat()).await;
        assert!(out.admitted);
        assert_eq!(out.charged, vec![true; 4]);
        for c in [&request[0], &request[1], &request[3], &request[4]] {
            assert_eq!(count(&s, now, c).await, counts(0, 5), "{}", c.key);
        }
        assert_eq!(count(&s, now, &request[2]).await, counts(0, 0));
    }

    pub async fn shadow_never_rejects_but_counts<S: Store>(s: S) {
        let shadow = mode(sliding("s", 2, 5), Mode::Shadow);
        for i in 0..3 {
            let out = run(&s, T0 + 1_000, std::slice::from_ref(&shadow)).await;
            assert!(out.admitted);
            assert_eq!(out.charged, vec![true]);
            assert_eq!(out.before, vec![counts(0, 5 * i)]);
        }
        // A shadow limit next to an enforced one does not change its verdict either way.
        let out = run(&s, T0 + 1_000, &[shadow.clone(), sliding("e", 10, 10)]).await;
        assert!(out.admitted);
        let out = run(&s, T0 + 1_000, &[shadow, sliding("e", 10, 1)]).await;
        assert!(!out.admitted, "the enforced limit is full");
        assert_eq!(out.charged, vec![false, false]);
        assert_eq!(
            count(&s, T0 + 1_000, &sliding("s", 2, 0)).await,
            counts(0, 20)
        );
    }

    pub async fn quota_rejects_only_when_all_quota_limits_are_over<S: Store>(s: S) {
        let now = T0 + 10_000;
        let q1 = |hits| mode(sliding("q1", 10, hits), Mode::Quota);
        let q2 = |hits| mode(sliding("q2", 3, hits), Mode::Quota);

        // q1 fits, q2 is over: admitted, only q1 charged.
        let out = run(&s, now, &[q1(5), q2(5)]).await;
        assert!(out.admitted);
        assert_eq!(out.charged, vec![true, false]);
        assert_eq!(count(&s, now, &q1(0)).await, counts(0, 5));
        assert_eq!(count(&s, now, &q2(0)).await, counts(0, 0));

        // Both over: rejected, nothing charged.
        let out = run(&s, now, &[q1(6), q2(6)]).await;
        assert!(!out.admitted);
        assert_eq!(out.charged, vec![false, false]);
        assert_eq!(count(&s, now, &q1(0)).await, counts(0, 5));

        // Quota limits that fit cannot rescue an over enforce-mode limit...
        let out = run(&s, now, &[q1(1), sliding("e", 1, 2)]).await;
        assert!(!out.admitted);
        assert_eq!(out.charged, vec![false, false]);
        // ...and an enforce-mode limit that fits cannot rescue all-over quota limits.
        let out = run(&s, now, &[q1(6), q2(6), sliding("e", 10, 1)]).await;
        assert!(!out.admitted);
        // Fits everywhere: everything charged, shadow included.
        let out = run(
            &s,
            now,
            &[
                q1(2),
                sliding("e", 10, 1),
                mode(sliding("sh", 0, 1), Mode::Shadow),
            ],
        )
        .await;
        assert!(out.admitted);
        assert_eq!(out.charged, vec![true, true, true]);
        assert_eq!(count(&s, now, &q1(0)).await, counts(0, 7));
    }

    pub async fn sliding_window_weighs_the_previous_window<S: Store>(s: S) {
        let c = |hits| sliding("w", 100, hits);
        // 80 hits in window k.
        assert!(run(&s, T0 + 30_000, &[c(80)]).await.admitted);

        // 15 s into window k+1, 45/60 of the previous window still counts: floor(80*0.75) = 60.
        let t = T0 + MIN + 15_000;
        let out = run(&s, t, &[c(41)]).await;
        assert!(!out.admitted, "60 + 41 > 100");
        assert_eq!(out.before, vec![counts(80, 0)]);
        let out = run(&s, t, &[c(40)]).await;
        assert!(out.admitted, "60 + 40 <= 100");
        assert_eq!(count(&s, t, &c(0)).await, counts(80, 40));
        assert!(!run(&s, t, &[c(1)]).await.admitted);

        // Half way: floor(80 * 0.5) = 40, plus 40 current: 20 more fit, 21 do not.
        let t = T0 + MIN + 30_000;
        assert!(!run(&s, t, &[c(21)]).await.admitted);
        assert!(run(&s, t, &[c(20)]).await.admitted);

        // Window k+2: window k+1 (60 hits) is now the previous one; window k is gone.
        let t = T0 + 2 * MIN + 20_000;
        // floor(60 * 40_000 / 60_000) = 40
        let out = run(&s, t, &[c(60)]).await;
        assert!(out.admitted);
        assert_eq!(out.before, vec![counts(60, 0)]);
        assert!(!run(&s, t, &[c(1)]).await.admitted);

        // floor(7 * 59_999 / 60_000) = 6 exactly, not a rounded 7.
        let f = |hits| sliding("floor", 10, hits);
        assert!(run(&s, T0 + 5_000, &[f(7)]).await.admitted);
        assert!(!run(&s, T0 + MIN + 1, &[f(5)]).await.admitted, "6 + 5 > 10");
        assert!(run(&s, T0 + MIN + 1, &[f(4)]).await.admitted, "6 + 4 <= 10");
    }

    /// With counts this large, `prev * left / len` and `prev * (left / len)` floor to different
    /// integers: the store must use the first order, like `Window::estimate`.
    pub async fn sliding_weight_is_bit_identical_for_large_counts<S: Store>(s: S) {
        let window = Window::new(10_000, Algorithm::Sliding);
        let c = |limit, hits| Charge {
            window,
            ..sliding("big", limit, hits)
        };
        let prev = 76_841_154_413_216;
        let k = T0 / 10_000;
        assert!(
            run(&s, k * 10_000 + 1_000, &[c(u64::MAX, prev)])
                .await
                .admitted
        );
        let t = (k + 1) * 10_000 + 3_977; // 6_023 ms of the previous window still count
        let estimate = window.estimate(counts(prev, 0), t);
        assert_eq!(estimate, 46_281_427_303_080);
        assert_ne!(
            estimate,
            ((prev as f64) * (6_023.0 / 10_000.0)).floor() as u64,
            "the other order differs"
        );
        assert!(run(&s, t, &[c(estimate, 0)]).await.admitted);
        assert!(!run(&s, t, &[c(estimate - 1, 0)]).await.admitted);
    }

    pub async fn fixed_window_resets_at_the_boundary<S: Store>(s: S) {
        let c = |hits| fixed("f", 5, hits);
        assert!(run(&s, T0 + 50_000, &[c(5)]).await.admitted);
        assert!(!run(&s, T0 + 54_999, &[c(1)]).await.admitted);
        // The next window starts empty; the previous one is not weighed in (and not reported).
        let out = run(&s, T0 + MIN, &[c(5)]).await;
        assert!(out.admitted);
        assert_eq!(out.before, vec![counts(0, 0)]);
        let out = run(&s, T0 + MIN + 1, &[c(1)]).await;
        assert!(!out.admitted);
        assert_eq!(out.before, vec![counts(0, 5)]);
    }

    pub async fn windows_and_keys_do_not_mix<S: Store>(s: S) {
        run(&s, T0 + 10_000, &[sliding("a", 100, 3)]).await;
        run(&s, T0 + 10_000, &[sliding("b", 100, 4)]).await;
        assert_eq!(
            count(&s, T0 + 10_000, &sliding("a", 100, 0)).await,
            counts(0, 3)
        );
        assert_eq!(
            count(&s, T0 + 10_000, &sliding("b", 100, 0)).await,
            counts(0, 4)
        );
        // One window later, "a" is the previous window; two later, nothing is left.
        assert_eq!(
            count(&s, T0 + MIN, &sliding("a", 100, 0)).await,
            counts(3, 0)
        );
        assert_eq!(
            count(&s, T0 + 2 * MIN, &sliding("a", 100, 0)).await,
            counts(0, 0)
        );
        // The same key charged in window k+2 does not see window k.
        run(&s, T0 + 2 * MIN + 1_000, &[sliding("a", 100, 1)]).await;
        assert_eq!(
            count(&s, T0 + 2 * MIN + 2_000, &sliding("a", 100, 0)).await,
            counts(0, 1)
        );
    }

    pub async fn duplicate_counters_in_one_request_add_up<S: Store>(s: S) {
        // Both charges see the counter as it was before the request, and both add.
        let out = run(&s, T0 + 1_000, &[sliding("d", 10, 4), sliding("d", 10, 4)]).await;
        assert!(out.admitted);
        assert_eq!(out.before, vec![counts(0, 0), counts(0, 0)]);
        assert_eq!(
            count(&s, T0 + 1_000, &sliding("d", 10, 0)).await,
            counts(0, 8)
        );
    }

    pub async fn empty_request_is_admitted<S: Store>(s: S) {
        let out = run(&s, T0, &[]).await;
        assert_eq!(
            out,
            Outcome {
                admitted: true,
                charged: vec![],
                before: vec![]
            }
        );
        s.ping().await.unwrap();
    }

    pub async fn concurrent_requests_admit_exactly_the_limit<S: Store + Clone>(s: S) {
        let s = Arc::new(s);
        let admitted = admitted_of(
            std::slice::from_ref(&s),
            200,
            T0 + 1_000,
            &[sliding("hot", 100, 1)],
        )
        .await;
        assert_eq!(admitted, 100);
        assert_eq!(
            count(&*s, T0 + 1_000, &sliding("hot", 100, 0)).await,
            counts(0, 100)
        );
    }
}

/// Usage-report corrections (reserve, then reconcile).
mod corrections {
    use super::*;

    fn fix(c: &Charge, at: u64, delta: i64) -> Correction {
        Correction {
            key: c.key.clone(),
            window: c.window,
            index: c.window.index(at),
            delta,
        }
    }

    pub async fn refund_frees_room_once_per_id<S: Store>(s: S) {
        let c = sliding("tpm", 1000, 1000);
        let now = T0 + 1_000;
        assert!(run(&s, now, std::slice::from_ref(&c)).await.admitted);
        assert!(!run(&s, now, &[sliding("tpm", 1000, 1)]).await.admitted);
        assert!(s.correct(now, "r1", &[fix(&c, now, -900)]).await.unwrap());
        assert_eq!(count(&s, now, &c).await, counts(0, 100));
        // The same report again (a retry): nothing changes.
        assert!(!s.correct(now, "r1", &[fix(&c, now, -900)]).await.unwrap());
        assert_eq!(count(&s, now, &c).await, counts(0, 100));
        assert!(run(&s, now, &[sliding("tpm", 1000, 900)]).await.admitted);
        // A report that corrects nothing is still remembered.
        assert!(s.correct(now, "r2", &[]).await.unwrap());
        assert!(!s.correct(now, "r2", &[]).await.unwrap());
    }

    pub async fn corrections_never_go_below_zero_and_may_charge_extra<S: Store>(s: S) {
        let c = fixed("t", 100, 10);
        let now = T0 + 5_000;
        run(&s, now, std::slice::from_ref(&c)).await;
        assert!(s.correct(now, "a", &[fix(&c, now, -50)]).await.unwrap());
        assert_eq!(count(&s, now, &c).await, counts(0, 0));
        // Real usage above the estimate is charged, past the limit if need be.
        assert!(s.correct(now, "b", &[fix(&c, now, 130)]).await.unwrap());
        assert_eq!(count(&s, now, &c).await, counts(0, 130));
        // On a counter never written (or expired) an extra charge creates it.
        let fresh = fixed("fresh", 100, 0);
        assert!(s.correct(now, "c", &[fix(&fresh, now, 7)]).await.unwrap());
        assert_eq!(count(&s, now, &fresh).await, counts(0, 7));
    }

    pub async fn a_reservation_is_corrected_in_its_own_window<S: Store>(s: S) {
        let c = sliding("w", 1000, 600);
        let reserved = T0 + 59_000;
        run(&s, reserved, std::slice::from_ref(&c)).await;
        // The next window: the reservation is now the previous window's count.
        let now = T0 + MIN + 1_000;
        run(&s, now, &[sliding("w", 1000, 5)]).await;
        assert!(
            s.correct(now, "p", &[fix(&c, reserved, -500)])
                .await
                .unwrap()
        );
        assert_eq!(count(&s, now, &c).await, counts(100, 5));
        // Two windows later nothing reads it: the correction is dropped.
        let later = T0 + 2 * MIN + 1_000;
        assert!(
            s.correct(later, "q", &[fix(&c, reserved, 300)])
                .await
                .unwrap()
        );
        assert_eq!(count(&s, later, &c).await, counts(5, 0));
    }

    pub async fn concurrent_retries_apply_once<S: Store + Clone>(s: S) {
        let c = fixed("burst", 10_000, 5_000);
        let now = T0 + 2_000;
        run(&s, now, std::slice::from_ref(&c)).await;
        let s = Arc::new(s);
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (s, c) = (s.clone(), c.clone());
                tokio::spawn(
                    async move { s.correct(now, "same", &[fix(&c, now, -1)]).await.unwrap() },
                )
            })
            .collect();
        let mut applied = 0;
        for t in tasks {
            applied += usize::from(t.await.unwrap());
        }
        assert_eq!(applied, 1);
        assert_eq!(count(&*s, now, &c).await, counts(0, 4_999));
    }
}

mod circuits {
    use super::*;

    fn fails(n: u32) -> Outcomes {
        Outcomes {
            reset: false,
            failures: n,
        }
    }

    fn batch(items: &[(&str, Outcomes)]) -> Vec<(String, Outcomes)> {
        items.iter().map(|(d, o)| (d.to_string(), *o)).collect()
    }

    pub async fn failures_in_a_row_open_a_circuit_and_an_answer_closes_it<S: Store>(s: S) {
        let p = Policy::default();
        let now = T0 + 1_000;
        let names = [
            "dep-a".to_string(),
            "dep|b=c".to_string(),
            "never".to_string(),
        ];
        assert_eq!(s.circuits(&names).await.unwrap(), [Circuit::default(); 3]);
        let opened = s
            .record_outcomes(
                now,
                &p,
                &batch(&[("dep-a", fails(2)), ("dep|b=c", fails(1))]),
            )
            .await
            .unwrap();
        assert_eq!(opened, [false, false]);
        let c = s.circuits(&names).await.unwrap();
        assert_eq!((c[0].failures, c[0].is_open(now)), (2, false));
        assert_eq!(c[1].failures, 1);
        // The third failure in a row opens dep-a; the next one keeps it open without
        // counting as an opening.
        let opened = s
            .record_outcomes(now + 10, &p, &batch(&[("dep-a", fails(1))]))
            .await
            .unwrap();
        assert_eq!(opened, [true]);
        let opened = s
            .record_outcomes(now + 20, &p, &batch(&[("dep-a", fails(1))]))
            .await
            .unwrap();
        assert_eq!(opened, [false]);
        let c = s.circuits(&names).await.unwrap();
        assert_eq!(
            c[0],
            Circuit {
                failures: 4,
                open_until_ms: now + 20 + p.open_for_ms
            }
        );
        assert_eq!(c[0].open_for_ms(now + 20), p.open_for_ms);
        assert_eq!(c[2], Circuit::default(), "a deployment nobody reported");
        // An answer that is not a failure closes it; failures after it count from zero.
        let ok_then_fail = Outcomes {
            reset: true,
            failures: 1,
        };
        s.record_outcomes(now + 30, &p, &batch(&[("dep-a", ok_then_fail)]))
            .await
            .unwrap();
        let c = s.circuits(&names[..1]).await.unwrap();
        assert_eq!(
            c[0],
            Circuit {
                failures: 1,
                open_until_ms: 0
            }
        );
        // A stricter policy opens at once.
        let strict = Policy {
            failures_to_open: 1,
            open_for_ms: 500,
        };
        let opened = s
            .record_outcomes(now + 40, &strict, &batch(&[("dep|b=c", fails(1))]))
            .await
            .unwrap();
        assert_eq!(opened, [true]);
        assert_eq!(
            s.circuits(&names[1..2]).await.unwrap()[0].open_for_ms(now + 40),
            500
        );
        assert!(s.record_outcomes(now, &p, &[]).await.unwrap().is_empty());
        assert!(s.circuits(&[]).await.unwrap().is_empty());
    }
}

/// Instantiates every case for one store: `suite!(module, async fn making (store, guard))`.
macro_rules! suite {
    ($name:ident, $make:path) => {
        mod $name {
            use super::*;
            suite!(@cases $make;
                at_limit_admitted_one_over_rejected,
                zero_hits_checks_without_charging,
                all_or_nothing,
                shadow_never_rejects_but_counts,
                quota_rejects_only_when_all_quota_limits_are_over,
                sliding_window_weighs_the_previous_window,
                sliding_weight_is_bit_identical_for_large_counts,
                fixed_window_resets_at_the_boundary,
                windows_and_keys_do_not_mix,
                duplicate_counters_in_one_request_add_up,
                empty_request_is_admitted,
                concurrent_requests_admit_exactly_the_limit,
            );
            suite!(@fixes $make;
                refund_frees_room_once_per_id,
                corrections_never_go_below_zero_and_may_charge_extra,
                a_reservation_is_corrected_in_its_own_window,
                concurrent_retries_apply_once,
            );
            suite!(@circuits $make;
                failures_in_a_row_open_a_circuit_and_an_answer_closes_it,
            );
        }
    };
    (@circuits $make:path; $($case:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (store, _guard) = $make().await;
                circuits::$case(store).await;
            }
        )*
    };
    (@fixes $make:path; $($case:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (store, _guard) = $make().await;
                corrections::$case(store).await;
            }
        )*
    };
    (@cases $make:path; $($case:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (store, _guard) = $make().await;
                cases::$case(store).await;
            }
        )*
    };
}

async fn memory_store() -> (MemoryStore, ()) {
    (MemoryStore::new(), ())
}

async fn redis_store() -> (RedisStore, RedisServer) {
    let server = RedisServer::start();
    let store = RedisStore::new(&server.url(), TIMEOUT).unwrap();
    (store, server)
}

async fn cluster_store() -> (Namespaced<RedisClusterStore>, ()) {
    let store = RedisClusterStore::new(&shared_cluster().urls(), TIMEOUT).unwrap();
    (Namespaced::new(store), ())
}

suite!(memory, memory_store);
suite!(redis, redis_store);
suite!(redis_cluster, cluster_store);

/// A store whose keys all start with a prefix of its own, so tests can share one cluster.
#[derive(Clone)]
struct Namespaced<S> {
    store: S,
    prefix: String,
}

impl<S> Namespaced<S> {
    fn new(store: S) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Namespaced {
            store,
            prefix: format!("t{}.{n}-", std::process::id()),
        }
    }
}

impl<S: Store> Store for Namespaced<S> {
    async fn check_and_charge(
        &self,
        now_ms: u64,
        charges: &[Charge],
    ) -> Result<Outcome, StoreError> {
        let charges: Vec<Charge> = charges
            .iter()
            .map(|c| Charge {
                key: format!("{}{}", self.prefix, c.key),
                ..c.clone()
            })
            .collect();
        self.store.check_and_charge(now_ms, &charges).await
    }

    async fn correct(
        &self,
        now_ms: u64,
        id: &str,
        corrections: &[Correction],
    ) -> Result<bool, StoreError> {
        let corrections: Vec<Correction> = corrections
            .iter()
            .map(|c| Correction {
                key: format!("{}{}", self.prefix, c.key),
                ..c.clone()
            })
            .collect();
        let id = format!("{}{id}", self.prefix.trim_end_matches('-'));
        self.store.correct(now_ms, &id, &corrections).await
    }

    async fn record_outcomes(
        &self,
        now_ms: u64,
        policy: &Policy,
        outcomes: &[(String, Outcomes)],
    ) -> Result<Vec<bool>, StoreError> {
        let outcomes: Vec<(String, Outcomes)> = outcomes
            .iter()
            .map(|(d, o)| (format!("{}{d}", self.prefix), *o))
            .collect();
        self.store.record_outcomes(now_ms, policy, &outcomes).await
    }

    async fn circuits(&self, deployments: &[String]) -> Result<Vec<Circuit>, StoreError> {
        let deployments: Vec<String> = deployments
            .iter()
            .map(|d| format!("{}{d}", self.prefix))
            .collect();
        self.store.circuits(&deployments).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }
}

// ---------------------------------------------------------------------------------------------
// A disposable redis-server

const REDIS_SERVER: &str = "/usr/bin/redis-server";

/// A `redis-server` child on a loopback port, killed (by PID) on drop.
struct RedisServer {
    port: u16,
    child: Option<Child>,
    /// Extra command-line arguments (cluster mode).
    args: Vec<String>,
}

impl RedisServer {
    /// Starts a server on a free port.
    fn start() -> Self {
        for _ in 0..20 {
            let mut server = RedisServer {
                port: free_port(),
                child: None,
                args: Vec::new(),
            };
            if server.spawn() {
                return server;
            }
        }
        panic!("could not start {REDIS_SERVER}");
    }

    /// A server that is not running yet, on a port nothing listens on.
    fn not_started() -> Self {
        RedisServer {
            port: free_port(),
            child: None,
            args: Vec::new(),
        }
    }

    /// Starts the server on its port; false if it exited (e.g. the port was taken).
    fn spawn(&mut self) -> bool {
        let port = self.port.to_string();
        let child = Command::new(REDIS_SERVER)
            .args([
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--daemonize", "no", "--loglevel", "warning"])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && child.try_wait().unwrap().is_some()
            {
                self.child = None;
                return false;
            }
            if self.answers_ping() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.kill();
        false
    }

    fn answers_ping(&self) -> bool {
        let talk = || -> std::io::Result<bool> {
            let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
            s.set_read_timeout(Some(Duration::from_millis(200)))?;
            s.write_all(b"PING\r\n")?;
            let mut reply = [0u8; 7];
            s.read_exact(&mut reply)?;
            Ok(&reply == b"+PONG\r\n")
        };
        talk().unwrap_or(false)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn restart(&mut self) {
        self.kill();
        assert!(self.spawn(), "redis-server restarts on port {}", self.port);
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(status.success());
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A plain synchronous connection, for looking at keys.
    fn connection(&self) -> ::redis::Connection {
        ::redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Calls `check_and_charge` until it succeeds, for at most `within`.
async fn until_ok<S: Store>(store: &S, charges: &[Charge], within: Duration) -> Outcome {
    let deadline = Instant::now() + within;
    loop {
        match store.check_and_charge(T0 + 1_000, charges).await {
            Ok(out) => return out,
            Err(e) if Instant::now() < deadline => {
                assert!(e.is_transient(), "{e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("store did not recover within {within:?}: {e}"),
        }
    }
}

/// Asserts that a call returns (bounded by the store's timeout, not hanging) with an error.
async fn assert_fails<S: Store>(store: &S, charges: &[Charge]) -> StoreError {
    let call = store.check_and_charge(T0 + 1_000, charges);
    let returned = tokio::time::timeout(Duration::from_secs(10), call).await;
    match returned.expect("check_and_charge returned") {
        Ok(out) => panic!("expected an error, got {out:?}"),
        Err(e) => e,
    }
}

// ---------------------------------------------------------------------------------------------
// Redis only

mod redis_only {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_stores_on_one_server_share_a_limit() {
        let server = RedisServer::start();
        let a = RedisStore::new(&server.url(), TIMEOUT).unwrap();
        let b = RedisStore::new(&server.url(), TIMEOUT).unwrap();
        assert!(
            run(&a, T0 + 1_000, &[sliding("shared", 100, 60)])
                .await
                .admitted
        );
        let out = run(&b, T0 + 1_000, &[sliding("shared", 100, 41)]).await;
        assert!(!out.admitted, "b sees a's hits");
        assert_eq!(out.before, vec![counts(0, 60)]);
        assert!(
            run(&b, T0 + 1_000, &[sliding("shared", 100, 40)])
                .await
                .admitted
        );
        assert!(
            !run(&a, T0 + 1_000, &[sliding("shared", 100, 1)])
                .await
                .admitted
        );

        // And concurrently: 2 x 100 tasks against a limit of 100.
        let (a, b) = (Arc::new(a), Arc::new(b));
        let admitted = admitted_of(&[a, b], 200, T0 + 2_000, &[sliding("both", 100, 1)]).await;
        assert_eq!(admitted, 100);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn counters_expire_with_their_window() {
        let server = RedisServer::start();
        let store = RedisStore::new(&server.url(), TIMEOUT).unwrap();
        let mut con = server.connection();
        let now = T0 + 15_000;
        let pttl = |con: &mut ::redis::Connection, c: &Charge, index: u64| -> i64 {
            ::redis::cmd("PTTL")
                .arg(RedisStore::counter_key(c, index))
                .query(con)
                .unwrap()
        };

        let s = sliding("ttl-s", 10, 1);
        let f = fixed("ttl-f", 10, 1);
        run(&store, now, &[s.clone(), f.clone()]).await;
        let index = now / MIN;
        let ttl = pttl(&mut con, &s, index);
        assert!(ttl > 0 && ttl <= 105_000, "sliding: {ttl} ms");
        assert!(
            ttl > 100_000,
            "sliding: roughly the rest of this window and the next"
        );
        let ttl = pttl(&mut con, &f, index);
        assert!(ttl > 40_000 && ttl <= 45_000, "fixed: {ttl} ms");
        // Nothing is written for the previous window, or for checks and rejections.
        assert_eq!(pttl(&mut con, &s, index - 1), -2, "no key");
        run(
            &store,
            now,
            &[sliding("ttl-0", 10, 0), sliding("ttl-r", 0, 1)],
        )
        .await;
        assert_eq!(pttl(&mut con, &sliding("ttl-0", 0, 0), index), -2);
        assert_eq!(pttl(&mut con, &sliding("ttl-r", 0, 0), index), -2);

        let key: String = RedisStore::counter_key(&s, index);
        assert_eq!(key, format!("rls:ttl-s:{index}"));
        let value: String = ::redis::cmd("GET").arg(&key).query(&mut con).unwrap();
        assert_eq!(value, "1");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn script_is_reloaded_after_script_flush() {
        let server = RedisServer::start();
        let store = RedisStore::new(&server.url(), TIMEOUT).unwrap();
        assert!(
            run(&store, T0 + 1_000, &[sliding("n", 10, 1)])
                .await
                .admitted
        );
        let _: () = ::redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query(&mut server.connection())
            .unwrap();
        let out = run(&store, T0 + 1_000, &[sliding("n", 10, 1)]).await;
        assert_eq!(out.before, vec![counts(0, 1)]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn corrupt_counter_fails_the_request_without_charging_any() {
        let server = RedisServer::start();
        let store = RedisStore::new(&server.url(), TIMEOUT).unwrap();
        let good = sliding("good", 10, 1);
        let bad = sliding("bad", 10, 1);
        let key = RedisStore::counter_key(&bad, (T0 + 1_000) / MIN);
        let _: () = ::redis::cmd("SET")
            .arg(&key)
            .arg("x")
            .query(&mut server.connection())
            .unwrap();
        let e = store
            .check_and_charge(T0 + 1_000, &[good.clone(), bad])
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Redis(_)), "{e}");
        assert_eq!(count(&store, T0 + 1_000, &good).await, counts(0, 0));
        // A script error is not an outage: the next call goes straight through.
        assert!(run(&store, T0 + 1_000, &[good]).await.admitted);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn recovers_after_redis_is_killed_and_restarted() {
        let mut server = RedisServer::start();
        let store = RedisStore::new(&server.url(), Duration::from_millis(200)).unwrap();
        let c = [sliding("k", 100, 1)];
        assert!(run(&store, T0 + 1_000, &c).await.admitted);
        store.ping().await.unwrap();

        server.kill();
        for _ in 0..5 {
            let e = assert_fails(&store, &c).await;
            assert!(e.is_transient(), "{e}");
        }
        assert!(store.ping().await.is_err());

        server.restart();
        let out = until_ok(&store, &c, Duration::from_secs(5)).await;
        assert!(out.admitted);
        assert_eq!(
            out.before,
            vec![counts(0, 0)],
            "a fresh server has no counters"
        );
        store.ping().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn starts_while_redis_is_down_and_works_once_it_is_up() {
        let mut server = RedisServer::not_started();
        let store = RedisStore::new(&server.url(), Duration::from_millis(200)).unwrap();
        let c = [sliding("late", 100, 1)];
        for _ in 0..3 {
            assert_fails(&store, &c).await;
        }
        assert!(store.ping().await.is_err());

        assert!(
            server.spawn(),
            "redis-server starts on port {}",
            server.port
        );
        let out = until_ok(&store, &c, Duration::from_secs(5)).await;
        assert!(out.admitted);
        store.ping().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unresponsive_redis_times_out_and_recovers() {
        let server = RedisServer::start();
        let store = RedisStore::new(&server.url(), Duration::from_millis(100)).unwrap();
        let c = [sliding("stop", 100, 1)];
        assert!(run(&store, T0 + 1_000, &c).await.admitted);

        // A stopped process keeps its socket open: calls time out instead of failing.
        server.signal("-STOP");
        let mut timeouts = 0;
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(600) {
            if let StoreError::Timeout(_) = assert_fails(&store, &c).await {
                timeouts += 1;
            }
        }
        assert!(
            timeouts >= 1,
            "at least the first call waits for the timeout"
        );

        server.signal("-CONT");
        until_ok(&store, &c, Duration::from_secs(5)).await;
    }

    /// A server that accepts connections and drops them at once: every call fails, and the
    /// store may open at most about one connection per `RETRY_EVERY` while it does.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_redis_is_not_hammered() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                counter.fetch_add(1, Ordering::SeqCst);
                drop(conn);
            }
        });
        let url = format!("redis://127.0.0.1:{port}/");
        let store = RedisStore::new(&url, Duration::from_millis(100)).unwrap();
        let c = [sliding("h", 1, 1)];
        let started = Instant::now();
        let mut calls = 0;
        while started.elapsed() < Duration::from_secs(1) {
            assert_fails(&store, &c).await;
            calls += 1;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let accepted = accepted.load(Ordering::SeqCst);
        let bound = 1_000 / RETRY_EVERY.as_millis() as usize + 3;
        assert!(calls > 100, "calls fail fast: {calls}");
        assert!(
            accepted <= bound,
            "{accepted} connections for {calls} calls"
        );
    }

    /// The same random traffic through both stores gives the same outcomes, call by call:
    /// the script and `decide` + `Window::estimate` agree exactly, including the floor of the
    /// sliding weight with large counts and odd window lengths.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_and_redis_agree_on_random_traffic() {
        let server = RedisServer::start();
        let redis = RedisStore::new(&server.url(), TIMEOUT).unwrap();
        agrees_with_memory(&redis).await;
    }
}

/// Runs the same random traffic through `redis` and a memory store and compares every outcome.
async fn agrees_with_memory<S: Store>(redis: &S) {
    let memory = MemoryStore::new();
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let windows = [7_919, 10_000, 60_000, 3_600_000];
    let limits = [0, 1, 5, 20, 1_000, 1_000_000, 1_000_000_000_000];
    let mut now = T0;
    for step in 0..500 {
        now += rng.below(9_000);
        // Keep 5 s before every window's end: see the file header.
        while windows.iter().any(|&w| w - now % w < 5_000) {
            now += 1 + rng.below(500);
        }
        let n = 1 + rng.below(4) as usize;
        let charges: Vec<Charge> = (0..n)
            .map(|_| {
                let len = windows[rng.below(windows.len() as u64) as usize];
                let algorithm = if rng.below(4) == 0 {
                    Algorithm::Fixed
                } else {
                    Algorithm::Sliding
                };
                let limit = limits[rng.below(limits.len() as u64) as usize];
                let hits = rng.below(limit / 3 + 3);
                let mode = match rng.below(6) {
                    0 => Mode::Shadow,
                    1 | 2 => Mode::Quota,
                    _ => Mode::Enforce,
                };
                Charge {
                    key: format!("k{}|{len}|{algorithm:?}", rng.below(3)),
                    window: Window::new(len, algorithm),
                    limit,
                    hits,
                    mode,
                }
            })
            .collect();
        let m = run(&memory, now, &charges).await;
        let r = run(redis, now, &charges).await;
        assert_eq!(m, r, "step {step} at {now}: {charges:?}");
    }
}

struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

// ---------------------------------------------------------------------------------------------
// A disposable Redis Cluster

const REDIS_CLI: &str = "/usr/bin/redis-cli";

/// Three masters on loopback ports (no replicas), built with `redis-cli --cluster create`.
/// Every node is killed by PID on drop and the config directory removed. A watchdog does the
/// same once the test process is gone however it ended (its stdin, a pipe from this process,
/// closes), so no node outlives the tests even if the cluster is never dropped.
struct RedisCluster {
    dir: PathBuf,
    nodes: Vec<RedisServer>,
    /// `(first slot, last slot, port of the master)`.
    ranges: Vec<(u16, u16, u16)>,
    watchdog: Option<Child>,
}

/// The cluster of every test but the failure one (each test uses keys of its own). Started by
/// the first test that needs it and kept until the test binary exits, when its watchdog kills
/// it: starting a cluster takes two seconds (a new master waits that long before it serves),
/// too long to pay per test.
fn shared_cluster() -> &'static RedisCluster {
    static SHARED: OnceLock<RedisCluster> = OnceLock::new();
    SHARED.get_or_init(RedisCluster::start)
}

impl RedisCluster {
    fn start() -> Self {
        for _ in 0..5 {
            if let Some(cluster) = Self::try_start() {
                return cluster;
            }
        }
        panic!("could not start a Redis Cluster");
    }

    fn try_start() -> Option<Self> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "rls-cluster-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut ports = Vec::new();
        while ports.len() < 6 {
            let p = free_port();
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
        let mut cluster = RedisCluster {
            nodes: ports[..3]
                .iter()
                .zip(&ports[3..])
                .map(|(&port, &bus)| RedisServer {
                    port,
                    child: None,
                    args: [
                        "--cluster-enabled",
                        "yes",
                        "--cluster-port",
                        &bus.to_string(),
                        "--cluster-config-file",
                        &dir.join(format!("nodes-{port}.conf")).to_string_lossy(),
                    ]
                    .map(String::from)
                    .to_vec(),
                })
                .collect(),
            dir,
            ranges: Vec::new(),
            watchdog: None,
        };
        for node in &mut cluster.nodes {
            if !node.spawn() {
                return None;
            }
        }
        let pids = cluster
            .nodes
            .iter()
            .map(|n| n.child.as_ref().expect("running").id().to_string());
        cluster.watchdog = Some(
            Command::new("sh")
                .args(["-c", r#"read _; d=$1; shift; kill "$@"; rm -rf "$d""#, "sh"])
                .arg(&cluster.dir)
                .args(pids)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("sh is installed"),
        );
        let mut create = Command::new(REDIS_CLI);
        create.args(["--cluster", "create"]);
        create.args(
            cluster
                .nodes
                .iter()
                .map(|n| format!("127.0.0.1:{}", n.port)),
        );
        create.args(["--cluster-replicas", "0", "--cluster-yes"]);
        if !run_bounded(create, Duration::from_secs(20)) {
            return None;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cluster.nodes.iter().all(cluster_ok) {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        cluster.ranges = slot_ranges(&cluster.nodes[0]);
        Some(cluster)
    }

    fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The port of the master that holds `slot`.
    fn owner(&self, slot: u16) -> u16 {
        self.ranges
            .iter()
            .find(|(first, last, _)| (*first..=*last).contains(&slot))
            .expect("every slot is covered")
            .2
    }

    /// A synchronous cluster connection, for looking at keys.
    fn connection(&self) -> ::redis::cluster::ClusterConnection {
        ::redis::cluster::ClusterClient::new(self.urls().split(',').collect::<Vec<_>>())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// A tenant named `<prefix><n>` whose counters live on the master at `port`.
    fn tenant_on(&self, port: u16, prefix: &str) -> String {
        (0..)
            .map(|n| format!("{prefix}{n}"))
            .find(|t| self.owner(RedisClusterStore::slot(&tenant(t, 1, 0), T0)) == port)
            .unwrap()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some(mut watchdog) = self.watchdog.take() {
            // Closing its stdin lets it finish (its PIDs are already gone).
            drop(watchdog.stdin.take());
            let _ = watchdog.wait();
        }
    }
}

/// Runs `cmd` to completion, killing it after `within`; true if it succeeded.
fn run_bounded(mut cmd: Command, within: Duration) -> bool {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-cli is installed");
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.success();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn cluster_ok(node: &RedisServer) -> bool {
    ::redis::cmd("CLUSTER")
        .arg("INFO")
        .query::<String>(&mut node.connection())
        .is_ok_and(|info| info.contains("cluster_state:ok"))
}

fn slot_ranges(node: &RedisServer) -> Vec<(u16, u16, u16)> {
    let slots: Value = ::redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query(&mut node.connection())
        .unwrap();
    let int = |v: &Value| match v {
        Value::Int(i) => u16::try_from(*i).unwrap(),
        other => panic!("CLUSTER SLOTS: {other:?}"),
    };
    let Value::Array(ranges) = slots else {
        panic!("CLUSTER SLOTS: {slots:?}")
    };
    ranges
        .iter()
        .map(|r| match r {
            Value::Array(r) => match &r[2] {
                Value::Array(master) => (int(&r[0]), int(&r[1]), int(&master[1])),
                other => panic!("CLUSTER SLOTS: {other:?}"),
            },
            other => panic!("CLUSTER SLOTS: {other:?}"),
        })
        .collect()
}

/// The request counter of a tenant (`llm|tenant=<t>|60000`), as the limiter builds it.
fn tenant(t: &str, limit: u64, hits: u64) -> Charge {
    Charge {
        key: counter_key("llm", [("tenant", t)], MIN),
        ..sliding("", limit, hits)
    }
}

/// A counter of the tenant under a second entry, e.g. `llm|tenant=<t>|kind=tokens|60000`.
fn tenant_sub(t: &str, k: &str, v: &str, limit: u64, hits: u64) -> Charge {
    Charge {
        key: counter_key("llm", [("tenant", t), (k, v)], MIN),
        ..sliding("", limit, hits)
    }
}

/// The current-window value of `c` in the cluster, read without the store.
fn raw_count(con: &mut ::redis::cluster::ClusterConnection, c: &Charge, now: u64) -> Option<u64> {
    ::redis::cmd("GET")
        .arg(RedisClusterStore::counter_key(c, c.window.index(now)))
        .query(con)
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Redis Cluster only

mod cluster_only {
    use super::*;

    fn unique(name: &str) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        format!(
            "{name}-{}.{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tenants_counters_share_one_slot() {
        let cluster = shared_cluster();
        let store = RedisClusterStore::new(&cluster.urls(), TIMEOUT).unwrap();
        let t = unique("acme");
        // Requests, tokens and a model of one tenant, and a value that tries to move the tag.
        let request = [
            tenant(&t, 100, 1),
            tenant_sub(&t, "kind", "tokens", 1_000, 250),
            tenant_sub(&t, "model", "gpt-4o", 10, 1),
            tenant_sub(&t, "model", "}{x}|y", 10, 1),
        ];
        let now = T0 + 1_000;
        let out = run(&store, now, &request).await;
        assert!(out.admitted);

        let mut node = cluster.nodes[0].connection();
        let keyslot = |con: &mut ::redis::Connection, key: &str| -> u16 {
            ::redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(key)
                .query(con)
                .unwrap()
        };
        let index = now / MIN;
        let slot = keyslot(
            &mut node,
            &RedisClusterStore::counter_key(&request[0], index),
        );
        let mut raw = cluster.connection();
        for c in &request {
            for key in [
                RedisClusterStore::counter_key(c, index),
                RedisClusterStore::counter_key(c, index - 1),
            ] {
                assert!(
                    key.starts_with(&format!("rls:{{llm|tenant={t}}}|")),
                    "{key}"
                );
                assert_eq!(keyslot(&mut node, &key), slot, "{key}");
                assert_eq!(key_slot(&key), slot, "{key}");
            }
            assert_eq!(raw_count(&mut raw, c, now), Some(c.hits), "{}", c.key);
        }
        // Another tenant is (almost certainly) elsewhere; the slot function agrees with Redis
        // on arbitrary keys.
        let other = RedisClusterStore::counter_key(&tenant("someone-else", 1, 1), index);
        assert_ne!(keyslot(&mut node, &other), slot);
        for n in 0..200 {
            let key = format!("k{n}{{{}}}x", n * 7919);
            assert_eq!(key_slot(&key), keyslot(&mut node, &key), "{key}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rejected_multi_slot_request_charges_nothing_anywhere() {
        let cluster = shared_cluster();
        let store = RedisClusterStore::new(&cluster.urls(), TIMEOUT).unwrap();
        let ports: Vec<u16> = cluster.nodes.iter().map(|n| n.port).collect();
        let prefix = unique("multi");
        let [a, b, c] = [0, 1, 2].map(|i| cluster.tenant_on(ports[i], &format!("{prefix}-{i}-")));
        let now = T0 + 2_000;
        let mut raw = cluster.connection();

        // A counter that already holds hits, so a refund has to subtract, not delete.
        assert!(run(&store, now, &[tenant(&a, 100, 10)]).await.admitted);

        // Fits on the masters of a and b, over on c's: nothing may stay charged.
        let request = [
            tenant(&a, 100, 5),
            tenant_sub(&b, "kind", "tokens", 100, 5),
            mode(tenant_sub(&b, "model", "m", 1, 5), Mode::Shadow),
            mode(tenant_sub(&a, "model", "m", 100, 5), Mode::Quota),
            tenant(&c, 3, 5),
        ];
        for _ in 0..3 {
            let out = run(&store, now, &request).await;
            assert!(!out.admitted);
            assert_eq!(out.charged, vec![false; 5]);
            assert_eq!(out.before[0], counts(0, 10));
        }
        assert_eq!(raw_count(&mut raw, &request[0], now), Some(10));
        for ch in &request[1..] {
            assert_eq!(raw_count(&mut raw, ch, now), None, "{} was charged", ch.key);
        }

        // Without the over-limit counter the same request charges everything, in every slot.
        let out = run(&store, now, &request[..4]).await;
        assert!(out.admitted);
        assert_eq!(out.charged, vec![true; 4]);
        assert_eq!(raw_count(&mut raw, &request[0], now), Some(15));
        for ch in &request[1..4] {
            assert_eq!(raw_count(&mut raw, ch, now), Some(5), "{}", ch.key);
        }

        // Quota limits in different slots: one that fits admits the request, and only it is
        // charged; when all are over, nothing is.
        let q1 = |hits| mode(tenant_sub(&b, "quota", "1", 10, hits), Mode::Quota);
        let q2 = |hits| mode(tenant_sub(&c, "quota", "2", 3, hits), Mode::Quota);
        let out = run(&store, now, &[q1(5), q2(5)]).await;
        assert!(out.admitted);
        assert_eq!(out.charged, vec![true, false]);
        let out = run(&store, now, &[q1(6), q2(6), tenant(&a, 1_000, 1)]).await;
        assert!(!out.admitted);
        assert_eq!(raw_count(&mut raw, &q1(0), now), Some(5));
        assert_eq!(raw_count(&mut raw, &tenant(&a, 0, 0), now), Some(15));

        // Concurrent requests over two slots: exactly the limit of the tighter one is admitted,
        // and every rejected request's hits on the other one are refunded exactly.
        let (hot, wide) = (unique("hot"), unique("wide"));
        let store = Arc::new(store);
        let request = [tenant(&hot, 100, 1), tenant(&wide, 1_000, 1)];
        let admitted = admitted_of(std::slice::from_ref(&store), 200, now, &request).await;
        assert_eq!(admitted, 100);
        assert_ne!(
            RedisClusterStore::slot(&tenant(&hot, 0, 0), now),
            RedisClusterStore::slot(&tenant(&wide, 0, 0), now),
            "pick other names: both in one slot"
        );
        assert_eq!(raw_count(&mut raw, &tenant(&hot, 0, 0), now), Some(100));
        assert_eq!(raw_count(&mut raw, &tenant(&wide, 0, 0), now), Some(100));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_stores_share_one_limit() {
        let cluster = shared_cluster();
        let a = RedisClusterStore::new(&cluster.urls(), TIMEOUT).unwrap();
        // Any one seed is enough to find the whole cluster.
        let one_seed = format!("redis://127.0.0.1:{}", cluster.nodes[2].port);
        let b = RedisClusterStore::new(&one_seed, TIMEOUT).unwrap();
        let t = unique("shared");
        let c = |hits| tenant(&t, 100, hits);
        assert!(run(&a, T0 + 1_000, &[c(60)]).await.admitted);
        let out = run(&b, T0 + 1_000, &[c(41)]).await;
        assert!(!out.admitted, "b sees a's hits");
        assert_eq!(out.before, vec![counts(0, 60)]);
        assert!(run(&b, T0 + 1_000, &[c(40)]).await.admitted);
        assert!(!run(&a, T0 + 1_000, &[c(1)]).await.admitted);

        let (a, b) = (Arc::new(a), Arc::new(b));
        let both = unique("both");
        let admitted = admitted_of(&[a, b], 200, T0 + 2_000, &[tenant(&both, 100, 1)]).await;
        assert_eq!(admitted, 100);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_and_cluster_agree_on_random_traffic() {
        let cluster = shared_cluster();
        let store = RedisClusterStore::new(&cluster.urls(), TIMEOUT).unwrap();
        agrees_with_memory(&Namespaced::new(store)).await;
    }

    /// No node answers (the service may start before the cluster): calls fail within the
    /// timeout, then fast.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_cluster_fails_within_the_timeout() {
        let urls = format!(
            "redis://127.0.0.1:{},redis://127.0.0.1:{}",
            free_port(),
            free_port()
        );
        let timeout = Duration::from_millis(200);
        let store = RedisClusterStore::new(&urls, timeout).unwrap();
        let c = [tenant("nobody", 10, 1)];
        for _ in 0..5 {
            let started = Instant::now();
            let e = assert_fails(&store, &c).await;
            assert!(e.is_transient(), "{e}");
            assert!(started.elapsed() < timeout + Duration::from_millis(250));
        }
        assert!(store.ping().await.is_err());
        assert!(RedisClusterStore::new("", timeout).is_err(), "no seed");
        assert!(RedisClusterStore::new("http://x", timeout).is_err());
    }

    /// One master dies: requests whose counters it holds fail within the timeout (and charge
    /// nothing elsewhere), requests on the other masters go on, and once it is back (empty,
    /// without the script) everything works again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_killed_node_fails_fast_and_recovers() {
        let mut cluster = RedisCluster::start();
        let timeout = Duration::from_millis(200);
        let store = RedisClusterStore::new(&cluster.urls(), timeout).unwrap();
        let (dead_port, alive_port) = (cluster.nodes[1].port, cluster.nodes[0].port);
        let dead = [tenant(&cluster.tenant_on(dead_port, "dead-"), 100, 1)];
        let alive = [tenant(&cluster.tenant_on(alive_port, "alive-"), 100, 1)];
        assert!(run(&store, T0 + 1_000, &dead).await.admitted);
        assert!(run(&store, T0 + 1_000, &alive).await.admitted);
        store.ping().await.unwrap();

        cluster.nodes[1].kill();
        for _ in 0..5 {
            let started = Instant::now();
            let e = assert_fails(&store, &dead).await;
            assert!(e.is_transient(), "{e}");
            assert!(
                started.elapsed() < timeout + Duration::from_millis(250),
                "took {:?}: {e}",
                started.elapsed()
            );
            // The other masters still answer.
            assert!(run(&store, T0 + 1_000, &alive).await.admitted);
        }
        // A request over both fails, and its hits on the live master are taken back.
        let started = Instant::now();
        assert_fails(&store, &[alive[0].clone(), dead[0].clone()]).await;
        assert!(started.elapsed() < 2 * timeout + Duration::from_millis(250));
        assert_eq!(
            count(&store, T0 + 1_000, &alive[0]).await,
            counts(0, 6),
            "1 + 5, the failed request refunded"
        );
        assert!(store.ping().await.is_err());

        cluster.nodes[1].restart();
        let out = until_ok(&store, &dead, Duration::from_secs(8)).await;
        assert!(out.admitted);
        assert_eq!(
            out.before,
            vec![counts(0, 0)],
            "a restarted master is empty"
        );
        store.ping().await.unwrap();
        assert!(run(&store, T0 + 1_000, &alive).await.admitted);
    }
}
