-- Shared helpers, prepended to each of the gateway's Lua scripts (see redis.rs for the key
-- layout). Every key a script touches is derived from `base`, which carries the
-- partition's hash tag, so all of them live in one Redis Cluster slot.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- An integral number as a command argument. Redis turns a Lua number argument into text
-- with "%.17g", and Lua's `..` with "%.14g"; "%d" costs a fraction of either, which
-- matters on the per-event paths.
local function int(x)
  return string.format('%d', x)
end

-- "<event id>:<index>" -> event id, index
local function split_did(did)
  return string.match(did, '^(.+):(%d+)$')
end

-- Puts the account into the ready set when it has queued work and is neither busy
-- (a delivery in flight) nor paused. Its score is the earliest time it may send and
-- orders the accounts: `score` (default `now`) lets an account that was idle enter ahead
-- of accounts that were just served, so a quiet account never waits a whole rotation
-- behind thousands of backlogged ones. A 429 pause still wins over it. `known` gives the
-- account's {busy, paused, auth_failed, until} when the caller already has them;
-- `queued` is true when the caller knows the account has queued work (when it has none
-- after all, the claim that finds its lists empty takes it out of the set again).
local function mark_ready(base, acct, now, score, known, queued)
  local st = known
  if not st then
    st = redis.call('HMGET', base .. ':acct:' .. acct, 'busy', 'paused', 'auth_failed', 'until')
  end
  if (st[1] and st[1] ~= '') or st[2] == '1' or st[3] == '1' then
    return
  end
  local q = base .. ':q:' .. acct
  -- Redis deletes empty lists, so "exists" means "has queued work"
  if not queued and redis.call('EXISTS', q .. ':h', q .. ':n') == 0 then
    redis.call('ZREM', base .. ':ready', acct)
    return
  end
  local at = score or now
  local pause_until = tonumber(st[4] or '0') or 0
  if pause_until > at then
    at = pause_until
  end
  redis.call('ZADD', base .. ':ready', 'NX', int(at), acct)
end

-- Records a delivery of the event as finished (delivered, dead or expired), writing
-- `fields` (more field/value pairs of the event) in the same write. When every delivery
-- of the event has finished and none failed, the payload is emptied and the record kept
-- for `retention_ms`; an event with a dead letter is kept until the letter is purged.
-- `done`, `n` and `dd` are the event's fields when the caller already read them (`done`
-- nil: read here). `now_s` is the time as text.
local function finish_event(ekey, k, status, now_s, retention_ms, fields, done, n, dd)
  if done == nil then
    local ev = redis.call('HMGET', ekey, 'done', 'n', 'dd')
    done, n, dd = ev[1], ev[2], ev[3]
  end
  done = (tonumber(done or '0') or 0) + 1
  local set = {'s' .. k, status, 'ft' .. k, now_s, 'done', int(done)}
  for i = 1, #fields do set[#set + 1] = fields[i] end
  local finished = done >= (tonumber(n or '0') or 0) and (tonumber(dd or '0') or 0) == 0
  if finished then
    set[#set + 1] = 'body'
    set[#set + 1] = ''
  end
  redis.call('HSET', ekey, unpack(set))
  if finished then
    redis.call('PEXPIRE', ekey, int(retention_ms))
  end
end

-- As finish_event, and the account has one undelivered call fewer.
local function finish(base, ekey, acct, k, status, now, retention_ms, fields)
  finish_event(ekey, k, status, int(now), retention_ms, fields)
  redis.call('HINCRBY', base .. ':acct:' .. acct, 'depth', '-1')
end

-- Turns a delivery into a dead letter (`status` is 'dead' or 'expired').
local function bury(base, did, ekey, acct, k, status, reason, code, err, now, retention_ms)
  redis.call('HINCRBY', ekey, 'dd', '1')
  redis.call('ZADD', base .. ':dead:' .. acct, int(now), did)
  redis.call('HINCRBY', base .. ':acct:' .. acct, 'dead', '1')
  finish(base, ekey, acct, k, status, now, retention_ms,
    {'dr' .. k, reason, 'ls' .. k, code, 'le' .. k, err})
end

-- Puts a delivery back at the front of its account's list.
local function requeue_front(base, ekey, acct, did, k)
  local prio = redis.call('HGET', ekey, 'prio') or 'n'
  redis.call('LPUSH', base .. ':q:' .. acct .. ':' .. prio, did)
  redis.call('HSET', ekey, 's' .. k, 'queued')
end
