-- Grant a job the calling node is accepting at this moment, without queueing
-- it, if its scope would grant it at once anyway.
-- (KEYS and ARGV[1..9]: see _prelude.lua.)
-- ARGV[10] job id   ARGV[11] customer
-- ARGV[12] the calling node's requests in flight for this scope   ARGV[13] lease (ms)
--
-- Only when nothing of the scope waits in any region and no lease of this
-- region has expired (they go first: grant.lua puts them back at the front),
-- the scope is not paused, the node is under its per-node cap and the rate
-- allows a send now. Then the job gets what admit.lua and grant.lua would
-- have given it in turn: the next fair tag (nothing waits, so it is served
-- at once and the virtual time follows it), a lease in the running set and
-- one emission interval of the rate. Else nothing is written: the job takes
-- the usual way (stream, admit.lua, grant.lua).
--
-- The job's record may not exist yet (the node sends this call beside
-- submit.lua, which may still find a duplicate): a lease whose submission
-- created nothing is released with a refund (release.lua ARGV[15]), or
-- expires and is dropped at its start (start_attempt.lua finds no record).
--
-- Returns {'ok', lease} or {reason, ''}: reason is 'waiting', 'expired',
-- 'paused', 'busy' or 'rate'.
local now = now_ms()
if not all_queues_empty() then
  return {'waiting', ''}
end
if #redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now, 'LIMIT', 0, 1) > 0 then
  return {'expired', ''}
end
local lim = hash(KEYS[2])
local limits = resolve(hash(KEYS[1]), lim, now)
if (tonumber(lim.pause_until) or 0) > now then
  return {'paused', ''}
end
if tonumber(ARGV[12]) >= limits[3] then
  return {'busy', ''}
end
local t, tat, tau = gcra(lim, limits, now)
if tat - now > tau then
  return {'rate', ''}
end
local v = tonumber(redis.call('HGET', KEYS[4], '~v') or '0')
local last = tonumber(redis.call('HGET', KEYS[4], ARGV[11]) or '0')
local tag = last + 1
if last <= v then
  tag = v + 0.001
end
redis.call('HSET', KEYS[4], ARGV[11], tag, '~v', tag)
redis.call('PEXPIRE', KEYS[4], 86400000) -- nothing waits: as grant.lua leaves an idle scope's tags
local lease = ARGV[10] .. '@' .. redis.call('HINCRBY', KEYS[2], 'leases', 1)
redis.call('ZADD', KEYS[5], now + tonumber(ARGV[13]), lease)
redis.call('HSET', KEYS[2], 'tat', tostring(math.max(tat, now) + t), 't', tostring(t))
return {'ok', lease}
