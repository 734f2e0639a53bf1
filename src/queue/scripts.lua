-- Shared helpers, ahead of each of the gateway's Lua scripts in its library (see
-- transport.rs: each script is a Redis function, whose library's helpers are made once,
-- when it is loaded, not at every call; see script_queue.rs for the key layout). Every key a script touches is derived from `base`, which carries the
-- partition's hash tag, so all of them live in one Redis Cluster slot. (On a single
-- server, an enqueue call serves accounts of several partitions, each under its own base.)
--
-- Redis does not roll back a script that fails part-way. So every script reads and checks
-- first and then writes in an order where each prefix of its writes leaves a state the
-- next calls complete or repair (see "Partial failures" in script_queue.rs); every write
-- goes through `w`, which lets the tests fail a script after any one of them.

-- `redis.call` as a local (a global's lookup would cost every call), and `w`, the same
-- command for every write; `redis.pcall` as a local: a command's error comes back as a
-- table with its `err`. A library's code runs at its load, where Redis gives it no
-- `redis.call`: `begin` sets them at the start of each call.
local call, w, try
-- the account whose change `changed` recorded last in this call
local changed_last

-- What each call of a script starts with (its function calls it first): the locals above
-- as each call starts them, as the library's locals outlive a call.
local function begin()
  call, try = redis.call, redis.pcall
  w = call
  changed_last = nil
end

-- Redis's clock in milliseconds, as a number and as its text (the text is cut from
-- TIME's seconds and microseconds: cheaper than formatting the number).
local function now_ms()
  local t = call('TIME')
  local text = t[1] .. string.sub('00000' .. t[2], -6, -4)
  return tonumber(text), text
end

-- An integral number as a command argument. Redis turns a Lua number argument into text
-- with "%.17g", and Lua's `..` with "%.14g"; "%d" costs a fraction of either, which
-- matters on the per-event paths.
local function int(x)
  return string.format('%d', x)
end

-- An event is a hash of its fields (see script_queue.rs), but for the most common of
-- finished events: one of a single call that was delivered is kept, until its retention
-- ends, as its summary, a string `delivered <attempts> <upstream status> <delivered at,
-- ms> <agent, or nothing> <account>` (written in one command by complete.lua, which
-- replaces the hash and sets the expiry). The fields of the summary at `ekey`, as its
-- hash's would read (`acct`, `s0`, `done`, `at0`, `ls0`, `dt0`, `ag0`; the others
-- missing).
local function summary_fields(ekey)
  local status, at, code, dt, agent, acct = string.match(call('GET', ekey) or '',
    '^(%S+) (%d+) (%S*) (%d+) (%S*) (.*)$')
  return {acct = acct, s0 = status, done = status and '1', at0 = at, dt0 = dt,
    ls0 = code ~= '' and code or nil, ag0 = agent ~= '' and agent or nil}
end

-- The summary of an event of one call delivered (see `summary_fields`): after
-- `attempts`, with upstream status `code`, at `now_s`, by `agent` ('' for every agent), of
-- account `acct` (each text).
local function summary_text(attempts, code, now_s, agent, acct)
  return 'delivered ' .. attempts .. ' ' .. code .. ' ' .. now_s .. ' ' .. agent .. ' ' .. acct
end

-- A new event of one call is stored in its first form: its time to live, agent and body
-- in one field, `q` = `<exp> <agent>\n<body>` (the first two empty when it has none; the
-- agent is digits), beside its account (and its priority, when high). The gateway reads
-- it with one `HGET` after the claim that leased its call (see leased.rs), where reading
-- those fields with the call's status and attempts takes an `HMGET` of six (or an
-- `HGETALL`). The event's first write (a failure, a put-back, an expiry) writes them out
-- as the fields they stand for (`exp`, `ag0`, `body`) and empties `q`, in the same `HSET`
-- (`event_set`): an event with fields of its state has no `q`. The time to live (text),
-- agent (nil when none) and body in `q`.
local function first_form(q)
  local space, newline = string.byte(q, 14, 15)
  if space == 32 and newline == 10 then
    -- (the most common: a time to live, and every agent)
    return string.sub(q, 1, 13), nil, string.sub(q, 16)
  end
  space = string.find(q, ' ', 1, true)
  newline = string.find(q, '\n', 1, true)
  local exp, agent = string.sub(q, 1, space - 1), string.sub(q, space + 1, newline - 1)
  return exp ~= '' and exp or nil, agent ~= '' and agent or nil, string.sub(q, newline + 1)
end

-- The fields named `...` of the event at `ekey`, as `HMGET` reads them (false when
-- missing), from its hash, its first form (see `first_form`) or its summary. The hash is
-- read first: a summary, a string, makes that read fail with `WRONGTYPE` (any other
-- failure is raised as the command itself raises it).
local function event_fields(ekey, ...)
  local n = select('#', ...)
  local ev = try('HMGET', ekey, 'q', ...)
  local out = {}
  if ev.err then
    if not string.find(ev.err, 'WRONGTYPE', 1, true) then
      call('HMGET', ekey, ...)
    end
    local summary = summary_fields(ekey)
    for i = 1, n do
      out[i] = summary[select(i, ...)] or false
    end
    return out
  end
  for i = 1, n do out[i] = ev[i + 1] end
  local q = ev[1]
  if q and q ~= '' then
    local exp, agent, body = first_form(q)
    for i = 1, n do
      local name = select(i, ...)
      if name == 'body' then
        out[i] = body
      elseif name == 'exp' then
        out[i] = exp or false
      elseif name == 'ag0' then
        out[i] = agent or false
      end
    end
  end
  return out
end

-- `HSET` of fields of the event at `ekey` (field, value, ...): an event in its first form
-- (see `first_form`) has them written after the fields its `q` stands for, and `q`
-- emptied, in the same command.
local function event_set(ekey, ...)
  local q = call('HGET', ekey, 'q')
  if not q or q == '' then
    w('HSET', ekey, ...)
    return
  end
  local exp, agent, body = first_form(q)
  local set = {'q', '', 'body', body, nil, nil, nil, nil}
  if exp then
    set[5] = 'exp'
    set[6] = exp
  end
  if agent then
    set[#set + 1] = 'ag0'
    set[#set + 1] = agent
  end
  local n = #set
  for i = 1, select('#', ...) do
    set[n + i] = (select(i, ...))
  end
  w('HSET', ekey, unpack(set))
end

-- "<event id>:<index>" -> event id, index
local function split_did(did)
  return string.match(did, '^(.+):(%d+)$')
end

-- Forgets one dead letter `did` of the dead set `dead` (a purge, or its retention ran
-- out): the letter leaves the set first, then its event's dead count drops; an event whose
-- calls have all finished and that has no dead letter left loses its payload and expires
-- after `retention` ms (a number or its text), like any finished event. A failure after
-- the first write leaves at worst an event that keeps its payload.
local function forget_letter(base, dead, did, retention)
  local eid = split_did(did)
  local ekey = eid and (base .. ':ev:' .. eid)
  local ev = {}
  if ekey then ev = event_fields(ekey, 'dd', 'done', 'n') end
  w('ZREM', dead, did)
  if ev[1] then
    local dd = (tonumber(ev[1]) or 1) - 1
    if dd <= 0 and (tonumber(ev[2] or '0') or 0) >= (tonumber(ev[3] or '1') or 0) then
      event_set(ekey, 'dd', int(dd), 'body', '')
      w('PEXPIRE', ekey, retention)
    else
      event_set(ekey, 'dd', int(dd))
    end
  end
end

-- Records that `acct` changed what the stats of its account show, at `now_s` (Redis's
-- clock, ms, as text): the partition's change set (`<base>:changed`, account -> time of
-- its latest change) lets a process that keeps the stats read again only the accounts
-- changed since its last read (see snapshot.rs). Every script that writes an account's
-- record, lists, retries, dead letters or ready score calls it (or `changed_all`), before
-- those writes, so that a script that fails part-way still leaves its account to be read
-- again. Not through `w`: no later call depends on it, so a failure right after it is one
-- before the script's first write. A call for the account recorded last does nothing (a script's
-- writes to one account come together).
local function changed(base, acct, now_s)
  if changed_last == acct then return end
  changed_last = acct
  call('ZADD', base .. ':changed', now_s, acct)
end

-- As `changed`, for each of the accounts `accts` (a list, repeats allowed), in one
-- command: for a script that writes to several accounts, called before its first write
-- to any of them.
local function changed_all(base, accts, now_s)
  local n = #accts
  if n == 0 then return end
  -- (the nils give it room for 16 accounts' arguments: Lua grows a table by rehashing it
  -- at each power of two)
  local args = {nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil,
    nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil}
  for i = 1, n do
    args[2 * i - 1] = now_s
    args[2 * i] = accts[i]
  end
  call('ZADD', base .. ':changed', unpack(args))
end

-- Puts the account into the ready set when it has queued work and is neither busy
-- (a delivery in flight) nor paused. Its score is the earliest time it may send and
-- orders the accounts: `score` (default `now`) lets an account that was idle enter ahead
-- of accounts that were just served, so a quiet account never waits a whole rotation
-- behind thousands of backlogged ones, or one whose window is full enter when it has room
-- again. A 429 pause still wins over it. `known` gives the
-- account's {busy, paused, auth_failed, until} when the caller already has them;
-- `queued` is true when the caller knows the account has queued work (when it has none
-- after all, the claim that finds its lists empty takes it out of the set again);
-- `unlisted` is true when the caller knows the account is not in the set (it was busy),
-- so that one without queued work has nothing to leave (should it be there after all,
-- the claim that finds its lists empty takes it out). `now_s` is `now` as text.
local function mark_ready(base, acct, now, now_s, score, known, queued, unlisted)
  local st = known
  if not st then
    st = call('HMGET', base .. ':acct:' .. acct, 'busy', 'paused', 'auth_failed', 'until')
  end
  if (st[1] and st[1] ~= '') or st[2] == '1' or st[3] == '1' then
    return
  end
  local q = base .. ':q:' .. acct
  -- Redis deletes empty lists, so "exists" means "has queued work"
  if not queued and call('EXISTS', q .. ':h', q .. ':n') == 0 then
    if not unlisted then
      w('ZREM', base .. ':ready', acct)
    end
    return
  end
  local at = score or now
  local pause_until = st[4] and tonumber(st[4]) or 0
  if pause_until > at then
    at = pause_until
  end
  local text = now_s
  if at ~= now then text = int(at) end
  w('ZADD', base .. ':ready', 'NX', text, acct)
end

-- The event's fields that record one more finished delivery (delivered, dead or expired):
-- `fields` (more field/value pairs of the event, a table of the caller's that this
-- extends) with them added; and whether the event is then finished: every delivery done
-- and none a dead letter. A finished event's payload is emptied in the same write, and the
-- caller expires it after the retention. `done`, `n` and `dd` are the event's fields as
-- read (a missing `n` is one call); `dead` is true for a dead letter. The common case,
-- the first finished delivery of an event of one, converts nothing; the dead count is
-- written only when it grows.
local function finish_fields(k, status, fields, done, n, dd, dead)
  local done_n, done_text = 1, '1'
  if done then
    done_n = (tonumber(done) or 0) + 1
    done_text = int(done_n)
  end
  local set = fields
  local at = #set
  set[at + 1] = 's' .. k
  set[at + 2] = status
  set[at + 3] = 'done'
  set[at + 4] = done_text
  local dd_n = 0
  if dd and dd ~= '0' then dd_n = tonumber(dd) or 0 end
  if dead then
    dd_n = dd_n + 1
    set[at + 5] = 'dd'
    set[at + 6] = int(dd_n)
  end
  local total = 1
  if n and n ~= '1' then total = tonumber(n) or 0 end
  local finished = done_n >= total and dd_n == 0
  if finished then
    set[#set + 1] = 'body'
    set[#set + 1] = ''
  end
  return set, finished
end

-- A call's attempts counted with one more, as text, from its `at` field as read (absent
-- before its first attempt ends).
local function next_attempt(at)
  if not at then return '1' end
  return int((tonumber(at) or 0) + 1)
end

-- Whether an event whose fields `done`, `n`, `dd` were read has finished (a missing `n`
-- is one call).
local function is_finished(done, n, dd)
  return (tonumber(done or '0') or 0) >= (tonumber(n or '1') or 0)
    and (tonumber(dd or '0') or 0) == 0
end

-- How many of the times that lead the rate log `log` (send times in ms, newest first, 13
-- digits each, no separator) are after `since`: found by bisection, one entry read per
-- step.
local function recent_sends(log, since)
  local lo, hi = 0, #log / 13
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if tonumber(string.sub(log, mid * 13 + 1, mid * 13 + 13)) > since then
      lo = mid + 1
    else
      hi = mid
    end
  end
  return lo
end

-- Whether `did` is among the first entries of `list`. Put-backs check it first, so that
-- a put-back that failed after its push and is then done again pushes only once: in
-- between, only a few put-backs of the same account can come to the front of its list
-- (the other members of its lease group and due retries, while the account is busy
-- until its group is back).
local function near_head(list, did)
  return call('LPOS', list, did, 'MAXLEN', '64') ~= false
end

-- Lease groups. An account's `busy` field holds the deliveries of its group in flight,
-- their ids separated by single spaces, in the order they are sent (one delivery alone
-- is a group of one). Whether `did` is among them:
local function in_group(busy, did)
  if busy == did then return true end
  if not busy or busy == '' then return false end
  return string.find(' ' .. busy .. ' ', ' ' .. did .. ' ', 1, true) ~= nil
end

-- `busy` without `did` (as it was when `did` is not in it).
local function leave_group(busy, did)
  if busy == did then return '' end
  local s, e = string.find(' ' .. busy .. ' ', ' ' .. did .. ' ', 1, true)
  if not s then return busy end
  -- in the padded text, the id with its spaces spans s..e; in `busy`, s-1..e-1
  if s == 1 then return string.sub(busy, e) end
  return string.sub(busy, 1, s - 2) .. string.sub(busy, e - 1)
end

-- How many deliveries the group `busy` holds.
local function group_size(busy)
  if not busy or busy == '' then return 0 end
  if not string.find(busy, ' ', 1, true) then return 1 end
  local _, spaces = string.gsub(busy, ' ', ' ')
  return spaces + 1
end

-- Where the first entry of the rate log `log` equal to `at` (13 digits) starts, at or
-- after position `from`: nil when there is none (the entries are not separated, so a
-- match must start where an entry does).
local function log_find(log, at, from)
  if not at or #at ~= 13 then return nil end
  while true do
    local s = string.find(log, at, from, true)
    if not s then return nil end
    if (s - 1) % 13 == 0 then return s end
    from = s + 1
  end
end

-- The rate log `log` without one entry equal to `at` (13 digits), or nil when it has
-- none: a group's claim logs one entry at its time per member, and each member's answer
-- (or lease end) takes one of them.
local function log_without(log, at)
  local s = log_find(log, at, 1)
  if not s then return nil end
  return string.sub(log, 1, s - 1) .. string.sub(log, s + 13)
end

-- The rate log `log` (newest first) with the time `at` (13 digits) put where it belongs.
local function log_insert(log, at)
  local t = tonumber(at)
  local n = #log / 13
  for i = 0, n - 1 do
    if tonumber(string.sub(log, i * 13 + 1, i * 13 + 13)) <= t then
      return string.sub(log, 1, i * 13) .. at .. string.sub(log, i * 13 + 1)
    end
  end
  return log .. at
end

-- An account's limit, where its oldest counted send starts in a rate log ((limit - 1) *
-- 13) and its window (ms), from its record's `limit` and `window` fields as read (the
-- process's defaults when missing: most accounts' are, and their text is compared rather
-- than converted); and when, with the rate log `rl` (send times, newest first), it may
-- send next: when the oldest of its newest `limit` sends leaves the window, margin
-- included (nil: at `now`, it may). Only for the scripts whose text declares the default
-- limit (see `limit_settings` in script_queue.rs).
local function rate_window(rl, limit_text, window_text, now)
  local limit, cut, window = default_limit, default_cut, default_window
  if limit_text and limit_text ~= default_limit_text then
    limit = tonumber(limit_text) or default_limit
    cut = (limit - 1) * 13
  end
  if window_text and window_text ~= default_window_text then
    window = tonumber(window_text) or default_window
  end
  local free_at
  -- Times are whole milliseconds, rounded down: one more makes the real gap between a
  -- send and the one `limit` sends back at least the window.
  if rl and #rl >= cut + 13 then
    free_at = tonumber(string.sub(rl, cut + 1, cut + 13)) + window + margin + 1
    if free_at <= now then free_at = nil end
  end
  return free_at, limit, cut, window
end
