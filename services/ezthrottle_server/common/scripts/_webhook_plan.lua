-- write_plan: the state of a job's webhooks as it enters delivery (the
-- layout is common/deliveries.py's): every webhook pending, its window
-- starting now. Included by delivery_plan.lua (the delivery service) and
-- delivery_claim.lua (the edge that finished the job).
--
-- hash: the webhooks hash   a: {now, ttl, customer, quorum, payload, finished_ms, status}
-- n: number of webhooks   hook(h): url, vote (1/0), regions (comma list) of webhook h (0-based)
local function write_plan(hash, a, n, hook)
  redis.call('HSET', hash, 'customer', a.customer, 'quorum', a.quorum, 'votes', 0, 'payload', a.payload,
    'job_finished_ms', a.finished_ms, 'job_status', a.status, 'planned_ms', a.now, 'count', n)
  for h = 0, n - 1 do
    local url, vote, regions = hook(h)
    local p = h .. ':'
    redis.call('HSET', hash, p .. 'url', url, p .. 'vote', vote, p .. 'regions', regions,
      p .. 'state', 'pending', p .. 'attempts', 0, p .. 'since_ms', a.now, p .. 'next_ms', a.now)
  end
  redis.call('EXPIRE', hash, tonumber(a.ttl))
end

-- plan_from_argv: write_plan with the arguments delivery_plan.lua and
-- delivery_claim.lua share: ARGV[4..9] ttl, customer, quorum, payload, job
-- finished (ms), job status; ARGV[11] n; 4 per webhook from ARGV[hooks_at]
-- (url, vote, regions, route); then the route name of each send stream
-- KEYS[3..], in order. Returns n and the send streams by route.
local function plan_from_argv(hash, now, hooks_at)
  local n = tonumber(ARGV[11])
  local streams = {}
  for i = 3, #KEYS do
    streams[ARGV[hooks_at + 4 * n + i - 3]] = KEYS[i]
  end
  write_plan(hash, {now = now, ttl = ARGV[4], customer = ARGV[5], quorum = ARGV[6], payload = ARGV[7],
    finished_ms = ARGV[8], status = ARGV[9]}, n, function(h)
    local a = hooks_at + 4 * h
    return ARGV[a], ARGV[a + 1], ARGV[a + 2]
  end)
  return n, streams
end
