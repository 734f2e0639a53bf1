-- complete: records how deliveries of one partition ended, each as if alone.
-- KEYS[1] = <base>:ready
-- ARGV = base, retention_ms, then per delivery 8 values: did, account, kind, upstream
--        status or '', error, delay_ms, reason, lease token
-- kind: delivered | retry | dead | ratelimited | authfailed | released
-- The caller holds the lease when the delivery's claim counter still equals its token
-- and its lease is still in the in-flight set. Returns per delivery 'ok', or 'stale' when
-- it did not (its result is then ignored, except that a late success still removes the
-- delivery everywhere, so it is not sent again).
local base, retention = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
local now_s = int(now)
local inflight = base .. ':inflight'

local function complete_one(did, acct, kind, code, err, delay, reason, token)
  local eid, k = split_did(did)
  local ekey = base .. ':ev:' .. eid
  local akey = base .. ':acct:' .. acct
  local ev = redis.call('HMGET', ekey, 's' .. k, 'c' .. k, 'done', 'n', 'dd')
  local status = ev[1]
  local flags = redis.call('HMGET', akey, 'rl_did', 'busy', 'paused', 'auth_failed', 'until',
    'sent', 'depth', 'delayed')
  -- Frees the account from this delivery where it holds it. Returns the account fields to
  -- write and what the busy flag will then be.
  local function release_fields()
    local clear = {}
    local busy = flags[2]
    if flags[1] == did then
      -- Upstream received this call at some moment before its answer came back: count the
      -- call from now, so that however long the request took on the way, upstream can
      -- never see more than `limit` calls in one window. The newest entry is this call's,
      -- as an account has one call in flight. (No list left: the window already passed.)
      redis.pcall('LSET', base .. ':rl:' .. acct, '0', now_s)
      clear = {'rl_did', ''}
    end
    if flags[2] == did then
      clear[#clear + 1] = 'busy'
      clear[#clear + 1] = ''
      busy = ''
    end
    return clear, busy
  end
  local function release_account()
    local clear = release_fields()
    if #clear > 0 then
      redis.call('HSET', akey, unpack(clear))
    end
  end
  -- A success this caller records in full: the account's fields in one write (from the
  -- values read above), then the event's, then the account is ready again.
  local function record_success()
    local set, busy = release_fields()
    local function add(field, value)
      set[#set + 1] = field
      set[#set + 1] = value
    end
    local depth = (tonumber(flags[7] or '0') or 0) - 1
    add('sent', int((tonumber(flags[6] or '0') or 0) + 1))
    add('depth', int(depth))
    redis.call('HSET', akey, unpack(set))
    finish_event(ekey, k, 'delivered', now_s, retention,
      {'ls' .. k, code, 'le' .. k, '', 'dt' .. k, now_s}, ev[3], ev[4], ev[5])
    -- Undelivered calls that are neither in flight (this was the account's one) nor
    -- waiting for a retry are queued: then the lists need not be looked at.
    local queued = depth - (tonumber(flags[8] or '0') or 0) > 0
    mark_ready(base, acct, now, nil, {busy, flags[3], flags[4], flags[5]}, queued)
  end
  if status == false or status == 'delivered' or status == 'dead' or status == 'expired' then
    -- Already finished (a late success recorded it while this caller held a new lease):
    -- end this lease and free the account.
    redis.call('ZREM', inflight, did)
    release_account()
    mark_ready(base, acct, now)
    return 'stale'
  end
  local owned = ev[2] == token and redis.call('ZREM', inflight, did) == 1
  local result = 'ok'
  if kind == 'delivered' and not owned and redis.call('ZSCORE', inflight, did) then
    -- A late success while another process holds a new lease on the call: record the
    -- success, and leave that lease, the account's busy flag and its rate entry to the
    -- holder, whose own completion (then stale) releases them.
    redis.call('HINCRBY', akey, 'sent', '1')
    finish(base, ekey, acct, k, 'delivered', now, retention,
      {'ls' .. k, code, 'le' .. k, '', 'dt' .. k, now_s})
    return 'ok'
  elseif kind == 'delivered' then
    if not owned then
      -- a late success: remove the delivery wherever it is now
      local prio = redis.call('HGET', ekey, 'prio') or 'n'
      redis.call('LREM', base .. ':q:' .. acct .. ':' .. prio, '1', did)
      redis.call('ZREM', inflight, did)
      if redis.call('ZREM', base .. ':delayed', did) == 1 then
        redis.call('HINCRBY', akey, 'delayed', '-1')
      end
    end
    record_success()
    return 'ok'
  elseif not owned then
    return 'stale'
  else
    release_account()
    if kind == 'retry' then
      redis.call('HSET', ekey, 's' .. k, 'retrying', 'ls' .. k, code, 'le' .. k, err)
      redis.call('ZADD', base .. ':delayed', int(now + delay), did)
      redis.call('HINCRBY', akey, 'delayed', '1')
    elseif kind == 'dead' then
      bury(base, did, ekey, acct, k, 'dead', reason, code, err, now, retention)
    else
      -- ratelimited, authfailed, released: the attempt does not count
      redis.call('HINCRBY', ekey, 'at' .. k, '-1')
      requeue_front(base, ekey, acct, did, k)
      if kind == 'ratelimited' then
        redis.call('HSET', ekey, 'ls' .. k, code, 'le' .. k, err)
        redis.call('HSET', akey, 'until', int(now + delay))
        redis.call('HINCRBY', akey, 'upstream_429', '1')
      elseif kind == 'authfailed' then
        redis.call('HSET', ekey, 'ls' .. k, code, 'le' .. k, err)
        redis.call('HSET', akey, 'auth_failed', '1')
      end
    end
  end
  mark_ready(base, acct, now)
  return result
end

local out = {}
for i = 3, #ARGV, 8 do
  out[#out + 1] = complete_one(ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4],
    tonumber(ARGV[i + 5]), ARGV[i + 6], ARGV[i + 7])
end
return out
