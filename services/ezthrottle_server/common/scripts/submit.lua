-- Accept a job atomically: dedupe on its idempotent key, write the record,
-- then queue it in each chosen region (or park it until retry_at).
--
-- KEYS[1] idempotency key        KEYS[2] job record (hash)
-- KEYS[3] delayed set (zset)     KEYS[4..] one job stream per chosen region
-- ARGV[1] job id   ARGV[2] idempotency TTL (s)   ARGV[3] due time (ms, 0 = now)
-- ARGV[4] now (ms) ARGV[5] n = number of field/value pairs
-- ARGV[6 .. 5+2n] record fields and values, then one region id per stream key
--
-- Returns {1, job_id} when created, {0, existing_job_id} for a duplicate.
local existing = redis.call('GET', KEYS[1])
if existing then
  return {0, existing}
end
local job_id = ARGV[1]
redis.call('SET', KEYS[1], job_id, 'EX', tonumber(ARGV[2]))
local n = tonumber(ARGV[5])
redis.call('HSET', KEYS[2], unpack(ARGV, 6, 5 + 2 * n))
local due = tonumber(ARGV[3])
local delayed = due > tonumber(ARGV[4])
local first_region = 6 + 2 * n
for i = 4, #KEYS do
  if delayed then
    redis.call('ZADD', KEYS[3], due, ARGV[first_region + i - 4] .. '|' .. job_id)
  else
    redis.call('XADD', KEYS[i], '*', 'job', job_id)
  end
end
return {1, job_id}
