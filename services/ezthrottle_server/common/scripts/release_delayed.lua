-- Move delayed work that is due into its region's job stream.
-- KEYS[1] delayed set   KEYS[2..] the job stream of each region
-- ARGV[1] now (ms)   ARGV[2] max entries to move
-- ARGV[3..] the region id of each stream key, in the same order
-- Members are "<region>|<job_id>". Returns how many were released.
local streams = {}
for i = 2, #KEYS do
  streams[ARGV[i + 1]] = KEYS[i]
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local moved = 0
for _, member in ipairs(due) do
  local sep = string.find(member, '|', 1, true)
  local stream = sep and streams[string.sub(member, 1, sep - 1)]
  if stream then
    redis.call('XADD', stream, '*', 'job', string.sub(member, sep + 1))
    moved = moved + 1
  end
  -- A member for a region no longer configured stays put: an operator sees it.
  if stream then
    redis.call('ZREM', KEYS[1], member)
  end
end
return moved
