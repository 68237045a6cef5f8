//! One behaviour suite, run against every store: the in-memory store and the Redis store (each
//! Redis test starts its own `redis-server` on a free loopback port). The clock is injected, so
//! window logic needs no sleeps; only the Redis failure tests wait, for a real server to die
//! or come back.
//!
//! Instants are chosen at least a few seconds before their window's end: Redis expires keys in
//! real time by the TTL computed from the injected clock, so a fake instant near a window end
//! would let a key vanish under the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ratelimit_service::store::memory::MemoryStore;
use ratelimit_service::store::redis::{RETRY_EVERY, RedisStore};
use ratelimit_service::store::{Charge, Counts, Mode, Outcome, Store, StoreError};
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
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let s = s.clone();
                tokio::spawn(async move {
                    s.check_and_charge(T0 + 1_000, &[sliding("hot", 100, 1)])
                        .await
                        .unwrap()
                        .admitted
                })
            })
            .collect();
        let mut admitted = 0;
        for t in tasks {
            admitted += usize::from(t.await.unwrap());
        }
        assert_eq!(admitted, 100);
        assert_eq!(
            count(&*s, T0 + 1_000, &sliding("hot", 100, 0)).await,
            counts(0, 100)
        );
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
        }
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

suite!(memory, memory_store);
suite!(redis, redis_store);

// ---------------------------------------------------------------------------------------------
// A disposable redis-server

const REDIS_SERVER: &str = "/usr/bin/redis-server";

/// A `redis-server` child on a loopback port, killed (by PID) on drop.
struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free port.
    fn start() -> Self {
        for _ in 0..20 {
            let mut server = RedisServer {
                port: free_port(),
                child: None,
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
async fn until_ok(store: &RedisStore, charges: &[Charge], within: Duration) -> Outcome {
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
async fn assert_fails(store: &RedisStore, charges: &[Charge]) -> StoreError {
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
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let s = if i % 2 == 0 { a.clone() } else { b.clone() };
                tokio::spawn(async move {
                    s.check_and_charge(T0 + 2_000, &[sliding("both", 100, 1)])
                        .await
                        .unwrap()
                        .admitted
                })
            })
            .collect();
        let mut admitted = 0;
        for t in tasks {
            admitted += usize::from(t.await.unwrap());
        }
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
            let r = run(&redis, now, &charges).await;
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
}
