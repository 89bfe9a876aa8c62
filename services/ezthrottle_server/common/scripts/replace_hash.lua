-- Replace a hash with exactly the given fields, in one step (no reader ever
-- sees old and new fields mixed). KEYS[1] hash   ARGV field, value, ...
redis.call('DEL', KEYS[1])
if #ARGV > 0 then
  redis.call('HSET', KEYS[1], unpack(ARGV))
end
return 1
