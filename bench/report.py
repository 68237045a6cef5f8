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
