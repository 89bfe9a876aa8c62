-- A region is about to attempt a job: mark it running and return what the
-- attempt needs, in one round trip.
-- KEYS[1] job record   ARGV[1] now (ms)
-- Returns {state, spec, retries, reroutes, created_ms} as they were before
-- the call, or false when the record is gone. A caller that finds a final
-- state skips the send.
local v = redis.call('HMGET', KEYS[1], 'state', 'spec', 'retries', 'reroutes', 'created_ms')
if not v[1] then
  return false
end
if v[1] ~= 'success' and v[1] ~= 'failed' then
  redis.call('HSET', KEYS[1], 'state', 'running')
  redis.call('HSETNX', KEYS[1], 'started_ms', ARGV[1])
end
return v
