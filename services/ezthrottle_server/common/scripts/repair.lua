-- Queue again a job that nothing holds: no stream entry, no delayed entry, no
-- place in a pacing queue and no lease (coordinator/repair.py found it so
-- twice, unchanged, some time apart). Only if the job is still as it was
-- seen: not final, same state, same number of attempts.
--
-- KEYS[1] job record   KEYS[2] attempts list   KEYS[3..] the stream of each region to queue it in
-- ARGV[1] job id   ARGV[2] now (ms)   ARGV[3] the job's event channel
-- ARGV[4] state seen   ARGV[5] attempts seen   ARGV[6] repairs seen
-- ARGV[7..] region id of each stream key
--
-- Returns 1 when queued again, 0 when the job moved, finished or was
-- repaired (by another pass) meanwhile.
local state = redis.call('HGET', KEYS[1], 'state')
if not state or state == 'success' or state == 'failed' or state == 'cancelled' or state == 'expired' or state ~= ARGV[4] then
  return 0
end
if (redis.call('HGET', KEYS[1], 'repairs') or '0') ~= ARGV[6] then
  return 0
end
if redis.call('LLEN', KEYS[2]) ~= tonumber(ARGV[5]) then
  return 0
end
local now = tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'state', 'queued')
redis.call('HINCRBY', KEYS[1], 'repairs', 1)
for i = 3, #KEYS do
  redis.call('XADD', KEYS[i], '*', 'job', ARGV[1])
  redis.call('PUBLISH', ARGV[3], cjson.encode({type = 'scheduled', region = ARGV[i + 4], due_ms = now, reason = 'repair', ts_ms = now}))
end
return 1
