-- Replace one hash field's value only if it still holds what the caller read
-- (a compare-and-set without MULTI, so it works on one slot of a cluster).
-- KEYS[1] hash   ARGV[1] field   ARGV[2] value expected   ARGV[3] new value
-- Returns 1 when replaced, 0 when the field changed (or went) meanwhile.
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return 1
end
return 0
