-- accept.lua: submit.lua that takes its job at once when it creates it (the
-- fast path from accept to send, edge/intake.py), for one Redis only: its
-- keys span two hash tags (the job's partition and the domain's), which a
-- Redis Cluster refuses; there the edge runs take.lua first, then submit.lua.
--
-- KEYS: submit.lua's, then the region's ready set, then the scope's (see
-- pacing/scripts/_prelude.lua). ARGV: the number of submit.lua's keys and of
-- its arguments, its arguments, then the pacing arguments (_prelude.lua's
-- ARGV[1..9]), the customer, the node's sends in flight for the scope, the
-- lease (ms) and the scope's ready-set member. Each part runs on its own KEYS
-- and ARGV (locals that shadow the globals), so both bodies are used
-- unchanged. With a lease, the scope is indexed in the ready set by its
-- expiry (LT), so should the node die the next grant recovers the job.
--
-- Returns what submit.lua returns, the lease ('' when none) third.
local ALL_KEYS, ALL_ARGV = KEYS, ARGV
local NK, NA = tonumber(ALL_ARGV[1]), tonumber(ALL_ARGV[2])
local READY = ALL_KEYS[NK + 1]
local KEYS = {unpack(ALL_KEYS, NK + 2)}
local ARGV = {unpack(ALL_ARGV, NA + 3)}
--@include pacing/_prelude.lua
local TAKE_ARGV = ARGV
local KEYS = {unpack(ALL_KEYS, 1, NK)}
local ARGV = {unpack(ALL_ARGV, 3, NA + 2)}
local take_now = function()
  local now, lease_ms = now_ms(), tonumber(TAKE_ARGV[12])
  local got = take_job(ARGV[1], TAKE_ARGV[10], tonumber(TAKE_ARGV[11]), lease_ms, now)
  if got[1] == 'ok' then
    redis.call('ZADD', READY, 'LT', now + lease_ms, TAKE_ARGV[13])
  end
  return got[2]
end
--@include common/_submit.lua
