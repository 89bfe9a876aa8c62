--@include pacing/_prelude.lua
-- A granted job's attempt is over: drop its lease and learn from the answer.
-- (KEYS and ARGV[1..9]: see _prelude.lua.)
-- ARGV[10] the lease (from grant.lua)
-- ARGV[11] rps the target asked for ('' if none; already validated, clamped later)
-- ARGV[12] max in flight per node the target asked for ('' if none)
-- ARGV[13] pause the scope until (ms; '' if none): a 429/503 Retry-After
-- ARGV[14] '1' to put the job back at the front of the queue (a node stopping
--          before it could send), else ''
-- ARGV[15] '1' when nothing was sent and nothing will be (take.lua granted a
--          job whose submission then created nothing): the rate gets its
--          emission interval back, else ''
-- ARGV[16] the answer: '429' (the target refused: too many), 'ok' (2xx),
--          'infra' (no answer: connection refused, a timeout; or 502/504),
--          'http' (any other answer), or '' (nothing was sent)
-- ARGV[17] one Redis only (optional): the scope's member of the region's ready
--          set, which is then the last key: with jobs waiting, the scope is
--          indexed there by its next grant (LT), in this call. On a cluster
--          the ready set is in another slot: limiter.py does it after.
--
-- Limits learned from 429s (AIMD): a 429 cuts the scope's rate to LEARN_CUT
-- of what was in force (at most once per LEARN_GUARD_MS, so the answers of
-- sends already on their way count once); each success then raises it by
-- LEARN_STEP until it reaches what config or headers say, and the lesson is
-- forgotten. A target that advertises more than it enforces, or says nothing,
-- settles just under what it enforces: about one 429 per 60 requests.
--
-- Header limits apply to every node at its next grant. A pause only ever
-- extends.
--
-- Returns {waiting, next grant (ms), running}.
local READY = nil
if (ARGV[17] or '') ~= '' then
  READY = table.remove(KEYS)  -- before anything reads KEYS[6..] (the other regions' queues)
end
local now = now_ms()
-- The scope's state, read once: the answer is computed from it, read again
-- only when this call wrote it (changed).
local lim, changed = hash(KEYS[2]), false
local removed = redis.call('ZREM', KEYS[5], ARGV[10])
if ARGV[14] == '1' and removed == 1 then
  local v = tonumber(redis.call('HGET', KEYS[4], '~v') or '0')
  redis.call('ZADD', KEYS[3], 'NX', v, job_of(ARGV[10]))
end
if ARGV[15] == '1' and removed == 1 then
  local tat, t = tonumber(redis.call('HGET', KEYS[2], 'tat')), tonumber(redis.call('HGET', KEYS[2], 't'))
  if tat and t then
    redis.call('HSET', KEYS[2], 'tat', tostring(tat - t))
    changed = true
  end
end
if ARGV[11] ~= '' then
  redis.call('HSET', KEYS[2], 'hdr_rps', ARGV[11], 'hdr_rps_ms', tostring(now))
  changed = true
end
if ARGV[12] ~= '' then
  redis.call('HSET', KEYS[2], 'hdr_mc', ARGV[12], 'hdr_mc_ms', tostring(now))
  changed = true
end
if ARGV[13] ~= '' then
  local pause = tonumber(ARGV[13])
  if pause > (tonumber(redis.call('HGET', KEYS[2], 'pause_until')) or 0) then
    redis.call('HSET', KEYS[2], 'pause_until', ARGV[13])
    changed = true
  end
end
local LEARN_CUT, LEARN_STEP, LEARN_GUARD_MS, LEARN_FLOOR = 0.9, 1.0017, 1000, 0.05
-- (lim.learned_rps: as read at the start; nothing above writes it)
if ARGV[16] == '429' or (ARGV[16] == 'ok' and lim.learned_rps) then
  changed = true
  local conf, lim = hash(KEYS[1]), hash(KEYS[2])
  if ARGV[16] == '429' then
    if now - (tonumber(lim.learned_ms) or 0) >= LEARN_GUARD_MS then
      local cut = math.max(LEARN_FLOOR, resolve(conf, lim, now)[1] * LEARN_CUT)
      redis.call('HSET', KEYS[2], 'learned_rps', tostring(cut), 'learned_ms', tostring(now))
    end
  else
    local raised = tonumber(lim.learned_rps) * LEARN_STEP
    lim.learned_rps = nil
    if raised >= resolve(conf, lim, now)[1] then
      redis.call('HDEL', KEYS[2], 'learned_rps', 'learned_ms')  -- back to what it says: the lesson is over
    else
      redis.call('HSET', KEYS[2], 'learned_rps', tostring(raised))
    end
  end
end
-- The circuit breaker: CB_AFTER infrastructure failures in a row open it for
-- CB_MIN_MS; a probe that fails reopens it for twice as long (up to
-- CB_MAX_MS); any answer from the target closes it (see circuit() in the prelude).
local CB_AFTER, CB_MIN_MS, CB_MAX_MS = 5, 1000, 60000
if ARGV[16] == 'infra' then
  changed = true
  local cb = redis.call('HMGET', KEYS[2], 'cb_open_until', 'cb_probe', 'cb_backoff')
  if cb[2] == ARGV[10] then
    local backoff = math.min(CB_MAX_MS, (tonumber(cb[3]) or CB_MIN_MS) * 2)
    redis.call('HSET', KEYS[2], 'cb_open_until', tostring(now + backoff), 'cb_backoff', tostring(backoff),
      'cb_probe', '', 'cb_probe_until', '0')
  elseif (tonumber(cb[1]) or 0) == 0 and redis.call('HINCRBY', KEYS[2], 'cb_fails', 1) >= CB_AFTER then
    redis.call('HSET', KEYS[2], 'cb_open_until', tostring(now + CB_MIN_MS), 'cb_backoff', tostring(CB_MIN_MS), 'cb_fails', 0)
  end
elseif ARGV[16] ~= '' and (lim.cb_fails or lim.cb_open_until or lim.cb_backoff or lim.cb_probe or lim.cb_probe_until) then
  -- (as read at the start: nothing above writes them but the 'infra' branch)
  redis.call('HDEL', KEYS[2], 'cb_fails', 'cb_open_until', 'cb_backoff', 'cb_probe', 'cb_probe_until')
  changed = true
end
if changed then
  lim = hash(KEYS[2])
end
local limits = resolve(hash(KEYS[1]), lim, now)
local waiting, next_ms = redis.call('ZCARD', KEYS[3]), next_grant_ms(lim, limits, now)
if READY and waiting > 0 then
  redis.call('ZADD', READY, 'LT', next_ms, ARGV[17])
end
return {waiting, next_ms, redis.call('ZCARD', KEYS[5])}
