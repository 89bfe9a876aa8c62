-- Accept a job atomically: dedupe on its idempotent key, check and count the
-- customer's monthly quota and its jobs not yet final (admission ceiling),
-- write the record, then queue it in each chosen region (or park it until
-- retry_at). A duplicate costs nothing.
--
-- KEYS[1] idempotency key   KEYS[2] job record (hash)   KEYS[3] delayed set
-- KEYS[4] usage counter (this partition, this month)
-- KEYS[5] queued counters (hash: customer -> jobs not final; finish.lua takes one off)
-- KEYS[6..n-1] one job stream per chosen region   KEYS[n] workflow timers (zset)
-- ARGV[1] job id   ARGV[2] idempotency TTL (s)   ARGV[3] due time (ms, 0 = now)
-- ARGV[4] now (ms) ARGV[5] quota left in this partition (-1 = no cap)
-- ARGV[6] usage counter TTL (s)   ARGV[7] customer
-- ARGV[8] queued jobs left in this partition (-1 = no ceiling)
-- ARGV[9] n = number of field/value pairs
-- ARGV[10 .. 9+2n] record fields and values, then one region id per stream key
--
-- Returns {1, job_id, lease} when created, {0, existing_job_id} for a duplicate,
-- {2, ''} when the quota is spent, {3, ''} when the customer has its ceiling
-- of jobs queued (nothing written in either case).
--
-- lease: '' here. On one Redis (no cluster), pacing/limiter.py composes this
-- script with the pacing prelude as accept.lua, which replaces the line below:
-- once the job is known to be new and allowed, its pacing scope is asked for
-- a lease at once (take.lua's logic, on the domain's keys after these). With
-- a lease the job gets no stream entry: the lease holds it, as a grant's does.
local take_now = function() return '' end -- accept.lua: take the job at once
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
redis.call('HSET', KEYS[2], unpack(ARGV, 10, 9 + 2 * n))
redis.call('HSET', KEYS[2], 'counted', 1)  -- finish.lua takes a counted job off KEYS[5]
local first_region = 10 + 2 * n
for i = 6, #KEYS - 1 do
  if delayed then
    redis.call('ZADD', KEYS[3], due, ARGV[first_region + i - 6] .. '|' .. job_id)
  elseif lease == '' then
    redis.call('XADD', KEYS[i], '*', 'job', job_id)
  end
end
-- after the region ids: (due ms, timer kind) pairs of the job's workflow timers
for t = first_region + #KEYS - 6, #ARGV, 2 do
  redis.call('ZADD', KEYS[#KEYS], tonumber(ARGV[t]), ARGV[t + 1] .. '|' .. job_id)
end
return {1, job_id, lease}
