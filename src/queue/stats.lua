-- stats: counters and flags of a chunk of the accounts of one partition (read only).
-- KEYS[1] = <base>:ready
-- ARGV = base, default_window_ms, mode, from, count
-- mode 'all': the accounts of the partition's account set, walked with SSCAN from the
-- cursor `from` ('0' to start), `count` at a time (an account may come twice).
-- mode 'changed': the accounts of the change set (see `changed` in scripts.lua) whose
-- latest change is at or after `from` (Redis ms), oldest change first, at most `count`.
-- Either way no call holds Redis for long: the caller repeats until it gets no next.
-- Counts are read from the sets and lists that hold the deliveries (each O(1)): no
-- separate counter can disagree with them after a script failed part-way. Touches no
-- event list beyond its two heads; a long rate log is bisected.
-- Returns {now, next, row, ...}: next is the cursor to go on from ('0' when done) in
-- mode 'all', and in mode 'changed' the time of the last change read when the chunk was
-- full, else ''. A row is {account, depth, delayed, dead, sent, upstream_429, busy,
-- paused, auth_failed, window (ms), the rate log's times within the window, oldest
-- created or '', ready score or ''}, or {account} for a changed account that has gone.
local base = ARGV[1]
local default_window = tonumber(ARGV[2])
local mode, from, count = ARGV[3], ARGV[4], ARGV[5]
local now = now_ms()
local accounts = base .. ':accounts'
local list, next_from
if mode == 'all' then
  local scan = redis.call('SSCAN', accounts, from, 'COUNT', count)
  list, next_from = scan[2], scan[1]
else
  local page = redis.call('ZRANGEBYSCORE', base .. ':changed', from, '+inf', 'WITHSCORES', 'LIMIT',
    '0', count)
  list, next_from = {}, ''
  for i = 1, #page, 2 do list[#list + 1] = page[i] end
  if #list >= tonumber(count) then next_from = page[#page] end
end
local out = {now, next_from}
for _, acct in ipairs(list) do
  if mode ~= 'all' and redis.call('SISMEMBER', accounts, acct) == 0 then
    out[#out + 1] = {acct}
  else
    local akey = base .. ':acct:' .. acct
    local st = redis.call('HMGET', akey, 'sent', 'upstream_429', 'busy', 'paused', 'auth_failed',
      'window', 'rl')
    local q = base .. ':q:' .. acct
    local delayed = redis.call('ZCARD', base .. ':retry:' .. acct)
    local depth = redis.call('LLEN', q .. ':h') + redis.call('LLEN', q .. ':n') + delayed
    if st[3] and st[3] ~= '' then depth = depth + 1 end
    local dead = redis.call('ZCARD', base .. ':dead:' .. acct)
    local window = tonumber(st[6] or '') or default_window
    -- Sends within the window: the rate log is newest first, so they lead it. The reader
    -- counts those still within the window when it shows them.
    local rl = st[7] or ''
    local recent = string.sub(rl, 1, recent_sends(rl, now - window) * 13)
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
      st[3] or '', st[4] or '0', st[5] or '0', int(window), recent,
      oldest and tostring(oldest) or '', score or ''}
  end
end
return out
