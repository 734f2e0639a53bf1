-- The registry of live gateway processes, in partition 0's slot:
-- `{base}:processes` HASH, process id -> "<last heartbeat, ms> <record (JSON)>".
-- ARGV: base, op ('beat' | 'leave' | 'list'), stale (ms), id, record.
-- A process that stopped beating for `stale` ms is gone: 'beat' and 'list' forget it
-- (so the registry holds the live processes and those of the last `stale` ms only);
-- 'list' answers the live records as "<last heartbeat> <record>".
local key = ARGV[1] .. ':processes'
local op, stale, id = ARGV[2], tonumber(ARGV[3]), ARGV[4]
local now = now_ms()
if op == 'leave' then
  w('HDEL', key, id)
  return 1
end
local all = call('HGETALL', key)
local live = {}
for i = 1, #all, 2 do
  local seen = tonumber(string.match(all[i + 1], '^(%d+) ') or '')
  if seen and now - seen <= stale then
    live[#live + 1] = all[i + 1]
  elseif all[i] ~= id then
    w('HDEL', key, all[i])
  end
end
if op == 'beat' then
  w('HSET', key, id, int(now) .. ' ' .. ARGV[5])
  return 1
end
return live
