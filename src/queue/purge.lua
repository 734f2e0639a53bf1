-- purge: forgets dead letters of one account.
-- KEYS[1] = <base>:ready
-- ARGV = base, account, retention_ms, mode ('all' | 'ids'), max, then (mode 'ids') ids
-- Each letter leaves the dead set (`dd` of its event decremented); an event whose calls
-- have all finished and that has no dead letter left drops its payload and expires after
-- retention_ms, like any finished event.
-- Returns {purged, dead letters left, id not found, ...}.
local base, acct = ARGV[1], ARGV[2]
local retention, mode, max = tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local dead = base .. ':dead:' .. acct
local _, now_s = now_ms()
local ids
if mode == 'all' then
  ids = call('ZRANGE', dead, 0, max - 1)
else
  ids = {}
  for i = 6, #ARGV do ids[#ids + 1] = ARGV[i] end
end
local purged = 0
local missing = {}
for _, did in ipairs(ids) do
  if call('ZSCORE', dead, did) then
    changed(base, acct, now_s)
    forget_letter(base, dead, did, retention)
    purged = purged + 1
  else
    missing[#missing + 1] = did
  end
end
local out = {purged, call('ZCARD', dead)}
for _, did in ipairs(missing) do out[#out + 1] = did end
return out
