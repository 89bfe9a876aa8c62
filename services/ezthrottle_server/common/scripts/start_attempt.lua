-- A region is about to attempt a job: mark it running and return what the
-- attempt needs, in one round trip.
-- KEYS[1] job record
-- ARGV[1] now (ms)   ARGV[2] region   ARGV[3] the job's event channel
-- Returns {state, spec, retries in this region, reroutes, created_ms, mode,
-- tried regions, unsafe, live regions, idempotent key} as they were before the call, or
-- false when the record is gone. A caller that finds a final state skips the send.
local v = redis.call('HMGET', KEYS[1], 'state', 'spec', 'retries:' .. ARGV[2], 'reroutes', 'created_ms',
  'mode', 'tried', 'unsafe', 'live', 'idempotent_key')
if not v[1] then
  return false
end
if v[1] ~= 'success' and v[1] ~= 'failed' then
  redis.call('HSET', KEYS[1], 'state', 'running')
  redis.call('HSETNX', KEYS[1], 'started_ms', ARGV[1])
  redis.call('PUBLISH', ARGV[3], cjson.encode({type = 'dispatching', region = ARGV[2], ts_ms = tonumber(ARGV[1])}))
end
return v
