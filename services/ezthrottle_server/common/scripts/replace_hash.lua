-- Replace a hash with exactly the given fields, in one step (no reader ever
-- sees old and new fields mixed), optionally only if one field still holds
-- what the caller read (a compare-and-set without MULTI).
-- KEYS[1] hash
-- ARGV[1] guard field ('' for no guard)   ARGV[2] its expected value ('' = absent)
-- ARGV[3..] field, value, ...
-- Returns 1 when replaced, 0 when the guard field changed meanwhile.
if ARGV[1] ~= '' and (redis.call('HGET', KEYS[1], ARGV[1]) or '') ~= ARGV[2] then
  return 0
end
redis.call('DEL', KEYS[1])
if #ARGV > 2 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 3))
end
return 1
