-- The completion of the ids-only design, its common path: lease groups all of whose calls
-- succeeded, each named by its account, its claim's time and its number of calls, then
-- per call its event's key and its summary as the gateway wrote it, which this writes
-- (with its expiry) when the group's lease is still the caller's. (A model to measure,
-- not the gateway's script: the rarer outcomes, made by a function of their own as now,
-- are left out.)
-- ARGV = base, then per group: account, claim time, n, then n times: event key, summary
-- (`call`, `w`, `now_ms` and `int` come from prelude.lua)
local argv = ARGV
local base = argv[1]
local retention = '86400000'
local margin, default_limit, default_window = 1000, 100, 60000
local now, now_s = now_ms()
local inflight = base .. ':inflight'
local ready = base .. ':ready'
local later = {}
local changes = {}
local i = 2
while argv[i] do
  changes[#changes + 1] = now_s
  changes[#changes + 1] = argv[i]
  i = i + 3 + 2 * tonumber(argv[i + 2])
end
w('ZADD', base .. ':changed', unpack(changes))
i = 2
while argv[i] do
  local acct, claimed_at, n = argv[i], argv[i + 1], tonumber(argv[i + 2])
  local akey = base .. ':acct:' .. acct
  local flags = call('HMGET', akey, 'rl_at', 'busy', 'paused', 'auth_failed', 'until', 'sent',
    'rl', 'limit', 'window')
  if flags[1] == claimed_at then
    for j = i + 3, i + 2 + 2 * n, 2 do
      w('SET', argv[j], argv[j + 1], 'PX', retention)
    end
    -- the group's entries, at the log's front since its claim, stamped now
    local log = string.rep(now_s, n) .. string.sub(flags[7] or '', n * 13 + 1)
    w('HSET', akey, 'busy', '', 'rl', log, 'sent', int((tonumber(flags[6] or '0') or 0) + n))
    -- back in the ready set at its next send (now when its window has room)
    local limit = flags[8] and tonumber(flags[8]) or default_limit
    local window = flags[9] and tonumber(flags[9]) or default_window
    local at = now_s
    if #log >= limit * 13 then
      local oldest = tonumber(string.sub(log, (limit - 1) * 13 + 1, limit * 13))
      if oldest + window + margin + 1 > now then
        at = int(oldest + window + margin + 1)
        later[#later + 1] = acct
        later[#later + 1] = tonumber(at) - now
      end
    end
    local q = base .. ':q:' .. acct
    if flags[3] ~= '1' and flags[4] ~= '1' and call('EXISTS', q .. ':h', q .. ':n') > 0 then
      w('ZADD', ready, 'NX', at, acct)
    end
    w('ZREM', inflight, acct)
  end
  i = i + 3 + 2 * n
end
return later
