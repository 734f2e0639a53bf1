-- complete: records how deliveries of one partition ended, each as if alone.
-- KEYS[1] = <base>:ready
-- ARGV = base, then per run of one account's deliveries: the account, then per delivery:
--        did, lease token, then for a success (most are: their arguments are spared) its
--        upstream status, what the gateway read of it (see `seen` in leased.rs) and,
--        for a call 0, its event's key (else ''), else its kind, upstream status or '',
--        error, delay_ms, reason; a run after the first starts with '' (then its account);
--        a run of one lease group's successes (see `whole_group_success` in
--        script_queue.rs) may instead follow its account with '*', what the claim saw
--        (shared), its first call's token (each next call's is one less), the upstream
--        status of all of them or '', then per delivery: did, its event's key and, when
--        the run's status is '', its own
-- The retention of finished events (ms, as text) and the default rate limit are written
-- into the script's text, ahead of its helpers (see `complete_script` in script_queue.rs).
-- kind: delivered (a success, whose kind is not sent) | retry | dead | ratelimited |
-- authfailed | released, or one the gateway sends for a call it leased and did not send
-- (see leased.rs): stale (its event had finished or gone), expired (its time to live had
-- passed at the claim's time, which delay_ms then carries), again (its token was not
-- above the one its event recorded, `c`, which delay_ms then carries: it goes back to the
-- front, and the account's next leases end after that one)
-- The caller holds the lease when its token is still the lease's end in the in-flight set
-- (a call's tokens only grow: see claim.lua), or, for the success of an event's only call,
-- when the call is in its account's lease group claimed at the time the claim gave it
-- (the common path, in the loop at the end). The attempt is counted here (`at`), when it
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
-- is) and the ready set. The leases of every run end last, in one command. A completion
-- that fails part-way is finished by the caller's retry (the statuses tell how far it
-- got) or, when the leases end, by the reaper in claim.lua.
local argv = ARGV
local base = argv[1]
-- where each delivery's values start in argv, its account and its kind, and the runs'
-- accounts (a table built from a constructor of nils has room for that many entries:
-- Lua grows an empty one by rehashing it at each power of two; these have room for the
-- deliveries of most calls)
local starts = {nil, nil, nil, nil, nil, nil, nil, nil,
  nil, nil, nil, nil, nil, nil, nil, nil}
local owners = {nil, nil, nil, nil, nil, nil, nil, nil,
  nil, nil, nil, nil, nil, nil, nil, nil}
local kinds = {nil, nil, nil, nil, nil, nil, nil, nil,
  nil, nil, nil, nil, nil, nil, nil, nil}
local accts = {nil, nil, nil, nil, nil, nil, nil, nil,
  nil, nil, nil, nil, nil, nil, nil, nil}
local deliveries = 0
-- The runs sent as one lease group's successes: at their first delivery's place, what
-- they share ({what the claim saw, the first call's token (a number), their ids as the
-- group's `busy` reads while all of it is in flight, their number, their upstream status
-- when it is the same for all, else false}); and each of their
-- deliveries' place in its run (from 0: its token is the first's less its place).
local wholes, places = {}, {nil, nil, nil, nil, nil, nil, nil, nil,
  nil, nil, nil, nil, nil, nil, nil, nil}
do
  local i, n, a = 3, #argv, argv[2]
  accts[1] = a
  while i <= n do
    if argv[i] == '' then
      a = argv[i + 1]
      accts[#accts + 1] = a
      i = i + 2
    elseif argv[i] == '*' then
      local first, dids = deliveries + 1, {nil, nil, nil, nil, nil, nil, nil, nil}
      local seen, token, code = argv[i + 1], tonumber(argv[i + 2]), argv[i + 3]
      -- (each delivery's upstream status follows its key unless the run's is given)
      local step = code == '' and 3 or 2
      i = i + 4
      while i <= n and argv[i] ~= '' do
        deliveries = deliveries + 1
        starts[deliveries] = i
        owners[deliveries] = a
        kinds[deliveries] = 'delivered'
        places[deliveries] = deliveries - first
        dids[deliveries - first + 1] = argv[i]
        i = i + step
      end
      if deliveries >= first then
        wholes[first] = {seen, token, table.concat(dids, ' '), deliveries - first + 1,
          code ~= '' and code}
      end
    else
      deliveries = deliveries + 1
      starts[deliveries] = i
      owners[deliveries] = a
      local kind = argv[i + 2]
      if kind == 'retry' or kind == 'dead' or kind == 'ratelimited' or kind == 'authfailed'
        or kind == 'released' or kind == 'stale' or kind == 'expired' or kind == 'again'
      then
        i = i + 7
      else
        kind = 'delivered'
        i = i + 5
      end
      kinds[deliveries] = kind
    end
  end
end
local now, now_s = now_ms()
local inflight = base .. ':inflight'

-- The run: its account, the account's record as read (`flags`: rl_at, busy, paused,
-- auth_failed, until, sent, rl, limit, window), and what the run changes in it
-- (`sent_more`: the successes it counts).
local acct, akey, flags
local sent_more, extra, auth_failed, pause_until, count_429, freed
-- the least end of the account's next leases (its `le`) an `again` raised it to
local le_floor
-- The account's lease group as read (`busy`), in order, and the set of its members still
-- in flight; `left` counts the members the run freed.
local order, members, left
-- The run's calls that take their entry out of the rate log: `taken` of them, whose
-- entries start at `spots` (positions in the log as read, in order; `searched` is where
-- the search for the next one goes on), and `stamped` of them (those that were sent) put
-- one at this time in its place. The log is written once, when the run closes.
local taken, stamped, spots, searched
-- what the gateway read of a first attempt after its claim (see `seen` in leased.rs):
-- the claim's time and '-'
local first_seen
-- The accounts the call freed whose window is full, each with the ms until it may send.
local later = {}
-- the deliveries whose leases the call has ended (they leave the in-flight set together,
-- after the last run)
local ends = {nil, nil, nil, nil, nil, nil, nil, nil,
  nil, nil, nil, nil, nil, nil, nil, nil}
-- where the run's deliveries start among `starts`, and their leases (did -> score, or
-- false), read when a delivery of the run first needs them (see `lease_of`)
local run_from, leases
-- the last delivery of a run recorded whole as its lease group's successes (see below)
local whole_to = 0
-- an empty table, never written: the members of a group recorded whole
local none = {}

-- The outcomes other than the most common (the success of an event's only call by the
-- holder of its lease, recorded in the loop below): delivery `did` (of event key `ekey`,
-- call `k`), `held` when it is in the account's lease group. Returns nothing when the
-- delivery keeps its lease and its account (an outcome ignored or left to another
-- holder); else whether the caller held the lease (`logged`: its call takes its entry out
-- of the rate log), and true when the delivery has no lease of its own to end. It is
-- made in the loop below, by the first delivery that needs it, and the functions it holds
-- when it runs: Redis's Lua makes a script's functions anew at each of its calls, at a
-- cost that grows with the script's locals each uses (about 9,600 instructions for this
-- one), which most calls, all of whose deliveries take the common path, do not pay.
local complete_other

-- The in-flight set is read before anything is written, as every completion read its
-- leases when each did: a call that cannot reach it (a broken key, a slot half-moved)
-- fails before its first write.
call('ZCARD', inflight)
-- Every account is recorded as changed before any write (a stale failure, which writes
-- nothing, is read again for nothing).
if deliveries > 0 then changed_all(base, accts, now_s) end
-- Each delivery in turn; a run closes when the next delivery is of another account, or
-- after the last (the pass past the end). The common path makes no function: it is
-- written out here rather than in functions of its own (see `complete_other`).
-- (the delay stays text until a retry or a pause needs it as a number)
for j = 1, deliveries + 1 do
  local i, a = starts[j], owners[j]
  if a ~= acct and acct then
    -- The run closes: what it changed in the account is written, then the account is
    -- marked ready when a delivery of the run may have freed it (the leases of the run's
    -- deliveries end after the last run's).
    local set = extra
    local log = flags[7]
    if taken > 0 then
      -- The rate log as the run leaves it: the entries at this time first (newest
      -- first), then the log as read without the entries taken.
      if spots[taken] == 13 * taken - 12 then
        -- (the entries taken lead the log, the most common: a group's whole, or its
        -- first; the spots only grow)
        log = string.rep(now_s, stamped) .. string.sub(log, 13 * taken + 1)
      else
        local parts, from = {}, 1
        if stamped > 0 then parts[1] = string.rep(now_s, stamped) end
        for t = 1, taken do
          local s = spots[t]
          if s > from then parts[#parts + 1] = string.sub(log, from, s - 1) end
          from = s + 13
        end
        parts[#parts + 1] = string.sub(log, from)
        log = table.concat(parts)
      end
      set[#set + 1] = 'rl'
      set[#set + 1] = log
    end
    local busy = flags[2]
    if left > 0 then
      -- the lease group as the run leaves it: its members not freed, in order (none, of
      -- a group recorded whole)
      busy = ''
      if #order > 0 then
        local rest = {}
        for o = 1, #order do
          if members[order[o]] then rest[#rest + 1] = order[o] end
        end
        busy = table.concat(rest, ' ')
      end
      set[#set + 1] = 'busy'
      set[#set + 1] = busy
    end
    if le_floor then
      set[#set + 1] = 'le'
      set[#set + 1] = int(le_floor)
    end
    if sent_more > 0 then
      set[#set + 1] = 'sent'
      set[#set + 1] = int((tonumber(flags[6] or '0') or 0) + sent_more)
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
        -- told to the caller, whose worker need not claim the partition for it before
        -- then (nor before a 429 pause ends)
        local paused_until = pause_until and tonumber(pause_until) or 0
        later[#later + 1] = acct
        later[#later + 1] = math.max(at, paused_until) - now
      end
      mark_ready(base, acct, now, now_s, at, {busy, flags[3], auth_failed, pause_until},
        nil, flags[2] and flags[2] ~= '')
    end
    acct = nil
  end
  if a and a ~= acct then
    -- The run of account `a` opens with this delivery. (A table built from a constructor
    -- of nils has room for that many entries: Lua grows an empty one by rehashing it at
    -- each power of two, which a run's lists of up to a lease group's deliveries would
    -- pay several times.)
    acct = a
    akey = base .. ':acct:' .. a
    flags = call('HMGET', akey, 'rl_at', 'busy', 'paused', 'auth_failed', 'until', 'sent',
      'rl', 'limit', 'window')
    sent_more, extra, le_floor = 0, {nil, nil, nil, nil, nil, nil, nil, nil}, nil
    auth_failed, pause_until, count_429 = flags[4], flags[5], nil
    freed = false
    left = 0
    taken, stamped, spots, searched = 0, 0, {nil, nil, nil, nil, nil, nil, nil, nil}, 1
    run_from, leases = j, nil
    first_seen = flags[1] and flags[1] .. '-'
    local busy = flags[2]
    local whole = wholes[j]
    -- (a group recorded whole reads none of its members: see below)
    order, members = none, none
    if whole and whole[1] == first_seen and busy == whole[3] and flags[7]
      and string.sub(flags[7], 1, 13 * whole[4]) == string.rep(flags[1], whole[4]) then
      -- A lease group's successes, each the first attempt of an event of one call, by
      -- the holder of the group's lease: the group is as its claim left it (its
      -- members all in flight, in order, under that claim's time), so each call is the
      -- common outcome below, recorded in one pass. Its entries in the rate log are the
      -- log's first (the claim put them there, and only the group's own ends take them
      -- out), each replaced by one at this time; the account is freed of the whole group.
      local n = whole[4]
      -- (the summary is the same for the calls of one upstream status: most often all)
      local text_of, text
      local code = whole[5]
      for d = j, j + n - 1 do
        local i = starts[d]
        if not whole[5] then code = argv[i + 2] end
        if code ~= text_of then
          text = summary_text('1', code, now_s, '', acct)
          text_of = code
        end
        w('SET', argv[i + 1], text, 'PX', retention)
        ends[#ends + 1] = argv[i]
      end
      sent_more, left, freed = n, n, true
      taken, stamped = n, n
      for t = 1, n do spots[t] = 13 * t - 12 end
      whole_to = j + n - 1
    else
      -- the lease group's members (split at each space: a plain search costs less than a
      -- pattern's)
      order, members = {nil, nil, nil, nil, nil, nil, nil, nil}, {}
      if busy and busy ~= '' then
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
        for o = 1, #order do members[order[o]] = true end
      end
    end
  end
  if i and j > whole_to then
    local did, kind, token = argv[i], kinds[j], argv[i + 1]
    local code = kind == 'delivered' and argv[i + 2] or argv[i + 3]
    local seen, ekey = argv[i + 3], argv[i + 4]
    local place = places[j]
    if place then
      -- (of a run sent as a lease group's successes: see the top)
      local whole = wholes[j - place]
      token, code, seen, ekey = int(whole[2] - place), whole[5] or argv[i + 2], whole[1],
        argv[i + 1]
    end
    local held = members[did] == true
    -- What the caller saw of its claim, for a success by the holder of its lease: a first
    -- attempt's, the most common, is told by one comparison (a cut costs more).
    local at, agent = nil, ''
    seen = kind == 'delivered' and held and first_seen and seen
    if seen and seen ~= '' then
      if seen == first_seen then
        at = '-'
      elseif string.sub(seen, 1, 13) == flags[1] then
        at = string.sub(seen, 14)
        local space = string.find(at, ' ', 1, true)
        if space then
          agent = string.sub(at, space + 1)
          at = string.sub(at, 1, space - 1)
        end
      end
    end
    local logged, unleased
    -- (an event of one call has only call 0, whose key the caller sends)
    ekey = at and ekey
    if ekey and ekey ~= '' then
      -- The most common outcome: the success of an event's only call, by the holder of
      -- its lease, recorded without reading the lease or the event. The lease is this
      -- caller's: the call is in the account's lease group, claimed when the claim that
      -- leased it to the caller did (`rl_at`; a call that lost its lease left the group
      -- before its lease left the in-flight set, and a new claim of it is at a later
      -- time). Nothing but this lease's completion (this one, perhaps done again after a
      -- failure part-way) or a late success of an earlier lease (which records the same)
      -- finishes the call while the lease is held, so the event is written from what the
      -- claim read: after the claim's time, the attempts that had ended (`at`, '-' when
      -- missing), and its agent. The attempts are then one more (a reap that counted this
      -- lease wrote just that), and the event is finished: it becomes its summary (see
      -- `summary_fields`), which replaces its hash and expires after the retention, in one
      -- command.
      local attempts = '1'
      if at ~= '-' then
        attempts = next_attempt(at)
        if at == '0' then
          -- (a replayed call: a replay that failed before its last write left it among
          -- the dead letters; see `complete_other`)
          w('ZREM', base .. ':dead:' .. acct, did)
        end
      end
      w('SET', ekey, summary_text(attempts, code, now_s, agent, acct), 'PX', retention)
      sent_more = sent_more + 1
      logged = true
    else
      local eid, k = split_did(did)
      ekey = base .. ':ev:' .. eid
      if not complete_other then
        -- (made at its first use: see above)
        complete_other = function(did, ekey, k, kind, code, err, delay, reason, token, held)
          -- The lease of the run's delivery `d` in the in-flight set (its end, or false: a
          -- lease this call has ended), as read once for all of the run's deliveries.
          local function lease_of(d)
            for e = 1, #ends do
              if ends[e] == d then return false end
            end
            if not leases then
              local dids = {nil, nil, nil, nil, nil, nil, nil, nil}
              for j = run_from, deliveries do
                if owners[j] ~= acct then break end
                dids[#dids + 1] = argv[starts[j]]
              end
              local scores = call('ZMSCORE', inflight, unpack(dids))
              leases = {}
              for j = 1, #dids do leases[dids[j]] = scores[j] end
            end
            return leases[d]
          end

          -- Holds the account after a 429 (until `delay` ms from now, counted) or refused
          -- credentials (until an operator resumes it); the held set lets claims expire its
          -- events meanwhile.
          local function hold_account(kind, delay)
            if kind == 'ratelimited' then
              count_429 = (count_429
                or tonumber(call('HGET', akey, 'upstream_429') or '0') or 0)
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

          -- Writes the event's fields for one more finished delivery (see `finish_fields`),
          -- and expires a finished event after the retention.
          local function finish(ekey, k, ev, status_to, fields, dead)
            local set, finished = finish_fields(k, status_to, fields, ev[3], ev[4], ev[5],
              dead)
            event_set(ekey, unpack(set))
            if finished then
              w('PEXPIRE', ekey, retention)
            end
          end

          -- The attempts (text) an owned completion that counts its attempt writes, from
          -- `at` as read: one more, unless this lease's attempt was counted already (its
          -- token is in `c`, which is only ever written with `at`: by a completion of it
          -- that failed part-way and is done again, or by a reap that failed before its
          -- lease left the in-flight set).
          local function attempts_after(ekey, k, at, token)
            if at and call('HGET', ekey, 'c' .. k) == token then return at end
            return next_attempt(at)
          end

          local leased = lease_of(did)
          -- both are whole milliseconds in Redis's and the caller's text (Redis writes a
          -- score that is a whole number as one)
          local owned = leased == token
          -- What only the rarer outcomes need (the event's priority and attempts, the
          -- account's 429 count) is read by them.
          local ev = event_fields(ekey, 's' .. k, 'at' .. k, 'done', 'n', 'dd', 'acct',
            'rp' .. k, 'dt' .. k)
          -- (a call's status is missing while it is queued; nothing is, of an event gone)
          local status = ev[1] or (ev[6] and 'queued')
          if owned and ev[7] == '1' then
            -- A replayed call (see replay.lua): a replay that failed before its last write
            -- left it among the dead letters, which its first lease's holder clears.
            w('ZREM', base .. ':dead:' .. acct, did)
            event_set(ekey, 'rp' .. k, '')
          end
          -- Upstream received this call at some moment before its answer came back: the
          -- holder of the lease counts the call from now, so that however long the request
          -- took on the way, upstream can never see more than `limit` calls in one window.
          -- The claim logged each call of its group at the claim's time (`rl_at`): this
          -- call's answer takes one of those entries (a released call, never sent, takes it
          -- away). A caller that lost its lease leaves the rate log alone: the reaper
          -- counted the call at the lease's end.
          local logged = owned and held
          local ended = status == false or status == 'delivered' or status == 'dead'
            or status == 'expired'
          if not ended and kind ~= 'delivered' and not owned then
            -- a failure reported by a caller that lost its lease: ignored
            return
          end
          if ended then
            if status and leased and not owned then
              -- another process holds a new lease on it (this is a late success done again,
              -- or a stale failure): that holder's completion finishes it
              return
            end
            -- Already finished (a late success recorded it while this caller held its
            -- lease, or this completion is a retry of one that failed part-way): finish
            -- what is left, end the lease and free the account (held, as its outcome says).
            if owned then
              hold_account(kind, delay)
              if status == 'delivered' and held
                and (kind ~= 'stale'
                  or (tonumber(ev[8] or '') or 0) >= (tonumber(flags[1] or '') or 0)) then
                -- a late success left its count to the holder (a completion of its own that
                -- failed part-way freed the account with its count, in one write); a stale
                -- entry (the gateway read the call finished) was delivered before this
                -- lease's claim unless its success came after it, when its account's group
                -- held it (one in the claim's millisecond is taken for one after it)
                sent_more = sent_more + 1
              end
              if status == 'dead' or status == 'expired' then
                -- a replay may lease it again: its next lease ends after this one
                event_set(ekey, 'c' .. k, token, 'at' .. k, ev[2] or '0')
              end
            end
            if (status == 'dead' or status == 'expired') and held then
              w('ZADD', base .. ':dead:' .. acct, 'NX', now_s, did)
            elseif status == 'delivered' and is_finished(ev[3], ev[4], ev[5]) then
              w('PEXPIRE', ekey, retention)
            end
            return logged
          end
          if kind == 'stale' then
            -- read finished or gone, now waiting again (a replay since put it at the back
            -- of its list): that copy is the one to send
            return logged
          end
          local delivered_fields
          if kind == 'delivered' then
            delivered_fields = {'ls' .. k, code, 'dt' .. k, now_s}
            -- (a caller that lost its lease leaves the attempt to the reaper, which counted
            -- it)
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
            -- A late success while another process holds a new lease on the call: record
            -- the success, and leave that lease, the account's busy flag and its rate entry
            -- to the holder, whose own completion (then stale) releases them. While the
            -- call is in the account's lease group, whoever takes it out (the holder's
            -- completion or, should the holder die, the reaper) counts the success, in the
            -- write that takes it out; once out of it (a claim, completion or reap of that
            -- lease failed part-way), no one will: it counts here.
            finish(ekey, k, ev, 'delivered', delivered_fields, false)
            if not held then sent_more = sent_more + 1 end
            return
          elseif kind == 'delivered' then
            if not owned and status == 'retrying' then
              -- due now: if this fails before the retry is removed, the next claim's reaper
              -- removes it (or, before the success is recorded, sends it again)
              w('ZADD', base .. ':delayed', 'XX', now_s, did)
            end
            finish(ekey, k, ev, 'delivered', delivered_fields, false)
            if not owned then
              -- a late success: remove the delivery wherever it is now (a copy left behind
              -- in a list is a stale entry, dropped once a claim leased it)
              if status == 'retrying' then
                w('ZREM', base .. ':retry:' .. acct, did)
                w('ZREM', base .. ':delayed', did)
              else
                local list = base .. ':q:' .. acct .. ':'
                  .. (call('HGET', ekey, 'prio') or 'n')
                if near_head(list, did) then
                  -- put back at the front, so found at once; deeper down (rare) it stays as
                  -- a stale entry for the claims to drop, rather than this call scanning
                  -- the list
                  w('LREM', list, '1', did)
                end
              end
            end
            sent_more = sent_more + 1
            -- (a late success has no lease of its own to end)
            return logged, not owned
          end
          if kind == 'retry' then
            local due = int(now + tonumber(delay))
            w('ZADD', base .. ':delayed', due, did)
            w('ZADD', base .. ':retry:' .. acct, due, did)
            event_set(ekey, 's' .. k, 'retrying', 'at' .. k,
              attempts_after(ekey, k, ev[2], token), 'c' .. k, token, 'ls' .. k, code,
              'le' .. k, err)
          elseif kind == 'expired' then
            -- a dead letter since the claim that found it expired (its time is the delay):
            -- its status, then the letter (as a claim of a held account's head)
            finish(ekey, k, ev, 'expired', {'dr' .. k, 'expired', 'ls' .. k, '', 'le' .. k,
              'time to live passed before delivery'}, true)
            w('ZADD', base .. ':dead:' .. acct, delay, did)
          elseif kind == 'dead' then
            finish(ekey, k, ev, 'dead', {'dr' .. k, reason, 'ls' .. k, code, 'le' .. k, err,
              'at' .. k, attempts_after(ekey, k, ev[2], token), 'c' .. k, token}, true)
            w('ZADD', base .. ':dead:' .. acct, now_s, did)
          elseif kind == 'again' then
            -- back to the front, unsent; its `c` stays, and the account's next leases end
            -- after it
            local list = base .. ':q:' .. acct .. ':' .. (call('HGET', ekey, 'prio') or 'n')
            if not near_head(list, did) then
              w('LPUSH', list, did)
            end
            if status ~= 'queued' then
              event_set(ekey, 's' .. k, 'queued')
            end
            local above = tonumber(delay) or 0
            le_floor = le_floor or tonumber(call('HGET', akey, 'le') or '') or 0
            if above > le_floor then le_floor = above end
          else
            -- ratelimited, authfailed, released: back to the front, the attempt does not
            -- count
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
            event_set(ekey, unpack(set))
            hold_account(kind, delay)
          end
          return logged
        end
      end
      if kind == 'delivered' then
        logged, unleased = complete_other(did, ekey, k, kind, code, '', '0', '', token,
          held)
      else
        logged, unleased = complete_other(did, ekey, k, kind, code, argv[i + 4],
          argv[i + 5], argv[i + 6], token, held)
      end
    end
    if logged ~= nil then
      -- The delivery frees its account (in the run's changes) and ends its lease. When
      -- `logged` (the caller held the lease), its call takes its entry from its claim out
      -- of the rate log, and one at this time goes in for it unless it was released
      -- unsent.
      if logged then
        local s = flags[7] and log_find(flags[7], flags[1], searched)
        if s then
          taken = taken + 1
          spots[taken] = s
          searched = s + 13
          -- (a call the gateway did not send is released too)
          if kind ~= 'released' and kind ~= 'stale' and kind ~= 'expired'
            and kind ~= 'again' then
            stamped = stamped + 1
          end
        end
      end
      if held then
        members[did] = nil
        left = left + 1
      end
      freed = true
      if not unleased then ends[#ends + 1] = did end
    end
  end
end
if #ends > 0 then
  w('ZREM', inflight, unpack(ends))
end
return later
