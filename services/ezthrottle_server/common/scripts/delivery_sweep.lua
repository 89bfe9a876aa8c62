-- The delivery service takes over a hand-off (finish.lua) whose edge did not
-- deliver in time: its time (score) has passed, so the edge died, or could
-- not take it, or is far behind. Not planned yet: the job enters delivery
-- through the deliveries stream, as if the edge delivered nothing. Planned
-- (delivery_claim.lua): each webhook the edge was to send and has not (still
-- pending and marked '<i>:edge') is queued on a send stream. A hand-off not
-- yet due, or gone (the edge finished with it), is left alone.
--
-- KEYS[1] hand-off zset   KEYS[2] webhooks hash   KEYS[3] deliveries stream   KEYS[4..] send streams
-- ARGV[1] hand-off member ("<job>" or "<step>|<job that answered>")   ARGV[2] now (ms)
-- ARGV[3..] the route name of each send stream KEYS[4..], in order ('any' among them)
--
-- Returns 0 (left alone), 1 (entered delivery), or 2 + how many sends were queued.
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
local job, answer = string.match(ARGV[1], '^([^|]+)|?(.*)$')
if redis.call('EXISTS', KEYS[2]) == 0 then
  if answer ~= '' then
    redis.call('XADD', KEYS[3], '*', 'job', job, 'outcome', answer)
  else
    redis.call('XADD', KEYS[3], '*', 'job', job)
  end
  return 1
end
local streams = {}
for i = 4, #KEYS do
  streams[ARGV[i - 1]] = KEYS[i]
end
local customer = redis.call('HGET', KEYS[2], 'customer')
local queued = 0
for h = 0, tonumber(redis.call('HGET', KEYS[2], 'count') or '0') - 1 do
  local p = h .. ':'
  local s = redis.call('HMGET', KEYS[2], p .. 'state', p .. 'edge', p .. 'regions')
  if s[1] == 'pending' and s[2] then
    redis.call('HDEL', KEYS[2], p .. 'edge')
    local route = 'any'
    for r in string.gmatch(s[3] or '', '[^,]+') do
      if streams[r] then
        route = r
        break
      end
    end
    redis.call('XADD', streams[route], '*', 'job', job, 'hook', h, 'customer', customer)
    queued = queued + 1
  end
end
return 2 + queued
