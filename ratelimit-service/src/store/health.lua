-- Applies a batch's provider outcomes to deployments' circuits: see `Store::record_outcomes` in
-- src/store/mod.rs; the rule is `Circuit::apply` in src/health.rs, which this mirrors.
--
-- KEYS[i]     deployment i's circuit: "<failures in a row> <open until, Unix ms>"
-- ARGV[1]     now, Unix ms
-- ARGV[2]     failures in a row that open a circuit
-- ARGV[3]     how long a circuit stays open, ms
-- ARGV[4]     how long a circuit is kept after its last outcome, ms
-- ARGV[3+2i]  deployment i: 1 if an answer that was not a failure came in, else 0
-- ARGV[4+2i]  deployment i: failures after the last such answer (or in all, without one)
-- Reply: per deployment, 1 if this call opened its circuit, else 0.

if #ARGV ~= 4 + 2 * #KEYS then
  return redis.error_reply('ERR rls: expected 4 arguments and 2 per deployment')
end
local now = tonumber(ARGV[1])
local threshold = tonumber(ARGV[2])
local open_for = tonumber(ARGV[3])
local out = {}
for i = 1, #KEYS do
  local reset = ARGV[3 + 2 * i] == '1'
  local fails = tonumber(ARGV[4 + 2 * i])
  if fails == nil then
    return redis.error_reply('ERR rls: bad failure count for deployment ' .. i)
  end
  local failures, open_until = 0, 0
  local v = redis.call('GET', KEYS[i])
  if v then
    local f, o = string.match(v, '^(%d+) (%d+)$')
    if f then
      failures, open_until = tonumber(f), tonumber(o)
    end
  end
  local was_open = open_until > now
  if reset then
    failures, open_until = 0, 0
  end
  failures = failures + fails
  if fails > 0 and failures >= threshold then
    open_until = now + open_for
  end
  redis.call('SET', KEYS[i], string.format('%d %d', failures, open_until), 'PX', ARGV[4])
  out[i] = ((not was_open) and open_until > now) and 1 or 0
end
return out
