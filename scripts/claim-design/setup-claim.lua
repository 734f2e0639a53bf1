-- Set-up of a claim's measure: account `d17` of partition `zr:{p1}` with N queued events
-- of one call in their first form (N is written in by claim-design-cost.sh), due now.
local B = 'zr:{p1}'
local A = 'd17'
-- (a time to live, as the default config gives every event, and every agent)
local Q = '4102444800000 \n{"app_id":1,"event":"cost","body":"hello"}'
local ids = {}
for i = 1, N do
  local eid = string.format('0190a1b2c3d4e5f6a7b8c9d0e1f2%04x0001', i)
  ids[i] = eid .. ':0'
  redis.call('HSET', B .. ':ev:' .. eid, 'q', Q, 'acct', A)
end
redis.call('RPUSH', B .. ':q:' .. A .. ':n', unpack(ids))
redis.call('ZADD', B .. ':ready', 0, A)
redis.call('SADD', B .. ':accounts', A)
redis.call('HSET', B .. ':acct:' .. A, 'd', '10')
-- (no retention sweep during the measure)
redis.call('SET', B .. ':sweep', '1', 'PX', '100000000')
