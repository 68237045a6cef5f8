-- wrk script of `make bench` (bench/run.sh): every call is an OpenAI-style POST whose headers the
-- bench Envoy turns into the same three descriptors `rls-load --mode mixed` sends:
--   [tenant=T] 1 hit, [tenant=T, kind=tokens] hits = x-llm-tokens, [tier=free|pro] 1 hit
-- with T drawn uniformly from BENCH_TENANTS tenants (one in ten on the pro tier).
-- At the end it prints one line "JSON {...}" that run.sh parses.

local tenants = tonumber(os.getenv("BENCH_TENANTS") or "1000")

wrk.method = "POST"
wrk.body = '{"model":"bench-model","messages":[{"role":"user","content":"hello"}]}'
wrk.headers["content-type"] = "application/json"

function setup(thread)
  thread:set("seed", os.time() + math.random(1, 1000000))
end

function init(args)
  math.randomseed(seed or os.time())
end

function request()
  local i = math.random(0, tenants - 1)
  wrk.headers["x-tenant"] = "t" .. i
  wrk.headers["x-tier"] = (i % 10 == 0) and "pro" or "free"
  wrk.headers["x-llm-tokens"] = tostring(math.random(50, 4000))
  return wrk.format(nil, "/v1/chat/completions")
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'JSON {"requests":%d,"duration_us":%d,"bytes":%d,"mean_us":%.1f,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"non2xx":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d}\n',
    summary.requests, summary.duration, summary.bytes, latency.mean,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.status, e.connect, e.read, e.write, e.timeout))
end
