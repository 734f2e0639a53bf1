-- enqueue: stores events of one account.
-- KEYS[1] = <base>:ready (routes the call to the partition's slot)
-- ARGV = base, account, limit, window_ms, max_depth, idempotency_ttl_s,
--        then per event: id, priority ('h'|'n'), ttl_ms, body, n, agent_1 .. agent_n
--        ('' = every agent), idempotency key or '', and its fingerprint when there is a
--        key (most events have none: an argument costs Redis about 1,000)
-- The default rate limit is written into the script's text, ahead of its helpers (see
-- `limit_settings` in script_queue.rs).
-- Returns per event 'ok' when it was stored, else {outcome, id, n} with outcome dup |
-- mismatch | full; then {'ready'} when the account entered the ready set (its workers
-- may be asleep).
-- Every check comes first. Then the writes: the account's change (see `changed`), its
-- settings, the ready set, the new delivery ids (pushed once per priority), each event
-- (one HSET) and last the idempotency keys. A failure part-way leaves at worst ids of
-- events that were never stored, which claims drop as stale entries; an event is never
-- stored without its ids.
-- An event's fields hold only what differs from what readers assume when a field is
-- missing: no 'exp' without a time to live, no 'prio' for 'n', no agent 'ag<k>' for every
-- agent, no 'at<k>', 'done' or 'dd' while they are 0.
--
-- This runs once per stored event, so it avoids what costs most in Redis's Lua: turning
-- text into numbers and back, and creating tables, closures and strings.
local base, acct, limit, window = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now, now_s = now_ms()
local akey = base .. ':acct:' .. acct
local q = base .. ':q:' .. acct
local st = call('HMGET', akey, 'limit', 'window', 'busy', 'paused', 'auth_failed', 'until')
-- Undelivered calls: queued, waiting for a retry, and those in flight (a lease group).
local depth = call('LLEN', q .. ':h') + call('LLEN', q .. ':n')
  + call('ZCARD', base .. ':retry:' .. acct)
if st[3] and st[3] ~= '' then depth = depth + group_size(st[3]) end
local max_depth = tonumber(ARGV[5])
-- (tables built from a constructor of nils have room for one event's entries, the most
-- common call: Lua grows an empty table by rehashing it at each power of two)
local out = {nil}
-- the new delivery ids of each priority, the events' keys and fields, the idempotency
-- keys taken (key -> record) in the order taken
local pushed_h, pushed_n
local ekeys, efields = {nil}, {nil}
local idems, taken
-- the last time to live seen (text) and the expiry it gives: a batch's events most often
-- share theirs, converted and formatted once
local last_ttl, last_exp

local i = 7
while i <= #ARGV do
  local eid, prio, ttl, body, n_s = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local n = 1
  if n_s ~= '1' then n = tonumber(n_s) end
  local first_agent = i + 5
  local ikey = ARGV[i + 5 + n]
  i = i + 6 + n
  -- (a fingerprint follows a key only)
  local fp
  if ikey ~= '' then
    fp = ARGV[i]
    i = i + 1
  end
  local result
  local idem
  if ikey ~= '' then
    idem = base .. ':idem:' .. acct .. ':' .. ikey
    -- a key taken earlier in this call is not written yet
    local prev = (taken and taken[idem]) or call('GET', idem)
    if prev then
      local pfp, pid, pn = string.match(prev, '^(%S+) (%S+) (%d+)$')
      if pfp == fp then
        result = {'dup', pid, tonumber(pn)}
      else
        result = {'mismatch', pid or '', 0}
      end
    end
  end
  if not result then
    if depth + n > max_depth then
      result = {'full', '', 0}
    else
      -- delivery 0 in the constructor: most events have one (with room for a time to
      -- live, a priority and an agent)
      local fields = {'acct', acct, 'created', now_s, 'n', n_s, 'body', body, 's0', 'queued',
        nil, nil, nil, nil, nil, nil}
      if ttl ~= '0' then
        if ttl ~= last_ttl then
          last_ttl, last_exp = ttl, int(now + tonumber(ttl))
        end
        fields[11] = 'exp'
        fields[12] = last_exp
      end
      local ids
      if prio == 'h' then
        fields[#fields + 1] = 'prio'
        fields[#fields + 1] = 'h'
        pushed_h = pushed_h or {nil}
        ids = pushed_h
      else
        pushed_n = pushed_n or {nil}
        ids = pushed_n
      end
      ids[#ids + 1] = eid .. ':0'
      local agent = ARGV[first_agent]
      if agent ~= '' then
        fields[#fields + 1] = 'ag0'
        fields[#fields + 1] = agent
      end
      for k = 1, n - 1 do
        local ks = int(k)
        local f = #fields
        fields[f + 1] = 's' .. ks
        fields[f + 2] = 'queued'
        agent = ARGV[first_agent + k]
        if agent ~= '' then
          fields[f + 3] = 'ag' .. ks
          fields[f + 4] = agent
        end
        ids[#ids + 1] = eid .. ':' .. ks
      end
      ekeys[#ekeys + 1] = base .. ':ev:' .. eid
      efields[#efields + 1] = fields
      depth = depth + n
      if idem then
        taken = taken or {}
        idems = idems or {}
        taken[idem] = fp .. ' ' .. eid .. ' ' .. n_s
        idems[#idems + 1] = idem
      end
      result = 'ok'
    end
  end
  out[#out + 1] = result
end
local settings_changed = st[1] ~= limit or st[2] ~= window
if settings_changed or #ekeys > 0 then
  changed(base, acct, now_s)
end
if settings_changed then
  w('HSET', akey, 'limit', limit, 'window', window)
  w('SADD', base .. ':accounts', acct)
end
if #ekeys == 0 then
  return out
end
-- An account with new work is ready unless busy or paused (as mark_ready, without
-- re-reading what is known). One that was idle goes ahead of those served within the
-- last window; a 429 pause still wins.
local ready = false
if not (st[3] and st[3] ~= '') and st[4] ~= '1' and st[5] ~= '1' then
  -- (most accounts' window is the default, whose text is compared rather than converted)
  local at = now - (window == default_window_text and default_window or tonumber(window))
  local pause_until = st[6] and tonumber(st[6]) or 0
  if pause_until > at then at = pause_until end
  -- Newly ready: the caller announces it to every process's worker (which may sleep).
  if w('ZADD', base .. ':ready', 'NX', int(at), acct) == 1 then
    ready = true
  end
end
-- At most 1,000 ids per RPUSH and 3,000 arguments per HSET (Lua's unpack has a stack
-- limit).
local function push(prio, ids)
  for j = 1, #ids, 1000 do
    w('RPUSH', q .. ':' .. prio, unpack(ids, j, math.min(j + 999, #ids)))
  end
end
if pushed_h then push('h', pushed_h) end
if pushed_n then push('n', pushed_n) end
for e = 1, #ekeys do
  local fields = efields[e]
  for j = 1, #fields, 3000 do
    w('HSET', ekeys[e], unpack(fields, j, math.min(j + 2999, #fields)))
  end
end
if idems then
  for _, idem in ipairs(idems) do
    w('SET', idem, taken[idem], 'EX', ARGV[6])
  end
end
if ready then
  out[#out + 1] = {'ready'}
end
return out
