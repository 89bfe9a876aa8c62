-- Record the outcome of one webhook POST, then acknowledge its send entry.
--
-- delivered: the webhook is delivered (even if it was retrying or dead: a
--   late success wins); a voting webhook counts toward the quorum, and the
--   first time the votes reach it, quorum_met_ms is set.
-- retry: state retrying, the next send scheduled at ARGV[8].
-- dead: state dead, the job added to the dead letters.
-- A failure for a webhook already delivered or dead changes nothing but the
-- attempt counters (it was a duplicate send).
--
-- KEYS[1] webhooks hash   KEYS[2] send stream   KEYS[3] scheduled zset
-- KEYS[4] dead letters    KEYS[5] the customer's dead letters
-- ARGV[1] consumer group  ARGV[2] entry id ('' if none)  ARGV[3] webhook index
-- ARGV[4] outcome (delivered | retry | dead)  ARGV[5] now (ms)
-- ARGV[6] status code ('' if none)  ARGV[7] error ('' if none)
-- ARGV[8] next due (ms)  ARGV[9] scheduled member  ARGV[10] dead reason
-- ARGV[11] sending node  ARGV[12] sending region ('' if none)  ARGV[13] job id
-- ARGV[14] the job's event channel (delivered, quorum_met and webhook_dead are published)
-- KEYS[6], ARGV[15] (optional): the hand-off zset and member of the edge's first attempt of the job's
--   only webhook: removed here, once the outcome is recorded (edge/webhooks.py), not in a call of its own
-- ARGV[16..25] (optional, with KEYS[6]): the edge POSTed the job's only webhook before claiming it
--   (edge/webhooks.py): its plan, written here first, as delivery_claim.lua would have, if the hand-off is
--   still there and nothing planned the job: now (ms), TTL (s), customer, quorum, payload, job finished (ms),
--   job status, the webhook's url, vote (1/0) and regions (comma list); ARGV[11] marks it the edge's.
--   Otherwise (the delivery service swept the hand-off meanwhile, and sends the webhook itself) nothing is
--   written: the answer is {-1, 0, 0}.
--
-- Returns {applied, quorum_met_now, job_finished_ms}: applied is 1 when the
-- state changed, 0 when the webhook was already final, -1 when the state is gone.
--@include common/_ack.lua
--@include common/_webhook_plan.lua
if ARGV[16] then
  if not redis.call('ZSCORE', KEYS[6], ARGV[15]) or redis.call('EXISTS', KEYS[1]) == 1 then
    return {-1, 0, 0}
  end
  write_plan(KEYS[1], {now = ARGV[16], ttl = ARGV[17], customer = ARGV[18], quorum = ARGV[19], payload = ARGV[20],
    finished_ms = ARGV[21], status = ARGV[22]}, 1, function(_)
    return ARGV[23], ARGV[24], ARGV[25]
  end)
  redis.call('HSET', KEYS[1], '0:edge', ARGV[11])
end
local p = ARGV[3] .. ':'
-- one read: the webhook's state, the job's finish, and its vote and the quorum (none written before use)
local got = redis.call('HMGET', KEYS[1], p .. 'state', 'job_finished_ms', p .. 'vote', 'quorum')
local state = got[1]
local applied, quorum_now, finished = -1, 0, 0
if state then
  applied = 0
  finished = tonumber(got[2] or '0')
  redis.call('HINCRBY', KEYS[1], p .. 'attempts', 1)
  local last = {p .. 'last_status', ARGV[6], p .. 'last_error', ARGV[7], p .. 'last_ms', ARGV[5]}
  if ARGV[4] == 'delivered' and state ~= 'delivered' then
    redis.call('HSET', KEYS[1], p .. 'state', 'delivered', p .. 'delivered_ms', ARGV[5],
      p .. 'sent_by', ARGV[11], p .. 'sent_region', ARGV[12], unpack(last))
  else
    redis.call('HSET', KEYS[1], unpack(last))
  end
  if ARGV[4] == 'delivered' then
    if state ~= 'delivered' then
      redis.call('HDEL', KEYS[1], p .. 'next_ms', p .. 'dead_reason', p .. 'dead_ms')
      if state == 'dead' then
        local still_dead = 0
        for h = 0, tonumber(redis.call('HGET', KEYS[1], 'count')) - 1 do
          if redis.call('HGET', KEYS[1], h .. ':state') == 'dead' then
            still_dead = still_dead + 1
          end
        end
        if still_dead == 0 then
          redis.call('ZREM', KEYS[4], ARGV[13])
          redis.call('ZREM', KEYS[5], ARGV[13])
        end
      end
      local now = tonumber(ARGV[5])
      redis.call('PUBLISH', ARGV[14], cjson.encode({type = 'delivered', webhook = tonumber(ARGV[3]), ts_ms = now}))
      if got[3] == '1' then
        local votes = redis.call('HINCRBY', KEYS[1], 'votes', 1)
        if votes >= tonumber(got[4])
          and redis.call('HSETNX', KEYS[1], 'quorum_met_ms', ARGV[5]) == 1 then
          quorum_now = 1
          redis.call('PUBLISH', ARGV[14], cjson.encode({type = 'quorum_met', ts_ms = now}))
        end
      end
      applied = 1
    end
  elseif state ~= 'delivered' and state ~= 'dead' then
    if ARGV[4] == 'retry' then
      redis.call('HSET', KEYS[1], p .. 'state', 'retrying', p .. 'next_ms', ARGV[8])
      redis.call('ZADD', KEYS[3], tonumber(ARGV[8]), ARGV[9])
    else
      redis.call('HSET', KEYS[1], p .. 'state', 'dead', p .. 'dead_reason', ARGV[10], p .. 'dead_ms', ARGV[5])
      redis.call('HDEL', KEYS[1], p .. 'next_ms')
      redis.call('ZADD', KEYS[4], tonumber(ARGV[5]), ARGV[13])
      redis.call('ZADD', KEYS[5], tonumber(ARGV[5]), ARGV[13])
      redis.call('PUBLISH', ARGV[14], cjson.encode({type = 'webhook_dead', webhook = tonumber(ARGV[3]), reason = ARGV[10], ts_ms = tonumber(ARGV[5])}))
    end
    applied = 1
  end
end
ack_entry(KEYS[2])  -- none: the edge's first attempt, from no send entry
if KEYS[6] then
  redis.call('ZREM', KEYS[6], ARGV[15])
end
return {applied, quorum_now, finished}
