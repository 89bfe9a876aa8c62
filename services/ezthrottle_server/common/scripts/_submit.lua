-- The body of submit.lua and accept.lua (each defines take_now first; see those files).
--@include common/_wake.lua
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
-- the bytes of the record as written (its fields and values), against what is left of the customer's
-- byte budget (common/storage.py): ARGV[13], -1 = no budget. What the customer holds in this partition: its
-- open jobs' bytes, and what its jobs that ended here since the caller's read (ARGV[14]) added to the kept ones.
local n = tonumber(ARGV[9])
local size = 0
for i = 15, 14 + 2 * n do
  size = size + #ARGV[i]
end
local bytes_field = ARGV[7] .. '|bytes'
local bytes_left = tonumber(ARGV[13])
if bytes_left >= 0 then
  local held = redis.call('HMGET', KEYS[5], bytes_field, ARGV[7] .. '|ended')
  local since = math.max(0, (tonumber(held[2]) or 0) - tonumber(ARGV[14]))
  if (tonumber(held[1]) or 0) + since + size > bytes_left then
    return {4, ''}
  end
end
redis.call('INCR', KEYS[4])
redis.call('EXPIRE', KEYS[4], tonumber(ARGV[6]))
redis.call('HINCRBY', KEYS[5], ARGV[7], 1)
redis.call('HINCRBY', KEYS[5], bytes_field, size)
local job_id = ARGV[1]
local due = tonumber(ARGV[3])
local delayed = due > tonumber(ARGV[4])
local lease = ''
if not delayed then
  lease = take_now()
end
redis.call('SET', KEYS[1], job_id, 'EX', tonumber(ARGV[2]))
-- 'counted': finish.lua takes a counted job off KEYS[5], and its 'bytes' (the record's fields never include either)
redis.call('HSET', KEYS[2], 'counted', 1, 'bytes', size, unpack(ARGV, 15, 14 + 2 * n))
if lease ~= '' then  -- taken: its send is under way from now (cancel.lua's in_flight)
  redis.call('HSET', KEYS[2], 'sending:' .. redis.call('HGET', KEYS[2], 'regions'), ARGV[4])
end
-- the customer's job index (common/job_index.py): this job in; entries too old to be alive out; its TTL renewed
redis.call('ZADD', KEYS[6], 0, ARGV[10])
redis.call('ZREMRANGEBYLEX', KEYS[6], '-', ARGV[12])
redis.call('EXPIRE', KEYS[6], tonumber(ARGV[11]))
local first_region = 15 + 2 * n
for i = 7, #KEYS - 1 do
  if delayed then
    add_due(KEYS[3], due, ARGV[first_region + i - 7] .. '|' .. job_id, 'delayed')
  elseif lease == '' then
    redis.call('XADD', KEYS[i], '*', 'job', job_id)
  end
end
-- after the region ids: (due ms, timer kind) pairs of the job's workflow timers
for t = first_region + #KEYS - 7, #ARGV, 2 do
  add_due(KEYS[#KEYS], tonumber(ARGV[t]), ARGV[t + 1] .. '|' .. job_id, 'timers')
end
return {1, job_id, lease, size}
