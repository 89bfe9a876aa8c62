-- A finished job enters delivery: write the state of each of its webhooks,
-- queue one send per webhook on the stream of its route, and only then
-- acknowledge the deliveries entry. A job already planned (its entry was
-- reclaimed after a worker died past this point) is only acknowledged.
--
-- KEYS[1] webhooks hash   KEYS[2] deliveries stream   KEYS[3..] send streams
-- ARGV[1] consumer group  ARGV[2] entry id  ARGV[3] now (ms)  ARGV[4] TTL (s)
-- ARGV[5] customer  ARGV[6] quorum  ARGV[7] payload (JSON)  ARGV[8] job finished (ms)
-- ARGV[9] job status  ARGV[10] job id  ARGV[11] n = number of webhooks
-- ARGV[12 .. 11+4n] per webhook: url, vote (1/0), regions (comma list), route
-- ARGV[12+4n ..] the route name of each send stream KEYS[3..], in order
--
-- Returns 1 when planned now, 0 when it was planned before.
--@include common/_webhook_plan.lua
local planned = 0
if redis.call('EXISTS', KEYS[1]) == 0 then
  local n, streams = plan_from_argv(KEYS[1], ARGV[3], 12)
  for h = 0, n - 1 do
    -- the customer too: the sender reads its secrets with the webhook's state, in one round trip
    redis.call('XADD', streams[ARGV[12 + 4 * h + 3]], '*', 'job', ARGV[10], 'hook', h, 'customer', ARGV[5])
  end
  planned = 1
end
redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[2], ARGV[2])
return planned
