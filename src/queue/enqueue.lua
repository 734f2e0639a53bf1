-- enqueue: stores events of one account.
-- KEYS[1] = <base>:ready (routes the call to the partition's slot)
-- ARGV = base, account, limit, window_ms, max_depth, idempotency_ttl_s,
--        then per event: id, priority ('h'|'n'), ttl_ms, body, idempotency key or '',
--        fingerprint or '', n, agent_1 .. agent_n ('' = every agent)
-- Returns one {outcome, id, n} per event; outcome is ok | dup | mismatch | full; then
-- {'ready'} when the account entered the ready set (its workers may be asleep).
-- Every check comes first. Then the writes: the account's settings, the ready set, the
-- new delivery ids (pushed once per priority), each event (one HSET) and last the
-- idempotency keys. A failure part-way leaves at worst ids of events that were never
-- stored, which claims drop as stale entries; an event is never stored without its ids.
local base, acct, limit, window = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local max_depth = tonumber(ARGV[5])
local now = now_ms()
local now_s = int(now)
local akey = base .. ':acct:' .. acct
local q = base .. ':q:' .. acct
local st = redis.call('HMGET', akey, 'limit', 'window', 'busy', 'paused', 'auth_failed', 'until')
-- Undelivered calls: queued, waiting for a retry, and the one in flight.
local depth = redis.call('LLEN', q .. ':h') + redis.call('LLEN', q .. ':n')
  + redis.call('ZCARD', base .. ':retry:' .. acct)
if st[3] and st[3] ~= '' then depth = depth + 1 end
local out = {}
local pushed = {h = {}, n = {}}
local events, idems, taken = {}, {}, {}

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
    w(cmd, key, unpack(items, i, math.min(i + chunk - 1, #items)))
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
    -- a key taken earlier in this call is not written yet
    local prev = taken[idem] or redis.call('GET', idem)
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
      events[#events + 1] = {base .. ':ev:' .. eid, fields}
      depth = depth + n
      if idem then
        taken[idem] = fp .. ' ' .. eid .. ' ' .. n_s
        idems[#idems + 1] = {idem, taken[idem]}
      end
      result = {'ok', eid, n}
    end
  end
  out[#out + 1] = result
end
local changes = {}
if st[1] ~= limit then
  changes[#changes + 1] = 'limit'
  changes[#changes + 1] = limit
end
if st[2] ~= window then
  changes[#changes + 1] = 'window'
  changes[#changes + 1] = window
end
if #changes > 0 then
  w('HSET', akey, unpack(changes))
  w('SADD', base .. ':accounts', acct)
end
if #events == 0 then
  return out
end
-- An account with new work is ready unless busy or paused (as mark_ready, without
-- re-reading what is known). One that was idle goes ahead of those served within the
-- last window; a 429 pause still wins.
local ready = false
if not (st[3] and st[3] ~= '') and st[4] ~= '1' and st[5] ~= '1' then
  local at = now - tonumber(window)
  local pause_until = tonumber(st[6] or '0') or 0
  if pause_until > at then at = pause_until end
  -- Newly ready: the caller announces it to every process's worker (which may sleep).
  if w('ZADD', base .. ':ready', 'NX', int(at), acct) == 1 then
    ready = true
  end
end
for prio, ids in pairs(pushed) do
  if #ids > 0 then
    in_chunks('RPUSH', q .. ':' .. prio, ids, 1000)
  end
end
for _, e in ipairs(events) do
  in_chunks('HSET', e[1], e[2], 3000)
end
for _, e in ipairs(idems) do
  w('SET', e[1], e[2], 'EX', ARGV[6])
end
if ready then
  out[#out + 1] = {'ready'}
end
return out
