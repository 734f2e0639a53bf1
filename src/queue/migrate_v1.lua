-- Brings one partition written by the release of layout 1 (no `layout` in `{prefix}:meta`)
-- to layout 2, in one atomic call. ARGV[1] = base. Returns the number of entries written.
--
-- Layout 1 kept no per-account retry set, no set of held accounts, and three counters in
-- each account's record (`depth`, `delayed`, `dead`) that layout 2 reads from the lists
-- and sets instead. Every write brings a record to its layout-2 state, so a call repeated
-- (after a migration stopped half-way) changes nothing more.
local base = ARGV[1]
local now = now_ms()
local delayed = base .. ':delayed'
local written = 0

-- 1. Every pending retry in `delayed` is also in its account's `retry:{account}`, with
--    the same due time (depth and idleness are read from there). Anything else in
--    `delayed` is a stale entry, which the reaper drops when it comes due.
local due = call('ZRANGE', delayed, 0, -1, 'WITHSCORES')
for i = 1, #due, 2 do
  local did, at = due[i], due[i + 1]
  local eid, k = split_did(did)
  if eid then
    local ev = call('HMGET', base .. ':ev:' .. eid, 'acct', 's' .. k)
    if ev[1] and ev[2] == 'retrying' then
      written = written + call('ZADD', base .. ':retry:' .. ev[1], at, did)
    end
  end
end

for _, acct in ipairs(call('SMEMBERS', base .. ':accounts')) do
  local akey = base .. ':acct:' .. acct
  -- 2. Only pending retries of this account stay in its retry set.
  local rkey = base .. ':retry:' .. acct
  for _, did in ipairs(call('ZRANGE', rkey, 0, -1)) do
    local eid, k = split_did(did)
    local keep = false
    if eid and call('ZSCORE', delayed, did) then
      local ev = call('HMGET', base .. ':ev:' .. eid, 'acct', 's' .. k)
      keep = ev[1] == acct and ev[2] == 'retrying'
    end
    if not keep then
      written = written + call('ZREM', rkey, did)
    end
  end
  -- 3. Held accounts (paused, auth_failed, in a 429 pause) are in `held`, so claims
  --    expire the events at their heads; due at once.
  local st = call('HMGET', akey, 'paused', 'auth_failed', 'until')
  if st[1] == '1' or st[2] == '1' or (tonumber(st[3] or '0') or 0) > now then
    written = written + call('ZADD', base .. ':held', 'NX', int(now), acct)
  end
  -- 4. The counters layout 2 no longer keeps.
  written = written + call('HDEL', akey, 'depth', 'delayed', 'dead')
end
return written
