-- Record what a claimed tick became (a job, or why none), once: only while
-- the schedule still waits for that tick (schedule_claim.lua's 'firing').
-- KEYS[1] the schedule   KEYS[2] firing set
-- ARGV[1] schedule id   ARGV[2] the tick (ms)   ARGV[3] 1: a job was created for it, else 0
-- ARGV[4..] field, value pairs (last_job_id, last_error, ...)
-- Returns 1 when recorded, 0 when the schedule no longer waits for this tick.
if redis.call('HGET', KEYS[1], 'firing') ~= ARGV[2] then
  return 0
end
redis.call('HDEL', KEYS[1], 'firing')
redis.call('ZREM', KEYS[2], ARGV[1])
if ARGV[3] == '1' then
  redis.call('HINCRBY', KEYS[1], 'fired_count', 1)
end
if #ARGV > 3 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 4))
end
return 1
