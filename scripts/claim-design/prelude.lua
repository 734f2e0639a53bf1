-- What both models take from the queue's helpers (src/queue/scripts.lua), put ahead of
-- each by claim-design-cost.sh.
local call = redis.call
local w = call
local function now_ms()
  local t = call('TIME')
  local text = t[1] .. string.sub('00000' .. t[2], -6, -4)
  return tonumber(text), text
end
local function int(x) return string.format('%d', x) end
