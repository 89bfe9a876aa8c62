-- end_job: a job ends without an attempt deciding it: 'cancelled' (DELETE
-- /api/v1/jobs/{id}, or a cancel requested during an attempt) or 'expired'
-- (not started by its start_before_ms). Included by cancel.lua,
-- start_attempt.lua and requeue.lua; the caller has checked the job is not
-- final, so this runs once per job and its admission counter drops once (as
-- finish.lua's finalize does). A cancelled job's chain stops (its one
-- continuation is claimed as 'cancelled'); an expired one goes on like a
-- failure (on_failure, a fallback whose trigger matches).
--
-- k: {job, attempts, queued, deliveries, workflow, kept (the kept-bytes bucket of now: common/storage.py)} keys
-- a: {id, state, reason, now, ttl, channel, result (JSON or nil: unchanged)}
--@include common/_bytes.lua
--@include common/_wake.lua
local function end_job(k, a)
  if a.state == 'cancelled' then
    redis.call('HSETNX', k.job, 'cont', 'cancelled')
  end
  redis.call('HSET', k.job, 'state', a.state, 'finished_ms', a.now, 'error', a.reason)
  if a.result then
    redis.call('HSET', k.job, 'result', a.result)
  end
  local counted = redis.call('HMGET', k.job, 'counted', 'customer', 'bytes')
  if counted[1] == '1' and counted[2] and redis.call('HINCRBY', k.queued, counted[2], -1) <= 0 then
    redis.call('HDEL', k.queued, counted[2])
  end
  bytes_ended(k.queued, k.kept, counted[2] or nil, counted[3] or nil, a.result and #a.result or 0, a.ttl)
  local ttl = tonumber(a.ttl)
  redis.call('EXPIRE', k.job, ttl)
  redis.call('EXPIRE', k.attempts, ttl)
  -- Webhooks, as finish.lua's finalize: an expired job whose server-run
  -- fallback may follow leaves them to the coordinator; a job a fallback took
  -- over from delivers nothing; a fallback delivers to its step.
  local f = redis.call('HMGET', k.job, 'has_webhooks', 'fallback', 'step', 'cont', 'chain')
  if (a.state == 'cancelled' or f[2] ~= '1') and f[4] ~= 'fallback' then
    if f[1] == '1' then
      redis.call('XADD', k.deliveries, '*', 'job', a.id)
    end
    if f[3] then
      redis.call('XADD', k.deliveries, '*', 'job', f[3], 'outcome', a.id)
    end
  end
  if f[5] == '1' and a.state ~= 'cancelled' then
    redis.call('XADD', k.workflow, '*', 'job', a.id, 'event', 'final')
    wake_coordinator('spawn')
  end
  redis.call('PUBLISH', a.channel, cjson.encode({type = 'failed', status = a.state, error = a.reason, ts_ms = tonumber(a.now)}))
end

-- Is an attempt of the job in flight? start_attempt.lua (and a job taken at
-- its acceptance) writes 'sending:<region>' = its start (ms); finish.lua and
-- requeue.lua delete it. One older than `bound_ms` is a dead node's: no
-- longer in flight (its lease expires and the next start finds the job final).
local function in_flight(job_key, now, bound_ms)
  local fields = redis.call('HGETALL', job_key)
  for i = 1, #fields, 2 do
    if string.sub(fields[i], 1, 8) == 'sending:' and now - tonumber(fields[i + 1]) < bound_ms then
      return true
    end
  end
  return false
end

local function is_final(state)
  return state == 'success' or state == 'failed' or state == 'cancelled' or state == 'expired'
end
