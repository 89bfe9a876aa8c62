-- Start a job's continuation (a workflow child) exactly once.
-- The parent's 'cont' field names the one continuation claimed; a child is
-- created only by the claim, so a final outcome and a timer racing for the
-- same parent start one child between them. Idempotent: a repeat returns the
-- child already created.
--
-- KEYS[1] parent record   KEYS[2] child record   KEYS[3] delayed set
-- KEYS[4] workflow timers KEYS[5] queued counters (hash: customer -> jobs not
-- final; the child counts like a submission, finish.lua takes it off)
-- KEYS[6] the customer's job index in this partition (zset, common/job_index.py)
-- KEYS[7] the customer's usage this month in this partition (common/quotas.py: a child is a
-- request, like a submission)
-- KEYS[8..] one job stream per region of the child
-- ARGV[1] relation   ARGV[2] child job id   ARGV[3] now (ms)   ARGV[4] due (ms, 0 = now)
-- ARGV[5] n = number of field/value pairs   ARGV[6] the child's index member
-- ARGV[7] the index's TTL (s)   ARGV[8] lex bound: index members below it are too old to be alive
-- ARGV[9] the usage counter's TTL (s)
-- ARGV[10 .. 9+2n] child record fields
-- then one region id per stream key, then (due ms, timer kind) pairs
--
-- Returns {1, child id} when created, {2, child id} if it existed,
-- {0, claimed relation} when another continuation was claimed first.
--@include common/_wake.lua
local existing = redis.call('HGET', KEYS[1], 'child:' .. ARGV[1])
if existing then
  return {2, existing}
end
if redis.call('HSETNX', KEYS[1], 'cont', ARGV[1]) == 0 then
  local claimed = redis.call('HGET', KEYS[1], 'cont')
  if claimed ~= ARGV[1] then
    return {0, claimed}
  end
end
local child = ARGV[2]
redis.call('HSET', KEYS[1], 'child:' .. ARGV[1], child)
local n = tonumber(ARGV[5])
redis.call('HSET', KEYS[2], unpack(ARGV, 10, 9 + 2 * n))
local customer = redis.call('HGET', KEYS[2], 'customer')
if customer then
  redis.call('HINCRBY', KEYS[5], customer, 1)
  redis.call('HSET', KEYS[2], 'counted', 1)
end
redis.call('INCR', KEYS[7])
redis.call('EXPIRE', KEYS[7], tonumber(ARGV[9]))
redis.call('ZADD', KEYS[6], 0, ARGV[6])  -- listed from now on, as a submission is (_submit.lua)
redis.call('ZREMRANGEBYLEX', KEYS[6], '-', ARGV[8])
redis.call('EXPIRE', KEYS[6], tonumber(ARGV[7]))
local now, due = tonumber(ARGV[3]), tonumber(ARGV[4])
local first_region = 10 + 2 * n
for i = 8, #KEYS do
  if due > now then
    add_due(KEYS[3], due, ARGV[first_region + i - 8] .. '|' .. child, 'delayed')
  else
    redis.call('XADD', KEYS[i], '*', 'job', child)
  end
end
for t = first_region + #KEYS - 7, #ARGV, 2 do
  add_due(KEYS[4], tonumber(ARGV[t]), ARGV[t + 1] .. '|' .. child, 'timers')
end
return {1, child}
