-- Create or change a schedule (common/schedules.py), with its place in the due set.
-- KEYS[1] the schedule (hash)   KEYS[2] due set (zset: id -> next fire ms)
-- KEYS[3] the customer's schedule ids (set)
-- ARGV[1] 'create' or 'update'   ARGV[2] schedule id   ARGV[3] customer
-- ARGV[4] most schedules a customer may have (create)
-- ARGV[5] next fire (ms): a number sets it, 'paused' takes it out of the due set, '' leaves it
-- ARGV[6..] field, value pairs
-- Returns 1 when written, 0 when there is no such schedule of this customer
-- (update) or the id exists (create), -1 when the customer has its most (create).
--@include common/_wake.lua
if ARGV[1] == 'create' then
  if redis.call('SCARD', KEYS[3]) >= tonumber(ARGV[4]) then
    return -1
  end
  if redis.call('EXISTS', KEYS[1]) == 1 then
    return 0
  end
  redis.call('SADD', KEYS[3], ARGV[2])
elseif redis.call('HGET', KEYS[1], 'customer') ~= ARGV[3] then
  return 0
end
if #ARGV > 5 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 6))
end
if ARGV[5] == 'paused' then
  redis.call('ZREM', KEYS[2], ARGV[2])
elseif ARGV[5] ~= '' then
  redis.call('HSET', KEYS[1], 'next_ms', ARGV[5])
  add_due(KEYS[2], tonumber(ARGV[5]), ARGV[2], 'schedules')
end
return 1
