-- A send that space.lua recorded and allowed, but that left later than
-- recorded (its answer came back late: limiter.py until_spaced): move its
-- record to now, so that the sends after it count from when it left. What
-- space.lua would do for a send already in the window, without resolving the
-- scope's limits again (the send is allowed already): no prelude (only its clock), no hashes.
--
-- KEYS[1] sent (zset: lease -> when it left, ms; space.lua's KEYS[3])
-- ARGV[1] now (ms; '' = the Redis server's clock)   ARGV[2] the send's lease
--
-- Returns 1 when the record moved, or 0 when it is gone (it aged out of the
-- window, or the set expired): the caller then runs space.lua, which records
-- it from scratch as before.
--@include pacing/_now.lua
local now = now_ms()
local old = redis.call('ZSCORE', KEYS[1], ARGV[2])
if not old then
  return 0
end
redis.call('ZADD', KEYS[1], now, ARGV[2])
-- The set outlives the moved record by as much as it outlived it where it
-- was (space.lua set its expiry to the window and a second past a send).
local shift, ttl = now - tonumber(old), redis.call('PTTL', KEYS[1])
if shift > 0 and ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl + math.ceil(shift))
end
return 1
