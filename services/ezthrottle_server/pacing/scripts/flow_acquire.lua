-- A send of a job with a flow-control key needs the key's leave too, besides its
-- domain's grant (pacing/flow.py): the key's pause, its parallelism (sends in
-- flight, across every region) and its rate (a GCRA, as a domain's).
--
-- KEYS[1] the key's hash   KEYS[2] its sends in flight (zset: lease -> expiry, ms)
-- ARGV[1] now (ms; '' = the Redis server's clock)   ARGV[2] rate ('' = none)
-- ARGV[3] parallelism ('' = none)   ARGV[4] the send's lease   ARGV[5] lease (ms)
-- ARGV[6] the key as the customer named it   ARGV[7] the customer
--
-- Returns {'ok', 0}, or {'paused' | 'busy' | 'rate', ms to wait before asking again}.
--@include pacing/_now.lua
local now = now_ms()
local TTL_MS, TOLERANCE_MS, BUSY_RETRY_MS = 86400000, 5, 250
redis.call('HSET', KEYS[1], 'key', ARGV[6], 'customer', ARGV[7], 'rate', ARGV[2], 'parallelism', ARGV[3])
redis.call('PEXPIRE', KEYS[1], TTL_MS)
local pause = tonumber(redis.call('HGET', KEYS[1], 'pause_until')) or 0
if pause > now then
  return {'paused', math.ceil(pause - now)}
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZSCORE', KEYS[2], ARGV[4]) then
  return {'ok', 0}  -- asked twice (a lost reply): it holds its place already
end
if ARGV[3] ~= '' and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then
  local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  return {'busy', math.max(1, math.min(BUSY_RETRY_MS, math.ceil(tonumber(first[2]) - now)))}
end
if ARGV[2] ~= '' then
  local t = 1000 / tonumber(ARGV[2])
  local tat = math.max(tonumber(redis.call('HGET', KEYS[1], 'tat')) or 0, now)
  if tat - now > TOLERANCE_MS then
    return {'rate', math.ceil(tat - now)}
  end
  redis.call('HSET', KEYS[1], 'tat', tostring(tat + t))
end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[5]), ARGV[4])
redis.call('PEXPIRE', KEYS[2], TTL_MS)
return {'ok', 0}
