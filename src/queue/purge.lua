-- purge: forgets dead letters of one account.
-- KEYS[1] = <base>:ready
-- ARGV = base, account, retention_ms, mode ('all' | 'ids'), max, then (mode 'ids') ids
-- Each letter leaves the dead set (`dead` of the account decremented, `dd` of its event
-- decremented); an event whose calls have all finished and that has no dead letter left
-- drops its payload and expires after retention_ms, like any finished event.
-- Returns {purged, dead letters left, id not found, ...}.
local base, acct = ARGV[1], ARGV[2]
local retention, mode, max = tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local dead = base .. ':dead:' .. acct
local akey = base .. ':acct:' .. acct
local ids
if mode == 'all' then
  ids = redis.call('ZRANGE', dead, 0, max - 1)
else
  ids = {}
  for i = 6, #ARGV do ids[#ids + 1] = ARGV[i] end
end
local purged = 0
local missing = {}
for _, did in ipairs(ids) do
  if redis.call('ZREM', dead, did) == 1 then
    redis.call('HINCRBY', akey, 'dead', -1)
    purged = purged + 1
    local eid = split_did(did)
    if eid then
      local ekey = base .. ':ev:' .. eid
      if redis.call('EXISTS', ekey) == 1 then
        local dd = redis.call('HINCRBY', ekey, 'dd', -1)
        local ev = redis.call('HMGET', ekey, 'done', 'n')
        if dd <= 0 and tonumber(ev[1] or '0') >= tonumber(ev[2] or '0') then
          redis.call('HDEL', ekey, 'body')
          redis.call('PEXPIRE', ekey, retention)
        end
      end
    end
  else
    missing[#missing + 1] = did
  end
end
local out = {purged, redis.call('ZCARD', dead)}
for _, did in ipairs(missing) do out[#out + 1] = did end
return out
