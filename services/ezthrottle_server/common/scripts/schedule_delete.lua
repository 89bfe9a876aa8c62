-- Delete a schedule of this customer: the hash, its place in the due and firing sets, the customer's set.
-- KEYS[1] the schedule   KEYS[2] due set   KEYS[3] the customer's schedule ids   KEYS[4] firing set
-- ARGV[1] schedule id   ARGV[2] customer
-- Returns 1 when deleted, 0 when there is no such schedule of this customer.
if redis.call('HGET', KEYS[1], 'customer') ~= ARGV[2] then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
return 1
