-- bytes_ended: a job ended; its bytes (the record's, counted by _submit.lua in '<customer>|bytes' of the
-- queued hash) are no longer open, and stay kept, with `extra` bytes written as it ended (its result, the
-- webhook payload that repeats it, its last attempt), until its record expires: counted in the kept bucket of
-- now (common/storage.py), which lives longer than any record it counts. Included by finish.lua and _end_job.lua.
--
-- queued: the partition's queued hash   kept: the kept bucket of now   customer: the job's (nil: not counted)
-- bytes: the record's 'bytes' (nil for a job not counted)   extra: bytes   ttl: a final record's TTL (s)
local function bytes_ended(queued, kept, customer, bytes, extra, ttl)
  bytes = tonumber(bytes)
  if not customer or not bytes then
    return
  end
  local field = customer .. '|bytes'
  if redis.call('HINCRBY', queued, field, -bytes) <= 0 then
    redis.call('HDEL', queued, field)
  end
  redis.call('HINCRBY', queued, customer .. '|ended', bytes + extra)  -- what submit.lua's check adds since its caller's read
  redis.call('HINCRBY', kept, customer, bytes + extra)
  redis.call('EXPIRE', kept, 2 * tonumber(ttl) + 60)
end
