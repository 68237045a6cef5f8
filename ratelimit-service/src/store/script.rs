//! The Lua scripts of the Redis stores (`check.lua`, `refund.lua`, `correct.lua`,
//! `health.lua`): their arguments, how they are sent, and their replies.
//!
//! A script is sent by hash (`EVALSHA`); when Redis answers `NOSCRIPT` (after a restart, a
//! `SCRIPT FLUSH`, or on a cluster node that never ran it), the same call is sent once more with
//! the source (`EVAL`), which also caches it. That is safe because a `NOSCRIPT` reply wrote
//! nothing, and unlike `SCRIPT LOAD` (which a cluster client sends to every node) `EVAL` is
//! routed by its first key like `EVALSHA`, so a node that is down elsewhere in the cluster
//! cannot stop it.

use std::sync::LazyLock;

use ::redis::aio::ConnectionLike;
use ::redis::{Cmd, ErrorKind, RedisError, Script, ServerErrorKind, Value};

use super::{Charge, Correction, Counts, Mode, Outcome, REPORT_ID_TTL_MS, StoreError};
use crate::health::{Circuit, Outcomes, Policy};
use crate::keys::{RedisLayout, health_key, redis_key, redis_previous_key, report_key};
use crate::window::Algorithm;

/// A script and its SHA-1.
pub(super) struct Lua {
    source: &'static str,
    hash: String,
}

/// Layout of its arguments and reply: see the header of the file.
pub(super) static CHECK: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("check.lua")));
/// Layout of its arguments: see the header of the file.
pub(super) static REFUND: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("refund.lua")));

/// Layout of its arguments and reply: see the header of the file.
pub(super) static CORRECT: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("correct.lua")));

/// Layout of its arguments and reply: see the header of the file.
pub(super) static HEALTH: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("health.lua")));

/// The keys and arguments of one script call.
#[derive(Debug, Default)]
pub(super) struct Call {
    keys: Vec<String>,
    args: Vec<String>,
}

impl Lua {
    fn new(source: &'static str) -> Lua {
        Lua {
            source,
            hash: Script::new(source).get_hash().to_string(),
        }
    }

    /// Runs the script with `call`'s keys and arguments.
    pub(super) async fn run<C: ConnectionLike>(
        &self,
        conn: &mut C,
        call: &Call,
    ) -> Result<Value, RedisError> {
        match call.cmd("EVALSHA", &self.hash).query_async(conn).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                call.cmd("EVAL", self.source).query_async(conn).await
            }
            other => other,
        }
    }
}

impl Call {
    fn cmd(&self, verb: &str, script: &str) -> Cmd {
        let mut cmd = ::redis::cmd(verb);
        cmd.arg(script).arg(self.keys.len());
        for k in &self.keys {
            cmd.arg(k);
        }
        for a in &self.args {
            cmd.arg(a);
        }
        cmd
    }

    pub(super) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The `check.lua` call for `charges` at `now_ms`. With `split_quota`, quota-mode charges are
/// sent as `quota-split`: checked and charged if they fit, without the all-over verdict (the
/// cluster store takes it over every slot of the request).
pub(super) fn check_call<'a>(
    layout: RedisLayout,
    now_ms: u64,
    charges: impl IntoIterator<Item = &'a Charge>,
    split_quota: bool,
) -> Call {
    let mut call = Call::default();
    // Two keys and seven arguments per charge, in the order `check.lua` reads them.
    for c in charges {
        let w = c.window;
        let index = w.index(now_ms);
        call.keys.push(redis_key(layout, &c.key, index));
        call.keys.push(redis_previous_key(layout, &c.key, index));
        let mode = match c.mode {
            Mode::Enforce => "enforce",
            Mode::Shadow => "shadow",
            Mode::Quota if split_quota => "quota-split",
            Mode::Quota => "quota",
        };
        let algorithm = match w.algorithm {
            Algorithm::Sliding => "sliding",
            Algorithm::Fixed => "fixed",
        };
        call.args.extend([
            c.limit.to_string(),
            c.hits.to_string(),
            w.len_ms.to_string(),
            algorithm.to_string(),
            mode.to_string(),
            w.elapsed(now_ms).to_string(),
            w.ttl_ms(now_ms).to_string(),
        ]);
    }
    call
}

/// The `refund.lua` call that takes back `charges`' hits from their current-window counters.
pub(super) fn refund_call<'a>(
    layout: RedisLayout,
    now_ms: u64,
    charges: impl IntoIterator<Item = &'a Charge>,
) -> Call {
    let mut call = Call::default();
    for c in charges {
        if c.hits > 0 {
            call.keys
                .push(redis_key(layout, &c.key, c.window.index(now_ms)));
            call.args.push(c.hits.to_string());
        }
    }
    call
}

/// The `correct.lua` call for report `id`'s live `corrections` at `now_ms`.
pub(super) fn correct_call<'a>(
    layout: RedisLayout,
    now_ms: u64,
    id: &str,
    corrections: impl IntoIterator<Item = &'a Correction>,
) -> Call {
    let live: Vec<&Correction> = corrections
        .into_iter()
        .filter(|c| c.live(now_ms) && c.delta != 0)
        .collect();
    let mut call = Call::default();
    call.keys
        .push(report_key(layout, live.first().map(|c| c.key.as_str()), id));
    call.args.push(REPORT_ID_TTL_MS.to_string());
    for c in live {
        call.keys.push(redis_key(layout, &c.key, c.index));
        call.args.push(c.delta.to_string());
        call.args.push(c.ttl_ms(now_ms).to_string());
    }
    call
}

/// The `health.lua` call that applies `outcomes` at `now_ms` under `policy`.
pub(super) fn health_call(now_ms: u64, policy: &Policy, outcomes: &[(String, Outcomes)]) -> Call {
    let mut call = Call::default();
    call.args.extend([
        now_ms.to_string(),
        policy.failures_to_open.to_string(),
        policy.open_for_ms.to_string(),
        policy.keep_ms().to_string(),
    ]);
    for (name, o) in outcomes {
        call.keys.push(health_key(name));
        call.args
            .extend([u8::from(o.reset).to_string(), o.failures.to_string()]);
    }
    call
}

/// Parses the health script's reply: per deployment, whether the call opened its circuit.
pub(super) fn parse_health_reply(reply: Value, n: usize) -> Result<Vec<bool>, StoreError> {
    let bad = |what: String| StoreError::Protocol(format!("health script: {what}"));
    let Value::Array(items) = reply else {
        return Err(bad(format!("expected an array, got {reply:?}")));
    };
    if items.len() != n {
        return Err(bad(format!("expected {n} items, got {}", items.len())));
    }
    items
        .iter()
        .map(|v| match v {
            Value::Int(0) => Ok(false),
            Value::Int(1) => Ok(true),
            other => Err(bad(format!("expected 0 or 1, got {other:?}"))),
        })
        .collect()
}

/// The `MGET` of `deployments`' circuits, all in the `{health}` slot.
pub(super) fn circuits_cmd(deployments: &[String]) -> Cmd {
    let mut cmd = ::redis::cmd("MGET");
    for d in deployments {
        cmd.arg(health_key(d));
    }
    cmd
}

/// Parses the `MGET` reply: a missing or unreadable circuit is a closed one.
pub(super) fn parse_circuits(values: Vec<Option<String>>) -> Vec<Circuit> {
    values
        .into_iter()
        .map(|v| v.and_then(|s| Circuit::decode(&s)).unwrap_or_default())
        .collect()
}

/// Parses the correct script's reply: 1 applied, 0 duplicate.
pub(super) fn parse_correct_reply(reply: Value) -> Result<bool, StoreError> {
    match reply {
        Value::Int(1) => Ok(true),
        Value::Int(0) => Ok(false),
        other => Err(StoreError::Protocol(format!(
            "correct script: expected 0 or 1, got {other:?}"
        ))),
    }
}

/// Parses the check script's reply: `[admitted, prev_1, curr_1, charged_1, ...]`.
pub(super) fn parse_reply(reply: Value, n: usize) -> Result<Outcome, StoreError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::Window;

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

    #[test]
    fn call_layout() {
        let c = Charge {
            key: "d|t=a|1000".into(),
            window: Window::new(1_000, Algorithm::Fixed),
            limit: 5,
            hits: 2,
            mode: Mode::Quota,
        };
        let call = check_call(RedisLayout::HashTagged, 10_250, [&c], true);
        assert_eq!(call.keys, ["rls:{d|t=a}|1000:10", "rls:{d|t=a}|1000:9"]);
        assert_eq!(
            call.args,
            ["5", "2", "1000", "fixed", "quota-split", "250", "750"]
        );
        assert_eq!(
            check_call(RedisLayout::Plain, 10_250, [&c], false).args[4],
            "quota"
        );
        let zero = Charge {
            hits: 0,
            ..c.clone()
        };
        let fix = |index, delta| Correction {
            key: "d|t=a|1000".into(),
            window: Window::new(1_000, Algorithm::Fixed),
            index,
            delta,
        };
        let call = correct_call(
            RedisLayout::HashTagged,
            10_250,
            "r1",
            [&fix(10, -7), &fix(9, 3), &fix(10, 0)],
        );
        assert_eq!(call.keys, ["rls:{d|t=a}|report=r1", "rls:{d|t=a}|1000:10"]);
        assert_eq!(call.args, ["300000", "-7", "750"]);
        let none = correct_call(RedisLayout::HashTagged, 10_250, "r2", []);
        assert_eq!(none.keys, ["rls:{report=r2}"]);
        let refund = refund_call(RedisLayout::HashTagged, 10_250, [&c, &zero]);
        assert_eq!(refund.keys, ["rls:{d|t=a}|1000:10"]);
        assert_eq!(refund.args, ["2"]);
    }
}
