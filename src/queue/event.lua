-- event: one event's fields (read only), as HGETALL answers them (field, value, ...),
-- those of a summary as its hash's would read (see `summary_fields`). The key's type is
-- asked first: a hash command on a summary would fail, and Redis counts every failed
-- command in its error stats, which operators watch.
-- KEYS[1] = <base>:ready
-- ARGV = the event's key
local ekey = ARGV[1]
if call('TYPE', ekey).ok ~= 'string' then
  return call('HGETALL', ekey)
end
local out = {}
for name, value in pairs(summary_fields(ekey)) do
  out[#out + 1] = name
  out[#out + 1] = value
end
return out
