-- Brings one partition of layout 5 (or of an earlier one, after its own steps) to layout
-- 6, in one atomic call. ARGV[1] = base.
-- Returns the number of calls changed.
--
-- Layout 5 wrote a call's claim into its event: status `delivering`, its attempts counted
-- with the one in flight, and a claim counter as the lease token. Layout 6 writes nothing
-- at a claim: a call is in flight while its lease is in the in-flight set, its lease's
-- end is its token, and its attempt is counted when it ends. A call of layout 5 still in
-- flight (its process stopped before the upgrade) becomes queued with its attempts as
-- they were before its claim; the reaper puts it back and counts it when its lease ends.
-- The call changes only calls still `delivering`, so a call repeated changes nothing more.
local base = ARGV[1]
local changed_n = 0
for _, did in ipairs(call('ZRANGE', base .. ':inflight', '0', '-1')) do
  local eid, k = split_did(did)
  if eid then
    local ekey = base .. ':ev:' .. eid
    local ev = call('HMGET', ekey, 's' .. k, 'at' .. k)
    if ev[1] == 'delivering' then
      local before = (tonumber(ev[2] or '1') or 1) - 1
      if before < 0 then before = 0 end
      -- ('0', not missing: a claim looks for a replay's mark only then)
      call('HSET', ekey, 's' .. k, 'queued', 'at' .. k, int(before))
      changed_n = changed_n + 1
    end
  end
end
return changed_n
