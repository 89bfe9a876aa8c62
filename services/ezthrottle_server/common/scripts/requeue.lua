-- An attempt ended without an outcome for its region, or was deferred
-- before sending: record it, count it against the budget, queue the next
-- attempt (now or later), and only then acknowledge the stream entry.
-- Nothing is ever only in a node's memory.
--
-- KEYS[1] job record   KEYS[2] attempts list   KEYS[3] this region's stream
-- KEYS[4] delayed set  KEYS[5] the stream of the region that tries next
-- ARGV[1] consumer group   ARGV[2] stream entry id ('' if none)
-- ARGV[3] attempt (JSON, '' for a deferral that sent nothing)
-- ARGV[4] kind: 'retry' (same region) | 'reroute' (another region) | 'defer'
-- ARGV[5] next region   ARGV[6] due (ms)   ARGV[7] now (ms)   ARGV[8] job id
-- ARGV[9] this region   ARGV[10] the job's event channel
-- KEYS[6] queued counters   KEYS[7] delivery stream   KEYS[8] workflow stream
-- KEYS[9] the kept-bytes bucket of now (common/storage.py)
-- ARGV[11] the attempt's result (JSON, '' if none)   ARGV[12] TTL of a final job (s)
-- (a job whose cancel was requested during this attempt ends 'cancelled'
-- here, that attempt's result kept, instead of being queued again)
--
-- Returns 1 when queued again, 0 if the job was already final (or is
-- cancelled now), -1 if gone.
--@include common/_end_job.lua
--@include common/_ack.lua
--@include common/_wake.lua
local result = -1
local state = redis.call('HGET', KEYS[1], 'state')
if state then
  redis.call('HDEL', KEYS[1], 'sending:' .. ARGV[9])
  if is_final(state) then
    if ARGV[3] ~= '' then
      local attempt = cjson.decode(ARGV[3])
      attempt.lost = true
      redis.call('RPUSH', KEYS[2], cjson.encode(attempt))
    end
    result = 0
  else
    local now = tonumber(ARGV[7])
    if ARGV[3] ~= '' then
      redis.call('RPUSH', KEYS[2], ARGV[3])
      local attempt = cjson.decode(ARGV[3])
      attempt.type = 'attempt'
      attempt.ts_ms = now
      redis.call('PUBLISH', ARGV[10], cjson.encode(attempt))
    end
  end
  if result == -1 and redis.call('HGET', KEYS[1], 'cancel_requested') == '1' then
    end_job({job = KEYS[1], attempts = KEYS[2], queued = KEYS[6], deliveries = KEYS[7], workflow = KEYS[8], kept = KEYS[9]},
      {id = ARGV[8], state = 'cancelled', reason = 'cancelled', now = tonumber(ARGV[7]), ttl = ARGV[12], channel = ARGV[10],
       result = ARGV[11] ~= '' and ARGV[11] or nil})
    result = 0
  elseif result == -1 then
    local now = tonumber(ARGV[7])
    if ARGV[4] == 'retry' then
      redis.call('HINCRBY', KEYS[1], 'retries:' .. ARGV[9], 1)
    elseif ARGV[4] == 'reroute' then
      redis.call('HINCRBY', KEYS[1], 'reroutes', 1)
      local tried = redis.call('HGET', KEYS[1], 'tried') or ''
      redis.call('HSET', KEYS[1], 'tried', tried .. ',' .. ARGV[5])
    end
    if (redis.call('HGET', KEYS[1], 'live') or '1') == '1' then
      redis.call('HSET', KEYS[1], 'state', 'scheduled')
    end
    local due = tonumber(ARGV[6])
    if due > now then
      add_due(KEYS[4], due, ARGV[5] .. '|' .. ARGV[8], 'delayed')
    else
      redis.call('XADD', KEYS[5], '*', 'job', ARGV[8])
    end
    redis.call('PUBLISH', ARGV[10], cjson.encode({type = 'scheduled', region = ARGV[5], due_ms = due, reason = ARGV[4], ts_ms = now}))
    result = 1
  end
end
ack_entry(KEYS[3])
return result
