-- hold: an operator pauses or resumes an account's delivery.
-- KEYS[1] = <base>:ready
-- ARGV = base, account, 'pause' | 'resume'
-- pause: sets `paused` and takes the account out of the ready set (claim and mark_ready
-- skip paused accounts; a call or lease group in flight finishes). resume: clears `paused` and
-- `auth_failed` and marks the account ready if it has queued work (an upstream 429
-- pause, `until`, still applies). Both record the account in the partition's set.
-- Each write alone is harmless (a claim takes a paused account out of the ready set), so
-- resume puts the account in the ready set before it clears the flags.
local base, acct, op = ARGV[1], ARGV[2], ARGV[3]
local akey = base .. ':acct:' .. acct
local st = call('HMGET', akey, 'busy', 'until')
local now, now_s = now_ms()
changed(base, acct, now_s)
w('SADD', base .. ':accounts', acct)
if op == 'pause' then
  -- held: its claims stop, and the held set lets claims expire its events meanwhile
  w('ZADD', base .. ':held', 'NX', now_s, acct)
  w('HSET', akey, 'paused', '1')
  w('ZREM', base .. ':ready', acct)
else
  mark_ready(base, acct, now, now_s, nil, {st[1], '0', '0', st[2]})
  w('HSET', akey, 'paused', '0', 'auth_failed', '0')
end
return 'ok'
