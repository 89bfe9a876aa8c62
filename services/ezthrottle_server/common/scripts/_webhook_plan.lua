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
