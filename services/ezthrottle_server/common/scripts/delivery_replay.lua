-- Replay a job's dead-lettered webhooks: each is scheduled now, and the job
-- leaves the dead letters. A webhook gets a fresh retry window, unless a
-- replay already gave it one that is still open: then it goes on in that
-- window (replaying again never stretches a webhook's retries past one
-- window from its first replay in it).
-- KEYS[1] webhooks hash   KEYS[2] scheduled zset
-- KEYS[3] dead letters    KEYS[4] the customer's dead letters
-- ARGV[1] now (ms)   ARGV[2] TTL of the state (s)   ARGV[3] job id
-- ARGV[4] the retry window (ms)
-- ARGV[5..] the route of each webhook, by index
-- Returns how many webhooks were queued again (-1 if the state is gone).
local count = redis.call('HGET', KEYS[1], 'count')
redis.call('ZREM', KEYS[3], ARGV[3])
redis.call('ZREM', KEYS[4], ARGV[3])
if not count then
  return -1
end
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[4])
local replayed = 0
for h = 0, tonumber(count) - 1 do
  local p = h .. ':'
  if redis.call('HGET', KEYS[1], p .. 'state') == 'dead' then
    local opened = tonumber(redis.call('HGET', KEYS[1], p .. 'replayed_ms') or '')
    if opened and now - opened < window then  -- replayed within its window: that window goes on
      redis.call('HSET', KEYS[1], p .. 'state', 'pending', p .. 'next_ms', ARGV[1])
    else
      redis.call('HSET', KEYS[1], p .. 'state', 'pending', p .. 'since_ms', ARGV[1], p .. 'next_ms', ARGV[1],
        p .. 'replayed_ms', ARGV[1], p .. 'window_base', redis.call('HGET', KEYS[1], p .. 'attempts') or 0)
    end
    redis.call('HDEL', KEYS[1], p .. 'dead_reason', p .. 'dead_ms')
    redis.call('ZADD', KEYS[2], now, (ARGV[4 + h + 1] or 'any') .. '|' .. ARGV[3] .. '|' .. h)
    replayed = replayed + 1
  end
end
if replayed > 0 then
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
end
return replayed
