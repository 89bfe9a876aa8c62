-- An attempt ended with an outcome for its region. Record it, and decide the
-- job atomically: the first final outcome claims it (race), every region's
-- outcome is collected (fanout), or the region drops out and the job fails
-- only when no region is left. The claim hands the job to delivery and
-- publishes its events; only then is the stream entry acknowledged.
--
-- KEYS[1] job record   KEYS[2] attempts list   KEYS[3] region stream
-- KEYS[4] delivery stream ({job} or {job: step, outcome: job})   KEYS[5] workflow stream (its chain continues from there)
-- KEYS[6] queued counters (hash: customer -> jobs not final; submit.lua adds)
-- KEYS[7] webhook hand-offs (zset, with ARGV[12]: member "<job>" or "<step>|<job>", scored when the
--         delivery service may take it; the finishing edge claims it first: delivery_claim.lua)
-- KEYS[8] the kept-bytes bucket of now (common/storage.py: the customer's bytes of ended jobs)
-- ARGV[1] consumer group   ARGV[2] stream entry id ('' if none)
-- ARGV[3] kind: 'success' | 'failed' (a definitive answer, the same from any
--         region) | 'out' (this region has no tries left)
-- ARGV[4] result (JSON)   ARGV[5] region   ARGV[6] now (ms)
-- ARGV[7] attempt (JSON, '' if none)   ARGV[8] TTL of a finished job (s)
-- ARGV[9] job id   ARGV[10] failure reason   ARGV[11] the job's event channel
-- ARGV[12] hand-off grace (ms; optional): > 0, the job's webhooks are handed to this edge
--          (KEYS[7]) rather than to the delivery stream (KEYS[4])
-- (a job may also end cancelled here: a cancel requested during the attempt, cancel.lua)
--
-- Returns 1 if this call decided the job, 0 if it was already decided (the
-- attempt is kept, marked lost), 2 if the job goes on in other regions,
-- -1 if the job is gone. With hand-offs made: {1, {member, ...}, facts}, where
-- facts, when the first hand-off is this job's own (not a fanout's), is what
-- the finishing edge needs to build the webhooks' payload without reading the
-- job back (common/webhooks.py build_payload; the rest it sent here):
-- {state, error, number of attempts, customer, idempotent_key, chain, parent,
-- root, relation} (false for a field the record lacks), else {}.
--@include common/_ack.lua
--@include common/_bytes.lua
--@include common/_wake.lua
local now = tonumber(ARGV[6])
local grace = tonumber(ARGV[12] or '0') or 0
local handoffs = {}

-- Every field of the record this script reads on its common paths, in one read (none of them is
-- written here before it is read: finalize's HSETNX of 'cont' is accounted for where 'cont' is used).
local REC_FIELDS = {'state', 'cancel_requested', 'mode', 'counted', 'customer', 'has_webhooks', 'fallback', 'step', 'cont', 'chain',
  'bytes'}
local rec = {}
do
  local got = redis.call('HMGET', KEYS[1], unpack(REC_FIELDS))
  for i, name in ipairs(REC_FIELDS) do
    rec[name] = got[i] or nil
  end
end

-- The job's webhooks (or its step's) enter delivery: through the finishing
-- edge (a hand-off the delivery service sweeps after the grace if the edge
-- did not take it), or straight to the delivery stream.
local function to_delivery(job, answer)
  if grace > 0 then
    local member = job
    if answer then member = job .. '|' .. answer end
    redis.call('ZADD', KEYS[7], now + grace, member)
    handoffs[#handoffs + 1] = member
  elseif answer then
    redis.call('XADD', KEYS[4], '*', 'job', job, 'outcome', answer)
  else
    redis.call('XADD', KEYS[4], '*', 'job', job)
  end
end

local final = nil  -- {state, error} as finalize wrote them

local function decided()
  if #handoffs == 0 then
    return 1
  end
  local facts = {}
  if final and rec.mode ~= 'fanout' and handoffs[1] == ARGV[9] then
    local f = redis.call('HMGET', KEYS[1], 'idempotent_key', 'parent', 'root', 'relation')
    facts = {final[1], final[2], redis.call('LLEN', KEYS[2]), rec.customer or false, f[1], rec.chain or false, f[2], f[3], f[4]}
  end
  return {1, handoffs, facts}
end

local function ack()
  ack_entry(KEYS[3])
end

local function publish(event)
  event.ts_ms = now
  redis.call('PUBLISH', ARGV[11], cjson.encode(event))
end

local function finalize(state, result, reason)
  final = {state, reason}
  if state == 'cancelled' then
    redis.call('HSETNX', KEYS[1], 'cont', 'cancelled')  -- a cancelled job's chain stops
  end
  redis.call('HSET', KEYS[1], 'state', state, 'result', result, 'winner', ARGV[5],
    'finished_ms', ARGV[6], 'error', reason)
  if rec.counted == '1' and rec.customer and redis.call('HINCRBY', KEYS[6], rec.customer, -1) <= 0 then
    redis.call('HDEL', KEYS[6], rec.customer)
  end
  local payloads = 1
  if rec.has_webhooks == '1' then payloads = 2 end
  bytes_ended(KEYS[6], KEYS[8], rec.customer, rec.bytes, payloads * #result + #ARGV[7], ARGV[8])
  local ttl = tonumber(ARGV[8])
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
  -- Webhooks carry the outcome of their step: a job and the fallbacks that
  -- stand in for it. A job whose server-run fallback may follow a failure
  -- leaves that to the coordinator (a fallback follows, or it hands the step
  -- to delivery); a job a fallback took over from (a timer) delivers nothing;
  -- a fallback delivers its step's webhooks ('step') with its own outcome.
  -- (rec.cont as read before the HSETNX above: one that wrote 'cancelled' found none, and neither is 'fallback')
  if (state == 'success' or state == 'cancelled' or rec.fallback ~= '1') and rec.cont ~= 'fallback' then
    if rec.has_webhooks == '1' then
      to_delivery(ARGV[9])
    end
    if rec.step then
      to_delivery(rec.step, ARGV[9])
    end
  end
  if rec.chain == '1' and state ~= 'cancelled' then
    redis.call('XADD', KEYS[5], '*', 'job', ARGV[9], 'event', 'final')
    wake_coordinator('spawn')
  end
  publish({type = 'won', region = ARGV[5]})
  if state == 'success' then
    publish({type = 'completed', status = state})
  else
    publish({type = 'failed', status = state, error = reason})
  end
end

local state = rec.state
if not state then
  ack()
  return -1
end

redis.call('HDEL', KEYS[1], 'sending:' .. ARGV[5])  -- this region's attempt is over (start_attempt.lua)
if state == 'success' or state == 'failed' or state == 'cancelled' or state == 'expired' then
  if ARGV[7] ~= '' then
    local attempt = cjson.decode(ARGV[7])
    attempt.lost = true
    redis.call('RPUSH', KEYS[2], cjson.encode(attempt))
  end
  ack()
  return 0
end

if ARGV[7] ~= '' then
  redis.call('RPUSH', KEYS[2], ARGV[7])
  local attempt = cjson.decode(ARGV[7])
  attempt.type = 'attempt'
  publish(attempt)
end

local kind = ARGV[3]
-- A cancel requested during this attempt (DELETE ?after_attempt=true): the
-- job ends cancelled with this attempt's result, unless the attempt
-- succeeded and so decided the job (that success happened; it stands).
if rec.cancel_requested == '1' and not (kind == 'success' and rec.mode ~= 'fanout') then
  finalize('cancelled', ARGV[4], 'cancelled')
  ack()
  return decided()
end
if rec.mode == 'fanout' then
  local outcome = 'failed'
  if kind == 'success' then outcome = 'success' end
  -- A response body is stored once per job, not once per region: the first
  -- success's (else the first answer's) is kept aside for the final result.
  local answer = cjson.decode(ARGV[4])
  if type(answer) == 'table' and answer.body ~= nil then
    local kept = redis.call('HGET', KEYS[1], 'fanout_body_ok')
    if not kept or (kept == '0' and outcome == 'success') then
      redis.call('HSET', KEYS[1], 'fanout_body', answer.body, 'fanout_body_ok', outcome == 'success' and '1' or '0')
    end
    answer.body = nil
  end
  redis.call('HSET', KEYS[1], 'fanout:' .. ARGV[5], cjson.encode({status = outcome, result = answer, error = ARGV[10]}))
  local reported = redis.call('HINCRBY', KEYS[1], 'fanout_reported', 1)
  if reported < tonumber(redis.call('HGET', KEYS[1], 'nregions') or '1') then
    ack()
    return 2
  end
  local per, first_ok, first, reason = {}, nil, nil, ''
  for region in string.gmatch(redis.call('HGET', KEYS[1], 'regions') or '', '[^,]+') do
    local raw = redis.call('HGET', KEYS[1], 'fanout:' .. region)
    if raw then
      local f = cjson.decode(raw)
      per[region] = f
      if first == nil then first = f end
      if f.status == 'success' then
        if first_ok == nil then first_ok = f end
      elseif reason == '' then
        reason = 'fanout_' .. region .. '_' .. (f.error ~= '' and f.error or 'failed')
      end
    end
  end
  local lead = first_ok or first
  local result = {regions = per}
  if lead and type(lead.result) == 'table' then
    result.status_code = lead.result.status_code
    result.headers = lead.result.headers
    result.body = redis.call('HGET', KEYS[1], 'fanout_body') or ''
  end
  redis.call('HDEL', KEYS[1], 'fanout_body', 'fanout_body_ok')
  if reason == '' then
    finalize('success', cjson.encode(result), '')
  else
    finalize('failed', cjson.encode(result), reason)
  end
  ack()
  return decided()
end

if kind == 'success' or kind == 'failed' then
  finalize(kind, ARGV[4], ARGV[10])
  ack()
  return decided()
end

-- kind == 'out': this region is done; the job fails only with no region left.
local live = redis.call('HINCRBY', KEYS[1], 'live', -1)
if live > 0 then
  publish({type = 'region_out', region = ARGV[5], error = ARGV[10]})
  ack()
  return 2
end
finalize('failed', ARGV[4], ARGV[10])
ack()
return decided()
