-- The edge that finished a job claims the job's webhooks from the hand-off
-- finish.lua wrote, and plans them (as delivery_plan.lua does) in the same
-- step. The webhooks the edge sends itself are marked '<i>:edge' = its node;
-- the others (regional webhooks of other regions) are queued on their route's
-- send stream for the delivery service. The hand-off stays, held until
-- ARGV[3], until the edge has recorded its sends and removes it; if the edge
-- dies first, the delivery service sweeps it when that time has passed
-- (delivery_sweep.lua) and sends what is still pending.
--
-- KEYS[1] hand-off zset   KEYS[2] webhooks hash   KEYS[3..] send streams
-- ARGV[1] hand-off member ("<job>" or "<step>|<job that answered>")
-- ARGV[2] now (ms)   ARGV[3] held until (ms)   ARGV[4] TTL (s)
-- ARGV[5] customer  ARGV[6] quorum  ARGV[7] payload (JSON)  ARGV[8] job finished (ms)
-- ARGV[9] job status  ARGV[10] job id (the webhooks' job)  ARGV[11] n = number of webhooks
-- ARGV[12] the edge's node id
-- ARGV[13 .. 12+4n] per webhook: url, vote (1/0), regions (comma list), route ('' : the edge sends it)
-- ARGV[13+4n ..] the route name of each send stream KEYS[3..], in order
--
-- Returns how many webhooks the edge sends (0: none, the hand-off is done),
-- or -1 when the hand-off is not there (the delivery service swept it) or the
-- job is planned already: the edge sends nothing.
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
