-- event: one event's fields (read only), as HGETALL answers them (field, value, ...),
-- those of an event in its first form (see `first_form`) and of a summary (see
-- `summary_fields`) as its hash's would read. The key's type is asked first: a hash
-- command on a summary would fail, and Redis counts every failed command in its error
-- stats, which operators watch.
-- KEYS[1] = <base>:ready
-- ARGV = the event's key
local ekey = ARGV[1]
local out = {}
if call('TYPE', ekey).ok ~= 'string' then
  local ev = call('HGETALL', ekey)
  for i = 1, #ev, 2 do
    local name, value = ev[i], ev[i + 1]
    if name ~= 'q' then
      out[#out + 1] = name
      out[#out + 1] = value
    elseif value ~= '' then
      -- (the fields `event_set` writes out; a helper shared with it would be made at
      -- every claim and completion, about 1,400 instructions each)
      local exp, agent, body = first_form(value)
      out[#out + 1] = 'body'
      out[#out + 1] = body
      if exp then
        out[#out + 1] = 'exp'
        out[#out + 1] = exp
      end
      if agent then
        out[#out + 1] = 'ag0'
        out[#out + 1] = agent
      end
    end
  end
  return out
end
for name, value in pairs(summary_fields(ekey)) do
  out[#out + 1] = name
  out[#out + 1] = value
end
return out
