-- Atomic check-and-charge of one request's counters. Mirrors `store::decide` and
-- `Window::estimate` (ratelimit-service/src/store/mod.rs, src/window.rs) line for line; see
-- src/store/redis.rs for why this is a script.
--
-- KEYS, two per charge i (1-based), named by src/keys.rs (`{...}`-tagged on Redis Cluster):
--   KEYS[2i-1]  current-window counter  rls:<key>:<window index>
--   KEYS[2i]    previous-window counter rls:<key>:<window index - 1>
-- ARGV, seven per charge i, starting at a = 7(i-1):
--   ARGV[a+1] limit         ARGV[a+2] hits        ARGV[a+3] window length ms
--   ARGV[a+4] "sliding" | "fixed"    ARGV[a+5] "enforce" | "shadow" | "quota" | "quota-split"
--   ARGV[a+6] ms elapsed in the current window    ARGV[a+7] ttl ms of the current counter
-- "quota-split" is a quota-mode limit of a request that the Redis Cluster store split across
-- slots: charged only if it fits, like "quota", but it never rejects here; the store takes the
-- "every quota limit is over" verdict over all slots and refunds (refund.lua) if it rejects.
-- Reply: { admitted, prev_1, curr_1, charged_1, ..., prev_n, curr_n, charged_n }, flags as 1/0,
-- counts as they were before this request (prev is 0 for fixed windows, which never read it).
--
-- Lua numbers are IEEE doubles: every count, limit and hits value must stay below 2^53, where
-- doubles are exact integers. A charge that would push a counter past that bound fails the
-- whole script with an error before anything is written: a request is never charged in part.

local MAX_EXACT = 9007199254740991 -- 2^53 - 1
local n = #KEYS / 2
if n ~= math.floor(n) or #ARGV ~= 7 * n then
  return redis.error_reply('ERR rls: expected 2 keys and 7 arguments per charge')
end

local function whole(v)
  local x = tonumber(v)
  if x == nil or x < 0 or x ~= math.floor(x) then
    return nil
  end
  return x
end

local function count(key)
  local v = redis.call('GET', key)
  if not v then
    return 0
  end
  return whole(v)
end

-- Read phase: no writes until every check has passed.
local prev, curr, hits, fits, modes = {}, {}, {}, {}, {}
local enforce_ok = true
local quota_total, quota_fit = 0, 0
for i = 1, n do
  local a = 7 * (i - 1)
  local limit, len = whole(ARGV[a + 1]), whole(ARGV[a + 3])
  local algorithm, mode = ARGV[a + 4], ARGV[a + 5]
  modes[i] = mode
  local elapsed, ttl = whole(ARGV[a + 6]), whole(ARGV[a + 7])
  hits[i] = whole(ARGV[a + 2])
  if limit == nil or hits[i] == nil or len == nil or len < 1 or elapsed == nil
    or elapsed >= len or ttl == nil or ttl < 1
    or (algorithm ~= 'sliding' and algorithm ~= 'fixed')
    or (mode ~= 'enforce' and mode ~= 'shadow' and mode ~= 'quota' and mode ~= 'quota-split') then
    return redis.error_reply('ERR rls: bad arguments for charge ' .. i)
  end

  curr[i] = count(KEYS[2 * i - 1])
  if algorithm == 'sliding' then
    prev[i] = count(KEYS[2 * i])
  else
    prev[i] = 0
  end
  if curr[i] == nil or prev[i] == nil then
    return redis.error_reply('ERR rls: counter of charge ' .. i .. ' is not a whole number')
  end
  -- Window::estimate: fixed = curr; sliding = curr + floor(prev * (len - elapsed) / len),
  -- the same double operations in the same order as the Rust code.
  local estimate = curr[i]
  if algorithm == 'sliding' then
    estimate = curr[i] + math.floor(prev[i] * (len - elapsed) / len)
  end
  fits[i] = estimate + hits[i] <= limit

  if mode == 'enforce' then
    enforce_ok = enforce_ok and fits[i]
  elseif mode == 'quota' then
    quota_total = quota_total + 1
    if fits[i] then
      quota_fit = quota_fit + 1
    end
  end
end

-- decide: every enforce-mode limit fits, and at least one quota-mode limit fits if any exist.
local admitted = enforce_ok and (quota_total == 0 or quota_fit > 0)

-- An admitted request charges every limit except quota-mode ones that are over.
local charged = {}
for i = 1, n do
  charged[i] = admitted and ((modes[i] ~= 'quota' and modes[i] ~= 'quota-split') or fits[i])
  if charged[i] and curr[i] + hits[i] > MAX_EXACT then
    return redis.error_reply('ERR rls: counter of charge ' .. i .. ' would pass 2^53')
  end
end

-- Write phase: nothing below can fail on valid counters, so a request is charged whole.
local reply = { admitted and 1 or 0 }
for i = 1, n do
  local a = 7 * (i - 1)
  -- ARGV strings go to Redis verbatim: Lua would print a big number as "1e+15".
  if charged[i] and hits[i] > 0 then
    redis.call('INCRBY', KEYS[2 * i - 1], ARGV[a + 2])
    redis.call('PEXPIRE', KEYS[2 * i - 1], ARGV[a + 7])
  end
  reply[3 * i - 1] = prev[i]
  reply[3 * i] = curr[i]
  reply[3 * i + 1] = charged[i] and 1 or 0
end
return reply
