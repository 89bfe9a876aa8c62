-- Move delayed work that is due into its region's job stream.
-- KEYS[1] delayed set   KEYS[2..] the job stream of each region
-- ARGV[1] now (ms)   ARGV[2] max entries to move
-- ARGV[3] event channel prefix (the job id is appended; a 'queued' event is published)
-- ARGV[4..] the region id of each stream key, in the same order
-- Members are "<region>|<job_id>". Returns {how many were released, the first entry's due (ms) after
-- them, or nil}: the coordinator sleeps until then (coordinator/wake.py).
local streams = {}
for i = 2, #KEYS do
  streams[ARGV[i + 2]] = KEYS[i]
end
local now = tonumber(ARGV[1])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local moved = 0
for _, member in ipairs(due) do
  local sep = string.find(member, '|', 1, true)
  local region = sep and string.sub(member, 1, sep - 1)
  local stream = region and streams[region]
  -- A member for a region no longer configured stays put: an operator sees it.
  if stream then
    local job_id = string.sub(member, sep + 1)
    redis.call('XADD', stream, '*', 'job', job_id)
    redis.call('ZREM', KEYS[1], member)
    redis.call('PUBLISH', ARGV[3] .. job_id, cjson.encode({type = 'queued', region = region, ts_ms = now}))
    moved = moved + 1
  end
end
return {moved, redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]}
