-- claim: leases the deliveries of up to `max` accounts of one partition that may send now.
-- KEYS[1] = <base>:ready
-- ARGV = base, max, and for a claim of calls behind those the gateway ended unsent (see
-- leased.rs), which the claim before swept, '1' (no retention sweep)
-- The process's settings are written into the script's text, ahead of its helpers (see
-- `claim_script` in script_queue.rs): lease, default_limit, default_window, margin (ms,
-- numbers), reap_max (and as a number reap_max_count), retention (finished events, ms),
-- sweep_interval (least time between two retention sweeps of the partition, ms) as
-- text, sweep_round (the time a round of the partition's accounts takes) and sweep_floor
-- (sweep_interval), dl_retention, acct_retention (ms, numbers), as text
-- default_limit_text and default_window_text, and default_cut (where the default limit's
-- oldest entry starts in a rate log: (default_limit - 1) * 13),
-- changes_kept (how long the change set remembers a change, ms; see snapshot.rs), and
-- group_max (most deliveries of a lease group), group_more (group_max - 1, as text),
-- group_allowance (ms a group's lease grows by per member after the first), and
-- claim_deliveries (most deliveries one call leases).
-- First puts back expired leases and due retries (at most reap_max of each), finishing
-- what a call that failed part-way left undone, turns expired heads of held accounts into
-- dead letters, and drops dead letters and idle accounts past their retention. Then, for
-- each due account (oldest score first): skips it while paused; if `limit` sends started
-- within window + margin, re-scores it to the moment the oldest of them leaves the
-- window; else takes its head delivery and, when the window has room for group_max
-- sends, those that follow it (a lease group), by their ids alone (the gateway reads
-- their events: see leased.rs), records a send start for each (which complete.lua moves
-- to when its answer came), leases them (writing nothing into their events: a call in
-- flight is one whose lease is in the in-flight set) and marks the account busy with
-- them.
-- Returns {ms until more work is due or -1, dead letters dropped, the claim's time (Redis
-- ms), then per lease group (an account is claimed once per call, so a reply holds at
-- most one group of each): its account, its number of deliveries and its lease's end
-- (Redis ms; the lease of its i-th delivery ends, and has its token, i - 1 ms earlier:
-- a lease's length is its distance from the claim's time), then its deliveries' ids, in
-- order}; the wait is computed only when nothing was claimed, or all that was due was.
-- The functions above `-- @call` are the library's (see transport.rs), made once: they
-- take what they need of a call as arguments.

-- The entries of the timed set `zset` due at `now_s` (at most reap_max), each handed with
-- its score (text) to `one`, which puts it back; true when it took as many as it may
-- (more may be due).
local function reap(zset, one, now_s)
  local due = call('ZRANGEBYSCORE', zset, '-inf', now_s, 'WITHSCORES', 'LIMIT', '0', reap_max)
  for i = 1, #due, 2 do
    one(due[i], due[i + 1])
  end
  return #due >= 2 * reap_max_count
end

-- The in-flight set's anchor: a member that is no delivery, at +inf (never due), which the
-- first lease a claim call grants adds (again, to no effect, once it is there). Redis keeps
-- a sorted set of at most 128 members of at most 64 bytes as a listpack, which every
-- insert walks, reading each member's score, and every removal searches member by
-- member; a longer member makes it a skiplist with an index of its members, and Redis
-- never turns it back while the set exists, which the anchor keeps it doing. A partition
-- with a few dozen calls in flight spends about a third as much on its leases.
local inflight_anchor = 'in-flight set anchor: keeps the set a skiplist (never due, never '
  .. 'a delivery id; see claim.lua)'

-- The score of the first entry of the sorted set `z` (nil when it is empty, or when that
-- is the in-flight set's anchor, at +inf).
local function head_at(z)
  local head = call('ZRANGE', z, '0', '0', 'WITHSCORES')
  local at = head[2] and tonumber(head[2])
  if at == math.huge then return nil end
  return at
end

-- Whether an account whose rate log is `rl` has room in its window at `now` for a whole
-- lease group: `group_max` sends now would leave at most `limit` in any window. The log
-- holds the newest `limit` sends, newest first: the entry `limit - group_max` back must
-- have left the window (as in the check of one send, whose entry is `limit - 1` back).
local function room_for_group(rl, limit, window, now)
  if group_max <= 1 or limit < group_max then return false end
  local at = (limit - group_max) * 13
  if #rl < at + 13 then return true end
  return tonumber(string.sub(rl, at + 1, at + 13)) + window + margin + 1 <= now
end

-- The digits' texts, by their value + 1 (see the leases' ends below).
local digit_texts = {'0', '1', '2', '3', '4', '5', '6', '7', '8', '9'}

-- @call
local base = ARGV[1]
-- max goes to Redis as it came, as text
local max = ARGV[2]
local now, now_s = now_ms()
local ready = base .. ':ready'
local inflight = base .. ':inflight'
local delayed = base .. ':delayed'

-- Whether this call does all the work due in the partition now (see the end).
local whole = true
-- Each timed set's first entry is read once: it tells whether anything there is due, and,
-- unless this call then changes what leads the set (false below: read it again), when
-- the next entry will be (see the end). The functions that put entries back are made
-- only when some are due: Redis makes a script's local functions at each of its calls,
-- at a cost that grows with the script's locals each uses (these two cost about 10,000
-- instructions, a tenth of a call that finds nothing to claim).
local inflight_at = head_at(inflight)
if inflight_at and inflight_at <= now then
  -- A lease that ended (its holder died, stalled, or its completion failed part-way): the
  -- delivery goes back to the front of its list unless its completion already decided
  -- otherwise, and the account is freed. The call counts as sent at the lease's end, the
  -- latest moment it could have reached upstream, and as an attempt (a put-back already
  -- at the front, which a completion or claim that failed part-way left, is not counted
  -- again: such a call was not sent, or its completion counted it). The lease leaves the
  -- in-flight set last, so a failure on the way leaves it to the next claim.
  local function reap_lease(did, lease_end)
    lease_end = tonumber(lease_end)
    local eid, k = split_did(did)
    local ekey = base .. ':ev:' .. eid
    local ev = event_fields(ekey, 'acct', 's' .. k, 'prio', 'done', 'n', 'dd', 'at' .. k,
      'dt' .. k, 'c' .. k)
    -- (a call's status is missing while it is queued)
    local acct, status = ev[1], ev[2] or 'queued'
    if not acct then
      -- (an id whose event is gone names no account: the sweep frees the account of it)
      w('ZREM', inflight, did)
      return
    end
    changed(base, acct, now_s)
    local akey = base .. ':acct:' .. acct
    local st = call('HMGET', akey, 'busy', 'rl_at', 'rl', 'sent')
    local held = in_group(st[1], did)
    -- the call's entry in the rate log (one of its group's, at the claim's time)
    local log = held and st[3] and log_without(st[3], st[2])
    local list = base .. ':q:' .. acct .. ':' .. (ev[3] or 'n')
    if status == 'queued' or status == 'delivering' then
      local pushed = not near_head(list, did)
      if pushed then
        w('LPUSH', list, did)
      end
      if status ~= 'queued' then
        -- an earlier layout's call, counted at its claim
        event_set(ekey, 's' .. k, 'queued')
      elseif pushed and ev[9] ~= int(lease_end) then
        -- with the lease's end, which tells a completion of it that the attempt is counted
        -- (a completion of this lease that counted it recorded that end: a retry's, which
        -- failed before the lease left the in-flight set, whose put-back then found the
        -- lease there and left the call to this reap)
        event_set(ekey, 'at' .. k, next_attempt(ev[7]), 'c' .. k, int(lease_end))
      end
    elseif (status == 'dead' or status == 'expired') and held then
      -- a dead-letter completion stopped before the account was freed
      w('ZADD', base .. ':dead:' .. acct, 'NX', now_s, did)
    elseif status == 'delivered' and is_finished(ev[4], ev[5], ev[6]) then
      w('PEXPIRE', ekey, retention)
    end
    if held then
      local set = {'busy', leave_group(st[1], did)}
      if log then
        set[3] = 'rl'
        set[4] = log_insert(log, int(lease_end))
      end
      if status == 'delivered'
        and (tonumber(ev[8] or '') or 0) >= (tonumber(st[2] or '') or 0) then
        -- a success the holder did not count (a late one leaves it to the holder; the
        -- holder's completion frees the account and counts it in one write); one before
        -- the group's claim (a stale entry, leased by its id) was counted then (one in
        -- the claim's millisecond is taken for one after it)
        set[#set + 1] = 'sent'
        set[#set + 1] = int((tonumber(st[4] or '0') or 0) + 1)
      end
      w('HSET', akey, unpack(set))
    end
    mark_ready(base, acct, now, now_s)
    w('ZREM', inflight, did)
  end
  if reap(inflight, reap_lease, now_s) then whole = false end
  inflight_at = false
end
local delayed_at = head_at(delayed)
if delayed_at and delayed_at <= now then
  -- A retry that is due goes back to the front of its list; an entry whose delivery is no
  -- longer waiting for a retry (a success arrived, or a put-back failed part-way) only
  -- leaves the sets.
  local function reap_retry(did)
    local eid, k = split_did(did)
    local ekey = base .. ':ev:' .. eid
    local ev = event_fields(ekey, 'acct', 's' .. k, 'prio')
    local acct = ev[1]
    if acct then
      changed(base, acct, now_s)
      if ev[2] == 'retrying' then
        -- (one in flight was leased from the copy a put-back that failed part-way left at
        -- the head: its lease's holder has it, and its status is set as that put-back's)
        local list = base .. ':q:' .. acct .. ':' .. (ev[3] or 'n')
        if not call('ZSCORE', inflight, did) and not near_head(list, did) then
          w('LPUSH', list, did)
        end
        event_set(ekey, 's' .. k, 'queued')
      end
      w('ZREM', base .. ':retry:' .. acct, did)
      mark_ready(base, acct, now, now_s)
    end
    w('ZREM', delayed, did)
  end
  if reap(delayed, reap_retry, now_s) then whole = false end
  delayed_at = false
end

-- Accounts held (paused by an operator, auth_failed, or in a 429 pause) are not claimed,
-- so their expired events would never reach a claim: the held set brings each back here
-- when its head may have expired, and its expired heads become dead letters (at most
-- held_max accounts and held_max entries per call). An account no longer held leaves the
-- set; one whose heads never expire is looked at again after held_recheck (ms).
local held = base .. ':held'
local held_max, held_max_text, held_recheck = 4, '4', 60000
local buried = 0
local held_at = head_at(held)
local due_held = {}
if held_at and held_at <= now then
  due_held = call('ZRANGEBYSCORE', held, '-inf', now_s, 'LIMIT', '0', held_max_text)
  held_at = false
end
if #due_held >= held_max then whole = false end
for _, acct in ipairs(due_held) do
  local st = call('HMGET', base .. ':acct:' .. acct, 'paused', 'auth_failed', 'until')
  if st[1] ~= '1' and st[2] ~= '1' and (st[3] and tonumber(st[3]) or 0) <= now then
    w('ZREM', held, acct)
  else
    local q = base .. ':q:' .. acct
    local next_check = now + held_recheck
    for _, prio in ipairs({'h', 'n'}) do
      local list = q .. ':' .. prio
      while buried < held_max do
        local did = call('LINDEX', list, '0')
        if not did then break end
        local eid, k = split_did(did)
        local ekey = base .. ':ev:' .. eid
        local ev = event_fields(ekey, 'exp', 's' .. k, 'done', 'n', 'dd', 'acct')
        local exp = ev[1] and tonumber(ev[1]) or 0
        -- (a call's status is missing while it is queued; nothing is, of an event gone)
        local status = ev[2] or (ev[6] and 'queued')
        if status == 'queued' or status == 'retrying' or status == 'delivering' then
          if exp <= 0 then break end
          if exp > now then
            if exp < next_check then next_check = exp end
            break
          end
          changed(base, acct, now_s)
          -- the status, then the letter, then off the list (as in a claim)
          local set = finish_fields(k, 'expired', {'dr' .. k, 'expired', 'ls' .. k, '',
            'le' .. k, 'time to live passed before delivery'}, ev[3], ev[4], ev[5], true)
          event_set(ekey, unpack(set))
          w('ZADD', base .. ':dead:' .. acct, now_s, did)
        elseif (status == 'dead' or status == 'expired')
          and not call('ZSCORE', base .. ':dead:' .. acct, did) then
          changed(base, acct, now_s)
          w('ZADD', base .. ':dead:' .. acct, now_s, did)
        end
        changed(base, acct, now_s)
        w('LPOP', list)
        buried = buried + 1
      end
    end
    if buried >= held_max then
      next_check = now
      whole = false
    end
    w('ZADD', held, int(next_check), acct)
  end
end

-- Bounded growth: a few accounts of the partition per sweep (a cursor walks the account
-- set), each losing the dead letters older than their retention (counted in the
-- reply), and its record dropped once it has been idle (no events, dead letters or hold)
-- for the account retention (its rate log goes with it, so not while the latest send it
-- logs still counts in the account's window). One call visits at most
-- sweep_accounts accounts and drops at most sweep_drops letters: a page of the scan that
-- holds more (a small set comes whole, whatever COUNT says) is finished by the next
-- sweeps, after the account recorded beside the cursor (or, if that one has gone, from its
-- recorded position: a page that changed meanwhile may see an account twice or skip one
-- until the next round). Each sweep then pauses the partition's sweeps for its share of a
-- round (sweep_round times the accounts it visited over those the partition had), so a
-- round of all of them takes about sweep_round, but never less than sweep_interval
-- between two sweeps (a partition of over 8 * sweep_round / sweep_interval accounts takes
-- longer). A sweep that used up its drops lets the next claim sweep at once, so a backlog
-- of old letters drains at the claims' pace, a few at a time.
local dropped = 0
local sweep_accounts, sweep_drops = 8, 16
if not ARGV[3] and w('SET', base .. ':sweep', '1', 'PX', sweep_interval, 'NX') then
  local cursor_key = base .. ':sweep:at'
  local at = call('HMGET', cursor_key, 'cursor', 'last', 'pos')
  local cursor, last = at[1] or '0', at[2]
  local scan = call('SSCAN', base .. ':accounts', cursor, 'COUNT', '16')
  local page = scan[2]
  local pos = math.min(tonumber(at[3] or '0') or 0, #page)
  if last then
    for i, a in ipairs(page) do
      if a == last then
        pos = i
        break
      end
    end
  end
  -- the accounts visited, and those of them whose record was dropped
  local visited, gone = 0, 0
  while pos < #page and visited < sweep_accounts and dropped < sweep_drops do
    pos = pos + 1
    visited = visited + 1
    local acct = page[pos]
    local akey = base .. ':acct:' .. acct
    local dead = base .. ':dead:' .. acct
    local st = call('HMGET', akey, 'busy', 'paused', 'auth_failed', 'until', 'idle_since',
      'rl', 'window', 'rl_at')
    if st[1] and st[1] ~= '' and (tonumber(st[8] or '') or 0) + lease
      + group_max * group_allowance < now then
      -- A lease group claimed longer ago than any of its leases lasts: the account is freed
      -- of the calls no longer in flight (the reaper finds no account for a call whose
      -- event is gone, which a claim leases by its id alone: the gateway's completion of it
      -- frees the account, unless the gateway died first).
      local members = {}
      for m in string.gmatch(st[1], '%S+') do members[#members + 1] = m end
      local leased = call('ZMSCORE', inflight, unpack(members))
      local kept = {}
      for i = 1, #members do
        if leased[i] then kept[#kept + 1] = members[i] end
      end
      if #kept < #members then
        changed(base, acct, now_s)
        st[1] = table.concat(kept, ' ')
        w('HSET', akey, 'busy', st[1])
        if st[1] == '' then mark_ready(base, acct, now, now_s) end
      end
    end
    local old = call('ZRANGEBYSCORE', dead, '-inf', int(now - dl_retention), 'LIMIT', '0',
      int(sweep_drops - dropped))
    for _, did in ipairs(old) do
      changed(base, acct, now_s)
      forget_letter(base, dead, did, retention)
      dropped = dropped + 1
    end
    if dropped >= sweep_drops and #old > 0 then
      -- this account may hold more: the next sweep starts with it again
      pos = pos - 1
    else
      local q = base .. ':q:' .. acct
      local idle = not (st[1] and st[1] ~= '') and st[2] ~= '1' and st[3] ~= '1'
        and (st[4] and tonumber(st[4]) or 0) <= now
        and call('EXISTS', q .. ':h', q .. ':n', base .. ':retry:' .. acct, dead) == 0
      if idle then
        local since = tonumber(st[5] or '')
        -- the rate log goes with the record: not while its latest send counts
        local latest = st[6] and tonumber(string.sub(st[6], 1, 13))
        local counts = latest
          and latest + (tonumber(st[7] or '') or default_window) + margin + 1 > now
        if not since then
          w('HSET', akey, 'idle_since', now_s)
        elseif now - since >= acct_retention and not counts then
          -- the change tells readers of the stats that the account has gone
          changed(base, acct, now_s)
          w('DEL', akey)
          w('ZREM', held, acct)
          w('ZREM', ready, acct)
          w('SREM', base .. ':accounts', acct)
          gone = gone + 1
        end
      elseif st[5] then
        w('HDEL', akey, 'idle_since')
      end
    end
  end
  if dropped >= sweep_drops then
    -- more letters may be due: the next claim sweeps again, without waiting the interval
    w('DEL', base .. ':sweep')
    whole = false
  end
  if pos < #page then
    w('HSET', cursor_key, 'cursor', cursor, 'last', page[pos] or '', 'pos', int(pos))
  elseif scan[1] == '0' then
    w('DEL', cursor_key)
    -- changes older than changes_kept are forgotten: a reader of the stats that last
    -- read before then reads the partition whole
    w('ZREMRANGEBYSCORE', base .. ':changed', '-inf', '(' .. int(now - changes_kept))
  else
    w('HSET', cursor_key, 'cursor', scan[1], 'last', '', 'pos', '0')
  end
  if dropped < sweep_drops and sweep_round > sweep_floor then
    -- this sweep's share of a round (a round of none: the partition has no accounts)
    local accounts = call('SCARD', base .. ':accounts') + gone
    local pause = sweep_round
    if accounts > visited then pause = math.floor(sweep_round * visited / accounts) end
    if pause > sweep_floor then
      w('SET', base .. ':sweep', '1', 'PX', int(pause))
    end
  end
end

-- The deliveries leased, in the reply: each group adds its head (its account, its calls
-- and its lease's end) and its calls' ids to `out`, a flat list, as Redis turns each table
-- of a reply into an array at a cost. (Its nils give it room for a few groups' entries:
-- Lua grows a table by rehashing it at each power of two.)
local out = {-1, 0, now, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil,
  nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil}
local claimed = 0
-- the earliest end of the leases this call granted
local first_lease_end
local accts = call('ZRANGEBYSCORE', ready, '-inf', now_s, 'LIMIT', '0', max)
-- The accounts that leave the ready set (leased, busy or held), in one command after the
-- last: one left in it by a failure on the way is busy or held, which the next claim that
-- reads it finds. (A table built from a constructor of nils has room for that many.)
local unready = {nil, nil, nil, nil, nil, nil, nil, nil,
  nil, nil, nil, nil, nil, nil, nil, nil}
-- each account below has its ready score written, at least
changed_all(base, accts, now_s)
for a = 1, #accts do
  local acct = accts[a]
  -- past the budget, the remaining accounts wait, untouched, for the next call
  local room = claim_deliveries - claimed
  if room <= 0 then
    whole = false
    break
  end
  local akey = base .. ':acct:' .. acct
  local st = call('HMGET', akey, 'busy', 'paused', 'auth_failed', 'until', 'limit',
    'window', 'rl', 'le')
  local pause_until = st[4] and tonumber(st[4]) or 0
  if (st[1] and st[1] ~= '') or st[2] == '1' or st[3] == '1' then
    unready[#unready + 1] = acct
  elseif pause_until > now then
    w('ZADD', ready, int(pause_until), acct)
  else
    -- The rate log: the times of the latest sends, newest first, 13 digits each.
    local rl = st[7] or ''
    local free_at, limit, cut, window = rate_window(rl, st[5], st[6], now)
    if free_at then
      w('ZADD', ready, int(free_at), acct)
    else
      -- The heads are leased by their ids alone: no event is read here. The gateway reads
      -- each one it leased, sends those still waiting to be sent, and ends the lease of
      -- the others (a stale entry of a finished or removed event, an expired one) by a
      -- completion (see `leased.rs`). The list's first entries are read in one command:
      -- when the window has room for a lease group, as many as a group holds, to be sent
      -- one after another under one claim.
      local span = '0'
      if room > 1 and room_for_group(rl, limit, window, now) then span = group_more end
      local list = base .. ':q:' .. acct .. ':h'
      local heads = call('LRANGE', list, '0', span)
      if #heads == 0 then
        list = base .. ':q:' .. acct .. ':n'
        heads = call('LRANGE', list, '0', span)
      end
      local n = #heads
      if n > room then n = room end
      if n > 8 then
        -- (an id listed twice, a stale copy, ends the group before it)
        local seen = {}
        for j = 1, n do
          local did = heads[j]
          if seen[did] then
            n = j - 1
            break
          end
          seen[did] = true
        end
      elseif n > 1 then
        -- (the same, in a group of at most 8 by comparing each id with those before it,
        -- which costs less than a table of them)
        for j = 2, n do
          local did = heads[j]
          for e = 1, j - 1 do
            if heads[e] == did then
              n = j - 1
              break
            end
          end
          if n < j then break end
        end
      end
      if n == 0 then
        w('ZREM', ready, acct)
        mark_ready(base, acct, now, now_s)
      else
        -- Every member's lease ends at the group's end less its place in ms: a reaper
        -- takes the last first, so its put-backs leave the group in order at the head. A
        -- lease's end is its token, so a call's tokens must never repeat: the account's
        -- leases end after the last one it was granted (`le`, written with each group),
        -- so its calls' tokens only grow. (A call with a token from before `le` was kept,
        -- which the gateway finds in the event's `c`, is put back and `le` raised: see
        -- complete.lua.)
        local lease_end = now + lease + (n - 1) * group_allowance
        local last = st[8] and tonumber(st[8])
        if last and last + n > lease_end then lease_end = last + n end
        if not first_lease_end or lease_end - n + 1 < first_lease_end then
          first_lease_end = lease_end - n + 1
        end
        -- (the nils give the table room for a group's entries: Lua grows an empty table by
        -- rehashing it at each power of two; the first group of the call puts the anchor
        -- ahead of them, two more)
        local leases = {nil, nil, nil, nil, nil, nil, nil, nil, nil,
          nil, nil, nil, nil, nil, nil, nil, nil, nil}
        local from = 0
        if claimed == 0 then
          leases[1] = '+inf'
          leases[2] = inflight_anchor
          from = 2
        end
        local o = #out
        out[o + 1] = acct
        out[o + 2] = n
        out[o + 3] = lease_end
        o = o + 3
        -- (the ends after the first are written from its text while only its last digit
        -- changes: a `string.format` costs several times a join)
        local end_text = int(lease_end)
        local stem, last
        if n > 1 then stem, last = string.sub(end_text, 1, -2), string.byte(end_text, -1) - 48 end
        for i = 1, n do
          local did = heads[i]
          if i == 1 then
            leases[from + 1] = end_text
          elseif last >= i - 1 then
            leases[from + 2 * i - 1] = stem .. digit_texts[last - i + 2]
          else
            leases[from + 2 * i - 1] = int(lease_end - i + 1)
          end
          leases[from + 2 * i] = did
          out[o + i] = did
        end
        claimed = claimed + n
        -- The events are not written: a call in flight is one whose lease is in the
        -- in-flight set, and its lease's end (its score there) is its token. Its attempt
        -- is counted when it ends.
        w('ZADD', inflight, unpack(leases))
        -- the log keeps the newest `limit` (this group's sends among them, one entry at
        -- this time each); a long one (a high limit) only those that can still hold back
        -- a send under the current window and margin, as it is copied at each send (a
        -- window raised later does not bring the dropped times back)
        local rest = string.sub(rl, 1, cut - (n - 1) * 13)
        if #rest > 128 * 13 then
          rest = string.sub(rest, 1, recent_sends(rest, now - window - margin - 1) * 13)
        end
        local stamps = now_s
        if n > 1 then stamps = string.rep(now_s, n) end
        w('HSET', akey, 'busy', table.concat(heads, ' ', 1, n), 'rl_at', now_s, 'rl',
          stamps .. rest, 'le', leases[from + 1])
        unready[#unready + 1] = acct
        if n == 1 then
          w('LPOP', list)
        else
          w('LTRIM', list, int(n), '-1')
        end
      end
    end
  end
end

if #unready > 0 then
  w('ZREM', ready, unpack(unready))
end
out[2] = dropped
-- More accounts may be due than `max` let this call read.
if #accts >= tonumber(max) then whole = false end
-- The wait is of use to a caller that got nothing, and to one that got all that is due
-- now: the caller need not claim the partition again before then, unless its completions
-- free an account or new work comes.
if claimed > 0 and not whole then
  return out
end
-- Every timed piece of work: an account's next send, a retry, a lease running out, a held
-- account's next look for expired events. The ready set has changed (its accounts were
-- claimed or moved); the others' first entries are as read at the start unless this call
-- changed what leads them, and the leases it granted end after `now`.
if inflight_at == false then inflight_at = head_at(inflight) end
if first_lease_end and (not inflight_at or first_lease_end < inflight_at) then
  inflight_at = first_lease_end
end
if delayed_at == false then delayed_at = head_at(delayed) end
if held_at == false then held_at = head_at(held) end
local next_due = -1
-- (the sets that are empty leave holes, which `pairs` passes over)
for _, at in pairs({head_at(ready), delayed_at, inflight_at, held_at}) do
  local wait = at - now
  if wait < 0 then wait = 0 end
  if next_due < 0 or wait < next_due then next_due = wait end
end
out[1] = next_due
return out
