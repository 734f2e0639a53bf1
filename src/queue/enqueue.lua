-- enqueue: stores events of one account.
-- KEYS[1] = <base>:ready (routes the call to the partition's slot)
-- ARGV = base, account, limit, window_ms, max_depth, idempotency_ttl_s,
--        then per event: id, priority ('h'|'n'), ttl_ms, body, idempotency key or '',
--        fingerprint or '', n, agent_1 .. agent_n ('' = every agent)
-- Returns one {outcome, id, n} per event; outcome is ok | dup | mismatch | full.
-- Each event is one HSET; the new delivery ids are pushed once per priority at the end.
local base, acct, limit, window = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local max_depth = tonumber(ARGV[5])
local now = now_ms()
local now_s = int(now)
local akey = base .. ':acct:' .. acct
local st = redis.call('HMGET', akey, 'depth', 'limit', 'window', 'busy', 'paused', 'auth_failed', 'until')
if not st[1] then
  redis.call('SADD', base .. ':accounts', acct)
end
local depth = tonumber(st[1] or '0')
local out = {}
local pushed = {h = {}, n = {}}

-- Field names of delivery index k (0-based), built once per index.
local names = {}
local function names_of(k)
  local f = names[k]
  if not f then
    local ks = int(k)
    f = {':' .. ks, 'ag' .. ks, 's' .. ks, 'at' .. ks}
    names[k] = f
  end
  return f
end

-- HSET/RPUSH with at most `chunk` arguments per call (Lua's unpack has a stack limit)
local function in_chunks(cmd, key, items, chunk)
  for i = 1, #items, chunk do
    redis.call(cmd, key, unpack(items, i, math.min(i + chunk - 1, #items)))
  end
end

local i = 7
while i <= #ARGV do
  local eid, prio, ttl, body = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3]
  local ikey, fp, n_s = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]
  local n = tonumber(n_s)
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
      local exp = '0'
      if ttl > 0 then exp = int(now + ttl) end
      local fields = {'acct', acct, 'created', now_s, 'n', n_s, 'prio', prio, 'exp', exp,
        'body', body, 'done', '0', 'dd', '0'}
      local ids = pushed[prio]
      for k = 0, n - 1 do
        local f = #fields
        local name = names_of(k)
        fields[f + 1] = name[2]
        fields[f + 2] = ARGV[first_agent + k]
        fields[f + 3] = name[3]
        fields[f + 4] = 'queued'
        fields[f + 5] = name[4]
        fields[f + 6] = '0'
        ids[#ids + 1] = eid .. name[1]
      end
      in_chunks('HSET', base .. ':ev:' .. eid, fields, 3000)
      depth = depth + n
      if idem then
        redis.call('SET', idem, fp .. ' ' .. eid .. ' ' .. n_s, 'EX', ARGV[6])
      end
      result = {'ok', eid, n}
    end
  end
  out[#out + 1] = result
end
local changes = {'depth', int(depth)}
if st[2] ~= limit then
  changes[#changes + 1] = 'limit'
  changes[#changes + 1] = limit
end
if st[3] ~= window then
  changes[#changes + 1] = 'window'
  changes[#changes + 1] = window
end
redis.call('HSET', akey, unpack(changes))
local stored = false
for prio, ids in pairs(pushed) do
  if #ids > 0 then
    in_chunks('RPUSH', base .. ':q:' .. acct .. ':' .. prio, ids, 1000)
    stored = true
  end
end
-- An account with new work is ready unless busy or paused (as mark_ready, without
-- re-reading what is known). One that was idle goes ahead of those served within the
-- last window; a 429 pause still wins.
if stored and not (st[4] and st[4] ~= '') and st[5] ~= '1' and st[6] ~= '1' then
  local at = now - tonumber(window)
  local pause_until = tonumber(st[7] or '0') or 0
  if pause_until > at then at = pause_until end
  redis.call('ZADD', base .. ':ready', 'NX', int(at), acct)
end
return out
