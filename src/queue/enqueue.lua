-- enqueue: stores events of one account.
-- KEYS[1] = <base>:ready (routes the call to the partition's slot)
-- ARGV = base, account, limit, window_ms, max_depth, idempotency_ttl_s,
--        then per event: id, priority ('h'|'n'), ttl_ms, body, idempotency key or '',
--        fingerprint or '', n, agent_1 .. agent_n ('' = every agent)
-- Returns one {outcome, id, n} per event; outcome is ok | dup | mismatch | full.
local base, acct = ARGV[1], ARGV[2]
local max_depth = tonumber(ARGV[5])
local idem_ttl = tonumber(ARGV[6])
local now = now_ms()
local akey = base .. ':acct:' .. acct
redis.call('HSET', akey, 'limit', ARGV[3], 'window', ARGV[4])
redis.call('SADD', base .. ':accounts', acct)
local depth = tonumber(redis.call('HGET', akey, 'depth') or '0')
local out = {}
local stored = 0
local i = 7
while i <= #ARGV do
  local eid, prio, ttl, body = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3]
  local ikey, fp, n = ARGV[i + 4], ARGV[i + 5], tonumber(ARGV[i + 6])
  local first_agent = i + 7
  i = i + 7 + n
  local result
  local idem
  if ikey ~= '' then
    idem = base .. ':idem:' .. acct .. ':' .. ikey
    local prev = redis.call('GET', idem)
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
      local ekey = base .. ':ev:' .. eid
      local exp = 0
      if ttl > 0 then exp = now + ttl end
      redis.call('HSET', ekey, 'acct', acct, 'created', now, 'n', n, 'prio', prio,
        'exp', exp, 'body', body, 'done', 0, 'dd', 0)
      local qkey = base .. ':q:' .. acct .. ':' .. prio
      for k = 0, n - 1 do
        redis.call('HSET', ekey, 'ag' .. k, ARGV[first_agent + k], 's' .. k, 'queued', 'at' .. k, 0)
        redis.call('RPUSH', qkey, eid .. ':' .. k)
      end
      depth = depth + n
      stored = stored + 1
      if idem then
        redis.call('SET', idem, fp .. ' ' .. eid .. ' ' .. n, 'EX', idem_ttl)
      end
      result = {'ok', eid, n}
    end
  end
  out[#out + 1] = result
end
redis.call('HSET', akey, 'depth', depth)
if stored > 0 then
  -- an account that was idle goes ahead of those served within the last window
  mark_ready(base, acct, now, now - tonumber(ARGV[4]))
end
return out
