--@include pacing/_prelude.lua
-- Read-only: a scope's effective limits and where each came from.
-- (KEYS and ARGV[1..9]: see _prelude.lua.)
-- Returns {rps, rps source, max_concurrent, mc source, burst, ceiling rps,
-- ceiling mc, paused until (ms, 0 if not), next grant (ms), waiting, running,
-- per_customer ('1' or '0'), rps clamped to the ceiling ('1'/'0'), max_concurrent
-- clamped ('1'/'0'), circuit ('closed', 'open' or 'half_open'), circuit open
-- until (ms, 0 if closed), the domain's scope ('credential' or 'domain')}; numbers as strings.
local now = now_ms()
local conf = hash(KEYS[1])
local lim = hash(KEYS[2])
local l = resolve(conf, lim, now)
local pause = tonumber(lim.pause_until) or 0
if pause <= now then
  pause = 0
end
local cb_state, cb_until = 'closed', tonumber(lim.cb_open_until) or 0
if cb_until > 0 then
  cb_state = now < cb_until and 'open' or 'half_open'
end
return {tostring(l[1]), l[2], tostring(l[3]), l[4], tostring(l[5]), tostring(l[6]), tostring(l[7]),
  tostring(math.ceil(pause)), tostring(next_grant_ms(lim, l, now)),
  tostring(redis.call('ZCARD', KEYS[3])), tostring(redis.call('ZCARD', KEYS[5])), conf.per_customer or '0', tostring(l[8]), tostring(l[9]),
  cb_state, tostring(math.ceil(cb_until)), conf.scope or 'domain'}
