-- Cancel a job and what is pending below it in its workflow, or expire a job
-- that was not started by its start_before_ms; atomically, so nothing is
-- sent after the answer: start_attempt.lua refuses a final job, the stream
-- reader skips it, and its delayed entries and workflow timers go here.
-- Children live in their parent's partition, so the whole tree is here.
--
-- KEYS[1] queued counters   KEYS[2] delivery stream   KEYS[3] workflow stream
-- KEYS[4] delayed set   KEYS[5] workflow timers   KEYS[6] the kept-bytes bucket of now (common/storage.py)
-- KEYS[7..] (job record, attempts list) of each job of the tree, the job first
-- (common/cancels.py reads the tree from the records' 'child:<relation>' links)
-- ARGV[1] mode: 'cancel' | 'after_attempt' (an attempt in flight: cancel once
--         it ends) | 'expire' (the deadline timer) | 'expire_circuit' (the deadline
--         timer, while the job's domain's circuit breaker is open: it ends
--         'failed' with the error 'circuit_open', not 'expired')
-- ARGV[2] customer ('' for expire)   ARGV[3] now (ms)   ARGV[4] TTL of a final job (s)
-- ARGV[5] in-flight bound (ms, see in_flight)   ARGV[6] event channel prefix
-- ARGV[7] r = number of regions, then r region ids, then one job id per job of the tree
--
-- Returns {outcome, n1, n2}: outcome 'not_found' | 'stale' (the tree grew
-- since it was read: read it again) | 'in_flight' | 'already_final' |
-- 'cancelled' | 'cancel_requested' | 'expired' | 'not_due' (expire: started,
-- final or not yet due); n1 descendants cancelled, n2 descendants with a
-- cancel requested (in flight).
--@include common/_end_job.lua
local mode, now, ttl, bound = ARGV[1], tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local r = tonumber(ARGV[7])
local regions = {unpack(ARGV, 8, 7 + r)}
local first_id = 8 + r
local njobs = (#KEYS - 6) / 2

local function key_set(i)
  return {job = KEYS[5 + 2 * i], attempts = KEYS[6 + 2 * i], queued = KEYS[1], deliveries = KEYS[2], workflow = KEYS[3],
    kept = KEYS[6]}
end

local function unqueue(id)
  for _, region in ipairs(regions) do
    redis.call('ZREM', KEYS[4], region .. '|' .. id)
  end
  for _, kind in ipairs({'failure_timeout', 'fallback_timeout', 'deadline'}) do
    redis.call('ZREM', KEYS[5], kind .. '|' .. id)
  end
end

local function finish_as(i, id, state, reason)
  unqueue(id)
  end_job(key_set(i), {id = id, state = state, reason = reason, now = now, ttl = ttl, channel = ARGV[6] .. id})
end

local head = key_set(1).job
local head_id = ARGV[first_id]
local v = redis.call('HMGET', head, 'state', 'customer', 'started_ms', 'start_before_ms')
if not v[1] then
  return {'not_found', 0, 0}
end

if mode == 'expire' or mode == 'expire_circuit' then
  if is_final(v[1]) or v[3] or not v[4] or now < tonumber(v[4]) or in_flight(head, now, bound) then
    return {'not_due', 0, 0}
  end
  if mode == 'expire_circuit' then
    finish_as(1, head_id, 'failed', 'circuit_open')
  else
    finish_as(1, head_id, 'expired', 'start_before_passed')
  end
  return {'expired', 0, 0}
end

if v[2] ~= ARGV[2] then
  return {'not_found', 0, 0}
end
-- The tree as read must still be the tree: every child link names a job given here.
local given = {}
for i = 1, njobs do
  given[ARGV[first_id + i - 1]] = true
end
for i = 1, njobs do
  local fields = redis.call('HGETALL', key_set(i).job)
  for j = 1, #fields, 2 do
    if string.sub(fields[j], 1, 6) == 'child:' and not given[fields[j + 1]] then
      return {'stale', 0, 0}
    end
  end
end

local outcome
if is_final(v[1]) then
  outcome = 'already_final'
elseif in_flight(head, now, bound) then
  if mode ~= 'after_attempt' then
    return {'in_flight', 0, 0}
  end
  redis.call('HSET', head, 'cancel_requested', 1)
  outcome = 'cancel_requested'
else
  finish_as(1, head_id, 'cancelled', 'cancelled')
  outcome = 'cancelled'
end
if outcome ~= 'already_final' then
  -- a continuation not yet started never starts
  redis.call('HSETNX', head, 'cont', 'cancelled')
end

local cancelled, requested = 0, 0
for i = 2, njobs do
  local id = ARGV[first_id + i - 1]
  local job = key_set(i).job
  local state = redis.call('HGET', job, 'state')
  if state and not is_final(state) then
    if in_flight(job, now, bound) then
      redis.call('HSET', job, 'cancel_requested', 1)
      redis.call('HSETNX', job, 'cont', 'cancelled')
      requested = requested + 1
    else
      finish_as(i, id, 'cancelled', 'cancelled')
      cancelled = cancelled + 1
    end
  end
end
return {outcome, cancelled, requested}
