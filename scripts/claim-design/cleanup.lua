-- What every measure's set-up and script leave is deleted, so each call starts alike.
do
  local B = 'zr:{p1}'
  local A = 'd17'
  for i = 1, N do
    redis.call('DEL', B .. ':ev:' .. string.format('0190a1b2c3d4e5f6a7b8c9d0e1f2%04x0001', i))
  end
  redis.call('DEL', B .. ':q:' .. A .. ':n', B .. ':acct:' .. A, B .. ':ready',
    B .. ':inflight', B .. ':changed', B .. ':accounts')
end
