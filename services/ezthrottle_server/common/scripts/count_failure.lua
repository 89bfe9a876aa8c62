-- Count one failed authentication of a client address in its window.
-- KEYS[1] the address's counter   ARGV[1] window (s)
-- The window starts with the first failure: the counter expires with it.
-- Returns the failures counted in the window so far.
local n = redis.call('INCR', KEYS[1])
if redis.call('TTL', KEYS[1]) < 0 then  -- new (or left without a TTL)
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
end
return n
