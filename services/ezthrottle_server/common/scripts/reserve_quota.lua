-- Hold one request of a customer's monthly cap, or refuse (several partitions:
-- the cap is kept in the customer's own counter, one slot, so concurrent
-- submissions in different partitions never overshoot it together).
-- KEYS[1] the customer's reservations this month
-- ARGV[1] cap   ARGV[2] counter TTL (s)   ARGV[3] 1 to hold, -1 to give one back
-- Returns 1 when held (or given back), 0 when the cap is reached.
local counter = tonumber(redis.call('GET', KEYS[1]) or '0')
if ARGV[3] == '-1' then
  if counter > 0 then
    redis.call('DECR', KEYS[1])
  end
  return 1
end
if counter >= tonumber(ARGV[1]) then
  return 0
end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
