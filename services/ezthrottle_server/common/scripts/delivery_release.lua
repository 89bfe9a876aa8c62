-- Move webhook retries that are due onto the send stream of their route.
-- KEYS[1] scheduled zset   KEYS[2..] send streams
-- ARGV[1] now (ms)   ARGV[2] max entries to move
-- ARGV[3..] the route name of each send stream KEYS[2..], in order
-- Members are "<route>|<job_id>|<hook>"; a route with no stream here (a
-- region no longer configured) goes to the "any" stream. Returns how many moved.
local streams = {}
for i = 2, #KEYS do
  streams[ARGV[i + 1]] = KEYS[i]
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local moved = 0
for _, member in ipairs(due) do
  local route, job, hook = string.match(member, '^([^|]*)|([^|]+)|(%d+)$')
  if job then
    redis.call('XADD', streams[route] or streams['any'], '*', 'job', job, 'hook', hook)
    moved = moved + 1
  end
  redis.call('ZREM', KEYS[1], member)
end
return moved
