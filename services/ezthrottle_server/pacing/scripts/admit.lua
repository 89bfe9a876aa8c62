--@include pacing/_prelude.lua
-- Park jobs in their scope's queue (one region's) until the limit lets them go.
-- (KEYS and ARGV[1..9]: see _prelude.lua.)
-- ARGV[10] n   ARGV[11..] n pairs of job id, customer
--
-- Fair queueing: each customer's jobs get consecutive tags (+1 each) that
-- start just after the scope's virtual time (the tag of the last job granted)
-- when nothing of that customer waits. Served in tag order (across regions:
-- see grant.lua), the scope's queues give each customer with work one send in
-- turn, and each customer's jobs go in order in each region (across regions,
-- a region need not wait for another's earlier job of the same customer).
-- A job queued in several regions (a race) has one tag in all of them.
-- A job already waiting here is not added twice. A job whose previous attempt
-- still holds a lease is added: that is its next attempt (a retry can come
-- back through the stream before the node that sent it releases its lease).
--
-- ARGV[11+2n ..] (optional) the calling node's requests in flight for this
-- scope, most jobs it wants, lease (ms): hand it the jobs it may send now in
-- the same step, as grant.lua would.
--
-- Returns {added, waiting, next grant (ms)}; when granting,
-- {added, waiting, next (ms), status, {leases}, recovered} (see grant.lua).
local now = now_ms()
local v = tonumber(redis.call('HGET', KEYS[4], '~v') or '0')
local added = 0
local n = tonumber(ARGV[10])
-- This call writes only the caller's region's queue and the fair tags: the
-- other regions' queues are looked at for being empty once, and a customer's
-- last tag is read once (then kept here as this call moves it).
local other_queued, last_tag = {}, {}
local function may_hold(k)
  if other_queued[k] == nil then
    other_queued[k] = redis.call('EXISTS', KEYS[k]) == 1
  end
  return other_queued[k]
end
for i = 0, n - 1 do
  local job = ARGV[11 + 2 * i]
  local customer = ARGV[12 + 2 * i]
  if not redis.call('ZSCORE', KEYS[3], job) then
    -- A raced job waits in several regions' queues: every copy gets the tag of
    -- the first one queued, so no region waits for another's copy to go first.
    local tag = nil
    for k = 6, #KEYS do
      local other = may_hold(k) and redis.call('ZSCORE', KEYS[k], job)
      if other then
        tag = tonumber(other)
        break
      end
    end
    -- 'j:<job>' -> customer: first_in_scope(), whose turn it is
    if not tag then
      local last = last_tag[customer]
      if last == nil then
        last = tonumber(redis.call('HGET', KEYS[4], customer) or '0')
      end
      tag = last + 1
      if last <= v then
        tag = v + 0.001 -- nothing of this customer waits: its job goes next, ahead of others' backlog
      end
      last_tag[customer] = tag
      redis.call('HSET', KEYS[4], customer, tag, 'j:' .. job, customer)
    else
      redis.call('HSET', KEYS[4], 'j:' .. job, customer)
    end
    redis.call('ZADD', KEYS[3], tag, job)
    added = added + 1
  end
end
redis.call('PERSIST', KEYS[4])
local g = 11 + 2 * n
if ARGV[g] then
  local granted = grant_jobs(tonumber(ARGV[g]), tonumber(ARGV[g + 1]), tonumber(ARGV[g + 2]), now)
  return {added, granted[5], granted[2], granted[1], granted[3], granted[4]}
end
local lim = hash(KEYS[2])
local limits = resolve(hash(KEYS[1]), lim, now)
return {added, redis.call('ZCARD', KEYS[3]), next_grant_ms(lim, limits, now)}
