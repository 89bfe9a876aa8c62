--@include pacing/_prelude.lua
-- A granted job's attempt is over: drop its lease and learn from the answer.
-- (KEYS and ARGV[1..9]: see _prelude.lua.)
-- ARGV[10] the lease (from grant.lua)
-- ARGV[11] rps the target asked for ('' if none; already validated, clamped later)
-- ARGV[12] max in flight per node the target asked for ('' if none)
-- ARGV[13] pause the scope until (ms; '' if none): a 429/503 Retry-After
-- ARGV[14] '1' to put the job back at the front of the queue (a node stopping
--          before it could send), else ''
-- ARGV[15] '1' when nothing was sent and nothing will be (take.lua granted a
--          job whose submission then created nothing): the rate gets its
--          emission interval back, else ''
--
-- Header limits apply to every node at its next grant. A pause only ever
-- extends.
--
-- Returns {waiting, next grant (ms), running}.
local now = now_ms()
local removed = redis.call('ZREM', KEYS[5], ARGV[10])
if ARGV[14] == '1' and removed == 1 then
  local v = tonumber(redis.call('HGET', KEYS[4], '~v') or '0')
  redis.call('ZADD', KEYS[3], 'NX', v, job_of(ARGV[10]))
end
if ARGV[15] == '1' and removed == 1 then
  local tat, t = tonumber(redis.call('HGET', KEYS[2], 'tat')), tonumber(redis.call('HGET', KEYS[2], 't'))
  if tat and t then
    redis.call('HSET', KEYS[2], 'tat', tostring(tat - t))
  end
end
if ARGV[11] ~= '' then
  redis.call('HSET', KEYS[2], 'hdr_rps', ARGV[11], 'hdr_rps_ms', tostring(now))
end
if ARGV[12] ~= '' then
  redis.call('HSET', KEYS[2], 'hdr_mc', ARGV[12], 'hdr_mc_ms', tostring(now))
end
if ARGV[13] ~= '' then
  local pause = tonumber(ARGV[13])
  if pause > (tonumber(redis.call('HGET', KEYS[2], 'pause_until')) or 0) then
    redis.call('HSET', KEYS[2], 'pause_until', ARGV[13])
  end
end
local lim = hash(KEYS[2])
local limits = resolve(hash(KEYS[1]), lim, now)
return {redis.call('ZCARD', KEYS[3]), next_grant_ms(lim, limits, now), redis.call('ZCARD', KEYS[5])}
