-- Brings one partition of layout 2 to layout 3, in one atomic call. ARGV[1] = base.
-- Returns the number of accounts moved.
--
-- Layout 2 kept each account's rate log as a list of its own, `rl:{account}` (times in
-- ms, newest first); layout 3 keeps it in the account's record, field `rl`, the same
-- times packed at 13 digits each, so that the reads and writes of the record that every
-- claim and completion makes carry it. Each account's log moves in one write and its list
-- is deleted after it, so a call repeated (after a migration stopped half-way) changes
-- nothing more. A list whose account has no record left is not moved: it expires by
-- itself, as layout 2 set it to. (Layout 2 dropped an idle account's record while its
-- list could still hold sends of its window only with an account retention shorter than
-- the window: such an account starts layout 3 with an empty log.)
local base = ARGV[1]
local moved = 0
for _, acct in ipairs(call('SMEMBERS', base .. ':accounts')) do
  local rl = base .. ':rl:' .. acct
  local times = call('LRANGE', rl, 0, -1)
  local akey = base .. ':acct:' .. acct
  if #times > 0 and call('EXISTS', akey) == 1 then
    local packed = {}
    for i, t in ipairs(times) do
      packed[i] = string.format('%013d', tonumber(t) or 0)
    end
    call('HSET', akey, 'rl', table.concat(packed))
    call('DEL', rl)
    moved = moved + 1
  end
end
return moved
