-- Takes back what check.lua added, for the Redis Cluster store: when one request's counters
-- span several slots, each slot is checked and charged by its own check.lua call, and if any
-- slot rejects, the slots that charged are refunded with this script (see
-- src/store/redis_cluster.rs).
--
-- KEYS[i]  a current-window counter that check.lua incremented
-- ARGV[i]  exactly what it added (the charge's hits)
-- A counter never goes below 0: one that would reach 0 (or that expired or was reset since)
-- is deleted, which reads as 0. The TTL of a counter that stays is untouched. Reply: 0.

if #ARGV ~= #KEYS then
  return redis.error_reply('ERR rls: expected one amount per key')
end
for i = 1, #KEYS do
  local amount = tonumber(ARGV[i])
  local v = redis.call('GET', KEYS[i])
  local count = v and tonumber(v)
  if amount ~= nil and amount > 0 and count ~= nil then
    if count <= amount then
      redis.call('DEL', KEYS[i])
    else
      -- ARGV strings go to Redis verbatim: Lua would print a big number as "1e+15".
      redis.call('DECRBY', KEYS[i], ARGV[i])
    end
  end
end
return 0
