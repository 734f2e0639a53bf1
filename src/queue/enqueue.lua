-- enqueue: stores events of one or more accounts.
-- KEYS[1] = <base>:ready of the first account (routes the call: on a Redis Cluster every
--           account of a call is in that partition; a single server takes accounts of
--           any partitions in one call)
-- ARGV = max_depth, idempotency_ttl_s, and what most of the call's accounts and events
--        share: limit, window_ms, ttl_ms;
--        then per account: base, account, count (its events), and its limit and window:
--        '' when they are the call's, else limit then window_ms;
--        then per event: its id (36 characters) followed by its form, its body, and
--        what the form says follows:
--          ''  normal priority, the call's time to live, one call to every agent, no
--              idempotency key (most events);
--          'k' the same, followed by an idempotency key and its fingerprint;
--          'x' followed by priority ('h'|'n'), ttl_ms, n, agent_1 .. agent_n ('' =
--              every agent), idempotency key or '', and its fingerprint when there is a
--              key.
--        (An argument costs Redis about 1,000 instructions, read and handed to Lua: most
--        events need two.)
-- The default rate limit is written into the script's text, ahead of its helpers (see
-- `limit_settings` in script_queue.rs).
-- Returns the number of events when every one was stored (most calls: a reply of an item
-- per event costs Redis about 700 instructions an event), else per event, in order, 'ok'
-- when it was stored, else {outcome, id, n} with outcome dup | mismatch | full, or
-- {'error', message} when a key of its account (its record, lists, retries when they are
-- counted, idempotency key, or its partition's change, account or ready set) could not be
-- used: the other accounts' events are stored all the same. Then, either way, when some
-- accounts entered their ready set (their workers may be asleep), {'ready', base ...}
-- naming each such partition (a name may repeat).
-- Every check of every account comes first, each account's reads under `pcall`. Then the
-- writes: account by account its change (see `changed`), the bound on its depth (`d`),
-- its settings and its place in the ready set, under `pcall` (an account that fails there
-- stores nothing); then every account's new delivery ids (pushed once per priority, under
-- `pcall` likewise), each event (one HSET) and last the idempotency keys. A failure
-- part-way leaves at worst a bound above the depth, ids of events that were never stored,
-- which are dropped as stale entries once a claim leased them, and accounts in the ready set with nothing queued,
-- which claims take out; an event is never stored without its ids.
-- An event's fields hold only what differs from what readers assume when a field is
-- missing: no 'exp' without a time to live, no 'prio' for 'n', no 'n' for one call, no
-- status 's<k>' while it is queued, no agent 'ag<k>' for every agent, no 'at<k>', 'done'
-- or 'dd' while they are 0, and no time of creation, which its id carries: a new event
-- is its body and its account.
--
-- This runs once per stored event, so it avoids what costs most in Redis's Lua: turning
-- text into numbers and back, and creating tables, closures and strings. One call serves
-- the accounts of every request waiting when it is sent, so that what a call costs by
-- itself (the command, its first five arguments, the clock) is shared by their events.
-- The functions above `-- @call` are the library's (see transport.rs), made once: they
-- take what they need of a call as arguments.

-- The message of an error caught by `pcall` (Redis raises a command's error as a table).
local function message(e)
  if type(e) == 'table' then return e.err end
  return tostring(e)
end

-- An account's record, read under `pcall` (an account whose keys cannot be read fails its
-- own events only): its settings, flags and `d`, a bound on its depth.
local function read_account(akey)
  return call('HMGET', akey, 'limit', 'window', 'busy', 'paused', 'auth_failed', 'until', 'd')
end

-- An account's depth (undelivered calls: queued, waiting for a retry, and those in
-- flight, a lease group), counted.
local function count_depth(st, qh, qn, retry)
  local depth = call('LLEN', qh) + call('LLEN', qn) + call('ZCARD', retry)
  if st[3] and st[3] ~= '' then depth = depth + group_size(st[3]) end
  return depth
end

-- An account's first writes, to keys that no read of it checked (its change, its
-- partition's account set and ready set), under `pcall`: an account whose partition's
-- keys cannot be written stores nothing, and the others go on. Whether it entered the
-- ready set (at `now`, whose text is `now_s`).
local function enter(plan, now, now_s)
  local base, acct, st, window = plan[1], plan[2], plan[3], plan[5]
  local akey, added, counted = base .. ':acct:' .. acct, plan[17], plan[18]
  changed(base, acct, now_s)
  -- the depth's bound, raised before the calls are pushed (or written as counted)
  local d_set = counted and int(counted + added)
  if plan[8] then
    if d_set then
      w('HSET', akey, 'limit', plan[4], 'window', window, 'd', d_set)
    else
      w('HSET', akey, 'limit', plan[4], 'window', window)
    end
    w('SADD', base .. ':accounts', acct)
  elseif d_set then
    w('HSET', akey, 'd', d_set)
  end
  if added > 0 and not d_set then
    w('HINCRBY', akey, 'd', added == 1 and '1' or int(added))
  end
  -- An account with new work is ready unless busy or paused (as mark_ready, without
  -- re-reading what is known). One that was idle goes ahead of those served within the
  -- last window; a 429 pause still wins.
  if not (plan[6] or plan[7]) or (st[3] and st[3] ~= '') or st[4] == '1' or st[5] == '1' then
    return false
  end
  -- (most accounts' window is the default, whose text is compared rather than converted)
  local at = now - (window == default_window_text and default_window or tonumber(window))
  local pause_until = st[6] and tonumber(st[6]) or 0
  if pause_until > at then at = pause_until end
  return w('ZADD', base .. ':ready', 'NX', int(at), acct) == 1
end

-- At most 1,000 ids per RPUSH and 3,000 arguments per HSET (Lua's unpack has a stack
-- limit).
local function push(q, ids)
  local n = #ids
  if n == 1 then
    w('RPUSH', q, ids[1])
  elseif n <= 1000 then
    w('RPUSH', q, unpack(ids))
  else
    for j = 1, n, 1000 do
      w('RPUSH', q, unpack(ids, j, math.min(j + 999, n)))
    end
  end
end
-- An account whose lists cannot be written stores nothing (its calls pushed so far are
-- ids of events never stored, dropped as stale once leased), and the others go on.
local function push_ids(plan)
  if plan[6] then push(plan[9], plan[6]) end
  if plan[7] then push(plan[10], plan[7]) end
end

-- @call
-- (a local: a global is looked up in a table at each use)
local ARGV = ARGV
local max_depth, idem_ttl = tonumber(ARGV[1]), ARGV[2]
local call_limit, call_window, call_ttl = ARGV[3], ARGV[4], ARGV[5]
local now, now_s = now_ms()

-- The record's `d` is never below the account's depth: this script raises it by the
-- calls it stores (before it pushes them), a replay removes it, and nothing else adds to
-- a depth; deliveries leave it as it is. A `d` of at most `bound_digits` digits stands for
-- `bound` (which is at least its value and at most a tenth of the largest depth allowed),
-- so most calls store without counting the depth or converting `d`. The depth is
-- counted when `d` is missing, when it has more digits (it has grown past `bound`), or
-- when `bound` would refuse an event; `d` is then written as counted, if the account
-- stores something or its settings change. So an account whose depth stays under `bound`
-- counts about once per `bound` calls it stores (every 10,000 with the default cap of
-- 100,000), one with a deeper backlog at every call, as every enqueue did before the
-- bound, and with a `max_depth` under 100 every account at every call. (Counting costs
-- three commands, about 11,700 instructions of Redis's; the raise, one, about 5,500.)
-- An account comes once per call (its requests are one run of the call's arguments,
-- see `enqueue_calls.rs`): its count, its bound and the idempotency keys its events take
-- are read and written once.
local bound_digits = #ARGV[1] - 2
local bound = 10 ^ bound_digits - 1

-- (tables built from a constructor of nils have room for one event's entries, the most
-- common call: Lua grows an empty table by rehashing it at each power of two)
local out = {nil}
-- per account with something to write: {base, account, record (the HMGET's fields),
-- limit, window, its new ids of priority h, of n, whether its settings changed, its lists
-- h and n, then where its outcomes (in `out`), events (in `events`) and idempotency keys
-- (in `idems`) start and end}
local plans = {nil}
-- each event's key and fields (the arguments of its HSET; false once its account failed),
-- the idempotency keys taken (key -> record) in the order taken
local events = {nil}
-- (their counts: the length operator searches a table for its end)
local nout, nev = 0, 0
-- whether every event so far was stored
local stored_all = true
local idems, taken
-- the last time to live seen (text) and the expiry it gives: a batch's events most often
-- share theirs, converted and formatted once
local last_ttl, last_exp, last_head

-- An account that fails with the outcome `failed` ({'error', message}) stores nothing:
-- its outcomes `out[o1..o2]` become it, and its events `events[e1..e2]` and idempotency
-- keys `idems[k1..k2]` are not written.
local function fail_account(failed, o1, o2, e1, e2, k1, k2)
  for j = o1, o2 do out[j] = failed end
  stored_all = false
  for j = e1, e2 do events[j] = false end
  for j = k1, k2 do idems[j] = false end
end

local i = 6
while i <= #ARGV do
  local base, acct, count_s, limit = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local window = call_window
  if limit == '' then
    limit = call_limit
    i = i + 4
  else
    window = ARGV[i + 4]
    i = i + 5
  end
  local count = 1
  if count_s ~= '1' then count = tonumber(count_s) end
  local qh, qn = base .. ':q:' .. acct .. ':h', base .. ':q:' .. acct .. ':n'
  local retry = base .. ':retry:' .. acct
  local ok, st = pcall(read_account, base .. ':acct:' .. acct)
  local failed, depth, counted
  if not ok then
    failed = {'error', message(st)}
  else
    local d = st[7]
    if d and #d <= bound_digits then
      depth = bound
    else
      ok, depth = pcall(count_depth, st, qh, qn, retry)
      if ok then
        counted = depth
      else
        failed = {'error', message(depth)}
      end
    end
  end
  -- the calls this account's events add
  local added = 0
  -- where this account's outcomes, events and idempotency keys start
  local out_from, ev_from, idem_from = nout + 1, nev + 1, (idems and #idems or 0) + 1
  local pushed_h, pushed_n
  local nh, nn = 0, 0
  for _ = 1, count do
    local eid, form, body = ARGV[i], '', ARGV[i + 1]
    if #eid ~= 36 then
      eid, form = string.sub(eid, 1, 36), string.sub(eid, 37)
    end
    i = i + 2
    local prio, ttl, n_s, n, ikey = 'n', call_ttl, '1', 1, ''
    -- (where the agents start: none in the short forms, whose one call goes to every agent)
    local first_agent
    if form == 'k' then
      ikey = ARGV[i]
      i = i + 1
    elseif form ~= '' then
      prio, ttl, n_s = ARGV[i], ARGV[i + 1], ARGV[i + 2]
      if n_s ~= '1' then n = tonumber(n_s) end
      first_agent = i + 3
      ikey = ARGV[i + 3 + n]
      i = i + 4 + n
    end
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
      -- a key taken earlier in this call is not written yet; one that cannot be read
      -- fails its event alone (a string's `err` is nil, an error reply's its message)
      local prev = (taken and taken[idem]) or try('GET', idem)
      if prev and prev.err then
        result = {'error', prev.err}
      elseif prev then
        local pfp, pid, pn = string.match(prev, '^(%S+) (%S+) (%d+)$')
        if pfp == fp then
          result = {'dup', pid, tonumber(pn)}
        else
          result = {'mismatch', pid or '', 0}
        end
      end
    end
    if not result then
      if depth + n > max_depth and not counted then
        -- the bound refuses it: the depth is counted
        ok, counted = pcall(count_depth, st, qh, qn, retry)
        if ok then
          depth = counted + added
        else
          -- the account fails whole, as when its first read fails: its events taken so
          -- far in this call are not stored
          failed = {'error', message(counted)}
          result = failed
          fail_account(failed, out_from, nout, ev_from, nev, idem_from, idems and #idems or 0)
          pushed_h, pushed_n = nil, nil
        end
      end
      if result then
        -- (the count failed)
      elseif depth + n > max_depth then
        result = {'full', '', 0}
      else
        -- An event of one call, most events, is stored in its first form, its time to
        -- live, agent and body in one field (see `first_form`); one of several calls, as
        -- its fields. The body (or the first form) comes first: Redis keeps a small hash
        -- in one buffer (a listpack, while every value is at most 64 bytes) and grows it
        -- field by field, and grown from the body it crosses fewer of the allocator's
        -- size classes, each a copy (2-4% of a batched event's work, by the Redis build,
        -- with bodies of about 45 bytes).
        local agent = first_agent and ARGV[first_agent] or ''
        local fields
        if ttl ~= last_ttl then
          last_ttl = ttl
          last_exp = ttl ~= '0' and int(now + tonumber(ttl)) or ''
          last_head = last_exp .. ' \n'
        end
        if n == 1 then
          local head = last_head
          if agent ~= '' then head = last_exp .. ' ' .. agent .. '\n' end
          fields = {base .. ':ev:' .. eid, 'q', head .. body, 'acct', acct, nil, nil}
        else
          fields = {base .. ':ev:' .. eid, 'body', body, 'acct', acct, 'n', n_s, nil, nil}
          if last_exp ~= '' then
            fields[8] = 'exp'
            fields[9] = last_exp
          end
          if agent ~= '' then
            fields[#fields + 1] = 'ag0'
            fields[#fields + 1] = agent
          end
        end
        -- the list of its priority's new ids, and their count
        local ids, ni
        if prio == 'h' then
          fields[#fields + 1] = 'prio'
          fields[#fields + 1] = 'h'
          pushed_h = pushed_h or {nil}
          ids, ni = pushed_h, nh
        else
          pushed_n = pushed_n or {nil}
          ids, ni = pushed_n, nn
        end
        ni = ni + 1
        ids[ni] = eid .. ':0'
        for k = 1, n - 1 do
          local ks = int(k)
          agent = ARGV[first_agent + k]
          if agent ~= '' then
            local f = #fields
            fields[f + 1] = 'ag' .. ks
            fields[f + 2] = agent
          end
          ni = ni + 1
          ids[ni] = eid .. ':' .. ks
        end
        if prio == 'h' then nh = ni else nn = ni end
        nev = nev + 1
        events[nev] = fields
        depth = depth + n
        added = added + n
        if idem then
          taken = taken or {}
          idems = idems or {}
          taken[idem] = fp .. ' ' .. eid .. ' ' .. n_s
          idems[#idems + 1] = idem
        end
        result = 'ok'
      end
    end
    nout = nout + 1
    out[nout] = result
    if result ~= 'ok' then stored_all = false end
  end
  if not failed then
    local settings_changed = st[1] ~= limit or st[2] ~= window
    -- (an account that stores nothing writes nothing: a full one only reads, as counted)
    if settings_changed or pushed_h or pushed_n then
      plans[#plans + 1] = {base, acct, st, limit, window, pushed_h, pushed_n, settings_changed,
        qh, qn, out_from, nout, ev_from, nev, idem_from, idems and #idems or 0, added,
        counted}
    end
  end
end

-- An account whose writes failed with the error `e` stores nothing, and pushes nothing
-- more.
local function fail_plan(plan, e)
  fail_account({'error', message(e)}, plan[11], plan[12], plan[13], plan[14], plan[15],
    plan[16])
  plan[6], plan[7] = nil, nil
end
-- the partitions where an account entered the ready set (the caller announces them to
-- every process's worker, which may sleep)
local ready
for p = 1, #plans do
  local plan = plans[p]
  local ok, entered = pcall(enter, plan, now, now_s)
  if not ok then
    fail_plan(plan, entered)
  elseif entered then
    local base = plan[1]
    ready = ready or {'ready'}
    if ready[#ready] ~= base then ready[#ready + 1] = base end
  end
end
for p = 1, #plans do
  local plan = plans[p]
  if plan[6] or plan[7] then
    local ok, e = pcall(push_ids, plan)
    if not ok then fail_plan(plan, e) end
  end
end
for e = 1, nev do
  local fields = events[e]
  if fields then
    local nf = #fields
    if nf <= 3001 then
      w('HSET', unpack(fields))
    else
      for j = 2, nf, 3000 do
        w('HSET', fields[1], unpack(fields, j, math.min(j + 2999, nf)))
      end
    end
  end
end
if idems then
  for j = 1, #idems do
    local idem = idems[j]
    if idem then w('SET', idem, taken[idem], 'EX', idem_ttl) end
  end
end
if stored_all then
  out = {nout}
end
if ready then
  out[#out + 1] = ready
end
return out
