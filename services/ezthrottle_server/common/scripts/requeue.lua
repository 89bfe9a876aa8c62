-- An attempt ended without a final outcome: record it, count it against the
-- job's budget, queue the next attempt (now or later), and only then
-- acknowledge the stream entry. Nothing is ever only in a node's memory.
--
-- KEYS[1] job record   KEYS[2] attempts list   KEYS[3] this region's stream
-- KEYS[4] delayed set  KEYS[5] the stream of the region that tries next
-- ARGV[1] consumer group   ARGV[2] stream entry id ('' if none)   ARGV[3] attempt (JSON)
-- ARGV[4] budget counter ('retries' | 'reroutes')   ARGV[5] next region
-- ARGV[6] due (ms)   ARGV[7] now (ms)   ARGV[8] job id
--
-- Returns 1 when queued again, 0 if the job was already final, -1 if gone.
local result = -1
local state = redis.call('HGET', KEYS[1], 'state')
if state then
  redis.call('RPUSH', KEYS[2], ARGV[3])
  if state == 'success' or state == 'failed' then
    result = 0
  else
    redis.call('HINCRBY', KEYS[1], ARGV[4], 1)
    redis.call('HSET', KEYS[1], 'state', 'scheduled')
    if tonumber(ARGV[6]) > tonumber(ARGV[7]) then
      redis.call('ZADD', KEYS[4], tonumber(ARGV[6]), ARGV[5] .. '|' .. ARGV[8])
    else
      redis.call('XADD', KEYS[5], '*', 'job', ARGV[8])
    end
    result = 1
  end
end
if ARGV[2] ~= '' then
  redis.call('XACK', KEYS[3], ARGV[1], ARGV[2])
  redis.call('XDEL', KEYS[3], ARGV[2])
end
return result
