-- The claim of the ids-only design, its common path: for each due account with room, the
-- ids at the head of its list leased as one group (one in-flight entry, under the
-- account, whose score is the group's lease end and its token), with no read of the
-- events: the gateway reads them with plain commands, and stale or expired ones come back
-- in the group's completion. Replies {wait, dropped, time, then per group: account,
-- token, ids}. (A model to measure, not the gateway's script: it leaves out the reaping,
-- the held accounts, the retention sweep and the next wait, which cost the same as now.)
-- ARGV = base, max
-- (`call`, `w`, `now_ms` and `int` come from prelude.lua)
local base, max = ARGV[1], ARGV[2]
local now, now_s = now_ms()
local ready = base .. ':ready'
local inflight = base .. ':inflight'
local lease, margin, group_max, group_more, allowance = 30000, 1000, 8, '7', 1000
local default_limit, default_window = 100, 60000
local out = {-1, 0, now}
local accts = call('ZRANGEBYSCORE', ready, '-inf', now_s, 'LIMIT', '0', max)
if #accts > 0 then
  local changes = {}
  for a = 1, #accts do
    changes[2 * a - 1] = now_s
    changes[2 * a] = accts[a]
  end
  w('ZADD', base .. ':changed', unpack(changes))
end
for a = 1, #accts do
  local acct = accts[a]
  local akey = base .. ':acct:' .. acct
  local st = call('HMGET', akey, 'busy', 'paused', 'auth_failed', 'until', 'limit', 'window',
    'rl')
  if (st[1] and st[1] ~= '') or st[2] == '1' or st[3] == '1' then
    w('ZREM', ready, acct)
  else
    local rl = st[7] or ''
    local limit = st[5] and tonumber(st[5]) or default_limit
    local window = st[6] and tonumber(st[6]) or default_window
    local cut = (limit - 1) * 13
    -- room for a whole group: the entry `limit - group_max` back has left the window
    local span = '0'
    local back = (limit - group_max) * 13
    if #rl < back + 13
      or tonumber(string.sub(rl, back + 1, back + 13)) + window + margin + 1 <= now then
      span = group_more
    end
    local list = base .. ':q:' .. acct .. ':h'
    local heads = call('LRANGE', list, '0', span)
    if #heads == 0 then
      list = base .. ':q:' .. acct .. ':n'
      heads = call('LRANGE', list, '0', span)
    end
    local n = #heads
    if n > 0 then
      local token = int(now + lease + (n - 1) * allowance)
      w('ZADD', inflight, token, acct)
      local ids = table.concat(heads, ' ')
      local stamps = now_s
      if n > 1 then stamps = string.rep(now_s, n) end
      w('HSET', akey, 'busy', ids, 'rl_at', now_s, 'rl',
        stamps .. string.sub(rl, 1, cut - (n - 1) * 13))
      w('ZREM', ready, acct)
      if n == 1 then w('LPOP', list) else w('LTRIM', list, int(n), '-1') end
      local o = #out
      out[o + 1] = acct
      out[o + 2] = token
      out[o + 3] = ids
    else
      w('ZREM', ready, acct)
    end
  end
end
return out
