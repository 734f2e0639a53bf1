-- event: one event's fields (read only), as HGETALL answers them (field, value, ...),
-- those of a summary as its hash's would read (see `summary_fields`).
-- KEYS[1] = <base>:ready
-- ARGV = the event's key
local ekey = ARGV[1]
local ev = try('HGETALL', ekey)
if not ev.err then return ev end
local summary = summary_fields(ekey, ev.err)
if not summary then return call('HGETALL', ekey) end
local out = {}
for name, value in pairs(summary) do
  out[#out + 1] = name
  out[#out + 1] = value
end
return out
