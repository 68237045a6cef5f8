//! The limiter end to end in process: config → plan → memory store → response, at exact instants.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use ratelimit_service::config::{Config, compile};
use ratelimit_service::limiter::{InvalidRequest, check, plan};
use ratelimit_service::store::memory::MemoryStore;
use rls_proto::rate_limit_descriptor::{Entry, RateLimitOverride};
use rls_proto::rate_limit_response::Code;
use rls_proto::{RateLimitDescriptor, RateLimitRequest, RateLimitResponse, RateLimitUnit};

const T0: u64 = 1_700_000_040_000; // a whole minute

const CONFIG: &str = r#"
domain: llm
descriptors:
  - key: tenant
    rate_limit: {unit: minute, requests_per_unit: 3, algorithm: fixed}
  - key: tenant_tokens
    rate_limit: {unit: minute, requests_per_unit: 1000, kind: tokens, algorithm: fixed}
  - key: tier
    value: free
    rate_limit: {unit: hour, requests_per_unit: 5, algorithm: fixed, name: free_tier}
  - key: tier
    value: vip
    rate_limit: {unlimited: true, replaces: [{name: free_tier}]}
  - key: shadow
    shadow_mode: true
    rate_limit: {unit: minute, requests_per_unit: 1, algorithm: fixed}
  - key: sliding
    rate_limit: {unit: minute, requests_per_unit: 10}
"#;

fn config() -> Config {
    compile(&vec![(
        PathBuf::from("test.yaml"),
        CONFIG.as_bytes().to_vec(),
    )])
    .unwrap()
    .config
}

fn desc(entries: &[(&str, &str)], hits: Option<u64>) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(k, v)| Entry {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect(),
        limit: None,
        hits_addend: hits,
    }
}

fn req(descriptors: Vec<RateLimitDescriptor>, hits: u32) -> RateLimitRequest {
    RateLimitRequest {
        domain: "llm".into(),
        descriptors,
        hits_addend: hits,
    }
}

fn header<'a>(r: &'a RateLimitResponse, name: &str) -> Option<&'a str> {
    r.response_headers_to_add
        .iter()
        .find(|h| h.key == name)
        .map(|h| h.value.as_str())
}

async fn run(store: &MemoryStore, c: &Config, r: &RateLimitRequest, now: u64) -> RateLimitResponse {
    check(c, store, r, now).await.unwrap().0
}

#[tokio::test]
async fn admits_exactly_up_to_the_limit_then_explains_the_429() {
    let (s, c) = (MemoryStore::new(), config());
    let r = req(vec![desc(&[("tenant", "acme")], None)], 0);
    for remaining in [2, 1, 0] {
        let resp = run(&s, &c, &r, T0 + 1000).await;
        assert_eq!(resp.overall_code, Code::Ok as i32);
        assert_eq!(resp.statuses[0].limit_remaining, remaining);
        assert_eq!(header(&resp, "x-ratelimit-limit-requests"), Some("3"));
        assert_eq!(
            header(&resp, "x-ratelimit-remaining-requests"),
            Some(remaining.to_string().as_str())
        );
        assert_eq!(header(&resp, "x-ratelimit-reset-requests"), Some("59s"));
        assert!(header(&resp, "retry-after").is_none());
    }
    let resp = run(&s, &c, &r, T0 + 1000).await;
    assert_eq!(resp.overall_code, Code::OverLimit as i32);
    assert_eq!(resp.statuses[0].code, Code::OverLimit as i32);
    assert_eq!(header(&resp, "retry-after"), Some("59"));
    assert_eq!(header(&resp, "x-ratelimit-remaining-requests"), Some("0"));
    assert_eq!(header(&resp, "content-type"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_slice(&resp.raw_body).unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(
        body["error"]["message"],
        "Rate limit reached for tenant=acme on requests per minute: Limit 3, Used 3, Requested 1. Please try again in 59s."
    );
    // The next window admits again.
    assert_eq!(
        run(&s, &c, &r, T0 + 60_000).await.overall_code,
        Code::Ok as i32
    );
}

#[tokio::test]
async fn hits_addend_request_level_and_per_descriptor() {
    let (s, c) = (MemoryStore::new(), config());
    // Request-level 400 tokens; per-descriptor 0 only checks.
    let r = req(
        vec![
            desc(&[("tenant_tokens", "a")], None),
            desc(&[("tenant", "a")], Some(0)),
        ],
        400,
    );
    let resp = run(&s, &c, &r, T0).await;
    assert_eq!(resp.statuses[0].limit_remaining, 600);
    assert_eq!(
        resp.statuses[1].limit_remaining, 3,
        "hits_addend 0 checks without charging"
    );
    assert_eq!(header(&resp, "x-ratelimit-remaining-tokens"), Some("600"));
    assert_eq!(header(&resp, "x-ratelimit-limit-tokens"), Some("1000"));
    // Per-descriptor 700 wins over the request's 1 and does not fit in the 600 left.
    let r = req(vec![desc(&[("tenant_tokens", "a")], Some(700))], 1);
    let resp = run(&s, &c, &r, T0).await;
    assert_eq!(resp.overall_code, Code::OverLimit as i32);
    let body: serde_json::Value = serde_json::from_slice(&resp.raw_body).unwrap();
    assert_eq!(body["error"]["type"], "tokens");
    // A request larger than the whole limit can never pass: no retry-after.
    let r = req(vec![desc(&[("tenant_tokens", "b")], Some(1001))], 1);
    let resp = run(&s, &c, &r, T0).await;
    assert_eq!(resp.overall_code, Code::OverLimit as i32);
    assert!(header(&resp, "retry-after").is_none());
    let body: serde_json::Value = serde_json::from_slice(&resp.raw_body).unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Request too large for tenant_tokens=b")
    );
}

#[tokio::test]
async fn a_rejected_request_charges_none_of_its_descriptors() {
    let (s, c) = (MemoryStore::new(), config());
    let tokens = |n| desc(&[("tenant_tokens", "x")], Some(n));
    let reqs = |n| req(vec![desc(&[("tenant", "x")], None), tokens(n)], 1);
    assert_eq!(
        run(&s, &c, &reqs(900), T0).await.overall_code,
        Code::Ok as i32
    );
    let resp = run(&s, &c, &reqs(200), T0).await; // tokens over: nothing charged
    assert_eq!(resp.overall_code, Code::OverLimit as i32);
    assert_eq!(resp.statuses[0].code, Code::Ok as i32);
    assert_eq!(
        resp.statuses[0].limit_remaining, 2,
        "request counter not charged"
    );
    let resp = run(&s, &c, &reqs(100), T0).await;
    assert_eq!(resp.overall_code, Code::Ok as i32);
    assert_eq!(resp.statuses[0].limit_remaining, 1);
    assert_eq!(
        resp.statuses[1].limit_remaining, 0,
        "exactly at the limit is admitted"
    );
}

#[tokio::test]
async fn shadow_mode_counts_but_never_rejects() {
    let (s, c) = (MemoryStore::new(), config());
    let r = req(vec![desc(&[("shadow", "s")], None)], 0);
    for _ in 0..3 {
        let resp = run(&s, &c, &r, T0).await;
        assert_eq!(resp.overall_code, Code::Ok as i32);
        assert_eq!(resp.statuses[0].code, Code::Ok as i32);
    }
    assert_eq!(run(&s, &c, &r, T0).await.statuses[0].limit_remaining, 0);
}

#[tokio::test]
async fn unlimited_and_unmatched_descriptors_are_allowed_and_replaces_drops_limits() {
    let (s, c) = (MemoryStore::new(), config());
    let r = req(vec![desc(&[("nothing", "here")], None)], 0);
    let resp = run(&s, &c, &r, T0).await;
    assert_eq!(resp.overall_code, Code::Ok as i32);
    assert!(resp.statuses[0].current_limit.is_none());
    assert!(resp.response_headers_to_add.is_empty());
    // Free tier: 5 per hour.
    let free = req(vec![desc(&[("tier", "free")], Some(5))], 0);
    assert_eq!(run(&s, &c, &free, T0).await.overall_code, Code::Ok as i32);
    assert_eq!(
        run(&s, &c, &free, T0).await.overall_code,
        Code::OverLimit as i32
    );
    // vip is unlimited and replaces the free_tier limit in the same request.
    let both = req(
        vec![
            desc(&[("tier", "free")], None),
            desc(&[("tier", "vip")], None),
        ],
        0,
    );
    let resp = run(&s, &c, &both, T0).await;
    assert_eq!(resp.overall_code, Code::Ok as i32);
    assert_eq!(resp.statuses[1].limit_remaining, u32::MAX);
}

#[tokio::test]
async fn sliding_window_carries_the_previous_window() {
    let (s, c) = (MemoryStore::new(), config());
    let r = req(vec![desc(&[("sliding", "z")], Some(10))], 0);
    assert_eq!(
        run(&s, &c, &r, T0 + 59_000).await.overall_code,
        Code::Ok as i32
    );
    // 15 s into the next window, 3/4 of the previous 10 still count: 7 used.
    let one = req(vec![desc(&[("sliding", "z")], Some(3))], 0);
    let resp = run(&s, &c, &one, T0 + 75_000).await;
    assert_eq!(resp.overall_code, Code::Ok as i32);
    assert_eq!(resp.statuses[0].limit_remaining, 0);
    let resp = run(
        &s,
        &c,
        &req(vec![desc(&[("sliding", "z")], Some(1))], 0),
        T0 + 75_000,
    )
    .await;
    assert_eq!(resp.overall_code, Code::OverLimit as i32);
    // floor(10 * (60000 - t) / 60000) + 3 + 1 <= 10 first holds at t = 18_001: wait 3_001 ms.
    assert_eq!(header(&resp, "x-ratelimit-reset-requests"), Some("3.001s"));
    assert_eq!(header(&resp, "retry-after"), Some("4"));
}

#[tokio::test]
async fn overrides_and_duplicate_descriptors() {
    let (s, c) = (MemoryStore::new(), config());
    let mut d = desc(&[("anything", "v")], None);
    d.limit = Some(RateLimitOverride {
        requests_per_unit: 2,
        unit: RateLimitUnit::Second as i32,
    });
    let r = req(vec![d], 0);
    assert_eq!(run(&s, &c, &r, T0).await.statuses[0].limit_remaining, 1);
    assert_eq!(run(&s, &c, &r, T0).await.overall_code, Code::Ok as i32);
    assert_eq!(
        run(&s, &c, &r, T0).await.overall_code,
        Code::OverLimit as i32
    );
    // The same counter twice in one request is charged twice, atomically.
    let twice = req(
        vec![
            desc(&[("tenant", "dup")], None),
            desc(&[("tenant", "dup")], None),
        ],
        0,
    );
    assert_eq!(run(&s, &c, &twice, T0).await.statuses[0].limit_remaining, 1);
    assert_eq!(
        run(&s, &c, &twice, T0).await.overall_code,
        Code::OverLimit as i32
    );
}

#[test]
fn empty_domain_or_descriptors_are_invalid() {
    let c = config();
    let mut r = req(vec![desc(&[("tenant", "a")], None)], 0);
    r.domain.clear();
    assert_eq!(plan(&c, &r).unwrap_err(), InvalidRequest::EmptyDomain);
    assert_eq!(
        plan(&c, &req(vec![], 0)).unwrap_err(),
        InvalidRequest::NoDescriptors
    );
}
