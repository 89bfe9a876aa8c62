-- Hand a node the jobs it may send now, atomically with the scope's limit.
-- (KEYS and ARGV[1..9]: see _prelude.lua.)
-- ARGV[10] the calling node's requests in flight for this scope
-- ARGV[11] most jobs the node wants   ARGV[12] lease (ms)
--
-- First, granted jobs whose lease expired (their node died) go back to the
-- front of the queue. Then, unless the scope is paused, the caller's region's
-- jobs are popped while the rate allows, the node stays under the per-node
-- concurrency cap, and its region's first job is the first of the whole scope
-- in fair order. A free token that another region asked for and the rightful
-- region has still not claimed after the hand-over grace goes to any region,
-- so a dead or saturated region never stalls the others. Each granted job moves to the running set as a lease of
-- its own ("<job>@<n>") that the node renews while it works.
--
-- Returns {status, next (ms), {leases}, recovered, waiting}: status is 'ok',
-- 'paused', 'busy' (the node is at its cap; others may send) or 'empty';
-- waiting counts the caller's region's queue; next is when the caller should
-- ask again, or, with nothing waiting, when the first lease expires (-1 if
-- nothing runs either).
local now = now_ms()
local v = tonumber(redis.call('HGET', KEYS[4], '~v') or '0')
local recovered = 0
local expired = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now)
for _, lease in ipairs(expired) do
  redis.call('ZREM', KEYS[5], lease)
  redis.call('ZADD', KEYS[3], 'NX', v, job_of(lease))
  recovered = recovered + 1
end

local function first_lease()
  local first = redis.call('ZRANGE', KEYS[5], 0, 0, 'WITHSCORES')
  if #first == 0 then
    return -1
  end
  return math.ceil(tonumber(first[2]))
end

-- Tags must outlive a queue that empties for a moment (else a customer whose
-- jobs just went would count as new again); an idle domain's go after a day.
local function forget_tags_if_idle()
  if all_queues_empty() then
    redis.call('PEXPIRE', KEYS[4], 86400000)
  end
end

local waiting = redis.call('ZCARD', KEYS[3])
if waiting == 0 then
  forget_tags_if_idle()
  return {'empty', first_lease(), {}, recovered, 0}
end

local lim = hash(KEYS[2])
local limits = resolve(hash(KEYS[1]), lim, now)
local pause = tonumber(lim.pause_until) or 0
if pause > now then
  return {'paused', math.ceil(pause), {}, recovered, waiting}
end

local free = math.min(limits[3] - tonumber(ARGV[10]), tonumber(ARGV[11]))
local t, tat, tau = gcra(lim, limits, now)
local grace = tonumber(ARGV[9])
local granted = {}
local lease_until = now + tonumber(ARGV[12])
local steal_at = nil
while #granted < free and tat - now <= tau do
  if not first_in_scope() then
    -- the grace runs from the first time a region out of turn asked for this token
    steal_at = tonumber(lim.steal_at)
    if not steal_at or steal_at < tat - tau then
      steal_at = math.max(now, tat - tau) + grace
      redis.call('HSET', KEYS[2], 'steal_at', tostring(steal_at))
      lim.steal_at = tostring(steal_at)
    end
    if now < steal_at then
      break
    end
  end
  local popped = redis.call('ZPOPMIN', KEYS[3])
  if #popped == 0 then
    break
  end
  -- the virtual time follows the jobs served, but never past one still waiting
  local tag = tonumber(popped[2])
  local oldest = first_tag_in_scope()
  if oldest and oldest < tag then
    tag = oldest
  end
  if tag > v then
    v = tag
  end
  local lease = popped[1] .. '@' .. redis.call('HINCRBY', KEYS[2], 'leases', 1)
  redis.call('ZADD', KEYS[5], lease_until, lease)
  granted[#granted + 1] = lease
  tat = math.max(tat, now) + t
end
if #granted > 0 then
  redis.call('HSET', KEYS[2], 'tat', tostring(tat), 't', tostring(t))
  lim.tat, lim.t = tostring(tat), tostring(t)
  redis.call('HSET', KEYS[4], '~v', v)
end

waiting = redis.call('ZCARD', KEYS[3])
if waiting == 0 then
  forget_tags_if_idle()
  return {'ok', first_lease(), granted, recovered, 0}
end
local status = 'ok'
if #granted >= free then
  status = 'busy'
end
local next_ms = next_grant_ms(lim, limits, now)
if not first_in_scope() then
  -- the rightful region goes first; look again when the token could be ours
  if steal_at and steal_at >= tat - tau then
    next_ms = math.max(next_ms, math.ceil(steal_at))
  else
    next_ms = next_ms + grace
  end
end
return {status, next_ms, granted, recovered, waiting}
