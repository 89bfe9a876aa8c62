-- Shared by every pacing script (prepended to each one when it loads).
--
-- A *scope* is what one limit governs: a target domain (shared by every
-- customer) or, for domains configured per customer, one customer's use of
-- it. Every pacing script gets the same keys, all under the domain's hash tag:
--
-- KEYS[1] conf     hash  operator overrides for the domain (domains.yaml)
-- KEYS[2] limit    hash  the scope's state: GCRA tat/t, header limits, pause
-- KEYS[3] wait     zset  the scope's waiting jobs of the caller's region, by fair tag
-- KEYS[4] fair     hash  customer -> last fair tag given; '~v' virtual time;
--                        'j:<job>' -> the customer of a job waiting in a queue
--                        (one per scope: tags compare across regions)
-- KEYS[5] running  zset  leases of the caller's region ("<job>@<n>", one per
--                        grant), by expiry (ms)
-- KEYS[6..] wait   zset  the same scope's queues of every other region
--
-- and the same first arguments, the cluster-wide defaults:
--
-- ARGV[1] now (ms; '' = the Redis server's clock, which every node shares)
-- ARGV[2] default rps            ARGV[3] default max in flight per node
-- ARGV[4] ceiling rps            ARGV[5] ceiling max in flight per node
-- ARGV[6] header TTL (ms)        ARGV[7] rate margin (0.01 = pace 1% under)
-- ARGV[8] scheduling tolerance (ms)   ARGV[9] hand-over grace (ms; at most half an interval)
--
-- Limits resolve as: a fresh header value, else the domain's config, else
-- the default; then clamped to the ceiling (the domain's config may set its
-- own ceiling).

--@include pacing/_now.lua

local function hash(key)
  local flat = redis.call('HGETALL', key)
  local out = {}
  for i = 1, #flat, 2 do
    out[flat[i]] = flat[i + 1]
  end
  return out
end

-- Effective limits of a scope: {rps, rps_source, max_concurrent, mc_source,
-- burst, ceiling_rps, ceiling_mc, rps clamped (0/1), mc clamped (0/1)}
local function resolve(conf, lim, now)
  local ceil_rps = tonumber(conf.max_rps) or tonumber(ARGV[4])
  local ceil_mc = tonumber(conf.max_concurrent_ceiling) or tonumber(ARGV[5])
  local ttl = tonumber(ARGV[6])
  local rps, rps_src = tonumber(ARGV[2]), 'default'
  local mc, mc_src = tonumber(ARGV[3]), 'default'
  if conf.rps then
    rps, rps_src = tonumber(conf.rps), 'config'
  end
  if conf.max_concurrent then
    mc, mc_src = tonumber(conf.max_concurrent), 'config'
  end
  if lim.hdr_rps and now - tonumber(lim.hdr_rps_ms) <= ttl then
    rps, rps_src = tonumber(lim.hdr_rps), 'header'
  end
  if lim.hdr_mc and now - tonumber(lim.hdr_mc_ms) <= ttl then
    mc, mc_src = tonumber(lim.hdr_mc), 'header'
  end
  -- learned from 429s (release.lua): below what config or headers claim, it wins
  if lim.learned_rps and tonumber(lim.learned_rps) < rps then
    rps, rps_src = tonumber(lim.learned_rps), 'learned'
  end
  local rps_clamped, mc_clamped = 0, 0
  if rps > ceil_rps then
    rps, rps_clamped = ceil_rps, 1
  end
  if mc > ceil_mc then
    mc, mc_clamped = ceil_mc, 1
  end
  local burst = tonumber(conf.burst) or 1
  return {rps, rps_src, mc, mc_src, burst, ceil_rps, ceil_mc, rps_clamped, mc_clamped}
end

-- GCRA. T is the emission interval: 1/rps, stretched by the margin so
-- network jitter never puts N+1 requests in one second at the target. A
-- grant is allowed while tat - now <= tau, tau = (burst - 1) * T plus a few
-- ms of scheduling tolerance; each grant moves tat to max(tat, now) + T.
-- When the rate changes, tat keeps its distance from the last grant.
-- Returns T, tat, tau.
local function gcra(lim, limits, now)
  local t = 1000 / limits[1] * (1 + tonumber(ARGV[7]))
  local tat = tonumber(lim.tat) or 0
  local old_t = tonumber(lim.t)
  if old_t and old_t ~= t then
    tat = tat - old_t + t
  end
  local tau = (limits[5] - 1) * t + tonumber(ARGV[8])
  return t, tat, tau
end

-- When the scope may grant next (ms): aim at the middle of the tolerance so a
-- slightly late wake-up still keeps the schedule.
local function next_grant_ms(lim, limits, now)
  local t, tat, tau = gcra(lim, limits, now)
  local at = tat - tau + tonumber(ARGV[8]) / 2
  local pause = tonumber(lim.pause_until) or 0
  if pause > at then
    at = pause
  end
  if at < now then
    at = now
  end
  return math.ceil(at)
end

-- The job a lease is for.
local function job_of(lease)
  return string.match(lease, '^(.*)@%d+$') or lease
end

-- The first job of a queue: {job id, tag}, or nil.
local function head(key)
  local h = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if #h == 0 then
    return nil
  end
  return {h[1], tonumber(h[2])}
end

-- The customer of a waiting job (admit.lua notes it), or false when unknown
-- (a job put back by a lease that expired, or a node that stopped).
local function customer_of(job)
  return redis.call('HGET', KEYS[4], 'j:' .. job)
end

-- Forget the customer of a job that no queue of the scope holds any more.
local function forget_customer(job)
  if redis.call('ZSCORE', KEYS[3], job) then
    return
  end
  for i = 6, #KEYS do
    if redis.call('ZSCORE', KEYS[i], job) then
      return
    end
  end
  redis.call('HDEL', KEYS[4], 'j:' .. job)
end

-- Is the caller's region's first job the first of the whole scope (tag, then
-- job id), so that customers are served in turn whichever region they use?
-- A first job of another region that is earlier but of the same customer does
-- not count: fairness is between customers, and one customer's jobs spread
-- over regions would otherwise pass the turn from region to region at every
-- token, each hand-over waiting for a node of the next region to look
-- (measured: 0.66-0.81 N at N = 100 over three regions; 0.93-0.96 without).
-- Only the same customer's jobs may be passed, and not just the other
-- region's head: another customer's job queued behind that head is still ahead
-- in turn. So the jobs of that region before mine are looked at, up to
-- PASS_LOOKAHEAD of them; past that, the turn is not passed (as before).
local PASS_LOOKAHEAD = 8

local function before(tag, job, mine)
  return tag < mine[2] or (tag == mine[2] and job < mine[1])
end

-- May the caller's region go before region queue ``key``, whose head is earlier
-- than ``mine``? Only when every job of it before ``mine`` is customer ``who``'s.
local function only_theirs_before(key, mine, who)
  local rows = redis.call('ZRANGEBYSCORE', key, '-inf', mine[2], 'WITHSCORES', 'LIMIT', 0, PASS_LOOKAHEAD)
  for j = 1, #rows, 2 do
    if before(tonumber(rows[j + 1]), rows[j], mine) and customer_of(rows[j]) ~= who then
      return false
    end
  end
  if #rows == 2 * PASS_LOOKAHEAD then -- more may wait before mine: unknown, so no
    return not before(tonumber(rows[#rows]), rows[#rows - 1], mine)
  end
  return true
end

-- mine: the caller's region's first job (head(KEYS[3])); other_head(i): region
-- queue KEYS[i]'s (grant_jobs reads each once per call: see there).
local function first_in_scope(mine, other_head)
  if not mine then
    return false
  end
  local who = nil
  for i = 6, #KEYS do
    local other = other_head(i)
    if other and before(other[2], other[1], mine) then
      if who == nil then
        who = customer_of(mine[1])
      end
      -- the head first (one read): another customer's head settles it without a scan
      if not who or customer_of(other[1]) ~= who or not only_theirs_before(KEYS[i], mine, who) then
        return false
      end
    end
  end
  return true
end

-- The smallest tag waiting in any region, or nil (mine, other_head: as first_in_scope's).
local function first_tag_in_scope(mine, other_head)
  local best = mine and mine[2]
  for i = 6, #KEYS do
    local h = other_head(i)
    if h and (not best or h[2] < best) then
      best = h[2]
    end
  end
  return best
end

local function all_queues_empty()
  for i = 6, #KEYS do
    if redis.call('ZCARD', KEYS[i]) > 0 then
      return false
    end
  end
  return redis.call('ZCARD', KEYS[3]) == 0
end

-- The scope's circuit breaker (release.lua opens, reopens and closes it).
-- Closed: nil. Open: nothing is granted until cb_open_until; then one grant,
-- the probe, goes (cb_probe, until its lease would expire), and nothing more
-- until its answer closes or reopens the circuit. Returns 'open' with when
-- to look again (ms), 'probe' when one grant may go now, or nil (closed).
local function circuit(lim, now)
  local open_until = tonumber(lim.cb_open_until) or 0
  if open_until == 0 then
    return nil
  end
  if now < open_until then
    return 'open', math.ceil(open_until)
  end
  local probe_until = tonumber(lim.cb_probe_until) or 0
  if probe_until > now then
    return 'open', math.ceil(probe_until)
  end
  return 'probe', now
end

-- Hand the calling node the jobs it may send now (grant.lua; admit.lua when
-- the node asks in the same step): see grant.lua. inflight: the node's
-- requests in flight for this scope; want: most jobs it wants; lease_ms.
local function grant_jobs(inflight, want, lease_ms, now)
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
  local cb, cb_at = circuit(lim, now)
  if cb == 'open' then
    return {'paused', cb_at, {}, recovered, waiting}
  end

  local free = math.min(limits[3] - inflight, want)
  if cb == 'probe' then
    free = math.min(free, 1)
  end
  local t, tat, tau = gcra(lim, limits, now)
  -- The hand-over grace is at most half an interval: at 100/s a 50 ms grace
  -- would lose five tokens each time the turn passes to a region whose node
  -- looks a moment late (measured: 0.84 N at N = 100 over three regions).
  local grace = math.min(tonumber(ARGV[9]), t / 2)
  local granted = {}
  local lease_until = now + lease_ms
  local steal_at = nil
  -- Only the caller's region's queue changes while this call grants (it pops
  -- from it alone): the other regions' heads are read once, when first
  -- needed, and the caller's head again after each pop.
  local other_heads = {}
  local function other_head(i)
    local h = other_heads[i]
    if h == nil then
      h = head(KEYS[i]) or false
      other_heads[i] = h
    end
    return h
  end
  local mine = head(KEYS[3])
  while #granted < free and tat - now <= tau do
    if not first_in_scope(mine, other_head) then
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
    -- forget_customer(popped[1]), knowing that the caller's queue no longer
    -- holds it (just popped) and that an empty queue holds nothing
    local queued_elsewhere = false
    for i = 6, #KEYS do
      if other_head(i) and redis.call('ZSCORE', KEYS[i], popped[1]) then
        queued_elsewhere = true
        break
      end
    end
    if not queued_elsewhere then
      redis.call('HDEL', KEYS[4], 'j:' .. popped[1])
    end
    mine = head(KEYS[3])
    -- the virtual time follows the jobs served, but never past one still waiting
    local tag = tonumber(popped[2])
    local oldest = first_tag_in_scope(mine, other_head)
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
  if cb == 'probe' and #granted > 0 then
    redis.call('HSET', KEYS[2], 'cb_probe', granted[1], 'cb_probe_until', tostring(lease_until))
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
  if not first_in_scope(mine, other_head) then
    -- the rightful region goes first; look again when the token could be ours
    if steal_at and steal_at >= tat - tau then
      next_ms = math.max(next_ms, math.ceil(steal_at))
    else
      next_ms = next_ms + grace
    end
  end
  return {status, next_ms, granted, recovered, waiting}
end

-- Lease a job being accepted now if its scope would grant it at once (take.lua;
-- accept.lua runs it inside the submission). Returns {'ok', lease} or {reason, ''}.
local function take_job(job, customer, inflight, lease_ms, now)
  if not all_queues_empty() then
    return {'waiting', ''}
  end
  if #redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now, 'LIMIT', 0, 1) > 0 then
    return {'expired', ''}
  end
  local lim = hash(KEYS[2])
  local limits = resolve(hash(KEYS[1]), lim, now)
  if (tonumber(lim.pause_until) or 0) > now then
    return {'paused', ''}
  end
  if (tonumber(lim.cb_open_until) or 0) > 0 then
    return {'circuit', ''}
  end
  if inflight >= limits[3] then
    return {'busy', ''}
  end
  local t, tat, tau = gcra(lim, limits, now)
  if tat - now > tau then
    return {'rate', ''}
  end
  local v = tonumber(redis.call('HGET', KEYS[4], '~v') or '0')
  local last = tonumber(redis.call('HGET', KEYS[4], customer) or '0')
  local tag = last + 1
  if last <= v then
    tag = v + 0.001
  end
  redis.call('HSET', KEYS[4], customer, tag, '~v', tag)
  redis.call('PEXPIRE', KEYS[4], 86400000) -- nothing waits: as grant.lua leaves an idle scope's tags
  -- '@0': a job is taken once, at its acceptance (grants count from 1), so a
  -- node that lost the reply can release this lease without knowing it
  local lease = job .. '@0'
  redis.call('ZADD', KEYS[5], now + lease_ms, lease)
  redis.call('HSET', KEYS[2], 'tat', tostring(math.max(tat, now) + t), 't', tostring(t))
  return {'ok', lease}
end
