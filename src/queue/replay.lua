-- replay: puts dead letters of one account back in its queue.
-- KEYS[1] = <base>:ready
-- ARGV = base, account, ttl_ms, mode ('all' | 'ids'), max, then (mode 'ids') delivery ids
-- Mode 'all' takes the `max` oldest dead letters. Each letter leaves the dead set and is
-- pushed to the tail of its priority list as a fresh delivery: attempts 0, reason
-- cleared, `dd`/`done` of its event decremented, the event made persistent again and, if
-- it had an expiry, the expiry moved to now + ttl; the account's bound on its depth
-- (`d`, see enqueue.lua) is removed. Returns {replayed, dead letters left,
-- id not found, ...}.
local base, acct = ARGV[1], ARGV[2]
local ttl, mode, max = tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local now, now_s = now_ms()
local dead = base .. ':dead:' .. acct
local akey = base .. ':acct:' .. acct
local ids
if mode == 'all' then
  ids = call('ZRANGE', dead, 0, max - 1)
else
  ids = {}
  for i = 6, #ARGV do ids[#ids + 1] = ARGV[i] end
end
local replayed = 0
local missing = {}
local q = base .. ':q:' .. acct
local touched = false
for _, did in ipairs(ids) do
  local eid, k = split_did(did)
  local ekey = eid and (base .. ':ev:' .. eid)
  local ev = {}
  local listed = call('ZSCORE', dead, did)
  if ekey and listed then
    ev = event_fields(ekey, 'acct', 's' .. k, 'prio', 'exp', 'body', 'dd', 'done')
  end
  if ev[1] == acct and (ev[2] == 'dead' or ev[2] == 'expired') and ev[5] and ev[5] ~= '' then
    -- Pushed first (a dead status makes the entry stale until the status changes), then
    -- the status; it leaves the dead letters last. A replay that fails between the two
    -- leaves it among them, which the completion of its first lease (seeing `rp`) clears.
    changed(base, acct, now_s)
    if not touched then
      touched = true
      w('SADD', base .. ':accounts', acct)
      -- the account's depth grows: the bound enqueue keeps of it (`d`, never below the
      -- depth) goes before the first letter is pushed, and enqueue counts the depth again
      w('HDEL', akey, 'd')
    end
    w('RPUSH', q .. ':' .. (ev[3] or 'n'), did)
    local set = {'s' .. k, 'queued', 'at' .. k, '0', 'dr' .. k, '', 'rp' .. k, '1',
      'dd', int((tonumber(ev[6] or '1') or 1) - 1), 'done', int((tonumber(ev[7] or '1') or 1) - 1)}
    if (tonumber(ev[4] or '0') or 0) > 0 then
      set[#set + 1] = 'exp'
      set[#set + 1] = int(now + ttl)
    end
    event_set(ekey, unpack(set))
    w('PERSIST', ekey)
    w('ZREM', dead, did)
    replayed = replayed + 1
  else
    -- not a dead letter of the account (or the event is gone): drop a stale entry
    if listed then
      changed(base, acct, now_s)
      w('ZREM', dead, did)
    end
    missing[#missing + 1] = did
  end
end
if replayed > 0 then
  mark_ready(base, acct, now, now_s)
end
local out = {replayed, call('ZCARD', dead)}
for _, did in ipairs(missing) do out[#out + 1] = did end
return out
