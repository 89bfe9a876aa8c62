-- Claim one tick of a schedule, once: whoever sees next_ms still at the tick
-- it read moves it on; any other claim of that tick (a second coordinator, a
-- failover, a repeat) finds it moved and does nothing. Missed ticks are one:
-- the caller passes the first fire time after now, not after the tick.
-- KEYS[1] the schedule   KEYS[2] due set   KEYS[3] firing set
-- ARGV[1] schedule id   ARGV[2] the tick (ms: next_ms as read)   ARGV[3] next fire after now (ms)
-- ARGV[4] now (ms)   ARGV[5] 'fire', or 'skip' (overlap: the last fired job is not final)
-- Returns 1 when claimed, 0 when not (gone, paused, already claimed, or a
-- claimed tick not yet submitted: the caller finishes that one first).
if redis.call('HGET', KEYS[1], 'next_ms') ~= ARGV[2] or redis.call('HGET', KEYS[1], 'paused') == '1' then
  return 0
end
if redis.call('HEXISTS', KEYS[1], 'firing') == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'next_ms', ARGV[3])
redis.call('ZADD', KEYS[2], tonumber(ARGV[3]), ARGV[1])
if ARGV[5] == 'fire' then
  redis.call('HSET', KEYS[1], 'firing', ARGV[2])
  redis.call('ZADD', KEYS[3], tonumber(ARGV[4]), ARGV[1])
else
  redis.call('HINCRBY', KEYS[1], 'skipped_count', 1)
  redis.call('HSET', KEYS[1], 'last_skipped_ms', ARGV[2])
end
return 1
