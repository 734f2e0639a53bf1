-- Set-up of a completion's measure: the state a claim at CLAIM_AT (1764000000000) left
-- of account `d17`'s lease group of N events of one call in their first form: in this
-- layout's form (per-call leases in the in-flight set) unless GROUP_LEASE, then in the
-- ids-only design's (one lease for the group, under the account).
local B = 'zr:{p1}'
local A = 'd17'
-- (a time to live, as the default config gives every event, and every agent)
local Q = '4102444800000 \n{"app_id":1,"event":"cost","body":"hello"}'
local T = '1764000000000'
local ids, leases = {}, {}
for i = 1, N do
  local eid = string.format('0190a1b2c3d4e5f6a7b8c9d0e1f2%04x0001', i)
  ids[i] = eid .. ':0'
  leases[2 * i - 1] = tostring(1764000030000 - i + 1)
  leases[2 * i] = ids[i]
  redis.call('HSET', B .. ':ev:' .. eid, 'q', Q, 'acct', A)
end
if GROUP_LEASE then
  redis.call('ZADD', B .. ':inflight', '1764000030000', A)
else
  redis.call('ZADD', B .. ':inflight', unpack(leases))
end
redis.call('SADD', B .. ':accounts', A)
redis.call('HSET', B .. ':acct:' .. A, 'd', '10', 'busy', table.concat(ids, ' '), 'rl_at', T,
  'rl', string.rep(T, N))
