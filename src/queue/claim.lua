-- claim: leases up to `max` deliveries of one partition whose accounts may send now.
-- KEYS[1] = <base>:ready
-- ARGV = base, max, lease_ms, default_limit, default_window_ms, margin_ms, reap_max,
--        retention_ms
-- First requeues expired leases and due retries (at most reap_max of each). Then, for
-- each due account (oldest score first): skips it while paused; if `limit` sends started
-- within window + margin, re-scores it to the moment the oldest of them leaves the
-- window; else pops its head delivery (dropping expired ones as dead letters), records
-- the send start (which complete.lua moves to when the answer came), leases the delivery
-- and marks the account busy.
-- Returns {ms until more work is due or -1, {did, account, body, agent, attempts,
-- created, lease token}, ...}; the wait is computed only when nothing was claimed.
local base = ARGV[1]
-- max and reap_max go to Redis as they came, as text
local max, reap_max = ARGV[2], ARGV[7]
local lease = tonumber(ARGV[3])
local default_limit, default_window = tonumber(ARGV[4]), tonumber(ARGV[5])
local margin, retention = tonumber(ARGV[6]), tonumber(ARGV[8])
local now = now_ms()
local now_s = int(now)
local ready = base .. ':ready'
local inflight = base .. ':inflight'
local delayed = base .. ':delayed'

local function reap(zset, from_delayed)
  local due = redis.call('ZRANGEBYSCORE', zset, '-inf', now_s, 'LIMIT', '0', reap_max)
  for _, did in ipairs(due) do
    redis.call('ZREM', zset, did)
    local eid, k = split_did(did)
    local ekey = base .. ':ev:' .. eid
    local acct = redis.call('HGET', ekey, 'acct')
    if acct then
      local akey = base .. ':acct:' .. acct
      if from_delayed then
        redis.call('HINCRBY', akey, 'delayed', '-1')
      elseif redis.call('HGET', akey, 'busy') == did then
        redis.call('HSET', akey, 'busy', '')
      end
      local status = redis.call('HGET', ekey, 's' .. k)
      if status == 'delivering' or status == 'retrying' then
        requeue_front(base, ekey, acct, did, k)
      end
      mark_ready(base, acct, now)
    end
  end
end
reap(inflight, false)
reap(delayed, true)

local out = {-1}
local accts = redis.call('ZRANGEBYSCORE', ready, '-inf', now_s, 'LIMIT', '0', max)
for _, acct in ipairs(accts) do
  local akey = base .. ':acct:' .. acct
  local st = redis.call('HMGET', akey, 'busy', 'paused', 'auth_failed', 'until', 'limit', 'window')
  local pause_until = tonumber(st[4] or '0') or 0
  if (st[1] and st[1] ~= '') or st[2] == '1' or st[3] == '1' then
    redis.call('ZREM', ready, acct)
  elseif pause_until > now then
    redis.call('ZADD', ready, int(pause_until), acct)
  else
    local limit = tonumber(st[5] or '') or default_limit
    local window = tonumber(st[6] or '') or default_window
    local rl = base .. ':rl:' .. acct
    local free_at = now
    local oldest = redis.call('LINDEX', rl, int(limit - 1))
    if oldest then
      -- Times are whole milliseconds, rounded down: one more makes the real gap between
      -- this send and the one `limit` sends back at least the window.
      free_at = tonumber(oldest) + window + margin + 1
    end
    if free_at > now then
      redis.call('ZADD', ready, int(free_at), acct)
    else
      local q = base .. ':q:' .. acct
      local did, ekey, k, ev
      local dropped = 0
      while true do
        did = redis.call('LPOP', q .. ':h') or redis.call('LPOP', q .. ':n')
        if not did then break end
        local eid
        eid, k = split_did(did)
        ekey = base .. ':ev:' .. eid
        ev = redis.call('HMGET', ekey, 'exp', 's' .. k, 'body', 'ag' .. k, 'created', 'at' .. k, 'c' .. k)
        local status = ev[2]
        if status == 'queued' or status == 'retrying' or status == 'delivering' then
          local exp = tonumber(ev[1] or '0') or 0
          if exp > 0 and exp <= now then
            bury(base, did, ekey, acct, k, 'expired', 'expired', '', 'time to live passed before delivery', now, retention)
          else
            break
          end
        end
        -- anything else is a stale entry of a finished or removed event: drop it
        dropped = dropped + 1
        if dropped >= 1000 then
          did = nil
          break
        end
      end
      if did then
        if redis.call('LPUSH', rl, now_s) > limit then
          redis.call('LTRIM', rl, '0', int(limit - 1))
        end
        redis.call('PEXPIRE', rl, int(window + margin + lease + 1000))
        redis.call('HSET', akey, 'busy', did, 'rl_did', did)
        redis.call('ZREM', ready, acct)
        redis.call('ZADD', inflight, int(now + lease), did)
        local attempts = (tonumber(ev[6] or '0') or 0) + 1
        local token = (tonumber(ev[7] or '0') or 0) + 1
        redis.call('HSET', ekey, 's' .. k, 'delivering', 'at' .. k, int(attempts), 'c' .. k, int(token))
        out[#out + 1] = {did, acct, ev[3] or '', ev[4] or '', attempts, ev[5] or '0', token}
      else
        redis.call('ZREM', ready, acct)
        mark_ready(base, acct, now)
      end
    end
  end
end

-- The wait is only of use to a caller that got nothing.
if #out > 1 then
  return out
end
local next_due = -1
for _, z in ipairs({ready, delayed, inflight}) do
  local head = redis.call('ZRANGE', z, '0', '0', 'WITHSCORES')
  if head[2] then
    local wait = tonumber(head[2]) - now
    if wait < 0 then wait = 0 end
    if next_due < 0 or wait < next_due then next_due = wait end
  end
end
out[1] = next_due
return out
