-- enqueue: stores events of one or more accounts.
-- KEYS[1] = <base>:ready of the first account (routes the call: on a Redis Cluster every
--           account of a call is in that partition; a single server takes accounts of
--           any partitions in one call)
-- ARGV = max_depth, idempotency_ttl_s,
--        then per account: base, account, limit, window_ms, count (its events),
--        then per event: id, priority ('h'|'n'), ttl_ms, body, n, agent_1 .. agent_n
--        ('' = every agent), idempotency key or '', and its fingerprint when there is a
--        key (most events have none: an argument costs Redis about 1,000)
-- The default rate limit is written into the script's text, ahead of its helpers (see
-- `limit_settings` in script_queue.rs).
-- Returns per event, in order, 'ok' when it was stored, else {outcome, id, n} with
-- outcome dup | mismatch | full, or {'error', message} when its account's records could
-- not be read (another account's events are stored all the same); then, when some
-- accounts entered their ready set (their workers may be asleep), {'ready', base ...}
-- with each such partition's base once.
-- Every check of every account comes first. Then the writes: the accounts' changes (see
-- `changed`), then for each account its settings, the ready set and its new delivery ids
-- (pushed once per priority), then each event (one HSET) and last the idempotency keys.
-- A failure part-way leaves at worst ids of events that were never stored, which claims
-- drop as stale entries; an event is never stored without its ids.
-- An event's fields hold only what differs from what readers assume when a field is
-- missing: no 'exp' without a time to live, no 'prio' for 'n', no agent 'ag<k>' for every
-- agent, no 'at<k>', 'done' or 'dd' while they are 0.
--
-- This runs once per stored event, so it avoids what costs most in Redis's Lua: turning
-- text into numbers and back, and creating tables, closures and strings. One call serves
-- the accounts of every request waiting when it is sent, so that what a call costs by
-- itself (the command, its first two arguments, the clock) is shared by their events.
local max_depth, idem_ttl = tonumber(ARGV[1]), ARGV[2]
local now, now_s = now_ms()

-- An account's record and depth (undelivered calls: queued, waiting for a retry, and
-- those in flight, a lease group), read under `pcall`: an account whose keys cannot be
-- read fails its own events only.
local function read_account(akey, qh, qn, retry)
  local st = call('HMGET', akey, 'limit', 'window', 'busy', 'paused', 'auth_failed', 'until')
  local depth = call('LLEN', qh) + call('LLEN', qn) + call('ZCARD', retry)
  if st[3] and st[3] ~= '' then depth = depth + group_size(st[3]) end
  return st, depth
end

-- (tables built from a constructor of nils have room for one event's entries, the most
-- common call: Lua grows an empty table by rehashing it at each power of two)
local out = {nil}
-- per account with something to write: {base, account, record, limit, window, ids of
-- priority h, of n, whether its settings changed, its lists h and n}
local plans = {nil}
-- the events' keys and fields, the idempotency keys taken (key -> record) in the order
-- taken
local ekeys, efields = {nil}, {nil}
local idems, taken
-- the last time to live seen (text) and the expiry it gives: a batch's events most often
-- share theirs, converted and formatted once
local last_ttl, last_exp

local i = 3
while i <= #ARGV do
  local base, acct, limit, window, count_s = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3],
    ARGV[i + 4]
  i = i + 5
  local count = 1
  if count_s ~= '1' then count = tonumber(count_s) end
  local qh, qn = base .. ':q:' .. acct .. ':h', base .. ':q:' .. acct .. ':n'
  local ok, st, depth = pcall(read_account, base .. ':acct:' .. acct, qh, qn,
    base .. ':retry:' .. acct)
  local failed
  if not ok then
    -- (Redis raises a command's error as a table)
    failed = {'error', type(st) == 'table' and st.err or tostring(st)}
  end
  local pushed_h, pushed_n
  for _ = 1, count do
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
    local result = failed
    local idem
    if not result and ikey ~= '' then
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
  if not failed then
    local settings_changed = st[1] ~= limit or st[2] ~= window
    if settings_changed or pushed_h or pushed_n then
      plans[#plans + 1] = {base, acct, st, limit, window, pushed_h, pushed_n, settings_changed,
        qh, qn}
    end
  end
end

for p = 1, #plans do
  local plan = plans[p]
  changed(plan[1], plan[2], now_s)
end
-- the partitions where an account entered the ready set
local ready
-- At most 1,000 ids per RPUSH and 3,000 arguments per HSET (Lua's unpack has a stack
-- limit).
local function push(q, ids)
  for j = 1, #ids, 1000 do
    w('RPUSH', q, unpack(ids, j, math.min(j + 999, #ids)))
  end
end
for p = 1, #plans do
  local plan = plans[p]
  local base, acct, st, window = plan[1], plan[2], plan[3], plan[5]
  if plan[8] then
    w('HSET', base .. ':acct:' .. acct, 'limit', plan[4], 'window', window)
    w('SADD', base .. ':accounts', acct)
  end
  local pushed_h, pushed_n = plan[6], plan[7]
  -- An account with new work is ready unless busy or paused (as mark_ready, without
  -- re-reading what is known). One that was idle goes ahead of those served within the
  -- last window; a 429 pause still wins.
  if (pushed_h or pushed_n) and not (st[3] and st[3] ~= '') and st[4] ~= '1'
    and st[5] ~= '1' then
    -- (most accounts' window is the default, whose text is compared rather than converted)
    local at = now - (window == default_window_text and default_window or tonumber(window))
    local pause_until = st[6] and tonumber(st[6]) or 0
    if pause_until > at then at = pause_until end
    -- Newly ready: the caller announces it to every process's worker (which may sleep).
    if w('ZADD', base .. ':ready', 'NX', int(at), acct) == 1 then
      ready = ready or {'ready'}
      if ready[#ready] ~= base then ready[#ready + 1] = base end
    end
  end
  if pushed_h then push(plan[9], pushed_h) end
  if pushed_n then push(plan[10], pushed_n) end
end
for e = 1, #ekeys do
  local fields = efields[e]
  for j = 1, #fields, 3000 do
    w('HSET', ekeys[e], unpack(fields, j, math.min(j + 2999, #fields)))
  end
end
if idems then
  for _, idem in ipairs(idems) do
    w('SET', idem, taken[idem], 'EX', idem_ttl)
  end
end
if ready then
  out[#out + 1] = ready
end
return out
