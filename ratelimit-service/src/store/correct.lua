-- Applies one usage report's corrections once: see `Store::correct` in src/store/mod.rs.
--
-- KEYS[1]    the report's id key (its slot's, on Redis Cluster; see src/keys.rs `report_key`)
-- KEYS[1+i]  counter i in the window its reservation went into: rls:<key>:<window index>
-- ARGV[1]    how long the id is remembered, ms
-- ARGV[2i]   correction i: real minus reserved, a signed integer
-- ARGV[2i+1] ttl ms for counter i if this creates it (an extra charge on a counter that expired
--            or was never written)
-- Reply: 1 applied, 0 already applied (nothing changed).
-- A counter never goes below 0: one that would is deleted, which reads as 0.

if #ARGV ~= 2 * #KEYS - 1 then
  return redis.error_reply('ERR rls: expected 2 arguments per counter and one id ttl')
end
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then
  return 0
end
for i = 2, #KEYS do
  local delta = tonumber(ARGV[2 * i - 2])
  local ttl = ARGV[2 * i - 1]
  if delta == nil or delta ~= math.floor(delta) then
    return redis.error_reply('ERR rls: bad correction for counter ' .. (i - 1))
  end
  local v = redis.call('GET', KEYS[i])
  local count = v and tonumber(v)
  if delta > 0 then
    -- ARGV strings go to Redis verbatim: Lua would print a big number as "1e+15".
    redis.call('INCRBY', KEYS[i], ARGV[2 * i - 2])
    if not v then
      redis.call('PEXPIRE', KEYS[i], ttl)
    end
  elseif delta < 0 and count ~= nil then
    if count + delta <= 0 then
      redis.call('DEL', KEYS[i])
    else
      redis.call('INCRBY', KEYS[i], ARGV[2 * i - 2])
    end
  end
end
return 1
