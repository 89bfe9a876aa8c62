-- The body of submit.lua and accept.lua (each defines take_now first; see those files).
local existing = redis.call('GET', KEYS[1])
if existing then
  return {0, existing}
end
local left = tonumber(ARGV[5])
if left >= 0 then
  local used = tonumber(redis.call('GET', KEYS[4]) or '0')
  if used >= left then
    return {2, ''}
  end
end
local queued_left = tonumber(ARGV[8])
if queued_left >= 0 then
  local queued = tonumber(redis.call('HGET', KEYS[5], ARGV[7]) or '0')
  if queued >= queued_left then
    return {3, ''}
  end
end
redis.call('INCR', KEYS[4])
redis.call('EXPIRE', KEYS[4], tonumber(ARGV[6]))
redis.call('HINCRBY', KEYS[5], ARGV[7], 1)
local job_id = ARGV[1]
local due = tonumber(ARGV[3])
local delayed = due > tonumber(ARGV[4])
local lease = ''
if not delayed then
  lease = take_now()
end
redis.call('SET', KEYS[1], job_id, 'EX', tonumber(ARGV[2]))
local n = tonumber(ARGV[9])
-- 'counted': finish.lua takes a counted job off KEYS[5] (the record's fields never include it)
redis.call('HSET', KEYS[2], 'counted', 1, unpack(ARGV, 13, 12 + 2 * n))
if lease ~= '' then  -- taken: its send is under way from now (cancel.lua's in_flight)
  redis.call('HSET', KEYS[2], 'sending:' .. redis.call('HGET', KEYS[2], 'regions'), ARGV[4])
end
-- the customer's job index (common/job_index.py): this job in; entries too old to be alive out; its TTL renewed
redis.call('ZADD', KEYS[6], 0, ARGV[10])
redis.call('ZREMRANGEBYLEX', KEYS[6], '-', ARGV[12])
redis.call('EXPIRE', KEYS[6], tonumber(ARGV[11]))
local first_region = 13 + 2 * n
for i = 7, #KEYS - 1 do
  if delayed then
    redis.call('ZADD', KEYS[3], due, ARGV[first_region + i - 7] .. '|' .. job_id)
  elseif lease == '' then
    redis.call('XADD', KEYS[i], '*', 'job', job_id)
  end
end
-- after the region ids: (due ms, timer kind) pairs of the job's workflow timers
for t = first_region + #KEYS - 7, #ARGV, 2 do
  redis.call('ZADD', KEYS[#KEYS], tonumber(ARGV[t]), ARGV[t + 1] .. '|' .. job_id)
end
return {1, job_id, lease}
