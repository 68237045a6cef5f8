//! From a `RateLimitRequest` to a `RateLimitResponse`: resolve each descriptor's limit
//! ([`plan`]), let the store check and charge them in one atomic step, then build statuses,
//! headers and the 429 body ([`respond`]). Both halves are pure; [`check`] joins them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rls_proto::rate_limit_response::{
    Code, DescriptorStatus, RateLimit, rate_limit::Unit as PbUnit,
};
use rls_proto::{HeaderValue, RateLimitRequest, RateLimitResponse, RateLimitUnit};

use crate::config::{Config, Kind, Limit, Unit};
use crate::headers::{Violation, format_count, format_reset, over_limit_body, retry_after_secs};
use crate::keys::counter_key;
use crate::store::{Charge, Counts, Mode, Outcome, Store, StoreError};
use crate::window::{Algorithm, Window};

/// Response header carrying when tokens or spend were reserved (Unix ms).
pub const RESERVED_AT_HEADER: &str = "x-llm-reserved-at";

/// A request the service must refuse outright (gRPC INVALID_ARGUMENT).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidRequest {
    #[error("rate limit domain must not be empty")]
    EmptyDomain,
    #[error("rate limit descriptor list must not be empty")]
    NoDescriptors,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Invalid(#[from] InvalidRequest),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What became of one descriptor of the request.
#[derive(Debug, Clone)]
pub enum Item {
    /// No configured limit matched: allowed, not counted.
    NoLimit,
    /// `unlimited: true` matched: allowed, not counted.
    Unlimited,
    Limited {
        limit: Arc<Limit>,
        /// Index into [`Plan::charges`] (descriptors with the same counter share one).
        charge: usize,
        hits: u64,
        /// Metric label of the matched limit.
        metric_key: String,
    },
}

#[derive(Debug)]
pub struct Plan {
    pub items: Vec<Item>,
    pub charges: Vec<Charge>,
}

/// Resolves every descriptor of `req` against `config`.
pub fn plan(config: &Config, req: &RateLimitRequest) -> Result<Plan, InvalidRequest> {
    if req.domain.is_empty() {
        return Err(InvalidRequest::EmptyDomain);
    }
    if req.descriptors.is_empty() {
        return Err(InvalidRequest::NoDescriptors);
    }
    // Request-level 0 means 1; a per-descriptor value (even 0) wins.
    let request_hits = u64::from(req.hits_addend.max(1));
    // Per descriptor: the limit, the values to count under, the metric label.
    type Resolved<'a> = Option<(Arc<Limit>, Vec<&'a str>, String)>;
    let mut resolved: Vec<Resolved<'_>> = Vec::with_capacity(req.descriptors.len());
    let mut items = Vec::with_capacity(req.descriptors.len());
    // `replaces` of any matched limit (unlimited ones included, as in the reference) drops the
    // named limits from this request.
    let mut replaced: Vec<String> = Vec::new();
    for d in &req.descriptors {
        let entries: Vec<(&str, &str)> = d
            .entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str()))
            .collect();
        let found = if let Some(o) = &d.limit {
            override_limit(&req.domain, &entries, o.requests_per_unit, o.unit)
                .map(|l| (l, entries.iter().map(|e| e.1).collect(), String::new()))
        } else if entries.is_empty() {
            None
        } else {
            config
                .lookup(&req.domain, &entries)
                .map(|m| (m.limit.clone(), m.values, m.metric_key))
        };
        items.push(match &found {
            None => Item::NoLimit,
            Some((l, _, _)) if l.unlimited => Item::Unlimited,
            Some(_) => Item::NoLimit, // replaced below once every descriptor is resolved
        });
        if let Some((l, _, _)) = &found {
            replaced.extend(l.replaces.iter().cloned());
        }
        resolved.push(found.filter(|(l, _, _)| !l.unlimited));
    }

    let mut charges: Vec<Charge> = Vec::new();
    let mut by_key: HashMap<String, usize> = HashMap::new();
    for ((d, found), item) in req.descriptors.iter().zip(resolved).zip(items.iter_mut()) {
        let Some((limit, values, metric_key)) = found else {
            continue;
        };
        if limit.name.as_ref().is_some_and(|n| replaced.contains(n)) {
            continue;
        }
        let hits = d.hits_addend.map_or(request_hits, |h| h);
        let key = counter_key(
            &req.domain,
            d.entries.iter().map(|e| e.key.as_str()).zip(values),
            limit.window.len_ms,
        );
        let charge = match by_key.get(&key) {
            // Two descriptors of one request on the same counter: one charge, summed hits,
            // the stricter limit.
            Some(&i) => {
                let c = &mut charges[i];
                c.hits = c.hits.saturating_add(hits);
                c.limit = c.limit.min(limit.per_unit);
                if limit.mode == Mode::Enforce {
                    c.mode = Mode::Enforce;
                }
                i
            }
            None => {
                by_key.insert(key.clone(), charges.len());
                charges.push(Charge {
                    key,
                    window: limit.window,
                    limit: limit.per_unit,
                    hits,
                    mode: limit.mode,
                });
                charges.len() - 1
            }
        };
        *item = Item::Limited {
            limit,
            charge,
            hits,
            metric_key,
        };
    }
    Ok(Plan { items, charges })
}

fn override_limit(
    domain: &str,
    entries: &[(&str, &str)],
    per_unit: u32,
    unit: i32,
) -> Option<Arc<Limit>> {
    let unit = match RateLimitUnit::try_from(unit).ok()? {
        RateLimitUnit::Second => Unit::Second,
        RateLimitUnit::Minute => Unit::Minute,
        RateLimitUnit::Hour => Unit::Hour,
        RateLimitUnit::Day => Unit::Day,
        RateLimitUnit::Week => Unit::Week,
        RateLimitUnit::Month => Unit::Month,
        RateLimitUnit::Year => Unit::Year,
        RateLimitUnit::Unknown => return None,
    };
    let mut path = domain.to_string();
    for (k, v) in entries {
        path.push('.');
        path.push_str(k);
        path.push('_');
        path.push_str(v);
    }
    Some(Arc::new(Limit {
        per_unit: u64::from(per_unit),
        unit,
        window: Window::new(unit.millis(), Algorithm::Sliding),
        kind: Kind::Requests,
        mode: Mode::Enforce,
        unlimited: false,
        name: None,
        replaces: Vec::new(),
        detailed_metric: false,
        path,
    }))
}

/// How one limited descriptor fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    OverLimit,
    /// Over, but in shadow mode: reported as OK.
    ShadowOverLimit,
}

/// Builds the response from the store's outcome. Also returns each descriptor's verdict
/// (`None` for descriptors without a counted limit) for metrics.
pub fn respond(
    plan: &Plan,
    req: &RateLimitRequest,
    outcome: &Outcome,
    now_ms: u64,
) -> (RateLimitResponse, Vec<Option<Verdict>>) {
    let mut statuses = Vec::with_capacity(plan.items.len());
    let mut verdicts = Vec::with_capacity(plan.items.len());
    // Per header family: (remaining, reset) of the tightest limit, and the worst violation.
    let mut tightest: [Option<(u64, u64, Duration)>; 3] = [None, None, None];
    let mut worst: Option<(Option<Duration>, Violation<'_>)> = None;
    let mut retry_after: Option<Duration> = None;
    let mut never_fits = false;

    for (item, descriptor) in plan.items.iter().zip(&req.descriptors) {
        let Item::Limited {
            limit,
            charge,
            hits,
            ..
        } = item
        else {
            statuses.push(DescriptorStatus {
                code: Code::Ok as i32,
                limit_remaining: if matches!(item, Item::Unlimited) {
                    u32::MAX
                } else {
                    0
                },
                ..Default::default()
            });
            verdicts.push(None);
            continue;
        };
        let c = &plan.charges[*charge];
        let before = outcome.before[*charge];
        let charged = outcome.charged[*charge];
        let est_before = c.window.estimate(before, now_ms);
        // Measured against this descriptor's own limit (a shared counter may carry a stricter one).
        let fits = est_before.saturating_add(c.hits) <= limit.per_unit;
        let after = if charged {
            Counts {
                prev: before.prev,
                curr: before.curr.saturating_add(c.hits),
            }
        } else {
            before
        };
        let est_after = c.window.estimate(after, now_ms);
        let remaining = limit.per_unit.saturating_sub(est_after);
        let verdict = match (fits, limit.mode) {
            (true, _) => Verdict::Ok,
            (false, Mode::Shadow) => Verdict::ShadowOverLimit,
            (false, _) => Verdict::OverLimit,
        };
        let reset = if verdict == Verdict::OverLimit {
            c.window.until_fits(before, *hits, limit.per_unit, now_ms)
        } else {
            Some(c.window.until_full(after, now_ms))
        };
        let reset_or_window = reset.unwrap_or(Duration::from_millis(c.window.len_ms));
        statuses.push(DescriptorStatus {
            code: if verdict == Verdict::OverLimit {
                Code::OverLimit
            } else {
                Code::Ok
            } as i32,
            current_limit: Some(RateLimit {
                name: limit.name.clone().unwrap_or_default(),
                requests_per_unit: u32::try_from(limit.per_unit).unwrap_or(u32::MAX),
                unit: pb_unit(limit.unit) as i32,
            }),
            limit_remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
            duration_until_reset: Some(prost_types::Duration {
                seconds: reset_or_window.as_secs() as i64,
                nanos: reset_or_window.subsec_nanos() as i32,
            }),
        });
        verdicts.push(Some(verdict));

        let family = limit.kind as usize;
        if verdict == Verdict::OverLimit && !outcome.admitted {
            match reset {
                Some(d) => retry_after = retry_after.max(Some(d)),
                None => never_fits = true,
            }
            let violation = Violation {
                kind: limit.kind,
                limit: limit.per_unit,
                used: est_before,
                requested: *hits,
                unit: limit.unit.name(),
                // Built only for rejections: `tenant=acme, model=gpt-4o`.
                subject: descriptor
                    .entries
                    .iter()
                    .map(|e| format!("{}={}", e.key, e.value))
                    .collect::<Vec<_>>()
                    .join(", "),
                retry: reset,
            };
            // The violation to explain: one that can never pass, else the longest wait.
            let worse = match &worst {
                None => true,
                Some((w, _)) => reset.is_none() || (w.is_some() && reset > *w),
            };
            if worse {
                worst = Some((reset, violation));
            }
            tightest[family] = Some((limit.per_unit, 0, reset_or_window));
        } else if !matches!(tightest[family], Some((_, 0, _))) || outcome.admitted {
            let candidate = (limit.per_unit, remaining, reset_or_window);
            let better = match tightest[family] {
                None => true,
                Some((_, r, d)) => remaining < r || (remaining == r && reset_or_window > d),
            };
            if better {
                tightest[family] = Some(candidate);
            }
        }
    }

    let mut headers = Vec::new();
    for (kind, t) in Kind::ALL.into_iter().zip(tightest) {
        if let Some((limit, remaining, reset)) = t {
            let k = kind.name();
            headers.push(header(
                format!("x-ratelimit-limit-{k}"),
                format_count(kind, limit),
            ));
            headers.push(header(
                format!("x-ratelimit-remaining-{k}"),
                format_count(kind, remaining),
            ));
            headers.push(header(
                format!("x-ratelimit-reset-{k}"),
                format_reset(reset),
            ));
        }
    }
    // The instant of a token or spend reservation, for the usage report that later corrects it
    // in the same window (the gateway's filter reads it and removes it from the response).
    let reserved = plan.items.iter().any(|i| {
        matches!(i, Item::Limited { limit, charge, hits, .. }
            if limit.kind.reconciled() && *hits > 0 && outcome.charged[*charge])
    });
    if outcome.admitted && reserved {
        headers.push(header(RESERVED_AT_HEADER.into(), now_ms.to_string()));
    }
    let mut raw_body = Vec::new();
    if !outcome.admitted {
        if let (Some(d), false) = (retry_after, never_fits) {
            headers.push(header(
                "retry-after".into(),
                retry_after_secs(d).to_string(),
            ));
        }
        headers.push(header("content-type".into(), "application/json".into()));
        if let Some((_, v)) = &worst {
            raw_body = over_limit_body(v).into_bytes();
        }
    }
    let response = RateLimitResponse {
        overall_code: if outcome.admitted {
            Code::Ok
        } else {
            Code::OverLimit
        } as i32,
        statuses,
        response_headers_to_add: headers,
        raw_body,
        ..Default::default()
    };
    (response, verdicts)
}

fn header(key: String, value: String) -> HeaderValue {
    HeaderValue {
        key,
        value,
        raw_value: Vec::new(),
    }
}

fn pb_unit(u: Unit) -> PbUnit {
    match u {
        Unit::Second => PbUnit::Second,
        Unit::Minute => PbUnit::Minute,
        Unit::Hour => PbUnit::Hour,
        Unit::Day => PbUnit::Day,
        Unit::Week => PbUnit::Week,
        Unit::Month => PbUnit::Month,
        Unit::Year => PbUnit::Year,
    }
}

/// Plans, checks and charges in the store, and responds.
pub async fn check<S: Store>(
    config: &Config,
    store: &S,
    req: &RateLimitRequest,
    now_ms: u64,
) -> Result<(RateLimitResponse, Plan, Vec<Option<Verdict>>), CheckError> {
    let plan = plan(config, req)?;
    let outcome = if plan.charges.is_empty() {
        Outcome {
            admitted: true,
            charged: Vec::new(),
            before: Vec::new(),
        }
    } else {
        store.check_and_charge(now_ms, &plan.charges).await?
    };
    let (response, verdicts) = respond(&plan, req, &outcome, now_ms);
    Ok((response, plan, verdicts))
}
