-- Brings one partition of layout 3 or 4 (or of 1 or 2, after their own steps) to layout
-- 5, in one atomic call. ARGV[1] = base.
-- Returns the number of accounts changed.
--
-- Layout 4 named the one call in flight whose time headed an account's rate log
-- (`rl_did`); layout 5 sends an account's calls in lease groups, whose claim logs one
-- entry per member at the claim's time and records that time (`rl_at`), each member's
-- answer or lease end taking one of those entries. A call of layout 4 still in flight (its
-- process stopped before the upgrade) becomes a group of one: `rl_at` is the time that
-- heads the log. `rl_did` goes in the same write, so a call repeated (after a migration
-- stopped half-way) changes nothing more.
local base = ARGV[1]
local changed_n = 0
for _, acct in ipairs(call('SMEMBERS', base .. ':accounts')) do
  local akey = base .. ':acct:' .. acct
  local st = call('HMGET', akey, 'rl_did', 'busy', 'rl')
  if st[1] then
    if st[1] ~= '' and st[1] == st[2] and st[3] and #st[3] >= 13 then
      call('HSET', akey, 'rl_at', string.sub(st[3], 1, 13))
    end
    call('HDEL', akey, 'rl_did')
    changed_n = changed_n + 1
  end
end
return changed_n
