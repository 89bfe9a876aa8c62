-- The body of delivery_claim.lua and delivery_claim_one.lua (see those files).
--@include common/_webhook_plan.lua
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('EXISTS', KEYS[2]) == 1 then
  return -1
end
local n, streams = plan_from_argv(KEYS[2], ARGV[2], 13)
local own = 0
for h = 0, n - 1 do
  local route = ARGV[13 + 4 * h + 3]
  if route == '' then
    redis.call('HSET', KEYS[2], h .. ':edge', ARGV[12])
    own = own + 1
  else
    redis.call('XADD', streams[route] or streams['any'], '*', 'job', ARGV[10], 'hook', h, 'customer', ARGV[5])
  end
end
if own == 0 then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], 'XX', tonumber(ARGV[3]), ARGV[1])
end
return own
