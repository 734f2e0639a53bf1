-- dead: one page of an account's dead letters, oldest first (read only).
-- KEYS[1] = <base>:ready
-- ARGV = base, account, offset, limit
-- Returns {total, {did, dead at, status, reason, attempts, last status, last error, body,
-- agent}, ...} (the event's time of creation is its id's, which the caller reads).
local base, acct = ARGV[1], ARGV[2]
local offset, limit = tonumber(ARGV[3]), tonumber(ARGV[4])
local dead = base .. ':dead:' .. acct
local out = {call('ZCARD', dead)}
if limit <= 0 then return out end
local page = call('ZRANGE', dead, offset, offset + limit - 1, 'WITHSCORES')
for i = 1, #page, 2 do
  local did = page[i]
  local eid, k = split_did(did)
  local ev = {}
  if eid then
    ev = event_fields(base .. ':ev:' .. eid, 's' .. k, 'dr' .. k, 'at' .. k, 'ls' .. k,
      'le' .. k, 'body', 'ag' .. k)
  end
  out[#out + 1] = {did, page[i + 1], ev[1] or '', ev[2] or '', ev[3] or '0', ev[4] or '',
    ev[5] or '', ev[6] or '', ev[7] or ''}
end
return out
