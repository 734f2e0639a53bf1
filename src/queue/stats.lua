-- stats: counters and flags of a chunk of the accounts of one partition (read only).
-- KEYS[1] = <base>:ready
-- ARGV = base, default_window_ms, mode, from, count, after, until
-- mode 'all': the accounts of the partition's account set, walked with SSCAN from the
-- cursor `from` ('0' to start), `count` at a time (an account may come twice).
-- mode 'changed': the accounts of the change set (see `changed` in scripts.lua) whose
-- latest change is from `from` (Redis ms) to `until` (ms or '+inf'), oldest change
-- first, at most `count`; with `after`, the account changed at `from` that the previous
-- chunk ended with (`until` is then a time), only those that follow it (all those at
-- `from` when it has changed again since).
-- Either way no call holds Redis for long: the caller repeats until it gets no next.
-- Counts are read from the sets and lists that hold the deliveries (each O(1)): no
-- separate counter can disagree with them after a script failed part-way. Touches no
-- event list beyond its two heads; a long rate log is bisected.
-- Returns {now, next, after, row, ...}: next is the cursor to go on from ('0' when done)
-- in mode 'all', and in mode 'changed', when the chunk was full, the time of its last
-- change and after the account (else both ''). A row is {account, depth, delayed, dead, sent, upstream_429, busy,
-- paused, auth_failed, window (ms), the rate log's times within the window, oldest
-- created or '', ready score or ''}, or {account} for a changed account that has gone.
local base = ARGV[1]
local default_window = tonumber(ARGV[2])
local mode, from, count = ARGV[3], ARGV[4], ARGV[5]
if mode ~= 'all' and mode ~= 'changed' then
  return redis.error_reply('ERR stats mode must be all or changed, not ' .. mode)
end
local now = now_ms()
local accounts = base .. ':accounts'
local list, next_from, next_after = {}, '', ''
if mode == 'all' then
  local scan = call('SSCAN', accounts, from, 'COUNT', count)
  list, next_from = scan[2], scan[1]
else
  local changes = base .. ':changed'
  local after, till, max = ARGV[6], ARGV[7], tonumber(count)
  local page
  if after == '' then
    page = call('ZRANGEBYSCORE', changes, from, till, 'WITHSCORES', 'LIMIT', '0', count)
  else
    -- The set is ordered by time, then by member: the chunk starts right after `after`
    -- if it is still at `from`, else (it changed again since) at the first change at
    -- `from`; and ends at the last change at or before `until`.
    local start
    local at = call('ZSCORE', changes, after)
    if at and tonumber(at) == tonumber(from) then
      start = call('ZRANK', changes, after) + 1
    else
      start = call('ZCOUNT', changes, '-inf', '(' .. from)
    end
    local stop = math.min(start + max, call('ZCOUNT', changes, '-inf', till)) - 1
    page = {}
    if stop >= start then
      page = call('ZRANGE', changes, int(start), int(stop), 'WITHSCORES')
    end
  end
  for i = 1, #page, 2 do list[#list + 1] = page[i] end
  if #list >= max then
    next_from, next_after = page[#page], list[#list]
  end
end
local out = {now, next_from, next_after}
for _, acct in ipairs(list) do
  if mode ~= 'all' and call('SISMEMBER', accounts, acct) == 0 then
    out[#out + 1] = {acct}
  else
    local akey = base .. ':acct:' .. acct
    local st = call('HMGET', akey, 'sent', 'upstream_429', 'busy', 'paused', 'auth_failed',
      'window', 'rl')
    local q = base .. ':q:' .. acct
    local delayed = call('ZCARD', base .. ':retry:' .. acct)
    local depth = call('LLEN', q .. ':h') + call('LLEN', q .. ':n') + delayed
    if st[3] and st[3] ~= '' then depth = depth + group_size(st[3]) end
    local dead = call('ZCARD', base .. ':dead:' .. acct)
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
      -- (of an event still stored: an event id is a UUIDv7, its first 12 hex digits the
      -- gateway's clock, in ms, when it accepted the event)
      local created = call('EXISTS', base .. ':ev:' .. eid) == 1
        and tonumber(string.sub(eid, 1, 12), 16)
      if created and (oldest == nil or created < oldest) then oldest = created end
    end
    consider(call('LINDEX', q .. ':h', 0))
    consider(call('LINDEX', q .. ':n', 0))
    -- the lease group in flight (a replayed call among them may be older than its first)
    for did in string.gmatch(st[3] or '', '%S+') do consider(did) end
    local score = call('ZSCORE', base .. ':ready', acct)
    out[#out + 1] = {acct, int(depth), int(delayed), int(dead), st[1] or '0', st[2] or '0',
      st[3] or '', st[4] or '0', st[5] or '0', int(window), recent,
      oldest and tostring(oldest) or '', score or ''}
  end
end
return out
