-- Record a job's final outcome, claim it for this region if nobody has yet,
-- hand it to delivery, and only then acknowledge the stream entry.
--
-- KEYS[1] job record   KEYS[2] attempts list   KEYS[3] region stream
-- KEYS[4] delivery stream
-- ARGV[1] consumer group   ARGV[2] stream entry id ('' if none)
-- ARGV[3] final state ('success' | 'failed')   ARGV[4] result (JSON)
-- ARGV[5] region   ARGV[6] now (ms)   ARGV[7] attempt (JSON, '' if none)
-- ARGV[8] TTL of a finished job (s)   ARGV[9] job id   ARGV[10] failure reason
--
-- Returns 1 if this call decided the outcome, 0 if another region had
-- already (a "lost" result, kept in the attempts), -1 if the job is gone.
local won = -1
local state = redis.call('HGET', KEYS[1], 'state')
if state then
  if ARGV[7] ~= '' then
    redis.call('RPUSH', KEYS[2], ARGV[7])
  end
  if state == 'success' or state == 'failed' then
    won = 0
  else
    redis.call('HSET', KEYS[1], 'state', ARGV[3], 'result', ARGV[4], 'winner', ARGV[5],
      'finished_ms', ARGV[6], 'error', ARGV[10])
    local ttl = tonumber(ARGV[8])
    redis.call('EXPIRE', KEYS[1], ttl)
    redis.call('EXPIRE', KEYS[2], ttl)
    if redis.call('HGET', KEYS[1], 'has_webhooks') == '1' then
      redis.call('XADD', KEYS[4], '*', 'job', ARGV[9])
    end
    won = 1
  end
end
if ARGV[2] ~= '' then
  redis.call('XACK', KEYS[3], ARGV[1], ARGV[2])
  redis.call('XDEL', KEYS[3], ARGV[2])
end
return won
