#!/usr/bin/env python3
"""Turns bench/out/results.jsonl (written by bench/run.sh) into the markdown table of `make bench`.

Usage: report.py RESULTS_JSONL OUTPUT_MD. Prints the table to stdout and writes it to OUTPUT_MD.
"""

import json
import sys

# What the README promises (a peer Rust RLS on one core did 50,000/s memory, 12,400/s Redis and
# 66 us of CPU per decision with Redis).
TARGET_MEMORY = 75_000
TARGET_REDIS = 25_000
TARGET_CPU_REDIS_US = 30.0


def fmt_int(x):
    return "–" if x is None else f"{x:,.0f}"


def fmt_us(x):
    if x is None:
        return "–"
    return f"{x / 1000:.2f} ms" if x >= 10_000 else f"{x:.0f} µs"


def fmt_ratio(x):
    return "–" if x is None else f"{x:.2f}×"


def ok(flag):
    return "✅" if flag else "❌"


def main(src, dst):
    recs = [json.loads(line) for line in open(src, encoding="utf-8") if line.strip()]
    meta = next((r for r in recs if r["kind"] == "meta"), {})
    hz = meta.get("hz", 100)
    by_id = {r["id"]: r for r in recs if "id" in r}
    sut, aux = meta.get("sut_core", 0), meta.get("aux_core", 1)

    def cpu_us(ticks, n):
        if ticks is None or not n:
            return None
        return ticks / hz * 1e6 / n

    warnings = []

    def busy(r, ours_on_sut):
        """Core utilisation, and the share of the SUT core used by processes other than ours."""
        s, a = r["sut"], r["aux"]
        su = s["busy"] / s["total"] if s["total"] else 0
        au = a["busy"] / a["total"] if a["total"] else 0
        # irq/softirq time is nobody's process time; on this box it is mostly our own loopback.
        other = max(0.0, (s["busy"] - s.get("irq", 0) - ours_on_sut) / s["total"]) if s["total"] else 0
        if other > 0.05:
            warnings.append(f"{r['id']}: {other * 100:.0f}% of core{sut} went to processes other "
                            "than the benchmark's (another build or test running?)")
        return (f"core{sut} {su * 100:.0f}% busy ({other * 100:.0f}% not ours), "
                f"core{aux} {au * 100:.0f}% busy")

    rows = []
    a1, a16 = by_id.get("a1"), by_id.get("a16")
    base_redis = a1["rps"] if a1 else None
    for r in (a1, a16):
        if not r:
            continue
        rows.append([
            r["id"],
            f"redis-benchmark EVALSHA check.lua, 3 charges, -c {r['clients']} -P {r['pipeline']}",
            f"redis core{sut}, benchmark core{aux}",
            fmt_int(r["rps"]),
            fmt_us(r["p50_ms"] * 1000),
            fmt_us(r["p99_ms"] * 1000),
            "–",
            "baseline" if r["pipeline"] == 1 else fmt_ratio(r["rps"] / base_redis if base_redis else None),
            f"Redis CPU {cpu_us(r['redis_ticks'], r['requests']):.1f} µs/script; "
            + busy(r, r["redis_ticks"]),
        ])

    verdicts = []
    for rid in ("b-memory", "b-memory-tonic", "b-memory-4conn", "b-redis"):
        r = by_id.get(rid)
        if not r:
            continue
        store = r["store"]
        ld = r["load"]
        client = ld.get("client", "tonic")
        rate = ld["decisions_per_s"]
        svc = cpu_us(r["svc_ticks"], ld["calls"])
        notes = [f"OK {ld['ok']:,}, OVER_LIMIT {ld['over_limit']:,}, errors {ld['errors']:,}"]
        if store == "redis":
            notes.append(f"Redis CPU {cpu_us(r['redis_ticks'], ld['calls']):.1f} µs/decision")
        if ld.get("client_cpu_us_per_call") is not None:
            notes.append(f"load generator CPU {ld['client_cpu_us_per_call']:.1f} µs/call")
        notes.append(busy(r, r["svc_ticks"]))
        if ld["errors"]:
            notes.append(f"first error: {ld['first_error']}")
        rows.append([
            rid,
            f"service, {store} store; rls-load ({client} client), "
            + (f"{ld['concurrency']} in flight, 1 HTTP/2 conn" if ld.get("connections", 1) == 1
               else f"{ld['connections']} HTTP/2 conns × {ld['concurrency']} in flight"),
            f"svc core{sut}; load{' + redis' if store == 'redis' else ''} core{aux}",
            fmt_int(rate),
            fmt_us(ld["p50_us"]),
            fmt_us(ld["p99_us"]),
            "–" if svc is None else f"{svc:.1f}",
            fmt_ratio(rate / base_redis if base_redis else None) + " of a1",
            "; ".join(notes),
        ])
        if rid == "b-memory":
            verdicts.append(f"memory ≥ {TARGET_MEMORY:,}/s: {fmt_int(rate)}/s {ok(rate >= TARGET_MEMORY)}")
        elif rid == "b-redis":
            verdicts.append(f"Redis ≥ {TARGET_REDIS:,}/s: {fmt_int(rate)}/s {ok(rate >= TARGET_REDIS)}")
            if svc is not None:
                verdicts.append(f"service CPU with Redis < {TARGET_CPU_REDIS_US:.0f} µs/decision: "
                                f"{svc:.1f} µs {ok(svc < TARGET_CPU_REDIS_US)}")

    for store in ("memory", "redis"):
        r = by_id.get(f"exact-{store}")
        if not r:
            continue
        ld = r["load"]
        good = ld.get("exact") is True
        note = f"admitted {ld['admitted']} of {ld['calls']:,} calls, limit {ld['expect_admitted']}"
        if ld.get("crossed_hour"):
            note += " (run crossed an hour boundary: two windows)"
        if ld["errors"]:
            note += f"; {ld['errors']} errors"
        rows.append([
            r["id"],
            f"exactness, {store} store: one counter, 100/hour fixed, {ld['concurrency']} in flight",
            f"svc core{sut}; load core{aux}",
            fmt_int(ld["decisions_per_s"]),
            fmt_us(ld["p50_us"]),
            fmt_us(ld["p99_us"]),
            "–",
            "PASS" if good else "**FAIL**",
            note,
        ])
        verdicts.append(f"exactness ({store}): admitted {ld['admitted']} of limit "
                        f"{ld['expect_admitted']} {ok(good)}")

    base_envoy = None
    for variant in ("plain", "memory", "redis"):
        r = by_id.get(f"c-{variant}")
        if not r:
            continue
        w = r["wrk"]
        rps = w["requests"] / (w["duration_us"] / 1e6)
        if variant == "plain":
            base_envoy = rps
        before, after = r["stats_before"], r["stats_after"]

        def delta(name):
            return after.get(name, 0) - before.get(name, 0)

        decided = delta("cluster.upstream.ratelimit.ok") + delta("cluster.upstream.ratelimit.over_limit")
        rls_err = delta("cluster.upstream.ratelimit.error")
        allowed = delta("cluster.upstream.ratelimit.failure_mode_allowed")
        notes = [f"Envoy CPU {cpu_us(r['envoy_ticks'], w['requests']):.1f} µs/req"]
        if variant != "plain":
            notes.append(f"RLS decisions {decided:,}, RLS errors {rls_err:,} (failure_mode_allowed {allowed:,})")
            notes.append(f"Envoy→RLS connections opened {after.get('cluster.ratelimit.upstream_cx_total', 0)}")
        if variant == "redis":
            notes.append(f"Redis CPU {cpu_us(r['redis_ticks'], decided or None) or 0:.1f} µs/decision")
        bad = w["non2xx"] + w["connect_errors"] + w["read_errors"] + w["write_errors"] + w["timeouts"]
        notes.append(f"non-2xx/socket errors {bad:,}")
        notes.append(busy(r, r["envoy_ticks"] + (r["svc_ticks"] or 0)))
        svc = cpu_us(r["svc_ticks"], decided) if r["svc_ticks"] is not None else None
        rows.append([
            r["id"],
            "Envoy --concurrency 1, direct_response upstream" + ("" if variant == "plain" else
                                                                 f" + ratelimit filter → service ({variant})"),
            f"envoy{'' if variant == 'plain' else ' + svc'} core{sut}; wrk{' + redis' if variant == 'redis' else ''} core{aux}",
            fmt_int(rps),
            fmt_us(w["p50_us"]),
            fmt_us(w["p99_us"]),
            "–" if svc is None else f"{svc:.1f}",
            "baseline" if variant == "plain" else fmt_ratio(rps / base_envoy if base_envoy else None) + " of c-plain",
            "; ".join(notes),
        ])

    # ------------------------------------------------------------ d, e, f: the gateway
    gmeta = next((r for r in recs if r["kind"] == "gw-meta"), {})
    prompts = {r["name"]: r for r in recs if r["kind"] == "prompt"}

    def gw_decisions(r):
        before, after = r["stats_before"], r["stats_after"]
        out = {}
        for k, v in after.items():
            m = k.split(".")
            if len(m) == 4 and m[0] == "cluster" and m[2] == "ratelimit":
                out[m[3]] = out.get(m[3], 0) + v - before.get(k, 0)
        return out

    def limited(r):
        """Whether the run went through Envoy's rate-limit filter and the service."""
        return r["variant"] not in ("plain", "norl") and "svc" in r["ticks"]

    def gw_notes(r, svc_name=True):
        ld, t = r["load"], r["ticks"]
        n = ld["requests"] + ld["errors"]
        notes = [f"Envoy CPU {cpu_us(t['envoy'], n):.0f} µs/req"]
        if limited(r):
            d = gw_decisions(r)
            notes.append(f"RLS decisions {d.get('ok', 0) + d.get('over_limit', 0):,} "
                         f"(over limit {d.get('over_limit', 0):,}), RLS errors {d.get('error', 0):,} "
                         f"(failure_mode_allowed {d.get('failure_mode_allowed', 0):,})")
        if t.get("redis") is not None and limited(r):
            notes.append(f"Redis CPU {cpu_us(t['redis'], n):.1f} µs/req")
        notes.append(f"mock CPU {cpu_us(t['mock'], n):.0f} µs/req")
        if ld.get("client_cpu_us_per_req") is not None:
            notes.append(f"gw-load CPU {ld['client_cpu_us_per_req']:.0f} µs/req")
        bad = ld["non2xx"] + ld["errors"]
        notes.append(f"non-2xx/errors {bad:,}" + (f" (first: {ld['first_error']})" if ld["first_error"] else ""))
        if ld["mode"] == "open" and ld.get("waited_for_conn"):
            notes.append(f"{ld['waited_for_conn']} waited for a free connection")
        # At a fixed 500/s the per-core tick counts of /proc/stat undercount short bursts; the
        # processes' own CPU times (precise) say how much of the SUT core the gateway used.
        # The service's CPU counts on the SUT core only where it ran there.
        ours = t["envoy"] + (0 if "svcaux" in r["variant"] else (t.get("svc") or 0))
        secs = ld["duration_s"] or 1
        if ld["mode"] == "open" or ld["connections"] == 1:
            notes.append(f"Envoy{' + svc' if t.get('svc') else ''} used {ours / hz / secs * 100:.0f}% of core{sut}")
        notes.append(busy(r, ours))
        if bad:
            warnings.append(f"{r['id']}: {bad} requests failed or were not 2xx")
        return notes

    def svc_us(r):
        t = r["ticks"]
        if not limited(r) or t.get("svc") is None:
            return "–"
        d = gw_decisions(r)
        x = cpu_us(t["svc"], d.get("ok", 0) + d.get("over_limit", 0))
        return "–" if x is None else f"{x:.1f}"

    def delta_us(a, b):
        x = a - b
        return f"{'+' if x >= 0 else '−'}{fmt_us(abs(x))}"

    def gw_row(r, what, pinning, svc, vs, notes):
        """A gateway-phase row: the load's rate and latencies from the record."""
        ld = r["load"]
        rows.append([r["id"], what, pinning, fmt_int(ld["rps"]), fmt_us(ld["p50_us"]),
                     fmt_us(ld["p99_us"]), svc, vs, "; ".join(notes)])

    rate = gmeta.get("rate", 500)
    for n in (100, 1000, 10000):
        base = by_id.get(f"d-plain-{n}")
        for variant in ("plain", "gateway"):
            r = by_id.get(f"d-{variant}-{n}")
            if not r:
                continue
            ld = r["load"]
            vs = "baseline"
            if variant == "gateway" and base:
                bl = base["load"]
                vs = (f"p50 {delta_us(ld['p50_us'], bl['p50_us'])}, p99 {delta_us(ld['p99_us'], bl['p99_us'])}"
                      f" vs d-plain-{n}")
                if n == 1000:
                    add = ld["p50_us"] - bl["p50_us"]
                    verdicts.append(f"gateway adds < 1 ms p50 (1,000-token prompts, {rate:,.0f}/s): "
                                    f"{delta_us(ld['p50_us'], bl['p50_us'])} {ok(add < 1000)}")
            notes = gw_notes(r)
            p = prompts.get(f"chat-{n}")
            if p and variant == "gateway":
                notes.insert(0, f"filter's estimate {p['estimate']:,} tokens (native: estimate "
                                f"{p['native_estimate_us']:.0f} µs, whole body step {p['native_body_step_us']:.0f} µs)")
            gw_row(r,
                   (f"plain Envoy → mock, {n:,}-token chat, open loop {ld['rate']:,.0f}/s" if variant == "plain" else
                    f"gateway (wasm + buffer + ratelimit → service, memory) → mock, {n:,}-token chat, "
                    f"open loop {ld['rate']:,.0f}/s"),
                   f"envoy{'' if variant == 'plain' else ' + svc'} core{sut}; gw-load + mock core{aux}",
                   svc_us(r), vs, notes)

    base_e = None
    e_cpu = {}
    for variant in ("plain", "norl", "gateway", "gateway-svcaux", "rpmtpm-svcaux", "rpmtpm-svcaux-shadow"):
        r = by_id.get(f"e-{variant}")
        if not r:
            continue
        ld = r["load"]
        e_cpu[variant] = cpu_us(r["ticks"]["envoy"], ld["requests"] + ld["errors"])
        if variant == "plain":
            base_e = ld["rps"]
            vs = "baseline"
            s = r["sut"]
            if s["total"] and s["busy"] / s["total"] < 0.9:
                warnings.append(f"e-plain: core{sut} was only {s['busy'] / s['total'] * 100:.0f}% busy: the "
                                f"baseline was limited by core{aux} (load generator + mock), so the ratio "
                                "flatters the gateway")
        else:
            ratio = ld["rps"] / base_e if base_e else None
            vs = fmt_ratio(ratio) + " of e-plain"
            if ratio is not None and variant == "gateway":
                verdicts.append(f"gateway keeps ≥ 35% of plain Envoy's req/s (Redis store, 1,000-token "
                                f"prompts): {ratio * 100:.0f}% {ok(ratio >= 0.35)}")
        notes = gw_notes(r)
        if variant == "gateway" and all(e_cpu.get(v) is not None for v in ("plain", "norl", "gateway")):
            notes.insert(0, f"Envoy CPU per request: plain proxying {e_cpu['plain']:.0f} µs + wasm filter "
                            f"(and buffer) {e_cpu['norl'] - e_cpu['plain']:.0f} µs + rate-limit filter "
                            f"{e_cpu['gateway'] - e_cpu['norl']:.0f} µs (e-plain, e-norl)")
        what = {
            "plain": "plain Envoy → mock",
            "norl": "gateway without its rate-limit filter (wasm + buffer) → mock",
            "gateway": "gateway (wasm + buffer + ratelimit → service, Redis) → mock",
            "gateway-svcaux": "the same gateway with the service on the other core → mock",
            "rpmtpm-svcaux": "the same with only issue 3's descriptors (tenant requests, tenant tokens) → mock",
            "rpmtpm-svcaux-shadow": "the same, the prompt's text in `user` (everything but its BPE) → mock",
        }[variant]
        if variant == "gateway":
            pinning = f"envoy + svc core{sut}; gw-load + mock + redis core{aux}"
        elif "svcaux" in variant:
            pinning = f"envoy core{sut}; svc + gw-load + mock + redis core{aux}"
        else:
            pinning = f"envoy core{sut}; gw-load + mock + redis core{aux}"
        gw_row(r, f"{what}, {r.get('body', 'chat-1000')} (1,000 tokens), closed loop, {ld['connections']} conns", pinning,
               svc_us(r), vs, notes)

    for n in (1000, 10000, 100000):
        runs = {}
        for body in ("chat", "shadow"):
            for variant in ("plain", "gateway"):
                r = by_id.get(f"f-{variant}-{body}-{n}")
                if not r:
                    continue
                runs[(variant, body)] = r["load"]["p50_us"]
                ld = r["load"]
                vs = "–"
                if variant == "gateway" and ("plain", body) in runs:
                    vs = f"p50 {delta_us(ld['p50_us'], runs[('plain', body)])} vs f-plain-{body}-{n}"
                gw_row(r,
                       ("plain Envoy → mock" if variant == "plain" else
                        "gateway without its rate-limit filter (wasm + buffer) → mock")
                       + f", {body}-{n} ({'the text as the prompt' if body == 'chat' else 'the same text in `user`, not estimated'}), 1 in flight",
                       f"envoy core{sut}; gw-load + mock core{aux}", "–", vs, gw_notes(r))
        p = prompts.get(f"chat-{n}")
        if len(runs) == 4 and p:
            inside = ((runs[("gateway", "chat")] - runs[("gateway", "shadow")])
                      - (runs[("plain", "chat")] - runs[("plain", "shadow")]))
            tokens = p["text_tokens"]
            native = p["native_estimate_us"]
            envoy_tps = tokens / inside * 1e6 if inside > 0 else None
            native_tps = tokens / native * 1e6 if native > 0 else None
            ratio = envoy_tps / native_tps if envoy_tps and native_tps else None
            rows.append([
                f"f-estimate-{n}",
                f"estimating {tokens:,} prompt tokens (filter's estimate {p['estimate']:,}) inside Envoy's V8 "
                "= (gateway chat − gateway shadow) − (plain chat − plain shadow), p50s",
                f"envoy core{sut}",
                "–" if envoy_tps is None else f"{envoy_tps / 1e6:.1f} M tokens/s",
                fmt_us(inside) if inside > 0 else f"{inside:.0f} µs",
                "–",
                "–",
                ("–" if ratio is None else f"{ratio:.2f}× native ({native_tps / 1e6:.1f} M tokens/s)"),
                f"native (same body, core{sut}): estimate {native:.0f} µs, whole body step (parse, estimate, "
                f"re-serialize) {p['native_body_step_us']:.0f} µs; shadow body step "
                f"{prompts.get(f'shadow-{n}', {}).get('native_body_step_us', 0):.0f} µs",
            ])
            if envoy_tps:
                verdicts.append(f"estimator in Envoy ({tokens:,} tokens): {envoy_tps / 1e6:.1f} M tokens/s vs "
                                f"{native_tps / 1e6:.1f} M native ({ratio:.2f}×)")

    head = ["id", "what", "pinning", "decisions or req /s", "p50", "p99", "service CPU µs/decision",
            "vs baseline", "notes"]
    lines = [
        f"## make bench — {meta.get('date', '')}",
        "",
        f"CPU: {meta.get('cpu', '?')} ({meta.get('kernel', '?')}); Redis {meta.get('redis', '?')}, "
        f"Envoy {meta.get('envoy', '?') or '–'}; {meta.get('secs')} s per measured phase after "
        f"{meta.get('warm')} s warm-up; {meta.get('concurrency')} in flight; "
        f"{meta.get('tenants')} tenants; service binary {meta.get('rls_bin')}.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    idle = meta.get("idle_check")
    if idle:
        for core, d in (("sut", idle["sut"]), ("aux", idle["aux"])):
            share = (d["busy"] - d.get("irq", 0)) / d["total"] if d["total"] else 0
            if share > 0.10:
                warnings.insert(0, f"before the run, core{meta.get(core + '_core')} was "
                                f"{share * 100:.0f}% busy with other processes")
    if prompts:
        lines += ["", "Gateway phases (d, e, f): envoy/demo.yaml rendered by bench/gateway.py, "
                  f"{gmeta.get('keys', '?')} API keys drawn uniformly (tenants bench-<i>, limits never reached: "
                  "bench/gateway-limits.yaml), one mock provider behind the three clusters; d "
                  f"{gmeta.get('secs', '?')} s per row after {meta.get('warm')} s warm-up, f "
                  f"{gmeta.get('est_secs', '?')} s per row; filter {gmeta.get('wasm_bytes', 0):,} bytes of wasm. "
                  "Prompt bodies (OpenAI chat, gpt-4o-mini, one user message, max_tokens 16), sized with the "
                  "filter's own o200k tokenizer: "
                  + "; ".join(f"{p['name']}: {p['text_tokens']:,} tokens, {p['body_bytes']:,} bytes, "
                              f"filter's estimate {p['estimate']:,}" for p in prompts.values()
                              if p.get("body") == "prompt")
                  + " (shadow-N: the same bytes, the text in the top-level `user` field, \"hi\" as the message)."]
    if verdicts:
        lines += ["", "Targets: " + "; ".join(verdicts) + "."]
    if warnings:
        lines += ["", "**Warnings** (numbers may be low because the machine was shared):", ""]
        lines += [f"- {w}" for w in warnings]
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    with open(dst, "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
