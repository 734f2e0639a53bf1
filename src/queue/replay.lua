-- replay: puts dead letters of one account back in its queue.
-- KEYS[1] = <base>:ready
-- ARGV = base, account, ttl_ms, mode ('all' | 'ids'), max, then (mode 'ids') delivery ids
-- Mode 'all' takes the `max` oldest dead letters. Each letter leaves the dead set and is
-- pushed to the tail of its priority list as a fresh delivery: attempts 0, reason
-- cleared, `dd`/`done` of its event and `dead` of the account decremented, `depth`
-- incremented, the event made persistent again and, if it had an expiry, the expiry moved
-- to now + ttl. Returns {replayed, dead letters left, id not found, ...}.
local base, acct = ARGV[1], ARGV[2]
local ttl, mode, max = tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local now = now_ms()
local dead = base .. ':dead:' .. acct
local akey = base .. ':acct:' .. acct
local ids
if mode == 'all' then
  ids = redis.call('ZRANGE', dead, 0, max - 1)
else
  ids = {}
  for i = 6, #ARGV do ids[#ids + 1] = ARGV[i] end
end
local replayed = 0
local missing = {}
for _, did in ipairs(ids) do
  if redis.call('ZREM', dead, did) == 1 then
    redis.call('HINCRBY', akey, 'dead', -1)
    local eid, k = split_did(did)
    local ekey = eid and (base .. ':ev:' .. eid)
    local ev = {}
    if ekey then ev = redis.call('HMGET', ekey, 'acct', 's' .. k, 'prio', 'exp', 'body') end
    if ev[1] == acct and (ev[2] == 'dead' or ev[2] == 'expired') and ev[5]
      and ev[5] ~= '' then
      redis.call('HINCRBY', ekey, 'dd', -1)
      redis.call('HINCRBY', ekey, 'done', -1)
      redis.call('HSET', ekey, 's' .. k, 'queued', 'at' .. k, 0, 'dr' .. k, '', 'ft' .. k, '')
      if (tonumber(ev[4] or '0') or 0) > 0 then
        redis.call('HSET', ekey, 'exp', now + ttl)
      end
      redis.call('PERSIST', ekey)
      redis.call('HINCRBY', akey, 'depth', 1)
      redis.call('RPUSH', base .. ':q:' .. acct .. ':' .. (ev[3] or 'n'), did)
      replayed = replayed + 1
    else
      -- the event is gone or no longer dead: drop the stale entry
      missing[#missing + 1] = did
    end
  else
    missing[#missing + 1] = did
  end
end
if replayed > 0 then
  redis.call('SADD', base .. ':accounts', acct)
  mark_ready(base, acct, now)
end
local out = {replayed, redis.call('ZCARD', dead)}
for _, did in ipairs(missing) do out[#out + 1] = did end
return out
