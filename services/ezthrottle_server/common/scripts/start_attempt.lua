-- A region is about to attempt a job: mark it running and return what the
-- attempt needs, in one round trip.
-- KEYS[1] job record   KEYS[2] attempts list   KEYS[3] queued counters
-- KEYS[4] delivery stream   KEYS[5] workflow stream   KEYS[6] the kept-bytes bucket of now (common/storage.py)
-- ARGV[1] now (ms)   ARGV[2] region   ARGV[3] the job's event channel
-- ARGV[4] TTL of a final job (s)   ARGV[5] job id
-- Returns {state, spec, retries in this region, reroutes, created_ms, mode,
-- tried regions, unsafe, live regions, idempotent key} as they were before the call
-- (and, 11th, the reason when this call ended the job), or false when the
-- record is gone. A caller that finds a final state skips the send.
--
-- Nothing is sent for a job cancelled meanwhile (final), nor for one whose
-- cancel was requested during an earlier attempt (it ends 'cancelled' here),
-- nor for one not started by its start_before_ms (it ends 'expired' here):
-- the state answered is then the final one.
--@include common/_end_job.lua
-- one read: the ten fields answered, then the four this call decides on
local got = redis.call('HMGET', KEYS[1], 'state', 'spec', 'retries:' .. ARGV[2], 'reroutes', 'created_ms',
  'mode', 'tried', 'unsafe', 'live', 'idempotent_key',
  'cancel_requested', 'start_before_ms', 'started_ms', 'sending:' .. ARGV[2])
local v = {unpack(got, 1, 10)}
if not v[1] then
  return false
end
if not is_final(v[1]) then
  local now = tonumber(ARGV[1])
  local w = {unpack(got, 11, 14)}
  local ending, reason = nil, nil
  -- (a job taken at its acceptance is being sent already, 'sending:<region>'
  -- written by submit: its cancel waits for that attempt's end, finish.lua)
  if w[1] == '1' and not w[4] then
    if in_flight(KEYS[1], now, math.huge) then
      -- another region's attempt is under way: this copy stops here, and that
      -- attempt's end (finish.lua, requeue.lua) ends the job cancelled
      v[1] = 'cancelled'
      return v
    end
    ending, reason = 'cancelled', 'cancelled'
  elseif w[2] and not w[3] and now >= tonumber(w[2]) then
    ending, reason = 'expired', 'start_before_passed'
  end
  if ending then
    end_job({job = KEYS[1], attempts = KEYS[2], queued = KEYS[3], deliveries = KEYS[4], workflow = KEYS[5], kept = KEYS[6]},
      {id = ARGV[5], state = ending, reason = reason, now = now,
       ttl = ARGV[4], channel = ARGV[3]})
    v[1] = ending
    v[11] = reason
    return v
  end
  redis.call('HSET', KEYS[1], 'state', 'running', 'sending:' .. ARGV[2], ARGV[1])
  redis.call('HSETNX', KEYS[1], 'started_ms', ARGV[1])
  redis.call('PUBLISH', ARGV[3], cjson.encode({type = 'dispatching', region = ARGV[2], ts_ms = tonumber(ARGV[1])}))
end
return v
