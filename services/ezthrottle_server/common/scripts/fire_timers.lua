-- Hand due workflow timers to the workflow stream.
-- KEYS[1] workflow timers (zset of "<kind>|<job_id>")   KEYS[2] workflow stream
-- ARGV[1] now (ms)   ARGV[2] max timers
-- Returns {how many fired, the first timer's due (ms) after them, or nil}.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  local sep = string.find(member, '|', 1, true)
  if sep then
    redis.call('XADD', KEYS[2], '*', 'job', string.sub(member, sep + 1), 'event', string.sub(member, 1, sep - 1))
  end
  redis.call('ZREM', KEYS[1], member)
end
return {#due, redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]}
