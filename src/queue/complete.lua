-- complete: records how deliveries of one partition ended, each as if alone.
-- KEYS[1] = <base>:ready
-- ARGV = base, then per delivery: did, account, kind, lease token, upstream status or '',
--        then for kind 'delivered' (most are: their arguments are spared) what its claim
--        saw (see claim.lua), else error, delay_ms, reason
-- The retention of finished events (ms, as text) and the default rate limit are written
-- into the script's text, ahead of its helpers (see `complete_script` in script_queue.rs).
-- kind: delivered | retry | dead | ratelimited | authfailed | released
-- The caller holds the lease when its token is still the lease's end in the in-flight set
-- (a call's tokens only grow: see claim.lua), or, for the success of an event's only call,
-- when the call is in its account's lease group claimed at the time the claim gave it
-- (see `complete_one`). The attempt is counted here (`at`), when it
-- ends, except for one that did not count (a 429, refused credentials, a release); a
-- completion that ends a lease before its end records its token (`c`, always with `at`),
-- which the call's next lease ends after. The outcome of a caller that no longer holds
-- the lease is ignored, except that a late success still removes the delivery
-- everywhere, so it is not sent again. Returns {account, ms until it may send again, ...}
-- for the accounts the call freed whose window is full (none: empty).
-- Every delivery's account is recorded as changed first (see `changed_all`). Consecutive
-- deliveries of one account (a lease group's, most often) make a run, which reads the
-- account's record and the leases of its deliveries once, and writes the record once. A
-- run's writes go in this order: for each delivery, where it goes next and its status;
-- then the account (freed of them in one write: the account is free once its lease group
-- is), the ready set, and last the end of their leases. A completion that fails part-way
-- is finished by the caller's retry (the statuses tell how far it got) or, when the
-- leases end, by the reaper in claim.lua.
local argv = ARGV
local base = argv[1]
-- where each delivery's values start in argv
local starts = {}
do
  local i, n = 2, #argv
  while i <= n do
    starts[#starts + 1] = i
    if argv[i + 2] == 'delivered' then i = i + 6 else i = i + 8 end
  end
end
local now, now_s = now_ms()
local inflight = base .. ':inflight'

-- The run: its account, the account's record as read (`flags`: rl_at, busy, paused,
-- auth_failed, until, sent, rl, limit, window), and what the run changes in it.
local acct, akey, flags
local sent, extra, auth_failed, pause_until, count_429, freed, ends
-- The account's lease group as read (`busy`), in order, and the set of its members still
-- in flight, made when the run first looks at it; `left` counts the members the run freed.
local order, members, left
-- The run's calls that take their entry out of the rate log: `taken` of them, whose
-- entries start at `spots` (positions in the log as read, in order; `searched` is where
-- the search for the next one goes on), and `stamped` of them (those that were sent) put
-- one at this time in its place. The log is written once, when the run closes.
local taken, stamped, spots, searched
-- The accounts the call freed whose window is full, each with the ms until it may send.
local later = {}
-- the leases the run has ended (they leave the in-flight set when it closes)
local ended_leases

-- the run's deliveries, and their leases (did -> score, or false), read when a delivery
-- of the run first needs them (see `lease_of`)
local run_dids, leases

-- Opens the run of account `a` whose first delivery is the `from`th. (A table built from
-- a constructor of nils has room for that many entries: Lua grows an empty one by
-- rehashing it at each power of two, which a run's lists of up to a lease group's
-- deliveries would pay several times.)
local function open_run(a, from)
  acct = a
  akey = base .. ':acct:' .. a
  flags = call('HMGET', akey, 'rl_at', 'busy', 'paused', 'auth_failed', 'until', 'sent',
    'rl', 'limit', 'window')
  sent, extra = nil, {}
  auth_failed, pause_until, count_429 = flags[4], flags[5], nil
  freed, ends, ended_leases = false, {nil, nil, nil, nil, nil, nil, nil, nil}, {}
  order, members, left = nil, nil, 0
  taken, stamped, spots, searched = 0, 0, {nil, nil, nil, nil, nil, nil, nil, nil}, 1
  run_dids, leases = {nil, nil, nil, nil, nil, nil, nil, nil}, nil
  for j = from, #starts do
    local at = starts[j]
    if argv[at + 1] ~= a then break end
    run_dids[#run_dids + 1] = argv[at]
  end
end

-- The lease of the run's delivery `did` in the in-flight set (its end, or false), as
-- read once for all of the run's deliveries.
local function lease_of(did)
  if not leases then
    local scores = call('ZMSCORE', inflight, unpack(run_dids))
    leases = {}
    for j = 1, #run_dids do leases[run_dids[j]] = scores[j] end
  end
  return leases[did]
end

-- Whether `did` is in the account's lease group (in flight, not yet freed by the run).
local function in_flight(did)
  if not members then
    order, members = {nil, nil, nil, nil, nil, nil, nil, nil}, {}
    local busy = flags[2]
    if busy and busy ~= '' then
      -- (split at each space: a plain search costs less than a pattern's)
      local from = 1
      while true do
        local space = string.find(busy, ' ', from, true)
        if not space then
          -- (a lone member, the most common where the limit binds, is the whole text)
          order[#order + 1] = from == 1 and busy or string.sub(busy, from)
          break
        end
        order[#order + 1] = string.sub(busy, from, space - 1)
        from = space + 1
      end
      for i = 1, #order do members[order[i]] = true end
    end
  end
  return members[did] == true
end

-- The lease group as the run leaves it: its members not freed, in order.
local function group_left()
  local rest = {}
  for i = 1, #order do
    if members[order[i]] then rest[#rest + 1] = order[i] end
  end
  return table.concat(rest, ' ')
end

-- Takes one of the claim's entries (`rl_at`) out of the rate log for a call of the run;
-- false when the log as read holds no more of them.
local function take_entry()
  local s = flags[7] and log_find(flags[7], flags[1], searched)
  if not s then return false end
  taken = taken + 1
  spots[taken] = s
  searched = s + 13
  return true
end

-- The rate log as the run leaves it: the entries at this time first (newest first), then
-- the log as read without the entries taken.
local function rate_log()
  local log = flags[7]
  local parts, from = {}, 1
  if stamped > 0 then parts[1] = string.rep(now_s, stamped) end
  for i = 1, taken do
    local s = spots[i]
    if s > from then parts[#parts + 1] = string.sub(log, from, s - 1) end
    from = s + 13
  end
  parts[#parts + 1] = string.sub(log, from)
  return table.concat(parts)
end

-- Writes what the run changed in the account, marks it ready when a delivery of the run
-- may have freed it, and ends the leases of the run's deliveries, in that order.
local function close_run()
  if not acct then return end
  local set = extra
  local log = flags[7]
  if taken > 0 then
    log = rate_log()
    set[#set + 1] = 'rl'
    set[#set + 1] = log
  end
  local busy = flags[2]
  if left > 0 then
    busy = group_left()
    set[#set + 1] = 'busy'
    set[#set + 1] = busy
  end
  if sent then
    set[#set + 1] = 'sent'
    set[#set + 1] = int(sent)
  end
  if #set > 0 then
    w('HSET', akey, unpack(set))
  end
  if freed then
    -- A busy account left the ready set at its claim. A free one comes back at its next
    -- send, so that no claim visits it only to find its window full and re-score it.
    local at
    if not busy or busy == '' then at = rate_window(log, flags[8], flags[9], now) end
    if at and flags[3] ~= '1' and auth_failed ~= '1' then
      -- told to the caller, whose worker need not claim the partition for it before then
      -- (nor before a 429 pause ends)
      local paused_until = pause_until and tonumber(pause_until) or 0
      later[#later + 1] = acct
      later[#later + 1] = math.max(at, paused_until) - now
    end
    mark_ready(base, acct, now, now_s, at, {busy, flags[3], auth_failed, pause_until}, nil,
      flags[2] and flags[2] ~= '')
  end
  if #ends > 0 then
    w('ZREM', inflight, unpack(ends))
  end
  acct = nil
end

local function count_sent()
  sent = (sent or tonumber(flags[6] or '0') or 0) + 1
end

-- Holds the account after a 429 (until `delay` ms from now, counted) or refused
-- credentials (until an operator resumes it); the held set lets claims expire its events
-- meanwhile.
local function hold_account(kind, delay)
  if kind == 'ratelimited' then
    count_429 = (count_429 or tonumber(call('HGET', akey, 'upstream_429') or '0') or 0)
      + 1
    pause_until = int(now + tonumber(delay))
    extra[#extra + 1] = 'until'
    extra[#extra + 1] = pause_until
    extra[#extra + 1] = 'upstream_429'
    extra[#extra + 1] = int(count_429)
  elseif kind == 'authfailed' then
    auth_failed = '1'
    extra[#extra + 1] = 'auth_failed'
    extra[#extra + 1] = '1'
  else
    return
  end
  w('ZADD', base .. ':held', 'NX', now_s, acct)
end

-- Frees the account of delivery `did` (in the run's changes) and ends its lease. When
-- `logged` (the caller held the lease), the call takes its entry from its claim out of
-- the rate log, and one at this time goes in for it unless it was released unsent.
local function release(did, kind, logged, held)
  if logged and take_entry() and kind ~= 'released' then
    stamped = stamped + 1
  end
  if held then
    members[did] = nil
    left = left + 1
  end
  freed = true
  ends[#ends + 1] = did
  ended_leases[did] = true
end

-- Writes the event's fields for one more finished delivery (see `finish_fields`), and
-- expires a finished event after the retention.
local function finish(ekey, k, ev, status_to, fields, dead)
  local set, finished = finish_fields(k, status_to, fields, ev[3], ev[4], ev[5], dead)
  w('HSET', ekey, unpack(set))
  if finished then
    w('PEXPIRE', ekey, retention)
  end
end

-- The attempts (text) an owned completion that counts its attempt writes, from `at` as
-- read: one more, unless this lease's attempt was counted already (its token is in `c`,
-- which is only ever written with `at`: by a completion of it that failed part-way and
-- is done again, or by a reap that failed before its lease left the in-flight set).
local function attempts_after(ekey, k, at, token)
  if at and call('HGET', ekey, 'c' .. k) == token then return at end
  return next_attempt(at)
end

local function complete_one(did, kind, code, err, delay, reason, token, seen)
  local eid, k = split_did(did)
  local ekey = base .. ':ev:' .. eid
  local held = in_flight(did)
  -- (a first attempt, the most common, is told by one comparison: a cut costs more)
  local at
  if held and seen and seen ~= '' and flags[1] then
    if seen == flags[1] .. '-' then
      at = '-'
    elseif string.sub(seen, 1, 13) == flags[1] then
      at = string.sub(seen, 14)
    end
  end
  -- (an event of one call has only call 0)
  if at and k == '0' then
    -- The most common outcome: the success of an event's only call, by the holder of its
    -- lease, recorded without reading the lease or the event. The lease is this
    -- caller's: the call is in the account's lease group, claimed when the claim that
    -- leased it to the caller did (`rl_at`; a call that lost its lease left the group
    -- before its lease left the in-flight set, and a new claim of it is at a later time).
    -- Nothing but this lease's completion (this one, perhaps done again after a failure
    -- part-way) or a late success of an earlier lease (which records the same) finishes
    -- the call while the lease is held, so the event is written from what the claim
    -- read: after the claim's time, the attempts that had ended (`at`, '-' when
    -- missing). The attempts are then one more (a reap that counted this lease wrote
    -- just that), and the event is finished. The fields are those the success below
    -- writes through `finish` for an event of one unfinished call, written in one table
    -- with the payload emptied first: built through `finish`, the most common outcome
    -- cost Redis 2.5-3.5% more per delivered call (the table grown field by field, the
    -- appends moving the payload), and the names are call 0's (a name built for each
    -- call costs a concatenation).
    local set = {'body', '', 's0', 'delivered', 'done', '1', 'ls0', code, 'dt0', now_s, 'at0',
      '1', nil, nil}
    if at ~= '-' then
      set[12] = next_attempt(at)
      -- an earlier attempt's error goes
      set[13] = 'le0'
      set[14] = ''
    end
    w('HSET', ekey, unpack(set))
    w('PEXPIRE', ekey, retention)
    count_sent()
    release(did, kind, true, true)
    return
  end
  local leased = lease_of(did)
  if ended_leases[did] then leased = false end
  -- both are whole milliseconds in Redis's and the caller's text (Redis writes a score
  -- that is a whole number as one)
  local owned = leased == token
  -- What only the rarer outcomes need (the event's priority and attempts, the account's
  -- 429 count) is read by them.
  local ev = call('HMGET', ekey, 's' .. k, 'at' .. k, 'done', 'n', 'dd', 'acct')
  -- (a call's status is missing while it is queued; nothing is, of an event gone)
  local status = ev[1] or (ev[6] and 'queued')
  -- Upstream received this call at some moment before its answer came back: the holder of
  -- the lease counts the call from now, so that however long the request took on the way,
  -- upstream can never see more than `limit` calls in one window. The claim logged each
  -- call of its group at the claim's time (`rl_at`): this call's answer takes one of
  -- those entries (a released call, never sent, takes it away). A caller that lost its
  -- lease leaves the rate log alone: the reaper counted the call at the lease's end.
  local logged = owned and held
  local ended = status == false or status == 'delivered' or status == 'dead'
    or status == 'expired'
  if not ended and kind ~= 'delivered' and not owned then
    -- a failure reported by a caller that lost its lease: ignored
    return
  end
  if ended then
    if status and leased and not owned then
      -- another process holds a new lease on it (this is a late success done again, or
      -- a stale failure): that holder's completion finishes it
      return
    end
    -- Already finished (a late success recorded it while this caller held its lease, or
    -- this completion is a retry of one that failed part-way): finish what is left, end
    -- the lease and free the account (held, as its outcome says).
    if owned then
      hold_account(kind, delay)
      if status == 'delivered' and held then
        -- a late success left its count to the holder (a completion of its own that
        -- failed part-way freed the account with its count, in one write)
        count_sent()
      end
      if status == 'dead' or status == 'expired' then
        -- a replay may lease it again: its next lease ends after this one
        w('HSET', ekey, 'c' .. k, token, 'at' .. k, ev[2] or '0')
      end
    end
    if (status == 'dead' or status == 'expired') and held then
      w('ZADD', base .. ':dead:' .. acct, 'NX', now_s, did)
    elseif status == 'delivered' and is_finished(ev[3], ev[4], ev[5]) then
      w('PEXPIRE', ekey, retention)
    end
    release(did, kind, logged, held)
    return
  end
  local delivered_fields
  if kind == 'delivered' then
    delivered_fields = {'ls' .. k, code, 'dt' .. k, now_s}
    -- (a caller that lost its lease leaves the attempt to the reaper, which counted it)
    if owned then
      delivered_fields[5] = 'at' .. k
      delivered_fields[6] = attempts_after(ekey, k, ev[2], token)
    end
    -- an earlier attempt's error goes (only an attempt that ended, which left `at`,
    -- can have left one)
    if ev[2] then
      delivered_fields[#delivered_fields + 1] = 'le' .. k
      delivered_fields[#delivered_fields + 1] = ''
    end
  end
  if kind == 'delivered' and not owned and leased then
    -- A late success while another process holds a new lease on the call: record the
    -- success, and leave that lease, the account's busy flag and its rate entry to the
    -- holder, whose own completion (then stale) releases them. While the call is in the
    -- account's lease group, whoever takes it out (the holder's completion or, should
    -- the holder die, the reaper) counts the success, in the write that takes it out;
    -- once out of it (a claim, completion or reap of that lease failed part-way), no
    -- one will: it counts here.
    finish(ekey, k, ev, 'delivered', delivered_fields, false)
    if not held then count_sent() end
    return
  elseif kind == 'delivered' then
    if not owned and status == 'retrying' then
      -- due now: if this fails before the retry is removed, the next claim's reaper
      -- removes it (or, before the success is recorded, sends it again)
      w('ZADD', base .. ':delayed', 'XX', now_s, did)
    end
    finish(ekey, k, ev, 'delivered', delivered_fields, false)
    if not owned then
      -- a late success: remove the delivery wherever it is now (a copy left behind in a
      -- list is a stale entry, which claims drop)
      if status == 'retrying' then
        w('ZREM', base .. ':retry:' .. acct, did)
        w('ZREM', base .. ':delayed', did)
      else
        local list = base .. ':q:' .. acct .. ':' .. (call('HGET', ekey, 'prio') or 'n')
        if near_head(list, did) then
          -- put back at the front, so found at once; deeper down (rare) it stays as a
          -- stale entry for the claims to drop, rather than this call scanning the list
          w('LREM', list, '1', did)
        end
      end
    end
    count_sent()
    release(did, kind, logged, held)
    if not owned then
      -- no lease of its own to end
      ends[#ends] = nil
    end
    return
  end
  if kind == 'retry' then
    local due = int(now + tonumber(delay))
    w('ZADD', base .. ':delayed', due, did)
    w('ZADD', base .. ':retry:' .. acct, due, did)
    w('HSET', ekey, 's' .. k, 'retrying', 'at' .. k, attempts_after(ekey, k, ev[2], token),
      'c' .. k, token, 'ls' .. k, code, 'le' .. k, err)
  elseif kind == 'dead' then
    finish(ekey, k, ev, 'dead', {'dr' .. k, reason, 'ls' .. k, code, 'le' .. k, err,
      'at' .. k, attempts_after(ekey, k, ev[2], token), 'c' .. k, token}, true)
    w('ZADD', base .. ':dead:' .. acct, now_s, did)
  else
    -- ratelimited, authfailed, released: back to the front, the attempt does not count
    local list = base .. ':q:' .. acct .. ':' .. (call('HGET', ekey, 'prio') or 'n')
    if not near_head(list, did) then
      w('LPUSH', list, did)
    end
    -- the token with the attempts (as they were), which tell a claim to look for it
    local set = {'c' .. k, token, 'at' .. k, ev[2] or '0'}
    if status ~= 'queued' then
      set[5] = 's' .. k
      set[6] = 'queued'
    end
    if kind ~= 'released' then
      set[#set + 1] = 'ls' .. k
      set[#set + 1] = code
      set[#set + 1] = 'le' .. k
      set[#set + 1] = err
    end
    w('HSET', ekey, unpack(set))
    hold_account(kind, delay)
  end
  release(did, kind, logged, held)
end

-- The in-flight set is read before anything is written, as every completion read its
-- leases when each did: a call that cannot reach it (a broken key, a slot half-moved)
-- fails before its first write.
call('ZCARD', inflight)
-- Every account is recorded as changed before any write (a stale failure, which writes
-- nothing, is read again for nothing).
-- (a run's deliveries are consecutive: its account is named once)
local accts = {}
for j = 1, #starts do
  local a = argv[starts[j] + 1]
  if a ~= accts[#accts] then accts[#accts + 1] = a end
end
changed_all(base, accts, now_s)
-- the delay stays text until a retry or a pause needs it as a number
for j = 1, #starts do
  local i = starts[j]
  if argv[i + 1] ~= acct then
    close_run()
    open_run(argv[i + 1], j)
  end
  local kind = argv[i + 2]
  if kind == 'delivered' then
    complete_one(argv[i], kind, argv[i + 4], '', '0', '', argv[i + 3], argv[i + 5])
  else
    complete_one(argv[i], kind, argv[i + 4], argv[i + 5], argv[i + 6], argv[i + 7],
      argv[i + 3])
  end
end
close_run()
return later
