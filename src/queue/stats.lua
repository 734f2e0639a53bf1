-- stats: counters and flags of a chunk of the accounts of one partition (read only).
-- KEYS[1] = <base>:ready
-- ARGV = base, default_window_ms, cursor ('0' to start), count
-- Counts are read from the sets and lists that hold the deliveries (each O(1)): no
-- separate counter can disagree with them after a script failed part-way. Touches no
-- event list beyond its two heads; a long rate log is bisected.
-- Walks the account set with SSCAN, `count` at a time, so that no call holds Redis for
-- long: the caller repeats until the cursor it gets back is '0' (an account may come
-- twice). Returns {now, next cursor, {account, depth, delayed, dead, sent, upstream_429,
-- busy, paused, auth_failed, sent_in_window, oldest created or '', ready score or ''},
-- ...}.
local base = ARGV[1]
local default_window = tonumber(ARGV[2])
local now = now_ms()
local scan = redis.call('SSCAN', base .. ':accounts', ARGV[3], 'COUNT', ARGV[4])
local out = {now, scan[1]}
for _, acct in ipairs(scan[2]) do
  local akey = base .. ':acct:' .. acct
  local st = redis.call('HMGET', akey, 'sent', 'upstream_429', 'busy', 'paused', 'auth_failed',
    'window', 'rl')
  local q = base .. ':q:' .. acct
  local delayed = redis.call('ZCARD', base .. ':retry:' .. acct)
  local depth = redis.call('LLEN', q .. ':h') + redis.call('LLEN', q .. ':n') + delayed
  if st[3] and st[3] ~= '' then depth = depth + 1 end
  local dead = redis.call('ZCARD', base .. ':dead:' .. acct)
  local window = tonumber(st[6] or '') or default_window
  -- Sends within the window: the rate log is newest first, so they lead it.
  local recent = recent_sends(st[7] or '', now - window)
  local oldest = nil
  local function consider(did)
    if not did or did == '' then return end
    local eid = split_did(did)
    if not eid then return end
    local created = tonumber(redis.call('HGET', base .. ':ev:' .. eid, 'created') or '')
    if created and (oldest == nil or created < oldest) then oldest = created end
  end
  consider(redis.call('LINDEX', q .. ':h', 0))
  consider(redis.call('LINDEX', q .. ':n', 0))
  consider(st[3])
  local score = redis.call('ZSCORE', base .. ':ready', acct)
  out[#out + 1] = {acct, int(depth), int(delayed), int(dead), st[1] or '0', st[2] or '0',
    st[3] or '', st[4] or '0', st[5] or '0', recent, oldest and tostring(oldest) or '', score or ''}
end
return out
